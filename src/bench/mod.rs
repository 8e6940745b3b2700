//! `wxexpress bench`: measures this machine's hot paths beside their baselines in the same run,
//! so a figure means something on a shared, noisy machine only as a ratio.
//!
//! So far: WeChat's reverse query (`waybill_notify_query`, secure JSON) on its fresh path and
//! its replay path, against a bare actix-web JSON echo of the same envelope, served with the
//! same number of HTTP workers and loaded by the same generator; NDJSON ingest against the
//! same rows written into the same database the fastest known way (typed sqlx multi-row
//! statements on a connection of their own, `raw.rs`); and pushes end to end against an
//! in-process sandbox that answers at once, against the push ceiling (the same three
//! exchanges and crypto with no storage, `ceiling.rs`).
//!
//! The load generator is a process of its own (`wxexpress bench-load`, this binary started
//! by the bench for each run: it builds its requests and prints its row), never the
//! gateway's workers; it shares the machine's CPUs with the gateway as `wrk` would, and the
//! baseline is loaded the same way, which is what makes the ratio fair. So the bench
//! process's RSS is the gateway's (with the small echo server and the bench's bookkeeping).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::Value;

use crate::app::Application;
use crate::config;
use crate::sandbox::defaults as sd;
use crate::store::section::{DatabaseSettings, Synchronous};

mod ceiling;
mod data;
mod ingest;
mod load;
mod pushes;
mod raw;

use data::{batches_for, seed};
use ingest::ingest;
use load::load;
pub use load::{run_load, Load, LoadOrders, LoadReport};
use pushes::{pushes, pushes_again, Again};

const API_KEY: &str = "bench-key-0123456789abcdef";
const BATCH_WAYBILLS: usize = 1_000;
/// Requests answered once before a replay run, then cycled.
const REPLAY_SET: usize = 2_000;

/// What to measure, and how hard.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// `None`: SQLite in a temporary directory.
    pub database_url: Option<String>,
    /// Each measured run lasts this long.
    pub seconds: u64,
    /// Concurrent connections of the load generator.
    pub connections: usize,
    /// Waybills per data set (the reverse query's, and each side of the ingest's).
    pub waybills: usize,
    /// SQLite's `synchronous` for every gateway of the run (and the raw inserts).
    pub synchronous: Synchronous,
}

/// One measured path.
#[derive(Debug, Clone)]
pub struct Row {
    pub path: &'static str,
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: usize,
    /// The baseline's rate in the same run, and its name.
    pub baseline: Option<(&'static str, f64)>,
    /// CPU time of this whole process per item (µs), where measured: steadier than a rate
    /// on a shared machine, since time other processes take is not in it.
    pub cpu_us: Option<f64>,
}

/// Runs every measurement and returns the rows, in the order printed.
pub async fn run(opts: BenchOptions) -> anyhow::Result<(String, Vec<Row>)> {
    // Measured as `serve` runs: with its metrics recorded.
    crate::prometheus::handle();
    let dir = tempfile::tempdir()?;
    let db = DatabaseSettings {
        url: opts
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}/bench.db", dir.path().display())),
        max_connections: 0,
        synchronous: opts.synchronous,
    };
    let data_key = crate::privacy::Privacy::generate_key_base64();
    let settings = gateway_settings(&db, &data_key, false)?;
    let workers = settings.server.workers;
    let app = Application::build(settings).await?;
    let gateway = format!("http://{}", app.addr());
    let stop = app.shutdown_trigger();
    let server = tokio::spawn(app.run_until_stopped());
    seed(&gateway, opts.waybills).await?;

    let echo_listener = TcpListener::bind("127.0.0.1:0")?;
    let echo = format!("http://{}", echo_listener.local_addr()?);
    let mut echo_server = HttpServer::new(|| {
        App::new().route(
            "/wechat/callback",
            web::post().to(|body: web::Bytes| async move {
                match serde_json::from_slice::<Value>(&body) {
                    Ok(v) => HttpResponse::Ok().json(v),
                    Err(_) => HttpResponse::BadRequest().finish(),
                }
            }),
        )
    })
    .disable_signals()
    .listen(echo_listener)?;
    if workers > 0 {
        echo_server = echo_server.workers(workers);
    }
    let echo_server = echo_server.run();
    let echo_handle = echo_server.handle();
    tokio::spawn(echo_server);

    let secs = Duration::from_secs(opts.seconds.max(1));
    // Distinct requests for 5,000/s over the run; at a higher rate the run ends when they are
    // used up (the rate stays right: it is measured over the time actually run).
    let fresh = Load::Questions {
        n: 5_000 * opts.seconds.max(1) as usize,
        tag: "F".into(),
    };
    let echo_row = load(&echo, &fresh, &opts, true).await?;
    let mut fresh_row = load(&gateway, &fresh, &opts, false).await?;
    fresh_row.path = "reverse query, new (secure JSON)";
    fresh_row.baseline = Some(("actix JSON echo", echo_row.rate));

