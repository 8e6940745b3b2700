//! The notification worker: claims users with due notifications (a lease per openid, so at
//! most one send per user is in flight across every instance — WeChat answers concurrent
//! sends to one user with 43108), builds each message from its rule, takes one unit of
//! consent for it (a subscription grant, or a use of the soonest-expiring legacy
//! credential), sends it through `subscribe/send` or `template/send`, records one attempt
//! row per try and completes the entry.
//!
//! Queue tasks carry ids, not payloads: the message is rebuilt from the store for every try.

mod outcome;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::policy::{classify, Outcome};
use super::rules::{MessageContext, Rules};
use super::section::NotificationsSection;
use crate::clock::{now_ms, now_secs};
use crate::codec;
use crate::domain::ActionType;
use crate::outbox::lease::{run_claims, while_held, ClaimLoop, ClaimTokens};
use crate::outbox::policy::Schedule;
use crate::outbox::ratelimit::RateLimit;
use crate::privacy::Privacy;
use crate::store::{DeadReason, GrantTake, NotificationWork, NotifyKind, Store, StoreError};
use crate::wechat::access_token::{AccessToken, TokenError, TokenManager};
use crate::wechat::client::{ApiError, Call, WechatClient};

/// API names used for pauses and in the attempt log.
pub const SUBSCRIBE_SEND: &str = "subscribe_send";
pub const TEMPLATE_SEND: &str = "template_send";
const SUBSCRIBE_PATH: &str = "/cgi-bin/message/subscribe/send";
const TEMPLATE_PATH: &str = "/cgi-bin/message/wxopen/template/send";

/// Notifications handled per user per claim (the lease is extended before each).
const PER_CLAIM: i64 = 20;
/// Credentials tried in one step when WeChat refuses them (41028/41029).
const CREDENTIALS_PER_STEP: usize = 10;
/// Delay after a 43108 (a send to the user from elsewhere was in progress).
const USER_BUSY_DELAY: Duration = Duration::from_secs(2);

/// Tunables (from `[notifications]` and `[outbox]`).
#[derive(Debug, Clone)]
pub struct NotifySettings {
    pub concurrency: usize,
    pub batch_size: i64,
    pub poll_interval: Duration,
    pub lease: Duration,
    pub schedule: Schedule,
    pub subscribe_rate: f64,
    pub template_rate: f64,
    /// A credential expiring within this many seconds is not offered.
    pub credential_margin_secs: i64,
}

impl NotifySettings {
    /// The worker's part of `[notifications]` (checked by [`Rules::compile`]).
    pub fn from_section(s: &NotificationsSection, schedule: Schedule) -> NotifySettings {
        NotifySettings {
            concurrency: s.concurrency,
            batch_size: s.batch_size,
            poll_interval: Duration::from_millis(s.poll_interval_ms),
            lease: Duration::from_secs(s.lease_secs.max(1) as u64),
            schedule,
            subscribe_rate: s.subscribe_rate,
            template_rate: s.template_rate,
            credential_margin_secs: s.credential_margin_secs,
        }
    }
}

/// Counters of this process (the demo summary, logs).
#[derive(Debug, Default)]
pub struct NotifyStats {
    /// Accepted by WeChat.
    pub sent: AtomicU64,
    /// Not sent: no grant, no usable credential, or WeChat said 43101.
    pub skipped_no_consent: AtomicU64,
    /// Dead: a permanent error or the retry schedule spent.
    pub failed: AtomicU64,
    pub retries: AtomicU64,
    pub attempts: AtomicU64,
    /// Credentials WeChat refused (41028/41029) and that were discarded.
    pub credentials_refused: AtomicU64,
}

impl NotifyStats {
    /// (sent, skipped_no_consent, failed).
    pub fn summary(&self) -> (u64, u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.skipped_no_consent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

pub struct NotifyWorker {
    store: Store,
    client: WechatClient,
    tokens: Arc<TokenManager>,
    privacy: Privacy,
    rules: Arc<Rules>,
    settings: NotifySettings,
    /// Each claim's lease token: the fence every completion is checked against.
    claims: ClaimTokens,
    stats: Arc<NotifyStats>,
    subscribe_limit: RateLimit,
    template_limit: RateLimit,
}

#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("the lease on the user was lost")]
    LeaseLost,
}

impl NotifyWorker {
    pub fn new(
        store: Store,
        client: WechatClient,
        tokens: Arc<TokenManager>,
        privacy: Privacy,
        rules: Arc<Rules>,
        settings: NotifySettings,
        owner: &str,
    ) -> Arc<NotifyWorker> {
        Arc::new(NotifyWorker {
            subscribe_limit: RateLimit::new(settings.subscribe_rate),
            template_limit: RateLimit::new(settings.template_rate),
            store,
            client,
            tokens,
            privacy,
            rules,
            settings,
            claims: ClaimTokens::new(owner),
            stats: Arc::new(NotifyStats::default()),
        })
    }

