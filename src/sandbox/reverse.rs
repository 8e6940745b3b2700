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
use super::express::{PathNode, PathNotify};
use super::state::Shared;
use crate::domain::mask_phone_str;
use crate::wechat::envelope::{self, Document, MessageFormat, MessageMode, OpenError};

/// `FromUserName` of every reverse query: the fixed openid of the WeChat team (spec §4.1,
/// from the official example).
pub const WECHAT_TEAM_OPENID: &str = "oHt_80DRclK4qjKfdYnPg6RxxsNI";
pub const EVENT: &str = "waybill_notify_query";

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
        sender_phone: push.sender_phone.as_deref().map(mask_phone_str).unwrap_or_default(),
        action_type: push.node.action_type,
        action_time: push.node.action_time,
        callback_url: url.split('?').next().unwrap_or_default().to_string(),
        message_mode: mode_name(shared.settings.message_mode).into(),
        message_format: format_name(shared.settings.message_format).into(),
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
        return (Verdict::Undecryptable, "the sandbox's EncodingAESKey is malformed".into(), None, None);
    };
    // Wall clock, not the sandbox clock: the carrier checks the timestamp against its own
    // clock, and time travel in the sandbox must not make every push stale (SANDBOX.md).
    let now = chrono::Utc::now().timestamp();
    let nonce = rand::random::<u32>().to_string();
    let doc = request_document(&settings.original_id, now, push);
    let (query, body) = match envelope::seal_request(crypto, mode, format, &doc, now, &nonce) {
        Ok(sealed) => sealed,
        Err(e) => return (Verdict::Undecryptable, format!("sealing the query failed: {e}"), None, None),
    };
    let fault = shared.faults.decide_callback();
    if fault.fail {
        return (Verdict::Unreachable, "callback unreachable (injected fault)".into(), None, None);
    }
    let timeout = Duration::from_millis(settings.callback_timeout_ms);
    if !fault.latency.is_zero() {
        tokio::time::sleep(fault.latency.min(timeout)).await;
        if fault.latency >= timeout {
            return (Verdict::Timeout, format!("no reply within {} ms (injected latency)", timeout.as_millis()), None, None);
        }
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    let content_type = match format {
        MessageFormat::Json => "application/json",
        MessageFormat::Xml => "text/xml",
    };
    let sent = shared
        .http
        .post(format!("{url}{sep}{query}"))
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body)
        .timeout(timeout - fault.latency)
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => return transport_failure(&e, timeout, None),
    };
    let status = response.status().as_u16();
    if !response.status().is_success() {
        return (Verdict::HttpError, format!("callback answered HTTP {status}"), Some(status), None);
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
    let expected = Expected { original_id: &settings.original_id, format, push };
    match judge(&expected, &reply) {
        Ok(()) => (Verdict::Consistent, "consistent".into(), Some(status), Some(reply)),
        Err((verdict, detail)) => (verdict, detail, Some(status), Some(reply)),
    }
}

fn transport_failure(e: &reqwest::Error, timeout: Duration, status: Option<u16>) -> Outcome {
    if e.is_timeout() {
        (Verdict::Timeout, format!("no reply within {} ms", timeout.as_millis()), status, None)
    } else if e.is_connect() {
        (Verdict::Unreachable, "callback unreachable: connection failed".into(), status, None)
    } else {
        (Verdict::Unreachable, format!("callback transport error: {}", without_url(e)), status, None)
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
    doc.insert("SenderPhone".into(), json!(push.sender_phone.as_deref().unwrap_or("")));
    doc.insert("ReceiverPhone".into(), json!(push.receiver_phone));
    doc
}

/// Signature, nonce, missing wrapper fields and decryption failures are 932001; a body that
/// is not a document at all is 932003.
fn classify_open_error(e: &OpenError, mode: MessageMode, format: MessageFormat, body: &[u8]) -> (Verdict, String) {
    match e {
        OpenError::BadSignature => (Verdict::BadSignature, "MsgSignature or Nonce of the reply did not verify".into()),
        OpenError::Crypto(c) => (Verdict::Undecryptable, format!("reply did not decrypt: {c}")),
        OpenError::MissingParameter(p) => (Verdict::BadSignature, format!("reply lacks {p}")),
        OpenError::StaleTimestamp => (Verdict::BadSignature, "reply timestamp invalid".into()),
        OpenError::Malformed(m) => {
            // A readable document without the encrypted wrapper, where one is required, is an
            // unsigned reply (932001); unreadable bytes are a malformed one (932003).
            let outer = envelope::parse_document(format, body).ok();
            let needs_wrapper = mode == MessageMode::Secure || outer.as_ref().is_some_and(|d| d.contains_key("Encrypt"));
            match outer {
                Some(d) if needs_wrapper && envelope::parse_encrypted_reply(format, body).is_err() => {
                    let _ = d;
                    (Verdict::BadSignature, "reply is not encrypted and signed (Encrypt, MsgSignature, TimeStamp, Nonce)".into())
                }
                _ => (Verdict::Malformed, format!("reply is not a message document: {m}")),
            }
        }
    }
}

/// What the reply must agree with.
pub struct Expected<'a> {
    pub original_id: &'a str,
    pub format: MessageFormat,
    pub push: &'a PathNotify,
}

