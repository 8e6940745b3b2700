//! `GET /wechat/waybill` (JSONP lookup) and `/v1/cells`, against the real gateway. URLs are
//! signed with the independent peer's SHA-1 (`peer::sign`), not the crate's.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use wxexpress::app::Application;
use wxexpress::config;

use crate::helpers::{
    event_body, spawn_app, spawn_app_with, waybill_body, TestApp, API_KEY, TOKEN,
};
use crate::peer::sign;

const CB: &str = "WxOrderCb";
/// 2024-10-31 21:16:00 in Beijing.
const T0: i64 = 1_730_380_560;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The query of a lookup signed with `token` at `timestamp`.
fn query(orderid: &str, callback: &str, token: &str, timestamp: i64) -> Vec<(String, String)> {
    let (ts, nonce) = (timestamp.to_string(), "1372623149".to_string());
    vec![
        ("orderid".into(), orderid.into()),
        ("openid".into(), "oABC-user_1".into()),
        ("signature".into(), sign(&[token, &ts, &nonce])),
        ("timestamp".into(), ts),
        ("nonce".into(), nonce),
        ("callback".into(), callback.into()),
    ]
}

fn encode(pairs: &[(String, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

struct Reply {
    status: u16,
    content_type: String,
    nosniff: bool,
    body: String,
}

async fn get_raw(app: &TestApp, query: &str) -> Reply {
    let r = app
        .client
        .get(app.url(&format!("/wechat/waybill?{query}")))
        .send()
        .await
        .expect("request");
    let h = r.headers().clone();
    Reply {
        status: r.status().as_u16(),
        content_type: h
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        nosniff: h
            .get("x-content-type-options")
            .is_some_and(|v| v == "nosniff"),
        body: r.text().await.expect("body"),
    }
}

/// A lookup of `orderid` signed now; the parsed `OrderInfo`.
async fn lookup(app: &TestApp, orderid: &str) -> Value {
    let r = get_raw(app, &encode(&query(orderid, CB, TOKEN, now()))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    unwrap_jsonp(&r.body, CB)
}

/// Checks the exact JSONP frame and returns the object inside.
fn unwrap_jsonp(body: &str, callback: &str) -> Value {
    let inner = body
        .strip_prefix(&format!("/**/{callback}("))
        .and_then(|b| b.strip_suffix(");"))
        .unwrap_or_else(|| panic!("not a JSONP reply for {callback}: {body}"));
    serde_json::from_str(inner).unwrap_or_else(|e| panic!("{e}: {inner}"))
}

async fn seed(app: &TestApp, id: &str, events: &[(i64, i64, &str)]) {
    assert!(app
        .put_waybill(id, &waybill_body())
        .await
        .status()
        .is_success());
    for (action_type, at, msg) in events {
        let r = app.post_event(id, &event_body(*action_type, *at, msg)).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }
}

async fn put_cells(app: &TestApp, body: &Value) -> reqwest::Response {
    app.client
        .put(app.url("/v1/cells"))
        .bearer_auth(API_KEY)
        .json(body)
        .send()
        .await
        .expect("request")
}

async fn get_cells(app: &TestApp) -> Value {
    let r = app
        .client
        .get(app.url("/v1/cells"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn keys(info: &Value) -> Vec<&str> {
    info["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["key"].as_str().unwrap())
        .collect()
}

fn standard_cells() -> Value {
    json!({ "cells": [
        { "key": "pay", "name": "支付运单", "link": "https://pay.example/pay?w={waybill_id}&u={openid}",
          "when": { "latest_action_in": [90010] } },
        { "key": "address", "name": "修改地址", "link": "https://c.example/address/{waybill_id}",
          "when": { "before_delivery": true } },
        { "key": "complain", "name": "投诉", "link": "https://c.example/complain/{waybill_id}" },
    ]})
}

#[tokio::test]
async fn a_signed_lookup_answers_traces_newest_first_in_beijing_time_with_phones_masked() {
    let app = spawn_app().await;
    seed(
        &app,
        "SF100",
        &[
            (100001, T0, "已揽件，揽件员 13800138009"),
            (200001, T0 + 3600, "快件到达 【泉州集散中心】"),
            (
                300002,
                T0 + 7200,
                "派送中，快递员王五 13912345678，网点电话 0571-88886666",
            ),
        ],
    )
    .await;
    let r = get_raw(&app, &encode(&query("SF100", CB, TOKEN, now()))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "application/javascript; charset=utf-8");
    assert!(r.nosniff);
    let info = unwrap_jsonp(&r.body, CB);
    assert_eq!(info["err_code"], 0);
    assert_eq!(info["err_msg"], "ok");
    assert_eq!(info["waybill_id"], "SF100");
    let traces = info["traces"].as_array().unwrap();
    let order: Vec<_> = traces.iter().map(|t| t["action_type"].as_i64().unwrap()).collect();
    assert_eq!(order, [300002, 200001, 100001], "newest first");
    assert_eq!(traces[2]["accept_time"], "2024-10-31 21:16:00");
    assert_eq!(traces[0]["accept_time"], "2024-10-31 23:16:00");
    assert_eq!(
        traces[0]["action_msg"],
        "派送中，快递员王五 139****5678，网点电话 0571-****6666"
    );
    assert_eq!(traces[2]["action_msg"], "已揽件，揽件员 138****8009");
    for raw in ["13912345678", "88886666", "13800138009", "13800138000"] {
        assert!(!r.body.contains(raw), "{raw} leaked: {}", r.body);
    }
    assert_eq!(info["cells"], json!([]), "no cells configured");

    // WeChat's page documents `orderid==xxx`; the typo is tolerated.
    let typo = encode(&query("SF100", CB, TOKEN, now())).replace("orderid=", "orderid==");
    let info = unwrap_jsonp(&get_raw(&app, &typo).await.body, CB);
    assert_eq!(info["waybill_id"], "SF100");
}

#[tokio::test]
async fn hostile_or_malformed_callbacks_get_a_plain_400_that_never_echoes_them() {
    let app = spawn_app().await;
    seed(&app, "SF101", &[(100001, T0, "已揽件")]).await;
    let long = "a".repeat(65);
    for bad in [
        "",
        "alert(1)//",
        "</script><script>alert(1)</script>",
        "WxOrderCb;alert(1)",
        "WxOrderCb\u{2028}alert(1)",
        "ＷxOrderCb",
        "Wx\u{200b}OrderCb",
        "Wx\u{202e}OrderCb",
        "WxOrderCb\0",
        "a..b",
        ".a",
        "1a",
        "a.1b",
        "a[0]",
        "a b",
        long.as_str(),
    ] {
        let r = get_raw(&app, &encode(&query("SF101", bad, TOKEN, now()))).await;
        assert_eq!(r.status, 400, "{bad:?}: {}", r.body);
        assert_eq!(r.content_type, "text/plain; charset=utf-8", "{bad:?}");
        assert!(r.nosniff);
        if bad.len() > 1 {
            assert!(!r.body.contains(bad), "{bad:?} reflected: {}", r.body);
        }
        assert!(!r.body.contains("SF101") && !r.body.contains("已揽件"));
    }
    // No callback at all.
    let mut q = query("SF101", CB, TOKEN, now());
    q.retain(|(k, _)| k != "callback");
    assert_eq!(get_raw(&app, &encode(&q)).await.status, 400);

    // The longest and the dotted forms are fine.
    for good in ["a".repeat(64), "jQuery.cb_1$".to_string()] {
        let r = get_raw(&app, &encode(&query("SF101", &good, TOKEN, now()))).await;
        assert_eq!(r.status, 200, "{good}");
        assert_eq!(unwrap_jsonp(&r.body, &good)["err_code"], 0);
    }
}

/// A refused lookup: the right error code, the same JSONP frame, and nothing of the waybill.
fn assert_refused(r: &Reply, code: i64) {
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.content_type, "application/javascript; charset=utf-8");
    let info = unwrap_jsonp(&r.body, CB);
    assert_eq!(info["err_code"], code, "{}", r.body);
    assert_eq!(info["traces"], json!([]));
    assert_eq!(info["cells"], json!([]));
    assert!(info.get("waybill_id").is_none(), "{}", r.body);
    assert!(!r.body.contains("已揽件"), "{}", r.body);
}

#[tokio::test]
async fn a_bad_or_missing_signature_gets_an_error_code_and_no_waybill_data() {
    let app = spawn_app().await;
    seed(&app, "SF102", &[(100001, T0, "已揽件")]).await;
    assert_ok_cells(&app).await;

    let wrong_token = query("SF102", CB, "another-token", now());
    assert_refused(&get_raw(&app, &encode(&wrong_token)).await, 40100);

    let mut upper = query("SF102", CB, TOKEN, now());
    upper[2].1 = upper[2].1.to_uppercase();
    assert_refused(&get_raw(&app, &encode(&upper)).await, 40100);

    // A signature for another nonce does not carry over.
    let mut other_nonce = query("SF102", CB, TOKEN, now());
    other_nonce[4].1 = "1".into();
    assert_refused(&get_raw(&app, &encode(&other_nonce)).await, 40100);

    for missing in ["signature", "timestamp", "nonce", "orderid"] {
        let mut q = query("SF102", CB, TOKEN, now());
        q.retain(|(k, _)| k != missing);
        assert_refused(&get_raw(&app, &encode(&q)).await, 40000);
    }
}

/// With cells configured, a refused lookup still shows none of them.
async fn assert_ok_cells(app: &TestApp) {
    assert_eq!(put_cells(app, &standard_cells()).await.status(), 200);
}

#[tokio::test]
async fn a_timestamp_outside_the_window_is_refused_even_when_correctly_signed() {
    let app = spawn_app_with(&[("WXEXPRESS_SERVER__CALLBACK_WINDOW_SECS", "30")]).await;
    seed(&app, "SF103", &[(100001, T0, "已揽件")]).await;
    // A URL WeChat signed 31 s ago, replayed now, and one dated in the future.
    for t in [now() - 31, now() + 31, 0] {
        assert_refused(
            &get_raw(&app, &encode(&query("SF103", CB, TOKEN, t))).await,
            40101,
        );
    }
    let mut not_a_number = query("SF103", CB, TOKEN, now());
    not_a_number[3].1 = "yesterday".into();
    not_a_number[2].1 = sign(&[TOKEN, "yesterday", "1372623149"]);
    assert_refused(&get_raw(&app, &encode(&not_a_number)).await, 40101);

    // Inside the window the same request is answered.
    let r = get_raw(&app, &encode(&query("SF103", CB, TOKEN, now() - 20))).await;
    assert_eq!(unwrap_jsonp(&r.body, CB)["err_code"], 0);
}

#[tokio::test]
async fn an_unknown_or_malformed_waybill_gets_40400_without_data() {
    let app = spawn_app().await;
    seed(&app, "SF104", &[(100001, T0, "已揽件")]).await;
    assert_ok_cells(&app).await;
    for id in ["SF999", "SF104x", "SF/../104", &"9".repeat(65)] {
        assert_refused(
            &get_raw(&app, &encode(&query(id, CB, TOKEN, now()))).await,
            40400,
        );
    }
    // A known waybill without steps yet is found, with no traces.
    seed(&app, "SF105", &[]).await;
    let info = lookup(&app, "SF105").await;
    assert_eq!((info["err_code"].clone(), info["traces"].clone()), (json!(0), json!([])));
}

#[tokio::test]
async fn text_in_the_data_cannot_end_the_script_or_the_statement() {
    let app = spawn_app().await;
    let hostile = "</script><script>alert(1)</script><!-- \u{2028}\u{2029} & done";
    seed(&app, "SF106", &[(200001, T0, hostile)]).await;
    let r = get_raw(&app, &encode(&query("SF106", CB, TOKEN, now()))).await;
    for c in ['<', '>', '&', '\u{2028}', '\u{2029}'] {
        assert!(!r.body.contains(c), "{c:?} unescaped in {}", r.body);
    }
    assert!(r.body.contains(r"\u003c/script\u003e"), "{}", r.body);
    let info = unwrap_jsonp(&r.body, CB);
    assert_eq!(info["traces"][0]["action_msg"], hostile, "same text once parsed");
}

#[tokio::test]
async fn cells_follow_the_waybill_state_with_url_encoded_links() {
    let app = spawn_app().await;
    assert_eq!(put_cells(&app, &standard_cells()).await.status(), 200);

    seed(&app, "SF107", &[(90001, T0, "网点已接单"), (90010, T0 + 60, "待支付运费")]).await;
    let info = lookup(&app, "SF107").await;
    assert_eq!(keys(&info), ["pay", "address", "complain"]);
    assert_eq!(
        info["cells"][0],
        json!({ "key": "pay", "name": "支付运单", "link": "https://pay.example/pay?w=SF107&u=oABC-user_1" })
    );

    let post = |t: i64, code: i64| {
        let app = &app;
        async move {
            let r = app.post_event("SF107", &event_body(code, t, "…")).await;
            assert_eq!(r.status(), 202);
        }
    };
    post(T0 + 120, 90011).await;
    assert_eq!(keys(&lookup(&app, "SF107").await), ["address", "complain"], "paid");
    post(T0 + 180, 100001).await;
    post(T0 + 240, 200001).await;
    assert_eq!(keys(&lookup(&app, "SF107").await), ["address", "complain"]);
    post(T0 + 300, 300002).await;
    assert_eq!(keys(&lookup(&app, "SF107").await), ["complain"], "out for delivery");

    // The openid is URL-encoded into the link.
    seed(&app, "SF108", &[(90010, T0, "待支付运费")]).await;
    let mut q = query("SF108", CB, TOKEN, now());
    q[1].1 = "o&x=1 {waybill_id}".into();
    let info = unwrap_jsonp(&get_raw(&app.gw(), &encode(&q)).await.body, CB);
    assert_eq!(
        info["cells"][0]["link"],
        "https://pay.example/pay?w=SF108&u=o%26x%3D1%20%7Bwaybill_id%7D"
    );
}

#[tokio::test]
async fn the_cells_api_needs_the_bearer_key_and_validates_like_the_config() {
    let app = spawn_app().await;
    for method in [reqwest::Method::GET, reqwest::Method::PUT, reqwest::Method::DELETE] {
        let r = app
            .client
            .request(method.clone(), app.url("/v1/cells"))
            .bearer_auth("wrong-key-0123456789")
            .json(&standard_cells())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method}");
    }

    let bad = json!({ "cells": [
        { "key": "k".repeat(21), "name": "投诉", "link": "https://c.example/" },
        { "key": "pay", "name": "", "link": "javascript:alert(1)" },
        { "key": "x", "name": "x", "link": "https://{waybill_id}.evil.example/" },
        { "key": "y", "name": "y", "link": "https://c.example/{phone}", "when": { "latest_action_in": [1] } },
        { "key": "dup", "name": "d", "link": "https://c.example/" },
        { "key": "dup", "name": "d", "link": "https://c.example/" },
    ]});
    let r = put_cells(&app, &bad).await;
    assert_eq!(r.status(), 422);
    let problem: Value = r.json().await.unwrap();
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "cells[0].key",
            "cells[1].name",
            "cells[1].link",
            "cells[2].link",
            "cells[3].link",
            "cells[3].when.latest_action_in",
            "cells[5].key",
        ],
        "{problem}"
    );
    assert!(problem["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("20 characters"));

    let unknown_field = json!({ "cells": [{ "key": "a", "name": "a", "link": "https://c/", "icon": "x" }] });
    assert_eq!(put_cells(&app, &unknown_field).await.status(), 400);
    let r = app
        .client
        .put(app.url("/v1/cells"))
        .bearer_auth(API_KEY)
        .header("content-type", "text/plain")
        .body(standard_cells().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);

    // Nothing of the refused requests was stored.
    let view = get_cells(&app).await;
    assert_eq!(view["source"], "config");
    assert_eq!(view["cells"], json!([]));

    let r = put_cells(&app, &standard_cells()).await;
    assert_eq!(r.status(), 200);
    let view: Value = r.json().await.unwrap();
    assert_eq!(view["source"], "database");
    assert_eq!(view["cells"], standard_cells()["cells"]);
    assert!(view["updated_at_ms"].as_i64().is_some());
}

/// A gateway whose config file holds `[[cells]]` (env cannot express a list of tables).
struct FileApp {
    app: TestApp,
}

async fn spawn_with_cells_file(cells_toml: &str) -> FileApp {
    // Reuse the standard test settings through a file: everything else stays as in helpers.
    let probe = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wxexpress.toml");
    std::fs::write(&path, cells_toml).unwrap();
    let env: BTreeMap<String, String> = [
        ("WXEXPRESS_SERVER__LISTEN", "127.0.0.1:0"),
        ("WXEXPRESS_SERVER__WORKERS", "1"),
        (
            "WXEXPRESS_DATABASE__URL",
            &format!("sqlite://{}/gw.db", dir.path().display()),
        ),
        ("WXEXPRESS_WECHAT__APPID", crate::helpers::APPID),
        ("WXEXPRESS_WECHAT__SECRET", "test-secret"),
        ("WXEXPRESS_WECHAT__ORIGINAL_ID", crate::helpers::ORIGINAL_ID),
        ("WXEXPRESS_WECHAT__TOKEN", TOKEN),
        ("WXEXPRESS_WECHAT__ENCODING_AES_KEY", crate::helpers::AES_KEY),
        ("WXEXPRESS_WECHAT__API_BASE", "http://127.0.0.1:9"),
        ("WXEXPRESS_BACKOFFICE__API_KEYS", API_KEY),
        (
            "WXEXPRESS_PRIVACY__DATA_KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        ),
        ("WXEXPRESS_OUTBOX__ENABLED", "false"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let settings = config::load_from(Some(&path), &env, false).expect("settings");
    let built = Application::build(settings).await.expect("app builds");
    let base = format!("http://{}", built.addr());
    tokio::spawn(built.run_until_stopped());
    drop(probe);
    FileApp {
        app: TestApp::at(&base, dir),
    }
}
