//! The outcome webhook's deliverer, and the retention of outcomes and deliveries.
//!
//! Each round it cuts new deliveries from the feed (durable rows, `store/webhooks.rs`),
//! leases the due ones and sends each signed as the Standard Webhooks specification says.
//! A 2xx is done; 429, 502, 503 and 504 are tried again after their `Retry-After` (else the
//! schedule's delay); anything else after the schedule's delay, until the schedule is spent
//! (the delivery is then `failed`; the feed still holds its items). 410 Gone stops delivery to
//! that URL until the configured URL changes, and says so loudly (log and metric). Nothing
//! else ever disables the endpoint.
//!
//! Every instance may run one: the cut is fenced on the webhook's cursor and the sends on
//! leases, so an item is delivered at least once and no delivery is sent twice at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::counter;
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::Serialize;
use tokio::sync::watch;

use super::item::OutcomeItem;
use super::section::OutcomesSettings;
use super::signature::Signer;
use crate::clock::{now_ms, now_secs};
use crate::outbox::policy::Schedule;
use crate::series::{WEBHOOK_FAILURES, WEBHOOK_GONE};
use crate::store::{DeliveryRecord, DeliveryResult, NewDelivery, OutcomeRecord, Store, StoreError};

/// A `Retry-After` is honoured up to this long.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(86_400);
/// How long a claimed delivery stays this instance's (longer than a request's timeout).
const LEASE: Duration = Duration::from_secs(60);
/// Deliveries cut per round at most (each holds up to `batch_max` items).
const CUTS_PER_ROUND: usize = 20;
/// Retention runs this often, deleting this many rows per statement.
const RETENTION_EVERY: Duration = Duration::from_secs(60);
const RETENTION_BATCH: i64 = 1_000;

/// Counters of this process (the demo's summary, the metrics).
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Requests answered 2xx, and the items they carried.
    pub delivered: AtomicU64,
    pub items_delivered: AtomicU64,
    /// Requests that failed (any non-2xx, a timeout, a refused connection).
    pub failures: AtomicU64,
}

/// The body of a webhook request.
#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    /// Unix s when the delivery was cut.
    timestamp: i64,
    data: &'a [OutcomeItem],
}

/// A new Standard Webhooks message id (`msg_` + 27 letters and digits).
pub fn new_webhook_id() -> String {
    let suffix: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(27)
        .map(char::from)
        .collect();
    format!("msg_{suffix}")
}

/// A delivery of `records`: a new webhook id and its body.
pub fn delivery_of(records: &[OutcomeRecord]) -> NewDelivery {
    let items: Vec<OutcomeItem> = records.iter().map(OutcomeItem::from).collect();
    let body = Body {
        kind: "outcomes",
        timestamp: now_secs(),
        data: &items,
    };
    NewDelivery {
        webhook_id: new_webhook_id(),
        body: serde_json::to_string(&body).expect("items serialise"),
    }
}

pub struct WebhookWorker {
    store: Store,
    settings: OutcomesSettings,
    schedule: Schedule,
    /// `None`: no webhook configured (the worker only keeps retention).
    signer: Option<Signer>,
    http: reqwest::Client,
    owner: String,
    stats: Arc<WebhookStats>,
}

impl WebhookWorker {
    /// `settings` were validated by `crate::config` (URL, secrets, schedule).
    pub fn new(
        store: Store,
        settings: OutcomesSettings,
        schedule: Schedule,
        owner: &str,
    ) -> Arc<WebhookWorker> {
        let signer = (!settings.webhook_url.is_empty())
            .then(|| {
                let current = settings.webhook_secret.as_ref()?;
                Signer::new(
                    current.expose(),
                    settings
                        .previous_webhook_secret
                        .as_ref()
                        .map(|s| s.expose()),
                )
                .ok()
            })
            .flatten();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Arc::new(WebhookWorker {
            store,
            settings,
            schedule,
            signer,
            http,
            owner: owner.to_owned(),
            stats: Arc::new(WebhookStats::default()),
        })
    }

