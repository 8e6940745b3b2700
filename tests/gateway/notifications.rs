//! Shipping notifications and paid waybills against the in-process sandbox: rules, the
//! consent ledger (subscriptions and legacy credentials), delivery through the outbox, and
//! WeChat Pay v2 notifications.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use wxexpress::app::Application;
use wxexpress::config;
use wxexpress::notify::pay::{self, Fields, SignType};
use wxexpress::notify::NotifyStats;
use wxexpress::sandbox::defaults::DEFAULT_SUBSCRIBE_TEMPLATE;
use wxexpress::sandbox::{ApiFault, CredentialKind, Faults, Sandbox, SandboxSettings};
use wxexpress::store::{EntryKind, EntryState, SkipReason, Store};

use crate::helpers::{event_body, waybill_body, API_KEY};

const PAY_KEY: &str = "TestKeyForDocsOnly0123456789abcd";
const PAY_APPID: &str = "wxd678efh567hg6787";
const PAY_MCH: &str = "1230000109";

/// A sandboxed gateway whose `[notifications]` come from a TOML snippet ("" = the sandbox's
/// example rules).
struct NotifyApp {
    base: String,
    client: reqwest::Client,
    store: Store,
    sandbox: Option<Sandbox>,
    stats: Arc<NotifyStats>,
    _dir: tempfile::TempDir,
}

