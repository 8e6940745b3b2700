//! The load generator: a separate process (`wxexpress bench-load`) given its orders as
//! JSON, reporting rates and latencies back.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::data::{requests, single_events};
use super::{BenchOptions, Row, API_KEY};

/// What a load generator sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Load {
    /// `n` distinct reverse queries (`tag` keeps the sets of different runs apart).
    Questions { n: usize, tag: String },
    /// `n` reverse queries, each answered once (unmeasured), then all of them again.
    Replays { n: usize },
    /// `n` single-event POSTs, each a new event.
    Events { n: usize },
}

/// A load generator's orders (`wxexpress bench-load ORDERS`, as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadOrders {
    pub base: String,
    pub load: Load,
    pub waybills: usize,
    pub seconds: u64,
    pub connections: usize,
    /// Requests repeat; without, each is sent at most once (the run ends early if they run
    /// out, which the request count is sized never to reach).
    pub cycle: bool,
}

/// What a load generator reports: its row, without names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadReport {
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: usize,
}

/// Closed-loop load on `base` from a generator process of its own (this binary as
/// `wxexpress bench-load`), for the run's length from the run's connections.
pub(super) async fn load(
    base: &str,
    what: &Load,
    opts: &BenchOptions,
    cycle: bool,
) -> anyhow::Result<Row> {
    let orders = LoadOrders {
        base: base.to_string(),
        load: what.clone(),
        waybills: opts.waybills,
        seconds: opts.seconds.max(1),
        connections: opts.connections.max(1),
        cycle,
    };
    let out = tokio::process::Command::new(std::env::current_exe()?)
        .arg("bench-load")
        .arg(serde_json::to_string(&orders)?)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "the load generator failed: {}",
        out.status
    );
    let report: LoadReport = serde_json::from_slice(&out.stdout)
        .map_err(|e| anyhow::anyhow!("the load generator's report: {e}"))?;
    Ok(Row {
        path: "",
        rate: report.rate,
        p50_ms: report.p50_ms,
        p99_ms: report.p99_ms,
        errors: report.errors,
        baseline: None,
        cpu_us: None,
    })
}

/// The load generator's side (`wxexpress bench-load ORDERS`): builds its requests, runs the
/// load and returns its report as one JSON line.
pub async fn run_load(orders: &str) -> anyhow::Result<String> {
    let o: LoadOrders = serde_json::from_str(orders)?;
    let secs = Duration::from_secs(o.seconds);
    let row = match &o.load {
        Load::Questions { n, tag } => {
            let reqs = Arc::new(requests(*n, tag, o.waybills)?);
            generate(o.base.clone(), reqs, secs, o.connections, o.cycle).await
        }
        Load::Replays { n } => {
            let reqs = Arc::new(requests(*n, "R", o.waybills)?);
            let answered = Duration::from_secs(60);
            generate(o.base.clone(), reqs.clone(), answered, o.connections, false).await;
            generate(o.base.clone(), reqs, secs, o.connections, o.cycle).await
        }
        Load::Events { n } => {
            let reqs = Arc::new(single_events(*n, o.waybills));
            generate(o.base.clone(), reqs, secs, o.connections, o.cycle).await
        }
    };
    Ok(serde_json::to_string(&LoadReport {
        rate: row.rate,
        p50_ms: row.p50_ms,
        p99_ms: row.p99_ms,
        errors: row.errors,
    })? + "\n")
}

pub(super) async fn generate(
    base: String,
    reqs: Arc<Vec<(String, String)>>,
    duration: Duration,
    conns: usize,
    cycle: bool,
) -> Row {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(conns)
        .build()
        .expect("a reqwest client can be built");
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (http, reqs, next, done, base) = (
                http.clone(),
                reqs.clone(),
                next.clone(),
                done.clone(),
                base.clone(),
            );
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), 0usize);
                while !done.load(Ordering::Relaxed) && started.elapsed() < duration {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((q, body)) = reqs.get(if cycle { i % reqs.len() } else { i }) else {
                        done.store(true, Ordering::Relaxed);
                        break;
                    };
                    let t = Instant::now();
                    let r = http
                        .post(format!("{base}{q}"))
                        .header("content-type", "application/json")
                        .bearer_auth(API_KEY)
                        .body(body.clone())
                        .send()
                        .await;
                    let ok = match r {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if ok {
                        lat.push(t.elapsed().as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.expect("a load task finishes");
        all.extend(lat);
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 - 1.0) * p).round().max(0.0) as usize)
            .map_or(0.0, |us| *us as f64 / 1000.0)
    };
    Row {
        path: "",
        rate: all.len() as f64 / secs,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        errors,
        baseline: None,
        cpu_us: None,
    }
}
