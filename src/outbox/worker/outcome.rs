//! How a step's writes land: the begin, the completion with its attempt, the binding cache,
//! and what a failed call means (retry with backoff, dead, or a pause of the API).

use std::sync::atomic::Ordering;

use crate::clock::{now_ms, now_secs};
use crate::outbox::policy::AfterFailure;
use crate::outbox::policy::{self, classify, Class};
use crate::store::{
    BindingWrite, Completion, DeadReason, NewAttempt, OutboxEntry, PushStep, PushWrites,
    SkipReason, StoreError,
};
use crate::wechat::client::Call;

use super::{Carry, PushWorker};

impl PushWorker {
    /// [`Store::settle_push`], counting the skips it carried once they are written.
    pub(super) async fn settle(&self, writes: PushWrites) -> Result<bool, StoreError> {
        let count = |reason: SkipReason| -> u64 {
            writes
                .skips
                .iter()
                .filter(|(_, r)| *r == reason)
                .map(|(ids, _)| ids.len() as u64)
                .sum()
        };
        let (stale, coalesced) = (count(SkipReason::Stale), count(SkipReason::Coalesced));
        let settled = self.store.settle_push(writes).await;
        if settled.is_ok() {
            self.stats.skipped_stale.fetch_add(stale, Ordering::Relaxed);
            self.stats
                .skipped_coalesced
                .fetch_add(coalesced, Ordering::Relaxed);
        }
        settled
    }

    /// Caches a `userquery` answer with the step's next write.
    pub(super) fn put_binding(&self, carry: &mut Carry, phone_hash: &str, bound: bool) {
        let ttl = if bound {
            self.settings.binding_ttl_bound
        } else {
            self.settings.binding_ttl_unbound
        };
        carry.binding = Some(BindingWrite {
            phone_hash: phone_hash.to_owned(),
            bound,
            ttl_ms: ttl.as_millis() as i64,
        });
    }

    /// Records that `entry` is being pushed now, with what the step carries; `false` if the
    /// lease or the entry moved on meanwhile.
    pub(super) async fn begin(
        &self,
        carry: &mut Carry,
        entry: &OutboxEntry,
        owner: &str,
    ) -> Result<bool, StoreError> {
        let begin = PushStep::Begin {
            outbox_id: entry.id,
        };
        self.settle(carry.writes(&entry.waybill_id, owner, Some(begin), false))
            .await
    }

    /// Completes `entry` and hands the waybill back, with what the step carries: the step's
    /// last write.
    pub(super) async fn finish(
        &self,
        carry: &mut Carry,
        entry: &OutboxEntry,
        owner: &str,
        attempt: Option<NewAttempt>,
        completion: Completion,
    ) -> Result<(), StoreError> {
        let complete = PushStep::Complete {
            outbox_id: entry.id,
            attempt,
            completion,
        };
        let settled = self
            .settle(carry.writes(&entry.waybill_id, owner, Some(complete), true))
            .await;
        // A refused write still released (the release is its `finally`); a database error
        // may not have: the caller releases again.
        carry.released = !matches!(
            settled,
            Err(StoreError::Database(_) | StoreError::GroupCommit(_) | StoreError::WriterStopped)
        );
        settled.map(|_| ())
    }

    pub(super) async fn fail(
        &self,
        carry: &mut Carry,
        entry: &OutboxEntry,
        owner: &str,
        attempt: NewAttempt,
        class: Class,
        api: &str,
    ) -> Result<(), StoreError> {
        let now = now_secs();
        match class {
            Class::MinuteQuota => {
                self.retry_at(
                    carry,
                    entry,
                    owner,
                    Some(attempt),
                    (now + policy::secs_until_next_minute(now)) * 1000,
                    "minute quota",
                )
                .await
            }
            Class::DailyQuota => {
                let until = (now + policy::secs_until_quota_reset(now)) * 1000;
                self.store
                    .pause_api(api, until, "45009 daily quota reached")
                    .await?;
                tracing::warn!(
                    api,
                    until_ms = until,
                    "WeChat daily quota reached: API paused until the quota resets"
                );
                self.retry_at(carry, entry, owner, Some(attempt), until, "daily quota")
                    .await
            }
            Class::Permanent => {
                let rid = attempt.rid.as_deref().unwrap_or_default();
                match attempt.errcode {
                    Some(code) if !policy::is_listed(code) => {
                        tracing::error!(waybill_id = %entry.waybill_id, outbox_id = entry.id, errcode = code, rid, detail = %attempt.detail, "WeChat answered an errcode nobody listed: entry is dead, not retried; quote the rid to WeChat's support")
                    }
                    _ => {
                        tracing::warn!(waybill_id = %entry.waybill_id, outbox_id = entry.id, errcode = attempt.errcode, rid, detail = %attempt.detail, "permanent failure: entry is dead")
                    }
                }
                let error = attempt.detail.clone();
                self.dead(
                    carry,
                    entry,
                    owner,
                    Some(&attempt),
                    error,
                    DeadReason::Refused,
                )
                .await?;
                Ok(())
            }
            // A token error that survived one refresh, or anything transient: the schedule.
            _ => self.retry(carry, entry, owner, attempt, class).await,
        }
    }

