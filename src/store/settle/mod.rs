//! The push worker's writes, settled set-based for a whole group, on both databases.
//!
//! Beginning a push, skipping entries, completing a try, releasing a waybill and caching a
//! `userquery` answer are sent to the settle writer (`group.rs`) as typed commands, on
//! SQLite and PostgreSQL alike. The writer applies every command of its group with a few
//! statements per kind, however many pushes are settling, in one transaction: a push costs
//! the writer a share of a statement and a share of a commit instead of a dozen round trips
//! and five commits of its own. The one-part writes
//! ([`Store::begin_push`](super::Store::begin_push),
//! [`Store::mark_skipped`](super::Store::mark_skipped),
//! [`Store::complete_entry`](super::Store::complete_entry),
//! [`Store::release_waybill`](super::Store::release_waybill),
//! [`Store::put_binding`](super::Store::put_binding)) are commands of one part each: there
//! is no other path.
//!
//! The fences are checked by reading the rows first. On SQLite the group's transaction is
//! the only writer of the database, so nothing changes between that read and the writes
//! after it. On PostgreSQL, where other instances and this one's other writers run
//! concurrently, the group first locks every row it will read for a fence (`FOR UPDATE`:
//! the outbox rows in id order, then the queue rows in waybill order, the store's lock
//! order), so the read is as exact there.
//!
//! A command is one step's writes ([`PushWrites`]): skips, a binding, a begin or a
//! completion, a release. Kinds are applied in that order for the whole group, after what the
//! group's jobs, events and answers wrote; a command's begin or completion only if its skips
//! landed. The commands of one group were all waiting at once, so that order is one they
//! could have had. Two accepted commands of one kind never touch the same waybill in one
//! statement: a second one waits for the next round (it cannot happen for a leaseholder,
//! whose writes are sequential, but the outcome must not depend on that).

mod rounds;
mod writes;

use writes::{begin_all, complete_all, put_bindings, skip_all};

use sqlx::{AnyConnection, Connection};
use tokio::sync::oneshot;

use super::deliver::{deliver, Deliver};
use super::states::SkipReason;
use super::{push_queue, Completion, NewAttempt, StoreError};
use super::{PushStep, PushWrites, Store};

impl Store {
    /// Applies one step's writes (see [`PushWrites`]) and returns whether its begin, if it
    /// has one, began (`true` otherwise); `Err` is the first refused skip or completion,
    /// with the release done all the same. The writes are one command of the settle writer's
    /// group, on both databases: all kept or none, fenced on the caller's lease, each
    /// caller with its own outcome.
    pub async fn settle_push(&self, writes: PushWrites) -> Result<bool, StoreError> {
        self.settler.settle(writes).await
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

/// The parts of the group's commands, by kind, borrowed from the commands (which a failed
/// set-based attempt applies again one by one).
pub(super) struct Begin<'w> {
    pub(super) waybill_id: &'w str,
    pub(super) owner: &'w str,
    pub(super) outbox_id: i64,
}

pub(super) struct Skip<'w> {
    pub(super) ids: &'w [i64],
    pub(super) reason: SkipReason,
    pub(super) owner: &'w str,
    pub(super) now: i64,
}

pub(super) struct Complete<'w> {
    pub(super) outbox_id: i64,
    pub(super) owner: &'w str,
    pub(super) attempt: Option<&'w NewAttempt>,
    pub(super) completion: &'w Completion,
    pub(super) now: i64,
}

