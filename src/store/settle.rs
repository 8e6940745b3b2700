//! The push worker's writes on SQLite, settled set-based for a whole group.
//!
//! Beginning a push, skipping entries, completing a try, releasing a waybill and caching a
//! `userquery` answer are sent to the writer (`group.rs`) as typed commands. The writer
//! applies every command of its group with a few statements per kind, however many pushes
//! are settling: a push costs the writer a share of a statement instead of a dozen round
//! trips of its own. Each caller's outcome is exactly what the per-call write gives (the
//! path PostgreSQL takes: [`Store::begin_push`](super::Store::begin_push),
//! [`Store::mark_skipped`](super::Store::mark_skipped),
//! [`Store::complete_entry`](super::Store::complete_entry),
//! [`Store::release_waybill`](super::Store::release_waybill),
//! [`Store::put_binding`](super::Store::put_binding)): the same fences, the same errors. The
//! shared store tests hold both paths to that.
//!
//! The fences are checked by reading the rows first: the group's transaction is the only
//! writer of the database, so nothing changes between that read and the writes after it.
//!
//! A command is one step's writes ([`PushWrites`]): skips, a binding, a begin or a
//! completion, a release. Kinds are applied in that order for the whole group, after what the
//! group's jobs, events and answers wrote; a command's begin or completion only if its skips
//! landed. The commands of one group were all waiting at once, so that order is one they
//! could have had. Two accepted commands of one kind never touch the same waybill in one
//! statement: a second one waits for the next round (it cannot happen for a leaseholder,
//! whose writes are sequential, but the outcome must not depend on that).

use std::collections::{HashMap, HashSet};

use futures_util::future::BoxFuture;
use sqlx::{AnyConnection, Connection};
use tokio::sync::oneshot;

use super::deliver::{deliver, Deliver};
use super::states::{EntryState, SkipReason};
use super::{json_rows, push_queue, Completion, NewAttempt, StoreError};
use super::{PushStep, PushWrites, Store};