    pub fn stats(&self) -> Arc<WebhookStats> {
        self.stats.clone()
    }

    /// Runs rounds until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if let Err(e) = self.forget_gone_if_url_changed().await {
            tracing::warn!(error = %e, "webhook: reading its stop failed");
        }
        let idle = Duration::from_millis(self.settings.poll_interval_ms.max(10));
        let mut last_retention: Option<std::time::Instant> = None;
        loop {
            if *shutdown.borrow() {
                return;
            }
            if last_retention.is_none_or(|t| t.elapsed() >= RETENTION_EVERY) {
                last_retention = Some(std::time::Instant::now());
                if let Err(e) = self.retention(now_ms()).await {
                    tracing::warn!(error = %e, "outcome retention failed; tried again later");
                }
            }
            let busy = match self.round().await {
                Ok(busy) => busy,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook round failed; tried again");
                    false
                }
            };
            if !busy {
                tokio::select! {
                    _ = tokio::time::sleep(idle) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }

    /// One round: cut what is new, send what is due. `true` if there may be more right away.
    pub async fn round(&self) -> Result<bool, StoreError> {
        let Some(signer) = &self.signer else {
            return Ok(false);
        };
        let url = &self.settings.webhook_url;
        if self.store.webhook_gone().await?.as_deref() == Some(url.as_str()) {
            return Ok(false);
        }
        let (mut full, mut cut) = (false, false);
        for _ in 0..CUTS_PER_ROUND {
            let n = self
                .store
                .cut_webhook_delivery(self.settings.batch_max, now_ms(), delivery_of)
                .await?;
            full = n as i64 == self.settings.batch_max;
            cut |= n > 0;
            if !full {
                break;
            }
        }
        let now = now_ms();
        if !cut && !self.store.webhook_due(now).await? {
            return Ok(false);
        }
        let claimed = self
            .store
            .claim_webhook_deliveries(
                &self.owner,
                now,
                now + LEASE.as_millis() as i64,
                self.settings.concurrency.max(1) as i64,
            )
            .await?;
        let sent = claimed.len();
        let results =
            futures_util::future::join_all(claimed.iter().map(|d| self.send(signer, url, d))).await;
        for r in results {
            r?;
        }
        Ok(full || sent == self.settings.concurrency.max(1))
    }

    /// Sends every due delivery now (a replay run from the command line): rounds until none
    /// is due. Returns how many requests were answered 2xx.
    pub async fn drain(&self) -> Result<u64, StoreError> {
        let before = self.stats.delivered.load(Ordering::Relaxed);
        while self.round().await? {}
        Ok(self.stats.delivered.load(Ordering::Relaxed) - before)
    }

    async fn send(&self, signer: &Signer, url: &str, d: &DeliveryRecord) -> Result<(), StoreError> {
        let timestamp = now_secs();
        let signature = signer.sign(&d.webhook_id, timestamp, d.body.as_bytes());
        let answer = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &d.webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(d.body.clone())
            .send()
            .await;
        let now = now_ms();
        let (status, retry_after, error) = match answer {
            Ok(resp) => {
                let status = resp.status().as_u16();
                if resp.status().is_success() {
                    let result = DeliveryResult::Delivered {
                        status: i64::from(status),
                    };
                    self.store
                        .finish_webhook_delivery(d.id, &self.owner, result, now)
                        .await?;
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .items_delivered
                        .fetch_add(d.items as u64, Ordering::Relaxed);
                    return Ok(());
                }
                let retry_after = matches!(status, 429 | 502 | 503 | 504)
                    .then(|| resp.headers().get("retry-after").cloned())
                    .flatten()
                    .and_then(|v| v.to_str().ok().and_then(|v| parse_retry_after(v, now)));
                (Some(status), retry_after, format!("HTTP {status}"))
            }
            Err(e) => {
                let what = if e.is_timeout() { "timeout" } else { "network" };
                (None, None, format!("{what}: {}", without_url(&e)))
            }
        };
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        let label = status.map_or_else(
            || error.split(':').next().unwrap_or("network").to_string(),
            |s| s.to_string(),
        );
        counter!(WEBHOOK_FAILURES, "status" => label).increment(1);
        if status == Some(410) {
            self.store.set_webhook_gone(Some(url)).await?;
            metrics::gauge!(WEBHOOK_GONE).set(1.0);
            tracing::error!(webhook_id = %d.webhook_id, "the outcome webhook answered 410 Gone: delivery to it is stopped until outcomes.webhook_url changes; the feed keeps every item");
        }
        let tries_done = (d.tries + 1) as u32;
        let result = match self
            .schedule
            .next_delay(tries_done, &mut rand::thread_rng())
        {
            Some(delay) => {
                let wait = retry_after.unwrap_or(delay);
                DeliveryResult::Retry {
                    at: now + wait.as_millis() as i64,
                    status: status.map(i64::from),
                    error,
                }
            }
            None => {
                tracing::warn!(webhook_id = %d.webhook_id, items = d.items, "webhook delivery failed after its whole retry schedule; its items stay in the feed");
                DeliveryResult::Failed {
                    status: status.map(i64::from),
                    error,
                }
            }
        };
        tracing::info!(webhook_id = %d.webhook_id, status, "webhook delivery failed; tried again on the schedule");
        self.store
            .finish_webhook_delivery(d.id, &self.owner, result, now)
            .await?;
        Ok(())
    }

    /// A stop recorded for a URL that is no longer configured is lifted.
    async fn forget_gone_if_url_changed(&self) -> Result<(), StoreError> {
        match self.store.webhook_gone().await? {
            Some(gone) if gone == self.settings.webhook_url => {
                metrics::gauge!(WEBHOOK_GONE).set(1.0);
                tracing::error!("the outcome webhook answered 410 Gone before: delivery stays stopped until outcomes.webhook_url changes");
            }
            Some(_) => {
                self.store.set_webhook_gone(None).await?;
                metrics::gauge!(WEBHOOK_GONE).set(0.0);
            }
            None => metrics::gauge!(WEBHOOK_GONE).set(0.0),
        }
        Ok(())
    }

    /// Deletes outcomes and finished deliveries older than `outcomes.retention_days`, a
    /// small batch at a time.
    pub async fn retention(&self, now: i64) -> Result<u64, StoreError> {
        let before = now - self.settings.retention_days.max(1) * 86_400_000;
        let mut deleted = 0;
        for table in 0..2 {
            loop {
                let n = match table {
                    0 => {
                        self.store
                            .delete_outcomes_before(before, RETENTION_BATCH)
                            .await?
                    }
                    _ => {
                        self.store
                            .delete_webhook_deliveries_before(before, RETENTION_BATCH)
                            .await?
                    }
                };
                deleted += n;
                if n < RETENTION_BATCH as u64 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        Ok(deleted)
    }
}

/// `Retry-After`: seconds, or an HTTP date; at most a day.
pub fn parse_retry_after(v: &str, now_ms: i64) -> Option<Duration> {
    let v = v.trim();
    let secs = match v.parse::<u64>() {
        Ok(s) => s,
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(v)
                .ok()?
                .timestamp_millis();
            (at.saturating_sub(now_ms).max(0) / 1000) as u64
        }
    };
    Some(Duration::from_secs(secs).min(RETRY_AFTER_MAX))
}

/// reqwest's error text without the URL (it may carry a token in its query).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<webhook url>");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date_and_capped_at_a_day() {
        assert_eq!(parse_retry_after("120", 0), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("999999999", 0),
            Some(Duration::from_secs(86_400))
        );
        let now = chrono::DateTime::parse_from_rfc2822("Wed, 21 Oct 2015 07:28:00 GMT")
            .unwrap()
            .timestamp_millis();
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:29:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(parse_retry_after("soon", 0), None);
    }

    #[test]
    fn webhook_ids_are_distinct_and_shaped_as_the_specification_shows() {
        let a = new_webhook_id();
        assert!(a.starts_with("msg_") && a.len() == 31, "{a}");
        assert_ne!(a, new_webhook_id());
    }
}