type Judgement = Result<(), (Verdict, String)>;

fn malformed(why: impl Into<String>) -> (Verdict, String) {
    (Verdict::Malformed, why.into())
}

fn inconsistent(why: impl Into<String>) -> (Verdict, String) {
    (Verdict::Inconsistent, why.into())
}

/// An integer field: a JSON number in JSON, decimal text in XML (which has no numbers).
fn int(format: MessageFormat, v: Option<&Value>) -> Option<i64> {
    match (format, v?) {
        (_, Value::Number(n)) => n.as_i64(),
        (MessageFormat::Xml, Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

fn string<'d>(doc: &'d Document, key: &str) -> Result<&'d str, (Verdict, String)> {
    match doc.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(malformed(format!("{key} must be a string"))),
        None => Err(malformed(format!("{key} is missing"))),
    }
}

/// Spec §4.2 (shape, else 932003) and §4.3 (agreement, else 932002), strict reading.
pub fn judge(x: &Expected<'_>, doc: &Document) -> Judgement {
    let to = string(doc, "ToUserName")?;
    let from = string(doc, "FromUserName")?;
    if string(doc, "MsgType")? != "event" {
        return Err(malformed("MsgType must be event"));
    }
    if !string(doc, "Event")?.eq_ignore_ascii_case(EVENT) {
        return Err(malformed("Event must be waybill_notify_query"));
    }
    int(x.format, doc.get("CreateTime")).ok_or_else(|| malformed("CreateTime must be an integer"))?;
    let result_code = int(x.format, doc.get("ResultCode")).ok_or_else(|| malformed("ResultCode must be an integer"))?;
    let result_msg = string(doc, "ResultMsg")?;
    let create_time = int(x.format, doc.get("WaybillCreateTime")).ok_or_else(|| malformed("WaybillCreateTime must be an integer"))?;
    let path = match (x.format, doc.get("Path")) {
        (_, Some(Value::Array(items))) => Some(items.as_slice()),
        (_, None) => None,
        _ => return Err(malformed("Path must be an array of nodes")),
    };
    let nodes = path.unwrap_or_default().iter().map(|v| node(x.format, v)).collect::<Result<Vec<_>, _>>()?;
    if result_code != 0 {
        return Err(inconsistent(format!("ResultCode {result_code}: {result_msg}")));
    }
    if path.is_none() {
        return Err(malformed("Path is missing"));
    }
    if to != WECHAT_TEAM_OPENID {
        return Err(inconsistent("ToUserName must echo the query's FromUserName"));
    }
    if from != x.original_id {
        return Err(inconsistent("FromUserName must be the mini program's original id"));
    }
    let push = x.push;
    for (key, want) in [("ReceiverPhone", Some(push.receiver_phone.as_str())), ("SenderPhone", push.sender_phone.as_deref())] {
        if let Some(Value::String(got)) = doc.get(key) {
            if got != want.unwrap_or("") {
                return Err(inconsistent(format!("{key} differs from the push")));
            }
        }
    }
    if create_time != push.create_time {
        return Err(inconsistent(format!("WaybillCreateTime {create_time} differs from create_time {}", push.create_time)));
    }
    let want = &push.node;
    if nodes.iter().any(|n| same_node(n, want)) {
        return Ok(());
    }
    let near = nodes.iter().find(|n| n.action_type == want.action_type && n.action_time == want.action_time);
    Err(inconsistent(match near {
        Some(n) if n.action_msg != want.action_msg => "the pushed node's ActionMsg differs in Path".to_string(),
        Some(_) => "the pushed node's courier fields differ in Path".to_string(),
        None => format!("Path has no node with ActionType {} and ActionTime {}", want.action_type, want.action_time),
    }))
}

fn node(format: MessageFormat, v: &Value) -> Result<PathNode, (Verdict, String)> {
    let Value::Object(o) = v else {
        return Err(malformed("a Path item is not an object"));
    };
    let text = |k: &str| match o.get(k) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(malformed(format!("Path.{k} must be a string"))),
    };
    Ok(PathNode {
        action_type: int(format, o.get("ActionType")).ok_or_else(|| malformed("Path.ActionType must be an integer"))?,
        action_time: int(format, o.get("ActionTime")).ok_or_else(|| malformed("Path.ActionTime must be an integer"))?,
        action_msg: text("ActionMsg")?.ok_or_else(|| malformed("Path.ActionMsg is missing"))?,
        pickup_courier_name: text("PickupCourierName")?,
        pickup_courier_phone: text("PickupCourierPhone")?,
        delivery_courier_name: text("DeliveryCourierName")?,
        delivery_courier_phone: text("DeliveryCourierPhone")?,
    })
}