impl Store {
    /// Applies one step's writes (see [`PushWrites`]) and returns whether its begin, if it
    /// has one, began (`true` otherwise); `Err` is the first refused skip or completion,
    /// with the release done all the same. On SQLite the writes are one command of the
    /// writer's group, all kept or none; on PostgreSQL they are the per-call writes, in the
    /// same order.
    pub async fn settle_push(&self, writes: PushWrites) -> Result<bool, StoreError> {
        if let Some(group) = &self.group {
            return group.settle(writes).await;
        }
        let PushWrites {
            waybill_id,
            owner,
            now,
            skips,
            binding,
            step,
            release,
        } = writes;
        let mut outcome = Ok(true);
        for (ids, reason) in &skips {
            if let Err(e) = self.mark_skipped(ids, *reason, &owner, now).await {
                outcome = Err(e);
                break;
            }
        }
        if let Some(b) = binding {
            let cached = self
                .put_binding(&b.phone_hash, b.bound, now, b.ttl_ms)
                .await;
            if let (Err(e), Ok(_)) = (cached, &outcome) {
                outcome = Err(e);
            }
        }
        if outcome.is_ok() {
            outcome = match step {
                None => Ok(true),
                Some(PushStep::Begin { outbox_id }) => {
                    self.begin_push(&waybill_id, &owner, outbox_id).await
                }
                Some(PushStep::Complete {
                    outbox_id,
                    attempt,
                    completion,
                }) => self
                    .complete_entry(outbox_id, &owner, attempt.as_ref(), &completion, now)
                    .await
                    .map(|()| true),
            };
        }
        if release {
            let released = self.release_waybill(&waybill_id, &owner).await;
            if let (Err(e), Ok(_)) = (released, &outcome) {
                outcome = Err(e);
            }
        }
        outcome
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A [`PushWrites`] as sent to the writer, with the caller's reply.
pub(super) struct Settle {
    pub(super) writes: PushWrites,
    pub(super) reply: Reply<bool>,
}

impl Settle {
    /// Tells the caller that its write never ran.
    pub(super) fn fail(self, error: StoreError) {
        let _ = self.reply.send(Err(error));
    }
}

struct Begin {
    waybill_id: String,
    owner: String,
    outbox_id: i64,
}

struct Skip {
    ids: Vec<i64>,
    reason: SkipReason,
    owner: String,
    now: i64,
}

struct Complete {
    outbox_id: i64,
    owner: String,
    attempt: Option<NewAttempt>,
    completion: Completion,
    now: i64,
}

/// Applies the group's commands in one savepoint and returns the delivery of each outcome:
/// if a statement fails, nothing of them is kept and every caller gets the error.
pub(super) async fn apply(conn: &mut AnyConnection, work: Vec<Settle>) -> Vec<Deliver> {
    let mut replies = Vec::with_capacity(work.len());
    // Each part with the index of its command.
    let (mut skips, mut skip_of) = (Vec::new(), Vec::new());
    let mut bindings = Vec::new();
    let mut steps = Vec::new();
    let mut releases = Vec::new();
    for (i, Settle { writes, reply }) in work.into_iter().enumerate() {
        replies.push(reply);
        let PushWrites {
            waybill_id,
            owner,
            now,
            skips: skip_parts,
            binding,
            step,
            release,
        } = writes;
        for (ids, reason) in skip_parts {
            skips.push(Skip {
                ids,
                reason,
                owner: owner.clone(),
                now,
            });
            skip_of.push(i);
        }
        if let Some(b) = binding {
            bindings.push((b.phone_hash, b.bound, now, now.saturating_add(b.ttl_ms)));
        }
        if release {
            releases.push((waybill_id.clone(), owner.clone()));
        }
        if let Some(step) = step {
            steps.push((i, waybill_id, owner, now, step));
        }
    }
    let n = replies.len();
    let settled = async {
        let mut sp = Connection::begin(&mut *conn).await?;
        // Each command's outcome so far: a skip that is refused stops its begin or completion.
        let mut outcomes: Vec<Result<bool, StoreError>> = (0..n).map(|_| Ok(true)).collect();
        for (outcome, i) in skip_all(&mut sp, &skips).await?.into_iter().zip(skip_of) {
            if let (Err(e), Ok(_)) = (outcome, &outcomes[i]) {
                outcomes[i] = Err(e);
            }
        }
        put_bindings(&mut sp, &bindings).await?;
        let (mut begins, mut begin_of) = (Vec::new(), Vec::new());
        let (mut completes, mut complete_of) = (Vec::new(), Vec::new());
        for (i, waybill_id, owner, now, step) in steps {
            if outcomes[i].is_err() {
                continue;
            }
            match step {
                PushStep::Begin { outbox_id } => {
                    begins.push(Begin {
                        waybill_id,
                        owner,
                        outbox_id,
                    });
                    begin_of.push(i);
                }
                PushStep::Complete {
                    outbox_id,
                    attempt,
                    completion,
                } => {
                    completes.push(Complete {
                        outbox_id,
                        owner,
                        attempt,
                        completion,
                        now,
                    });
                    complete_of.push(i);
                }
            }
        }
        for (begun, i) in begin_all(&mut sp, &begins).await?.into_iter().zip(begin_of) {
            outcomes[i] = Ok(begun);
        }
        for (done, i) in complete_all(&mut sp, &completes)
            .await?
            .into_iter()
            .zip(complete_of)
        {
            outcomes[i] = done.map(|()| true);
        }
        // A release is the step's `finally`: it runs whatever came before it.
        push_queue::release_all(&mut sp, &releases).await?;
        sp.commit().await?;
        Ok::<_, sqlx::Error>(outcomes)
    }
    .await;
    match settled {
        Ok(outcomes) => outcomes
            .into_iter()
            .zip(replies)
            .map(|(outcome, reply)| deliver(outcome, reply))
            .collect(),
        Err(e) => {
            let e = e.to_string();
            replies
                .into_iter()
                .map(|reply| deliver(Err(StoreError::GroupCommit(e.clone())), reply))
                .collect()
        }
    }
}

/// What the fences need to know of an entry: its waybill, whether it is pending, who holds
/// the waybill's lease, and the node it carries.
#[derive(sqlx::FromRow)]
struct Entry {
    id: i64,
    waybill_id: String,
    state: String,
    lease_owner: Option<String>,
    action_time: i64,
    event_id: Option<i64>,
    #[sqlx(skip)]
    pending: bool,
}

impl Entry {
    fn held_by(&self, owner: &str) -> bool {
        self.lease_owner.as_deref() == Some(owner)
    }
}

/// The entries with these ids (unknown ids are absent), with their waybills' lease holders.
async fn lookup(
    conn: &mut AnyConnection,
    ids: impl Iterator<Item = i64>,
) -> Result<HashMap<i64, Entry>, sqlx::Error> {
    let ids: Vec<i64> = ids.collect::<HashSet<_>>().into_iter().collect();
    let rows: Vec<Entry> = sqlx::query_as(
        "SELECT o.id, o.waybill_id, o.state, q.lease_owner, o.action_time, o.event_id \
         FROM outbox o LEFT JOIN push_queue q ON q.waybill_id = o.waybill_id \
         WHERE o.id IN (SELECT value FROM json_each($1))",
    )
    .bind(json_rows(&ids))
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|mut entry| {
            entry.pending = EntryState::parse(&entry.state) == Some(EntryState::Pending);
            (entry.id, entry)
        })
        .collect())
}

