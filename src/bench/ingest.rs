//! NDJSON ingest beside its baseline: raw multi-row inserts of the same rows into the same
//! schema.

use std::time::Instant;

use serde_json::json;

use super::data::{receiver, SENDER};
use super::{Row, API_KEY};

pub(super) const INGEST_EVENTS_PER_WAYBILL: i64 = 10;
pub(super) const INGEST_BATCH_LINES: usize = 1_000;

/// NDJSON ingest through the API (1,000-line batches, 4 in flight) against the same number of
/// the same rows inserted raw into the same database. Waybills are created first, unmeasured.
pub(super) async fn ingest(
    gateway: &str,
    db: &crate::store::section::DatabaseSettings,
    data_key: &str,
    waybills: usize,
) -> anyhow::Result<Row> {
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
    // ...and raw, into the same database, 1,000 events per transaction (`raw.rs`).
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
            carrier_ref: None,
        })
        .collect();
    let raw_secs = super::raw::insert_raw(db, &raw, INGEST_BATCH_LINES).await?;
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
        baseline: Some(("typed sqlx rows", raw.len() as f64 / raw_secs)),
        cpu_us: None,
    })
}
