//! The ingest baseline `wxexpress bench` measures the gateway against: the rows an accepted
//! event writes (the event, its `pathnotify` outbox entry, its waybill made due), inserted
//! the way a hand-written loader would, set-based and unchecked. Not used by the gateway.

use std::collections::BTreeMap;

use super::states::{EntryKind, EntryState};
use super::values;
use super::{NewEvent, Store, StoreError};

/// Rows per multi-row statement.
const ROWS_PER_STATEMENT: usize = 100;

impl Store {
    /// Inserts `events` (of waybills that exist, none of them stored yet) with their outbox
    /// entries and `push_queue` marks in one transaction, one multi-row statement per table
    /// and 100 events. No duplicate check and no notifications: only the rows.
    pub async fn insert_events_raw(&self, events: &[NewEvent]) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO events (waybill_id, action_type, action_time, payload, received_at) \
                 VALUES {} RETURNING id, waybill_id, action_time, received_at",
                values(chunk.len(), 5)
            );
            let mut q = sqlx::query_as::<_, (i64, String, i64, i64)>(&sql);
            for e in chunk {
                q = q
                    .bind(&e.waybill_id)
                    .bind(e.action_type)
                    .bind(e.action_time)
                    .bind(&e.payload)
                    .bind(e.received_at);
            }
            let ids = q.fetch_all(&mut *tx).await?;

            let sql = format!(
                "INSERT INTO outbox (kind, waybill_id, event_id, action_time, state, tries, \
                                     next_attempt_at, created_at, updated_at) VALUES {}",
                values(ids.len(), 9)
            );
            let mut q = sqlx::query(&sql);
            for (id, waybill, time, at) in &ids {
                q = q
                    .bind(EntryKind::Pathnotify.as_str())
                    .bind(waybill)
                    .bind(*id)
                    .bind(*time)
                    .bind(EntryState::Pending.as_str())
                    .bind(0_i64)
                    .bind(*at)
                    .bind(*at)
                    .bind(*at);
            }
            q.execute(&mut *tx).await?;

            // One row per waybill: an upsert may not touch a row twice in one statement.
            let due: BTreeMap<&str, i64> = ids.iter().fold(BTreeMap::new(), |mut m, r| {
                let at = m.entry(r.1.as_str()).or_insert(r.3);
                *at = (*at).min(r.3);
                m
            });
            let sql = format!(
                "INSERT INTO push_queue (waybill_id, due_at) VALUES {} \
                 ON CONFLICT (waybill_id) DO UPDATE SET due_at = \
                 CASE WHEN push_queue.due_at IS NULL OR push_queue.due_at > excluded.due_at \
                      THEN excluded.due_at ELSE push_queue.due_at END",
                values(due.len(), 2)
            );
            let mut q = sqlx::query(&sql);
            for (waybill, at) in &due {
                q = q.bind(*waybill).bind(*at);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
