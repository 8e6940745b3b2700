//! Prometheus metrics: the `metrics` facade, recorded by `metrics-exporter-prometheus`, and
//! served as text on `server.metrics_listen` only (never on the public listener, where
//! WeChat and the JSONP callers come in).
//!
//! Counters and the callback histogram are recorded where things happen (lock-free: an
//! atomic per series once registered). What the store knows (entries by kind and state, the
//! oldest pending entry, paused APIs) and the workers' own counters are read when Prometheus
//! scrapes, so the hot paths pay nothing for them.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use actix_web::{web, App, HttpResponse, HttpServer};
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::clock::now_ms;
use crate::notify::worker::{SUBSCRIBE_SEND, TEMPLATE_SEND};
use crate::notify::NotifyStats;
use crate::outbox::worker::{PushStats, PATHNOTIFY, USERQUERY};
use crate::outcomes::WebhookStats;
use crate::series::*;
use crate::store::Store;

/// The process's recorder, installed on first use (one per process: tests build many apps).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            // WeChat waits 5 s for the answer: the buckets resolve the range that matters.
            .set_buckets_for_metric(
                Matcher::Full(CALLBACK_DURATION.into()),
                &[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ],
            )
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a host embedding the crate): then its
        // recorder gets the measurements and this handle renders what it was given.
        if metrics::set_global_recorder(recorder).is_ok() {
            // Series that exist from the start, at zero, so a dashboard shows 0, not "no data".
            for outcome in ["stored", "duplicate", "rejected", "failed"] {
                counter!(EVENTS_INGESTED, "outcome" => outcome).increment(0);
            }
            counter!(TOKEN_REFRESHES).increment(0);
            for api in [PATHNOTIFY, USERQUERY, SUBSCRIBE_SEND, TEMPLATE_SEND] {
                counter!(WECHAT_CALLS, "api" => api, "errcode" => "0").increment(0);
            }
            counter!(CALLBACK_RESULTS, "status" => "200").increment(0);
            counter!(JSONP_REQUESTS, "err_code" => "0").increment(0);
            // Registered, with no sample yet: rendered with empty buckets.
            let _ = metrics::histogram!(CALLBACK_DURATION);
            for status in ["410", "429", "500", "503", "timeout", "network"] {
                counter!(WEBHOOK_FAILURES, "status" => status).increment(0);
            }
            gauge!(WEBHOOK_GONE).set(0.0);
        }
        handle.clone()
    })
}

/// What the scrape reads besides the recorded series.
#[derive(Clone)]
pub struct Sources {
    pub store: Store,
    pub pushes: Option<Arc<PushStats>>,
    pub notifications: Option<Arc<NotifyStats>>,
    pub webhook: Option<Arc<WebhookStats>>,
}

