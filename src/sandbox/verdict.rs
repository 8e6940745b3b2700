//! The verdict on a reverse-query reply (spec `wechat-express-push.md` §3.6, §4.2, §4.3):
//! how an unopenable reply maps to 932001 or 932003, and whether an opened one is
//! well-formed (else 932003) and agrees with the push (else 932002). Pure.

use serde_json::Value;

use super::exchanges::Verdict;
use super::wire::{PathNode, PathNotify, EVENT, WECHAT_TEAM_OPENID};
use crate::wechat::envelope::{self, Document, MessageFormat, MessageMode, OpenError};

/// Signature, nonce, missing wrapper fields and decryption failures are 932001; a body that
/// is not a document at all is 932003.
pub fn classify_open_error(
    e: &OpenError,
    mode: MessageMode,
    format: MessageFormat,
    body: &[u8],
) -> (Verdict, String) {
    match e {
        OpenError::BadSignature => (
            Verdict::BadSignature,
            "MsgSignature or Nonce of the reply did not verify".into(),
        ),
        OpenError::Crypto(c) => (
            Verdict::Undecryptable,
            format!("reply did not decrypt: {c}"),
        ),
        OpenError::MissingParameter(p) => (Verdict::BadSignature, format!("reply lacks {p}")),
        OpenError::StaleTimestamp => (Verdict::BadSignature, "reply timestamp invalid".into()),
        OpenError::Malformed(m) => {
            // A readable document without the encrypted wrapper, where one is required, is an
            // unsigned reply (932001); unreadable bytes are a malformed one (932003).
            let outer = envelope::parse_document(format, body).ok();
            let needs_wrapper = mode == MessageMode::Secure
                || outer.as_ref().is_some_and(|d| d.contains_key("Encrypt"));
            match outer {
                Some(_) if needs_wrapper && envelope::parse_encrypted_reply(format, body).is_err() => {
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
    int(x.format, doc.get("CreateTime"))
        .ok_or_else(|| malformed("CreateTime must be an integer"))?;
    let result_code = int(x.format, doc.get("ResultCode"))
        .ok_or_else(|| malformed("ResultCode must be an integer"))?;
    let result_msg = string(doc, "ResultMsg")?;
    let create_time = int(x.format, doc.get("WaybillCreateTime"))
        .ok_or_else(|| malformed("WaybillCreateTime must be an integer"))?;
    let path = match (x.format, doc.get("Path")) {
        (_, Some(Value::Array(items))) => Some(items.as_slice()),
        (_, None) => None,
        _ => return Err(malformed("Path must be an array of nodes")),
    };
    let nodes = path
        .unwrap_or_default()
        .iter()
        .map(|v| node(x.format, v))
        .collect::<Result<Vec<_>, _>>()?;
    if result_code != 0 {
        return Err(inconsistent(format!(
            "ResultCode {result_code}: {result_msg}"
        )));
    }
    if path.is_none() {
        return Err(malformed("Path is missing"));
    }
    if to != WECHAT_TEAM_OPENID {
        return Err(inconsistent(
            "ToUserName must echo the query's FromUserName",
        ));
    }
    if from != x.original_id {
        return Err(inconsistent(
            "FromUserName must be the mini program's original id",
        ));
    }
    let push = x.push;
    for (key, want) in [
        ("ReceiverPhone", Some(push.receiver_phone.as_str())),
        ("SenderPhone", push.sender_phone.as_deref()),
    ] {
        if let Some(Value::String(got)) = doc.get(key) {
            if got != want.unwrap_or("") {
                return Err(inconsistent(format!("{key} differs from the push")));
            }
        }
    }
    if create_time != push.create_time {
        return Err(inconsistent(format!(
            "WaybillCreateTime {create_time} differs from create_time {}",
            push.create_time
        )));
    }
    let want = &push.node;
    if nodes.iter().any(|n| same_node(n, want)) {
        return Ok(());
    }
    let near = nodes
        .iter()
        .find(|n| n.action_type == want.action_type && n.action_time == want.action_time);
    Err(inconsistent(match near {
        Some(n) if n.action_msg != want.action_msg => {
            "the pushed node's ActionMsg differs in Path".to_string()
        }
        Some(_) => "the pushed node's courier fields differ in Path".to_string(),
        None => format!(
            "Path has no node with ActionType {} and ActionTime {}",
            want.action_type, want.action_time
        ),
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
        action_type: int(format, o.get("ActionType"))
            .ok_or_else(|| malformed("Path.ActionType must be an integer"))?,
        action_time: int(format, o.get("ActionTime"))
            .ok_or_else(|| malformed("Path.ActionTime must be an integer"))?,
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
    let opt = |x: &Option<String>, y: &Option<String>| {
        x.as_deref().unwrap_or("") == y.as_deref().unwrap_or("")
    };
    a.action_type == b.action_type
        && a.action_time == b.action_time
        && a.action_msg == b.action_msg
        && opt(&a.pickup_courier_name, &b.pickup_courier_name)
        && opt(&a.pickup_courier_phone, &b.pickup_courier_phone)
        && opt(&a.delivery_courier_name, &b.delivery_courier_name)
        && opt(&a.delivery_courier_phone, &b.delivery_courier_phone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        judge(
            &Expected {
                original_id: "gh_x",
                format,
                push: &p,
            },
            doc,
        )
        .map_err(|(v, _)| v)
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
            let new = match &*v {
                Value::Array(items) => Value::Array(
                    items
                        .iter()
                        .map(|i| {
                            Value::Object(
                                i.as_object()
                                    .unwrap()
                                    .iter()
                                    .map(|(k, v)| (k.clone(), as_text(v)))
                                    .collect(),
                            )
                        })
                        .collect(),
                ),
                other => as_text(other),
            };
            *v = new;
        }
        assert_eq!(verdict(MessageFormat::Xml, &d), Ok(()));
        assert_eq!(
            verdict(MessageFormat::Json, &d),
            Err(Verdict::Malformed),
            "JSON numbers must be numbers"
        );
    }

    #[test]
    fn disagreements_are_inconsistent() {
        type Edit = Box<dyn Fn(&mut Document)>;
        let edits: Vec<Edit> = vec![
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
            assert_eq!(
                verdict(MessageFormat::Json, &d),
                Err(Verdict::Inconsistent),
                "edit {i}"
            );
        }
    }

    #[test]
    fn missing_or_mistyped_fields_are_malformed() {
        for key in [
            "ResultCode",
            "WaybillCreateTime",
            "Path",
            "ResultMsg",
            "CreateTime",
            "Event",
        ] {
            let mut d = reply();
            d.remove(key);
            assert_eq!(
                verdict(MessageFormat::Json, &d),
                Err(Verdict::Malformed),
                "without {key}"
            );
        }
        let mut d = reply();
        d["Path"][0]["ActionTime"] = json!("1600100000");
        assert_eq!(verdict(MessageFormat::Json, &d), Err(Verdict::Malformed));
    }
}
