//! `userquery` and `pathnotify` (spec `wechat-express-push.md` §2, §3): strict validation of
//! the request (40097 naming the field), the binding registry for `exist`, and for a bound
//! receiver the synchronous reverse query ([`super::reverse`]) before the node is delivered.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{Map, Value};

use super::api::{errcode as ec, ok_body, Api, WxError};
use super::gate::{answer, check_token, fault, fault_after_reverse_query, json_object};
use super::reverse;
use super::state::Shared;
use super::wire::{PathNode, PathNotify};
use crate::domain::ActionType;

/// How far in the future a `create_time`/`action_time` may lie (clock skew allowance).
pub const FUTURE_SKEW_SECS: i64 = 300;

/// A bare mainland mobile number, the only form `userquery` documents (spec §2.1, open
/// question 9): 11 digits, `1[3-9]…`.
pub fn is_mobile(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 11
        && b[0] == b'1'
        && (b'3'..=b'9').contains(&b[1])
        && b.iter().all(u8::is_ascii_digit)
}

fn invalid(detail: impl Into<String>) -> WxError {
    WxError::with(ec::INVALID_ARGS, detail)
}

/// `POST /cgi-bin/express/delivery/userquery`
pub async fn userquery(
    shared: web::Data<Shared>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let api = Api::Userquery;
    shared.stats.call(api);
    if let Some(r) = fault(&shared, api).await {
        return r;
    }
    let result = check_token(&shared, &req).and_then(|()| {
        let doc = json_object(&body).ok_or_else(|| invalid("the body must be a JSON object"))?;
        let phone = match doc.get("phone") {
            Some(Value::String(p)) if is_mobile(p) => p,
            Some(Value::String(_)) => {
                return Err(invalid("phone must be an 11-digit mainland mobile number"))
            }
            _ => return Err(invalid("phone is required")),
        };
        let exist = i64::from(shared.bindings.contains(phone.as_str()));
        Ok(ok_body([("exist", Value::from(exist))]))
    });
    answer(&shared, api, result)
}

/// `POST /cgi-bin/express/delivery/pathnotify`
pub async fn pathnotify(
    shared: web::Data<Shared>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let api = Api::Pathnotify;
    shared.stats.call(api);
    if let Some(r) = fault(&shared, api).await {
        return r;
    }
    let push = match check_token(&shared, &req).and_then(|()| {
        let doc = json_object(&body).ok_or_else(|| invalid("the body must be a JSON object"))?;
        validate_pathnotify(&doc, shared.clock.now())
    }) {
        Ok(p) => p,
        Err(e) => return answer(&shared, api, Err(e)),
    };
    if !shared.bindings.contains(push.receiver_phone.as_str()) {
        // Nobody to deliver to: nothing to confirm, so no reverse query (SANDBOX.md).
        return answer(&shared, api, Ok(ok_body([("exist", Value::from(0))])));
    }
    // No lock is held here: the callback may call back into anything while we wait.
    let result = match reverse::query(&shared, &push).await {
        Ok(()) => {
            // WeChat checked the node, then failed anyway: nothing is delivered.
            if let Some(r) = fault_after_reverse_query(&shared, api) {
                return r;
            }
            shared.deliver(&push.receiver_phone, push.inbox_node(shared.clock.now()));
            Ok(ok_body([("exist", Value::from(1))]))
        }
        Err(code) => Err(WxError::new(code)),
    };
    answer(&shared, api, result)
}

/// Every rule of spec §3.1-3.3, strict reading (SANDBOX.md lists them).
pub fn validate_pathnotify(doc: &Map<String, Value>, now: i64) -> Result<PathNotify, WxError> {
    let waybill_id = match doc.get("waybill_id") {
        Some(Value::String(w)) if is_waybill_id(w) => w.clone(),
        Some(Value::String(_)) => {
            return Err(invalid(
                "waybill_id must be 1-64 letters, digits, '-' or '_'",
            ))
        }
        _ => return Err(invalid("waybill_id is required")),
    };
    let create_time = unix_time(doc, "create_time", "create_time", now)?;
    let sender = object(doc, "sender")?;
    let receiver = object(doc, "receiver")?;
    let sender_phone = contact(sender, "sender", false)?;
    let receiver_phone = contact(receiver, "receiver", true)?
        .ok_or_else(|| invalid("receiver.phone is required"))?;
    let path = object(doc, "path")?;
    let action_type = integer(path, "action_type", "path.action_type")?;
    if ActionType::parse(action_type).is_none() {
        return Err(invalid(format!(
            "path.action_type {action_type} is not in the action_type table"
        )));
    }
    let action_time = unix_time(path, "action_time", "path.action_time", now)?;
    let action_msg = match path.get("action_msg") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
        Some(Value::String(_)) => return Err(invalid("path.action_msg is empty")),
        _ => return Err(invalid("path.action_msg is required")),
    };
    let courier = |k: &str| opt_string(path, k, &format!("path.{k}"));
    let node = PathNode {
        action_type,
        action_time,
        action_msg,
        pickup_courier_name: courier("pickup_courier_name")?,
        pickup_courier_phone: courier("pickup_courier_phone")?,
        delivery_courier_name: courier("delivery_courier_name")?,
        delivery_courier_phone: courier("delivery_courier_phone")?,
    };
    Ok(PathNotify {
        waybill_id,
        create_time,
        sender_phone,
        receiver_phone,
        node,
    })
}

fn is_waybill_id(w: &str) -> bool {
    (1..=64).contains(&w.len())
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn object<'d>(doc: &'d Map<String, Value>, key: &str) -> Result<&'d Map<String, Value>, WxError> {
    match doc.get(key) {
        Some(Value::Object(o)) => Ok(o),
        Some(_) => Err(invalid(format!("{key} must be an object"))),
        None => Err(invalid(format!("{key} is required"))),
    }
}