/// The writes of one round of accepted commands.
type Round<C> = for<'a> fn(
    &'a mut AnyConnection,
    Vec<&'a C>,
    &'a HashMap<i64, Entry>,
) -> BoxFuture<'a, Result<(), sqlx::Error>>;

/// Runs `round` over the commands in rounds: each round looks the entries up afresh, asks
/// `decide` for each command still open (`Err`: its outcome, decided; `Ok(waybills)`:
/// accepted, touching those waybills), and applies the accepted commands whose waybills no
/// earlier command of the round touches; the others wait for the next round.
async fn in_rounds<C, T>(
    conn: &mut AnyConnection,
    commands: &[C],
    ids: impl Fn(&C) -> Vec<i64>,
    decide: impl Fn(&C, &HashMap<i64, Entry>) -> Result<Vec<String>, T>,
    accepted: T,
    round: Round<C>,
) -> Result<Vec<T>, sqlx::Error>
where
    T: Clone,
{
    let mut outcomes: Vec<Option<T>> = vec![None; commands.len()];
    let mut open: Vec<usize> = (0..commands.len()).collect();
    while !open.is_empty() {
        let entries = lookup(&mut *conn, open.iter().flat_map(|&i| ids(&commands[i]))).await?;
        let mut touched: HashSet<String> = HashSet::new();
        let (mut now, mut later) = (Vec::new(), Vec::new());
        for i in open {
            match decide(&commands[i], &entries) {
                Err(outcome) => outcomes[i] = Some(outcome),
                Ok(waybills) if waybills.iter().all(|w| !touched.contains(w)) => {
                    touched.extend(waybills);
                    outcomes[i] = Some(accepted.clone());
                    now.push(i);
                }
                Ok(_) => later.push(i),
            }
        }
        if !now.is_empty() {
            let chosen: Vec<&C> = now.iter().map(|&i| &commands[i]).collect();
            round(&mut *conn, chosen, &entries).await?;
        }
        open = later;
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.expect("every command gets an outcome"))
        .collect())
}

/// [`Store::begin_push`](super::Store::begin_push) for many: `true` where the push began.
async fn begin_all(conn: &mut AnyConnection, begins: &[Begin]) -> Result<Vec<bool>, sqlx::Error> {
    in_rounds(
        conn,
        begins,
        |b| vec![b.outbox_id],
        |b, entries| match entries.get(&b.outbox_id) {
            Some(e) if e.pending && e.waybill_id == b.waybill_id && e.held_by(&b.owner) => {
                Ok(vec![b.waybill_id.clone()])
            }
            _ => Err(false),
        },
        true,
        begin_round,
    )
    .await
}

fn begin_round<'a>(
    conn: &'a mut AnyConnection,
    chosen: Vec<&'a Begin>,
    _: &'a HashMap<i64, Entry>,
) -> BoxFuture<'a, Result<(), sqlx::Error>> {
    Box::pin(async move {
        let ids: Vec<i64> = chosen.iter().map(|b| b.outbox_id).collect();
        sqlx::query(
            "UPDATE outbox SET push_seq = push_seq + 1, receipt_at = NULL \
             WHERE id IN (SELECT value FROM json_each($1))",
        )
        .bind(json_rows(&ids))
        .execute(&mut *conn)
        .await?;
        let rows: Vec<(&str, i64)> = chosen
            .iter()
            .map(|b| (b.waybill_id.as_str(), b.outbox_id))
            .collect();
        push_queue::mark_inflight_all(&mut *conn, &rows).await
    })
}

