//! The `push_queue` table: one row per waybill that ever had outbox work, and its lease.
//!
//! The lease on a waybill's row is what guarantees at most one push in flight per waybill
//! across every gateway instance: a worker claims the row, pushes that waybill's entries one
//! at a time, and releases it. `due_at` says when the waybill next needs a worker; every
//! writer of a pending entry lowers it, and [`Store::release_waybill`] recomputes it from
//! the entries still pending.
//!
//! Lock order on PostgreSQL, everywhere in the store: `outbox` rows before `push_queue` rows,
//! and several `push_queue` rows in `waybill_id` order, so writers never deadlock.

use std::collections::HashSet;

use sqlx::AnyConnection;

use super::records::OUTBOX_COLUMNS;
use super::states::{EntryKind, EntryState};
use super::{
    dialect, json_list, json_rows, json_table, Backend, Col, InFlight, OutboxEntry, PushStep,
    PushWork, PushWrites, Store, StoreError,
};

impl Store {
    /// Leases up to `limit` waybills that are due (`due_at <= now`) and whose lease is free
    /// or expired (`lease_until < now`), to `owner` until `now + lease_ms`, earliest due
    /// first. Returns their ids; a waybill is never handed to two owners while its lease is
    /// valid.
    pub async fn claim_waybills(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let sql = match self.backend {
            // SKIP LOCKED: concurrent claimers pass over each other's candidates instead of
            // queueing on them; the WHERE clause is re-checked on rows committed meanwhile.
            // A CTE with FOR UPDATE is never inlined, so the LIMIT applies once.
            Backend::Postgres => {
                "WITH picked AS ( \
                     SELECT waybill_id FROM push_queue \
                     WHERE due_at <= $3 \
                       AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until < $3) \
                     ORDER BY due_at \
                     LIMIT $4 \
                     FOR UPDATE SKIP LOCKED) \
                 UPDATE push_queue SET lease_owner = $1, lease_until = $2 \
                 FROM picked WHERE push_queue.waybill_id = picked.waybill_id \
                 RETURNING push_queue.waybill_id"
            }
            // One writer at a time (BEGIN IMMEDIATE): the subquery and the update see the
            // same rows.
            Backend::Sqlite => {
                "UPDATE push_queue SET lease_owner = $1, lease_until = $2 \
                 WHERE waybill_id IN ( \
                     SELECT waybill_id FROM push_queue \
                     WHERE due_at <= $3 \
                       AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until < $3) \
                     ORDER BY due_at \
                     LIMIT $4) \
                 RETURNING waybill_id"
            }
        };
        let owner = owner.to_owned();
        self.write_one(Box::new(move |conn| {
            Box::pin(async move {
                let owner = owner.as_str();
                let claimed: Vec<String> = sqlx::query_scalar(sql)
                    .bind(owner)
                    .bind(now.saturating_add(lease_ms))
                    .bind(now)
                    .bind(limit)
                    .fetch_all(&mut *conn)
                    .await?;
                Ok(claimed)
            })
        }))
        .await
    }

    /// Moves the lease's end to `until` while `owner` still holds it; `false` if the lease
    /// was lost (another owner claimed it after it expired, or it was released).
    pub async fn extend_lease(
        &self,
        waybill_id: &str,
        owner: &str,
        until: i64,
    ) -> Result<bool, StoreError> {
        let (waybill_id, owner) = (waybill_id.to_owned(), owner.to_owned());
        self.write_one(Box::new(move |conn| {
            Box::pin(async move {
                let updated = sqlx::query(
                    "UPDATE push_queue SET lease_until = $3 \
                     WHERE waybill_id = $1 AND lease_owner = $2",
                )
                .bind(&waybill_id)
                .bind(&owner)
                .bind(until)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                Ok(updated == 1)
            })
        }))
        .await
    }

    /// The waybill's queue row with its pending `pathnotify` entries, by (action_time,
    /// event_id) ascending; `None` if the waybill never had outbox work.
    pub async fn load_push_work(&self, waybill_id: &str) -> Result<Option<PushWork>, StoreError> {
        let row = sqlx::query_as::<_, QueueRow>(
            "SELECT waybill_id, last_pushed_action_time, last_pushed_event_id, \
                    inflight_outbox_id \
             FROM push_queue WHERE waybill_id = $1",
        )
        .bind(waybill_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox \
             WHERE waybill_id = $1 AND state = $2 AND kind = $3 \
             ORDER BY action_time, event_id, id"
        );
        let pending = sqlx::query_as::<_, OutboxEntry>(&sql)
            .bind(&row.waybill_id)
            .bind(EntryState::Pending.as_str())
            .bind(EntryKind::Pathnotify.as_str())
            .fetch_all(&self.pool)
            .await?;
        Ok(Some(PushWork {
            waybill_id: row.waybill_id,
            last_pushed_action_time: row.last_pushed_action_time,
            last_pushed_event_id: row.last_pushed_event_id,
            inflight_outbox_id: row.inflight_outbox_id,
            pending,
        }))
    }

