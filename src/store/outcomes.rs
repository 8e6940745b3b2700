//! The `outcomes` table: exactly one row per outbox entry that left `pending` for good,
//! written in the transaction that settled the entry, and the feed that hands the rows out.
//!
//! # The feed position
//!
//! A cursor must never pass a row that commits after it was handed out.
//! - SQLite: one writer at a time, so `id` (assigned inside the write transaction) is in
//!   commit order; the position is `(0, id)`.
//! - PostgreSQL: a sequence hands out ids at insert, not at commit. Each row keeps the xid of
//!   the transaction that wrote it, and a page returns only rows whose xid is below the oldest
//!   transaction still running (`pg_snapshot_xmin(pg_current_snapshot())`): everything below
//!   it has committed or aborted, so nothing can still appear behind the cursor. The position
//!   is `(xid, id)`. A long transaction delays the feed; it cannot make it skip.
//!
//! Rows are never updated; retention deletes the oldest in small batches and never reuses a
//! position.

use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, FromRow, Row};

use super::states::{Column, EntryKind, EntryState, Outcome, OutcomeKind, SkipReason};
use super::{placeholders, Backend, Store, StoreError, IDS_PER_STATEMENT};

/// Where a reader is in the feed: after the row at this position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedPosition {
    /// The writing transaction's id on PostgreSQL; 0 on SQLite.
    pub xid: i64,
    pub id: i64,
}

/// One outcome as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeRecord {
    pub position: FeedPosition,
    pub outbox_id: i64,
    pub kind: OutcomeKind,
    pub waybill_id: String,
    pub action_type: i64,
    /// Unix s.
    pub action_time: i64,
    pub carrier_ref: Option<String>,
    pub outcome: Outcome,
    /// Why, in one word: `delivered`, a skip reason or a dead reason.
    pub reason_code: String,
    pub errcode: Option<i64>,
    /// Already masked.
    pub errmsg: Option<String>,
    pub rid: Option<String>,
    pub attempts: i64,
    /// Unix ms.
    pub decided_at: i64,
}

impl FromRow<'_, AnyRow> for OutcomeRecord {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let xid: String = row.try_get("position_xid")?;
        Ok(OutcomeRecord {
            position: FeedPosition {
                xid: xid.parse().map_err(|_| sqlx::Error::ColumnDecode {
                    index: "position_xid".into(),
                    source: format!("not a transaction id: {xid:?}").into(),
                })?,
                id: row.try_get("id")?,
            },
            outbox_id: row.try_get("outbox_id")?,
            kind: OutcomeKind::column(row, "kind")?,
            waybill_id: row.try_get("waybill_id")?,
            action_type: row.try_get("action_type")?,
            action_time: row.try_get("action_time")?,
            carrier_ref: row.try_get("carrier_ref")?,
            outcome: Outcome::column(row, "outcome")?,
            reason_code: row.try_get("reason_code")?,
            errcode: row.try_get("errcode")?,
            errmsg: row.try_get("errmsg")?,
            rid: row.try_get("rid")?,
            attempts: row.try_get("attempts")?,
            decided_at: row.try_get("decided_at")?,
        })
    }
}

/// What a feed page keeps.
#[derive(Debug, Clone, Default)]
pub struct OutcomeFilter {
    /// Empty: every outcome.
    pub outcomes: Vec<Outcome>,
    pub kind: Option<OutcomeKind>,
}

/// A page of the feed.
#[derive(Debug, Clone)]
pub struct OutcomePage {
    pub items: Vec<OutcomeRecord>,
    /// Where the next page starts: the last item's position, or the cursor given when the
    /// page is empty.
    pub next: FeedPosition,
    /// More rows below the watermark are waiting after this page.
    pub has_more: bool,
}

/// Whether settles record outcomes: always, except while `wxexpress bench` measures its
/// baseline of what a push costs without them.
static RECORDING: AtomicBool = AtomicBool::new(true);

/// `wxexpress bench` only: `false` stops recording outcomes (the "outcomes off" baseline of
/// the same run), `true` resumes. A gateway never turns it off: every settled entry has its
/// outcome.
pub fn record_outcomes_for_bench(on: bool) {
    RECORDING.store(on, Ordering::SeqCst);
}

