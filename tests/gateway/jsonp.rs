//! `GET /wechat/waybill` (JSONP lookup) and `/v1/cells`, against the real gateway. URLs are
//! signed with the independent peer's SHA-1 (`peer::sign`), not the crate's.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use wxexpress::app::Application;
use wxexpress::config;

use crate::helpers::{
    event_body, spawn_app, spawn_app_with, waybill_body, TestApp, AES_KEY, API_KEY, APPID,
    ORIGINAL_ID, TOKEN,
};
use crate::peer::sign;

const CB: &str = "WxOrderCb";
/// 2024-10-31 21:16:00 in Beijing.
const T0: i64 = 1_730_380_560;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The query of a lookup signed with `token` at `timestamp`.
/// A lookup URL as WeChat signs it: a fresh nonce each time.
fn query(orderid: &str, callback: &str, token: &str, timestamp: i64) -> Vec<(String, String)> {
    static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1372623149);
    let nonce = NONCE
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .to_string();
    signed_query(orderid, callback, token, timestamp, &nonce, "oABC-user_1")
}

fn signed_query(
    orderid: &str,
    callback: &str,
    token: &str,
    timestamp: i64,
    nonce: &str,
    openid: &str,
) -> Vec<(String, String)> {
    let (ts, nonce) = (timestamp.to_string(), nonce.to_string());
    vec![
        ("orderid".into(), orderid.into()),
        ("openid".into(), openid.into()),
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

/// A running gateway the helpers below can talk to.
trait Gateway {
    fn url(&self, path: &str) -> String;
    fn http(&self) -> &reqwest::Client;
}

impl Gateway for TestApp {
    fn url(&self, path: &str) -> String {
        TestApp::url(self, path)
    }
    fn http(&self) -> &reqwest::Client {
        &self.client
    }
}

struct Reply {
    status: u16,
    content_type: String,
    nosniff: bool,
    retry_after: Option<String>,
    body: String,
}

async fn get_raw(app: &impl Gateway, query: &str) -> Reply {
    get_from(app, query, None).await
}

/// A lookup as sent through a proxy that sets `X-Forwarded-For`.
async fn get_from(app: &impl Gateway, query: &str, forwarded_for: Option<&str>) -> Reply {
    let mut req = app.http().get(app.url(&format!("/wechat/waybill?{query}")));
    if let Some(ip) = forwarded_for {
        req = req.header("x-forwarded-for", format!("203.0.113.9, {ip}"));
    }
    let r = req.send().await.expect("request");
    let h = r.headers().clone();
    let header = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Reply {
        status: r.status().as_u16(),
        content_type: header("content-type").unwrap_or_default(),
        nosniff: header("x-content-type-options").as_deref() == Some("nosniff"),
        retry_after: header("retry-after"),
        body: r.text().await.expect("body"),
    }
}

/// A lookup of `orderid` signed now; the parsed `OrderInfo`.
async fn lookup(app: &impl Gateway, orderid: &str) -> Value {
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

async fn seed(app: &impl Gateway, id: &str, events: &[(i64, i64, &str)]) {
    let r = app
        .http()
        .put(app.url(&format!("/v1/waybills/{id}")))
        .bearer_auth(API_KEY)
        .json(&waybill_body())
        .send()
        .await
        .expect("request");
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    for (action_type, at, msg) in events {
        post_event(app, id, *action_type, *at, msg).await;
    }
}

async fn post_event(app: &impl Gateway, id: &str, action_type: i64, at: i64, msg: &str) {
    let r = app
        .http()
        .post(app.url(&format!("/v1/waybills/{id}/events")))
        .bearer_auth(API_KEY)
        .json(&event_body(action_type, at, msg))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
}

async fn send_cells(
    app: &impl Gateway,
    method: reqwest::Method,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut req = app
        .http()
        .request(method, app.url("/v1/cells"))
        .bearer_auth(API_KEY);
    if let Some(b) = body {
        req = req.json(b);
    }
    req.send().await.expect("request")
}

async fn put_cells(app: &impl Gateway, body: &Value) -> reqwest::Response {
    send_cells(app, reqwest::Method::PUT, Some(body)).await
}

async fn get_cells(app: &impl Gateway) -> Value {
    let r = send_cells(app, reqwest::Method::GET, None).await;
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
    let order: Vec<_> = traces
        .iter()
        .map(|t| t["action_type"].as_i64().unwrap())
        .collect();
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
    assert_eq!(
        (info["err_code"].clone(), info["traces"].clone()),
        (json!(0), json!([]))
    );
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
    assert_eq!(
        info["traces"][0]["action_msg"], hostile,
        "same text once parsed"
    );
}

#[tokio::test]
async fn cells_follow_the_waybill_state_with_url_encoded_links() {
    let app = spawn_app().await;
    assert_eq!(put_cells(&app, &standard_cells()).await.status(), 200);

    seed(
        &app,
        "SF107",
        &[(90001, T0, "网点已接单"), (90010, T0 + 60, "待支付运费")],
    )
    .await;
    let info = lookup(&app, "SF107").await;
    assert_eq!(keys(&info), ["pay", "address", "complain"]);
    assert_eq!(
        info["cells"][0],
        json!({ "key": "pay", "name": "支付运单", "link": "https://pay.example/pay?w=SF107&u=oABC-user_1" })
    );

    post_event(&app, "SF107", 90011, T0 + 120, "…").await;
    assert_eq!(
        keys(&lookup(&app, "SF107").await),
        ["address", "complain"],
        "paid"
    );
    post_event(&app, "SF107", 100001, T0 + 180, "…").await;
    post_event(&app, "SF107", 200001, T0 + 240, "…").await;
    assert_eq!(keys(&lookup(&app, "SF107").await), ["address", "complain"]);
    post_event(&app, "SF107", 300002, T0 + 300, "…").await;
    assert_eq!(
        keys(&lookup(&app, "SF107").await),
        ["complain"],
        "out for delivery"
    );

    // The openid is URL-encoded into the link.
    seed(&app, "SF108", &[(90010, T0, "待支付运费")]).await;
    let mut q = query("SF108", CB, TOKEN, now());
    q[1].1 = "o&x=1 {waybill_id}".into();
    let info = unwrap_jsonp(&get_raw(&app, &encode(&q)).await.body, CB);
    assert_eq!(
        info["cells"][0]["link"],
        "https://pay.example/pay?w=SF108&u=o%26x%3D1%20%7Bwaybill_id%7D"
    );
}

#[tokio::test]
async fn the_cells_api_needs_the_bearer_key_and_validates_like_the_config() {
    let app = spawn_app().await;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
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

    let unknown_field =
        json!({ "cells": [{ "key": "a", "name": "a", "link": "https://c/", "icon": "x" }] });
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
    base: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Gateway for FileApp {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
    fn http(&self) -> &reqwest::Client {
        &self.client
    }
}

async fn spawn_with_config_file(toml: &str) -> FileApp {
    wxexpress::telemetry::init();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wxexpress.toml");
    std::fs::write(&path, toml).unwrap();
    let db = format!("sqlite://{}/gw.db", dir.path().display());
    let env: BTreeMap<String, String> = [
        ("WXEXPRESS_SERVER__LISTEN", "127.0.0.1:0"),
        ("WXEXPRESS_SERVER__WORKERS", "1"),
        ("WXEXPRESS_DATABASE__URL", db.as_str()),
        ("WXEXPRESS_WECHAT__APPID", APPID),
        ("WXEXPRESS_WECHAT__SECRET", "test-secret"),
        ("WXEXPRESS_WECHAT__ORIGINAL_ID", ORIGINAL_ID),
        ("WXEXPRESS_WECHAT__TOKEN", TOKEN),
        ("WXEXPRESS_WECHAT__ENCODING_AES_KEY", AES_KEY),
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
    let app = Application::build(settings).await.expect("app builds");
    let base = format!("http://{}", app.addr());
    tokio::spawn(app.run_until_stopped());
    FileApp {
        base,
        client: reqwest::Client::new(),
        _dir: dir,
    }
}

const CONFIG_CELLS: &str = r#"
[[cells]]
key = "complain"
name = "投诉"
link = "https://c.example/complain/{waybill_id}"

[[cells]]
key = "pay"
name = "支付运单"
link = "https://pay.example/{waybill_id}"
when = { latest_action_in = [90010] }
"#;

#[tokio::test]
async fn the_config_files_cells_apply_until_the_api_replaces_them_and_again_after_a_delete() {
    let app = spawn_with_config_file(CONFIG_CELLS).await;
    seed(&app, "SF110", &[(90010, T0, "待支付运费")]).await;
    assert_eq!(keys(&lookup(&app, "SF110").await), ["complain", "pay"]);
    let view = get_cells(&app).await;
    assert_eq!(view["source"], "config");
    assert_eq!(
        view["cells"][1]["when"],
        json!({ "latest_action_in": [90010] })
    );

    // Replaced without a restart: the next lookup serves the new list.
    assert_eq!(put_cells(&app, &standard_cells()).await.status(), 200);
    assert_eq!(
        keys(&lookup(&app, "SF110").await),
        ["pay", "address", "complain"]
    );

    // An empty list is a list: no cells, not the file's.
    assert_eq!(put_cells(&app, &json!({ "cells": [] })).await.status(), 200);
    assert!(keys(&lookup(&app, "SF110").await).is_empty());
    assert_eq!(get_cells(&app).await["source"], "database");

    // DELETE hands the file's cells back.
    let r = send_cells(&app, reqwest::Method::DELETE, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(keys(&lookup(&app, "SF110").await), ["complain", "pay"]);
}

#[tokio::test]
async fn a_client_over_its_rate_limit_gets_42900_with_http_429() {
    let app = spawn_app_with(&[
        ("WXEXPRESS_JSONP__RATE_PER_SEC", "0.2"),
        ("WXEXPRESS_JSONP__RATE_BURST", "3"),
    ])
    .await;
    seed(&app, "SF111", &[(100001, T0, "已揽件")]).await;
    // Bad signatures count too: the limit also stops guessing.
    let bad = query("SF111", CB, "guess", now());
    assert_refused(&get_raw(&app, &encode(&bad)).await, 40100);
    assert_eq!(lookup(&app, "SF111").await["err_code"], 0);
    assert_eq!(lookup(&app, "SF999").await["err_code"], 40400);

    let r = get_raw(&app, &encode(&query("SF111", CB, TOKEN, now()))).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.content_type, "application/javascript; charset=utf-8");
    assert_eq!(r.retry_after.as_deref(), Some("1"));
    let info = unwrap_jsonp(&r.body, CB);
    assert_eq!(info["err_code"], 42900);
    assert_eq!(info["traces"], json!([]));
    assert!(!r.body.contains("已揽件"));
    // A forwarded-for header is ignored unless configured: it cannot buy a fresh bucket.
    let r = get_from(
        &app,
        &encode(&query("SF111", CB, TOKEN, now())),
        Some("198.51.100.7"),
    )
    .await;
    assert_eq!(r.status, 429);
}

#[tokio::test]
async fn behind_a_configured_proxy_each_forwarded_client_has_its_own_bucket() {
    let app = spawn_app_with(&[
        ("WXEXPRESS_JSONP__RATE_PER_SEC", "0.2"),
        ("WXEXPRESS_JSONP__RATE_BURST", "2"),
        ("WXEXPRESS_JSONP__CLIENT_IP_HEADER", "X-Forwarded-For"),
    ])
    .await;
    seed(&app, "SF112", &[(100001, T0, "已揽件")]).await;
    let q = || encode(&query("SF112", CB, TOKEN, now()));
    for _ in 0..2 {
        assert_eq!(get_from(&app, &q(), Some("198.51.100.7")).await.status, 200);
    }
    assert_eq!(get_from(&app, &q(), Some("198.51.100.7")).await.status, 429);
    // Only the last entry (the proxy's) counts: a client-written first entry changes nothing.
    let r = get_from(&app, &q(), Some("198.51.100.8")).await;
    assert_eq!(r.status, 200, "another client");
    assert_eq!(unwrap_jsonp(&r.body, CB)["err_code"], 0);
}

#[tokio::test]
async fn a_signed_url_opens_only_the_first_waybill_it_was_used_for() {
    let app = spawn_app().await;
    seed(&app, "SF120", &[(100001, T0, "已揽件")]).await;
    seed(&app, "SF121", &[(100001, T0, "已揽件")]).await;
    let ts = now();
    let url = |orderid: &str| encode(&signed_query(orderid, CB, TOKEN, ts, "555", "oU1"));
    let first = unwrap_jsonp(&get_raw(&app, &url("SF120")).await.body, CB);
    assert_eq!(first["err_code"], 0);
    // A reload works.
    let again = unwrap_jsonp(&get_raw(&app, &url("SF120")).await.body, CB);
    assert_eq!(again["traces"], first["traces"]);
    // Another waybill needs another URL: no data, an error code of its own.
    let r = get_raw(&app, &url("SF121")).await;
    assert_eq!(r.status, 200);
    let other = unwrap_jsonp(&r.body, CB);
    assert_eq!(other["err_code"], 40102, "{other}");
    assert_eq!(other["traces"], json!([]));
    assert!(other.get("waybill_id").is_none());
    // A fresh URL (new nonce) for that waybill works.
    let fresh = encode(&signed_query("SF121", CB, TOKEN, ts, "556", "oU1"));
    assert_eq!(
        unwrap_jsonp(&get_raw(&app, &fresh).await.body, CB)["err_code"],
        0
    );
}

#[tokio::test]
async fn lookups_are_limited_per_signed_url_and_per_openid_not_only_per_ip() {
    // As when WeChat's servers relay every user's lookup: one IP, many users.
    let app = spawn_app_with(&[
        ("WXEXPRESS_JSONP__RATE_PER_SEC", "0"),
        ("WXEXPRESS_JSONP__KEY_RATE_PER_SEC", "0.2"),
        ("WXEXPRESS_JSONP__KEY_RATE_BURST", "2"),
    ])
    .await;
    seed(&app, "SF122", &[(100001, T0, "已揽件")]).await;
    let ts = now();
    // One URL reloaded: its own bucket runs dry.
    let url = encode(&signed_query("SF122", CB, TOKEN, ts, "700", "oUrl"));
    for _ in 0..2 {
        assert_eq!(get_raw(&app, &url).await.status, 200);
    }
    let r = get_raw(&app, &url).await;
    assert_eq!(r.status, 429);
    assert_eq!(unwrap_jsonp(&r.body, CB)["err_code"], 42900);
    // One openid with ever new URLs: its bucket runs dry too.
    for n in 0..2 {
        let u = encode(&signed_query(
            "SF122",
            CB,
            TOKEN,
            ts,
            &format!("71{n}"),
            "oSame",
        ));
        assert_eq!(get_raw(&app, &u).await.status, 200);
    }
    let u = encode(&signed_query("SF122", CB, TOKEN, ts, "719", "oSame"));
    assert_eq!(get_raw(&app, &u).await.status, 429);
    // Another user behind the same IP is not throttled by them.
    let u = encode(&signed_query("SF122", CB, TOKEN, ts, "720", "oOther"));
    let r = get_raw(&app, &u).await;
    assert_eq!(r.status, 200);
    assert_eq!(unwrap_jsonp(&r.body, CB)["err_code"], 0);
}

#[tokio::test]
async fn urls_are_signed_with_the_official_accounts_token_once_it_is_set() {
    let app = spawn_app_with(&[("WXEXPRESS_JSONP__TOKEN", "OfficialAcct")]).await;
    seed(&app, "SF130", &[(100001, T0, "已揽件")]).await;
    // The message-push token no longer signs lookups.
    let by_push_token = get_raw(&app, &encode(&query("SF130", CB, TOKEN, now()))).await;
    assert_refused(&by_push_token, 40100);
    let by_account_token = encode(&query("SF130", CB, "OfficialAcct", now()));
    let info = unwrap_jsonp(&get_raw(&app, &by_account_token).await.body, CB);
    assert_eq!(info["err_code"], 0, "{info}");
}

#[tokio::test]
async fn a_number_outside_the_onboarding_pattern_gets_40401_even_when_it_exists() {
    let app = spawn_app_with(&[("WXEXPRESS_JSONP__WAYBILL_PATTERN", "SF[0-9]{3}")]).await;
    seed(&app, "SF131", &[(100001, T0, "已揽件")]).await;
    seed(&app, "YT131", &[(100001, T0, "已揽件")]).await;
    assert_eq!(lookup(&app, "SF131").await["err_code"], 0);
    // Anchored: a match inside a longer number is not a match.
    for orderid in ["YT131", "SF1310", "xSF131"] {
        let r = get_raw(&app, &encode(&query(orderid, CB, TOKEN, now()))).await;
        assert_refused(&r, 40401);
    }
}
