//! The backoffice API: validation, auth, limits, idempotency, read-back with masked phones.

use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn a_waybill_is_created_then_updated() {
    let app = spawn_app().await;
    let r = app.put_waybill("SF1001", &waybill_body()).await;
    assert_eq!(r.status(), 201);
    let r = app.put_waybill("SF1001", &waybill_body()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["created"], false);
}

#[tokio::test]
async fn events_are_stored_once_and_read_back_with_masked_phones() {
    let app = spawn_app().await;
    app.put_waybill("SF1002", &waybill_body()).await;
    let ev = json!({ "action_type": 300002, "action_time": 1_700_100_000, "action_msg": "派送中，派件员张三 13800000000", "delivery_courier_name": "张三", "delivery_courier_phone": "13800000000" });
    let r = app.post_event("SF1002", &ev).await;
    assert_eq!(r.status(), 202);
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["duplicate"], false);
    let r = app.post_event("SF1002", &ev).await;
    assert_eq!(r.status(), 200);
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["event_id"], first["event_id"]);
    app.post_event("SF1002", &event_body(100001, 1_700_000_100, "已揽件"))
        .await;

    let r = app.get_waybill("SF1002").await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("13800138000") && !text.contains("13800000000"),
        "a phone leaked: {text}"
    );
    let w: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(w["receiver"]["phone"], "138****8000");
    assert_eq!(w["sender"]["phone"], "138****8001");
    let path = w["path"].as_array().unwrap();
    assert_eq!(path.len(), 2);
    assert_eq!(path[0]["action_type"], 300002, "newest first");
    assert_eq!(path[0]["action_msg"], "派送中，派件员张三 138****0000");
    assert_eq!(path[0]["delivery_courier_phone"], "138****0000");
}

#[tokio::test]
async fn requests_without_a_valid_key_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    for auth in [
        None,
        Some("Bearer wrong-key-0000000000"),
        Some("Basic dXNlcjpwYXNz"),
        Some(&format!("Bearer {API_KEY}x") as &str),
    ] {
        let mut req = app
            .client
            .put(app.url("/v1/waybills/SF1003"))
            .json(&waybill_body());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
    }
    let r = app
        .client
        .get(app.url("/v1/waybills/SF1003"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(app.store.count_waybills().await.unwrap(), 0);
}

#[tokio::test]
async fn invalid_fields_are_each_named_and_nothing_is_stored() {
    let app = spawn_app().await;
    let mut body = waybill_body();
    body["receiver"]["phone"] = json!("12345");
    body["sender"]["province"] = json!("");
    body["create_time"] = json!(17);
    body["receiver"]["address"] = json!("x".repeat(300));
    let r = app.put_waybill("SF1004", &body).await;
    assert_eq!(r.status(), 422);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().await.unwrap();
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for f in [
        "receiver.phone",
        "sender.province",
        "create_time",
        "receiver.address",
    ] {
        assert!(fields.contains(&f), "{f} not named in {p}");
    }
    assert_eq!(p["status"], 422);
    assert_eq!(app.store.count_waybills().await.unwrap(), 0);

    app.put_waybill("SF1004", &waybill_body()).await;
    let r = app
        .post_event(
            "SF1004",
            &json!({ "action_type": 300000, "action_time": 1_700_000_000, "action_msg": "" }),
        )
        .await;
    assert_eq!(r.status(), 422);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["errors"].as_array().unwrap().len(), 2, "{p}");
    let r = app.post_event("SF1004", &json!({ "action_type": 100001, "action_time": 4_000_000_000i64, "action_msg": "已揽件" })).await;
    assert_eq!(r.status(), 422, "a time far in the future is implausible");
    assert_eq!(app.store.count_events().await.unwrap(), 0);
}

#[tokio::test]
async fn malformed_oversized_and_mistyped_bodies_are_refused() {
    let app = spawn_app().await;
    let url = app.url("/v1/waybills/SF1005");
    let send = |body: Vec<u8>, ct: &'static str| {
        app.client
            .put(&url)
            .bearer_auth(API_KEY)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    assert_eq!(
        send(b"{not json".to_vec(), "application/json")
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        send(
            br#"{"create_time":1700000000,"surprise":1}"#.to_vec(),
            "application/json"
        )
        .await
        .unwrap()
        .status(),
        400
    );
    assert_eq!(
        send(serde_json::to_vec(&waybill_body()).unwrap(), "text/plain")
            .await
            .unwrap()
            .status(),
        415
    );
    let mut big = waybill_body();
    big["sender"]["address"] = json!("x".repeat(100_000));
    assert_eq!(
        send(serde_json::to_vec(&big).unwrap(), "application/json")
            .await
            .unwrap()
            .status(),
        413
    );
    let r = app.put_waybill(&"9".repeat(65), &waybill_body()).await;
    assert_eq!(r.status(), 422);
    let r = app.put_waybill("SF%20bad", &waybill_body()).await;
    assert_eq!(r.status(), 422);
    assert_eq!(app.store.count_waybills().await.unwrap(), 0);
}

