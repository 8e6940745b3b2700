//! `wxexpress bench`: measures this machine's hot paths beside their baselines in the same run,
//! so a figure means something on a shared, noisy machine only as a ratio.
//!
//! So far: WeChat's reverse query (`waybill_notify_query`, secure JSON) on its fresh path and
//! its replay path, against a bare actix-web JSON echo of the same envelope, served with the
//! same number of HTTP workers and loaded by the same generator; and NDJSON ingest against raw
//! multi-row inserts of the same rows into the same database
//! ([`crate::store::Store::insert_events_raw`]); and pushes end to end against an in-process
//! sandbox that answers at once (an absolute rate: WeChat has no baseline to offer).
//!
//! The load generator is a process of its own (`wxexpress bench-load`, this binary started
//! by the bench for each run: it builds its requests and prints its row), never the
//! gateway's workers; it shares the machine's CPUs with the gateway as `wrk` would, and the
//! baseline is loaded the same way, which is what makes the ratio fair. So the bench
//! process's RSS is the gateway's (with the small echo server and the bench's bookkeeping).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::app::Application;
use crate::config;
use crate::sandbox::defaults as sd;
use crate::store::EntryState;
use crate::wechat::crypto::MessageCrypto;
use crate::wechat::envelope::{seal_request, Document, MessageFormat, MessageMode};

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
}

/// Runs every measurement and returns the rows, in the order printed.
pub async fn run(opts: BenchOptions) -> anyhow::Result<(String, Vec<Row>)> {
    let dir = tempfile::tempdir()?;
    let db = opts
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}/bench.db", dir.path().display()));
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
    let push_row = pushes(&db, &data_key, opts.waybills).await?;

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
    let mut rows = vec![
        fresh_row, replay_row, beside_row, ingest_row, single_row, push_row,
    ];
    let backend = if db.starts_with("postgres") {
        // Instances sharing one outbox: the same work (one new event on every waybill,
        // binding cache warm) pushed by one node, then by two.
        for nodes in [1, 2] {
            rows.push(pushes_again(&db, &data_key, opts.waybills, nodes).await?);
        }
        "PostgreSQL"
    } else {
        "SQLite"
    };
    Ok((backend.to_string(), rows))
}