/// [`Store::mark_skipped`](super::Store::mark_skipped) for many.
async fn skip_all(
    conn: &mut AnyConnection,
    skips: &[Skip],
) -> Result<Vec<Result<(), StoreError>>, sqlx::Error> {
    let outcomes = in_rounds(
        conn,
        skips,
        |s| s.ids.clone(),
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
                if !entries[&first].held_by(&s.owner) {
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

fn skip_round<'a>(
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
        sqlx::query(
            "WITH v AS (SELECT value ->> 0 AS id, value ->> 1 AS reason, value ->> 2 AS now \
                        FROM json_each($2)) \
             UPDATE outbox SET state = $1, skip_reason = v.reason, done_at = v.now, \
                    updated_at = v.now \
             FROM v WHERE outbox.id = v.id",
        )
        .bind(EntryState::Skipped.as_str())
        .bind(json_rows(&rows))
        .execute(&mut *conn)
        .await?;
        let done: Vec<(i64, &str)> = rows
            .iter()
            .map(|(id, _, _)| (*id, entries[id].waybill_id.as_str()))
            .collect();
        push_queue::clear_inflight_all(&mut *conn, &done).await
    })
}

/// A skip's outcome inside [`skip_all`]: `Fenced(0)` is success (no outbox id is 0).
#[derive(Clone, Copy)]
struct Fenced(i64);

/// Outcome of a completion inside [`complete_all`] (cloneable, unlike [`StoreError`]).
#[derive(Clone, Copy)]
enum Completed {
    Done,
    Fenced(i64),
    Unknown(i64),
}

/// [`Store::complete_entry`](super::Store::complete_entry) for many.
async fn complete_all(
    conn: &mut AnyConnection,
    completes: &[Complete],
) -> Result<Vec<Result<(), StoreError>>, sqlx::Error> {
    let outcomes = in_rounds(
        conn,
        completes,
        |c| vec![c.outbox_id],
        |c, entries| match entries.get(&c.outbox_id) {
            None => Err(Completed::Unknown(c.outbox_id)),
            Some(e) if !e.pending || !e.held_by(&c.owner) => Err(Completed::Fenced(c.outbox_id)),
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

fn complete_round<'a>(
    conn: &'a mut AnyConnection,
    chosen: Vec<&'a Complete>,
    entries: &'a HashMap<i64, Entry>,
) -> BoxFuture<'a, Result<(), sqlx::Error>> {
    Box::pin(complete_chosen(conn, chosen, entries))
}

/// The writes of accepted completions (distinct waybills, all held, all pending).
async fn complete_chosen(
    conn: &mut AnyConnection,
    chosen: Vec<&Complete>,
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
    );
    let rows: Vec<Row> = chosen
        .iter()
        .map(|c| match &c.completion {
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
            ),
            Completion::Dead { error } => (
                c.outbox_id,
                EntryState::Dead.as_str(),
                None,
                1,
                None,
                Some(error.as_str()),
                Some(c.now),
                c.now,
                0,
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
            ),
        })
        .collect();
    sqlx::query(
        "WITH v AS (SELECT value ->> 0 AS id, value ->> 1 AS state, value ->> 2 AS skip_reason, \
                           value ->> 3 AS tries_inc, value ->> 4 AS next_attempt_at, \
                           value ->> 5 AS last_error, value ->> 6 AS done_at, \
                           value ->> 7 AS now, value ->> 8 AS clear_receipt \
                    FROM json_each($1)) \
         UPDATE outbox SET state = v.state, \
                skip_reason = COALESCE(v.skip_reason, outbox.skip_reason), \
                tries = outbox.tries + v.tries_inc, \
                next_attempt_at = COALESCE(v.next_attempt_at, outbox.next_attempt_at), \
                last_error = COALESCE(v.last_error, outbox.last_error), \
                done_at = COALESCE(v.done_at, outbox.done_at), \
                updated_at = v.now, \
                receipt_at = CASE WHEN v.clear_receipt = 1 THEN NULL ELSE outbox.receipt_at END \
         FROM v WHERE outbox.id = v.id",
    )
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
        match (&c.completion, e.event_id) {
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
        sqlx::query(
            "INSERT INTO outbox_attempts (outbox_id, started_at, duration_ms, http_status, \
                                          errcode, outcome, detail, rid) \
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, \
                    value ->> 5, value ->> 6, value ->> 7 \
             FROM json_each($1)",
        )
        .bind(json_rows(&attempts))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// [`Store::put_binding`](super::Store::put_binding) for many; of two answers for one
/// phone, the later one sent is kept.
async fn put_bindings(
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
    sqlx::query(
        "INSERT INTO bindings (phone_hash, bound, checked_at, expires_at) \
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each($1) WHERE true \
         ON CONFLICT (phone_hash) DO UPDATE SET bound = excluded.bound, \
             checked_at = excluded.checked_at, expires_at = excluded.expires_at",
    )
    .bind(json_rows(&rows))
    .execute(&mut *conn)
    .await?;
    Ok(())
}