fn base_env(dir: &std::path::Path, db: &str) -> BTreeMap<String, String> {
    let url = format!("sqlite://{}/{db}", dir.display());
    [
        ("WXEXPRESS_SERVER__LISTEN", "127.0.0.1:0"),
        ("WXEXPRESS_SERVER__WORKERS", "2"),
        ("WXEXPRESS_DATABASE__URL", url.as_str()),
        ("WXEXPRESS_BACKOFFICE__API_KEYS", API_KEY),
        (
            "WXEXPRESS_PRIVACY__DATA_KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        ),
        ("WXEXPRESS_OUTBOX__POLL_INTERVAL_MS", "20"),
        ("WXEXPRESS_OUTBOX__RETRY_SCHEDULE", "0.05,0.1,0.2"),
        ("WXEXPRESS_NOTIFICATIONS__POLL_INTERVAL_MS", "20"),
        ("WXEXPRESS_WECHATPAY__MCH_ID", PAY_MCH),
        ("WXEXPRESS_WECHATPAY__API_KEY", PAY_KEY),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

async fn spawn(notifications_toml: &str, extra: &[(&str, &str)]) -> NotifyApp {
    wxexpress::telemetry::init();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = base_env(dir.path(), "gw.db");
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    let file = dir.path().join("wxexpress.toml");
    std::fs::write(&file, notifications_toml).unwrap();
    // As `serve --sandbox`: the in-process sandbox plays whatever [wechat] describes.
    let opts = config::LoadOptions {
        generate: false,
        sandbox: true,
    };
    let settings = config::load_with(Some(&file), &env, opts).expect("test settings are valid");
    let app = Application::build(settings).await.expect("app builds");
    let app_view = NotifyApp {
        base: format!("http://{}", app.addr()),
        client: reqwest::Client::new(),
        store: app.store().clone(),
        sandbox: app.sandbox().cloned(),
        stats: app
            .notification_stats()
            .expect("the notification worker runs"),
        _dir: dir,
    };
    tokio::spawn(app.run_until_stopped());
    app_view
}

impl NotifyApp {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn sandbox(&self) -> &Sandbox {
        self.sandbox.as_ref().expect("sandbox mode")
    }

    async fn put_waybill(&self, id: &str, body: &Value) {
        let r = self
            .client
            .put(self.url(&format!("/v1/waybills/{id}")))
            .bearer_auth(API_KEY)
            .json(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }

    async fn event(&self, id: &str, action_type: i64, action_time: i64, msg: &str) {
        let r = self
            .client
            .post(self.url(&format!("/v1/waybills/{id}/events")))
            .bearer_auth(API_KEY)
            .json(&event_body(action_type, action_time, msg))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }

    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(API_KEY)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn subscribe(&self, openid: &str, template_id: &str, count: i64) {
        let r = self
            .post(
                "/v1/subscriptions",
                &json!({ "openid": openid, "subscriptions": [{ "template_id": template_id, "count": count }] }),
            )
            .await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    async fn notifications(&self, id: &str) -> Vec<Value> {
        let r = self
            .client
            .get(self.url(&format!("/v1/waybills/{id}")))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        let w: Value = r.json().await.unwrap();
        w["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["kind"] != "pathnotify")
            .cloned()
            .collect()
    }

    /// Waits until no notification is pending (bounded).
    async fn settled(&self) {
        for _ in 0..400 {
            let counts = self.store.notification_counts().await.unwrap();
            if !counts
                .iter()
                .any(|(_, state, _, n)| *state == EntryState::Pending && *n > 0)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "notifications did not settle: {:?}",
            self.store.notification_counts().await.unwrap()
        );
    }

    fn api_calls(&self, api: &str) -> u64 {
        self.sandbox()
            .stats()
            .apis
            .get(api)
            .map(|a| a.calls)
            .unwrap_or(0)
    }
}

fn waybill_with(sender: Option<&str>, receiver: Option<&str>) -> Value {
    let mut w = waybill_body();
    w["openids"] = json!({ "sender": sender, "receiver": receiver });
    w
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn states(notes: &[Value]) -> Vec<(String, String)> {
    notes
        .iter()
        .map(|n| {
            let reason = n["skip_reason"].as_str().unwrap_or("");
            (
                n["kind"].as_str().unwrap().to_string(),
                format!(
                    "{}{}{reason}",
                    n["state"].as_str().unwrap(),
                    if reason.is_empty() { "" } else { ":" }
                ),
            )
        })
        .collect()
}

// ---- rules and the consent ledger ------------------------------------------------------

#[tokio::test]
async fn a_subscribed_sender_is_notified_once_per_grant_and_skipped_without_one() {
    let app = spawn("", &[]).await;
    let sb = app.sandbox();
    sb.grant_subscriptions("oSender01", DEFAULT_SUBSCRIBE_TEMPLATE, 5)
        .unwrap();
    app.subscribe("oSender01", DEFAULT_SUBSCRIBE_TEMPLATE, 1)
        .await;
    app.put_waybill("NS1", &waybill_with(Some("oSender01"), None))
        .await;
    let t = now() - 100;
    app.event("NS1", 100001, t, "快件已由快递员张三揽收").await;
    app.settled().await;
    app.event("NS1", 300003, t + 50, "已签收，签收人：本人")
        .await;
    app.settled().await;

    let inbox = sb.inbox_for_openid("oSender01");
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    let m = &inbox[0];
    assert_eq!(m["kind"], "subscribe");
    assert_eq!(m["template_id"], DEFAULT_SUBSCRIBE_TEMPLATE);
    assert_eq!(m["page"], "pages/waybill/detail?waybill_id=NS1");
    assert_eq!(m["data"]["character_string1"]["value"], "NS1");
    assert_eq!(m["data"]["phrase2"]["value"], "已揽件");
    assert_eq!(m["data"]["thing3"]["value"], "快件已由快递员张三揽收");

    // The second message had no grant left: nothing was sent, and it is skipped, not failed.
    assert_eq!(
        app.api_calls("subscribe_send"),
        1,
        "never sent without consent"
    );
    let notes = app.notifications("NS1").await;
    assert_eq!(
        states(&notes),
        [
            ("subscribe".to_string(), "delivered".to_string()),
            ("subscribe".to_string(), "skipped:no_consent".to_string())
        ]
    );
    assert_eq!(notes[0]["attempts"][0]["outcome"], "ok");
    assert_eq!(notes[1]["attempts"].as_array().unwrap().len(), 0);
    assert_eq!(app.stats.summary(), (1, 1, 0));
}

#[tokio::test]
async fn an_over_long_action_msg_arrives_as_a_valid_thing() {
    let app = spawn("", &[]).await;
    app.sandbox()
        .grant_subscriptions("oLong0001", DEFAULT_SUBSCRIBE_TEMPLATE, 1)
        .unwrap();
    app.subscribe("oLong0001", DEFAULT_SUBSCRIBE_TEMPLATE, 1)
        .await;
    app.put_waybill("NL1", &waybill_with(None, Some("oLong0001")))
        .await;
    let msg = "【深圳市】快件已到达深圳转运中心，下一站泉州集散中心，预计明天由快递员派送，请保持电话畅通";
    app.event("NL1", 300002, now() - 10, msg).await;
    app.settled().await;

    let inbox = app.sandbox().inbox_for_openid("oLong0001");
    assert_eq!(inbox.len(), 1, "accepted: no 47003");
    let thing = inbox[0]["data"]["thing3"]["value"].as_str().unwrap();
    assert_eq!(thing, "【深圳市】快件已到达深圳转运中心…");
    assert!(thing.chars().count() <= 20);
    assert_eq!(inbox[0]["data"]["phrase2"]["value"], "派送中");
}

#[tokio::test]
async fn wechat_43101_sets_the_users_count_to_zero_and_skips() {
    let app = spawn("", &[]).await;
    // The ledger believes in two grants; WeChat has none (the user unsubscribed).
    app.sandbox().add_user("oGone0001");
    app.subscribe("oGone0001", DEFAULT_SUBSCRIBE_TEMPLATE, 2)
        .await;
    app.put_waybill("NG1", &waybill_with(Some("oGone0001"), None))
        .await;
    app.event("NG1", 100001, now() - 100, "揽收").await;
    app.settled().await;
    app.event("NG1", 300003, now() - 50, "签收").await;
    app.settled().await;

    let rows = app.store.subscriptions_of("oGone0001").await.unwrap();
    assert_eq!(rows[0].remaining, 0);
    let notes = app.notifications("NG1").await;
    assert_eq!(notes[0]["skip_reason"], "no_consent");
    assert_eq!(notes[0]["attempts"][0]["errcode"], 43101);
    assert_eq!(notes[1]["skip_reason"], "no_consent");
    assert_eq!(
        app.api_calls("subscribe_send"),
        1,
        "the second was not even tried"
    );
    assert_eq!(app.stats.summary(), (0, 2, 0));
}

const TEMPLATE_RULES: &str = r#"
[[notifications.rules]]
name = "legacy_all"
action_types = [100001, 200001, 300002, 300003]
recipients = ["sender"]
api = "template"
template_id = "sandbox-legacy-shipping"
page = "pages/waybill/detail?waybill_id={waybill_id}"
emphasis_keyword = "keyword2.DATA"
[notifications.rules.data]
keyword1 = "{waybill_id}"
keyword2 = "{status}"
keyword3 = "{action_time}"
keyword4 = "{action_msg}"
"#;

async fn register(app: &NotifyApp, openid: &str, kind: &str, value: &str, issued_at: i64) {
    let r = app
        .post(
            "/v1/credentials",
            &json!({ "openid": openid, "kind": kind, "value": value, "issued_at": issued_at }),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

#[tokio::test]
async fn the_fourth_message_on_one_prepay_id_is_never_sent() {
    let app = spawn(TEMPLATE_RULES, &[]).await;
    let issued = now() - 3_600;
    app.sandbox()
        .add_credential("oPay00001", CredentialKind::PrepayId, "wxPREPAY001", issued);
    register(&app, "oPay00001", "prepay_id", "wxPREPAY001", issued).await;
    app.put_waybill("NP1", &waybill_with(Some("oPay00001"), None))
        .await;
    let t = now() - 1_000;
    for (i, code) in [100001, 200001, 300002, 300003].iter().enumerate() {
        app.event("NP1", *code, t + i as i64 * 10, "轨迹").await;
        app.settled().await;
    }
    let inbox = app.sandbox().inbox_for_openid("oPay00001");
    assert_eq!(inbox.len(), 3);
    assert_eq!(inbox[0]["kind"], "template");
    assert_eq!(inbox[0]["emphasis_keyword"], "keyword2.DATA");
    assert_eq!(inbox[2]["data"]["keyword2"]["value"], "派送中");
    assert_eq!(
        app.api_calls("template_send"),
        3,
        "the used-up prepay_id was never offered"
    );
    let notes = app.notifications("NP1").await;
    assert_eq!(notes[3]["state"], "skipped");
    assert_eq!(notes[3]["skip_reason"], "no_consent");
    let creds = app.store.credentials_of("oPay00001").await.unwrap();
    assert_eq!((creds[0].uses, creds[0].max_uses), (3, 3));
}

#[tokio::test]
async fn the_soonest_expiring_credential_is_used_and_refused_ones_are_discarded() {
    let app = spawn(TEMPLATE_RULES, &[]).await;
    let t = now();
    // Expires within the 60-s margin: registered, never offered.
    register(
        &app,
        "oForm0001",
        "form_id",
        "FORMSTALE",
        t - 7 * 86_400 + 30,
    )
    .await;
    // Expires soonest among the usable ones, but WeChat does not know it: 41028.
    register(&app, "oForm0001", "form_id", "FORMUNKNOWN", t - 3 * 86_400).await;
    // WeChat knows this one.
    app.sandbox()
        .add_credential("oForm0001", CredentialKind::FormId, "FORMGOOD", t - 86_400);
    register(&app, "oForm0001", "form_id", "FORMGOOD", t - 86_400).await;
    app.put_waybill("NF1", &waybill_with(Some("oForm0001"), None))
        .await;
    app.event("NF1", 300003, t - 10, "已签收").await;
    app.settled().await;

    assert_eq!(app.sandbox().inbox_for_openid("oForm0001").len(), 1);
    assert_eq!(app.api_calls("template_send"), 2);
    let notes = app.notifications("NF1").await;
    assert_eq!(notes[0]["state"], "delivered");
    let attempts = notes[0]["attempts"].as_array().unwrap();
    let outcomes: Vec<(&str, i64)> = attempts
        .iter()
        .map(|a| {
            (
                a["outcome"].as_str().unwrap(),
                a["errcode"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(outcomes, [("credential-refused", 41028), ("ok", 0)]);
    let creds = app.store.credentials_of("oForm0001").await.unwrap();
    let by_value: BTreeMap<&str, (i64, Option<&str>)> = creds
        .iter()
        .map(|c| (c.value.as_str(), (c.uses, c.discarded.as_deref())))
        .collect();
    assert_eq!(by_value["FORMSTALE"], (0, None));
    assert_eq!(by_value["FORMUNKNOWN"], (1, Some("41028")));
    assert_eq!(by_value["FORMGOOD"], (1, None));
    assert_eq!(app.stats.credentials_refused.load(Ordering::Relaxed), 1);
}

// ---- delivery through the outbox -----------------------------------------------------

#[tokio::test]
async fn sends_to_one_user_never_overlap_so_wechat_never_answers_43108() {
    let app = spawn("", &[("WXEXPRESS_NOTIFICATIONS__CONCURRENCY", "8")]).await;
    let sb = app.sandbox();
    sb.set_faults(Faults {
        subscribe_send: ApiFault {
            latency_ms: 40,
            ..Default::default()
        },
        ..Default::default()
    });
    sb.grant_subscriptions("oBusy0001", DEFAULT_SUBSCRIBE_TEMPLATE, 8)
        .unwrap();
    app.subscribe("oBusy0001", DEFAULT_SUBSCRIBE_TEMPLATE, 8)
        .await;
    let t = now() - 100;
    for i in 0..8 {
        let id = format!("NB{i}");
        app.put_waybill(&id, &waybill_with(Some("oBusy0001"), None))
            .await;
        app.event(&id, 100001, t, "揽收").await;
    }
    app.settled().await;
    assert_eq!(sb.inbox_for_openid("oBusy0001").len(), 8);
    let stats = sb.stats();
    let errors = &stats.apis["subscribe_send"].errors;
    assert!(!errors.contains_key(&43108), "{errors:?}");
    assert_eq!(app.stats.summary(), (8, 0, 0));
}

#[tokio::test]
async fn transient_failures_retry_and_a_dead_notification_is_redriven_with_its_grant() {
    let app = spawn("", &[]).await;
    let sb = app.sandbox();
    sb.grant_subscriptions("oRetry001", DEFAULT_SUBSCRIBE_TEMPLATE, 1)
        .unwrap();
    app.subscribe("oRetry001", DEFAULT_SUBSCRIBE_TEMPLATE, 1)
        .await;
    // Two 503s (transient, retried), then a 47003 (permanent: dead).
    sb.set_faults(Faults {
        subscribe_send: ApiFault {
            http_status: Some(503),
            times: Some(2),
            ..Default::default()
        },
        ..Default::default()
    });
    app.put_waybill("NR1", &waybill_with(Some("oRetry001"), None))
        .await;
    app.event("NR1", 100001, now() - 10, "揽收").await;
    app.settled().await;
    let notes = app.notifications("NR1").await;
    assert_eq!(notes[0]["state"], "delivered");
    assert_eq!(notes[0]["attempts"].as_array().unwrap().len(), 3);
    assert_eq!(notes[0]["attempts"][0]["http_status"], 503);

    sb.grant_subscriptions("oRetry001", DEFAULT_SUBSCRIBE_TEMPLATE, 1)
        .unwrap();
    app.subscribe("oRetry001", DEFAULT_SUBSCRIBE_TEMPLATE, 1)
        .await;
    sb.set_faults(Faults {
        subscribe_send: ApiFault {
            errcode: Some(40037),
            times: Some(1),
            ..Default::default()
        },
        ..Default::default()
    });
    app.event("NR1", 300003, now() - 5, "签收").await;
    app.settled().await;
    let notes = app.notifications("NR1").await;
    assert_eq!(notes[1]["state"], "dead");
    assert_eq!(notes[1]["attempts"][0]["errcode"], 40037);
    assert_eq!(app.stats.summary().2, 1, "counted as failed");

    // Redriven, it reuses the grant it took (the ledger shows none left) and is delivered.
    assert_eq!(
        app.store.subscriptions_of("oRetry001").await.unwrap()[0].remaining,
        0
    );
    let id = notes[1]["id"].as_i64().unwrap();
    let r = app
        .post(&format!("/v1/notifications/{id}/retry"), &json!({}))
        .await;
    assert_eq!(r.status(), 202);
    app.settled().await;
    let notes = app.notifications("NR1").await;
    assert_eq!(notes[1]["state"], "delivered");
    assert_eq!(sb.inbox_for_openid("oRetry001").len(), 2);
}

#[tokio::test]
async fn a_43101_answering_an_unanswered_delivered_try_counts_as_delivered() {
    let app = spawn(
        "",
        &[
            ("WXEXPRESS_OUTBOX__CALL_TIMEOUT_MS", "300"),
            ("WXEXPRESS_OUTBOX__RETRY_SCHEDULE", "1.5,1.5"),
        ],
    )
    .await;
    let sb = app.sandbox();
    sb.grant_subscriptions("oSlow0001", DEFAULT_SUBSCRIBE_TEMPLATE, 1)
        .unwrap();
    app.subscribe("oSlow0001", DEFAULT_SUBSCRIBE_TEMPLATE, 2)
        .await;
    // WeChat delivers, but answers after our timeout.
    sb.set_faults(Faults {
        subscribe_send: ApiFault {
            latency_ms: 700,
            ..Default::default()
        },
        ..Default::default()
    });
    app.put_waybill("NT1", &waybill_with(Some("oSlow0001"), None))
        .await;
    app.event("NT1", 100001, now() - 10, "揽收").await;
    for _ in 0..100 {
        if app.notifications("NT1").await[0]["tries"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    sb.set_faults(Faults::default());
    app.settled().await;

    assert_eq!(sb.inbox_for_openid("oSlow0001").len(), 1, "never twice");
    let notes = app.notifications("NT1").await;
    assert_eq!(notes[0]["state"], "delivered");
    let errcodes: Vec<Value> = notes[0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["errcode"].clone())
        .collect();
    assert_eq!(errcodes, [Value::Null, json!(43101)]);
    // The ledger keeps the user's other subscription: this 43101 was not a revocation.
    assert_eq!(
        app.store.subscriptions_of("oSlow0001").await.unwrap()[0].remaining,
        1
    );
}

#[tokio::test]
async fn an_unanswered_send_on_a_long_term_template_is_not_retried() {
    let app = spawn("", &[("WXEXPRESS_OUTBOX__CALL_TIMEOUT_MS", "300")]).await;
    let sb = app.sandbox();
    sb.grant_subscriptions("oLongT001", DEFAULT_SUBSCRIBE_TEMPLATE, 5)
        .unwrap();
    let r = app
        .post(
            "/v1/subscriptions",
            &json!({ "openid": "oLongT001", "subscriptions": [{ "template_id": DEFAULT_SUBSCRIBE_TEMPLATE, "long_term": true }] }),
        )
        .await;
    assert_eq!(r.status(), 200);
    sb.set_faults(Faults {
        subscribe_send: ApiFault {
            latency_ms: 700,
            ..Default::default()
        },
        ..Default::default()
    });
    app.put_waybill("NLT1", &waybill_with(Some("oLongT001"), None))
        .await;
    app.event("NLT1", 100001, now() - 10, "揽收").await;
    app.settled().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let notes = app.notifications("NLT1").await;
    assert_eq!(notes[0]["state"], "dead");
    assert_eq!(notes[0]["attempts"].as_array().unwrap().len(), 1);
    assert!(notes[0]["last_error"]
        .as_str()
        .unwrap()
        .contains("long-term"));
    assert_eq!(app.api_calls("subscribe_send"), 1, "at most once");
}

#[tokio::test]
async fn two_gateway_instances_racing_for_the_last_grant_send_once() {
    wxexpress::telemetry::init();
    // One WeChat (a sandbox of our own), one database, two gateways.
    let secret = "shared-sandbox-secret";
    let sandbox = Sandbox::new(SandboxSettings {
        secret: secret.into(),
        ..SandboxSettings::default()
    });
    let running = sandbox
        .start(std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let api_base = format!("http://{}", running.addr);
    let toml_path = dir.path().join("wxexpress.toml");
    let rules: String = [
        "[[notifications.rules]]",
        "name = \"picked_up\"",
        "action_types = [100001, 300003]",
        "recipients = [\"sender\"]",
        &format!("template_id = \"{DEFAULT_SUBSCRIBE_TEMPLATE}\""),
        "[notifications.rules.data]",
        "character_string1 = \"{waybill_id}\"",
        "phrase2 = \"{status}\"",
        "thing3 = \"{action_msg}\"",
        "time4 = \"{action_time}\"",
    ]
    .join("\n");
    std::fs::write(&toml_path, rules).unwrap();
    let mut apps = Vec::new();
    let mut stats = Vec::new();
    for _ in 0..2 {
        let mut env = base_env(dir.path(), "shared.db");
        let d = SandboxSettings::default();
        for (k, v) in [
            ("WXEXPRESS_WECHAT__APPID", d.appid.as_str()),
            ("WXEXPRESS_WECHAT__SECRET", secret),
            ("WXEXPRESS_WECHAT__ORIGINAL_ID", d.original_id.as_str()),
            ("WXEXPRESS_WECHAT__TOKEN", d.token.as_str()),
            (
                "WXEXPRESS_WECHAT__ENCODING_AES_KEY",
                d.encoding_aes_key.as_str(),
            ),
            ("WXEXPRESS_WECHAT__API_BASE", api_base.as_str()),
        ] {
            env.insert(k.into(), v.into());
        }
        let settings = config::load_from(Some(&toml_path), &env, false).unwrap();
        let app = Application::build(settings).await.unwrap();
        stats.push(app.notification_stats().unwrap());
        apps.push((format!("http://{}", app.addr()), app.store().clone()));
        tokio::spawn(app.run_until_stopped());
    }
    // WeChat would accept two messages; the ledger holds one grant: one is sent.
    sandbox
        .grant_subscriptions("oRace0001", DEFAULT_SUBSCRIBE_TEMPLATE, 2)
        .unwrap();
    let client = reqwest::Client::new();
    let (a, b) = (&apps[0].0, &apps[1].0);
    let r = client
        .post(format!("{a}/v1/subscriptions"))
        .bearer_auth(API_KEY)
        .json(&json!({ "openid": "oRace0001", "subscriptions": [{ "template_id": DEFAULT_SUBSCRIBE_TEMPLATE }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Both notifications become due at once, one event through each gateway.
    for (i, base) in [a, b].iter().enumerate() {
        let id = format!("NRACE{i}");
        let r = client
            .put(format!("{base}/v1/waybills/{id}"))
            .bearer_auth(API_KEY)
            .json(&waybill_with(Some("oRace0001"), None))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let t = now() - 10;
    let post = |base: String, id: &'static str| {
        let client = client.clone();
        async move {
            client
                .post(format!("{base}/v1/waybills/{id}/events"))
                .bearer_auth(API_KEY)
                .json(&event_body(100001, t, "揽收"))
                .send()
                .await
                .unwrap()
        }
    };
    let (p, q) = tokio::join!(post(a.clone(), "NRACE0"), post(b.clone(), "NRACE1"));
    assert_eq!((p.status().as_u16(), q.status().as_u16()), (202, 202));

    let store = &apps[0].1;
    for _ in 0..400 {
        let counts = store.notification_counts().await.unwrap();
        if counts
            .iter()
            .map(|(_, s, _, n)| if *s == EntryState::Pending { 0 } else { *n })
            .sum::<i64>()
            == 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sandbox.inbox_for_openid("oRace0001").len(), 1);
    let counts = store.notification_counts().await.unwrap();
    assert_eq!(
        counts,
        [
            (EntryKind::Subscribe, EntryState::Delivered, None, 1),
            (
                EntryKind::Subscribe,
                EntryState::Skipped,
                Some(SkipReason::NoConsent),
                1
            ),
        ]
    );
    let sent: u64 = stats.iter().map(|s| s.summary().0).sum();
    assert_eq!(sent, 1);
    running.handle.stop(false).await;
}

// ---- the ledger's HTTP edge -------------------------------------------------------------

#[tokio::test]
async fn subscription_reports_are_authenticated_validated_bounded_and_counted_once() {
    let app = spawn("", &[]).await;
    let url = app.url("/v1/subscriptions");
    let good =
        json!({ "openid": "oRep00001", "subscriptions": [{ "template_id": "T1", "count": 2 }] });

    let r = app.client.post(&url).json(&good).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");

    let r = app
        .client
        .post(&url)
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let r = app
        .client
        .post(&url)
        .bearer_auth(API_KEY)
        .header("content-type", "text/plain")
        .body(good.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);

    let r = app
        .post(
            "/v1/subscriptions",
            &json!({ "openid": "bad openid", "subscriptions": [{ "template_id": "T1", "count": 1000 }] }),
        )
        .await;
    assert_eq!(r.status(), 422);
    let p: Value = r.json().await.unwrap();
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["openid", "subscriptions[0].count"]);

    let huge =
        json!({ "openid": "oRep00001", "subscriptions": [{ "template_id": "x".repeat(70_000) }] });
    let r = app.post("/v1/subscriptions", &huge).await;
    assert_eq!(r.status(), 413);

    // A replay with its Idempotency-Key counts once; the key with another body is refused.
    for expected_duplicate in [false, true] {
        let r = app
            .client
            .post(&url)
            .bearer_auth(API_KEY)
            .header("idempotency-key", "report-42")
            .json(&good)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["duplicate"], expected_duplicate);
        assert_eq!(v["subscriptions"][0]["remaining"], 2);
    }
    let other =
        json!({ "openid": "oRep00001", "subscriptions": [{ "template_id": "T1", "count": 9 }] });
    let r = app
        .client
        .post(&url)
        .bearer_auth(API_KEY)
        .header("idempotency-key", "report-42")
        .json(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(
        app.store.subscriptions_of("oRep00001").await.unwrap()[0].remaining,
        2
    );
}

#[tokio::test]
async fn credentials_are_validated_and_a_replay_changes_nothing() {
    let app = spawn("", &[]).await;
    let t = now();
    let body = json!({ "openid": "oCred0001", "kind": "prepay_id", "value": "wxPREPAYREPLAY", "issued_at": t - 60 });
    let r = app
        .client
        .post(app.url("/v1/credentials"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let r = app.post("/v1/credentials", &body).await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["uses_left"].as_i64(), v["duplicate"].as_bool()),
        (Some(3), Some(false))
    );
    assert_eq!(v["expires_at"], t - 60 + 7 * 86_400);

    let r = app.post("/v1/credentials", &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["duplicate"], true);
    let mut stolen = body.clone();
    stolen["openid"] = json!("oOther001");
    assert_eq!(app.post("/v1/credentials", &stolen).await.status(), 409);
    assert_eq!(
        app.store.credentials_of("oCred0001").await.unwrap().len(),
        1
    );

    let expired = json!({ "openid": "oCred0001", "kind": "form_id", "value": "F1", "issued_at": t - 7 * 86_400 - 1 });
    let r = app.post("/v1/credentials", &expired).await;
    assert_eq!(r.status(), 422);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["errors"][0]["field"], "issued_at");
    let bad = json!({ "openid": "oCred0001", "kind": "coupon", "value": "the formId is a mock one", "extra": 1 });
    assert_eq!(
        app.post("/v1/credentials", &bad).await.status(),
        400,
        "unknown field"
    );
    let bad =
        json!({ "openid": "oCred0001", "kind": "coupon", "value": "the formId is a mock one" });
    let r = app.post("/v1/credentials", &bad).await;
    assert_eq!(r.status(), 422);
    let p: Value = r.json().await.unwrap();
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["kind", "value", "issued_at"]);
}

// ---- WeChat Pay ---------------------------------------------------------------------------

/// Spec `wechatpay-v2-notify.md` §3.6 vector A, signed with the made-up key.
const VECTOR_A: &str = "<xml>
<appid><![CDATA[wxd678efh567hg6787]]></appid>
<attach><![CDATA[wxexpress 测试]]></attach>
<bank_type><![CDATA[OTHERS]]></bank_type>
<cash_fee>1990</cash_fee>
<fee_type><![CDATA[CNY]]></fee_type>
<is_subscribe><![CDATA[N]]></is_subscribe>
<mch_id><![CDATA[1230000109]]></mch_id>
<nonce_str><![CDATA[5K8264ILTKCH16CQ2502SI8ZNMTM67VS]]></nonce_str>
<openid><![CDATA[oUpF8uMuAJO_M2pxb1Q9zNjWeS6o]]></openid>
<out_trade_no><![CDATA[WX20241124093015A1B2]]></out_trade_no>
<result_code><![CDATA[SUCCESS]]></result_code>
<return_code><![CDATA[SUCCESS]]></return_code>
<time_end><![CDATA[20241124093021]]></time_end>
<total_fee>1990</total_fee>
<trade_type><![CDATA[JSAPI]]></trade_type>
<transaction_id><![CDATA[4200001234202411241234567890]]></transaction_id>
<sign><![CDATA[9F01333F102B8BD20BEFD52DDCA4BC45]]></sign>
</xml>";

async fn pay_app() -> NotifyApp {
    spawn("", &[("WXEXPRESS_WECHAT__APPID", PAY_APPID)]).await
}

async fn post_pay(app: &NotifyApp, xml: &str) -> (bool, String) {
    let r = app
        .client
        .post(app.url("/wechatpay/notify"))
        .header("content-type", "text/xml")
        .body(xml.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/xml"));
    let text = r.text().await.unwrap();
    let fields = pay::parse_xml(text.as_bytes()).expect("the reply is XML");
    (
        fields["return_code"] == "SUCCESS",
        fields["return_msg"].clone(),
    )
}

fn paid_waybill(out_trade_no: &str, total_fee: i64) -> Value {
    let mut w = waybill_with(Some("oPayer001"), None);
    w["payment"] = json!({ "out_trade_no": out_trade_no, "total_fee": total_fee });
    w
}

#[tokio::test]
async fn a_signed_payment_records_one_paid_event_however_often_it_is_repeated() {
    let app = pay_app().await;
    app.put_waybill("NPAY1", &paid_waybill("WX20241124093015A1B2", 1990))
        .await;
    for _ in 0..3 {
        assert_eq!(post_pay(&app, VECTOR_A).await, (true, "OK".into()));
    }
    // Vector B: the same transaction signed with HMAC-SHA256; still one event.
    let b = VECTOR_A
        .replace(
            "<time_end>",
            "<sign_type><![CDATA[HMAC-SHA256]]></sign_type>\n<time_end>",
        )
        .replace(
            "9F01333F102B8BD20BEFD52DDCA4BC45",
            "A0F6342234340CAB3CA9C571F82C0F8FADE9DC778C610E8918F1148D5F5E1580",
        );
    assert!(post_pay(&app, &b).await.0);

    let events = app.store.list_events("NPAY1").await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].action_type, 90011);
    assert_eq!(
        events[0].action_time, 1_732_411_821,
        "time_end, Beijing time"
    );
    let payment = app
        .store
        .get_payment("4200001234202411241234567890")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (payment.total_fee, payment.event_id),
        (1990, Some(events[0].id))
    );
    // The paid event flows like any event: a path node and, by the example rules, a legacy
    // notification to the sender.
    let kinds: Vec<EntryKind> = app
        .store
        .list_outbox("NPAY1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, [EntryKind::Pathnotify, EntryKind::Template]);
}

#[tokio::test]
async fn a_bad_signature_a_wrong_amount_or_unsafe_xml_is_refused_and_changes_nothing() {
    let app = pay_app().await;
    app.put_waybill("NPAY2", &paid_waybill("WX20241124093015A1B2", 2000))
        .await;
    // Right signature, wrong amount for this waybill.
    assert_eq!(post_pay(&app, VECTOR_A).await, (false, "金额不符".into()));
    // Tampered amount (the sign no longer matches).
    let tampered = VECTOR_A.replace("<total_fee>1990</total_fee>", "<total_fee>2000</total_fee>");
    assert_eq!(post_pay(&app, &tampered).await, (false, "签名失败".into()));
    // Signed with another key.
    let mut f: Fields = pay::parse_xml(VECTOR_A.as_bytes()).unwrap();
    f.insert("total_fee".into(), "2000".into());
    f.insert(
        "sign".into(),
        pay::sign(&f, "192006250b4c09247ec02edce69f6a2d", SignType::Md5),
    );
    assert!(!post_pay(&app, &pay::to_xml(&f)).await.0);
    // XXE attempt.
    let xxe = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>{}",
        VECTOR_A.replace(
            "<attach><![CDATA[wxexpress 测试]]></attach>",
            "<attach>&e;</attach>"
        )
    );
    assert_eq!(
        post_pay(&app, &xxe).await,
        (false, "参数格式校验错误".into())
    );
    // Oversized.
    let big = format!("<xml><a>{}</a></xml>", "x".repeat(70_000));
    assert!(!post_pay(&app, &big).await.0);
    // An unknown order.
    let mut g: Fields = pay::parse_xml(VECTOR_A.as_bytes()).unwrap();
    g.insert("out_trade_no".into(), "NOSUCHORDER".into());
    g.insert("sign".into(), pay::sign(&g, PAY_KEY, SignType::HmacSha256));
    assert_eq!(
        post_pay(&app, &pay::to_xml(&g)).await,
        (false, "订单不存在".into())
    );

    assert!(app.store.list_events("NPAY2").await.unwrap().is_empty());
    assert!(app
        .store
        .get_payment("4200001234202411241234567890")
        .await
        .unwrap()
        .is_none());

    // A verified failed payment is acknowledged and records nothing.
    let mut h: Fields = pay::parse_xml(VECTOR_A.as_bytes()).unwrap();
    h.insert("result_code".into(), "FAIL".into());
    h.insert("total_fee".into(), "2000".into());
    h.insert("sign".into(), pay::sign(&h, PAY_KEY, SignType::Md5));
    assert!(post_pay(&app, &pay::to_xml(&h)).await.0);
    assert!(app.store.list_events("NPAY2").await.unwrap().is_empty());
}
