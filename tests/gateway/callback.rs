//! The WeChat callback: URL verification, the reverse query in all six mode x format
//! combinations (sealed both by an independent peer and by the crate's own WeChat-side
//! helpers), replays, forgeries and limits.

use serde_json::Value;
use wxexpress::wechat::crypto::MessageCrypto;
use wxexpress::wechat::envelope::{self, MessageFormat, MessageMode};

use crate::helpers::*;
use crate::peer;

const MODES: [&str; 3] = ["plaintext", "compatible", "secure"];

async fn app_in(mode: &str, xml: bool) -> TestApp {
    spawn_app_with(&[
        ("WXEXPRESS_WECHAT__MESSAGE_MODE", mode),
        (
            "WXEXPRESS_WECHAT__MESSAGE_FORMAT",
            if xml { "xml" } else { "json" },
        ),
        // Plaintext mode is refused unless explicitly allowed.
        (
            "WXEXPRESS_WECHAT__ALLOW_PLAINTEXT",
            if mode == "plaintext" { "true" } else { "" },
        ),
    ])
    .await
}

/// A waybill with two events, the older one with a courier.
async fn seed(app: &TestApp, id: &str) {
    assert_eq!(app.put_waybill(id, &waybill_body()).await.status(), 201);
    let pickup = serde_json::json!({ "action_type": 100001, "action_time": 1_700_000_100, "action_msg": "已揽件，揽件员王五 13900000000", "pickup_courier_name": "王五", "pickup_courier_phone": "13900000000" });
    assert_eq!(app.post_event(id, &pickup).await.status(), 202);
    assert_eq!(
        app.post_event(
            id,
            &event_body(200001, 1_700_000_200, "快件到达 【泉州磁灶集散中心】")
        )
        .await
        .status(),
        202
    );
}

async fn post(app: &TestApp, query: &str, body: String, xml: bool) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/wechat/callback?{query}")))
        .header(
            "content-type",
            if xml { "text/xml" } else { "application/json" },
        )
        .body(body)
        .send()
        .await
        .expect("request")
}

/// Check the reply document (plaintext) lists both nodes exactly, newest first.
fn assert_full_path(doc: &str, xml: bool) {
    if xml {
        assert_eq!(
            peer::xml_field(doc, "ResultCode").as_deref(),
            Some("0"),
            "{doc}"
        );
        assert_eq!(
            peer::xml_field(doc, "WaybillCreateTime").as_deref(),
            Some("1700000000")
        );
        assert_eq!(
            peer::xml_field(doc, "ToUserName").as_deref(),
            Some("oHt_80DRclK4qjKfdYnPg6RxxsNI")
        );
        assert_eq!(doc.matches("<Path>").count(), 2, "{doc}");
        let first = &doc[doc.find("<Path>").unwrap()..];
        assert_eq!(
            peer::xml_field(first, "ActionMsg").as_deref(),
            Some("快件到达 【泉州磁灶集散中心】")
        );
        let second = &first[first[1..].find("<Path>").unwrap() + 1..];
        assert_eq!(
            peer::xml_field(second, "ActionMsg").as_deref(),
            Some("已揽件，揽件员王五 13900000000")
        );
        assert_eq!(
            peer::xml_field(second, "PickupCourierPhone").as_deref(),
            Some("13900000000")
        );
    } else {
        let v: Value = serde_json::from_str(doc).unwrap();
        assert_eq!(v["ResultCode"], 0, "{doc}");
        assert_eq!(v["WaybillCreateTime"], 1_700_000_000);
        assert_eq!(v["ToUserName"], "oHt_80DRclK4qjKfdYnPg6RxxsNI");
        assert_eq!(v["FromUserName"], ORIGINAL_ID);
        let path = v["Path"].as_array().unwrap();
        assert_eq!(path.len(), 2);
        assert_eq!(
            path[0],
            serde_json::json!({ "ActionType": 200001, "ActionTime": 1_700_000_200, "ActionMsg": "快件到达 【泉州磁灶集散中心】" })
        );
        assert_eq!(
            path[1],
            serde_json::json!({ "ActionType": 100001, "ActionTime": 1_700_000_100, "ActionMsg": "已揽件，揽件员王五 13900000000", "PickupCourierName": "王五", "PickupCourierPhone": "13900000000" })
        );
    }
}

