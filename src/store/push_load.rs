//! What the push worker reads, for every waybill of a claim at once.
//!
//! A push step needs its waybill's queue row, pending path nodes, record and node texts, the
//! receiver's cached binding and the API pauses. Read per waybill that is seven statements a
//! push; read per claim it is five for all of the claim's waybills (each statement costs a
//! round trip to a connection's thread whatever it returns). The claim's leases keep the
//! rows a step relies on as they were read: only the leaseholder changes a waybill's entries
//! and queue row; an event recorded meanwhile adds an entry the next claim will see (the
//! release recomputes when the waybill is due from every pending entry).

use std::collections::HashMap;

use super::push_queue::QueueRow;
use super::records::OUTBOX_COLUMNS;
use super::states::{EntryKind, EntryState};
use super::WaybillRecord;
use super::{
    placeholders, waybills, EventRecord, OutboxEntry, PushWork, Store, StoreError,
    IDS_PER_STATEMENT,
};

/// Everything a push step reads about one waybill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushLoad {
    pub work: PushWork,
    /// `None` if the waybill record is missing.
    pub waybill: Option<WaybillRecord>,
    /// The events of the pending entries (those with an event), by id.
    pub events: Vec<EventRecord>,
}

impl Store {
    /// [`Store::load_push_work`] for many waybills, each with its record and the events of
    /// its pending entries, in four reads however many waybills. Waybills that never had
    /// outbox work are left out; the others come in the order asked.
    pub async fn load_push_batch(
        &self,
        waybill_ids: &[String],
    ) -> Result<Vec<PushLoad>, StoreError> {
        let mut loads = Vec::with_capacity(waybill_ids.len());
        for chunk in waybill_ids.chunks(IDS_PER_STATEMENT) {
            loads.extend(self.load_push_chunk(chunk).await?);
        }
        Ok(loads)
    }

    async fn load_push_chunk(&self, ids: &[String]) -> Result<Vec<PushLoad>, StoreError> {
        let ids = padded(ids);
        let list = placeholders(1, ids.len());
        let queue_sql = format!(
            "SELECT waybill_id, last_pushed_action_time, last_pushed_event_id, \
                    inflight_outbox_id \
             FROM push_queue WHERE waybill_id IN ({list})"
        );
        let pending_sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox \
             WHERE waybill_id IN ({list}) AND state = ${} AND kind = ${} \
             ORDER BY waybill_id, action_time, event_id, id",
            ids.len() + 1,
            ids.len() + 2
        );
        let waybill_sql = format!(
            "SELECT {} FROM waybills WHERE waybill_id IN ({list})",
            waybills::COLUMNS
        );
        let events_sql = format!(
            "SELECT id, waybill_id, action_type, action_time, payload, received_at FROM events \
             WHERE id IN (SELECT event_id FROM outbox \
                          WHERE waybill_id IN ({list}) AND state = ${} AND kind = ${}) \
             ORDER BY id",
            ids.len() + 1,
            ids.len() + 2
        );
        let mut queue = sqlx::query_as::<_, QueueRow>(&queue_sql);
        let mut pending = sqlx::query_as::<_, OutboxEntry>(&pending_sql);
        let mut records = sqlx::query_as::<_, WaybillRecord>(&waybill_sql);
        let mut events = sqlx::query_as::<_, EventRecord>(&events_sql);
        for id in &ids {
            queue = queue.bind(*id);
            pending = pending.bind(*id);
            records = records.bind(*id);
            events = events.bind(*id);
        }
        let pending = pending
            .bind(EntryState::Pending.as_str())
            .bind(EntryKind::Pathnotify.as_str());
        let events = events
            .bind(EntryState::Pending.as_str())
            .bind(EntryKind::Pathnotify.as_str());

        let rows = queue.fetch_all(&self.pool).await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut entries: HashMap<String, Vec<OutboxEntry>> = HashMap::new();
        for e in pending.fetch_all(&self.pool).await? {
            entries.entry(e.waybill_id.clone()).or_default().push(e);
        }
        let mut records: HashMap<String, WaybillRecord> = records
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| (r.waybill_id.clone(), r))
            .collect();
        let mut node_events: HashMap<String, Vec<EventRecord>> = HashMap::new();
        for e in events.fetch_all(&self.pool).await? {
            node_events.entry(e.waybill_id.clone()).or_default().push(e);
        }
        let mut rows: HashMap<String, QueueRow> = rows
            .into_iter()
            .map(|r| (r.waybill_id.clone(), r))
            .collect();
        let mut seen = std::collections::HashSet::new();
        Ok(ids
            .iter()
            .filter(|id| seen.insert(*id))
            .filter_map(|id| {
                let row = rows.remove(*id)?;
                Some(PushLoad {
                    waybill: records.remove(*id),
                    events: node_events.remove(*id).unwrap_or_default(),
                    work: PushWork {
                        pending: entries.remove(*id).unwrap_or_default(),
                        waybill_id: row.waybill_id,
                        last_pushed_action_time: row.last_pushed_action_time,
                        last_pushed_event_id: row.last_pushed_event_id,
                        inflight_outbox_id: row.inflight_outbox_id,
                    },
                })
            })
            .collect())
    }

    /// The cached `userquery` answers for these phones at `now` (a phone with none, or an
    /// expired one, is left out), in one read.
    pub async fn get_bindings(
        &self,
        phone_hashes: &[String],
        now: i64,
    ) -> Result<HashMap<String, bool>, StoreError> {
        let mut found = HashMap::new();
        for chunk in phone_hashes.chunks(IDS_PER_STATEMENT) {
            let hashes = padded(chunk);
            let sql = format!(
                "SELECT phone_hash, bound FROM bindings \
                 WHERE phone_hash IN ({}) AND expires_at > $1",
                placeholders(2, hashes.len())
            );
            let mut q = sqlx::query_as::<_, (String, i64)>(&sql).bind(now);
            for h in &hashes {
                q = q.bind(*h);
            }
            for (hash, bound) in q.fetch_all(&self.pool).await? {
                found.insert(hash, bound != 0);
            }
        }
        Ok(found)
    }
}

/// The list, its last item repeated up to the next power of two: an `IN (…)` list means the
/// same, and a connection prepares (and caches) one statement per size class instead of one
/// per length.
fn padded(items: &[String]) -> Vec<&String> {
    let mut out: Vec<&String> = items.iter().collect();
    if let Some(last) = items.last() {
        out.resize(items.len().next_power_of_two(), last);
    }
    out
}