#[tokio::test]
async fn an_event_for_an_unknown_waybill_is_404_and_stores_nothing() {
    let app = spawn_app().await;
    let r = app
        .post_event("NOPE1", &event_body(100001, 1_700_000_000, "已揽件"))
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(app.store.count_events().await.unwrap(), 0);
}

#[tokio::test]
async fn a_batch_stores_good_lines_and_reports_bad_ones_by_number() {
    let app = spawn_app().await;
    let line = |v: Value| serde_json::to_string(&v).unwrap();
    let lines = [
        line(
            json!({ "waybill_id": "B1", "waybill": waybill_body(), "event": event_body(100001, 1_700_000_100, "已揽件") }),
        ),
        line(
            json!({ "waybill_id": "B1", "event": event_body(200001, 1_700_000_200, "到达【杭州转运中心】") }),
        ),
        "{broken".to_string(),
        line(json!({ "waybill_id": "B2", "event": event_body(100001, 1_700_000_100, "已揽件") })),
        String::new(),
        line(json!({ "waybill_id": "B1", "event": event_body(100001, 1_700_000_100, "已揽件") })),
        line(
            json!({ "waybill_id": "B3", "waybill": { "create_time": 1_700_000_000 }, "event": event_body(999, 1_700_000_100, "x") }),
        ),
    ];
    let r = app.post_batch(lines.join("\n")).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["accepted"], 2, "{v}");
    assert_eq!(v["duplicates"], 1, "{v}");
    assert_eq!(v["rejected"], 3, "{v}");
    let bad: Vec<u64> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(bad, vec![3, 4, 7]);
    assert_eq!(app.store.count_events().await.unwrap(), 2);
    assert_eq!(
        app.store.count_waybills().await.unwrap(),
        1,
        "the invalid B3 waybill was not stored"
    );
}

#[tokio::test]
async fn a_batch_needs_ndjson_a_key_and_a_bounded_size() {
    let app = spawn_app_with(&[("WXEXPRESS_SERVER__BATCH_LIMIT_BYTES", "2048")]).await;
    let r = app
        .client
        .post(app.url("/v1/events/batch"))
        .header("content-type", "application/x-ndjson")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .client
        .post(app.url("/v1/events/batch"))
        .bearer_auth(API_KEY)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = app.post_batch("x".repeat(3000)).await;
    assert_eq!(r.status(), 413);
    let r = app.post_batch("\n\n".into()).await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ready: Value = r.json().await.unwrap();
    assert_eq!(ready["sandbox"], false, "real credentials: {ready}");
    let sandboxed = spawn_sandboxed_app(&[]).await;
    let r = sandboxed.client.get(sandboxed.url("/readyz")).send().await;
    let ready: Value = r.unwrap().json().await.unwrap();
    assert_eq!(ready["sandbox"], true, "{ready}");
}

#[tokio::test]
async fn a_stopped_writer_makes_the_node_not_ready_with_a_stable_reason() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    app.put_waybill("SF1011", &waybill_body()).await;
    app.store.stop_writer().await;
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let ready: Value = r.json().await.unwrap();
    assert_eq!(ready["status"], "not ready", "{ready}");
    assert_eq!(ready["database"], "writer_stopped", "{ready}");
    // And it is true: an event is refused, not accepted into nowhere.
    let ev = json!({ "action_type": 100001, "action_time": 1_700_100_000, "action_msg": "揽收" });
    let r = app.post_event("SF1011", &ev).await;
    assert!(r.status().is_server_error(), "{}", r.status());
}

#[tokio::test]
async fn phones_written_in_groups_or_full_width_are_masked_in_every_read() {
    let app = spawn_app().await;
    app.put_waybill("SF1010", &waybill_body()).await;
    let msg = "派件员 138 0013 8000，备用 139-0013-9000，网点 １３９００１３９００１";
    let ev = json!({ "action_type": 300002, "action_time": 1_700_100_000, "action_msg": msg });
    assert_eq!(app.post_event("SF1010", &ev).await.status(), 202);
    let text = app.get_waybill("SF1010").await.text().await.unwrap();
    for clear in ["0013 8000", "0013-9000", "００１３９"] {
        assert!(!text.contains(clear), "{clear} leaked: {text}");
    }
    let w: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        w["path"][0]["action_msg"],
        "派件员 138 **** 8000，备用 139-****-9000，网点 １３９****９００１"
    );
}