#[tokio::test]
async fn the_reverse_query_round_trips_in_every_mode_and_format_with_an_independent_peer() {
    for mode in MODES {
        for xml in [false, true] {
            let app = app_in(mode, xml).await;
            seed(&app, "RQ1").await;
            let doc = peer::query_doc(xml, "RQ1", "13800138000", "13800138001", peer::now());
            let (q, body) = peer::seal(
                mode,
                xml,
                TOKEN,
                AES_KEY,
                APPID,
                &doc,
                peer::now(),
                "415670741",
            );
            let r = post(&app, &q, body, xml).await;
            assert_eq!(r.status(), 200, "{mode} xml={xml}");
            let reply = r.text().await.unwrap();
            let plain = peer::open_reply(mode, xml, TOKEN, AES_KEY, APPID, &reply, "415670741");
            assert_full_path(&plain, xml);
        }
    }
}

#[tokio::test]
async fn the_reverse_query_round_trips_in_every_mode_and_format_with_the_crate_helpers() {
    let crypto = MessageCrypto::new(TOKEN, APPID, AES_KEY, None).unwrap();
    for (mode, m) in [
        ("plaintext", MessageMode::Plaintext),
        ("compatible", MessageMode::Compatible),
        ("secure", MessageMode::Secure),
    ] {
        for (xml, f) in [(false, MessageFormat::Json), (true, MessageFormat::Xml)] {
            let app = app_in(mode, xml).await;
            seed(&app, "RQ2").await;
            let doc = envelope::parse_document(
                f,
                peer::query_doc(xml, "RQ2", "13800138000", "13800138001", peer::now()).as_bytes(),
            )
            .unwrap();
            let (q, body) =
                envelope::seal_request(&crypto, m, f, &doc, peer::now(), "98765").unwrap();
            let r = post(&app, &q, body, xml).await;
            assert_eq!(r.status(), 200, "{mode} xml={xml}");
            let reply =
                envelope::open_reply(&crypto, m, f, r.text().await.unwrap().as_bytes(), "98765")
                    .unwrap();
            let path = reply["Path"].as_array().unwrap();
            assert_eq!(path.len(), 2);
            assert_eq!(
                envelope::get_i64(path[0].as_object().unwrap(), "ActionType"),
                Some(200001)
            );
            assert_eq!(
                envelope::get_str(path[1].as_object().unwrap(), "PickupCourierName"),
                Some("王五")
            );
        }
    }
}

#[tokio::test]
async fn a_repeated_delivery_gets_the_same_answer_and_is_logged_once() {
    let app = app_in("secure", false).await;
    seed(&app, "RQ3").await;
    let created = peer::now();
    let doc = peer::query_doc(false, "RQ3", "13800138000", "13800138001", created);
    let (q, body) = peer::seal("secure", false, TOKEN, AES_KEY, APPID, &doc, created, "111");
    let first = peer::open_reply(
        "secure",
        false,
        TOKEN,
        AES_KEY,
        APPID,
        &post(&app, &q, body.clone(), false)
            .await
            .text()
            .await
            .unwrap(),
        "111",
    );
    // A new event arrives between WeChat's first try and its retry: the retry still gets the first answer.
    app.post_event("RQ3", &event_body(300002, 1_700_000_300, "派送中"))
        .await;
    let second = peer::open_reply(
        "secure",
        false,
        TOKEN,
        AES_KEY,
        APPID,
        &post(&app, &q, body, false).await.text().await.unwrap(),
        "111",
    );
    let (a, b): (Value, Value) = (
        serde_json::from_str(&first).unwrap(),
        serde_json::from_str(&second).unwrap(),
    );
    assert_eq!(a["Path"], b["Path"]);
    assert_eq!(a["ResultCode"], b["ResultCode"]);
    let w: Value = app.get_waybill("RQ3").await.json().await.unwrap();
    assert_eq!(w["callbacks"].as_array().unwrap().len(), 1, "{w}");
    let summary = w["callbacks"][0]["summary"].as_str().unwrap();
    assert!(
        summary.contains("138****8000") && !summary.contains("13800138000"),
        "{summary}"
    );
}

