//! A batch of events (one NDJSON request), stored set-based.
//!
//! One statement costs about the same for one row as for a hundred, so a batch is written
//! in a handful of multi-row statements per table instead of several statements per line,
//! with exactly the outcomes storing the lines one by one, in order, would give:
//!
//! - a line whose waybill record names another waybill fails alone ([`StoreError::WaybillMismatch`]);
//! - a line without a waybill record needs its waybill stored before the batch or sent by
//!   an earlier line ([`StoreError::UnknownWaybill`] otherwise);
//! - the first line of a (waybill, action type, action time) is the one stored; a repeat,
//!   in the batch or of a stored event, is a duplicate with the stored id;
//! - a line's notifications go to the openids its waybill had as of that line.
//!
//! Batches are stored [`CHUNK_LINES`] lines per transaction (through the group commit on
//! SQLite), so a 10,000-line batch never holds the write lock for long. Should a multi-row
//! statement fail, the chunk is stored again line by line, each line in a savepoint, so
//! one bad line cannot sink the others.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::{AnyConnection, Connection};

use super::notifications::{enqueue_for_in, enqueue_in, NotificationIntent, NotificationPlan};
use super::states::{EntryKind, EntryState};
use super::{events, placeholders, push_queue, values, waybills};
use super::{EventInsert, NewEvent, Store, StoreError, WaybillRecord};

/// Lines per transaction. A chunk holds SQLite's writer while it is stored: at 1,000 lines
/// that was 20–40 ms, and reverse queries beside back-to-back 10,000-line batches waited up
/// to 135 ms (p99); at 250 their p99 was 39 ms, at the same ingest rate (`docs/PERFORMANCE.md`).
pub(super) const CHUNK_LINES: usize = 250;
/// Rows per multi-row statement.
const ROWS: usize = 100;

pub(super) type Item = (Option<WaybillRecord>, NewEvent);
pub(super) type Outcomes = Vec<Result<EventInsert, StoreError>>;

impl Store {
    /// Records a batch (one NDJSON request), each item with its own outcome as
    /// [`Store::record_event`] would give it, storing the items in order.
    /// A failing item stores nothing and the others are kept.
    ///
    /// Up to [`CHUNK_LINES`] items are one transaction. An error means the batch stopped:
    /// [`StoreError::BatchInterrupted`] says how many items (the first ones) were stored
    /// before it; any other error, that nothing was.
    pub async fn record_events_batch(
        &self,
        items: &[Item],
        plan: &NotificationPlan,
    ) -> Result<Outcomes, StoreError> {
        let mut outcomes = Vec::with_capacity(items.len());
        for chunk in items.chunks(CHUNK_LINES) {
            let (chunk, plan) = (chunk.to_vec(), plan.clone());
            let stored = self
                .write(Box::new(move |mut tx| {
                    Box::pin(async move {
                        let intents: Vec<&[NotificationIntent]> = chunk
                            .iter()
                            .map(|(_, e)| plan.for_action(e.action_type))
                            .collect();
                        let out = chunk_in(&mut tx, &chunk, &intents).await?;
                        tx.commit().await?;
                        Ok(out)
                    })
                }))
                .await;
            match stored {
                Ok(out) => outcomes.extend(out),
                Err(e) if outcomes.is_empty() => return Err(e),
                Err(e) => {
                    return Err(StoreError::BatchInterrupted {
                        stored: outcomes.len(),
                        error: e.to_string(),
                    })
                }
            }
        }
        Ok(outcomes)
    }
}

/// Items in order, in the caller's transaction, `intents[i]` the notifications item `i`
/// asks for: set-based, or line by line if that fails. Also how the writer stores the
/// single events of a group (`group.rs`).
pub(super) async fn chunk_in(
    conn: &mut AnyConnection,
    items: &[Item],
    intents: &[&[NotificationIntent]],
) -> Result<Outcomes, StoreError> {
    let mut attempt = Connection::begin(&mut *conn).await?;
    match set_based_in(&mut attempt, items, intents).await {
        Ok(outcomes) => {
            attempt.commit().await?;
            Ok(outcomes)
        }
        Err(e) => {
            // Fails if SQLite ended the whole transaction (its savepoints go with it): then
            // nothing runs outside it, and the error reaches the caller.
            attempt.rollback().await?;
            tracing::warn!(error = %e, lines = items.len(), "a batch's multi-row statements failed; storing its lines one by one");
            one_by_one_in(conn, items, intents).await
        }
    }
}

/// The waybill's openids (sender, receiver) as of some line.
type Openids = (Option<String>, Option<String>);