    pub(super) async fn retry(
        &self,
        carry: &mut Carry,
        entry: &OutboxEntry,
        owner: &str,
        attempt: NewAttempt,
        _class: Class,
    ) -> Result<(), StoreError> {
        let next = self.settings.schedule.after_failure(
            entry.tries,
            &attempt.detail,
            now_ms(),
            &mut rand::thread_rng(),
        );
        match next {
            AfterFailure::RetryAt(at) => {
                self.retry_at(carry, entry, owner, Some(attempt), at, "transient")
                    .await
            }
            AfterFailure::Dead(error) => {
                tracing::warn!(waybill_id = %entry.waybill_id, outbox_id = entry.id, "retry schedule spent: entry is dead");
                let reason = DeadReason::RetriesSpent;
                self.dead(carry, entry, owner, Some(&attempt), error, reason)
                    .await?;
                Ok(())
            }
        }
    }

    /// Whether `entry` is past its deadline at `at_ms` (Unix ms): accepted longer than
    /// `outbox.deadline_secs` before.
    pub(super) fn past_deadline(&self, entry: &OutboxEntry, at_ms: i64) -> bool {
        self.settings
            .deadline
            .is_some_and(|d| at_ms >= entry.created_at.saturating_add(d.as_millis() as i64))
    }

    /// Mark an entry dead (counted in the stats), with the attempt that made it so, if any.
    pub(super) async fn dead(
        &self,
        carry: &mut Carry,
        entry: &OutboxEntry,
        owner: &str,
        attempt: Option<&NewAttempt>,
        error: String,
        reason: DeadReason,
    ) -> Result<(), StoreError> {
        let dead = Completion::Dead { error, reason };
        self.finish(carry, entry, owner, attempt.cloned(), dead)
            .await?;
        self.stats.dead.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub(super) async fn retry_at(
        &self,
        carry: &mut Carry,
        entry: &OutboxEntry,
        owner: &str,
        attempt: Option<NewAttempt>,
        at_ms: i64,
        why: &str,
    ) -> Result<(), StoreError> {
        if self.past_deadline(entry, at_ms) {
            // The next try would come after the deadline: the carrier learns now, not then.
            let error = format!("{why}: the next try would come after the deadline");
            return self
                .dead(
                    carry,
                    entry,
                    owner,
                    attempt.as_ref(),
                    error,
                    DeadReason::Deadline,
                )
                .await;
        }
        if attempt.is_some() {
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
        }
        let retry = crate::outbox::attempt::retry(attempt.as_ref(), at_ms, why);
        self.finish(carry, entry, owner, attempt, retry).await
    }

    pub(super) fn attempt(
        &self,
        entry: &OutboxEntry,
        started: i64,
        outcome: &str,
        detail: &str,
    ) -> NewAttempt {
        self.stats.attempts.fetch_add(1, Ordering::Relaxed);
        crate::outbox::attempt::plain(entry.id, started, outcome, detail)
    }

    pub(super) fn attempt_from_call<T>(
        &self,
        entry: &OutboxEntry,
        started: i64,
        call: &Call<T>,
        api: &str,
    ) -> NewAttempt {
        self.stats.attempts.fetch_add(1, Ordering::Relaxed);
        let outcome = match classify(&call.result) {
            Class::Delivered => "ok",
            Class::TokenInvalid => "token-invalid",
            Class::Transient => "transient",
            Class::MinuteQuota | Class::DailyQuota => "quota",
            Class::Permanent => "permanent",
        };
        crate::outbox::attempt::of_call(entry.id, started, call, api, outcome)
    }
}
