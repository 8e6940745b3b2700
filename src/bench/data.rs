//! The data sets: waybills and their receivers, the seed, reverse-query requests, batches
//! and single events.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::sandbox::defaults as sd;
use crate::wechat::crypto::MessageCrypto;
use crate::wechat::envelope::{seal_request, Document, MessageFormat, MessageMode};

use super::{API_KEY, BATCH_WAYBILLS};

pub(super) fn waybill_id(w: usize) -> String {
    format!("BENCH{w:08}")
}
pub(super) fn receiver(w: usize) -> String {
    format!("139{w:08}")
}
pub(super) const SENDER: &str = "13700000000";

/// Waybills with a five-node path, through the NDJSON batch API.
pub(super) async fn seed(gateway: &str, waybills: usize) -> anyhow::Result<()> {
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
pub(super) fn requests(
    n: usize,
    tag: &str,
    waybills: usize,
) -> anyhow::Result<Vec<(String, String)>> {
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
pub(super) async fn batches_for(
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
pub(super) fn single_events(n: usize, waybills: usize) -> Vec<(String, String)> {
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
