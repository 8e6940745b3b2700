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

pub(super) struct Begin {
    pub(super) waybill_id: String,
    pub(super) owner: String,
    pub(super) outbox_id: i64,
}

pub(super) struct Skip {
    pub(super) ids: Vec<i64>,
    pub(super) reason: SkipReason,
    pub(super) owner: String,
    pub(super) now: i64,
}

pub(super) struct Complete {
    pub(super) outbox_id: i64,
    pub(super) owner: String,
    pub(super) attempt: Option<NewAttempt>,
    pub(super) completion: Completion,
    pub(super) now: i64,
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
