//! Outcomes back to the carrier, end to end against the sandbox: the feed and the signed
//! webhook carry the same items; redeliveries keep their webhook-id; Retry-After and 410 are
//! honoured; a node past its deadline is dead at once and never pushed.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::Duration;

use serde_json::{json, Value};
use wxexpress::outcomes::receiver::{Receiver, Scripted};
use wxexpress::outcomes::Signer;
use wxexpress::sandbox::{ApiFault, Faults};

use crate::helpers::*;

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const BOUND: &str = "13800138000";

fn receiver() -> Receiver {
    Receiver::start(TcpListener::bind("127.0.0.1:0").unwrap(), SECRET).unwrap()
}

async fn app_for(receiver: &Receiver, extra: &[(&str, &str)]) -> TestApp {
    let mut env = vec![
        ("WXEXPRESS_OUTCOMES__WEBHOOK_URL", receiver.url.as_str()),
        ("WXEXPRESS_OUTCOMES__WEBHOOK_SECRET", SECRET),
        ("WXEXPRESS_OUTCOMES__RETRY_SCHEDULE", "0.05,0.1,0.2,0.4"),
        ("WXEXPRESS_OUTCOMES__POLL_INTERVAL_MS", "20"),
    ];
    env.extend_from_slice(extra);
    spawn_sandboxed_app(&env).await
}

fn waybill_to(phone: &str) -> Value {
    let mut w = waybill_body();
    w["receiver"]["phone"] = json!(phone);
    w
}