#[tokio::test]
async fn a_phone_sent_as_a_json_number_is_not_echoed_in_the_problem() {
    let app = spawn_app().await;
    let mut body = waybill_body();
    body["receiver"]["phone"] = json!(13800138000_u64);
    let r = app.put_waybill("SF1011", &body).await;
    assert!(r.status().is_client_error());
    let text = r.text().await.unwrap();
    assert!(!text.contains("13800138000"), "{text}");
    // The same in an NDJSON line's own error.
    let line = json!({ "waybill_id": "SF1011", "waybill": body, "event": { "action_type": 100001, "action_time": 1_700_000_100, "action_msg": "已揽件" } });
    let r = app.post_batch(line.to_string()).await;
    let text = r.text().await.unwrap();
    assert!(!text.contains("13800138000"), "{text}");
    assert_eq!(
        app.get_waybill("SF1011").await.status(),
        404,
        "nothing stored"
    );
}

#[tokio::test]
async fn a_batch_the_database_stops_part_way_is_a_503_naming_the_last_stored_line() {
    let app = spawn_app().await;
    for id in ["SFOK", "SFBOOM"] {
        assert_eq!(app.put_waybill(id, &waybill_body()).await.status(), 201);
    }
    // SQLite ends the whole transaction at any event of SFBOOM (a trigger), as a full disk
    // would: the batch's first chunk (250 lines) is stored, the second is not.
    sqlx::query(
        "CREATE TRIGGER end_at_sfboom BEFORE INSERT ON events \
         WHEN NEW.waybill_id = 'SFBOOM' BEGIN SELECT RAISE(ROLLBACK, 'ended'); END",
    )
    .execute(app.store.pool())
    .await
    .unwrap();
    let line = |id: &str, t: i64| {
        json!({ "waybill_id": id, "event": event_body(200001, 1_700_000_000 + t, "到达") })
            .to_string()
    };
    let mut lines: Vec<String> = (0..300).map(|t| line("SFOK", t)).collect();
    lines[260] = line("SFBOOM", 5);
    let r = app.post_batch(lines.join("\n") + "\n").await;
    assert_eq!(r.status(), 503);
    let problem: Value = r.json().await.unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("batch-interrupted"),
        "{problem}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("lines 1 to 250 were stored"),
        "{problem}"
    );
    assert_eq!(app.store.list_events("SFOK").await.unwrap().len(), 250);

    // The writer recovers: sending the batch again without the line that ends it stores the
    // rest, the first 250 lines coming back as duplicates.
    lines.remove(260);
    let r = app.post_batch(lines.join("\n") + "\n").await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.store.list_events("SFOK").await.unwrap().len(), 299);
}

#[tokio::test]
async fn objects_must_be_objects_and_an_integral_number_may_carry_a_fraction() {
    let app = spawn_app().await;
    // serde would read an array as a struct's fields in order; the API does not.
    let mut positional = waybill_body();
    positional["sender"] = json!([
        "张三",
        "13800138001",
        "浙江省",
        "绍兴市",
        "柯桥区",
        null,
        "x"
    ]);
    for body in [json!([1_700_000_000, null, null]), positional] {
        let r = app.put_waybill("SF1010", &body).await;
        assert_eq!(r.status(), 400, "{body}");
        let p: Value = r.json().await.unwrap();
        assert!(
            p["detail"].as_str().unwrap().contains("a JSON object"),
            "{p}"
        );
    }
    assert_eq!(
        app.get_waybill("SF1010").await.status(),
        404,
        "nothing stored"
    );
    // JSON Schema's integer: 1700000000.0 is 1700000000; 1.5 is not an integer.
    let mut fractional = waybill_body();
    fractional["create_time"] = json!(1_700_000_000.0);
    assert_eq!(app.put_waybill("SF1010", &fractional).await.status(), 201);
    let ev =
        json!({ "action_type": 100001.0, "action_time": 1_700_000_100.0, "action_msg": "已揽件" });
    assert_eq!(app.post_event("SF1010", &ev).await.status(), 202);
    let half = json!({ "action_type": 100001, "action_time": 1.5, "action_msg": "已揽件" });
    assert_eq!(app.post_event("SF1010", &half).await.status(), 400);
    let w: Value = app.get_waybill("SF1010").await.json().await.unwrap();
    assert_eq!(w["create_time"], 1_700_000_000);
    assert_eq!(w["path"][0]["action_time"], 1_700_000_100);
    // A batch line that is not an object is refused on its own.
    let lines = format!(
        "{}\n[\"SF1010\"]\n",
        json!({ "waybill_id": "SF1010", "event": event_body(200001, 1_700_000_200, "运输中") })
    );
    let b: Value = app.post_batch(lines).await.json().await.unwrap();
    assert_eq!(
        (b["accepted"].clone(), b["rejected"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(b["errors"][0]["line"], 2);
}