fn integer(doc: &Map<String, Value>, key: &str, field: &str) -> Result<i64, WxError> {
    match doc.get(key) {
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| invalid(format!("{field} must be an integer"))),
        Some(_) => Err(invalid(format!("{field} must be a number"))),
        None => Err(invalid(format!("{field} is required"))),
    }
}

/// Unix seconds: positive and not more than the skew allowance ahead of the sandbox clock
/// (which also refuses milliseconds).
fn unix_time(doc: &Map<String, Value>, key: &str, field: &str, now: i64) -> Result<i64, WxError> {
    let t = integer(doc, key, field)?;
    if t <= 0 {
        return Err(invalid(format!(
            "{field} must be a positive Unix time in seconds"
        )));
    }
    if t > now + FUTURE_SKEW_SECS {
        return Err(invalid(format!(
            "{field} is in the future (Unix seconds expected)"
        )));
    }
    Ok(t)
}

/// Absent, null and strings are fine; anything else is a type error.
fn opt_string(doc: &Map<String, Value>, key: &str, field: &str) -> Result<Option<String>, WxError> {
    match doc.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(format!("{field} must be a string"))),
    }
}

fn required_text(doc: &Map<String, Value>, key: &str, field: &str) -> Result<String, WxError> {
    match opt_string(doc, key, field)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(invalid(format!("{field} is required"))),
    }
}

/// Contact (§3.2): province, city and area always; name and phone for the receiver, optional
/// for the sender (the spec's safe rule). Returns the phone.
fn contact(
    c: &Map<String, Value>,
    who: &str,
    is_receiver: bool,
) -> Result<Option<String>, WxError> {
    let f = |k: &str| format!("{who}.{k}");
    if is_receiver {
        required_text(c, "name", &f("name"))?;
    } else {
        opt_string(c, "name", &f("name"))?;
    }
    for k in ["province", "city", "area"] {
        required_text(c, k, &f(k))?;
    }
    for k in ["street", "address", "id"] {
        opt_string(c, k, &f(k))?;
    }
    let phone = opt_string(c, "phone", &f("phone"))?.filter(|p| !p.is_empty());
    match phone {
        Some(p) if is_receiver && !is_mobile(&p) => Err(invalid(format!(
            "{} must be an 11-digit mainland mobile number",
            f("phone")
        ))),
        Some(p) if !is_receiver && !is_phone_like(&p) => {
            Err(invalid(format!("{} is not a phone number", f("phone"))))
        }
        other => Ok(other),
    }
}

/// Digits with optional `+`, `-` and spaces; a sender's phone may be a landline.
fn is_phone_like(p: &str) -> bool {
    p.len() <= 32
        && p.bytes().any(|b| b.is_ascii_digit())
        && p.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b' '))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000;

    fn body() -> Value {
        json!({
            "sender": {"name":"张三","phone":"13800138001","province":"浙江省","city":"绍兴市","area":"柯桥区","address":"纺都路137号"},
            "receiver": {"name":"李四","phone":"13800138000","province":"福建省","city":"泉州市","area":"晋江市"},
            "waybill_id": "1234567890",
            "create_time": NOW - 1000,
            "path": {"action_time": NOW - 10, "action_type": 200001, "action_msg": "快件到达 【泉州磁灶集散中心】", "pickup_courier_name": ""}
        })
    }

    fn check(v: Value) -> Result<PathNotify, String> {
        validate_pathnotify(v.as_object().unwrap(), NOW).map_err(|e| e.detail.unwrap_or_default())
    }

    #[test]
    fn the_recommended_body_passes() {
        let p = check(body()).unwrap();
        assert_eq!(p.receiver_phone, "13800138000");
        assert_eq!(p.node.pickup_courier_name.as_deref(), Some(""));
    }

    #[test]
    fn every_required_field_is_named_when_missing_or_mistyped() {
        let cases: &[(&str, Value, &str)] = &[
            ("/create_time", Value::Null, "create_time is required"),
            (
                "/create_time",
                json!("1700000000"),
                "create_time must be a number",
            ),
            (
                "/create_time",
                json!(NOW * 1000),
                "create_time is in the future",
            ),
            ("/waybill_id", json!(""), "waybill_id must be"),
            (
                "/path/action_type",
                json!(300001),
                "not in the action_type table",
            ),
            ("/path/action_msg", json!(""), "path.action_msg is empty"),
            (
                "/path/delivery_courier_phone",
                json!(13800000000u64),
                "path.delivery_courier_phone must be a string",
            ),
            (
                "/receiver/phone",
                json!("+8613800138000"),
                "receiver.phone must be an 11-digit",
            ),
            ("/receiver/name", Value::Null, "receiver.name is required"),
            ("/sender/area", json!(" "), "sender.area is required"),
            (
                "/sender/phone",
                json!("call me"),
                "sender.phone is not a phone number",
            ),
        ];
        for (ptr, val, want) in cases {
            let mut b = body();
            let (parent, key) = ptr.rsplit_once('/').unwrap();
            let obj = if parent.is_empty() {
                b.as_object_mut().unwrap()
            } else {
                b.pointer_mut(parent).unwrap().as_object_mut().unwrap()
            };
            if val.is_null() {
                obj.remove(key);
            } else {
                obj.insert(key.to_string(), val.clone());
            }
            let err = check(b).unwrap_err();
            assert!(err.contains(want), "{ptr}: got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn a_sender_without_name_or_phone_is_accepted() {
        let mut b = body();
        let s = b["sender"].as_object_mut().unwrap();
        s.remove("name");
        s.remove("phone");
        assert_eq!(check(b).unwrap().sender_phone, None);
    }
}
