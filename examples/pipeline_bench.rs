//! Ingest and push throughput of one gateway node, SQLite or PostgreSQL.
//!
//! ```sh
//! cargo run --release --example pipeline_bench -- --waybills 5000
//! cargo run --release --example pipeline_bench -- --waybills 5000 --database-url postgres://…/fresh_db
//! ```
//!
//! 1. An API-only gateway (`outbox.enabled = false`) takes N waybills, then one event per
//!    waybill as single `POST /v1/waybills/{id}/events` (32 concurrent clients), then one more
//!    per waybill as NDJSON batches of 1,000 lines.
//! 2. A second gateway on the same database, with outbox workers and the in-process sandbox
//!    (answering instantly, every receiver bound), pushes everything: userquery, pathnotify
//!    and WeChat's encrypted reverse query to the gateway's callback for every delivery.
//!
//! A benchmark, not a test: it prints numbers, it asserts nothing about speed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use wxexpress::app::Application;
use wxexpress::store::EntryState;

const KEY: &str = "bench-api-key-0123456789";

fn settings(db: &str, outbox: bool, data_key: &str) -> wxexpress::config::Settings {
    let env: BTreeMap<String, String> = [
        ("WXEXPRESS_SERVER__LISTEN", "127.0.0.1:0"),
        ("WXEXPRESS_DATABASE__URL", db),
        ("WXEXPRESS_BACKOFFICE__API_KEYS", KEY),
        ("WXEXPRESS_PRIVACY__DATA_KEY", data_key),
        (
            "WXEXPRESS_OUTBOX__ENABLED",
            if outbox { "true" } else { "false" },
        ),
        ("WXEXPRESS_OUTBOX__CONCURRENCY", "64"),
        ("WXEXPRESS_OUTBOX__BATCH_SIZE", "128"),
        ("WXEXPRESS_OUTBOX__POLL_INTERVAL_MS", "5"),
        ("WXEXPRESS_SERVER__BODY_LIMIT_BYTES", "1048576"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    wxexpress::config::load_from(None, &env, false).expect("bench settings")
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(((v.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wxexpress::telemetry::init_with("error");
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let n: usize = arg("--waybills")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5000);
    let dir = tempfile::tempdir()?;
    let db = arg("--database-url")
        .unwrap_or_else(|| format!("sqlite://{}/bench.db", dir.path().display()));
    let backend = if db.starts_with("postgres") {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let data_key = wxexpress::privacy::Privacy::generate_key_base64();

    let ingest = Application::build(settings(&db, false, &data_key)).await?;
    let base = format!("http://{}", ingest.addr());
    let stop_ingest = ingest.shutdown_trigger();
    let ingest_task = tokio::spawn(ingest.run_until_stopped());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let t0 = 1_790_000_000i64;
    let id = |i: usize| format!("BN{i:010}");
    let receiver = |i: usize| format!("139{i:08}");
    let waybill = |i: usize| {
        json!({ "create_time": t0, "sender": { "name": "寄件人", "phone": "13700000000", "province": "浙江省", "city": "杭州市", "area": "西湖区" },
                "receiver": { "name": "收件人", "phone": receiver(i), "province": "广东省", "city": "深圳市", "area": "南山区", "address": "科技园路1号" } })
    };

    // Waybills (not measured).
    futures_util::stream::iter(0..n)
        .map(|i| {
            let (http, url) = (http.clone(), format!("{base}/v1/waybills/{}", id(i)));
            let body = waybill(i);
            async move {
                http.put(url)
                    .bearer_auth(KEY)
                    .json(&body)
                    .send()
                    .await
                    .map(|r| r.status())
            }
        })
        .buffer_unordered(32)
        .for_each(|_| async {})
        .await;

    // Single events, 32 concurrent clients.
    let started = Instant::now();
    let mut lat: Vec<f64> = futures_util::stream::iter(0..n)
        .map(|i| {
            let (http, url) = (http.clone(), format!("{base}/v1/waybills/{}/events", id(i)));
            async move {
                let t = Instant::now();
                let r = http.post(url).bearer_auth(KEY).json(&json!({ "action_type": 100001, "action_time": t0 + 60, "action_msg": "已揽件，揽件员王师傅 13912345678" })).send().await;
                assert!(r.map(|r| r.status().as_u16() == 202).unwrap_or(false), "an event was refused");
                t.elapsed().as_secs_f64() * 1000.0
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let single = started.elapsed();

    // NDJSON batches of 1,000 lines, 4 in flight.
    let lines: Vec<String> = (0..n)
        .map(|i| json!({ "waybill_id": id(i), "event": { "action_type": 200001, "action_time": t0 + 3600, "action_msg": "快件到达 【深圳南山集散中心】" } }).to_string())
        .collect();
    let started = Instant::now();
    futures_util::stream::iter(lines.chunks(1000).map(|c| c.join("\n")))
        .map(|body| {
            let (http, url) = (http.clone(), format!("{base}/v1/events/batch"));
            async move {
                http.post(url)
                    .bearer_auth(KEY)
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status())
            }
        })
        .buffer_unordered(4)
        .for_each(|_| async {})
        .await;
    let batch = started.elapsed();
    let _ = stop_ingest.send(true);
    let _ = ingest_task.await;

    // Push everything: a node with workers and an instantly answering sandbox.
    let pusher = Application::build(settings(&db, true, &data_key)).await?;
    let sandbox = pusher.sandbox().cloned().expect("sandbox mode");
    for i in 0..n {
        sandbox.bind_phone(&receiver(i));
    }
    let store = pusher.store().clone();
    let stop = pusher.shutdown_trigger();
    let started = Instant::now();
    let task = tokio::spawn(pusher.run_until_stopped());
    loop {
        let counts = store.outbox_counts().await?;
        if !counts
            .iter()
            .any(|(s, _, c)| *s == EntryState::Pending && *c > 0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let push = started.elapsed();
    let _ = stop.send(true);
    let _ = task.await;
    let counts = store.outbox_counts().await?;
    let delivered: i64 = counts
        .iter()
        .filter(|(s, _, _)| *s == EntryState::Delivered)
        .map(|(_, _, c)| c)
        .sum();
    let rq = sandbox.stats().reverse_queries;

    println!("backend                 {backend}");
    println!("waybills                {n}");
    println!(
        "single events           {:.0} events/s  (p50 {:.1} ms, p99 {:.1} ms, 32 clients)",
        n as f64 / single.as_secs_f64(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
    println!(
        "NDJSON batches          {:.0} events/s  (1,000-line batches, 4 in flight)",
        n as f64 / batch.as_secs_f64()
    );
    println!("pushes delivered        {delivered} in {:.2} s = {:.0} pushes/s (each with userquery, pathnotify and a reverse query; {} reverse queries consistent)", push.as_secs_f64(), delivered as f64 / push.as_secs_f64(), rq.ok);
    println!("outbox                  {counts:?}");
    Ok(())
}