const COLUMNS: &str = "id, outbox_id, kind, waybill_id, action_type, action_time, carrier_ref, \
                       outcome, reason_code, errcode, errmsg, rid, attempts, decided_at";

/// Records the outcome of each of `ids` that is no longer pending and has none yet, inside
/// the caller's transaction (the one that settled them). Ids still pending are left alone,
/// so a caller may pass every entry it wrote. The outcome, its one-word reason and WeChat's
/// last answer (errcode, masked errmsg, rid) come from the entry, its event and its last
/// attempt: write the attempt first.
pub(super) async fn record_in(conn: &mut AnyConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    if !RECORDING.load(Ordering::Relaxed) {
        return Ok(());
    }
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        if chunk.is_empty() {
            continue;
        }
        let sql = format!(
            "INSERT INTO outcomes (outbox_id, kind, waybill_id, action_type, action_time, \
                                   carrier_ref, outcome, reason_code, errcode, errmsg, rid, \
                                   attempts, decided_at) \
             SELECT o.id, \
                    CASE WHEN o.kind = '{push_kind}' THEN '{push}' ELSE '{notification}' END, \
                    o.waybill_id, COALESCE(e.action_type, 0), o.action_time, e.carrier_ref, \
                    CASE WHEN o.state = '{delivered_state}' THEN '{delivered}' \
                         WHEN o.state = '{skipped_state}' AND o.skip_reason = '{unbound_skip}' THEN '{unbound}' \
                         WHEN o.state = '{skipped_state}' AND o.skip_reason = '{stale_skip}' THEN '{stale}' \
                         WHEN o.state = '{skipped_state}' AND o.skip_reason = '{coalesced_skip}' THEN '{coalesced}' \
                         ELSE '{dead}' END, \
                    CASE WHEN o.state = '{delivered_state}' THEN '{delivered}' \
                         WHEN o.state = '{skipped_state}' THEN COALESCE(o.skip_reason, 'skipped') \
                         ELSE COALESCE(o.dead_reason, 'failed') END, \
                    a.errcode, a.detail, a.rid, \
                    (SELECT COUNT(*) FROM outbox_attempts c WHERE c.outbox_id = o.id), \
                    COALESCE(o.done_at, o.updated_at) \
             FROM outbox o \
             LEFT JOIN events e ON e.id = o.event_id \
             LEFT JOIN outbox_attempts a ON a.id = \
                 (SELECT MAX(m.id) FROM outbox_attempts m WHERE m.outbox_id = o.id) \
             WHERE o.id IN ({ids}) AND o.state <> '{pending}' \
             ON CONFLICT (outbox_id) DO NOTHING",
            push_kind = EntryKind::Pathnotify.as_str(),
            push = OutcomeKind::Push.as_str(),
            notification = OutcomeKind::Notification.as_str(),
            delivered_state = EntryState::Delivered.as_str(),
            skipped_state = EntryState::Skipped.as_str(),
            pending = EntryState::Pending.as_str(),
            delivered = Outcome::Delivered.as_str(),
            unbound_skip = SkipReason::Unbound.as_str(),
            unbound = Outcome::Unbound.as_str(),
            stale_skip = SkipReason::Stale.as_str(),
            stale = Outcome::Stale.as_str(),
            coalesced_skip = SkipReason::Coalesced.as_str(),
            coalesced = Outcome::Coalesced.as_str(),
            dead = Outcome::Dead.as_str(),
            ids = placeholders(1, chunk.len()),
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(*id);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The feed position's transaction id as text (`position_xid`): the writer's xid on
/// PostgreSQL, 0 on SQLite.
fn position_column(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "'0'",
        Backend::Postgres => "xid::text",
    }
}

impl Store {
    /// Up to `limit` outcomes after `after` that `filter` keeps, in feed order, never past
    /// the commit watermark (see the module doc).
    pub async fn outcomes_page(
        &self,
        after: FeedPosition,
        limit: i64,
        filter: &OutcomeFilter,
    ) -> Result<OutcomePage, StoreError> {
        let position = position_column(self.backend);
        let (after_clause, order) = match self.backend {
            Backend::Sqlite => ("id > $2", "id"),
            Backend::Postgres => (
                "(xid, id) > ($1::text::xid8, $2) \
                 AND xid < pg_snapshot_xmin(pg_current_snapshot())",
                "xid, id",
            ),
        };
        let mut sql = format!(
            "SELECT {COLUMNS}, {position} AS position_xid FROM outcomes \
             WHERE {after_clause} AND ($3 = '' OR kind = $3)"
        );
        if !filter.outcomes.is_empty() {
            sql.push_str(&format!(
                " AND outcome IN ({})",
                placeholders(5, filter.outcomes.len())
            ));
        }
        sql.push_str(&format!(" ORDER BY {order} LIMIT $4"));
        let mut query = sqlx::query_as::<_, OutcomeRecord>(&sql)
            .bind(after.xid.to_string())
            .bind(after.id)
            .bind(filter.kind.map(|k| k.as_str()).unwrap_or(""))
            .bind(limit.saturating_add(1));
        for o in &filter.outcomes {
            query = query.bind(o.as_str());
        }
        let mut items = query.fetch_all(&self.pool).await?;
        let has_more = items.len() as i64 > limit;
        items.truncate(limit.max(0) as usize);
        let next = items.last().map(|r| r.position).unwrap_or(after);
        Ok(OutcomePage {
            items,
            next,
            has_more,
        })
    }

    /// The outcome of one entry, if it has one.
    pub async fn outcome_of(&self, outbox_id: i64) -> Result<Option<OutcomeRecord>, StoreError> {
        let position = position_column(self.backend);
        let sql = format!(
            "SELECT {COLUMNS}, {position} AS position_xid FROM outcomes WHERE outbox_id = $1"
        );
        Ok(sqlx::query_as::<_, OutcomeRecord>(&sql)
            .bind(outbox_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Outcomes decided in `[since, until)` (Unix ms) that `filter` keeps, after outbox id
    /// `after_outbox_id`, at most `limit`, in outbox-id order (for a replay, which pages by it).
    pub async fn outcomes_decided_between(
        &self,
        since: i64,
        until: i64,
        filter: &OutcomeFilter,
        after_outbox_id: i64,
        limit: i64,
    ) -> Result<Vec<OutcomeRecord>, StoreError> {
        let position = position_column(self.backend);
        let mut sql = format!(
            "SELECT {COLUMNS}, {position} AS position_xid FROM outcomes \
             WHERE decided_at >= $1 AND decided_at < $2 AND outbox_id > $3 \
               AND ($4 = '' OR kind = $4)"
        );
        if !filter.outcomes.is_empty() {
            sql.push_str(&format!(
                " AND outcome IN ({})",
                placeholders(6, filter.outcomes.len())
            ));
        }
        sql.push_str(" ORDER BY outbox_id LIMIT $5");
        let mut query = sqlx::query_as::<_, OutcomeRecord>(&sql)
            .bind(since)
            .bind(until)
            .bind(after_outbox_id)
            .bind(filter.kind.map(|k| k.as_str()).unwrap_or(""))
            .bind(limit);
        for o in &filter.outcomes {
            query = query.bind(o.as_str());
        }
        Ok(query.fetch_all(&self.pool).await?)
    }

    /// How many outcomes are stored (tests, the demo's check).
    pub async fn count_outcomes(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM outcomes")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Deletes up to `batch` outcomes decided before `before` (Unix ms), oldest first; returns
    /// how many went. Small batches keep SQLite's writer free for the hot paths.
    pub async fn delete_outcomes_before(&self, before: i64, batch: i64) -> Result<u64, StoreError> {
        self.delete_oldest("outcomes", "decided_at", before, batch)
            .await
    }

    /// Deletes up to `batch` rows of `table` whose `column` (Unix ms) is before `before`,
    /// oldest first: retention in small batches. `table` and `column` are the store's own.
    pub(super) async fn delete_oldest(
        &self,
        table: &'static str,
        column: &'static str,
        before: i64,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let sql = format!(
            "DELETE FROM {table} WHERE id IN \
                 (SELECT id FROM {table} WHERE {column} < $1 ORDER BY {column} LIMIT $2)"
        );
        let done = sqlx::query(&sql)
            .bind(before)
            .bind(batch)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }
}