/// Applies the group's commands and returns the delivery of each outcome. They are applied
/// together, set-based, in one savepoint; if a statement fails, nothing of that attempt is
/// kept and each command is applied again alone, in a savepoint of its own, so a command
/// that fails fails only itself. If the transaction itself is gone, every caller gets the
/// error.
pub(super) async fn apply(conn: &mut AnyConnection, work: Vec<Settle>) -> Vec<Deliver> {
    let (writes, replies): (Vec<PushWrites>, Vec<Reply<bool>>) = work
        .into_iter()
        .map(|Settle { writes, reply }| (writes, reply))
        .unzip();
    let outcomes = match attempt(conn, &writes).await {
        Ok(Ok(outcomes)) => Ok(outcomes),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, settles = writes.len(), "a group's push writes failed together; applying them one by one");
            let mut outcomes = Vec::with_capacity(writes.len());
            let mut gone = None;
            for one in &writes {
                match attempt(conn, std::slice::from_ref(one)).await {
                    Ok(Ok(mut outcome)) => outcomes.push(outcome.remove(0)),
                    Ok(Err(e)) => outcomes.push(Err(StoreError::Database(e))),
                    Err(e) => {
                        gone = Some(StoreError::GroupCommit(e.to_string()));
                        break;
                    }
                }
            }
            match gone {
                None => Ok(outcomes),
                Some(e) => Err(e),
            }
        }
        Err(e) => Err(StoreError::GroupCommit(e.to_string())),
    };
    match outcomes {
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

/// `writes` in a savepoint: `Ok(Ok)` applied, each command's outcome; `Ok(Err)` a statement
/// failed and the savepoint was rolled back, the transaction still open; `Err` the
/// transaction is gone (the rollback failed with it).
async fn attempt(
    conn: &mut AnyConnection,
    writes: &[PushWrites],
) -> Result<Result<Vec<Result<bool, StoreError>>, sqlx::Error>, sqlx::Error> {
    let mut sp = Connection::begin(&mut *conn).await?;
    match apply_set(&mut sp, writes).await {
        Ok(outcomes) => {
            sp.commit().await?;
            Ok(Ok(outcomes))
        }
        Err(e) => {
            // Fails if SQLite ended the whole transaction: then nothing more runs in it.
            sp.rollback().await?;
            Ok(Err(e))
        }
    }
}

/// The commands' writes, set-based per kind; each command's outcome.
async fn apply_set(
    conn: &mut AnyConnection,
    writes: &[PushWrites],
) -> Result<Vec<Result<bool, StoreError>>, sqlx::Error> {
    if super::dialect(conn) == super::Backend::Postgres {
        rounds::lock_rows(conn, writes).await?;
    }
    // Each part with the index of its command.
    let (mut skips, mut skip_of) = (Vec::new(), Vec::new());
    let mut bindings = Vec::new();
    let mut steps = Vec::new();
    let mut releases = Vec::new();
    for (i, writes) in writes.iter().enumerate() {
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
                reason: *reason,
                owner,
                now: *now,
            });
            skip_of.push(i);
        }
        if let Some(b) = binding {
            bindings.push((
                b.phone_hash.clone(),
                b.bound,
                *now,
                now.saturating_add(b.ttl_ms),
            ));
        }
        if *release {
            releases.push((waybill_id.as_str(), owner.as_str()));
        }
        if let Some(step) = step {
            steps.push((i, waybill_id, owner, *now, step));
        }
    }
    // Each command's outcome so far: a skip that is refused stops its begin or completion.
    let mut outcomes: Vec<Result<bool, StoreError>> = writes.iter().map(|_| Ok(true)).collect();
    for (outcome, i) in skip_all(conn, &skips).await?.into_iter().zip(skip_of) {
        if let (Err(e), Ok(_)) = (outcome, &outcomes[i]) {
            outcomes[i] = Err(e);
        }
    }
    put_bindings(conn, &bindings).await?;
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
                    outbox_id: *outbox_id,
                });
                begin_of.push(i);
            }
            PushStep::Complete {
                outbox_id,
                attempt,
                completion,
            } => {
                completes.push(Complete {
                    outbox_id: *outbox_id,
                    owner,
                    attempt: attempt.as_ref(),
                    completion,
                    now,
                });
                complete_of.push(i);
            }
        }
    }
    for (begun, i) in begin_all(conn, &begins).await?.into_iter().zip(begin_of) {
        outcomes[i] = Ok(begun);
    }
    for (done, i) in complete_all(conn, &completes)
        .await?
        .into_iter()
        .zip(complete_of)
    {
        outcomes[i] = done.map(|()| true);
    }
    // A release is the step's `finally`: it runs whatever came before it.
    push_queue::release_all(conn, &releases).await?;
    Ok(outcomes)
}