/// Byte-equal fields; an absent optional courier field equals an empty one, because the
/// official pathnotify example sends them empty and §3.5 allows omitting them.
fn same_node(a: &PathNode, b: &PathNode) -> bool {
    let opt = |x: &Option<String>, y: &Option<String>| x.as_deref().unwrap_or("") == y.as_deref().unwrap_or("");
    a.action_type == b.action_type
        && a.action_time == b.action_time
        && a.action_msg == b.action_msg
        && opt(&a.pickup_courier_name, &b.pickup_courier_name)
        && opt(&a.pickup_courier_phone, &b.pickup_courier_phone)
        && opt(&a.delivery_courier_name, &b.delivery_courier_name)
        && opt(&a.delivery_courier_phone, &b.delivery_courier_phone)
}

pub fn mode_name(m: MessageMode) -> &'static str {
    match m {
        MessageMode::Plaintext => "plaintext",
        MessageMode::Compatible => "compatible",
        MessageMode::Secure => "secure",
    }
}

pub fn format_name(f: MessageFormat) -> &'static str {
    match f {
        MessageFormat::Json => "json",
        MessageFormat::Xml => "xml",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push() -> PathNotify {
        PathNotify {
            waybill_id: "W1".into(),
            create_time: 1_600_000_000,
            sender_phone: Some("13800138001".into()),
            receiver_phone: "13800138000".into(),
            node: PathNode {
                action_type: 300002,
                action_time: 1_600_100_000,
                action_msg: "派送中".into(),
                pickup_courier_name: None,
                pickup_courier_phone: Some(String::new()),
                delivery_courier_name: Some("张三".into()),
                delivery_courier_phone: Some("13800000000".into()),
            },
        }
    }

    fn reply() -> Document {
        serde_json::from_value(json!({
            "ToUserName": WECHAT_TEAM_OPENID, "FromUserName": "gh_x", "CreateTime": 1600152166,
            "MsgType": "event", "Event": "waybill_notify_query", "ResultCode": 0, "ResultMsg": "OK",
            "WaybillCreateTime": 1600000000,
            "Path": [
                {"ActionType": 300002, "ActionTime": 1600100000, "ActionMsg": "派送中", "DeliveryCourierName": "张三", "DeliveryCourierPhone": "13800000000"},
                {"ActionType": 100001, "ActionTime": 1600000000, "ActionMsg": "已揽件"}
            ]
        }))
        .unwrap()
    }

    fn verdict(format: MessageFormat, doc: &Document) -> Result<(), Verdict> {
        let p = push();
        judge(&Expected { original_id: "gh_x", format, push: &p }, doc).map_err(|(v, _)| v)
    }

    #[test]
    fn the_spec_shaped_reply_is_consistent() {
        assert_eq!(verdict(MessageFormat::Json, &reply()), Ok(()));
    }

    #[test]
    fn xml_values_are_text_and_still_compare_as_numbers() {
        let mut d = reply();
        let as_text = |v: &Value| match v {
            Value::Number(n) => Value::String(n.to_string()),
            other => other.clone(),
        };
        for v in d.values_mut() {
            *v = match v {
                Value::Array(items) => Value::Array(items.iter().map(|i| Value::Object(i.as_object().unwrap().iter().map(|(k, v)| (k.clone(), as_text(v))).collect())).collect()),
                other => as_text(other),
            };
        }
        assert_eq!(verdict(MessageFormat::Xml, &d), Ok(()));
        assert_eq!(verdict(MessageFormat::Json, &d), Err(Verdict::Malformed), "JSON numbers must be numbers");
    }

    #[test]
    fn disagreements_are_inconsistent() {
        let edits: Vec<Box<dyn Fn(&mut Document)>> = vec![
            Box::new(|d| d["Path"][0]["ActionMsg"] = json!("派送中 ")),
            Box::new(|d| d["Path"][0]["DeliveryCourierPhone"] = json!("13800000001")),
            Box::new(|d| d["WaybillCreateTime"] = json!(1600000001)),
            Box::new(|d| d["ResultCode"] = json!(1002)),
            Box::new(|d| {
                d.insert("ReceiverPhone".into(), json!("13900000000"));
            }),
            Box::new(|d| d["ToUserName"] = json!("gh_x")),
            Box::new(|d| {
                d["Path"].as_array_mut().unwrap().remove(0);
            }),
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut d = reply();
            edit(&mut d);
            assert_eq!(verdict(MessageFormat::Json, &d), Err(Verdict::Inconsistent), "edit {i}");
        }
    }

    #[test]
    fn missing_or_mistyped_fields_are_malformed() {
        for key in ["ResultCode", "WaybillCreateTime", "Path", "ResultMsg", "CreateTime", "Event"] {
            let mut d = reply();
            d.remove(key);
            assert_eq!(verdict(MessageFormat::Json, &d), Err(Verdict::Malformed), "without {key}");
        }
        let mut d = reply();
        d["Path"][0]["ActionTime"] = json!("1600100000");
        assert_eq!(verdict(MessageFormat::Json, &d), Err(Verdict::Malformed));
    }

    #[test]
    fn the_query_carries_the_spec_fields() {
        let d = request_document("gh_x", 5, &push());
        let keys: Vec<&str> = d.keys().map(String::as_str).collect();
        assert_eq!(keys, ["ToUserName", "FromUserName", "CreateTime", "MsgType", "Event", "WaybillId", "SenderPhone", "ReceiverPhone"]);
    }
}
