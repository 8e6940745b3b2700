//! `wxexpress demo`: the sandbox and the gateway in one process, SQLite in a temporary
//! directory, and a synthetic day of waybills pushed through the whole pipeline (ingest →
//! outbox → userquery/pathnotify → WeChat's reverse query → the user's inbox) with injected
//! faults, a live progress bar, and a summary. Exits 0 only if every notification that
//! should have arrived is in the sandbox inbox, exactly once, in order.

mod outcomes;
mod setup;
pub mod synth;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::app::Application;
use crate::clock::now_secs;
use crate::outcomes::receiver::Receiver;
use crate::sandbox::{ApiFault, CallbackFault, Faults, Sandbox};
use crate::store::{EntryState, SkipReason};
use setup::API_KEY;

/// Options of a run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub waybills: usize,
    pub seed: u64,
    pub bound_ratio: f64,
    pub faults: bool,
    pub progress: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            waybills: 2000,
            seed: 20261111,
            bound_ratio: 0.9,
            faults: true,
            progress: true,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct DemoReport {
    pub ok: bool,
    pub lines: Vec<(String, String)>,
    pub problems: Vec<String>,
}

/// Run the demo; `Err` only for setup failures (a failed check is `ok: false`).
pub async fn run(opts: DemoOptions) -> anyhow::Result<DemoReport> {
    let dir = tempfile::tempdir()?;
    // The carrier's webhook receiver: it verifies every signature and keeps what it got.
    let secret = setup::webhook_secret();
    let receiver = Receiver::start(std::net::TcpListener::bind("127.0.0.1:0")?, &secret)?;
    let settings = setup::settings(dir.path(), &receiver.url, &secret)?;
    // With `WXEXPRESS_SERVER__METRICS_LISTEN` set, the run's metrics are served there while
    // it lasts (docs/grafana/render.py draws the dashboard from them).
    let metrics_listen = std::env::var("WXEXPRESS_SERVER__METRICS_LISTEN").unwrap_or_default();
    if !metrics_listen.is_empty() {
        crate::prometheus::handle();
    }
    let app = Application::build(settings).await?;
    let metrics = crate::app::serve_metrics(&app, &metrics_listen)?;
    let base = format!("http://{}", app.addr());
    let sandbox = app
        .sandbox()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the demo needs the in-process sandbox"))?;
    let store = app.store().clone();
    let stats = app
        .worker_stats()
        .ok_or_else(|| anyhow::anyhow!("the demo needs the outbox worker"))?;
    let stop = app.shutdown_trigger();
    let server = tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();

    let day_start = now_secs() - 86_400;
    let (waybills, perturbations) =
        synth::generate(opts.waybills, opts.seed, opts.bound_ratio, day_start);
    for w in waybills.iter().filter(|w| w.bound) {
        sandbox.bind_phone(&w.receiver_phone);
    }
    // Senders: half accepted two subscriptions in the mini program, a third paid the freight
    // there (a prepay_id: three legacy messages), the rest gave nothing.
    let issued = now_secs() - 3600;
    for w in &waybills {
        let openid = &w.sender_openid;
        match w.sender_consent {
            synth::Consent::Subscribed(n) => {
                sandbox.add_user(openid);
                sandbox
                    .grant_subscriptions(
                        openid,
                        crate::sandbox::defaults::DEFAULT_SUBSCRIBE_TEMPLATE,
                        n,
                    )
                    .map_err(|e| anyhow::anyhow!("sandbox grant: {e:?}"))?;
                let body = serde_json::json!({ "openid": openid, "subscriptions": [{ "template_id": crate::sandbox::defaults::DEFAULT_SUBSCRIBE_TEMPLATE, "count": n }] });
                http.post(format!("{base}/v1/subscriptions"))
                    .bearer_auth(API_KEY)
                    .json(&body)
                    .send()
                    .await?
                    .error_for_status()?;
            }
            synth::Consent::PrepayId => {
                sandbox.add_user(openid);
                let value = format!("wx{}prepay", &w.id);
                sandbox.add_credential(
                    openid,
                    crate::sandbox::CredentialKind::PrepayId,
                    &value,
                    issued,
                );
                let body = serde_json::json!({ "openid": openid, "kind": "prepay_id", "value": value, "issued_at": issued });
                http.post(format!("{base}/v1/credentials"))
                    .bearer_auth(API_KEY)
                    .json(&body)
                    .send()
                    .await?
                    .error_for_status()?;
            }
            synth::Consent::None => sandbox.add_user(openid),
        }
    }
    let rounds = waybills.iter().map(|w| w.rounds()).max().unwrap_or(0);
    let total_lines: usize = waybills.iter().map(|w| w.uploads.len()).sum();

    let bar = if opts.progress {
        ProgressBar::new(total_lines as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} events  {msg}",
        )
        .expect("a valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));

    let started = Instant::now();
    let mut ingest_time = Duration::ZERO;
    let (mut accepted, mut duplicates, mut rejected) = (0u64, 0u64, 0u64);
    for round in 0..rounds {
        if opts.faults {
            inject_faults(&sandbox, round);
        }
        let lines: Vec<String> = waybills
            .iter()
            .flat_map(|w| w.lines(round))
            .map(|v| v.to_string())
            .collect();
        let t = Instant::now();
        // Chunks keep a waybill's lines of one round together (they are generated per waybill).
        for chunk in lines.chunks(2000) {
            let body = chunk.join("\n");
            let r: Value = http
                .post(format!("{base}/v1/events/batch"))
                .bearer_auth(API_KEY)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            accepted += r["accepted"].as_u64().unwrap_or(0);
            duplicates += r["duplicates"].as_u64().unwrap_or(0);
            rejected += r["rejected"].as_u64().unwrap_or(0);
            bar.inc(chunk.len() as u64);
        }
        ingest_time += t.elapsed();
        // The day's rounds are hours apart: everything of one round is pushed before the next.
        loop {
            let counts = store.outbox_counts().await?;
            let pending: i64 = counts
                .iter()
                .filter(|(s, _, _)| *s == EntryState::Pending)
                .map(|(_, _, n)| n)
                .sum();
            bar.set_message(format!(
                "round {}/{rounds}  delivered {}  pending {pending}",
                round + 1,
                stats.delivered.load(std::sync::atomic::Ordering::Relaxed)
            ));
            if pending == 0 {
                break;
            }
            if started.elapsed() > Duration::from_secs(600) {
                anyhow::bail!("the outbox did not drain within 10 minutes");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let elapsed = started.elapsed();
    // The webhook catches up with the last outcomes (it runs beside the pushes all along).
    let entries: i64 = store.outbox_counts().await?.iter().map(|(_, _, n)| n).sum();
    let wait = Instant::now();
    while (receiver.item_count() as i64) < entries && wait.elapsed() < Duration::from_secs(60) {
        bar.set_message(format!(
            "outcomes delivered to the webhook {}/{entries}",
            receiver.item_count()
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bar.finish_and_clear();

    // Check: every expected node arrived exactly once, in order, and nothing else.
    let mut problems = Vec::new();
    let mut expected_total = 0usize;
    let mut latencies = Vec::new();
    for w in &waybills {
        let expected = w.expected_inbox();
        expected_total += expected.len();
        let got: Vec<(i64, i64)> = sandbox
            .inbox_for_phone(&w.receiver_phone)
            .iter()
            .map(|n| (n.action_type, n.action_time))
            .collect();
        if got != expected && problems.len() < 10 {
            problems.push(format!(
                "{}: expected {:?}, inbox has {:?}",
                w.id, expected, got
            ));
        }
        for e in store.list_outbox(&w.id).await? {
            if let (Some(done), EntryState::Delivered) = (e.done_at, e.state) {
                latencies.push(done - e.created_at);
            }
        }
    }
    // Pushes are every outbox entry that is not a shipping notification.
    let all = store.outbox_counts().await?;
    let notes = store.notification_counts().await?;
    let note_count = |state: EntryState, reason: Option<SkipReason>| {
        notes
            .iter()
            .filter(|(_, s, r, _)| *s == state && (reason.is_none() || *r == reason))
            .map(|(_, _, _, n)| *n)
            .sum::<i64>()
    };
    let count = |state: EntryState, reason: Option<SkipReason>| {
        all.iter()
            .filter(|(s, r, _)| *s == state && (reason.is_none() || *r == reason))
            .map(|(_, _, n)| *n)
            .sum::<i64>()
            - note_count(state, reason)
    };
    if count(EntryState::Dead, None) > 0 {
        problems.push(format!("{} pushes are dead", count(EntryState::Dead, None)));
    }
    let notes_sent = note_count(EntryState::Delivered, None);
    let notes_failed = note_count(EntryState::Dead, None);
    let received: usize = waybills
        .iter()
        .map(|w| sandbox.inbox_for_openid(&w.sender_openid).len())
        .sum::<usize>();
    if received as i64 != notes_sent {
        problems.push(format!(
            "{notes_sent} shipping notifications were sent but the users' inboxes hold {received}"
        ));
    }
    if notes_failed > 0 {
        problems.push(format!("{notes_failed} shipping notifications failed"));
    }
    let outcomes = outcomes::check(&http, &base, &store, &receiver, &sandbox, &waybills).await?;
    problems.extend(outcomes.problems.iter().cloned());
    receiver.stop().await;
    let attempts = store.count_attempts().await?;
    let sb = sandbox.stats();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    let delivered = count(EntryState::Delivered, None);
    let retries = stats.retries.load(std::sync::atomic::Ordering::Relaxed);
    let lines = vec![
        (
            "waybills".into(),
            format!(
                "{} ({} receivers bound)",
                waybills.len(),
                waybills.iter().filter(|w| w.bound).count()
            ),
        ),
        (
            "events uploaded".into(),
            format!(
                "{total_lines} in {rounds} rounds (late scans {}, repeats {}, bursts {})",
                perturbations.late, perturbations.duplicate, perturbations.burst
            ),
        ),
        (
            "events ingested".into(),
            format!("{accepted} new, {duplicates} duplicates, {rejected} rejected"),
        ),
        (
            "pushes delivered".into(),
            format!("{delivered} (expected {expected_total})"),
        ),
        (
            "skipped".into(),
            format!(
                "unbound {}, stale {}, coalesced {}",
                count(EntryState::Skipped, Some(SkipReason::Unbound)),
                count(EntryState::Skipped, Some(SkipReason::Stale)),
                count(EntryState::Skipped, Some(SkipReason::Coalesced))
            ),
        ),
        ("retries".into(), format!("{retries} (attempts {attempts})")),
        (
            "outcomes to the carrier".into(),
            format!(
                "{} items: webhook ({} signed requests, every signature verified) and feed agree",
                outcomes.items, outcomes.requests
            ),
        ),
        (
            "SMS needed".into(),
            format!(
                "for {} receivers ({} of {} waybills; WeChat reached the rest)",
                outcomes.sms_receivers,
                outcomes.sms_receivers,
                waybills.len()
            ),
        ),
        ("dead".into(), count(EntryState::Dead, None).to_string()),
        (
            "reverse queries answered".into(),
            format!(
                "{} sent by WeChat, {} consistent, {} failed",
                sb.reverse_queries.sent, sb.reverse_queries.ok, sb.reverse_queries.failed
            ),
        ),
        ("shipping notifications".into(), format!("{notes_sent} sent ({received} in users' inboxes), {} skipped for lack of consent, {notes_failed} failed", note_count(EntryState::Skipped, Some(SkipReason::NoConsent)))),
        ("WeChat errors injected".into(), injected(&sb)),
        (
            "access tokens fetched".into(),
            sb.apis.get("stable_token").map_or(0, |a| a.ok).to_string(),
        ),
        (
            "ingest → delivery latency".into(),
            format!("p50 {} ms, p99 {} ms", pct(0.5), pct(0.99)),
        ),
        (
            "ingest throughput".into(),
            format!(
                "{:.0} events/s (NDJSON batches)",
                total_lines as f64 / ingest_time.as_secs_f64().max(1e-3)
            ),
        ),
        (
            "push throughput".into(),
            format!(
                "{:.0} deliveries/s over the whole run ({:.1} s)",
                delivered as f64 / elapsed.as_secs_f64(),
                elapsed.as_secs_f64()
            ),
        ),
    ];
    let _ = stop.send(true);
    let _ = server.await;
    if let Some(metrics) = metrics {
        metrics.stop(true).await;
    }
    Ok(DemoReport {
        ok: problems.is_empty() && delivered as usize == expected_total,
        lines,
        problems,
    })
}

/// Faults WeChat really shows, one kind per round, each limited so the day completes.
fn inject_faults(sandbox: &Sandbox, round: usize) {
    let busy = |times| ApiFault {
        errcode: Some(-1),
        probability: Some(0.05),
        times: Some(times),
        ..Default::default()
    };
    let faults = match round {
        1 => Faults {
            pathnotify: busy(40),
            userquery: busy(20),
            ..Default::default()
        },
        // Connections reset on the way to WeChat, and 5xx from its gateway.
        2 => Faults {
            pathnotify: ApiFault {
                drop_connection: true,
                probability: Some(0.02),
                times: Some(15),
                ..Default::default()
            },
            userquery: ApiFault {
                http_status: Some(502),
                probability: Some(0.02),
                times: Some(10),
                ..Default::default()
            },
            ..Default::default()
        },
        // WeChat cannot reach our callback for a moment: pathnotify answers 932001.
        3 => Faults {
            callback: CallbackFault {
                fail: true,
                probability: Some(0.05),
                times: Some(30),
                ..Default::default()
            },
            ..Default::default()
        },
        4 => {
            // Hours pass on WeChat's side: the token the gateway holds expires there first.
            sandbox.advance_clock(3 * 3600);
            Faults::default()
        }
        // Shipping notifications meet a busy WeChat too. (45011 is left out of the demo: its
        // correct handling, waiting for the next minute, would stall the compressed day.)
        5 => Faults {
            subscribe_send: busy(10),
            ..Default::default()
        },
        _ => Faults::default(),
    };
    sandbox.set_faults(faults);
}

fn injected(sb: &crate::sandbox::SandboxStats) -> String {
    let mut by_code: BTreeMap<i64, u64> = BTreeMap::new();
    let mut http = 0;
    for a in sb.apis.values() {
        for (code, n) in &a.errors {
            *by_code.entry(*code).or_default() += n;
        }
        http += a.http_faults;
    }
    let mut parts: Vec<String> = by_code.iter().map(|(c, n)| format!("{c}×{n}")).collect();
    if http > 0 {
        parts.push(format!("HTTP 5xx×{http}"));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// Print the summary table.
pub fn print_report(r: &DemoReport) {
    let width = r
        .lines
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    println!("\nwxexpress demo: a synthetic day through the whole pipeline\n");
    for (k, v) in &r.lines {
        println!("  {k:<width$}  {v}");
    }
    println!();
    if r.ok {
        println!("OK: every notification that should arrive is in the sandbox inbox, exactly once, in order;");
        println!("    the webhook's items, the feed and the inbox agree: every delivered node is in the inbox,");
        println!("    every unbound receiver was marked for SMS.");
    } else {
        println!("FAILED: some notifications are missing, doubled or out of order:");
        for p in &r.problems {
            println!("  - {p}");
        }
    }
}