/// The text Prometheus scrapes: the store's and the workers' figures set first.
pub async fn render(sources: &Sources) -> String {
    let now = now_ms();
    if let Ok(counts) = sources.store.outbox_gauges().await {
        for (kind, state, n) in counts {
            gauge!(OUTBOX_ENTRIES, "kind" => kind.as_str(), "state" => state.as_str())
                .set(n as f64);
        }
    }
    if let Ok(oldest) = sources.store.oldest_pending_created_at().await {
        let age = oldest.map_or(0, |t| now.saturating_sub(t).max(0));
        gauge!(OLDEST_PENDING).set(age as f64 / 1000.0);
    }
    if let Ok(pauses) = sources.store.list_pauses(now).await {
        for api in [PATHNOTIFY, USERQUERY, SUBSCRIBE_SEND, TEMPLATE_SEND] {
            let paused = pauses.iter().any(|(name, _, _)| name == api);
            gauge!(API_PAUSED, "api" => api).set(if paused { 1.0 } else { 0.0 });
        }
    }
    if let Ok(w) = sources.store.webhook_gauges().await {
        let lag = w
            .oldest_undelivered_at
            .map_or(0, |t| now.saturating_sub(t).max(0));
        gauge!(WEBHOOK_LAG).set(lag as f64 / 1000.0);
    }
    if let Some(w) = &sources.webhook {
        counter!(WEBHOOK_DELIVERED).absolute(w.delivered.load(Ordering::Relaxed));
    }
    outcome_counters(sources);
    if let Some(s) = &sources.pushes {
        let kind = "pathnotify";
        for (outcome, n) in [
            ("delivered", &s.delivered),
            ("retry", &s.retries),
            ("dead", &s.dead),
            ("skipped_unbound", &s.skipped_unbound),
            ("skipped_stale", &s.skipped_stale),
            ("skipped_coalesced", &s.skipped_coalesced),
        ] {
            counter!(PUSHES, "kind" => kind, "outcome" => outcome)
                .absolute(n.load(Ordering::Relaxed));
        }
    }
    if let Some(s) = &sources.notifications {
        for (outcome, n) in [
            ("delivered", &s.sent),
            ("retry", &s.retries),
            ("dead", &s.failed),
            ("skipped_no_consent", &s.skipped_no_consent),
            ("credential_refused", &s.credentials_refused),
        ] {
            counter!(PUSHES, "kind" => "notification", "outcome" => outcome)
                .absolute(n.load(Ordering::Relaxed));
        }
    }
    let handle = handle();
    handle.run_upkeep();
    handle.render()
}

/// `wxexpress_outcomes_total` and `wxexpress_sms_fallbacks_total` from the workers' own
/// counters of what they settled (every final outcome is one of them).
fn outcome_counters(sources: &Sources) {
    let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
    let mut rows: Vec<(&str, &str, u64)> = Vec::new();
    if let Some(s) = &sources.pushes {
        rows.extend([
            ("push", "delivered", load(&s.delivered)),
            ("push", "unbound", load(&s.skipped_unbound)),
            ("push", "dead", load(&s.dead)),
            ("push", "coalesced", load(&s.skipped_coalesced)),
            ("push", "stale", load(&s.skipped_stale)),
        ]);
    }
    if let Some(s) = &sources.notifications {
        rows.extend([
            ("notification", "delivered", load(&s.sent)),
            (
                "notification",
                "dead",
                load(&s.failed) + load(&s.skipped_no_consent),
            ),
        ]);
    }
    let mut fallbacks: std::collections::BTreeMap<&str, u64> = Default::default();
    for (kind, outcome, n) in rows {
        counter!(OUTCOMES, "kind" => kind, "outcome" => outcome).absolute(n);
        let f = fallbacks.entry(kind).or_default();
        if matches!(outcome, "unbound" | "dead") {
            *f += n;
        }
    }
    for (kind, n) in fallbacks {
        counter!(SMS_FALLBACKS, "kind" => kind).absolute(n);
    }
}

/// Serves metrics from `sources` on `listener` from now on; stop it through the handle.
pub fn spawn(
    listener: TcpListener,
    sources: Sources,
) -> std::io::Result<actix_web::dev::ServerHandle> {
    let (addr, server) = self::server(listener, sources)?;
    tracing::info!(address = %addr, "metrics: GET /metrics (Prometheus text)");
    let handle = server.handle();
    tokio::spawn(server);
    Ok(handle)
}

/// Serves `GET /metrics` on `listener` (one worker; signals are the app's to handle).
pub fn server(
    listener: TcpListener,
    sources: Sources,
) -> std::io::Result<(SocketAddr, actix_web::dev::Server)> {
    let addr = listener.local_addr()?;
    let sources = web::Data::new(sources);
    let server = HttpServer::new(move || {
        App::new().app_data(sources.clone()).route(
            "/metrics",
            web::get().to(|sources: web::Data<Sources>| async move {
                HttpResponse::Ok()
                    .content_type("text/plain; version=0.0.4; charset=utf-8")
                    .body(render(&sources).await)
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    Ok((addr, server))
}
