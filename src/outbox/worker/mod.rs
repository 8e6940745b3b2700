//! The push worker: claims waybills with due outbox entries (a lease per waybill, so at most
//! one push is in flight per waybill across every instance), decides what to push (stale
//! events are skipped, waiting events coalesced to the newest), checks the receiver's binding,
//! calls `pathnotify`, records one attempt row per try and completes the entry.
//!
//! A step works on what its claim read from the store (`Claimed`, loaded for every waybill
//! of the claim at once, under their leases), never on payloads from before the claim, so a
//! crash at any moment leaves every accepted event pushed or still queued.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

mod claim;
mod outcome;

use crate::clock::now_ms;
use crate::codec;
use crate::domain::Phone;
use crate::outbox::lease::{run_claims, while_held, ClaimLoop, ClaimTokens};
use crate::outbox::policy::{classify, Class, Schedule};
use crate::outbox::ratelimit::RateLimit;
use crate::privacy::Privacy;
use crate::store::{
    BindingWrite, Completion, DeadReason, EventRecord, OutboxEntry, PushLoad, PushStep, PushWrites,
    SkipReason, Store, StoreError,
};
use crate::wechat::access_token::TokenManager;
use crate::wechat::client::{ApiError, ExistAnswer, WechatClient};
use crate::wechat::push::pathnotify_body;

/// API names used for pauses and rate limits.
pub const PATHNOTIFY: &str = "pathnotify";
pub const USERQUERY: &str = "userquery";

/// Tunables of a worker (from `[outbox]`).
#[derive(Debug, Clone)]
pub struct PushSettings {
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
    /// `outbox.deadline_secs`: a node not delivered this long after it was accepted is dead.
    pub deadline: Option<Duration>,
}

/// Counters of this process, for the demo summary and logs.
#[derive(Debug, Default)]
pub struct PushStats {
    pub delivered: AtomicU64,
    pub skipped_unbound: AtomicU64,
    pub skipped_stale: AtomicU64,
    pub skipped_coalesced: AtomicU64,
    pub retries: AtomicU64,
    pub dead: AtomicU64,
    pub attempts: AtomicU64,
    pub receipts_recovered: AtomicU64,
}

pub struct PushWorker {
    store: Store,
    client: WechatClient,
    tokens: Arc<TokenManager>,
    privacy: Privacy,
    settings: PushSettings,
    /// Each claim's lease token: the fence every completion is checked against.
    claims: ClaimTokens,
    stats: Arc<PushStats>,
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

impl PushWorker {
    pub fn new(
        store: Store,
        client: WechatClient,
        tokens: Arc<TokenManager>,
        privacy: Privacy,
        settings: PushSettings,
        owner: &str,
    ) -> Arc<PushWorker> {
        Arc::new(PushWorker {
            pathnotify_limit: RateLimit::new(settings.pathnotify_rate),
            userquery_limit: RateLimit::new(settings.userquery_rate),
            store,
            client,
            tokens,
            privacy,
            settings,
            claims: ClaimTokens::new(owner),
            stats: Arc::new(PushStats::default()),
        })
    }

    pub fn stats(&self) -> Arc<PushStats> {
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
        if self.past_deadline(target, now) {
            tracing::info!(waybill_id = %target.waybill_id, outbox_id = target.id, "node not delivered by its deadline: dead, never pushed now");
            let error = "deadline passed before the node was delivered".to_string();
            self.dead(carry, target, owner, None, error, DeadReason::Deadline)
                .await?;
            return Ok(());
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
            self.dead(
                carry,
                entry,
                owner,
                None,
                "waybill missing".to_string(),
                DeadReason::Unreadable,
            )
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
                DeadReason::Unreadable,
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
                DeadReason::Unreadable,
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
                    .tokens
                    .call_with_refresh(|t| async move { client.userquery(&t.token, p).await })
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
            .tokens
            .call_with_refresh(|t| async move { client.pathnotify(&t.token, b).await })
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
}
