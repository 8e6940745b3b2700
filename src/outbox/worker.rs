//! The push worker: claims waybills with due outbox entries (a lease per waybill, so at most
//! one push is in flight per waybill across every instance), decides what to push (stale
//! events are skipped, waiting events coalesced to the newest), checks the receiver's binding,
//! calls `pathnotify`, records one attempt row per try and completes the entry.
//!
//! A step works on what its claim read from the store (`Claimed`, loaded for every waybill
//! of the claim at once, under their leases), never on payloads from before the claim, so a
//! crash at any moment leaves every accepted event pushed or still queued.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::lease::{run_claims, while_held, ClaimLoop, ClaimTokens};
use super::policy::{self, classify, Class, Schedule};
use super::ratelimit::RateLimit;
use crate::clock::{now_ms, now_secs};
use crate::codec;
use crate::domain::Phone;
use crate::privacy::Privacy;
use crate::store::{
    BindingWrite, Completion, EventRecord, NewAttempt, OutboxEntry, PushLoad, PushStep, PushWrites,
    SkipReason, Store, StoreError, WaybillRecord,
};
use crate::wechat::client::{ApiError, Call, ExistAnswer, WechatClient};
use crate::wechat::push::pathnotify_body;
use crate::wechat::token::{AccessToken, TokenError, TokenManager};

/// API names used for pauses and rate limits.
pub const PATHNOTIFY: &str = "pathnotify";
pub const USERQUERY: &str = "userquery";

/// Tunables of a worker (from `[outbox]`).
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub concurrency: usize,
    pub batch_size: i64,
    pub poll_interval: Duration,
    pub lease: Duration,
    pub schedule: Schedule,
    pub coalesce: bool,
    pub binding_ttl_bound: Duration,
    pub binding_ttl_unbound: Duration,
    pub pathnotify_rate: f64,
    pub userquery_rate: f64,
}

/// Counters of this process, for the demo summary and logs.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub delivered: AtomicU64,
    pub skipped_unbound: AtomicU64,
    pub skipped_stale: AtomicU64,
    pub skipped_coalesced: AtomicU64,
    pub retries: AtomicU64,
    pub dead: AtomicU64,
    pub attempts: AtomicU64,
    pub receipts_recovered: AtomicU64,
}

pub struct Worker {
    store: Store,
    client: WechatClient,
    tokens: Arc<TokenManager>,
    privacy: Privacy,
    settings: WorkerSettings,
    /// Each claim's lease token: the fence every completion is checked against.
    claims: ClaimTokens,
    stats: Arc<WorkerStats>,
    pathnotify_limit: RateLimit,
    userquery_limit: RateLimit,
}

/// A waybill claimed for a step, with what the step reads: loaded for the whole claim at
/// once (`Store::load_push_batch`), so a push costs no reads of its own.
pub struct Claimed {
    waybill_id: String,
    /// `None`: the waybill has no queue row (nothing to do but release it).
    load: Option<PushLoad>,
    /// The receiver's cached `userquery` answer, if one is valid.
    bound: Option<bool>,
    /// API → end of its pause (Unix ms), as of the claim.
    pauses: Arc<HashMap<String, i64>>,
}

/// What a step has decided but not yet written: skips and a `userquery` answer ride along
/// with its next write (the begin or the completion), so a push costs the writer fewer
/// round trips; and whether the lease was handed back already (with the completion).
#[derive(Default)]
struct Carry {
    skips: Vec<(Vec<i64>, SkipReason)>,
    binding: Option<BindingWrite>,
    released: bool,
}

impl Carry {
    /// The step's next write for `waybill_id`: `step` and `release`, with what it carries
    /// (taken, so it is written once).
    fn writes(
        &mut self,
        waybill_id: &str,
        owner: &str,
        step: Option<PushStep>,
        release: bool,
    ) -> PushWrites {
        PushWrites {
            waybill_id: waybill_id.to_owned(),
            owner: owner.to_owned(),
            now: now_ms(),
            skips: std::mem::take(&mut self.skips),
            binding: self.binding.take(),
            step,
            release,
        }
    }
}

/// Why one step of a push could not go on.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("the lease on the waybill was lost")]
    LeaseLost,
}

