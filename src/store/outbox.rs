//! The `outbox` table: one row per notification to send, and its life from `pending` to
//! `delivered`, `skipped` or `dead`.
//!
//! Rows are created only by `events.rs`, in the transaction that records their event. Here:
//! completing a try, receipts, skips, redrives and the counts the backoffice shows. Deciding
//! what to push, when, and what an error means belongs to the worker (`crate::outbox`).

use std::collections::BTreeSet;

use sqlx::AnyConnection;

use super::push_queue;
use super::records::OUTBOX_COLUMNS;
use super::states::{Column, EntryKind, EntryState, SkipReason};
use super::{
    Completion, NewAttempt, NewEvent, OutboxEntry, PushStep, PushWrites, Store, StoreError,
};

impl Store {
    /// Applies the outcome of one try in one transaction: records `attempt` (if any), moves
    /// the entry as `completion` says, and clears the waybill's in-flight marker if it
    /// points at this entry. `Delivered` also raises the waybill's last pushed node to this
    /// entry's (action_time, event_id) when that is newer, never lowers it. A retry forgets
    /// the entry's receipt: it belonged to the try that just ended.
    ///
    /// Fenced: nothing is written, and [`StoreError::Fenced`] returned, unless the entry is
    /// still pending and `owner` still holds its waybill's lease (`owner` is the claim's
    /// token, unique per claim, so a lease that lapsed and was claimed again by anyone, this
    /// process included, no longer matches).
    pub async fn complete_entry(
        &self,
        outbox_id: i64,
        owner: &str,
        attempt: Option<&NewAttempt>,
        completion: &Completion,
        now: i64,
    ) -> Result<(), StoreError> {
        let (owner, attempt, completion) = (owner.to_owned(), attempt.cloned(), completion.clone());
        self.settler
            .settle(PushWrites {
                owner,
                now,
                step: Some(PushStep::Complete {
                    outbox_id,
                    attempt,
                    completion,
                }),
                ..PushWrites::default()
            })
            .await
            .map(|_| ())
    }

    /// WeChat's reverse query answered for this node while push number `push_seq` of it was
    /// in flight: that push reached WeChat. Recorded only while that same push is still in
    /// flight (the entry pending, its `push_seq` unchanged, the waybill's in-flight marker on
    /// it); keeps the first receipt time. `false` when nothing was recorded.
    pub async fn record_receipt(
        &self,
        outbox_id: i64,
        push_seq: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.write_one(Box::new(move |conn| {
            Box::pin(async move {
                let recorded = record_receipt_in(conn, outbox_id, push_seq, now).await?;
                Ok(recorded)
            })
        }))
        .await
    }

    /// Marks the given entries skipped for `reason`, in one transaction; only entries still
    /// pending change (a delivered or dead entry keeps its state). Unknown ids are ignored.
    /// Fenced like [`Store::complete_entry`]: unless `owner` holds the lease of every waybill
    /// whose entries would change, nothing changes and [`StoreError::Fenced`] names one.
    pub async fn mark_skipped(
        &self,
        ids: &[i64],
        reason: SkipReason,
        owner: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let (ids, owner) = (ids.to_vec(), owner.to_owned());
        self.settler
            .settle(PushWrites {
                owner,
                now,
                skips: vec![(ids, reason)],
                ..PushWrites::default()
            })
            .await
            .map(|_| ())
    }

