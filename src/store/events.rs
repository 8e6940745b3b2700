//! The `events` table: tracking steps, deduplicated on (waybill_id, action_type, action_time).
//!
//! A new event and its outbox entry (with its waybill made due in `push_queue`) are written
//! in one transaction, so an accepted event is never without its notification; a duplicate
//! writes nothing.

use sqlx::AnyConnection;

use super::{outbox, waybills};
use super::{EventInsert, EventRecord, NewEvent, Store, StoreError, WaybillRecord};

impl Store {
    /// The waybill's path, newest first; events at the same time in insertion order reversed.
    pub async fn list_events(&self, waybill_id: &str) -> Result<Vec<EventRecord>, StoreError> {
        let rows = sqlx::query_as::<_, EventRecord>(
            "SELECT id, waybill_id, action_type, action_time, payload, received_at \
             FROM events WHERE waybill_id = $1 \
             ORDER BY action_time DESC, id DESC",
        )
        .bind(waybill_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    pub async fn count_events(&self) -> Result<i64, StoreError> {
        let count = sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(count)
    }
}

/// One event and, if new, its outbox entry, inside the caller's transaction (see
/// [`Store::record_event`]). The caller makes the waybill due in `push_queue`.
pub(super) async fn record_in(
    conn: &mut AnyConnection,
    waybill: Option<&WaybillRecord>,
    event: &NewEvent,
) -> Result<EventInsert, StoreError> {
    match waybill {
        Some(w) if w.waybill_id != event.waybill_id => {
            return Err(StoreError::WaybillMismatch {
                waybill: w.waybill_id.clone(),
                event: event.waybill_id.clone(),
            });
        }
        Some(w) => {
            waybills::upsert_in(conn, w).await?;
        }
        None => {
            if !waybills::exists_in(conn, &event.waybill_id).await? {
                return Err(StoreError::UnknownWaybill(event.waybill_id.clone()));
            }
        }
    }

    // ON CONFLICT DO NOTHING, then read the winner: under concurrency the loser waits for
    // the winner's commit (PostgreSQL) or for the write lock (SQLite), so the row is there.
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO events (waybill_id, action_type, action_time, payload, received_at, \
                             carrier_ref) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (waybill_id, action_type, action_time) DO NOTHING \
         RETURNING id",
    )
    .bind(&event.waybill_id)
    .bind(event.action_type)
    .bind(event.action_time)
    .bind(&event.payload)
    .bind(event.received_at)
    .bind(&event.carrier_ref)
    .fetch_optional(&mut *conn)
    .await?;

    match inserted {
        Some(id) => {
            outbox::insert_for_event_in(conn, id, event).await?;
            Ok(EventInsert::Inserted { id })
        }
        None => {
            let id: i64 = sqlx::query_scalar(
                "SELECT id FROM events \
                 WHERE waybill_id = $1 AND action_type = $2 AND action_time = $3",
            )
            .bind(&event.waybill_id)
            .bind(event.action_type)
            .bind(event.action_time)
            .fetch_one(&mut *conn)
            .await?;
            Ok(EventInsert::Duplicate { id })
        }
    }
}