impl Worker {
    pub fn new(
        store: Store,
        client: WechatClient,
        tokens: Arc<TokenManager>,
        privacy: Privacy,
        settings: WorkerSettings,
        owner: &str,
    ) -> Arc<Worker> {
        Arc::new(Worker {
            pathnotify_limit: RateLimit::new(settings.pathnotify_rate),
            userquery_limit: RateLimit::new(settings.userquery_rate),
            store,
            client,
            tokens,
            privacy,
            settings,
            claims: ClaimTokens::new(owner),
            stats: Arc::new(WorkerStats::default()),
        })
    }

    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Run until `shutdown` turns true: then stop claiming and wait for in-flight pushes.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let cfg = ClaimLoop {
            concurrency: self.settings.concurrency,
            batch_size: self.settings.batch_size,
            poll_interval: self.settings.poll_interval,
        };
        let claim = |owner: String, limit| {
            let me = self.clone();
            async move { me.claim(&owner, limit).await }
        };
        let process = |claimed: Claimed, owner: String| {
            let me = self.clone();
            async move {
                let waybill_id = claimed.waybill_id.clone();
                if let Err(e) = me.process_waybill(claimed, &owner).await {
                    tracing::warn!(waybill_id = %waybill_id, error = %e, "push step failed; the lease will lapse and the work be retried");
                }
            }
        };
        run_claims("outbox", &self.claims, cfg, shutdown, claim, process).await;
    }

    /// Claims up to `limit` due waybills for `owner` and loads what their steps read.
    async fn claim(&self, owner: &str, limit: i64) -> Result<Vec<Claimed>, StoreError> {
        let ids = self
            .store
            .claim_waybills(
                owner,
                now_ms(),
                self.settings.lease.as_millis() as i64,
                limit,
            )
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        match self.load(ids.clone()).await {
            Ok(claimed) => Ok(claimed),
            Err(e) => {
                // Hand them back now rather than leave their leases to lapse.
                for id in &ids {
                    let _ = self.store.release_waybill(id, owner).await;
                }
                Err(e)
            }
        }
    }

    /// What the steps of these claimed waybills read: their work, records and node texts,
    /// the receivers' cached bindings and the API pauses, in a few reads for all of them.
    async fn load(&self, ids: Vec<String>) -> Result<Vec<Claimed>, StoreError> {
        let now = now_ms();
        let mut loads: HashMap<String, PushLoad> = self
            .store
            .load_push_batch(&ids)
            .await?
            .into_iter()
            .map(|l| (l.work.waybill_id.clone(), l))
            .collect();
        let pauses: HashMap<String, i64> = self
            .store
            .list_pauses(now)
            .await?
            .into_iter()
            .map(|(api, until, _)| (api, until))
            .collect();
        let pauses = Arc::new(pauses);
        let hashes: HashMap<String, String> = loads
            .iter()
            .filter_map(|(id, l)| Some((id.clone(), self.receiver_hash(l.waybill.as_ref()?)?)))
            .collect();
        let wanted: Vec<String> = hashes
            .values()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let bindings = if wanted.is_empty() {
            HashMap::new()
        } else {
            self.store.get_bindings(&wanted, now).await?
        };
        Ok(ids
            .into_iter()
            .map(|waybill_id| Claimed {
                bound: hashes
                    .get(&waybill_id)
                    .and_then(|h| bindings.get(h).copied()),
                load: loads.remove(&waybill_id),
                pauses: pauses.clone(),
                waybill_id,
            })
            .collect())
    }

    /// The keyed hash of the receiver's phone, if it is a mobile number that can be read.
    fn receiver_hash(&self, record: &WaybillRecord) -> Option<String> {
        let contacts = codec::open_contacts(&self.privacy, record).ok()?;
        let phone = contacts.receiver.phone().filter(Phone::is_mobile)?;
        Some(self.privacy.phone_hash(phone.as_str()))
    }

    /// One step for one waybill claimed under `owner` (the claim's token), its lease kept
    /// alive meanwhile; then the waybill is handed back. A step writes at most twice: the
    /// begin of its push, and its completion with the release; what it decided on the way
    /// (skips, a `userquery` answer) rides along with the next of them.
    pub async fn process_waybill(&self, claimed: Claimed, owner: &str) -> Result<(), StoreError> {
        let waybill_id = claimed.waybill_id.as_str();
        let lease = self.settings.lease;
        let renew = || {
            self.store
                .extend_lease(waybill_id, owner, now_ms() + lease.as_millis() as i64)
        };
        let mut carry = Carry::default();
        let result = while_held(lease, renew, self.step(&claimed, owner, &mut carry)).await;
        // Always hand the waybill back (recomputing when it is next due), with whatever the
        // step left unwritten, unless the completion did already. Release only clears a lease
        // we hold.
        if !carry.released {
            let settled = self
                .settle(carry.writes(waybill_id, owner, None, true))
                .await;
            match settled {
                // Refused skips (the lease moved on) are the new holder's to redo.
                Ok(_) | Err(StoreError::Fenced(_)) => {}
                Err(e) => return Err(e),
            }
        }
        match result {
            Ok(()) | Err(StepError::LeaseLost) | Err(StepError::Store(StoreError::Fenced(_))) => {
                Ok(())
            }
            Err(StepError::Store(e)) => Err(e),
        }
    }

    async fn step(
        &self,
        claimed: &Claimed,
        owner: &str,
        carry: &mut Carry,
    ) -> Result<(), StepError> {
        let Some(load) = &claimed.load else {
            return Ok(());
        };
        let work = &load.work;
        let now = now_ms();

        // A push interrupted by a crash: if WeChat's reverse query reached us for that node,
        // WeChat had it; do not push it again. (Only a pending entry can still be settled.)
        if let Some(id) = work.inflight_outbox_id {
            if let Some(e) = work.pending.iter().find(|e| e.id == id) {
                if e.receipt_at.is_some() {
                    let attempt = self.attempt(
                        e,
                        now,
                        "delivered",
                        "receipt recorded by the reverse query before the interruption",
                    );
                    self.finish(carry, e, owner, Some(attempt), Completion::Delivered)
                        .await?;
                    self.stats
                        .receipts_recovered
                        .fetch_add(1, Ordering::Relaxed);
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
            }
        }

        let last = work
            .last_pushed_action_time
            .map(|t| (t, work.last_pushed_event_id.unwrap_or(0)));
        let key = |e: &OutboxEntry| (e.action_time, e.event_id.unwrap_or(0));
        let (stale, fresh): (Vec<&OutboxEntry>, Vec<&OutboxEntry>) = work
            .pending
            .iter()
            .partition(|e| last.is_some_and(|l| key(e) < l));
        if !stale.is_empty() {
            let ids: Vec<i64> = stale.iter().map(|e| e.id).collect();
            carry.skips.push((ids, SkipReason::Stale));
        }
        let target = if self.settings.coalesce {
            fresh.last()
        } else {
            fresh.first()
        };
        let Some(target) = target.copied() else {
            return Ok(());
        };
        if self.settings.coalesce && fresh.len() > 1 {
            let ids: Vec<i64> = fresh[..fresh.len() - 1].iter().map(|e| e.id).collect();
            carry.skips.push((ids, SkipReason::Coalesced));
        }
        if target.next_attempt_at > now {
            return Ok(());
        }
        self.push(target, owner, carry, claimed, load).await
    }

    async fn push(
        &self,
        entry: &OutboxEntry,
        owner: &str,
        carry: &mut Carry,
        claimed: &Claimed,
        load: &PushLoad,
    ) -> Result<(), StepError> {
        let now = now_ms();
        let paused = |api: &str| {
            claimed
                .pauses
                .get(api)
                .copied()
                .filter(|&until| until > now)
        };
        let Some(record) = load.waybill.as_ref() else {
            self.dead(carry, entry, owner, None, "waybill missing".to_string())
                .await?;
            return Ok(());
        };
        let event_id = entry.event_id.unwrap_or_default();
        let events: &[EventRecord] = &load.events;
        let (Some(ev), Ok(contacts)) = (
            events.iter().find(|e| e.id == event_id),
            codec::open_contacts(&self.privacy, record),
        ) else {
            self.dead(
                carry,
                entry,
                owner,
                None,
                "event or contacts unreadable".to_string(),
            )
            .await?;
            return Ok(());
        };
        let Ok(node) = codec::open_node(&self.privacy, ev) else {
            self.dead(
                carry,
                entry,
                owner,
                None,
                "node text unreadable (data key changed?)".to_string(),
            )
            .await?;
            return Ok(());
        };
        let phone = contacts.receiver.phone();
        let Some(phone) = phone.filter(Phone::is_mobile) else {
            // WeChat users bind mainland mobile numbers; a landline or an extension cannot be bound.
            let unbound = Completion::Skipped {
                reason: SkipReason::Unbound,
            };
            self.finish(carry, entry, owner, None, unbound).await?;
            self.stats.skipped_unbound.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let phone_hash = self.privacy.phone_hash(phone.as_str());

        // Binding check, cached for every instance.
        let bound = match claimed.bound {
            Some(b) => b,
            None => {
                if let Some(until) = paused(USERQUERY) {
                    self.retry_at(
                        carry,
                        entry,
                        owner,
                        None,
                        until,
                        "userquery paused (daily quota)",
                    )
                    .await?;
                    return Ok(());
                }
                self.userquery_limit.acquire().await;
                let started = now_ms();
                let (client, p) = (&self.client, phone.as_str());
                let (call, _) = self
                    .with_token(|t| async move { client.userquery(&t.token, p).await })
                    .await;
                match call {
                    Err(e) => {
                        let attempt =
                            self.attempt(entry, started, "token-error", &format!("userquery: {e}"));
                        self.retry(carry, entry, owner, attempt, Class::Transient)
                            .await?;
                        return Ok(());
                    }
                    Ok(call) => match classify(&call.result) {
                        Class::Delivered => {
                            let b = call.result.as_ref().map(|a| a.exist == 1).unwrap_or(false);
                            self.put_binding(carry, &phone_hash, b);
                            b
                        }
                        class => {
                            let a = self.attempt_from_call(entry, started, &call, "userquery");
                            self.fail(carry, entry, owner, a, class, USERQUERY).await?;
                            return Ok(());
                        }
                    },
                }
            }
        };
        if !bound {
            let unbound = Completion::Skipped {
                reason: SkipReason::Unbound,
            };
            self.finish(carry, entry, owner, None, unbound).await?;
            self.stats.skipped_unbound.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }

        if let Some(until) = paused(PATHNOTIFY) {
            self.retry_at(
                carry,
                entry,
                owner,
                None,
                until,
                "pathnotify paused (daily quota)",
            )
            .await?;
            return Ok(());
        }
        let body = pathnotify_body(
            &entry.waybill_id,
            record.create_time,
            &contacts,
            node.action_type,
            node.action_time,
            &node.text,
        );
        if !self.begin(carry, entry, owner).await? {
            return Err(StepError::LeaseLost);
        }
        self.pathnotify_limit.acquire().await;
        let started = now_ms();
        let (client, b) = (&self.client, &body);
        let (call, _) = self
            .with_token(|t| async move { client.pathnotify(&t.token, b).await })
            .await;
        let call = match call {
            Ok(c) => c,
            Err(e) => {
                let attempt =
                    self.attempt(entry, started, "token-error", &format!("pathnotify: {e}"));
                self.retry(carry, entry, owner, attempt, Class::Transient)
                    .await?;
                return Ok(());
            }
        };
        let mut class = classify(&call.result);
        // No answer, but WeChat's reverse query for this node reached our callback: WeChat has it.
        if matches!(
            call.result,
            Err(ApiError::Timeout) | Err(ApiError::Network(_))
        ) {
            if let Some(e) = self.store.get_outbox(entry.id).await? {
                if e.receipt_at.is_some() {
                    class = Class::Delivered;
                }
            }
        }
        let attempt = self.attempt_from_call(entry, started, &call, "pathnotify");
        match class {
            Class::Delivered => {
                let exist = call
                    .result
                    .as_ref()
                    .map(|a: &ExistAnswer| a.exist)
                    .unwrap_or(1);
                if exist == 1 {
                    self.finish(carry, entry, owner, Some(attempt), Completion::Delivered)
                        .await?;
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                } else {
                    // Accepted, but nobody is bound to the phone any more: refresh the cache.
                    self.put_binding(carry, &phone_hash, false);
                    let unbound = Completion::Skipped {
                        reason: SkipReason::Unbound,
                    };
                    self.finish(carry, entry, owner, Some(attempt), unbound)
                        .await?;
                    self.stats.skipped_unbound.fetch_add(1, Ordering::Relaxed);
                }
            }
            class => {
                self.fail(carry, entry, owner, attempt, class, PATHNOTIFY)
                    .await?
            }
        }
        Ok(())
    }

    /// [`Store::settle_push`], counting the skips it carried once they are written.
    async fn settle(&self, writes: PushWrites) -> Result<bool, StoreError> {
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
    fn put_binding(&self, carry: &mut Carry, phone_hash: &str, bound: bool) {
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
    async fn begin(
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
    async fn finish(
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

    /// Call with a token; on 40001/40014/42001 invalidate it (if still current), get a fresh
    /// one and retry exactly once. Returns the last call and whether a token retry happened.
    async fn with_token<T, F, Fut>(&self, f: F) -> (Result<Call<T>, TokenError>, bool)
    where
        F: Fn(AccessToken) -> Fut,
        Fut: std::future::Future<Output = Call<T>>,
    {
        let token = match self.tokens.get().await {
            Ok(t) => t,
            Err(e) => return (Err(e), false),
        };
        let call = f(token.clone()).await;
        if classify(&call.result) != Class::TokenInvalid {
            return (Ok(call), false);
        }
        if let Err(e) = self.tokens.invalidate(&token).await {
            return (Err(e), false);
        }
        match self.tokens.get().await {
            Ok(fresh) => (Ok(f(fresh).await), true),
            Err(e) => (Err(e), true),
        }
    }

    async fn fail(
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
                self.dead(carry, entry, owner, Some(&attempt), attempt.detail.clone())
                    .await?;
                Ok(())
            }
            // A token error that survived one refresh, or anything transient: the schedule.
            _ => self.retry(carry, entry, owner, attempt, class).await,
        }
    }

    async fn retry(
        &self,
        carry: &mut Carry,
        entry: &OutboxEntry,
        owner: &str,
        attempt: NewAttempt,
        _class: Class,
    ) -> Result<(), StoreError> {
        let tries_done = entry.tries as u32 + 1;
        let delay = self
            .settings
            .schedule
            .next_delay(tries_done, &mut rand::thread_rng());
        match delay {
            Some(d) => {
                self.retry_at(
                    carry,
                    entry,
                    owner,
                    Some(attempt),
                    now_ms() + d.as_millis() as i64,
                    "transient",
                )
                .await
            }
            None => {
                let error = format!(
                    "retry schedule spent after {tries_done} tries; last: {}",
                    attempt.detail
                );
                tracing::warn!(waybill_id = %entry.waybill_id, outbox_id = entry.id, "retry schedule spent: entry is dead");
                self.dead(carry, entry, owner, Some(&attempt), error)
                    .await?;
                Ok(())
            }
        }
    }

    /// Mark an entry dead (counted in the stats), with the attempt that made it so, if any.
    async fn dead(
        &self,
        carry: &mut Carry,
        entry: &OutboxEntry,
        owner: &str,
        attempt: Option<&NewAttempt>,
        error: String,
    ) -> Result<(), StoreError> {
        let dead = Completion::Dead { error };
        self.finish(carry, entry, owner, attempt.cloned(), dead)
            .await?;
        self.stats.dead.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn retry_at(
        &self,
        carry: &mut Carry,
        entry: &OutboxEntry,
        owner: &str,
        attempt: Option<NewAttempt>,
        at_ms: i64,
        why: &str,
    ) -> Result<(), StoreError> {
        if attempt.is_some() {
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
        }
        let retry = super::attempt::retry(attempt.as_ref(), at_ms, why);
        self.finish(carry, entry, owner, attempt, retry).await
    }

    fn attempt(
        &self,
        entry: &OutboxEntry,
        started: i64,
        outcome: &str,
        detail: &str,
    ) -> NewAttempt {
        self.stats.attempts.fetch_add(1, Ordering::Relaxed);
        super::attempt::plain(entry.id, started, outcome, detail)
    }

    fn attempt_from_call<T>(
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
        super::attempt::of_call(entry.id, started, call, api, outcome)
    }
}