    /// Records that `outbox_id` is being pushed now (the reverse query will answer as of it),
    /// only while `owner` holds the waybill's lease and the entry is pending; `false` (and
    /// nothing written) otherwise. Each call is a new push of the entry: its `push_seq` goes
    /// up and its receipt is forgotten, so only a reverse query answered for this push can
    /// count as this push's receipt.
    pub async fn begin_push(
        &self,
        waybill_id: &str,
        owner: &str,
        outbox_id: i64,
    ) -> Result<bool, StoreError> {
        let (waybill_id, owner) = (waybill_id.to_owned(), owner.to_owned());
        self.settler
            .settle(PushWrites {
                waybill_id,
                owner,
                step: Some(PushStep::Begin { outbox_id }),
                ..PushWrites::default()
            })
            .await
    }

    /// What is being pushed for this waybill right now, if anything.
    pub async fn inflight(&self, waybill_id: &str) -> Result<Option<InFlight>, StoreError> {
        let row = sqlx::query_as::<_, InFlight>(
            "SELECT o.id AS outbox_id, o.event_id AS event_id, o.action_time AS action_time, \
                    o.push_seq AS push_seq \
             FROM push_queue q JOIN outbox o ON o.id = q.inflight_outbox_id \
             WHERE q.waybill_id = $1 AND o.event_id IS NOT NULL",
        )
        .bind(waybill_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }

    /// Gives up `owner`'s lease (nothing happens if it does not hold it) and sets `due_at`
    /// to the earliest `next_attempt_at` of the waybill's pending `pathnotify` entries, NULL
    /// if none.
    ///
    /// An event recorded concurrently is never missed: either its transaction committed
    /// before the recomputation, which then sees its entry, or it lowers `due_at` after.
    pub async fn release_waybill(&self, waybill_id: &str, owner: &str) -> Result<(), StoreError> {
        let (waybill_id, owner) = (waybill_id.to_owned(), owner.to_owned());
        self.settler
            .settle(PushWrites {
                waybill_id,
                owner,
                release: true,
                ..PushWrites::default()
            })
            .await
            .map(|_| ())
    }
}

/// The part of a `push_queue` row that [`Store::load_push_work`] returns.
#[derive(sqlx::FromRow)]
pub(super) struct QueueRow {
    pub(super) waybill_id: String,
    pub(super) last_pushed_action_time: Option<i64>,
    pub(super) last_pushed_event_id: Option<i64>,
    pub(super) inflight_outbox_id: Option<i64>,
}

/// Makes the waybill due at `at` at the latest (creating its row if needed), inside the
/// caller's transaction: `due_at = MIN(COALESCE(due_at, at), at)`. Leaves the lease alone.
pub(super) async fn mark_due_in(
    conn: &mut AnyConnection,
    waybill_id: &str,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO push_queue (waybill_id, due_at) VALUES ($1, $2) \
         ON CONFLICT (waybill_id) DO UPDATE SET due_at = \
             CASE WHEN push_queue.due_at IS NULL OR push_queue.due_at > excluded.due_at \
                  THEN excluded.due_at ELSE push_queue.due_at END",
    )
    .bind(waybill_id)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// [`mark_due_in`] for several waybills (distinct ids) in one statement.
pub(super) async fn mark_due_many_in(
    conn: &mut AnyConnection,
    due: &[(&str, i64)],
) -> Result<(), sqlx::Error> {
    if due.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO push_queue (waybill_id, due_at) VALUES {} \
         ON CONFLICT (waybill_id) DO UPDATE SET due_at = \
             CASE WHEN push_queue.due_at IS NULL OR push_queue.due_at > excluded.due_at \
                  THEN excluded.due_at ELSE push_queue.due_at END",
        super::values(due.len(), 2)
    );
    let mut q = sqlx::query(&sql);
    for (waybill_id, at) in due {
        q = q.bind(*waybill_id).bind(*at);
    }
    q.execute(&mut *conn).await?;
    Ok(())
}

