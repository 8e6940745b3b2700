//! The `waybill_notify_query` reverse query WeChat sends while a `pathnotify` call is open
//! (spec `wechat-express-push.md` §3.6, §4; `wechat-message-crypto.md` §3-4): a faithful
//! message push to the carrier's callback in the configured mode and format, then the
//! verdict on the reply — 932001 (unreachable, timed out, badly signed, undecryptable),
//! 932003 (not a well-formed answer), 932002 (an answer that disagrees with the push).
//!
//! Every exchange is logged with phones masked. Nothing here holds a lock while awaiting.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::api::errcode as ec;
use super::exchanges::{mask_document, ExchangeLogEntry, Verdict};
use super::state::Shared;
use super::verdict::{classify_open_error, judge, Expected};
use super::wire::{PathNotify, EVENT, WECHAT_TEAM_OPENID};
use crate::domain::mask_phone_str;
use crate::wechat::envelope::{self, Document, MessageFormat};

/// Re-sends of a reverse query whose connection failed (crypto spec §5: up to three).
const CONNECTION_RETRIES: u32 = 3;

/// Sends the reverse query for `push` and judges the reply. `Err` carries 932001..932003.
pub async fn query(shared: &Shared, push: &PathNotify) -> Result<(), i64> {
    let started = Instant::now();
    let seq = shared.exchanges.next_seq();
    let url = shared.callback_url();
    let (verdict, detail, http_status, reply) = exchange(shared, push, &url).await;
    let errcode = match verdict {
        Verdict::Consistent => ec::OK,
        Verdict::Malformed => ec::REVERSE_QUERY_DATA,
        Verdict::Inconsistent => ec::REVERSE_QUERY_LOGIC,
        _ => ec::REVERSE_QUERY_SYSTEM,
    };
    let ok = errcode == ec::OK;
    shared.stats.reverse_query(ok);
    tracing::debug!(
        waybill_id = %push.waybill_id,
        receiver = %mask_phone_str(&push.receiver_phone),
        verdict = ?verdict,
        errcode,
        "sandbox reverse query"
    );
    shared.exchanges.push(ExchangeLogEntry {
        seq,
        at: chrono::Utc::now().timestamp(),
        waybill_id: push.waybill_id.clone(),
        receiver_phone: mask_phone_str(&push.receiver_phone),
        sender_phone: push
            .sender_phone
            .as_deref()
            .map(mask_phone_str)
            .unwrap_or_default(),
        action_type: push.node.action_type,
        action_time: push.node.action_time,
        callback_url: url.split('?').next().unwrap_or_default().to_string(),
        message_mode: shared.settings.message_mode.as_str().into(),
        message_format: shared.settings.message_format.as_str().into(),
        http_status,
        latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        verdict,
        errcode,
        detail,
        reply: reply.map(|d| mask_document(&Value::Object(d))),
    });
    if ok {
        Ok(())
    } else {
        Err(errcode)
    }
}

type Outcome = (Verdict, String, Option<u16>, Option<Document>);