    /// The waybill's outbox entries, by id (creation order).
    pub async fn list_outbox(&self, waybill_id: &str) -> Result<Vec<OutboxEntry>, StoreError> {
        let sql = format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE waybill_id = $1 ORDER BY id");
        let rows = sqlx::query_as::<_, OutboxEntry>(&sql)
            .bind(waybill_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    pub async fn get_outbox(&self, id: i64) -> Result<Option<OutboxEntry>, StoreError> {
        let sql = format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = $1");
        let row = sqlx::query_as::<_, OutboxEntry>(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row)
    }

    /// Brings dead entries back: pending, tried again at `now` with `tries` reset (their
    /// `last_error` kept), and their waybills due by `now`. `waybill_id` narrows it to one
    /// waybill; `None` redrives every dead entry. Returns how many entries came back.
    pub async fn redrive_dead(
        &self,
        waybill_id: Option<&str>,
        now: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let set = "UPDATE outbox SET state = $1, next_attempt_at = $2, tries = 0, \
                   done_at = NULL, receipt_at = NULL, dead_reason = NULL, updated_at = $2 \
                   WHERE state = $3";
        let waybills: Vec<String> = match waybill_id {
            Some(w) => {
                sqlx::query_scalar(&format!("{set} AND waybill_id = $4 RETURNING waybill_id"))
                    .bind(EntryState::Pending.as_str())
                    .bind(now)
                    .bind(EntryState::Dead.as_str())
                    .bind(w)
                    .fetch_all(&mut *tx)
                    .await?
            }
            None => {
                sqlx::query_scalar(&format!("{set} RETURNING waybill_id"))
                    .bind(EntryState::Pending.as_str())
                    .bind(now)
                    .bind(EntryState::Dead.as_str())
                    .fetch_all(&mut *tx)
                    .await?
            }
        };
        let count = waybills.len() as u64;
        // Deduplicated and in waybill order: the lock order on push_queue rows.
        for w in waybills.into_iter().collect::<BTreeSet<_>>() {
            push_queue::mark_due_in(&mut tx, &w, now).await?;
        }
        tx.commit().await?;
        Ok(count)
    }

    /// [`Store::redrive_dead`] for one entry; `Ok(false)` (nothing changed) if it is not dead.
    pub async fn retry_entry(&self, outbox_id: i64, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let waybill_id: Option<String> = sqlx::query_scalar(
            "UPDATE outbox SET state = $1, next_attempt_at = $2, tries = 0, \
                    done_at = NULL, receipt_at = NULL, dead_reason = NULL, updated_at = $2 \
             WHERE id = $3 AND state = $4 RETURNING waybill_id",
        )
        .bind(EntryState::Pending.as_str())
        .bind(now)
        .bind(outbox_id)
        .bind(EntryState::Dead.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(waybill_id) = waybill_id else {
            return Ok(false);
        };
        push_queue::mark_due_in(&mut tx, &waybill_id, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Whether any outbox entry is pending: one index probe, cheap enough to poll.
    pub async fn any_pending(&self) -> Result<bool, StoreError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM outbox WHERE state = $1 LIMIT 1")
                .bind(EntryState::Pending.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    /// Entries counted by (state, skip_reason), sorted by state then reason in their types'
    /// order (an entry's life: pending, delivered, skipped, dead; no reason first).
    pub async fn outbox_counts(
        &self,
    ) -> Result<Vec<(EntryState, Option<SkipReason>, i64)>, StoreError> {
        let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
            "SELECT state, skip_reason, COUNT(*) FROM outbox GROUP BY state, skip_reason",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut counts = rows
            .into_iter()
            .map(|(state, reason, n)| {
                Ok((
                    EntryState::stored("state", state)?,
                    reason
                        .map(|r| SkipReason::stored("skip_reason", r))
                        .transpose()?,
                    n,
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        // Sorted here: the databases disagree on where NULLs go.
        counts.sort();
        Ok(counts)
    }
}

/// Writes the outbox entry of a newly inserted event, inside the caller's transaction.
pub(super) async fn insert_for_event_in(
    conn: &mut AnyConnection,
    event_id: i64,
    event: &NewEvent,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox (kind, waybill_id, event_id, action_time, state, tries, \
                             next_attempt_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 0, $6, $6, $6)",
    )
    .bind(EntryKind::Pathnotify.as_str())
    .bind(&event.waybill_id)
    .bind(event_id)
    .bind(event.action_time)
    .bind(EntryState::Pending.as_str())
    .bind(event.received_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A shipping notification's completion statement: moves a pending entry of one of `kinds`
/// as `completion` says, inside the caller's transaction, and returns its recipient. A retry
/// counts the try, reschedules it and forgets the entry's receipt (it belonged to the try
/// that just ended). `None`: no pending entry of that kind has this id. (Path-node entries
/// settle set-based: `settle/writes.rs`.)
pub(super) async fn complete_in(
    conn: &mut AnyConnection,
    outbox_id: i64,
    now: i64,
    completion: &Completion,
    kinds: [EntryKind; 2],
) -> Result<Option<Option<String>>, sqlx::Error> {
    // (state, skip_reason, counts as a try, next_attempt_at, last_error, done, dead_reason)
    let (state, reason, tried, next, error, done, dead) = match completion {
        Completion::Delivered => (EntryState::Delivered, None, 0, None, None, true, None),
        Completion::Retry {
            next_attempt_at,
            error,
        } => (
            EntryState::Pending,
            None,
            1,
            Some(*next_attempt_at),
            Some(error.as_str()),
            false,
            None,
        ),
        Completion::Dead { error, reason } => (
            EntryState::Dead,
            None,
            1,
            None,
            Some(error.as_str()),
            true,
            Some(reason.as_str()),
        ),
        Completion::Skipped { reason } => (
            EntryState::Skipped,
            Some(reason.as_str()),
            0,
            None,
            None,
            true,
            None,
        ),
    };
    let row: Option<(Option<String>,)> = sqlx::query_as(
        "UPDATE outbox SET state = $3, skip_reason = COALESCE($4, skip_reason), \
                tries = tries + $5, next_attempt_at = COALESCE($6, next_attempt_at), \
                last_error = COALESCE($7, last_error), done_at = COALESCE($8, done_at), \
                dead_reason = COALESCE($12, dead_reason), updated_at = $2, \
                receipt_at = CASE WHEN $3 = $10 THEN NULL ELSE receipt_at END \
         WHERE id = $1 AND kind IN ($9, $11) AND state = $10 \
         RETURNING recipient",
    )
    .bind(outbox_id)
    .bind(now)
    .bind(state.as_str())
    .bind(reason)
    .bind(tried as i64)
    .bind(next)
    .bind(error)
    .bind(done.then_some(now))
    .bind(kinds[0].as_str())
    .bind(EntryState::Pending.as_str())
    .bind(kinds[1].as_str())
    .bind(dead)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(recipient,)| recipient))
}

/// Why a fenced update of a pending entry found no row: [`StoreError::UnknownOutboxEntry`]
/// if there is none with that id, else [`StoreError::Fenced`] (it is no longer pending).
pub(super) async fn not_pending(
    conn: &mut AnyConnection,
    outbox_id: i64,
) -> Result<StoreError, sqlx::Error> {
    let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM outbox WHERE id = $1")
        .bind(outbox_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match exists {
        Some(_) => StoreError::Fenced(outbox_id),
        None => StoreError::UnknownOutboxEntry(outbox_id),
    })
}

/// [`Store::record_receipt`] inside the caller's transaction.
pub(super) async fn record_receipt_in(
    conn: &mut sqlx::AnyConnection,
    outbox_id: i64,
    push_seq: i64,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE outbox SET receipt_at = COALESCE(receipt_at, $2) \
         WHERE id = $1 AND push_seq = $3 AND state = 'pending' \
           AND EXISTS (SELECT 1 FROM push_queue q \
                       WHERE q.waybill_id = outbox.waybill_id \
                         AND q.inflight_outbox_id = outbox.id)",
    )
    .bind(outbox_id)
    .bind(now)
    .bind(push_seq)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// [`record_receipt_in`] for many receipts (`(outbox_id, push_seq, at)`, distinct entries).
/// On SQLite, with more than one, a single statement whose text does not depend on how many
/// (the rows travel as one JSON parameter), so it is prepared once.
pub(super) async fn record_receipts_in(
    conn: &mut sqlx::AnyConnection,
    receipts: &[(i64, i64, i64)],
) -> Result<(), sqlx::Error> {
    if receipts.len() > 1 && conn.backend_name() == "SQLite" {
        // One row per try (the earliest), as one receipt after another would leave it.
        let mut receipts = receipts.to_vec();
        receipts.sort_by_key(|&(id, seq, at)| (id, seq, at));
        receipts.dedup_by_key(|&mut (id, seq, _)| (id, seq));
        // `+o.state`: keeps SQLite's planner on the primary key (the state index would walk
        // every pending entry).
        sqlx::query(
            "WITH v AS (SELECT value ->> 0 AS id, value ->> 1 AS push_seq, value ->> 2 AS at \
                        FROM json_each($1)) \
             UPDATE outbox SET receipt_at = COALESCE(receipt_at, v.at) FROM v \
             WHERE outbox.id = v.id AND outbox.push_seq = v.push_seq \
               AND +outbox.state = 'pending' \
               AND EXISTS (SELECT 1 FROM push_queue q \
                           WHERE q.waybill_id = outbox.waybill_id \
                             AND q.inflight_outbox_id = outbox.id)",
        )
        .bind(serde_json::to_string(&receipts).expect("numbers serialise"))
        .execute(&mut *conn)
        .await?;
        return Ok(());
    }
    for &(outbox_id, push_seq, at) in receipts {
        record_receipt_in(conn, outbox_id, push_seq, at).await?;
    }
    Ok(())
}