    // Answered once (stored), then every request is a redelivery.
    let mut replay_row = load(&gateway, &Load::Replays { n: REPLAY_SET }, &opts, true).await?;
    replay_row.path = "reverse query, replayed";
    replay_row.baseline = Some(("actix JSON echo", echo_row.rate));

    let ingest_row = ingest(&gateway, &db, &data_key, opts.waybills).await?;

    let _ = stop.send(true);
    let _ = server.await;
    // Pushes before the single events: those would leave dozens of waiting events on each
    // waybill and change what a push costs.
    // The ceiling of a push on this machine, measured just before the pushes it is the
    // baseline of.
    let ceiling = ceiling::ceiling((opts.waybills * 3).max(6_000), workers).await?;
    let mut push_row = pushes(&db, &data_key, opts.waybills).await?;
    push_row.baseline = Some(("push ceiling", ceiling.rate));

    // One event per request, from every connection at once, on a gateway started anew:
    // concurrent requests share transactions (group commit) or nothing does. Their events
    // are left pending.
    let app = Application::build(gateway_settings(&db, &data_key, false)?).await?;
    let gateway = format!("http://{}", app.addr());
    let stop = app.shutdown_trigger();
    let server = tokio::spawn(app.run_until_stopped());
    // New reverse queries while 10,000-line batches are stored back to back: a batch must
    // not hold the writer long enough to hold the answers up.
    let beside = Load::Questions {
        n: 5_000 * opts.seconds.max(1) as usize,
        tag: "B".into(),
    };
    let batches = tokio::spawn(batches_for(gateway.clone(), secs, opts.waybills));
    let mut beside_row = load(&gateway, &beside, &opts, false).await?;
    let batch_lines = batches.await??;
    beside_row.path = "reverse query, new, beside batches";
    beside_row.baseline = Some(("actix JSON echo", echo_row.rate));
    tracing::debug!(batch_lines, "batch lines stored beside the reverse queries");

    let singles = Load::Events {
        n: 20_000 * opts.seconds.max(1) as usize,
    };
    let mut single_row = load(&gateway, &singles, &opts, false).await?;
    single_row.path = "single-event POSTs";
    let _ = stop.send(true);
    echo_handle.stop(true).await;
    let _ = server.await;
    let ceiling_rate = ceiling.rate;
    let mut rows = vec![
        fresh_row, replay_row, beside_row, ingest_row, single_row, ceiling, push_row,
    ];
    // What outcomes cost a push: the same work (one new event on every waybill, binding
    // cache warm) with outcomes recorded and delivered to a verifying webhook receiver, and
    // with nothing recorded, four times each in the order ABBAABBA (drift cancels out),
    // after a warm-up run that is not reported (it also pushes what the single-event run
    // left pending).
    let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let receiver =
        crate::outcomes::receiver::Receiver::start(TcpListener::bind("127.0.0.1:0")?, secret)?;
    let mut round = 10;
    {
        let warm_up = [None];
        let runs = [false, true, true, false, false, true, true, false];
        for on in warm_up.into_iter().chain(runs.map(Some)) {
            round += 1;
            let Some(on) = on else {
                let again = Again {
                    nodes: 1,
                    round,
                    outcomes: Some(&receiver),
                    secret,
                    path: "warm-up",
                };
                pushes_again(&db, &data_key, opts.waybills, again).await?;
                continue;
            };
            let again = Again {
                nodes: 1,
                round,
                outcomes: on.then_some(&receiver),
                secret,
                path: if on {
                    "pushes, warm, outcomes + webhook"
                } else {
                    "pushes, warm, outcomes off"
                },
            };
            let mut row = pushes_again(&db, &data_key, opts.waybills, again).await?;
            row.baseline = Some(("push ceiling", ceiling_rate));
            rows.push(row);
        }
    }
    let backend = if db.url.starts_with("postgres") {
        // Instances sharing one outbox: the same work pushed by one node, then by two.
        for nodes in [1, 2] {
            let again = Again {
                nodes,
                round: 30 + nodes as i64,
                outcomes: Some(&receiver),
                secret,
                path: if nodes == 1 {
                    "pushes, cache warm, one node"
                } else {
                    "pushes, cache warm, two nodes"
                },
            };
            let mut row = pushes_again(&db, &data_key, opts.waybills, again).await?;
            row.baseline = Some(("push ceiling", ceiling_rate));
            rows.push(row);
        }
        "PostgreSQL"
    } else {
        "SQLite"
    };
    receiver.stop().await;
    Ok((backend.to_string(), rows))
}