#[tokio::test]
async fn a_repeated_delivery_whose_stored_reply_cannot_be_opened_is_answered_anew_in_full() {
    let app = app_in("secure", false).await;
    seed(&app, "RQ3B").await;
    let created = peer::now();
    let doc = peer::query_doc(false, "RQ3B", "13800138000", "13800138001", created);
    let (q, body) = peer::seal("secure", false, TOKEN, AES_KEY, APPID, &doc, created, "112");
    let ask = |body: String| {
        let (app, q) = (&app, &q);
        async move {
            let text = post(app, q, body, false).await.text().await.unwrap();
            let reply = peer::open_reply("secure", false, TOKEN, AES_KEY, APPID, &text, "112");
            serde_json::from_str::<Value>(&reply).unwrap()
        }
    };
    let first = ask(body.clone()).await;
    assert!(!first["Path"].as_array().unwrap().is_empty(), "{first}");
    // The stored reply no longer opens (as after a change of data key).
    sqlx::query("UPDATE callback_exchanges SET reply = $1")
        .bind(vec![0_u8; 40])
        .execute(app.store.pool())
        .await
        .unwrap();
    let second = ask(body).await;
    assert_eq!(second["ResultCode"], first["ResultCode"]);
    assert_eq!(
        second["Path"], first["Path"],
        "the whole path, not an empty one"
    );
}

#[tokio::test]
async fn unknown_waybills_and_foreign_phones_get_an_error_code_and_no_path() {
    let app = app_in("secure", true).await;
    seed(&app, "RQ4").await;
    for (id, receiver, sender, code) in [
        ("NOPE", "13800138000", "13800138001", "1001"),
        ("RQ4", "13700000000", "13800138001", "1002"),
        ("RQ4", "13800138000", "13700000000", "1002"),
    ] {
        let doc = peer::query_doc(true, id, receiver, sender, peer::now());
        let (q, body) = peer::seal(
            "secure",
            true,
            TOKEN,
            AES_KEY,
            APPID,
            &doc,
            peer::now(),
            "7",
        );
        let reply = post(&app, &q, body, true).await.text().await.unwrap();
        let plain = peer::open_reply("secure", true, TOKEN, AES_KEY, APPID, &reply, "7");
        assert_eq!(
            peer::xml_field(&plain, "ResultCode").as_deref(),
            Some(code),
            "{plain}"
        );
        assert!(!plain.contains("<Path>"), "no path data: {plain}");
    }
}

#[tokio::test]
async fn forged_stale_and_malformed_pushes_are_rejected() {
    let app = app_in("secure", false).await;
    seed(&app, "RQ5").await;
    let doc = peer::query_doc(false, "RQ5", "13800138000", "13800138001", peer::now());
    let (q, body) = peer::seal(
        "secure",
        false,
        TOKEN,
        AES_KEY,
        APPID,
        &doc,
        peer::now(),
        "5",
    );

    let forged_sig = q.replace("msg_signature=", "msg_signature=0");
    assert_eq!(
        post(&app, &forged_sig, body.clone(), false).await.status(),
        401
    );
    let (q_wrong_token, b_wrong_token) = peer::seal(
        "secure",
        false,
        "BBBBB",
        AES_KEY,
        APPID,
        &doc,
        peer::now(),
        "5",
    );
    assert_eq!(
        post(&app, &q_wrong_token, b_wrong_token, false)
            .await
            .status(),
        401
    );
    let (q_old, b_old) = peer::seal(
        "secure",
        false,
        TOKEN,
        AES_KEY,
        APPID,
        &doc,
        peer::now() - 3600,
        "5",
    );
    assert_eq!(
        post(&app, &q_old, b_old, false).await.status(),
        401,
        "replayed an hour later"
    );
    let (q_appid, b_appid) = peer::seal(
        "secure",
        false,
        TOKEN,
        AES_KEY,
        "wx0000000000000000",
        &doc,
        peer::now(),
        "5",
    );
    assert_eq!(post(&app, &q_appid, b_appid, false).await.status(), 403);
    let other_key = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA";
    let (q_key, b_key) = peer::seal(
        "secure",
        false,
        TOKEN,
        other_key,
        APPID,
        &doc,
        peer::now(),
        "5",
    );
    assert_eq!(post(&app, &q_key, b_key, false).await.status(), 400);
    let (q_plain, b_plain) = peer::seal(
        "plaintext",
        false,
        TOKEN,
        AES_KEY,
        APPID,
        &doc,
        peer::now(),
        "5",
    );
    assert!(
        post(&app, &q_plain, b_plain, false)
            .await
            .status()
            .is_client_error(),
        "plaintext is refused in secure mode"
    );
    assert_eq!(
        post(&app, &q, "{not json".into(), false).await.status(),
        400
    );
    assert_eq!(post(&app, "", body.clone(), false).await.status(), 400);
    assert_eq!(
        post(&app, &q, "x".repeat(200_000), false).await.status(),
        413
    );
    let w: Value = app.get_waybill("RQ5").await.json().await.unwrap();
    assert_eq!(
        w["callbacks"].as_array().unwrap().len(),
        0,
        "nothing rejected was logged as an exchange"
    );
}