async fn exchange(shared: &Shared, push: &PathNotify, url: &str) -> Outcome {
    let settings = &shared.settings;
    let (mode, format) = (settings.message_mode, settings.message_format);
    let Some(crypto) = shared.crypto.as_ref() else {
        return (
            Verdict::Undecryptable,
            "the sandbox's EncodingAESKey is malformed".into(),
            None,
            None,
        );
    };
    // Wall clock, not the sandbox clock: the carrier checks the timestamp against its own
    // clock, and time travel in the sandbox must not make every push stale (SANDBOX.md).
    let now = chrono::Utc::now().timestamp();
    let nonce = rand::random::<u32>().to_string();
    let doc = request_document(&settings.original_id, now, push);
    let (query, body) = match envelope::seal_request(crypto, mode, format, &doc, now, &nonce) {
        Ok(sealed) => sealed,
        Err(e) => {
            return (
                Verdict::Undecryptable,
                format!("sealing the query failed: {e}"),
                None,
                None,
            )
        }
    };
    let fault = shared.faults.decide_callback();
    if fault.fail {
        return (
            Verdict::Unreachable,
            "callback unreachable (injected fault)".into(),
            None,
            None,
        );
    }
    let timeout = Duration::from_millis(settings.callback_timeout_ms);
    if !fault.latency.is_zero() {
        tokio::time::sleep(fault.latency.min(timeout)).await;
        if fault.latency >= timeout {
            return (
                Verdict::Timeout,
                format!(
                    "no reply within {} ms (injected latency)",
                    timeout.as_millis()
                ),
                None,
                None,
            );
        }
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    let content_type = match format {
        MessageFormat::Json => "application/json",
        MessageFormat::Xml => "text/xml",
    };
    // WeChat re-sends a message push it got no answer to, up to three times (crypto spec §5).
    // A refused or reset connection is retried the same way, one second apart, with the
    // identical request (same CreateTime and nonce), so the carrier can recognise the retry.
    // A timeout is not retried here: it already used WeChat's whole 5-second window.
    let mut sent;
    let mut retries = 0;
    loop {
        sent = shared
            .http
            .post(format!("{url}{sep}{query}"))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body.clone())
            .timeout(timeout - fault.latency)
            .send()
            .await;
        match &sent {
            Err(e) if !e.is_timeout() && retries < CONNECTION_RETRIES => {
                retries += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            _ => break,
        }
    }
    let response = match sent {
        Ok(r) => r,
        Err(e) => return transport_failure(&e, timeout, None),
    };
    let status = response.status().as_u16();
    if !response.status().is_success() {
        return (
            Verdict::HttpError,
            format!("callback answered HTTP {status}"),
            Some(status),
            None,
        );
    }
    let bytes = match response.bytes().await {
        Ok(b) => b,
        Err(e) => return transport_failure(&e, timeout, Some(status)),
    };
    let reply = match envelope::open_reply(crypto, mode, format, &bytes, &nonce) {
        Ok(d) => d,
        Err(e) => {
            let (verdict, detail) = classify_open_error(&e, mode, format, &bytes);
            return (verdict, detail, Some(status), None);
        }
    };
    let expected = Expected {
        original_id: &settings.original_id,
        format,
        push,
    };
    match judge(&expected, &reply) {
        Ok(()) => (
            Verdict::Consistent,
            "consistent".into(),
            Some(status),
            Some(reply),
        ),
        Err((verdict, detail)) => (verdict, detail, Some(status), Some(reply)),
    }
}

fn transport_failure(e: &reqwest::Error, timeout: Duration, status: Option<u16>) -> Outcome {
    if e.is_timeout() {
        (
            Verdict::Timeout,
            format!("no reply within {} ms", timeout.as_millis()),
            status,
            None,
        )
    } else if e.is_connect() {
        (
            Verdict::Unreachable,
            "callback unreachable: connection failed".into(),
            status,
            None,
        )
    } else {
        (
            Verdict::Unreachable,
            format!("callback transport error: {}", without_url(e)),
            status,
            None,
        )
    }
}

/// reqwest errors print the URL, whose query carries signatures; keep only the kind.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(inner) = source {
        s = inner.to_string();
        source = inner.source();
    }
    if s.is_empty() {
        "request failed".into()
    } else {
        s
    }
}

/// The question: spec §4.1's fields, `SenderPhone` empty when the push had none.
pub fn request_document(original_id: &str, now: i64, push: &PathNotify) -> Document {
    let mut doc = Document::new();
    doc.insert("ToUserName".into(), json!(original_id));
    doc.insert("FromUserName".into(), json!(WECHAT_TEAM_OPENID));
    doc.insert("CreateTime".into(), json!(now));
    doc.insert("MsgType".into(), json!("event"));
    doc.insert("Event".into(), json!(EVENT));
    doc.insert("WaybillId".into(), json!(push.waybill_id));
    doc.insert(
        "SenderPhone".into(),
        json!(push.sender_phone.as_deref().unwrap_or("")),
    );
    doc.insert("ReceiverPhone".into(), json!(push.receiver_phone));
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::wire::PathNode;

    #[test]
    fn the_query_carries_the_spec_fields() {
        let push = PathNotify {
            waybill_id: "W1".into(),
            create_time: 1,
            sender_phone: None,
            receiver_phone: "13800138000".into(),
            node: PathNode {
                action_type: 100001,
                action_time: 2,
                action_msg: "已揽件".into(),
                pickup_courier_name: None,
                pickup_courier_phone: None,
                delivery_courier_name: None,
                delivery_courier_phone: None,
            },
        };
        let d = request_document("gh_x", 5, &push);
        let keys: Vec<&str> = d.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "ToUserName",
                "FromUserName",
                "CreateTime",
                "MsgType",
                "Event",
                "WaybillId",
                "SenderPhone",
                "ReceiverPhone"
            ]
        );
        assert_eq!(d["SenderPhone"], "", "no sender phone is sent as empty");
        assert_eq!(d["FromUserName"], WECHAT_TEAM_OPENID);
    }
}
