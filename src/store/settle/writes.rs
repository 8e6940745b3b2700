//! Each kind of settle applied set-based for every push settling at once: begins, skips,
//! completions, and the binding cache.

use crate::store::states::EntryState;
use crate::store::{dialect, json_list, json_rows, json_table, outcomes, push_queue};
use crate::store::{Col, Completion, StoreError};
use futures_util::future::BoxFuture;
use sqlx::AnyConnection;
use std::collections::HashMap;

use super::rounds::{in_rounds, Entry};
use super::{Begin, Complete, Skip};

/// [`Store::begin_push`](super::Store::begin_push) for many: `true` where the push began.
pub(super) async fn begin_all(
    conn: &mut AnyConnection,
    begins: &[Begin<'_>],
) -> Result<Vec<bool>, sqlx::Error> {
    in_rounds(
        conn,
        begins,
        |b| vec![b.outbox_id],
        |b, entries| match entries.get(&b.outbox_id) {
            Some(e) if e.pending && e.waybill_id == b.waybill_id && e.held_by(b.owner) => {
                Ok(vec![b.waybill_id.to_owned()])
            }
            _ => Err(false),
        },
        true,
        begin_round,
    )
    .await
}

pub(super) fn begin_round<'a>(
    conn: &'a mut AnyConnection,
    chosen: Vec<&'a Begin>,
    _: &'a HashMap<i64, Entry>,
) -> BoxFuture<'a, Result<(), sqlx::Error>> {
    Box::pin(async move {
        let ids: Vec<i64> = chosen.iter().map(|b| b.outbox_id).collect();
        let sql = format!(
            "UPDATE outbox SET push_seq = push_seq + 1, receipt_at = NULL WHERE id IN ({})",
            json_list(dialect(conn), 1, Col::Int)
        );
        sqlx::query(&sql)
            .bind(json_rows(&ids))
            .execute(&mut *conn)
            .await?;
        let rows: Vec<(&str, i64)> = chosen.iter().map(|b| (b.waybill_id, b.outbox_id)).collect();
        push_queue::mark_inflight_all(&mut *conn, &rows).await
    })
}

/// [`Store::mark_skipped`](super::Store::mark_skipped) for many.
pub(super) async fn skip_all(
    conn: &mut AnyConnection,
    skips: &[Skip<'_>],
) -> Result<Vec<Result<(), StoreError>>, sqlx::Error> {
    let outcomes = in_rounds(
        conn,
        skips,
        |s| s.ids.to_vec(),
        |s, entries| {
            // Only entries still pending change; every waybill they belong to must be held.
            let mut changing: Vec<(&str, i64)> = s
                .ids
                .iter()
                .filter_map(|id| entries.get(id).filter(|e| e.pending).map(|e| (e, *id)))
                .map(|(e, id)| (e.waybill_id.as_str(), id))
                .collect();
            changing.sort();
            changing.dedup();
            for group in changing.chunk_by(|a, b| a.0 == b.0) {
                let first = group[0].1;
                if !entries[&first].held_by(s.owner) {
                    return Err(Fenced(first));
                }
            }
            Ok(changing.iter().map(|(w, _)| w.to_string()).collect())
        },
        Fenced(0),
        skip_round,
    )
    .await?;
    Ok(outcomes
        .into_iter()
        .map(|o| match o {
            Fenced(0) => Ok(()),
            Fenced(id) => Err(StoreError::Fenced(id)),
        })
        .collect())
}

pub(super) fn skip_round<'a>(
    conn: &'a mut AnyConnection,
    chosen: Vec<&'a Skip>,
    entries: &'a HashMap<i64, Entry>,
) -> BoxFuture<'a, Result<(), sqlx::Error>> {
    Box::pin(async move {
        // Each pending entry once (two commands may name the same one).
        let rows: Vec<(i64, &str, i64)> = chosen
            .iter()
            .flat_map(|s| {
                s.ids.iter().filter_map(|id| {
                    entries
                        .get(id)
                        .filter(|e| e.pending)
                        .map(|_| (*id, (s.reason.as_str(), s.now)))
                })
            })
            .collect::<HashMap<i64, _>>()
            .into_iter()
            .map(|(id, (reason, now))| (id, reason, now))
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        // Every row is pending (the lookup said so, and nothing wrote since): no state
        // test, which would lead SQLite's planner to walk the `state` index instead.
        let v = json_table(
            dialect(conn),
            2,
            &[("id", Col::Int), ("reason", Col::Text), ("now", Col::Int)],
        );
        let sql = format!(
            "WITH v AS ({v}) \
             UPDATE outbox SET state = $1, skip_reason = v.reason, done_at = v.now, \
                    updated_at = v.now \
             FROM v WHERE outbox.id = v.id"
        );
        sqlx::query(&sql)
            .bind(EntryState::Skipped.as_str())
            .bind(json_rows(&rows))
            .execute(&mut *conn)
            .await?;
        let ids: Vec<i64> = rows.iter().map(|(id, _, _)| *id).collect();
        outcomes::record_in(&mut *conn, &ids).await?;
        let done: Vec<(i64, &str)> = rows
            .iter()
            .map(|(id, _, _)| (*id, entries[id].waybill_id.as_str()))
            .collect();
        push_queue::clear_inflight_all(&mut *conn, &done).await
    })
}