    pub fn stats(&self) -> Arc<NotifyStats> {
        self.stats.clone()
    }

    /// Run until `shutdown` turns true: then stop claiming and wait for in-flight sends.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let cfg = ClaimLoop {
            concurrency: self.settings.concurrency,
            batch_size: self.settings.batch_size,
            poll_interval: self.settings.poll_interval,
        };
        let claim = |owner: String, limit| {
            let me = self.clone();
            async move {
                let lease = me.settings.lease.as_millis() as i64;
                me.store
                    .claim_recipients(&owner, now_ms(), lease, limit)
                    .await
            }
        };
        let process = |openid: String, owner: String| {
            let me = self.clone();
            async move {
                if let Err(e) = me.process_recipient(&openid, &owner).await {
                    tracing::warn!(error = %e, "notification step failed; the lease will lapse and the work be retried");
                }
            }
        };
        run_claims("notifications", &self.claims, cfg, shutdown, claim, process).await;
    }

    /// Claims due users once and handles them one after the other (tests, tools).
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let owner = self.claims.next();
        let claimed = self
            .store
            .claim_recipients(
                &owner,
                now_ms(),
                self.settings.lease.as_millis() as i64,
                self.settings.batch_size,
            )
            .await?;
        for openid in &claimed {
            self.process_recipient(openid, &owner).await?;
        }
        Ok(claimed.len())
    }

    /// Sends the user's due notifications one at a time under the lease of the claim
    /// `owner`, kept alive meanwhile, then releases the user.
    pub async fn process_recipient(&self, openid: &str, owner: &str) -> Result<(), StoreError> {
        let lease = self.settings.lease;
        let renew = || {
            self.store
                .extend_recipient_lease(openid, owner, now_ms() + lease.as_millis() as i64)
        };
        let result = while_held(lease, renew, self.drain(openid, owner)).await;
        self.store.release_recipient(openid, owner).await?;
        match result {
            Ok(()) | Err(StepError::LeaseLost) | Err(StepError::Store(StoreError::Fenced(_))) => {
                Ok(())
            }
            Err(StepError::Store(e)) => Err(e),
        }
    }

    async fn drain(&self, openid: &str, owner: &str) -> Result<(), StepError> {
        let work = self
            .store
            .load_notification_work(openid, now_ms(), PER_CLAIM)
            .await?;
        for w in &work {
            let until = now_ms() + self.settings.lease.as_millis() as i64;
            if !self
                .store
                .extend_recipient_lease(openid, owner, until)
                .await?
            {
                return Err(StepError::LeaseLost);
            }
            self.send(openid, owner, w).await?;
        }
        Ok(())
    }

    async fn send(
        &self,
        openid: &str,
        owner: &str,
        w: &NotificationWork,
    ) -> Result<(), StoreError> {
        let entry_id = w.entry.id;
        let Some(kind) = w.entry.kind.notify_kind() else {
            return self
                .dead(
                    w,
                    owner,
                    None,
                    "not a notification kind",
                    DeadReason::Unreadable,
                )
                .await;
        };
        let Some(rule) = self.rules.rule(&w.rule) else {
            return self
                .dead(
                    w,
                    owner,
                    None,
                    &format!("rule {} is no longer configured", w.rule),
                    DeadReason::TemplateError,
                )
                .await;
        };
        if rule.api != kind {
            return self
                .dead(
                    w,
                    owner,
                    None,
                    &format!("rule {} now uses another API", w.rule),
                    DeadReason::TemplateError,
                )
                .await;
        }
        let message = match self.build(w, rule).await? {
            Ok(m) => m,
            Err(why) => {
                tracing::warn!(outbox_id = entry_id, rule = %w.rule, why = %why, "notification cannot be built: entry is dead");
                return self
                    .dead(w, owner, None, &why, DeadReason::TemplateError)
                    .await;
            }
        };
        let api = match kind {
            NotifyKind::Subscribe => SUBSCRIBE_SEND,
            NotifyKind::Template => TEMPLATE_SEND,
        };
        let now = now_ms();
        if let Some(until) = self.store.api_paused_until(api, now).await? {
            return self
                .retry_at(
                    w,
                    owner,
                    None,
                    until,
                    &format!("{api} paused (daily quota)"),
                )
                .await;
        }

        match kind {
            NotifyKind::Subscribe => {
                match self
                    .store
                    .take_grant(entry_id, openid, &w.template_id, now)
                    .await?
                {
                    GrantTake::NoGrant => return self.skip_no_consent(w, owner, None, false).await,
                    GrantTake::Taken { .. } | GrantTake::AlreadyHeld => {}
                }
                let mut body = self.rules.body(rule, openid, &message, None);
                body["template_id"] = w.template_id.clone().into();
                self.subscribe_limit.acquire().await;
                let started = now_ms();
                let (call, detail_prefix) =
                    (self.call(SUBSCRIBE_PATH, &body).await, "subscribe/send");
                self.conclude(w, owner, kind, started, call, detail_prefix)
                    .await
            }
            NotifyKind::Template => {
                for _ in 0..CREDENTIALS_PER_STEP {
                    let Some(credential) = self
                        .store
                        .take_credential(
                            entry_id,
                            openid,
                            now_secs(),
                            self.settings.credential_margin_secs,
                        )
                        .await?
                    else {
                        return self.skip_no_consent(w, owner, None, false).await;
                    };
                    let mut body = self
                        .rules
                        .body(rule, openid, &message, Some(&credential.value));
                    body["template_id"] = w.template_id.clone().into();
                    self.template_limit.acquire().await;
                    let started = now_ms();
                    let call = self.call(TEMPLATE_PATH, &body).await;
                    let refused = matches!(
                        &call,
                        Ok(c) if classify(kind, &c.result) == Outcome::CredentialRefused
                    );
                    if !refused {
                        let prefix =
                            format!("template/send with {} #{}", credential.kind, credential.id);
                        return self.conclude(w, owner, kind, started, call, &prefix).await;
                    }
                    let c = call.as_ref().expect("checked: refused");
                    let code = c
                        .result
                        .as_ref()
                        .err()
                        .and_then(ApiError::errcode)
                        .unwrap_or(0);
                    self.store
                        .discard_credential(credential.id, &code.to_string())
                        .await?;
                    self.stats
                        .credentials_refused
                        .fetch_add(1, Ordering::Relaxed);
                    let attempt = self.attempt_from_call(
                        w,
                        kind,
                        started,
                        c,
                        &format!("template/send with {} #{}", credential.kind, credential.id),
                    );
                    self.store.record_notification_attempt(&attempt).await?;
                    tracing::info!(
                        outbox_id = entry_id,
                        credential_id = credential.id,
                        errcode = code,
                        "legacy credential refused: discarded, trying the next one"
                    );
                }
                self.retry_at(
                    w,
                    owner,
                    None,
                    now_ms() + 60_000,
                    "too many refused credentials in one step",
                )
                .await
            }
        }
    }

    /// The message for `w`, or why it cannot be built (outer error: the store failed).
    async fn build(
        &self,
        w: &NotificationWork,
        rule: &super::rules::Rule,
    ) -> Result<Result<super::rules::Message, String>, StoreError> {
        let entry = &w.entry;
        let Some(record) = self.store.get_waybill(&entry.waybill_id).await? else {
            return Ok(Err("waybill missing".into()));
        };
        let events = self.store.list_events(&entry.waybill_id).await?;
        let Some(ev) = events.iter().find(|e| Some(e.id) == entry.event_id) else {
            return Ok(Err("event missing".into()));
        };
        let Ok(node) = codec::open_node(&self.privacy, ev) else {
            return Ok(Err("event text unreadable (data key changed?)".into()));
        };
        let Some(action_type) = ActionType::parse(node.action_type) else {
            return Ok(Err("unknown action type".into()));
        };
        let contacts = codec::open_contacts(&self.privacy, &record).ok();
        let ctx = MessageContext {
            waybill_id: &record.waybill_id,
            action_type,
            action_time: node.action_time,
            create_time: record.create_time,
            text: &node.text,
            contacts: contacts.as_ref(),
            total_fee: record.payment_total_fee,
            out_trade_no: record.payment_out_trade_no.as_deref(),
        };
        Ok(self.rules.build(rule, &ctx))
    }

    /// Call with a token; on 40001/40014/42001 invalidate it (if still current), get a fresh
    /// one and retry exactly once.
    async fn call(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Call<serde_json::Value>, TokenError> {
        let (call, _) = self
            .tokens
            .call_with_refresh(|t| async move { self.post(path, &t, body).await })
            .await;
        call
    }

    async fn post(
        &self,
        path: &str,
        token: &AccessToken,
        body: &serde_json::Value,
    ) -> Call<serde_json::Value> {
        self.client.post_json(path, &token.token, body).await
    }
}
