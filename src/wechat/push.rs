//! The `pathnotify` request body (spec §3), built from the same stored node text that the
//! reverse-query reply renders, so both channels carry identical bytes. Pure.

use serde_json::{json, Map, Value};

use crate::domain::{Contact, Contacts, NodeText};

/// Receiver name and phone, province, city, area always; sender name/phone when known;
/// optional fields omitted rather than sent empty (spec §3.2 safe rule, §3.5).
pub fn pathnotify_body(
    waybill_id: &str,
    create_time: i64,
    contacts: &Contacts,
    action_type: i64,
    action_time: i64,
    text: &NodeText,
) -> Value {
    let mut path = Map::new();
    path.insert("action_time".into(), json!(action_time));
    path.insert("action_type".into(), json!(action_type));
    path.insert("action_msg".into(), json!(text.action_msg));
    for (k, v) in [
        ("pickup_courier_name", &text.pickup_courier_name),
        ("pickup_courier_phone", &text.pickup_courier_phone),
        ("delivery_courier_name", &text.delivery_courier_name),
        ("delivery_courier_phone", &text.delivery_courier_phone),
    ] {
        if let Some(v) = v {
            path.insert(k.into(), json!(v));
        }
    }
    json!({
        "sender": contact(&contacts.sender),
        "receiver": contact(&contacts.receiver),
        "waybill_id": waybill_id,
        "create_time": create_time,
        "path": Value::Object(path),
    })
}

fn contact(c: &Contact) -> Value {
    let mut m = Map::new();
    for (k, v) in [("name", &c.name), ("phone", &c.phone)] {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    }
    m.insert("province".into(), json!(c.province));
    m.insert("city".into(), json!(c.city));
    m.insert("area".into(), json!(c.area));
    for (k, v) in [("street", &c.street), ("address", &c.address)] {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_matches_the_spec_recommendation() {
        let c = |name: &str, phone: &str, p: &str, city: &str, a: &str, addr: &str| Contact {
            name: Some(name.into()),
            phone: Some(phone.into()),
            province: p.into(),
            city: city.into(),
            area: a.into(),
            street: None,
            address: Some(addr.into()),
        };
        let contacts = Contacts {
            sender: c(
                "张三",
                "13800138001",
                "浙江省",
                "绍兴市",
                "柯桥区",
                "纺都路137号",
            ),
            receiver: c(
                "李四",
                "13800138000",
                "福建省",
                "泉州市",
                "晋江市",
                "庄宅北区158-6",
            ),
        };
        let body = pathnotify_body(
            "1234567890",
            1597300000,
            &contacts,
            200001,
            1597396101,
            &NodeText {
                action_msg: "快件到达 【泉州磁灶集散中心】".into(),
                ..Default::default()
            },
        );
        let expected: Value = serde_json::from_str(r#"{
          "sender":   { "name": "张三", "phone": "13800138001", "province": "浙江省", "city": "绍兴市", "area": "柯桥区", "address": "纺都路137号" },
          "receiver": { "name": "李四", "phone": "13800138000", "province": "福建省", "city": "泉州市", "area": "晋江市", "address": "庄宅北区158-6" },
          "waybill_id": "1234567890",
          "create_time": 1597300000,
          "path": { "action_time": 1597396101, "action_type": 200001, "action_msg": "快件到达 【泉州磁灶集散中心】" }
        }"#).unwrap();
        assert_eq!(body, expected);
    }
}