/// Marks each `(waybill_id, outbox_id)` as the waybill's push in flight. The leases were
/// checked by the caller.
pub(super) async fn mark_inflight_all(
    conn: &mut AnyConnection,
    rows: &[(&str, i64)],
) -> Result<(), sqlx::Error> {
    let v = json_table(
        dialect(conn),
        1,
        &[("waybill_id", Col::Text), ("outbox_id", Col::Int)],
    );
    let sql = format!(
        "WITH v AS ({v}) UPDATE push_queue SET inflight_outbox_id = v.outbox_id \
         FROM v WHERE push_queue.waybill_id = v.waybill_id"
    );
    sqlx::query(&sql)
        .bind(json_rows(rows))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A delivered path node per row `(waybill_id, action_time, event_id, outbox_id)`: moves
/// the waybill's pushed position to it (never back) and clears the in-flight marker if it
/// points at the entry. The leases were checked by the caller.
pub(super) async fn advance_all(
    conn: &mut AnyConnection,
    moved: &[(&str, i64, i64, i64)],
) -> Result<(), sqlx::Error> {
    if moved.is_empty() {
        return Ok(());
    }
    let v = json_table(
        dialect(conn),
        1,
        &[
            ("waybill_id", Col::Text),
            ("action_time", Col::Int),
            ("event_id", Col::Int),
            ("outbox_id", Col::Int),
        ],
    );
    let sql = format!(
        "WITH v AS ({v}) \
         UPDATE push_queue SET \
            last_pushed_event_id = CASE WHEN last_pushed_action_time IS NULL \
                OR v.action_time > last_pushed_action_time \
                OR (v.action_time = last_pushed_action_time \
                    AND (last_pushed_event_id IS NULL OR v.event_id > last_pushed_event_id)) \
                THEN v.event_id ELSE last_pushed_event_id END, \
            last_pushed_action_time = CASE WHEN last_pushed_action_time IS NULL \
                OR v.action_time > last_pushed_action_time \
                THEN v.action_time ELSE last_pushed_action_time END, \
            inflight_outbox_id = CASE WHEN inflight_outbox_id = v.outbox_id \
                THEN NULL ELSE inflight_outbox_id END \
         FROM v WHERE push_queue.waybill_id = v.waybill_id"
    );
    sqlx::query(&sql)
        .bind(json_rows(moved))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Clears the in-flight marker of each waybill that points at one of the given entries
/// (`(outbox_id, waybill_id)`); the leases were checked by the caller.
pub(super) async fn clear_inflight_all(
    conn: &mut AnyConnection,
    entries: &[(i64, &str)],
) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let waybills: HashSet<&str> = entries.iter().map(|(_, w)| *w).collect();
    let ids: Vec<i64> = entries.iter().map(|(id, _)| *id).collect();
    let backend = dialect(conn);
    let sql = format!(
        "UPDATE push_queue SET inflight_outbox_id = NULL \
         WHERE waybill_id IN ({}) AND inflight_outbox_id IN ({})",
        json_list(backend, 1, Col::Text),
        json_list(backend, 2, Col::Int)
    );
    sqlx::query(&sql)
        .bind(json_rows(&waybills))
        .bind(json_rows(&ids))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// [`Store::release_waybill`](super::Store::release_waybill) for many: each lease given up
/// only by its holder, the waybill's due time recomputed from its pending path nodes.
pub(super) async fn release_all(
    conn: &mut AnyConnection,
    releases: &[(&str, &str)],
) -> Result<(), sqlx::Error> {
    if releases.is_empty() {
        return Ok(());
    }
    let releases: HashSet<&(&str, &str)> = releases.iter().collect();
    let v = json_table(
        dialect(conn),
        3,
        &[("waybill_id", Col::Text), ("owner", Col::Text)],
    );
    let sql = format!(
        "WITH v AS ({v}) \
         UPDATE push_queue SET lease_owner = NULL, lease_until = NULL, \
             due_at = (SELECT MIN(next_attempt_at) FROM outbox \
                       WHERE outbox.waybill_id = push_queue.waybill_id \
                         AND state = $1 AND kind = $2) \
         FROM v WHERE push_queue.waybill_id = v.waybill_id \
             AND push_queue.lease_owner = v.owner"
    );
    sqlx::query(&sql)
        .bind(EntryState::Pending.as_str())
        .bind(EntryKind::Pathnotify.as_str())
        .bind(json_rows(&releases))
        .execute(&mut *conn)
        .await?;
    Ok(())
}