#[tokio::test]
async fn events_we_do_not_handle_are_answered_success() {
    let app = app_in("secure", false).await;
    let doc = serde_json::json!({ "ToUserName": ORIGINAL_ID, "FromUserName": "o9AgO5Kd5ggOC-bXrbNODIiE3bGY", "CreateTime": peer::now(), "MsgType": "event", "Event": "debug_demo", "debug_str": "hello world" }).to_string();
    let (q, body) = peer::seal(
        "secure",
        false,
        TOKEN,
        AES_KEY,
        APPID,
        &doc,
        peer::now(),
        "1",
    );
    let r = post(&app, &q, body, false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "success");
}

#[tokio::test]
async fn url_verification_echoes_only_for_a_valid_signature() {
    let app = spawn_app().await;
    let ts = peer::now().to_string();
    let sig = peer::sign(&[TOKEN, &ts, "1514711492"]);
    let r = app.client.get(app.url(&format!("/wechat/callback?signature={sig}&timestamp={ts}&nonce=1514711492&echostr=4375120948345356249"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "4375120948345356249");
    let r = app
        .client
        .get(app.url(&format!(
            "/wechat/callback?signature={}&timestamp={ts}&nonce=1514711492&echostr=1",
            "f".repeat(40)
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The official vector's signature is right but its timestamp is from 2024: stale.
    let r = app.client.get(app.url("/wechat/callback?signature=f464b24fc39322e44b38aa78f5edd27bd1441696&timestamp=1714036504&nonce=1514711492&echostr=4375120948345356249")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .client
        .get(app.url("/wechat/callback?timestamp=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// Send one reverse query in secure JSON mode and return the opened reply.
async fn ask(app: &TestApp, doc: &str, created: i64, nonce: &str) -> Value {
    let (q, body) = peer::seal("secure", false, TOKEN, AES_KEY, APPID, doc, created, nonce);
    let r = post(app, &q, body, false).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let plain = peer::open_reply("secure", false, TOKEN, AES_KEY, APPID, &text, nonce);
    serde_json::from_str(&plain).unwrap()
}

#[tokio::test]
async fn a_question_with_another_phone_in_the_same_second_is_answered_anew_not_replayed() {
    let app = app_in("secure", false).await;
    seed(&app, "RQ7").await;
    let created = peer::now();
    let right = peer::query_doc(false, "RQ7", "13800138000", "13800138001", created);
    let a = ask(&app, &right, created, "71").await;
    assert_eq!(
        (a["ResultCode"].as_i64(), a["Path"].as_array().map(Vec::len)),
        (Some(0), Some(2))
    );
    // Same FromUserName, CreateTime and WaybillId; another receiver phone.
    let wrong = peer::query_doc(false, "RQ7", "13999999999", "13800138001", created);
    let b = ask(&app, &wrong, created, "72").await;
    assert_eq!(b["ResultCode"], 1002, "{b}");
    assert!(b.get("Path").is_none(), "no path for the wrong phone: {b}");
    // And the other way round: a wrong sender phone.
    let wrong_sender = peer::query_doc(false, "RQ7", "13800138000", "13999999999", created);
    let c = ask(&app, &wrong_sender, created, "73").await;
    assert_eq!(c["ResultCode"], 1002, "{c}");
    // The right question again is still a replay of the first answer.
    let d = ask(&app, &right, created, "74").await;
    assert_eq!(d["Path"], a["Path"]);
    let w: Value = app.get_waybill("RQ7").await.json().await.unwrap();
    assert_eq!(w["callbacks"].as_array().unwrap().len(), 3, "{w}");
}

#[tokio::test]
async fn a_push_addressed_to_another_mini_program_is_refused() {
    for mode in ["secure", "plaintext"] {
        let app = app_in(mode, false).await;
        seed(&app, "RQ8").await;
        let created = peer::now();
        let doc = peer::query_doc(false, "RQ8", "13800138000", "13800138001", created)
            .replace(ORIGINAL_ID, "gh_000000000000");
        let (q, body) = peer::seal(mode, false, TOKEN, AES_KEY, APPID, &doc, created, "8");
        assert_eq!(post(&app, &q, body, false).await.status(), 403, "{mode}");
        // Plaintext mode: a push without ToUserName is refused too.
        let mut v: Value = serde_json::from_str(&peer::query_doc(
            false,
            "RQ8",
            "13800138000",
            "13800138001",
            created,
        ))
        .unwrap();
        v.as_object_mut().unwrap().remove("ToUserName");
        let (q, body) = peer::seal(
            mode,
            false,
            TOKEN,
            AES_KEY,
            APPID,
            &v.to_string(),
            created,
            "9",
        );
        let status = post(&app, &q, body, false).await.status();
        if mode == "plaintext" {
            assert_eq!(status, 403);
        } else {
            assert_eq!(status, 200, "secure mode: the decrypted appid binds it");
        }
        let w: Value = app.get_waybill("RQ8").await.json().await.unwrap();
        let logged = w["callbacks"].as_array().unwrap().len();
        assert_eq!(logged, usize::from(mode == "secure"), "{mode}: {w}");
    }
}

/// Shaped like the `add_express_path` push captured in public (spec §11.5): repeated
/// `<Actions>`, undocumented `<Lat>`/`<Lng>`, elements in no documented order, 300001.
const ADD_EXPRESS_PATH: &str = include_str!("../fixtures/add_express_path.xml");

async fn kept_events(app: &TestApp, query: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/v1/wechat/events{query}")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_event_we_do_not_handle_is_answered_success_and_kept_sealed_in_every_mode() {
    for mode in MODES {
        let app = app_in(mode, true).await;
        let (q, body) = peer::seal(
            mode,
            true,
            TOKEN,
            AES_KEY,
            APPID,
            ADD_EXPRESS_PATH,
            peer::now(),
            "31",
        );
        for _ in 0..2 {
            // WeChat's redelivery is answered the same and kept once.
            let r = post(&app, &q, body.clone(), true).await;
            assert_eq!(r.status(), 200, "{mode}");
            assert_eq!(r.text().await.unwrap(), "success", "{mode}");
        }
        let v: Value = kept_events(&app, "?event=add_express_path")
            .await
            .json()
            .await
            .unwrap();
        let events = v["events"].as_array().unwrap();
        assert_eq!(events.len(), 1, "{mode}: {v}");
        let kept = events[0]["body"].as_str().unwrap();
        assert!(
            kept.contains("<Lat>22.5431</Lat>"),
            "kept as received: {kept}"
        );
        assert!(kept.contains("139 **** 9000"), "phones masked: {kept}");
        assert!(!kept.contains("0013 9000"), "{kept}");
        // Stored sealed: the plaintext is nowhere in the database file's rows.
        let raw: Vec<u8> = sqlx::query_scalar("SELECT body FROM wechat_events")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains("add_express_path"));
    }
}

#[tokio::test]
async fn kept_events_need_the_bearer_key_and_a_sane_limit() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/v1/wechat/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    for bad in ["?limit=0", "?limit=5000", "?limit=x", "?nope=1"] {
        assert_eq!(kept_events(&app, bad).await.status(), 400, "{bad}");
    }
    let v: Value = kept_events(&app, "").await.json().await.unwrap();
    assert_eq!(v["events"], serde_json::json!([]));
}

#[tokio::test]
async fn json_pushes_with_unknown_fields_and_arrays_are_read_not_refused() {
    let app = app_in("secure", false).await;
    seed(&app, "RQ9").await;
    // A reverse query with extra fields, in another order, and an unknown nested array.
    let doc = serde_json::json!({
        "Extra": [{"Lat": 1.5}, {"Lat": 2.5}], "ReceiverPhone": "13800138000",
        "WaybillId": "RQ9", "Event": "waybill_notify_query", "MsgType": "event",
        "SenderPhone": "13800138001", "CreateTime": peer::now(),
        "FromUserName": "oHt_80DRclK4qjKfdYnPg6RxxsNI", "ToUserName": ORIGINAL_ID, "Future": {"x": 1}
    })
    .to_string();
    let v = ask(&app, &doc, peer::now(), "91").await;
    assert_eq!(v["ResultCode"], 0, "{v}");
    assert_eq!(v["Path"].as_array().unwrap().len(), 2);
}

/// A field of an opened reply as WeChat would read it, by an independent reader: JSON through
/// serde_json, XML through the peer's own tag reader.
fn reply_field(plain: &str, xml: bool, name: &str) -> Option<String> {
    if xml {
        return peer::xml_field(plain, name);
    }
    let v: Value = serde_json::from_str(plain).expect("a JSON reply");
    match v.get(name)? {
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[tokio::test]
async fn every_reply_shape_decodes_with_an_independent_reader_and_has_what_wechat_reads() {
    for mode in MODES {
        for xml in [false, true] {
            let app = app_in(mode, xml).await;
            seed(&app, "RQ10").await;
            let created = peer::now();
            let cases: [(&str, i64, String); 4] = [
                (
                    "found",
                    0,
                    peer::query_doc(xml, "RQ10", "13800138000", "13800138001", created),
                ),
                (
                    "unknown waybill",
                    1001,
                    peer::query_doc(xml, "RQ11", "13800138000", "13800138001", created),
                ),
                (
                    "wrong phone",
                    1002,
                    peer::query_doc(xml, "RQ10", "13999999999", "13800138001", created),
                ),
                (
                    "no waybill id",
                    1003,
                    peer::query_doc(xml, "", "13800138000", "13800138001", created),
                ),
            ];
            for (i, (what, code, doc)) in cases.iter().enumerate() {
                let nonce = format!("7{i}");
                let (q, body) = peer::seal(mode, xml, TOKEN, AES_KEY, APPID, doc, created, &nonce);
                let r = post(&app, &q, body, xml).await;
                assert_eq!(r.status(), 200, "{mode} xml={xml} {what}");
                let ct = r.headers()["content-type"].to_str().unwrap().to_string();
                assert!(
                    ct.starts_with(if xml { "text/xml" } else { "application/json" }),
                    "{mode} xml={xml} {what}: {ct}"
                );
                let reply = r.text().await.unwrap();
                let plain = peer::open_reply(mode, xml, TOKEN, AES_KEY, APPID, &reply, &nonce);
                let f = |name: &str| reply_field(&plain, xml, name);
                let ctx = format!("{mode} xml={xml} {what}: {plain}");
                assert_eq!(
                    f("ToUserName").as_deref(),
                    Some("oHt_80DRclK4qjKfdYnPg6RxxsNI"),
                    "{ctx}"
                );
                assert_eq!(f("FromUserName").as_deref(), Some(ORIGINAL_ID), "{ctx}");
                assert_eq!(f("MsgType").as_deref(), Some("event"), "{ctx}");
                assert_eq!(f("Event").as_deref(), Some("waybill_notify_query"), "{ctx}");
                assert_eq!(f("ResultCode"), Some(code.to_string()), "{ctx}");
                assert!(f("ResultMsg").is_some_and(|m| !m.is_empty()), "{ctx}");
                let t: i64 = f("CreateTime")
                    .and_then(|t| t.parse().ok())
                    .expect("CreateTime");
                assert!((t - peer::now()).abs() < 60, "{ctx}");
                assert!(f("WaybillCreateTime").is_some(), "{ctx}");
                // A path only with ResultCode 0, and then both nodes.
                match (code, xml) {
                    (0, true) => assert_eq!(plain.matches("<Path>").count(), 2, "{ctx}"),
                    (0, false) => {
                        let v: Value = serde_json::from_str(&plain).unwrap();
                        assert_eq!(v["Path"].as_array().map(Vec::len), Some(2), "{ctx}");
                    }
                    (_, true) => assert!(!plain.contains("<Path>"), "{ctx}"),
                    (_, false) => assert!(f("Path").is_none(), "{ctx}"),
                }
            }
        }
    }
}