/// The table, with the machine's facts a reader needs.
pub fn render(backend: &str, opts: &BenchOptions, rows: &[Row]) -> String {
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
    for r in rows {
        match r.baseline {
            Some((name, base)) => out.push_str(&format!(
                "{:<36} {:>10.0} {:>8.2} {:>8.2} {:>7}  {:<18} {:>10.0} {:>7.3}\n",
                r.path,
                r.rate,
                r.p50_ms,
                r.p99_ms,
                r.errors,
                name,
                base,
                if base > 0.0 { r.rate / base } else { 0.0 }
            )),
            None => {
                let ms = |v: f64| {
                    if v > 0.0 {
                        format!("{v:.2}")
                    } else {
                        "-".to_string()
                    }
                };
                out.push_str(&format!(
                    "{:<36} {:>10.0} {:>8} {:>8} {:>7}  {:<18}\n",
                    r.path,
                    r.rate,
                    ms(r.p50_ms),
                    ms(r.p99_ms),
                    r.errors,
                    "(absolute)"
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
fn gateway_settings(db: &str, data_key: &str, pusher: bool) -> anyhow::Result<config::Settings> {
    push_node_settings(db, data_key, pusher, None)
}

/// A gateway's settings; a push node (`pusher`) pushes through `api_base` if given (another
/// node's sandbox), else through a sandbox of its own.
fn push_node_settings(
    db: &str,
    data_key: &str,
    pusher: bool,
    api_base: Option<&str>,
) -> anyhow::Result<config::Settings> {
    let mut env: BTreeMap<String, String> = [
        ("WXEXPRESS_SERVER__LISTEN", "127.0.0.1:0"),
        ("WXEXPRESS_DATABASE__URL", db),
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

/// Everything the runs above left pending (one push per waybill: waiting events coalesce),
/// pushed end to end by a node with 256 pushes in flight against its in-process sandbox,
/// every receiver bound and the binding cache cold: each delivery is a `userquery`, a
/// `pathnotify` and WeChat's encrypted reverse query answered by the node's own callback.
async fn pushes(db: &str, data_key: &str, waybills: usize) -> anyhow::Result<Row> {
    let app = Application::build(gateway_settings(db, data_key, true)?).await?;
    let sandbox = app
        .sandbox()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the push node runs its sandbox in-process"))?;
    for w in 0..waybills {
        sandbox.bind_phone(&receiver(w));
    }
    let store = app.store().clone();
    let before = delivered(&store).await?;
    let stop = app.shutdown_trigger();
    let started = Instant::now();
    let task = tokio::spawn(app.run_until_stopped());
    let deadline = started + Duration::from_secs(600);
    while store.any_pending().await? {
        anyhow::ensure!(
            Instant::now() < deadline,
            "pushes did not finish in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    let _ = task.await;
    let pushed = delivered(&store).await? - before;
    let failed: i64 = store
        .outbox_counts()
        .await?
        .iter()
        .filter(|(s, _, _)| *s == EntryState::Dead)
        .map(|(_, _, n)| n)
        .sum();
    Ok(Row {
        path: "pushes end to end (sandbox)",
        rate: pushed as f64 / secs,
        p50_ms: 0.0,
        p99_ms: 0.0,
        errors: failed as usize,
        baseline: None,
    })
}

/// One new event on every waybill of the earlier runs, then pushed by `nodes` push nodes
/// sharing the database; the second pushes through the first's sandbox (WeChat is one) and
/// the first's callback answers every reverse query (one public address).
async fn pushes_again(
    db: &str,
    data_key: &str,
    waybills: usize,
    nodes: usize,
) -> anyhow::Result<Row> {
    let first = Application::build(gateway_settings(db, data_key, true)?).await?;
    let sandbox = first
        .sandbox()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the push node runs its sandbox in-process"))?;
    for w in 0..waybills {
        sandbox.bind_phone(&receiver(w));
    }
    let base = first
        .sandbox_addr()
        .map(|a| format!("http://{a}"))
        .ok_or_else(|| anyhow::anyhow!("the push node's sandbox has an address"))?;
    let mut apps = vec![first];
    for _ in 1..nodes {
        let settings = push_node_settings(db, data_key, true, Some(&base))?;
        apps.push(Application::build(settings).await?);
    }
    let store = apps[0].store().clone();
    let privacy = crate::privacy::Privacy::from_base64(data_key)?;
    let (now, now_ms) = (chrono::Utc::now().timestamp(), crate::clock::now_ms());
    let payload = privacy.seal_json(&crate::domain::NodeText {
        action_msg: "快件已由 【晋江庄宅营业部】 派送".into(),
        ..Default::default()
    });
    let events: Vec<_> = (0..waybills)
        .flat_map(|w| [waybill_id(w), format!("ING{w:08}"), format!("RAW{w:08}")])
        .map(|id| {
            let event = crate::store::NewEvent {
                waybill_id: id,
                action_type: 300002,
                action_time: now - 600 + nodes as i64,
                payload: payload.clone(),
                received_at: now_ms,
            };
            (None, event)
        })
        .collect();
    for chunk in events.chunks(INGEST_BATCH_LINES) {
        store.record_events_batch(chunk).await?;
    }
    let before = delivered(&store).await?;
    let started = Instant::now();
    let mut running = Vec::new();
    for app in apps {
        running.push((
            app.shutdown_trigger(),
            tokio::spawn(app.run_until_stopped()),
        ));
    }
    let deadline = started + Duration::from_secs(600);
    while store.any_pending().await? {
        anyhow::ensure!(
            Instant::now() < deadline,
            "pushes did not finish in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    // The second node first: the first's sandbox and callback serve it.
    for (stop, task) in running.into_iter().rev() {
        let _ = stop.send(true);
        let _ = task.await;
    }
    let pushed = delivered(&store).await? - before;
    Ok(Row {
        path: if nodes == 1 {
            "pushes, cache warm, one node"
        } else {
            "pushes, cache warm, two nodes"
        },
        rate: pushed as f64 / secs,
        p50_ms: 0.0,
        p99_ms: 0.0,
        errors: 0,
        baseline: None,
    })
}

async fn delivered(store: &crate::store::Store) -> anyhow::Result<i64> {
    Ok(store
        .outbox_counts()
        .await?
        .iter()
        .filter(|(s, _, _)| *s == EntryState::Delivered)
        .map(|(_, _, n)| n)
        .sum())
}

fn waybill_id(w: usize) -> String {
    format!("BENCH{w:08}")
}
fn receiver(w: usize) -> String {
    format!("139{w:08}")
}
const SENDER: &str = "13700000000";

/// Waybills with a five-node path, through the NDJSON batch API.
async fn seed(gateway: &str, waybills: usize) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let t0 = chrono::Utc::now().timestamp() - 86_400;
    for chunk in (0..waybills).collect::<Vec<_>>().chunks(BATCH_WAYBILLS) {
        let mut body = String::new();
        for &w in chunk {
            for (n, (t, msg)) in [
                (100001, "已揽件，揽件员 13700001234"),
                (200001, "快件离开 【绍兴转运中心】"),
                (200001, "快件到达 【泉州磁灶集散中心】"),
                (300002, "快递员 李师傅 13700005678 正在为您派件"),
                (300003, "已签收"),
            ]
            .iter()
            .enumerate()
            {
                let line = json!({
                    "waybill_id": waybill_id(w),
                    "waybill": (n == 0).then(|| json!({
                        "create_time": t0,
                        "sender": { "name": "寄件人", "phone": SENDER, "province": "浙江省", "city": "绍兴市", "area": "柯桥区" },
                        "receiver": { "name": "收件人", "phone": receiver(w), "province": "福建省", "city": "泉州市", "area": "晋江市", "address": "庄宅北区158-6" }
                    })),
                    "event": { "action_type": t, "action_time": t0 + 3600 * (n as i64 + 1), "action_msg": msg }
                });
                let mut line = line;
                if n != 0 {
                    line.as_object_mut().map(|o| o.remove("waybill"));
                }
                body.push_str(&line.to_string());
                body.push('\n');
            }
        }
        let r = http
            .post(format!("{gateway}/v1/events/batch"))
            .bearer_auth(API_KEY)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "seeding failed: {}", r.status());
    }
    Ok(())
}

/// `n` distinct, pre-sealed reverse queries (query string, body); `tag` keeps sets apart.
fn requests(n: usize, tag: &str, waybills: usize) -> anyhow::Result<Vec<(String, String)>> {
    let crypto = MessageCrypto::new(sd::TOKEN, sd::APPID, sd::ENCODING_AES_KEY, None)?;
    let now = chrono::Utc::now().timestamp();
    (0..n)
        .map(|i| {
            let w = i % waybills.max(1);
            let mut doc = Document::new();
            doc.insert("ToUserName".into(), json!(sd::ORIGINAL_ID));
            doc.insert("FromUserName".into(), json!(format!("oBENCH{tag}{i:021}")));
            doc.insert("CreateTime".into(), json!(now));
            doc.insert("MsgType".into(), json!("event"));
            doc.insert("Event".into(), json!("waybill_notify_query"));
            doc.insert("WaybillId".into(), json!(waybill_id(w)));
            doc.insert("SenderPhone".into(), json!(SENDER));
            doc.insert("ReceiverPhone".into(), json!(receiver(w)));
            let nonce = format!("{i}");
            let (query, body) = seal_request(
                &crypto,
                MessageMode::Secure,
                MessageFormat::Json,
                &doc,
                now,
                &nonce,
            )?;
            Ok((format!("/wechat/callback?{query}"), body))
        })
        .collect()
}

/// 10,000-line NDJSON batches of new events for the ingest waybills, one after the other
/// for `duration` (one in flight, as a carrier's loader would send them); the lines stored.
async fn batches_for(
    gateway: String,
    duration: Duration,
    waybills: usize,
) -> anyhow::Result<usize> {
    const LINES: usize = 10_000;
    let http = reqwest::Client::new();
    let t0 = chrono::Utc::now().timestamp() - 80_000;
    let waybills = waybills.max(1);
    let started = Instant::now();
    let mut stored = 0;
    let mut k = 0;
    while started.elapsed() < duration {
        let body: String = (0..LINES)
            .map(|j| {
                let n = k * LINES + j;
                json!({
                    "waybill_id": format!("ING{:08}", n % waybills),
                    "event": { "action_type": 200001, "action_time": t0 + (n / waybills) as i64, "action_msg": "快件离开 【泉州磁灶集散中心】" }
                })
                .to_string()
                    + "\n"
            })
            .collect();
        let r = http
            .post(format!("{gateway}/v1/events/batch"))
            .bearer_auth(API_KEY)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(
            r.status().is_success(),
            "a 10,000-line batch failed: {}",
            r.status()
        );
        stored += LINES;
        k += 1;
    }
    Ok(stored)
}

/// `POST /v1/waybills/{id}/events` requests, each a new event of a seeded waybill.
fn single_events(n: usize, waybills: usize) -> Vec<(String, String)> {
    let t0 = chrono::Utc::now().timestamp() - 43_200;
    let waybills = waybills.max(1);
    (0..n)
        .map(|i| {
            let body = json!({
                "action_type": 200001,
                "action_time": t0 + (i / waybills) as i64,
                "action_msg": "快件到达 【泉州磁灶集散中心】",
            });
            (
                format!("/v1/waybills/{}/events", waybill_id(i % waybills)),
                body.to_string(),
            )
        })
        .collect()
}

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
async fn load(base: &str, what: &Load, opts: &BenchOptions, cycle: bool) -> anyhow::Result<Row> {
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

async fn generate(
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
    }
}

const INGEST_EVENTS_PER_WAYBILL: i64 = 10;
const INGEST_BATCH_LINES: usize = 1_000;

/// NDJSON ingest through the API (1,000-line batches, 4 in flight) against the same number of
/// the same rows inserted raw into the same database. Waybills are created first, unmeasured.
async fn ingest(gateway: &str, db: &str, data_key: &str, waybills: usize) -> anyhow::Result<Row> {
    use futures_util::StreamExt as _;
    let http = reqwest::Client::new();
    let t0 = chrono::Utc::now().timestamp() - 86_400;
    let post = |body: String| {
        let http = http.clone();
        let url = format!("{gateway}/v1/events/batch");
        async move {
            let started = Instant::now();
            let r = http
                .post(url)
                .bearer_auth(API_KEY)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await;
            let ok = match r {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            (ok, started.elapsed().as_micros() as u64)
        }
    };
    let line = |prefix: &str, w: usize, n: i64, with_waybill: bool| {
        let mut v = json!({
            "waybill_id": format!("{prefix}{w:08}"),
            "event": { "action_type": 200001, "action_time": t0 + 60 * n, "action_msg": "快件到达 【泉州磁灶集散中心】，下一站 【晋江庄宅营业部】" }
        });
        if with_waybill {
            v["waybill"] = json!({
                "create_time": t0,
                "sender": { "name": "寄件人", "phone": SENDER, "province": "浙江省", "city": "绍兴市", "area": "柯桥区" },
                "receiver": { "name": "收件人", "phone": receiver(w), "province": "福建省", "city": "泉州市", "area": "晋江市", "address": "庄宅北区158-6" }
            });
        }
        v.to_string() + "\n"
    };
    // Waybills for both sides, each with a first event (not measured).
    for prefix in ["ING", "RAW"] {
        let lines: Vec<String> = (0..waybills).map(|w| line(prefix, w, 0, true)).collect();
        for chunk in lines.chunks(INGEST_BATCH_LINES) {
            let (ok, _) = post(chunk.concat()).await;
            anyhow::ensure!(ok, "creating the ingest waybills failed");
        }
    }
    // Measured: the same number of events through the API...
    let lines: Vec<String> = (1..=INGEST_EVENTS_PER_WAYBILL)
        .flat_map(|n| (0..waybills).map(move |w| (w, n)))
        .map(|(w, n)| line("ING", w, n, false))
        .collect();
    let events = lines.len();
    let started = Instant::now();
    let results: Vec<(bool, u64)> = futures_util::stream::iter(
        lines
            .chunks(INGEST_BATCH_LINES)
            .map(|c| c.concat())
            .collect::<Vec<_>>(),
    )
    .map(post)
    .buffer_unordered(4)
    .collect()
    .await;
    let api_secs = started.elapsed().as_secs_f64();
    // ...and raw, into the same database, 1,000 events per transaction.
    let store = crate::store::Store::connect(db).await?;
    // Sealed with the gateway's key, as the gateway would: the push run opens them.
    let privacy = crate::privacy::Privacy::from_base64(data_key)?;
    let now_ms = crate::clock::now_ms();
    let raw: Vec<crate::store::NewEvent> = (1..=INGEST_EVENTS_PER_WAYBILL)
        .flat_map(|n| (0..waybills).map(move |w| (w, n)))
        .map(|(w, n)| crate::store::NewEvent {
            waybill_id: format!("RAW{w:08}"),
            action_type: 200001,
            action_time: t0 + 60 * n,
            payload: privacy.seal_json(&crate::domain::NodeText {
                action_msg: "快件到达 【泉州磁灶集散中心】，下一站 【晋江庄宅营业部】".into(),
                ..Default::default()
            }),
            received_at: now_ms,
        })
        .collect();
    let started = Instant::now();
    for chunk in raw.chunks(INGEST_BATCH_LINES) {
        store.insert_events_raw(chunk).await?;
    }
    let raw_secs = started.elapsed().as_secs_f64();
    let mut lat: Vec<u64> = results.iter().map(|(_, us)| *us).collect();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round().max(0.0) as usize)
            .map_or(0.0, |us| *us as f64 / 1000.0)
    };
    Ok(Row {
        path: "NDJSON ingest, events (per batch)",
        rate: events as f64 / api_secs,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        errors: results.iter().filter(|(ok, _)| !ok).count(),
        baseline: Some(("raw multi-row", raw.len() as f64 / raw_secs)),
    })
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
