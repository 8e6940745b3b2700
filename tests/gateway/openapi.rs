//! `GET /openapi.json` against the gateway itself: every `/v1` route the code registers is
//! documented, and every answer of a walk through all of them (successes and the errors
//! each documents) has a documented status, content type and body.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use wxexpress::sandbox::{ApiFault, Faults};

use crate::helpers::*;

/// The document, and the operations a walk has checked.
struct Described {
    doc: Value,
    seen: BTreeSet<(String, String, u16)>,
}

impl Described {
    async fn fetch(app: &TestApp) -> Described {
        let r = app
            .client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "served without a key");
        assert_eq!(r.headers()["content-type"], "application/json");
        Described {
            doc: r.json().await.unwrap(),
            seen: BTreeSet::new(),
        }
    }

    /// Checks `r` against the operation `method template` and returns its body.
    async fn check(&mut self, method: &str, template: &str, r: reqwest::Response) -> Value {
        let status = r.status().as_u16();
        let op = &self.doc["paths"][template][method];
        assert!(op.is_object(), "{method} {template} is not documented");
        let documented = &op["responses"][status.to_string()];
        assert!(
            documented.is_object(),
            "{method} {template} answered {status}, which it does not document"
        );
        let content_type = r.headers()["content-type"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let body: Value = r.json().await.unwrap();
        let schema = &documented["content"][&content_type]["schema"];
        assert!(
            schema.is_object(),
            "{method} {template} {status}: {content_type} is not documented"
        );
        let mut root = json!({ "components": self.doc["components"].clone() });
        root["allOf"] = json!([schema]);
        let validator = jsonschema::draft202012::new(&root).expect("the schema compiles");
        let errors: Vec<String> = validator
            .iter_errors(&body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {template} {status}: the body does not match its schema: {errors:?}\n{body:#}"
        );
        self.seen
            .insert((template.to_string(), method.to_string(), status));
        body
    }

    /// Every documented operation, and each of its documented statuses, that the walk did
    /// not see (the shared 500 and, for GET-only routes, nothing else can be provoked here).
    fn unseen(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for status in op["responses"].as_object().unwrap().keys() {
                    let s: u16 = status.parse().unwrap();
                    if s == 500 || s == 503 {
                        continue;
                    }
                    if !self.seen.contains(&(path.clone(), method.clone(), s)) {
                        out.push(format!("{method} {path} {s}"));
                    }
                }
            }
        }
        out
    }
}

/// `(path, method)` of every `/v1` route registered in `src/http/`: each is a
/// `web::resource("/v1/…")` with its `.route(web::METHOD()…)`s (a bare `cfg.route` would
/// answer another method 404 instead of 405, and is refused here).
fn registered_routes() -> BTreeSet<(String, String)> {
    let dir = format!("{}/src/http", env!("CARGO_MANIFEST_DIR"));
    let bare = regex::Regex::new(r#"\.route\(\s*"/v1/"#).unwrap();
    let path = regex::Regex::new(r#"^\s*"(/v1/[^"]+)"\)"#).unwrap();
    let method = regex::Regex::new(r#"\.route\(\s*web::(\w+)\(\)"#).unwrap();
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!bare.is_match(&text), "a /v1 route outside a resource");
        for chunk in text.split("web::resource(").skip(1) {
            let Some(p) = path.captures(chunk) else {
                continue;
            };
            let end = chunk.find(';').unwrap_or(chunk.len());
            for m in method.captures_iter(&chunk[..end]) {
                out.insert((p[1].to_string(), m[1].to_string()));
            }
        }
    }
    out
}

#[tokio::test]
async fn every_v1_route_is_documented_with_bearer_auth_and_problem_errors() {
    let app = spawn_app().await;
    let d = Described::fetch(&app).await;
    assert_eq!(d.doc["openapi"], "3.1.0");
    assert_eq!(
        d.doc["components"]["securitySchemes"]["api_key"],
        json!({ "type": "http", "scheme": "bearer", "description": "a key of `[backoffice] api_keys`" })
    );
    assert_eq!(d.doc["security"], json!([{ "api_key": [] }]));
    let routes = registered_routes();
    assert!(routes.len() >= 11, "the scan finds the routes: {routes:?}");
    let mut documented = BTreeSet::new();
    for (path, item) in d.doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            documented.insert((path.clone(), method.clone()));
            assert_eq!(
                op["responses"]["401"]["content"]["application/problem+json"]["schema"]["$ref"],
                "#/components/schemas/Problem",
                "{method} {path}"
            );
        }
    }
    assert_eq!(
        routes, documented,
        "registered /v1 routes vs documented ones"
    );
}

