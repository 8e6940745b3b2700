//! The push pipeline against the in-process sandbox: binding checks, ordering, stale and
//! coalesced events, retries by errcode class, token expiry, dead entries and redrive.

use serde_json::{json, Value};
use wxexpress::sandbox::{ApiFault, Faults};
use wxexpress::store::EntryState;

use crate::helpers::*;

const RECEIVER: &str = "13800138000";

fn inbox_types(app: &TestApp) -> Vec<i64> {
    app.sandbox()
        .inbox_for_phone(RECEIVER)
        .iter()
        .map(|n| n.action_type)
        .collect()
}

async fn notifications(app: &TestApp, id: &str) -> Vec<Value> {
    let w: Value = app.get_waybill(id).await.json().await.unwrap();
    w["notifications"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_bound_receiver_gets_every_step_in_order() {
    let app = spawn_sandboxed_app(&[]).await;
    app.sandbox().bind_phone(RECEIVER);
    app.put_waybill("P1", &waybill_body()).await;
    app.post_event("P1", &event_body(100001, 1_700_000_100, "已揽件"))
        .await;
    app.eventually("the pickup is delivered", || {
        inbox_types(&app) == vec![100001]
    })
    .await;
    app.post_event(
        "P1",
        &event_body(200001, 1_700_000_200, "快件到达 【泉州磁灶集散中心】"),
    )
    .await;
    app.eventually("the transit scan is delivered", || {
        inbox_types(&app).len() == 2
    })
    .await;
    app.drained().await;
    assert_eq!(inbox_types(&app), vec![100001, 200001]);
    let inbox = app.sandbox().inbox_for_phone(RECEIVER);
    assert_eq!(inbox[1].action_msg, "快件到达 【泉州磁灶集散中心】");
    let n = notifications(&app, "P1").await;
    assert!(n.iter().all(|n| n["state"] == "delivered"), "{n:?}");
    assert_eq!(n[0]["attempts"][0]["outcome"], "ok");
    // Every reverse query WeChat sent was answered consistently.
    assert!(app.sandbox().exchanges().len() >= 2);
}

#[tokio::test]
async fn an_unbound_receiver_is_skipped_not_failed() {
    let app = spawn_sandboxed_app(&[]).await;
    app.put_waybill("P2", &waybill_body()).await;
    app.post_event("P2", &event_body(100001, 1_700_000_100, "已揽件"))
        .await;
    app.drained().await;
    let n = notifications(&app, "P2").await;
    assert_eq!(n[0]["state"], "skipped");
    assert_eq!(n[0]["skip_reason"], "unbound");
    assert!(inbox_types(&app).is_empty());
}

#[tokio::test]
async fn a_late_scan_is_shown_in_the_path_but_not_pushed() {
    let app = spawn_sandboxed_app(&[]).await;
    app.sandbox().bind_phone(RECEIVER);
    app.put_waybill("P3", &waybill_body()).await;
    app.post_event("P3", &event_body(200001, 1_700_000_200, "到达转运中心"))
        .await;
    app.eventually("the scan is delivered", || inbox_types(&app).len() == 1)
        .await;
    app.drained().await;
    app.post_event("P3", &event_body(100001, 1_700_000_100, "已揽件（补录）"))
        .await;
    app.drained().await;
    let n = notifications(&app, "P3").await;
    assert_eq!(n[1]["state"], "skipped");
    assert_eq!(n[1]["skip_reason"], "stale");
    assert_eq!(inbox_types(&app), vec![200001]);
    let w: Value = app.get_waybill("P3").await.json().await.unwrap();
    assert_eq!(
        w["path"].as_array().unwrap().len(),
        2,
        "the late scan is in the path"
    );
}

#[tokio::test]
async fn waiting_events_are_coalesced_to_the_newest() {
    let app = spawn_sandboxed_app(&[]).await;
    app.sandbox().bind_phone(RECEIVER);
    let line = |t: i64, at: i64, msg: &str| {
        serde_json::to_string(&json!({ "waybill_id": "P4", "waybill": waybill_body(), "event": event_body(t, at, msg) })).unwrap()
    };
    let batch = [
        line(100001, 1_700_000_100, "已揽件"),
        line(200001, 1_700_000_200, "运输中"),
        line(300002, 1_700_000_300, "派送中"),
    ]
    .join("\n");
    assert_eq!(app.post_batch(batch).await.status(), 200);
    app.drained().await;
    assert_eq!(inbox_types(&app), vec![300002]);
    let reasons: Vec<Value> = notifications(&app, "P4")
        .await
        .iter()
        .map(|n| n["skip_reason"].clone())
        .collect();
    assert_eq!(
        reasons,
        vec![json!("coalesced"), json!("coalesced"), Value::Null]
    );
}

#[tokio::test]
async fn without_coalescing_every_waiting_event_is_pushed_in_order() {
    let app = spawn_sandboxed_app(&[("WXEXPRESS_OUTBOX__COALESCE", "false")]).await;
    app.sandbox().bind_phone(RECEIVER);
    let line = |t: i64, at: i64| {
        serde_json::to_string(&json!({ "waybill_id": "P5", "waybill": waybill_body(), "event": event_body(t, at, "x") })).unwrap()
    };
    app.post_batch(
        [
            line(300002, 1_700_000_300),
            line(100001, 1_700_000_100),
            line(200001, 1_700_000_200),
        ]
        .join("\n"),
    )
    .await;
    app.drained().await;
    assert_eq!(inbox_types(&app), vec![100001, 200001, 300002]);
}

#[tokio::test]
async fn system_busy_is_retried_and_recorded_as_attempts() {
    let app = spawn_sandboxed_app(&[]).await;
    app.sandbox().bind_phone(RECEIVER);
    app.sandbox().set_faults(Faults {
        pathnotify: ApiFault {
            errcode: Some(-1),
            times: Some(2),
            ..Default::default()
        },
        ..Default::default()
    });
    app.put_waybill("P6", &waybill_body()).await;
    app.post_event("P6", &event_body(100001, 1_700_000_100, "已揽件"))
        .await;
    app.drained().await;
    assert_eq!(inbox_types(&app), vec![100001]);
    let n = notifications(&app, "P6").await;
    assert_eq!(n[0]["state"], "delivered");
    let outcomes: Vec<&str> = n[0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["transient", "transient", "ok"]);
    assert_eq!(n[0]["attempts"][0]["errcode"], -1);
}

#[tokio::test]
async fn a_permanent_error_makes_the_entry_dead_until_it_is_retried() {
    let app = spawn_sandboxed_app(&[]).await;
    app.sandbox().bind_phone(RECEIVER);
    app.sandbox().set_faults(Faults {
        pathnotify: ApiFault {
            errcode: Some(150004),
            times: Some(1),
            ..Default::default()
        },
        ..Default::default()
    });
    app.put_waybill("P7", &waybill_body()).await;
    app.post_event("P7", &event_body(100001, 1_700_000_100, "已揽件"))
        .await;
    app.drained().await;
    let n = notifications(&app, "P7").await;
    assert_eq!(n[0]["state"], "dead");
    assert!(inbox_types(&app).is_empty());
    let id = n[0]["id"].as_i64().unwrap();
    let retry = |id: i64| {
        app.client
            .post(app.url(&format!("/v1/notifications/{id}/retry")))
            .bearer_auth(API_KEY)
            .send()
    };
    assert_eq!(retry(id).await.unwrap().status(), 202);
    app.drained().await;
    assert_eq!(inbox_types(&app), vec![100001]);
    assert_eq!(
        retry(id).await.unwrap().status(),
        409,
        "only dead entries can be retried"
    );
    assert_eq!(retry(999_999).await.unwrap().status(), 404);
    let r = app
        .client
        .post(app.url(&format!("/v1/notifications/{id}/retry")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_and_the_push_retried() {
    let app = spawn_sandboxed_app(&[]).await;
    app.sandbox().bind_phone(RECEIVER);
    app.put_waybill("P8", &waybill_body()).await;
    app.post_event("P8", &event_body(100001, 1_700_000_100, "已揽件"))
        .await;
    app.drained().await;
    // Eight hours pass on WeChat's side: the stored token is dead there, not yet here.
    app.sandbox().advance_clock(8 * 3600);
    app.post_event("P8", &event_body(200001, 1_700_000_200, "运输中"))
        .await;
    app.drained().await;
    assert_eq!(inbox_types(&app), vec![100001, 200001]);
    let n = notifications(&app, "P8").await;
    assert_eq!(n[1]["state"], "delivered");
    assert_eq!(
        n[1]["attempts"].as_array().unwrap().len(),
        1,
        "the token retry is inside one attempt: {n:?}"
    );
}

#[tokio::test]
async fn the_daily_quota_pauses_the_api_and_shows_in_readyz() {
    // No deadline: the node waits for the quota's reset (hours away, past any deadline).
    let app = spawn_sandboxed_app(&[("WXEXPRESS_OUTBOX__DEADLINE_SECS", "0")]).await;
    app.sandbox().bind_phone(RECEIVER);
    app.sandbox().set_faults(Faults {
        pathnotify: ApiFault {
            errcode: Some(45009),
            times: Some(1),
            ..Default::default()
        },
        ..Default::default()
    });
    app.put_waybill("P9", &waybill_body()).await;
    app.post_event("P9", &event_body(100001, 1_700_000_100, "已揽件"))
        .await;
    let store = app.store.clone();
    for _ in 0..200 {
        if !store
            .list_pauses(wxexpress::clock::now_ms())
            .await
            .unwrap()
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let ready: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["paused_apis"][0]["api"], "pathnotify", "{ready}");
    let n = notifications(&app, "P9").await;
    assert_eq!(n[0]["state"], "pending", "kept for after the quota resets");
    assert!(inbox_types(&app).is_empty());
}

/// Attempt rows of the waybill's first notification: (outcome, errcode).
async fn first_attempts(app: &TestApp, id: &str) -> Vec<(String, Option<i64>)> {
    let entry = app.store.list_outbox(id).await.unwrap()[0].id;
    app.store
        .list_attempts(entry)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.outcome, a.errcode))
        .collect()
}

#[tokio::test]
async fn a_receipt_from_a_failed_push_does_not_complete_the_next_one() {
    // Retries a second apart, so the faults can change between tries.
    let app = spawn_sandboxed_app(&[("WXEXPRESS_OUTBOX__RETRY_SCHEDULE", "1,1,1,1")]).await;
    app.sandbox().bind_phone(RECEIVER);
    // Try 1: WeChat reverse-queries (we answer: a receipt), then fails anyway with 932001.
    app.sandbox().set_faults(Faults {
        pathnotify: ApiFault {
            errcode: Some(932001),
            after_reverse_query: true,
            times: Some(1),
            ..ApiFault::default()
        },
        ..Faults::default()
    });
    app.put_waybill("P9", &waybill_body()).await;
    app.post_event("P9", &event_body(100001, 1_700_000_100, "已揽件"))
        .await;
    let mut waited = 0;
    while first_attempts(&app, "P9").await.is_empty() {
        assert!(waited < 300, "try 1 never happened");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        waited += 1;
    }
    assert_eq!(
        first_attempts(&app, "P9").await[0].1,
        Some(932001),
        "WeChat failed try 1 after its reverse query"
    );
    assert!(
        app.sandbox().exchanges().len() == 1,
        "try 1 was reverse-queried"
    );
    // Try 2: the connection drops before WeChat sees the push. Its answer is unknown and no
    // reverse query came for it: the receipt of try 1 must not make it "delivered".
    app.sandbox().set_faults(Faults {
        pathnotify: ApiFault {
            drop_connection: true,
            times: Some(1),
            ..ApiFault::default()
        },
        ..Faults::default()
    });
    app.eventually("the node reaches the user", || {
        inbox_types(&app) == vec![100001]
    })
    .await;
    app.drained().await;
    assert_eq!(inbox_types(&app), vec![100001], "exactly once");
    let attempts = first_attempts(&app, "P9").await;
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert_eq!(attempts[2], ("ok".to_owned(), Some(0)), "{attempts:?}");
    let n = notifications(&app, "P9").await;
    assert_eq!(n[0]["state"], "delivered");
}

#[tokio::test]
async fn a_push_slower_than_its_lease_keeps_the_lease_and_is_not_pushed_twice() {
    use wxexpress::app::Application;
    use wxexpress::config;
    use wxexpress::sandbox::defaults as sd;
    use wxexpress::sandbox::{Sandbox, SandboxSettings};

    wxexpress::telemetry::init();
    let sandbox = Sandbox::new(SandboxSettings::default());
    let running = sandbox
        .start(std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .unwrap();
    // WeChat takes longer than the 5 s lease to answer pathnotify.
    sandbox.set_faults(Faults {
        pathnotify: ApiFault {
            latency_ms: 6_500,
            ..ApiFault::default()
        },
        ..Faults::default()
    });
    sandbox.bind_phone(RECEIVER);
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/shared.db", dir.path().display());
    let api_base = format!("http://{}", running.addr);
    let mut apps = Vec::new();
    for _ in 0..2 {
        let env: std::collections::BTreeMap<String, String> = [
            ("WXEXPRESS_SERVER__LISTEN", "127.0.0.1:0"),
            ("WXEXPRESS_DATABASE__URL", db.as_str()),
            ("WXEXPRESS_WECHAT__APPID", sd::APPID),
            ("WXEXPRESS_WECHAT__SECRET", sd::SECRET),
            ("WXEXPRESS_WECHAT__ORIGINAL_ID", sd::ORIGINAL_ID),
            ("WXEXPRESS_WECHAT__TOKEN", sd::TOKEN),
            ("WXEXPRESS_WECHAT__ENCODING_AES_KEY", sd::ENCODING_AES_KEY),
            ("WXEXPRESS_WECHAT__API_BASE", api_base.as_str()),
            ("WXEXPRESS_BACKOFFICE__API_KEYS", API_KEY),
            (
                "WXEXPRESS_PRIVACY__DATA_KEY",
                "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            ),
            ("WXEXPRESS_OUTBOX__LEASE_SECS", "5"),
            ("WXEXPRESS_OUTBOX__POLL_INTERVAL_MS", "20"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let settings = config::load_from(None, &env, false).unwrap();
        let app = Application::build(settings).await.unwrap();
        apps.push((format!("http://{}", app.addr()), app.store().clone()));
        tokio::spawn(app.run_until_stopped());
    }
    sandbox.set_callback_url(&format!("{}/wechat/callback", apps[0].0));
    let client = reqwest::Client::new();
    let r = client
        .put(format!("{}/v1/waybills/P10", apps[0].0))
        .bearer_auth(API_KEY)
        .json(&waybill_body())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let r = client
        .post(format!("{}/v1/waybills/P10/events", apps[1].0))
        .bearer_auth(API_KEY)
        .json(&event_body(100001, 1_700_000_100, "已揽件"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let store = &apps[0].1;
    let mut waited = 0;
    loop {
        let counts = store.outbox_counts().await.unwrap();
        if counts
            .iter()
            .any(|(s, _, n)| *s == EntryState::Delivered && *n == 1)
        {
            break;
        }
        assert!(waited < 600, "not delivered: {counts:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        waited += 1;
    }
    // Give a second (lease-stealing) push the time it would need to land.
    tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    assert_eq!(sandbox.inbox_for_phone(RECEIVER).len(), 1, "pushed once");
    assert_eq!(sandbox.stats().apis["pathnotify"].calls, 1, "one call");
}

#[tokio::test]
async fn action_type_300001_is_accepted_and_pushed_as_the_documented_300002() {
    let app = spawn_sandboxed_app(&[]).await;
    app.sandbox().bind_phone(RECEIVER);
    app.put_waybill("P11", &waybill_body()).await;
    let r = app
        .post_event("P11", &event_body(300001, 1_700_000_300, "派送中"))
        .await;
    assert_eq!(r.status(), 202);
    // The same step under its documented code is the same event.
    let again = app
        .post_event("P11", &event_body(300002, 1_700_000_300, "派送中"))
        .await;
    assert_eq!(again.status(), 200, "a duplicate");
    app.eventually("the node is delivered", || {
        inbox_types(&app) == vec![300002]
    })
    .await;
    let w: Value = app.get_waybill("P11").await.json().await.unwrap();
    assert_eq!(w["path"][0]["action_type"], 300002);
}

#[tokio::test]
async fn an_errcode_nobody_listed_is_permanent_once_and_its_rid_is_kept() {
    let app = spawn_sandboxed_app(&[]).await;
    app.sandbox().bind_phone(RECEIVER);
    app.sandbox().set_faults(Faults {
        pathnotify: ApiFault {
            errcode: Some(61_234),
            ..ApiFault::default()
        },
        ..Faults::default()
    });
    app.put_waybill("P12", &waybill_body()).await;
    app.post_event("P12", &event_body(100001, 1_700_000_100, "已揽件"))
        .await;
    app.drained().await;
    let n = notifications(&app, "P12").await;
    assert_eq!(n[0]["state"], "dead", "{n:?}");
    let attempts = n[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "not retried: {attempts:?}");
    assert_eq!(attempts[0]["errcode"], 61234);
    let rid = attempts[0]["rid"].as_str().expect("a rid");
    assert!(
        attempts[0]["detail"].as_str().unwrap().contains(rid),
        "the rid is the one WeChat's errmsg carried: {attempts:?}"
    );
}

#[tokio::test]
async fn serve_sandbox_with_a_configured_secret_pushes_to_its_sandbox() {
    // As `serve --sandbox` with the production [wechat] section, secret included.
    let app = spawn_sandboxed_app(&[("WXEXPRESS_WECHAT__SECRET", "configured-secret")]).await;
    app.sandbox().bind_phone(RECEIVER);
    app.put_waybill("P13", &waybill_body()).await;
    app.post_event("P13", &event_body(100001, 1_700_000_100, "已揽件"))
        .await;
    app.eventually("the node is delivered", || {
        inbox_types(&app) == vec![100001]
    })
    .await;
}
