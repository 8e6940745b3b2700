//! How a send ends: WeChat's answer concluded (delivered, consent spent or refused, retry,
//! dead), with its attempt row.

use crate::clock::{now_ms, now_secs};
use crate::notify::policy::{self, classify, Outcome};
use crate::outbox::policy::AfterFailure;
use crate::outbox::policy::{secs_until_next_minute, secs_until_quota_reset};
use crate::store::{
    Completion, DeadReason, NewAttempt, NotificationWork, NotifyKind, SkipReason, StoreError,
};
use crate::wechat::access_token::TokenError;
use crate::wechat::client::{ApiError, Call};
use std::sync::atomic::Ordering;

use super::{NotifyWorker, SUBSCRIBE_SEND, TEMPLATE_SEND, USER_BUSY_DELAY};

impl NotifyWorker {
    /// WeChat delivered the message: the entry is done, with the try that did it.
    async fn delivered(
        &self,
        w: &NotificationWork,
        owner: &str,
        attempt: &NewAttempt,
    ) -> Result<(), StoreError> {
        self.store
            .complete_notification(
                w.entry.id,
                owner,
                Some(attempt),
                &Completion::Delivered,
                false,
                now_ms(),
            )
            .await?;
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub(super) async fn conclude(
        &self,
        w: &NotificationWork,
        owner: &str,
        kind: NotifyKind,
        started: i64,
        call: Result<Call<serde_json::Value>, TokenError>,
        api: &str,
    ) -> Result<(), StoreError> {
        let call = match call {
            Ok(c) => c,
            Err(e) => {
                let attempt = self.attempt(w, started, "token-error", &format!("{api}: {e}"));
                return self.retry(w, owner, attempt).await;
            }
        };
        let outcome = classify(kind, &call.result);
        let attempt = self.attempt_from_call(w, kind, started, &call, api);
        let now = now_secs();
        match outcome {
            Outcome::Delivered => self.delivered(w, owner, &attempt).await,
            Outcome::NoConsent if w.consent_held == 1 && self.last_try_unanswered(w).await? => {
                // An earlier try got no answer but WeChat delivered it: that used the
                // subscription, and this 43101 answers it (spec §2.5). Counting it delivered
                // keeps the ledger (which took the grant then) in step with WeChat.
                let attempt = NewAttempt {
                    detail: format!(
                        "{}; the unanswered earlier try was delivered",
                        attempt.detail
                    ),
                    ..attempt
                };
                self.delivered(w, owner, &attempt).await
            }
            Outcome::NoConsent => self.skip_no_consent(w, owner, Some(attempt), true).await,
            Outcome::UserBusy => {
                let at = now_ms() + USER_BUSY_DELAY.as_millis() as i64;
                self.retry_at(w, owner, Some(attempt), at, "user busy")
                    .await
            }
            Outcome::MinuteQuota => {
                let at = (now + secs_until_next_minute(now)) * 1000;
                self.retry_at(w, owner, Some(attempt), at, "minute quota")
                    .await
            }
            Outcome::DailyQuota => {
                let until = (now + secs_until_quota_reset(now)) * 1000;
                let name = match kind {
                    NotifyKind::Subscribe => SUBSCRIBE_SEND,
                    NotifyKind::Template => TEMPLATE_SEND,
                };
                self.store
                    .pause_api(name, until, "45009 daily quota reached")
                    .await?;
                tracing::warn!(
                    api = name,
                    until_ms = until,
                    "WeChat daily quota reached: API paused until the quota resets"
                );
                self.retry_at(w, owner, Some(attempt), until, "daily quota")
                    .await
            }
            Outcome::Permanent | Outcome::CredentialRefused => {
                let errcode = attempt.errcode.unwrap_or_default();
                let rid = attempt.rid.as_deref().unwrap_or_default();
                if policy::is_config_error(errcode) {
                    tracing::error!(outbox_id = w.entry.id, rule = %w.rule, errcode, rid, detail = %attempt.detail, "notification refused for a configuration error: fix the rule");
                } else if attempt.errcode.is_some() && !policy::is_listed(errcode) {
                    tracing::error!(outbox_id = w.entry.id, rule = %w.rule, errcode, rid, detail = %attempt.detail, "WeChat answered an errcode nobody listed: notification is dead, not retried; quote the rid to WeChat's support");
                } else {
                    tracing::warn!(outbox_id = w.entry.id, rule = %w.rule, errcode, rid, detail = %attempt.detail, "permanent failure: notification is dead");
                }
                let error = attempt.detail.clone();
                let reason = if policy::is_config_error(errcode) {
                    DeadReason::TemplateError
                } else {
                    DeadReason::Refused
                };
                self.dead(w, owner, Some(attempt), &error, reason).await
            }
            Outcome::Transient
                if kind == NotifyKind::Subscribe
                    && matches!(call.result, Err(ApiError::Timeout | ApiError::Network(_)))
                    && self.is_long_term(w).await? =>
            {
                // A long-term template has no 43101 to stop a duplicate: at most once.
                let error = format!(
                    "{}; not retried: a long-term template may have been delivered",
                    attempt.detail
                );
                self.dead(w, owner, Some(attempt), &error, DeadReason::Unanswered)
                    .await
            }
            Outcome::TokenInvalid | Outcome::Transient => self.retry(w, owner, attempt).await,
        }
    }

    /// Whether the entry's last try got no answer at all (timeout, connection lost).
    pub(super) async fn last_try_unanswered(
        &self,
        w: &NotificationWork,
    ) -> Result<bool, StoreError> {
        let attempts = self.store.list_attempts(w.entry.id).await?;
        Ok(attempts
            .last()
            .is_some_and(|a| a.outcome == "transient" && a.http_status.is_none()))
    }

    pub(super) async fn is_long_term(&self, w: &NotificationWork) -> Result<bool, StoreError> {
        let recipient = w.entry.recipient.as_deref().unwrap_or_default();
        let rows = self.store.subscriptions_of(recipient).await?;
        Ok(rows
            .iter()
            .any(|r| r.template_id == w.template_id && r.long_term == 1))
    }

    pub(super) async fn skip_no_consent(
        &self,
        w: &NotificationWork,
        owner: &str,
        attempt: Option<NewAttempt>,
        revoke: bool,
    ) -> Result<(), StoreError> {
        self.store
            .complete_notification(
                w.entry.id,
                owner,
                attempt.as_ref(),
                &Completion::Skipped {
                    reason: SkipReason::NoConsent,
                },
                revoke,
                now_ms(),
            )
            .await?;
        self.stats
            .skipped_no_consent
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub(super) async fn dead(
        &self,
        w: &NotificationWork,
        owner: &str,
        attempt: Option<NewAttempt>,
        error: &str,
        reason: DeadReason,
    ) -> Result<(), StoreError> {
        self.store
            .complete_notification(
                w.entry.id,
                owner,
                attempt.as_ref(),
                &Completion::Dead {
                    error: error.to_string(),
                    reason,
                },
                false,
                now_ms(),
            )
            .await?;
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub(super) async fn retry(
        &self,
        w: &NotificationWork,
        owner: &str,
        attempt: NewAttempt,
    ) -> Result<(), StoreError> {
        let next = self.settings.schedule.after_failure(
            w.entry.tries,
            &attempt.detail,
            now_ms(),
            &mut rand::thread_rng(),
        );
        match next {
            AfterFailure::RetryAt(at) => {
                self.retry_at(w, owner, Some(attempt), at, "transient")
                    .await
            }
            AfterFailure::Dead(error) => {
                tracing::warn!(
                    outbox_id = w.entry.id,
                    "retry schedule spent: notification is dead"
                );
                self.dead(w, owner, Some(attempt), &error, DeadReason::RetriesSpent)
                    .await
            }
        }
    }

    pub(super) async fn retry_at(
        &self,
        w: &NotificationWork,
        owner: &str,
        attempt: Option<NewAttempt>,
        at_ms: i64,
        why: &str,
    ) -> Result<(), StoreError> {
        if attempt.is_some() {
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
        }
        self.store
            .complete_notification(
                w.entry.id,
                owner,
                attempt.as_ref(),
                &crate::outbox::attempt::retry(attempt.as_ref(), at_ms, why),
                false,
                now_ms(),
            )
            .await
    }

    pub(super) fn attempt(
        &self,
        w: &NotificationWork,
        started: i64,
        outcome: &str,
        detail: &str,
    ) -> NewAttempt {
        self.stats.attempts.fetch_add(1, Ordering::Relaxed);
        crate::outbox::attempt::plain(w.entry.id, started, outcome, detail)
    }

    pub(super) fn attempt_from_call(
        &self,
        w: &NotificationWork,
        kind: NotifyKind,
        started: i64,
        call: &Call<serde_json::Value>,
        api: &str,
    ) -> NewAttempt {
        self.stats.attempts.fetch_add(1, Ordering::Relaxed);
        let outcome = match classify(kind, &call.result) {
            Outcome::Delivered => "ok",
            Outcome::TokenInvalid => "token-invalid",
            Outcome::NoConsent => "no-consent",
            Outcome::CredentialRefused => "credential-refused",
            Outcome::UserBusy | Outcome::Transient => "transient",
            Outcome::MinuteQuota | Outcome::DailyQuota => "quota",
            Outcome::Permanent => "permanent",
        };
        crate::outbox::attempt::of_call(w.entry.id, started, call, api, outcome)
    }
}