/// The table, with the machine's facts a reader needs.
pub fn render(backend: &str, opts: &BenchOptions, rows: &[Row]) -> String {
    let backend = if backend == "SQLite" {
        format!("SQLite (synchronous = {})", opts.synchronous.as_str())
    } else {
        backend.to_string()
    };
    let mut out = format!(
        "wxexpress bench: {backend}, {} s per run, {} connections; load from a separate \
         process (wxexpress bench-load)\n{:<36} {:>10} {:>8} {:>8} {:>7}  {:<18} {:>10} {:>7}\n",
        opts.seconds,
        opts.connections,
        "path",
        "per s",
        "p50 ms",
        "p99 ms",
        "errors",
        "baseline",
        "per s",
        "ratio"
    );
    let ms = |v: f64| {
        if v > 0.0 {
            format!("{v:.2}")
        } else {
            "-".to_string()
        }
    };
    for r in rows {
        match r.baseline {
            Some((name, base)) => out.push_str(&format!(
                "{:<36} {:>10.0} {:>8} {:>8} {:>7}  {:<18} {:>10.0} {:>7.3}{}\n",
                r.path,
                r.rate,
                ms(r.p50_ms),
                ms(r.p99_ms),
                r.errors,
                name,
                base,
                if base > 0.0 { r.rate / base } else { 0.0 },
                r.cpu_us
                    .map_or_else(String::new, |us| format!("  (CPU {us:.0} µs each)"))
            )),
            None => {
                let note = r.cpu_us.map_or_else(
                    || "(absolute)".to_string(),
                    |us| format!("(absolute; CPU {us:.0} µs each)"),
                );
                out.push_str(&format!(
                    "{:<36} {:>10.0} {:>8} {:>8} {:>7}  {:<18}\n",
                    r.path,
                    r.rate,
                    ms(r.p50_ms),
                    ms(r.p99_ms),
                    r.errors,
                    note
                ))
            }
        }
    }
    let mb = |field| rss_mb(field).map_or_else(|| "unknown".into(), |m| m.to_string());
    out.push_str(&format!(
        "process RSS (the gateways run in turn, the push node's in-process sandbox, the echo; \
         not the load generator): {} MB now, {} MB at most\n",
        mb("VmRSS:"),
        mb("VmHWM:")
    ));
    out
}

/// The measured gateway (outbox off, WeChat unreachable: nothing is pushed), or with `pusher`
/// a push node in sandbox mode whose in-process sandbox answers at once.
fn gateway_settings(
    db: &DatabaseSettings,
    data_key: &str,
    pusher: bool,
) -> anyhow::Result<config::Settings> {
    push_node_settings(db, data_key, pusher, None)
}

/// A gateway's settings; a push node (`pusher`) pushes through `api_base` if given (another
/// node's sandbox), else through a sandbox of its own.
fn push_node_settings(
    db: &DatabaseSettings,
    data_key: &str,
    pusher: bool,
    api_base: Option<&str>,
) -> anyhow::Result<config::Settings> {
    let mut env: BTreeMap<String, String> = [
        ("WXEXPRESS_SERVER__LISTEN", "127.0.0.1:0"),
        ("WXEXPRESS_DATABASE__URL", db.url.as_str()),
        ("WXEXPRESS_DATABASE__SYNCHRONOUS", db.synchronous.as_str()),
        ("WXEXPRESS_WECHAT__APPID", sd::APPID),
        ("WXEXPRESS_WECHAT__SECRET", "bench-secret"),
        ("WXEXPRESS_WECHAT__ORIGINAL_ID", sd::ORIGINAL_ID),
        ("WXEXPRESS_WECHAT__TOKEN", sd::TOKEN),
        ("WXEXPRESS_WECHAT__ENCODING_AES_KEY", sd::ENCODING_AES_KEY),
        // Nothing is pushed while the callback is measured.
        ("WXEXPRESS_WECHAT__API_BASE", "http://127.0.0.1:9"),
        ("WXEXPRESS_OUTBOX__ENABLED", "false"),
        ("WXEXPRESS_NOTIFICATIONS__ENABLED", "false"),
        ("WXEXPRESS_BACKOFFICE__API_KEYS", API_KEY),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain([(
        "WXEXPRESS_PRIVACY__DATA_KEY".to_string(),
        data_key.to_string(),
    )])
    .collect();
    if pusher {
        env.remove("WXEXPRESS_WECHAT__API_BASE");
        for (k, v) in [
            ("WXEXPRESS_OUTBOX__ENABLED", "true"),
            ("WXEXPRESS_OUTBOX__CONCURRENCY", "256"),
            ("WXEXPRESS_OUTBOX__BATCH_SIZE", "128"),
            ("WXEXPRESS_OUTBOX__POLL_INTERVAL_MS", "5"),
        ] {
            env.insert(k.into(), v.into());
        }
        if let Some(base) = api_base {
            env.insert("WXEXPRESS_WECHAT__API_BASE".into(), base.into());
        }
    }
    let opts = config::LoadOptions {
        generate: false,
        sandbox: pusher,
    };
    config::load_with(None, &env, opts).map_err(|e| anyhow::anyhow!("bench settings: {e}"))
}

/// CPU seconds this process has used (user and system, all threads), from
/// `/proc/self/stat`; `None` where there is no such file.
pub(crate) fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name (in parentheses, which may hold spaces): utime is the 12th
    // field and stime the 13th, in clock ticks (100 a second on Linux).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// A memory figure of this process from `/proc/self/status` (`VmRSS:` now, `VmHWM:` its
/// peak).
fn rss_mb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024)
}