/// A skip's outcome inside [`skip_all`]: `Fenced(0)` is success (no outbox id is 0).
#[derive(Clone, Copy)]
pub(super) struct Fenced(i64);

/// Outcome of a completion inside [`complete_all`] (cloneable, unlike [`StoreError`]).
#[derive(Clone, Copy)]
pub(super) enum Completed {
    Done,
    Fenced(i64),
    Unknown(i64),
}

/// [`Store::complete_entry`](super::Store::complete_entry) for many.
pub(super) async fn complete_all(
    conn: &mut AnyConnection,
    completes: &[Complete<'_>],
) -> Result<Vec<Result<(), StoreError>>, sqlx::Error> {
    let outcomes = in_rounds(
        conn,
        completes,
        |c| vec![c.outbox_id],
        |c, entries| match entries.get(&c.outbox_id) {
            None => Err(Completed::Unknown(c.outbox_id)),
            Some(e) if !e.pending || !e.held_by(c.owner) => Err(Completed::Fenced(c.outbox_id)),
            Some(e) => Ok(vec![e.waybill_id.clone()]),
        },
        Completed::Done,
        complete_round,
    )
    .await?;
    Ok(outcomes
        .into_iter()
        .map(|o| match o {
            Completed::Done => Ok(()),
            Completed::Fenced(id) => Err(StoreError::Fenced(id)),
            Completed::Unknown(id) => Err(StoreError::UnknownOutboxEntry(id)),
        })
        .collect())
}

pub(super) fn complete_round<'a>(
    conn: &'a mut AnyConnection,
    chosen: Vec<&'a Complete>,
    entries: &'a HashMap<i64, Entry>,
) -> BoxFuture<'a, Result<(), sqlx::Error>> {
    Box::pin(complete_chosen(conn, chosen, entries))
}

