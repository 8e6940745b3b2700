//! The push worker: claims waybills with due outbox entries (a lease per waybill, so at most
//! one push is in flight per waybill across every instance), decides what to push (stale
//! events are skipped, waiting events coalesced to the newest), checks the receiver's binding,
//! calls `pathnotify`, records one attempt row per try and completes the entry.
//!
//! Queue tasks carry ids, not payloads: everything is re-read from the store when a waybill
//! is processed, so a crash at any moment leaves every accepted event pushed or still queued.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};

use super::policy::{self, classify, Class, Schedule};
use super::ratelimit::RateLimit;
use crate::codec::{self, now_ms, now_secs};
use crate::domain::Phone;
use crate::privacy::Privacy;
use crate::store::{Completion, NewAttempt, OutboxEntry, Store, StoreError};
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
    owner: String,
    stats: Arc<WorkerStats>,
    pathnotify_limit: RateLimit,
    userquery_limit: RateLimit,
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
            owner: owner.to_string(),
            stats: Arc::new(WorkerStats::default()),
        })
    }

    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Run until `shutdown` turns true: then stop claiming and wait for in-flight pushes.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let permits = Arc::new(Semaphore::new(self.settings.concurrency));
        tracing::info!(owner = %self.owner, concurrency = self.settings.concurrency, "outbox worker started");
        while !*shutdown.borrow() {
            let claimed = match self.claim().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming outbox work failed");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(self.settings.poll_interval) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let mut claimed = claimed.into_iter();
            while let Some(waybill_id) = claimed.next() {
                // Stopping means no new push: waybills claimed but not started are handed back
                // at once (not left to their leases), and only pushes already in flight finish.
                let permit = tokio::select! {
                    biased;
                    // (The watch guard must not live across the awaits below.)
                    _ = async { drop(shutdown.wait_for(|stop| *stop).await) } => {
                        for w in std::iter::once(waybill_id).chain(claimed.by_ref()) {
                            if let Err(e) = self.store.release_waybill(&w, &self.owner).await {
                                tracing::warn!(waybill_id = %w, error = %e, "handing back a claimed waybill failed; its lease will lapse");
                            }
                        }
                        break;
                    }
                    p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                };
                let me = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = me.process_waybill(&waybill_id).await {
                        tracing::warn!(waybill_id = %waybill_id, error = %e, "push step failed; the lease will lapse and the work be retried");
                    }
                    drop(permit);
                });
            }
        }
        // Drain: wait until every permit is back (all in-flight pushes finished).
        let _ = permits.acquire_many(self.settings.concurrency as u32).await;
        tracing::info!(owner = %self.owner, "outbox worker stopped");
    }

    async fn claim(&self) -> Result<Vec<String>, StoreError> {
        let free = self.settings.batch_size;
        self.store
            .claim_waybills(
                &self.owner,
                now_ms(),
                self.settings.lease.as_millis() as i64,
                free,
            )
            .await
    }

    /// One step for one claimed waybill (public for tests: `run_once`-style driving).
    pub async fn process_waybill(&self, waybill_id: &str) -> Result<(), StoreError> {
        let result = self.step(waybill_id).await;
        // Always hand the waybill back (recomputing when it is next due), unless the lease is
        // already someone else's — release only clears a lease we hold.
        self.store.release_waybill(waybill_id, &self.owner).await?;
        match result {
            Ok(()) | Err(StepError::LeaseLost) => Ok(()),
            Err(StepError::Store(e)) => Err(e),
        }
    }

    async fn step(&self, waybill_id: &str) -> Result<(), StepError> {
        let Some(work) = self.store.load_push_work(waybill_id).await? else {
            return Ok(());
        };
        let now = now_ms();

        // A push interrupted by a crash: if WeChat's reverse query reached us for that node,
        // WeChat had it; do not push it again.
        if let Some(id) = work.inflight_outbox_id {
            if let Some(e) = self.store.get_outbox(id).await? {
                if e.state == "pending" && e.receipt_at.is_some() {
                    let attempt = self.attempt(
                        &e,
                        now,
                        "delivered",
                        "receipt recorded by the reverse query before the interruption",
                    );
                    self.store
                        .complete_entry(e.id, Some(&attempt), &Completion::Delivered, now)
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
            self.store.mark_skipped(&ids, "stale", now).await?;
            self.stats
                .skipped_stale
                .fetch_add(ids.len() as u64, Ordering::Relaxed);
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
            self.store.mark_skipped(&ids, "coalesced", now).await?;
            self.stats
                .skipped_coalesced
                .fetch_add(ids.len() as u64, Ordering::Relaxed);
        }
        if target.next_attempt_at > now {
            return Ok(());
        }
        self.push(target).await
    }

    async fn push(&self, entry: &OutboxEntry) -> Result<(), StepError> {
        let now = now_ms();
        let Some(record) = self.store.get_waybill(&entry.waybill_id).await? else {
            self.dead(entry, None, "waybill missing".to_string())
                .await?;
            return Ok(());
        };
        let event_id = entry.event_id.unwrap_or_default();
        let events = self.store.list_events(&entry.waybill_id).await?;
        let (Some(ev), Ok(contacts)) = (
            events.iter().find(|e| e.id == event_id),
            codec::open_contacts(&self.privacy, &record),
        ) else {
            self.dead(entry, None, "event or contacts unreadable".to_string())
                .await?;
            return Ok(());
        };
        let Ok(node) = codec::open_node(&self.privacy, ev) else {
            self.dead(
                entry,
                None,
                "node text unreadable (data key changed?)".to_string(),
            )
            .await?;
            return Ok(());
        };
        let phone = contacts.receiver.phone();
        let Some(phone) = phone.filter(Phone::is_mobile) else {
            // WeChat users bind mainland mobile numbers; a landline or an extension cannot be bound.
            self.store
                .complete_entry(
                    entry.id,
                    None,
                    &Completion::Skipped {
                        reason: "unbound".into(),
                    },
                    now,
                )
                .await?;
            self.stats.skipped_unbound.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let phone_hash = self.privacy.phone_hash(phone.as_str());

        // Binding check, cached for every instance.
        let bound = match self.store.get_binding(&phone_hash, now).await? {
            Some(b) => b,
            None => {
                if let Some(until) = self.store.api_paused_until(USERQUERY, now).await? {
                    self.retry_at(entry, None, until, "userquery paused (daily quota)")
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
                        self.retry(entry, attempt, Class::Transient).await?;
                        return Ok(());
                    }
                    Ok(call) => match classify(&call.result) {
                        Class::Delivered => {
                            let b = call.result.as_ref().map(|a| a.exist == 1).unwrap_or(false);
                            self.put_binding(&phone_hash, b).await?;
                            b
                        }
                        class => {
                            let a = self.attempt_from_call(entry, started, &call, "userquery");
                            self.fail(entry, a, class, USERQUERY).await?;
                            return Ok(());
                        }
                    },
                }
            }
        };
        if !bound {
            self.store
                .complete_entry(
                    entry.id,
                    None,
                    &Completion::Skipped {
                        reason: "unbound".into(),
                    },
                    now,
                )
                .await?;
            self.stats.skipped_unbound.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }

        if let Some(until) = self.store.api_paused_until(PATHNOTIFY, now).await? {
            self.retry_at(entry, None, until, "pathnotify paused (daily quota)")
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
        if !self
            .store
            .extend_lease(
                &entry.waybill_id,
                &self.owner,
                now_ms() + self.settings.lease.as_millis() as i64,
            )
            .await?
            || !self
                .store
                .begin_push(&entry.waybill_id, &self.owner, entry.id)
                .await?
        {
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
                self.retry(entry, attempt, Class::Transient).await?;
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
                    self.store
                        .complete_entry(entry.id, Some(&attempt), &Completion::Delivered, now_ms())
                        .await?;
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                } else {
                    // Accepted, but nobody is bound to the phone any more: refresh the cache.
                    self.put_binding(&phone_hash, false).await?;
                    self.store
                        .complete_entry(
                            entry.id,
                            Some(&attempt),
                            &Completion::Skipped {
                                reason: "unbound".into(),
                            },
                            now_ms(),
                        )
                        .await?;
                    self.stats.skipped_unbound.fetch_add(1, Ordering::Relaxed);
                }
            }
            class => self.fail(entry, attempt, class, PATHNOTIFY).await?,
        }
        Ok(())
    }

    async fn put_binding(&self, phone_hash: &str, bound: bool) -> Result<(), StoreError> {
        let ttl = if bound {
            self.settings.binding_ttl_bound
        } else {
            self.settings.binding_ttl_unbound
        };
        self.store
            .put_binding(phone_hash, bound, now_ms(), ttl.as_millis() as i64)
            .await
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
        entry: &OutboxEntry,
        attempt: NewAttempt,
        class: Class,
        api: &str,
    ) -> Result<(), StoreError> {
        let now = now_secs();
        match class {
            Class::MinuteQuota => {
                self.retry_at(
                    entry,
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
                self.retry_at(entry, Some(attempt), until, "daily quota")
                    .await
            }
            Class::Permanent => {
                tracing::warn!(waybill_id = %entry.waybill_id, outbox_id = entry.id, errcode = attempt.errcode, detail = %attempt.detail, "permanent failure: entry is dead");
                self.dead(entry, Some(&attempt), attempt.detail.clone())
                    .await?;
                Ok(())
            }
            // A token error that survived one refresh, or anything transient: the schedule.
            _ => self.retry(entry, attempt, class).await,
        }
    }

    async fn retry(
        &self,
        entry: &OutboxEntry,
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
                    entry,
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
                self.dead(entry, Some(&attempt), error).await?;
                Ok(())
            }
        }
    }

    /// Mark an entry dead (counted in the stats), with the attempt that made it so, if any.
    async fn dead(
        &self,
        entry: &OutboxEntry,
        attempt: Option<&NewAttempt>,
        error: String,
    ) -> Result<(), StoreError> {
        self.store
            .complete_entry(entry.id, attempt, &Completion::Dead { error }, now_ms())
            .await?;
        self.stats.dead.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn retry_at(
        &self,
        entry: &OutboxEntry,
        attempt: Option<NewAttempt>,
        at_ms: i64,
        why: &str,
    ) -> Result<(), StoreError> {
        if attempt.is_some() {
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
        }
        self.store
            .complete_entry(
                entry.id,
                attempt.as_ref(),
                &super::attempt::retry(attempt.as_ref(), at_ms, why),
                now_ms(),
            )
            .await
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