async fn set_based_in(
    conn: &mut AnyConnection,
    items: &[Item],
    intents: &[&[NotificationIntent]],
) -> Result<Outcomes, sqlx::Error> {
    let mut outcomes: Vec<Option<Result<EventInsert, StoreError>>> =
        items.iter().map(|_| None).collect();

    // Waybills the batch relies on without sending them first: are they stored already?
    let mut sent: HashSet<&str> = HashSet::new();
    let mut needed: Vec<&str> = Vec::new();
    for (i, (waybill, event)) in items.iter().enumerate() {
        match waybill {
            Some(w) if w.waybill_id != event.waybill_id => {
                outcomes[i] = Some(Err(StoreError::WaybillMismatch {
                    waybill: w.waybill_id.clone(),
                    event: event.waybill_id.clone(),
                }));
            }
            Some(w) => {
                sent.insert(&w.waybill_id);
            }
            None => {
                if !sent.contains(event.waybill_id.as_str()) {
                    needed.push(&event.waybill_id);
                }
            }
        }
    }
    needed.sort_unstable();
    needed.dedup();
    let stored = stored_openids(conn, &needed).await?;

    // In order: which lines stand, and their waybill's openids as of them.
    let mut latest: HashMap<&str, &WaybillRecord> = HashMap::new();
    let mut openids: Vec<Option<Openids>> = items.iter().map(|_| None).collect();
    for (i, (waybill, event)) in items.iter().enumerate() {
        if outcomes[i].is_some() {
            continue;
        }
        if let Some(w) = waybill {
            latest.insert(&w.waybill_id, w);
        }
        let id = event.waybill_id.as_str();
        openids[i] = match latest.get(id) {
            Some(w) => Some((w.sender_openid.clone(), w.receiver_openid.clone())),
            None => match stored.get(id) {
                Some(o) => Some(o.clone()),
                None => {
                    outcomes[i] = Some(Err(StoreError::UnknownWaybill(event.waybill_id.clone())));
                    None
                }
            },
        };
    }
    // The last record of each waybill is what the lines leave stored.
    // In waybill order: on PostgreSQL concurrent batches then lock shared rows in one order.
    let mut records: Vec<&WaybillRecord> = latest.into_values().collect();
    records.sort_unstable_by(|a, b| a.waybill_id.cmp(&b.waybill_id));
    for chunk in records.chunks(ROWS) {
        waybills::upsert_many_in(conn, chunk).await?;
    }

    // The first line of each event key is stored; repeats are duplicates of it.
    let mut first_of: HashMap<(&str, i64, i64), usize> = HashMap::new();
    let mut repeat_of: Vec<Option<usize>> = items.iter().map(|_| None).collect();
    let mut firsts: Vec<usize> = Vec::new();
    for (i, (_, e)) in items.iter().enumerate() {
        if outcomes[i].is_some() {
            continue;
        }
        match first_of.entry((&e.waybill_id, e.action_type, e.action_time)) {
            std::collections::hash_map::Entry::Occupied(f) => repeat_of[i] = Some(*f.get()),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(i);
                firsts.push(i);
            }
        }
    }
    let mut inserted: HashMap<usize, i64> = HashMap::new();
    for chunk in firsts.chunks(ROWS) {
        let sql = format!(
            "INSERT INTO events (waybill_id, action_type, action_time, payload, received_at, \
                                 carrier_ref) \
             VALUES {} ON CONFLICT (waybill_id, action_type, action_time) DO NOTHING \
             RETURNING id, waybill_id, action_type, action_time",
            values(chunk.len(), 6)
        );
        let mut q = sqlx::query_as::<_, (i64, String, i64, i64)>(&sql);
        for &i in chunk {
            let e = &items[i].1;
            q = q
                .bind(&e.waybill_id)
                .bind(e.action_type)
                .bind(e.action_time)
                .bind(&e.payload)
                .bind(e.received_at)
                .bind(&e.carrier_ref);
        }
        for (id, waybill_id, action_type, action_time) in q.fetch_all(&mut *conn).await? {
            if let Some(&i) = first_of.get(&(waybill_id.as_str(), action_type, action_time)) {
                inserted.insert(i, id);
            }
        }
    }
    let already: Vec<usize> = firsts
        .iter()
        .copied()
        .filter(|i| !inserted.contains_key(i))
        .collect();
    let mut existing: HashMap<usize, i64> = HashMap::new();
    for chunk in already.chunks(ROWS) {
        let conditions = (0..chunk.len())
            .map(|k| {
                format!(
                    "(waybill_id = ${} AND action_type = ${} AND action_time = ${})",
                    3 * k + 1,
                    3 * k + 2,
                    3 * k + 3
                )
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        let sql = format!(
            "SELECT id, waybill_id, action_type, action_time FROM events WHERE {conditions}"
        );
        let mut q = sqlx::query_as::<_, (i64, String, i64, i64)>(&sql);
        for &i in chunk {
            let e = &items[i].1;
            q = q
                .bind(&e.waybill_id)
                .bind(e.action_type)
                .bind(e.action_time);
        }
        for (id, waybill_id, action_type, action_time) in q.fetch_all(&mut *conn).await? {
            if let Some(&i) = first_of.get(&(waybill_id.as_str(), action_type, action_time)) {
                existing.insert(i, id);
            }
        }
    }

    // Outbox entries and notifications of the new events, and their waybills made due.
    let new: Vec<(usize, i64)> = firsts
        .iter()
        .filter_map(|i| inserted.get(i).map(|id| (*i, *id)))
        .collect();
    for chunk in new.chunks(ROWS) {
        let sql = format!(
            "INSERT INTO outbox (kind, waybill_id, event_id, action_time, state, tries, \
                                 next_attempt_at, created_at, updated_at) VALUES {}",
            values(chunk.len(), 9)
        );
        let mut q = sqlx::query(&sql);
        for &(i, id) in chunk {
            let e = &items[i].1;
            q = q
                .bind(EntryKind::Pathnotify.as_str())
                .bind(&e.waybill_id)
                .bind(id)
                .bind(e.action_time)
                .bind(EntryState::Pending.as_str())
                .bind(0_i64)
                .bind(e.received_at)
                .bind(e.received_at)
                .bind(e.received_at);
        }
        q.execute(&mut *conn).await?;
    }
    let mut due: BTreeMap<&str, i64> = BTreeMap::new();
    for &(i, id) in &new {
        let e = &items[i].1;
        let intents = intents[i];
        if !intents.is_empty() {
            let (sender, receiver) = openids[i].clone().unwrap_or_default();
            enqueue_for_in(conn, id, e, intents, sender.as_deref(), receiver.as_deref()).await?;
        }
        let at = due.entry(&e.waybill_id).or_insert(e.received_at);
        *at = (*at).min(e.received_at);
    }
    let due: Vec<(&str, i64)> = due.into_iter().collect();
    for chunk in due.chunks(ROWS) {
        push_queue::mark_due_many_in(conn, chunk).await?;
    }

    Ok(outcomes
        .into_iter()
        .enumerate()
        .map(|(i, outcome)| match outcome {
            Some(failed) => failed,
            None => {
                let first = repeat_of[i].unwrap_or(i);
                match (inserted.get(&first), existing.get(&first)) {
                    (Some(&id), _) if first == i => Ok(EventInsert::Inserted { id }),
                    (Some(&id), _) | (None, Some(&id)) => Ok(EventInsert::Duplicate { id }),
                    // Neither inserted nor found: the row vanished under us (cannot happen
                    // inside the write transaction); report it rather than guess an id.
                    (None, None) => Err(StoreError::Database(sqlx::Error::RowNotFound)),
                }
            }
        })
        .collect())
}

/// The openids of those of `ids` that are stored.
async fn stored_openids(
    conn: &mut AnyConnection,
    ids: &[&str],
) -> Result<HashMap<String, Openids>, sqlx::Error> {
    let mut found = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS * 5) {
        let sql = format!(
            "SELECT waybill_id, sender_openid, receiver_openid FROM waybills \
             WHERE waybill_id IN ({})",
            placeholders(1, chunk.len())
        );
        let mut q = sqlx::query_as::<_, (String, Option<String>, Option<String>)>(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        for (id, sender, receiver) in q.fetch_all(&mut *conn).await? {
            found.insert(id, (sender, receiver));
        }
    }
    Ok(found)
}

/// Line by line, each line in a savepoint: the slow path, for a chunk whose multi-row
/// statements failed.
async fn one_by_one_in(
    conn: &mut AnyConnection,
    items: &[Item],
    intents: &[&[NotificationIntent]],
) -> Result<Outcomes, StoreError> {
    let mut outcomes = Vec::with_capacity(items.len());
    let mut due: BTreeMap<&str, i64> = BTreeMap::new();
    for ((waybill, event), intents) in items.iter().zip(intents) {
        // On PostgreSQL a failed statement aborts the whole transaction unless it is rolled
        // back to a savepoint taken before it.
        let mut item = Connection::begin(&mut *conn).await?;
        let result = async {
            let outcome = events::record_in(&mut item, waybill.as_ref(), event).await?;
            if let EventInsert::Inserted { id } = outcome {
                enqueue_in(&mut item, id, event, intents).await?;
            }
            Ok::<_, StoreError>(outcome)
        }
        .await;
        match result {
            Ok(outcome) => {
                item.commit().await?;
                if let EventInsert::Inserted { .. } = outcome {
                    let at = due.entry(&event.waybill_id).or_insert(event.received_at);
                    *at = (*at).min(event.received_at);
                }
                outcomes.push(Ok(outcome));
            }
            Err(error) => {
                item.rollback().await?;
                outcomes.push(Err(error));
            }
        }
    }
    for (waybill_id, at) in due {
        push_queue::mark_due_in(conn, waybill_id, at).await?;
    }
    Ok(outcomes)
}