/// The writes of accepted completions (distinct waybills, all held, all pending).
pub(super) async fn complete_chosen(
    conn: &mut AnyConnection,
    chosen: Vec<&Complete<'_>>,
    entries: &HashMap<i64, Entry>,
) -> Result<(), sqlx::Error> {
    // The entries: one statement for every kind of completion. A NULL leaves a column as
    // it is; `tries_inc` counts a failed try; `clear_receipt` forgets a retried try's receipt.
    type Row<'r> = (
        i64,
        &'r str,
        Option<&'r str>,
        i64,
        Option<i64>,
        Option<&'r str>,
        Option<i64>,
        i64,
        i64,
        Option<&'r str>,
    );
    let rows: Vec<Row> = chosen
        .iter()
        .map(|c| match c.completion {
            Completion::Delivered => (
                c.outbox_id,
                EntryState::Delivered.as_str(),
                None,
                0,
                None,
                None,
                Some(c.now),
                c.now,
                0,
                None,
            ),
            Completion::Retry {
                next_attempt_at,
                error,
            } => (
                c.outbox_id,
                EntryState::Pending.as_str(),
                None,
                1,
                Some(*next_attempt_at),
                Some(error.as_str()),
                None,
                c.now,
                1,
                None,
            ),
            Completion::Dead { error, reason } => (
                c.outbox_id,
                EntryState::Dead.as_str(),
                None,
                1,
                None,
                Some(error.as_str()),
                Some(c.now),
                c.now,
                0,
                Some(reason.as_str()),
            ),
            Completion::Skipped { reason } => (
                c.outbox_id,
                EntryState::Skipped.as_str(),
                Some(reason.as_str()),
                0,
                None,
                None,
                Some(c.now),
                c.now,
                0,
                None,
            ),
        })
        .collect();
    let v = json_table(
        dialect(conn),
        1,
        &[
            ("id", Col::Int),
            ("state", Col::Text),
            ("skip_reason", Col::Text),
            ("tries_inc", Col::Int),
            ("next_attempt_at", Col::Int),
            ("last_error", Col::Text),
            ("done_at", Col::Int),
            ("now", Col::Int),
            ("clear_receipt", Col::Int),
            ("dead_reason", Col::Text),
        ],
    );
    let sql = format!(
        "WITH v AS ({v}) \
         UPDATE outbox SET state = v.state, \
                skip_reason = COALESCE(v.skip_reason, outbox.skip_reason), \
                tries = outbox.tries + v.tries_inc, \
                next_attempt_at = COALESCE(v.next_attempt_at, outbox.next_attempt_at), \
                last_error = COALESCE(v.last_error, outbox.last_error), \
                done_at = COALESCE(v.done_at, outbox.done_at), \
                dead_reason = COALESCE(v.dead_reason, outbox.dead_reason), \
                updated_at = v.now, \
                receipt_at = CASE WHEN v.clear_receipt = 1 THEN NULL ELSE outbox.receipt_at END \
         FROM v WHERE outbox.id = v.id"
    );
    sqlx::query(&sql)
        .bind(json_rows(&rows))
        .execute(&mut *conn)
        .await?;

    // The queue rows: a delivered path node moves its waybill's pushed position (never
    // back) and clears the in-flight marker if it points at the entry; any other completion
    // only clears the marker.
    let mut moved: Vec<(&str, i64, i64, i64)> = Vec::new();
    let mut cleared: Vec<(i64, &str)> = Vec::new();
    for c in &chosen {
        let e = &entries[&c.outbox_id];
        match (c.completion, e.event_id) {
            (Completion::Delivered, Some(event_id)) => {
                moved.push((&e.waybill_id, e.action_time, event_id, c.outbox_id))
            }
            _ => cleared.push((c.outbox_id, &e.waybill_id)),
        }
    }
    push_queue::advance_all(&mut *conn, &moved).await?;
    push_queue::clear_inflight_all(&mut *conn, &cleared).await?;

    let attempts: Vec<_> = chosen
        .iter()
        .filter_map(|c| c.attempt.as_ref())
        .map(|a| {
            (
                a.outbox_id,
                a.started_at,
                a.duration_ms,
                a.http_status,
                a.errcode,
                &a.outcome,
                &a.detail,
                &a.rid,
            )
        })
        .collect();
    if !attempts.is_empty() {
        let rows = json_table(
            dialect(conn),
            1,
            &[
                ("outbox_id", Col::Int),
                ("started_at", Col::Int),
                ("duration_ms", Col::Int),
                ("http_status", Col::Int),
                ("errcode", Col::Int),
                ("outcome", Col::Text),
                ("detail", Col::Text),
                ("rid", Col::Text),
            ],
        );
        let sql = format!(
            "INSERT INTO outbox_attempts (outbox_id, started_at, duration_ms, http_status, \
                                          errcode, outcome, detail, rid) {rows}"
        );
        sqlx::query(&sql)
            .bind(json_rows(&attempts))
            .execute(&mut *conn)
            .await?;
    }
    // After the attempts: an outcome quotes the last one.
    let settled: Vec<i64> = chosen
        .iter()
        .filter(|c| !matches!(c.completion, Completion::Retry { .. }))
        .map(|c| c.outbox_id)
        .collect();
    outcomes::record_in(&mut *conn, &settled).await
}

/// [`Store::put_binding`](super::Store::put_binding) for many; of two answers for one
/// phone, the later one sent is kept.
pub(super) async fn put_bindings(
    conn: &mut AnyConnection,
    bindings: &[(String, bool, i64, i64)],
) -> Result<(), sqlx::Error> {
    if bindings.is_empty() {
        return Ok(());
    }
    let mut last: HashMap<&str, (i64, i64, i64)> = HashMap::new();
    for (phone_hash, bound, checked_at, expires_at) in bindings {
        last.insert(phone_hash, (i64::from(*bound), *checked_at, *expires_at));
    }
    let rows: Vec<(&str, i64, i64, i64)> = last
        .into_iter()
        .map(|(h, (b, c, e))| (h, b, c, e))
        .collect();
    // `WHERE true`: SQLite's parser needs it between a SELECT and ON CONFLICT.
    let v = json_table(
        dialect(conn),
        1,
        &[
            ("phone_hash", Col::Text),
            ("bound", Col::Int),
            ("checked_at", Col::Int),
            ("expires_at", Col::Int),
        ],
    );
    let sql = format!(
        "INSERT INTO bindings (phone_hash, bound, checked_at, expires_at) {v} WHERE true \
         ON CONFLICT (phone_hash) DO UPDATE SET bound = excluded.bound, \
             checked_at = excluded.checked_at, expires_at = excluded.expires_at"
    );
    sqlx::query(&sql)
        .bind(json_rows(&rows))
        .execute(&mut *conn)
        .await?;
    Ok(())
}