async fn feed(app: &TestApp, query: &str) -> Value {
    let r = app
        .client
        .get(app.url(&format!("/v1/outcomes{query}")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Every item of the feed, page by page (3 a page).
async fn feed_items(app: &TestApp) -> BTreeMap<String, Value> {
    let mut items = BTreeMap::new();
    let mut query = "?limit=3".to_string();
    loop {
        let page = feed(app, &query).await;
        for item in page["data"].as_array().unwrap() {
            items.insert(item["id"].as_str().unwrap().to_string(), item.clone());
        }
        if page["has_more"] != true {
            return items;
        }
        query = format!("?limit=3&after={}", page["next_cursor"].as_str().unwrap());
    }
}

async fn until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn the_feed_and_the_signed_webhook_carry_the_same_items_and_sms_only_where_wechat_failed() {
    let rx = receiver();
    rx.fail_first(503);
    let app = app_for(&rx, &[]).await;
    app.sandbox().bind_phone(BOUND);
    app.put_waybill("OC1", &waybill_to(BOUND)).await;
    app.put_waybill("OC2", &waybill_to("13900139000")).await; // not bound
    app.put_waybill("OC3", &waybill_to("0571-88886666")).await; // a landline: cannot be bound
    for (w, r) in [("OC1", "job-1"), ("OC2", "job-2"), ("OC3", "job-3")] {
        let mut e = event_body(100001, 1_700_000_100, "已揽件 13800138000");
        e["ref"] = json!(r);
        assert_eq!(app.post_event(w, &e).await.status(), 202);
    }
    app.drained().await;
    until("the receiver has all three items", || rx.item_count() == 3).await;

    let sent = rx.items();
    let listed = feed_items(&app).await;
    assert_eq!(
        sent, listed,
        "the webhook and the feed carry the same items"
    );
    let by_ref: BTreeMap<&str, &Value> = sent
        .values()
        .map(|i| (i["ref"].as_str().unwrap(), i))
        .collect();
    let one = by_ref["job-1"];
    assert_eq!(
        (one["outcome"].as_str(), one["sms_fallback"].as_bool()),
        (Some("delivered"), Some(false))
    );
    assert_eq!(one["waybill_id"], "OC1");
    assert_eq!(one["kind"], "push");
    assert_eq!(one["app"], "default");
    assert_eq!(
        (one["action_type"].as_i64(), one["action_time"].as_i64()),
        (Some(100001), Some(1_700_000_100))
    );
    for r in ["job-2", "job-3"] {
        let i = by_ref[r];
        assert_eq!(
            (i["outcome"].as_str(), i["sms_fallback"].as_bool()),
            (Some("unbound"), Some(true)),
            "{i}"
        );
        assert_eq!(i["reason"]["code"], "unbound");
    }
    // No phone number in any body, masked or not.
    for r in rx.received() {
        assert!(!r.body.contains("138001380"), "{}", r.body);
        assert!(!r.body.contains("****"), "{}", r.body);
    }

    // Every delivery was refused once (503) and sent again with the same id and body.
    let received = rx.received();
    let mut by_id: BTreeMap<&str, Vec<&wxexpress::outcomes::receiver::Received>> = BTreeMap::new();
    for r in &received {
        by_id.entry(r.webhook_id.as_str()).or_default().push(r);
    }
    for (id, tries) in &by_id {
        assert!(id.starts_with("msg_"), "{id}");
        assert!(tries.len() >= 2, "{id} was redelivered");
        assert_eq!(tries[0].status, 503);
        assert!(tries.iter().all(|t| t.body == tries[0].body), "same body");
    }
    let body: Value = serde_json::from_str(&received[0].body).unwrap();
    assert_eq!(body["type"], "outcomes");
    assert!(body["timestamp"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(rx.refused(), 0, "every request was signed");

    // The feed filters: what needs an SMS.
    let sms = feed(&app, "?outcome=unbound,dead").await;
    assert_eq!(sms["data"].as_array().unwrap().len(), 2);
    assert!(sms["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["sms_fallback"] == true));
    let next = sms["next_cursor"].as_str().unwrap();
    let after = feed(&app, &format!("?outcome=unbound,dead&after={next}")).await;
    assert_eq!(after["data"], json!([]));
    assert_eq!(
        after["next_cursor"], next,
        "an empty page hands the cursor back"
    );
}

#[tokio::test]
async fn a_wrong_signature_is_refused_by_the_receiver() {
    let rx = receiver();
    let client = reqwest::Client::new();
    let body = r#"{"type":"outcomes","timestamp":1,"data":[]}"#;
    let ts = wxexpress::clock::now_secs();
    let good = Signer::new(SECRET, None)
        .unwrap()
        .sign("msg_1", ts, body.as_bytes());
    let other = Signer::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", None)
        .unwrap()
        .sign("msg_1", ts, body.as_bytes());
    let send = |sig: String, ts: i64, body: &'static str| {
        client
            .post(&rx.url)
            .header("webhook-id", "msg_1")
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body)
    };
    for (sig, ts, body) in [
        (other, ts, body),                // another secret
        (good.clone(), ts, "{}"),         // another body
        (good.clone(), ts - 3_600, body), // an old timestamp
        (String::new(), ts, body),        // none
    ] {
        let r = send(sig, ts, body).send().await.unwrap();
        assert_eq!(r.status(), 401);
    }
    assert_eq!(rx.refused(), 4);
    assert!(rx.received().is_empty());
    let r = send(good, ts, body).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(rx.received().len(), 1);
}

#[tokio::test]
async fn retry_after_is_honoured_and_410_stops_delivery_but_not_the_feed() {
    let rx = receiver();
    rx.script(vec![Scripted {
        status: 429,
        retry_after: Some("2".into()),
    }]);
    let app = app_for(&rx, &[]).await;
    app.put_waybill("RA1", &waybill_to("13900139000")).await;
    app.post_event("RA1", &event_body(100001, 1_700_000_100, "已揽件"))
        .await;
    until("delivered after the 429", || rx.item_count() == 1).await;
    let tries = rx.received();
    assert_eq!(tries[0].status, 429);
    assert!(
        tries[1].at.duration_since(tries[0].at) >= Duration::from_millis(1_900),
        "Retry-After: 2 waited for, not the schedule's 50 ms"
    );

    // 410 Gone: delivery to this URL stops; the feed keeps everything.
    rx.script(vec![Scripted {
        status: 410,
        retry_after: None,
    }]);
    app.put_waybill("RA2", &waybill_to("13900139000")).await;
    app.post_event("RA2", &event_body(100001, 1_700_000_100, "已揽件"))
        .await;
    until("the 410 was answered", || rx.received().len() == 3).await;
    for _ in 0..50 {
        if app.store.webhook_gone().await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.store.webhook_gone().await.unwrap(),
        Some(rx.url.clone())
    );
    app.put_waybill("RA3", &waybill_to("13900139000")).await;
    app.post_event("RA3", &event_body(100001, 1_700_000_100, "已揽件"))
        .await;
    app.drained().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.received().len(), 3, "nothing more is sent after 410");
    assert_eq!(feed_items(&app).await.len(), 3, "the feed holds every item");
}

#[tokio::test]
async fn a_node_whose_next_try_would_pass_its_deadline_is_dead_at_once_and_never_pushed() {
    let rx = receiver();
    let app = app_for(
        &rx,
        &[
            // Long enough for the first try even on a loaded machine; the retry is not.
            ("WXEXPRESS_OUTBOX__DEADLINE_SECS", "5"),
            ("WXEXPRESS_OUTBOX__RETRY_SCHEDULE", "60"),
        ],
    )
    .await;
    app.sandbox().bind_phone(BOUND);
    app.sandbox().set_faults(Faults {
        pathnotify: ApiFault {
            errcode: Some(-1),
            times: Some(1),
            ..Default::default()
        },
        ..Default::default()
    });
    app.put_waybill("DL1", &waybill_to(BOUND)).await;
    app.post_event("DL1", &event_body(100001, 1_700_000_100, "已揽件"))
        .await;
    app.drained().await;
    until("the receiver has the item", || rx.item_count() == 1).await;
    let item = rx.items().into_values().next().unwrap();
    assert_eq!(item["outcome"], "dead");
    assert_eq!(item["reason"]["code"], "deadline");
    assert_eq!(
        item["reason"]["errcode"], -1,
        "WeChat's last answer is kept"
    );
    assert_eq!(item["sms_fallback"], true);
    assert_eq!(item["attempts"], 1);
    // The fault is spent, but the node is never pushed again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(app.sandbox().inbox_for_phone(BOUND).is_empty());
}

#[tokio::test]
async fn a_replay_sends_the_same_items_again_under_new_webhook_ids() {
    let rx = receiver();
    let app = app_for(&rx, &[]).await;
    app.sandbox().bind_phone(BOUND);
    app.put_waybill("RP1", &waybill_to(BOUND)).await;
    app.put_waybill("RP2", &waybill_to("13900139000")).await;
    for w in ["RP1", "RP2"] {
        app.post_event(w, &event_body(100001, 1_700_000_100, "已揽件"))
            .await;
    }
    app.drained().await;
    until("both items were delivered", || rx.item_count() == 2).await;
    let first: Vec<String> = rx.received().iter().map(|r| r.webhook_id.clone()).collect();

    let args = wxexpress::outcomes::replay::ReplayArgs {
        since: "0",
        until: None,
        outcome: Some("unbound,dead"),
    };
    let summary = wxexpress::outcomes::replay::run(
        app.store.clone(),
        &app.settings.outcomes,
        app.settings.outcome_schedule.clone(),
        "replayer",
        args,
    )
    .await
    .unwrap();
    assert!(
        summary.starts_with("replayed 1 items in 1 deliveries"),
        "{summary}"
    );
    // The replayer or the gateway's own deliverer sends it, whichever leases it first.
    let sent_before = first.len();
    until("the replay arrived", || rx.received().len() > sent_before).await;
    let received = rx.received();
    let replayed = received.last().unwrap();
    assert!(!first.contains(&replayed.webhook_id), "a new webhook-id");
    let body: Value = serde_json::from_str(&replayed.body).unwrap();
    let items = body["data"].as_array().unwrap();
    assert_eq!(items.len(), 1, "only what the filter keeps");
    assert_eq!(items[0]["waybill_id"], "RP2");
    assert_eq!(
        &items[0],
        &rx.items()[items[0]["id"].as_str().unwrap()],
        "the same item"
    );

    let bad = wxexpress::outcomes::replay::ReplayArgs {
        since: "yesterday",
        until: None,
        outcome: None,
    };
    let e = wxexpress::outcomes::replay::run(
        app.store.clone(),
        &app.settings.outcomes,
        app.settings.outcome_schedule.clone(),
        "replayer",
        bad,
    )
    .await
    .unwrap_err();
    assert!(e.starts_with("--since: "), "{e}");
}
