//! The committed JSON Schemas (`schemas/`) against the code: they are the ones generated from
//! the API's own types (`WXEXPRESS_UPDATE_SCHEMAS=1 cargo test --test schemas` rewrites
//! them); every property a schema allows is accepted by the API's input types (which refuse
//! unknown fields), every required one is required by the domain, and the `action_type` enum
//! is WeChat's table.

use serde_json::{json, Value};
use wxexpress::domain::action::{ACTION_TYPES, ACTION_TYPE_ALIASES};
use wxexpress::domain::{EventInput, TrackingEvent, Waybill, WaybillId, WaybillInput};

fn schema(name: &str) -> Value {
    let path = format!("{}/schemas/{name}.schema.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("schema file"))
        .expect("schema is JSON")
}

#[test]
fn the_committed_schemas_are_the_generated_ones() {
    let dir = format!("{}/schemas", env!("CARGO_MANIFEST_DIR"));
    let generated = wxexpress::http::openapi::json_schemas();
    let update = std::env::var_os("WXEXPRESS_UPDATE_SCHEMAS").is_some();
    let mut stale = Vec::new();
    for (name, doc) in &generated {
        let path = format!("{dir}/{name}");
        let text = serde_json::to_string_pretty(doc).unwrap() + "\n";
        if update {
            std::fs::write(&path, &text).expect("write a schema");
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(name.clone());
        }
    }
    assert!(
        stale.is_empty(),
        "schemas/ differs from the code's types for {stale:?}: run \
         `WXEXPRESS_UPDATE_SCHEMAS=1 cargo test --test schemas` and commit the result"
    );
    let mut committed: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    committed.sort();
    let mut names: Vec<String> = generated.into_iter().map(|(n, _)| n).collect();
    names.sort();
    assert_eq!(committed, names, "every file of schemas/ is generated");
}

fn properties(s: &Value) -> Vec<String> {
    s["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .cloned()
        .collect()
}

fn required(s: &Value) -> Vec<String> {
    s["required"]
        .as_array()
        .expect("required")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

const NOW: i64 = 1_800_000_000;

fn event_doc() -> Value {
    json!({ "action_type": 300002, "action_time": 1_700_000_000, "action_msg": "派送中", "pickup_courier_name": "王五", "pickup_courier_phone": "13900000000", "delivery_courier_name": "张三", "delivery_courier_phone": "13800000000", "ref": "sms-job-42" })
}

fn waybill_doc() -> Value {
    json!({
        "create_time": 1_700_000_000,
        "sender": { "name": "张三", "phone": "13800138001", "province": "浙江省", "city": "绍兴市", "area": "柯桥区", "street": "柯桥街道", "address": "纺都路137号" },
        "receiver": { "name": "李四", "phone": "13800138000", "province": "福建省", "city": "泉州市", "area": "晋江市", "street": "x", "address": "庄宅北区158-6" },
        "openids": { "sender": "oSender", "receiver": "oReceiver" },
        "payment": { "out_trade_no": "T123", "total_fee": 1990 }
    })
}

#[test]
fn the_event_schema_matches_the_event_input() {
    let s = schema("event");
    let doc = event_doc();
    assert_eq!(
        properties(&s).len(),
        doc.as_object().unwrap().len(),
        "the sample uses every schema property"
    );
    for p in properties(&s) {
        assert!(doc.get(&p).is_some(), "{p} missing from the sample");
    }
    let input: EventInput =
        serde_json::from_value(doc.clone()).expect("every schema property is accepted");
    TrackingEvent::parse(&input, NOW, "").expect("the full sample is valid");
    for r in required(&s) {
        let mut d = doc.clone();
        d.as_object_mut().unwrap().remove(&r);
        let input: EventInput = serde_json::from_value(d).unwrap();
        let errors =
            TrackingEvent::parse(&input, NOW, "").expect_err("a required field is missing");
        assert!(
            errors.iter().any(|e| e.field == r),
            "{r} is required by the schema but not named by the domain"
        );
    }
    let mut extra = doc;
    extra["surprise"] = json!(1);
    assert!(
        serde_json::from_value::<EventInput>(extra).is_err(),
        "additionalProperties: false"
    );
}

#[test]
fn the_action_type_enum_is_wechats_table_and_its_aliases() {
    let s = schema("event");
    let enumerated: Vec<i64> = s["properties"]["action_type"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let mut accepted: Vec<i64> = ACTION_TYPES.iter().map(|(c, _, _)| *c).collect();
    accepted.extend(ACTION_TYPE_ALIASES.iter().map(|(alias, _)| *alias));
    accepted.sort();
    assert_eq!(enumerated, accepted);
}

#[test]
fn the_waybill_schema_matches_the_waybill_input() {
    let s = schema("waybill");
    let doc = waybill_doc();
    for p in properties(&s) {
        assert!(doc.get(&p).is_some(), "{p} missing from the sample");
    }
    let sender = &s["$defs"]["ContactInput"];
    let receiver = &s["properties"]["receiver"];
    for (def, side) in [(sender, "sender"), (receiver, "receiver")] {
        for p in properties(def) {
            assert!(
                doc[side].get(&p).is_some(),
                "{side}.{p} missing from the sample"
            );
        }
    }
    let input: WaybillInput =
        serde_json::from_value(doc.clone()).expect("every schema property is accepted");
    let id = WaybillId::parse("SF1").unwrap();
    Waybill::parse(id.clone(), &input, NOW, "").expect("the full sample is valid");
    for (path, field) in [
        (vec!["create_time"], "create_time"),
        (vec!["receiver", "phone"], "receiver.phone"),
        (vec!["receiver", "name"], "receiver.name"),
        (vec!["sender", "province"], "sender.province"),
    ] {
        let mut d = doc.clone();
        let mut node = &mut d;
        for p in &path[..path.len() - 1] {
            node = &mut node[*p];
        }
        node.as_object_mut().unwrap().remove(*path.last().unwrap());
        let input: WaybillInput = serde_json::from_value(d).unwrap();
        let errors = Waybill::parse(id.clone(), &input, NOW, "").expect_err("required");
        assert!(errors.iter().any(|e| e.field == field), "{field} not named");
    }
    assert_eq!(
        required(receiver),
        ["name", "phone", "province", "city", "area"]
    );
    assert_eq!(required(sender), ["province", "city", "area"]);
}

#[test]
fn the_batch_line_schema_names_the_line_fields() {
    let s = schema("batch-line");
    assert_eq!(properties(&s), ["waybill_id", "waybill", "event"]);
    assert_eq!(required(&s), ["waybill_id", "event"]);
    let p = schema("problem");
    assert_eq!(required(&p), ["type", "title", "status", "detail"]);
}