#[tokio::test]
async fn every_answer_of_every_route_is_as_documented() {
    let app = spawn_sandboxed_app(&[]).await;
    let mut d = Described::fetch(&app).await;
    let c = &app.client;
    let key = format!("Bearer {API_KEY}");
    let send = |m: reqwest::Method, path: &str| {
        c.request(m, app.url(path))
            .header("authorization", key.clone())
    };
    use reqwest::Method as M;
    app.sandbox().bind_phone("13800138000");

    // Waybills and events.
    let wb = "/v1/waybills/{waybill_id}";
    let ev = "/v1/waybills/{waybill_id}/events";
    let mut waybill = waybill_body();
    waybill["openids"] = json!({ "receiver": "oDescribed01" });
    waybill["payment"] = json!({ "out_trade_no": "T1", "total_fee": 100 });
    d.check("put", wb, app.put_waybill("OA1", &waybill).await)
        .await;
    d.check("put", wb, app.put_waybill("OA1", &waybill).await)
        .await;
    let p = d
        .check("put", wb, app.put_waybill("OA1", &json!({})).await)
        .await;
    assert_eq!(p["status"], 422);
    let p = d
        .check("put", wb, app.put_waybill("OA1", &json!([])).await)
        .await;
    assert_eq!(p["status"], 400);
    let r = send(M::PUT, "/v1/waybills/OA1")
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    d.check("put", wb, r).await;
    let r = send(M::PUT, "/v1/waybills/OA1")
        .json(&json!({ "pad": "x".repeat(100 << 10) }))
        .send()
        .await
        .unwrap();
    d.check("put", wb, r).await;
    let r = c.put(app.url("/v1/waybills/OA1")).json(&waybill);
    let r = r.send().await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    d.check("put", wb, r).await;

    let now = chrono_now();
    for _ in 0..2 {
        d.check(
            "post",
            ev,
            app.post_event("OA1", &event_body(100001, now - 60, "揽收"))
                .await,
        )
        .await;
    }
    d.check(
        "post",
        ev,
        app.post_event("NOPE", &event_body(100001, now, "揽收"))
            .await,
    )
    .await;
    d.check(
        "post",
        ev,
        app.post_event("OA1", &json!({ "action_type": 1 })).await,
    )
    .await;
    d.check("post", ev, app.post_event("OA1", &json!(1)).await)
        .await;
    let r = send(M::POST, "/v1/waybills/OA1/events")
        .body("{}")
        .send()
        .await
        .unwrap();
    d.check("post", ev, r).await;
    let r = send(M::POST, "/v1/waybills/OA1/events")
        .json(&json!({ "pad": "x".repeat(100 << 10) }))
        .send()
        .await
        .unwrap();
    d.check("post", ev, r).await;
    d.check(
        "post",
        ev,
        c.post(app.url("/v1/waybills/OA1/events"))
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;

    // Batches: one good line, one refused, one for an unknown waybill.
    let batch = "/v1/events/batch";
    let lines = [
        json!({ "waybill_id": "OA1", "event": event_body(200001, now - 30, "运输中") }),
        json!({ "waybill_id": "OA1", "event": { "action_type": 7 } }),
        json!({ "waybill_id": "OA-NONE", "event": event_body(200001, now, "运输中") }),
    ];
    let ndjson: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let b = d.check("post", batch, app.post_batch(ndjson).await).await;
    assert_eq!(
        (b["accepted"].clone(), b["rejected"].clone()),
        (json!(1), json!(2))
    );
    d.check("post", batch, app.post_batch("\n".into()).await)
        .await;
    d.check("post", batch, app.post_batch("x".repeat(17 << 20)).await)
        .await;
    let r = send(M::POST, batch).json(&lines[0]).send().await.unwrap();
    d.check("post", batch, r).await;
    let r = c
        .post(app.url(batch))
        .header("content-type", "application/x-ndjson")
        .body("{}")
        .send()
        .await
        .unwrap();
    d.check("post", batch, r).await;

    // The pushes run; a later one is refused for good, so a notification is dead.
    app.drained().await;
    app.sandbox().set_faults(Faults {
        pathnotify: ApiFault {
            errcode: Some(40003),
            ..Default::default()
        },
        ..Default::default()
    });
    app.post_event("OA1", &event_body(300003, now - 10, "签收"))
        .await;
    app.drained().await;
    app.sandbox().set_faults(Faults::default());
    let w = d.check("get", wb, app.get_waybill("OA1").await).await;
    assert!(!w["callbacks"].as_array().unwrap().is_empty(), "{w:#}");
    d.check("get", wb, app.get_waybill("NOPE").await).await;
    d.check("get", wb, app.get_waybill("bad%20id").await).await;
    d.check(
        "get",
        wb,
        c.get(app.url("/v1/waybills/OA1")).send().await.unwrap(),
    )
    .await;
    let notes = w["notifications"].as_array().unwrap();
    let dead = notes
        .iter()
        .find(|n| n["state"] == "dead")
        .expect("a dead push");
    let delivered = notes
        .iter()
        .find(|n| n["state"] == "delivered")
        .expect("a delivered push");
    assert!(!delivered["attempts"].as_array().unwrap().is_empty());
    let retry = "/v1/notifications/{id}/retry";
    for id in [&dead["id"], &delivered["id"], &json!(999_999), &json!("x")] {
        let path = format!(
            "/v1/notifications/{}/retry",
            id.as_i64().map_or("x".into(), |i| i.to_string())
        );
        d.check("post", retry, send(M::POST, &path).send().await.unwrap())
            .await;
    }
    d.check(
        "post",
        retry,
        c.post(app.url("/v1/notifications/1/retry"))
            .send()
            .await
            .unwrap(),
    )
    .await;

    // Cells.
    let cells = "/v1/cells";
    d.check("get", cells, send(M::GET, cells).send().await.unwrap())
        .await;
    let good = json!({ "cells": [{ "key": "pay", "name": "支付运单", "link": "https://example.com/pay/{waybill_id}", "when": { "latest_action_in": [90010] } }] });
    let v = d
        .check(
            "put",
            cells,
            send(M::PUT, cells).json(&good).send().await.unwrap(),
        )
        .await;
    assert_eq!(v["source"], "database");
    for bad in [json!({ "cells": [{ "key": "" }] }), json!({ "nope": 1 })] {
        d.check(
            "put",
            cells,
            send(M::PUT, cells).json(&bad).send().await.unwrap(),
        )
        .await;
    }
    let r = send(M::PUT, cells).body("{}").send().await.unwrap();
    d.check("put", cells, r).await;
    let r = send(M::PUT, cells)
        .json(&json!({ "pad": "x".repeat(100 << 10) }))
        .send()
        .await
        .unwrap();
    d.check("put", cells, r).await;
    let v = d
        .check(
            "delete",
            cells,
            send(M::DELETE, cells).send().await.unwrap(),
        )
        .await;
    assert_eq!(v["source"], "config");
    for m in ["get", "put", "delete"] {
        let r = c
            .request(m.to_uppercase().parse().unwrap(), app.url(cells))
            .json(&good)
            .send()
            .await
            .unwrap();
        d.check(m, cells, r).await;
    }

    // Subscriptions and credentials.
    let subs = "/v1/subscriptions";
    let report = json!({ "openid": "oDescribed01", "subscriptions": [{ "template_id": "T_1", "count": 2 }] });
    for _ in 0..2 {
        let r = send(M::POST, subs)
            .header("idempotency-key", "k1")
            .json(&report)
            .send()
            .await
            .unwrap();
        d.check("post", subs, r).await;
    }
    let r = send(M::POST, subs)
        .header("idempotency-key", "k1")
        .json(&json!({ "openid": "oDescribed01", "subscriptions": [{ "template_id": "T_2" }] }))
        .send()
        .await
        .unwrap();
    d.check("post", subs, r).await;
    for r in [
        send(M::POST, subs).json(&json!({ "openid": "" })),
        send(M::POST, subs).json(&json!("x")),
        send(M::POST, subs).body("{}"),
        send(M::POST, subs).json(&json!({ "pad": "x".repeat(100 << 10) })),
        c.post(app.url(subs)).json(&report),
    ] {
        d.check("post", subs, r.send().await.unwrap()).await;
    }
    let creds = "/v1/credentials";
    let cred = json!({ "openid": "oDescribed01", "kind": "prepay_id", "value": "wx201410272009395522657a690389285100", "issued_at": now - 60 });
    for body in [
        &cred,
        &cred,
        &json!({ "openid": "oOther", "kind": "prepay_id", "value": "wx201410272009395522657a690389285100", "issued_at": now - 60 }),
        &json!({ "kind": "x" }),
        &json!(1),
    ] {
        d.check(
            "post",
            creds,
            send(M::POST, creds).json(body).send().await.unwrap(),
        )
        .await;
    }
    for r in [
        send(M::POST, creds).body("{}"),
        send(M::POST, creds).json(&json!({ "pad": "x".repeat(100 << 10) })),
        c.post(app.url(creds)).json(&cred),
    ] {
        d.check("post", creds, r.send().await.unwrap()).await;
    }

    // WeChat events kept.
    let kept = "/v1/wechat/events";
    for q in ["", "?event=nope&limit=5", "?limit=0"] {
        let r = send(M::GET, &format!("{kept}{q}")).send().await.unwrap();
        d.check("get", kept, r).await;
    }
    d.check("get", kept, c.get(app.url(kept)).send().await.unwrap())
        .await;

    // The outcome feed: a page, the next page by its cursor with filters, bad queries.
    let feed = "/v1/outcomes";
    let page = d
        .check("get", feed, send(M::GET, feed).send().await.unwrap())
        .await;
    let next = page["next_cursor"].as_str().expect("a cursor").to_string();
    let q = format!("{feed}?after={next}&limit=5&outcome=unbound,dead&kind=push&app=default");
    d.check("get", feed, send(M::GET, &q).send().await.unwrap())
        .await;
    for q in [
        "?after=nope",
        "?limit=0",
        "?outcome=sent",
        "?kind=sms",
        "?x=1",
    ] {
        let r = send(M::GET, &format!("{feed}{q}")).send().await.unwrap();
        assert_eq!(r.status(), 400, "{q}");
        d.check("get", feed, r).await;
    }
    d.check("get", feed, c.get(app.url(feed)).send().await.unwrap())
        .await;

    assert_eq!(
        d.unseen(),
        Vec::<String>::new(),
        "documented answers the walk did not provoke"
    );
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
