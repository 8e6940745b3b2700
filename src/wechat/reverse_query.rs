//! The `waybill_notify_query` reverse query (spec §4): parse WeChat's question, and build our
//! answer from what the store holds. Pure: the caller looks the waybill up.
//!
//! The answer must contain, byte for byte, every node a `pathnotify` sent (WeChat compares),
//! so node fields are rendered from the same [`NodeText`] the push uses, and optional courier
//! fields are present exactly when a push would send them.

use serde_json::{json, Value};

use super::envelope::{get_i64, get_str, Document};
use crate::domain::NodeText;

/// Event name, compared case-insensitively (spec §4.1).
pub const EVENT: &str = "waybill_notify_query";

/// Our `ResultCode`s. 0 is success; the others are ours to define (spec §4.3).
pub mod result_code {
    pub const OK: i64 = 0;
    pub const UNKNOWN_WAYBILL: i64 = 1001;
    pub const PHONE_MISMATCH: i64 = 1002;
    pub const BAD_REQUEST: i64 = 1003;
}

/// What WeChat asks.
#[derive(Clone, PartialEq, Eq)]
pub struct Query {
    pub to_user_name: String,
    pub from_user_name: String,
    pub create_time: i64,
    pub waybill_id: String,
    pub sender_phone: Option<String>,
    pub receiver_phone: Option<String>,
}

impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Query")
            .field("waybill_id", &self.waybill_id)
            .field("create_time", &self.create_time)
            .field(
                "receiver_phone",
                &self
                    .receiver_phone
                    .as_deref()
                    .map(crate::domain::mask_phones_in_text),
            )
            .finish_non_exhaustive()
    }
}

impl Query {
    /// `None` when a field WeChat always sends is missing.
    pub fn from_document(doc: &Document) -> Option<Query> {
        let nonempty = |k: &str| {
            get_str(doc, k)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Some(Query {
            to_user_name: get_str(doc, "ToUserName").unwrap_or_default().to_string(),
            from_user_name: get_str(doc, "FromUserName").unwrap_or_default().to_string(),
            create_time: get_i64(doc, "CreateTime").unwrap_or(0),
            waybill_id: nonempty("WaybillId")?,
            sender_phone: nonempty("SenderPhone"),
            receiver_phone: nonempty("ReceiverPhone"),
        })
    }
}

/// One stored path node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathNode {
    pub action_type: i64,
    pub action_time: i64,
    pub text: NodeText,
}

/// What the store said about the waybill.
#[derive(Debug, Clone)]
pub enum Lookup {
    UnknownWaybill,
    PhoneMismatch,
    BadRequest,
    /// `path` newest first.
    Found {
        create_time: i64,
        path: Vec<PathNode>,
    },
}

/// Build the reply document (before sealing).
pub fn build_reply(query: &Query, our_original_id: &str, now: i64, lookup: &Lookup) -> Document {
    let (code, msg, create_time, path): (i64, &str, i64, &[PathNode]) = match lookup {
        Lookup::UnknownWaybill => (result_code::UNKNOWN_WAYBILL, "waybill not found", 0, &[]),
        Lookup::PhoneMismatch => (
            result_code::PHONE_MISMATCH,
            "phone does not match the waybill",
            0,
            &[],
        ),
        Lookup::BadRequest => (
            result_code::BAD_REQUEST,
            "WaybillId and ReceiverPhone are required",
            0,
            &[],
        ),
        Lookup::Found { create_time, path } => {
            (result_code::OK, "OK", *create_time, path.as_slice())
        }
    };
    let mut doc = Document::new();
    doc.insert("ToUserName".into(), json!(query.from_user_name));
    doc.insert("FromUserName".into(), json!(our_original_id));
    doc.insert("CreateTime".into(), json!(now));
    doc.insert("MsgType".into(), json!("event"));
    doc.insert("Event".into(), json!(EVENT));
    doc.insert("ResultCode".into(), json!(code));
    doc.insert("ResultMsg".into(), json!(msg));
    doc.insert("WaybillCreateTime".into(), json!(create_time));
    if code == result_code::OK {
        doc.insert(
            "Path".into(),
            Value::Array(path.iter().map(node_value).collect()),
        );
    }
    doc
}

fn node_value(n: &PathNode) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("ActionType".into(), json!(n.action_type));
    m.insert("ActionTime".into(), json!(n.action_time));
    m.insert("ActionMsg".into(), json!(n.text.action_msg));
    let opt = [
        ("PickupCourierName", &n.text.pickup_courier_name),
        ("PickupCourierPhone", &n.text.pickup_courier_phone),
        ("DeliveryCourierName", &n.text.delivery_courier_name),
        ("DeliveryCourierPhone", &n.text.delivery_courier_phone),
    ];
    for (k, v) in opt {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> Query {
        let doc: Document = serde_json::from_str(
            r#"{"ToUserName":"gh_ea48699fb159","FromUserName":"oHt_80DRclK4qjKfdYnPg6RxxsNI","CreateTime":1600152165,"MsgType":"event","Event":"waybill_notify_query","WaybillId":"557007127498128","SenderPhone":"13763357711","ReceiverPhone":"13763357711"}"#,
        )
        .unwrap();
        Query::from_document(&doc).unwrap()
    }

    #[test]
    fn found_waybill_lists_every_node_and_swaps_the_user_names() {
        let path = vec![
            PathNode {
                action_type: 300002,
                action_time: 1600100000,
                text: NodeText {
                    action_msg: "派送中".into(),
                    delivery_courier_name: Some("张三".into()),
                    delivery_courier_phone: Some("13800000000".into()),
                    ..Default::default()
                },
            },
            PathNode {
                action_type: 100001,
                action_time: 1600000000,
                text: NodeText {
                    action_msg: "已揽件".into(),
                    ..Default::default()
                },
            },
        ];
        let doc = build_reply(
            &query(),
            "gh_ea48699fb159",
            1600152166,
            &Lookup::Found {
                create_time: 1600000000,
                path,
            },
        );
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"ToUserName":"oHt_80DRclK4qjKfdYnPg6RxxsNI","FromUserName":"gh_ea48699fb159","CreateTime":1600152166,"MsgType":"event","Event":"waybill_notify_query","ResultCode":0,"ResultMsg":"OK","WaybillCreateTime":1600000000,"Path":[{"ActionType":300002,"ActionTime":1600100000,"ActionMsg":"派送中","DeliveryCourierName":"张三","DeliveryCourierPhone":"13800000000"},{"ActionType":100001,"ActionTime":1600000000,"ActionMsg":"已揽件"}]}"#
        );
    }

    #[test]
    fn unknown_waybill_gets_no_path() {
        let doc = build_reply(&query(), "gh_x", 1, &Lookup::UnknownWaybill);
        assert_eq!(doc["ResultCode"], 1001);
        assert!(!doc.contains_key("Path"));
        assert_eq!(doc["WaybillCreateTime"], 0);
    }
}
