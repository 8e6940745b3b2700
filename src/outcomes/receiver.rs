//! A carrier's webhook receiver, as small as it can be and still correct: it verifies every
//! request's Standard Webhooks signature (refusing a bad one with 401), keeps the items it
//! was sent, and answers 204. The demo runs one to check what the gateway sends; the tests
//! script its answers (a 503 with `Retry-After`, a 410) to drive the deliverer's rules.
//! `docs/OUTCOMES.md` shows the same steps for a backoffice.

use std::collections::{BTreeMap, VecDeque};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

use super::signature::Signer;
use crate::clock::now_secs;

/// How far a `webhook-timestamp` may be from the receiver's clock (the specification's
/// suggestion: five minutes), against replays.
pub const TOLERANCE_SECS: i64 = 300;

/// One answer the receiver gives instead of 204, in order.
#[derive(Debug, Clone)]
pub struct Scripted {
    pub status: u16,
    pub retry_after: Option<String>,
}

/// One request with a valid signature, as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub webhook_id: String,
    pub body: String,
    /// The status the receiver answered.
    pub status: u16,
    pub at: Instant,
}

#[derive(Default)]
struct Log {
    received: Vec<Received>,
    /// The items of the requests answered 2xx, by id (parsed once, on arrival).
    items: BTreeMap<String, serde_json::Value>,
    refused: u64,
    script: VecDeque<Scripted>,
    /// Answer the first request of every webhook id with this status (a redelivery follows).
    fail_first: Option<u16>,
}

struct Shared {
    signer: Signer,
    log: Mutex<Log>,
}

/// A running receiver.
pub struct Receiver {
    pub url: String,
    shared: Arc<Shared>,
    handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    /// Listens on `listener` (`127.0.0.1:0` picks a port), verifying with `secret`.
    pub fn start(listener: TcpListener, secret: &str) -> std::io::Result<Receiver> {
        let signer = Signer::new(secret, None)
            .map_err(|e| std::io::Error::other(format!("receiver secret: {e}")))?;
        let url = format!("http://{}/outcomes", listener.local_addr()?);
        let shared = Arc::new(Shared {
            signer,
            log: Mutex::new(Log::default()),
        });
        let data = web::Data::from(shared.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(16 << 20))
                .route("/outcomes", web::post().to(receive))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Receiver {
            url,
            shared,
            handle,
        })
    }

    /// Answers to give before the usual 204, in order.
    pub fn script(&self, answers: Vec<Scripted>) {
        self.log().script.extend(answers);
    }

    /// Answer the first request of every webhook id with `status`.
    pub fn fail_first(&self, status: u16) {
        self.log().fail_first = Some(status);
    }

    /// Every validly signed request, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.log().received.clone()
    }

    /// Requests refused for a missing or bad signature.
    pub fn refused(&self) -> u64 {
        self.log().refused
    }

    /// The items accepted (answered 2xx), by item id; an item sent twice (a redelivery, a
    /// replay) is kept once.
    pub fn items(&self) -> BTreeMap<String, serde_json::Value> {
        self.log().items.clone()
    }

    /// How many distinct items were accepted (cheap enough to poll).
    pub fn item_count(&self) -> usize {
        self.log().items.len()
    }

    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.shared
            .log
            .lock()
            .expect("the receiver's log is never poisoned")
    }
}

async fn receive(shared: web::Data<Shared>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let verified = timestamp.parse::<i64>().ok().is_some_and(|ts| {
        shared
            .signer
            .verify(&id, ts, &body, &signature, now_secs(), TOLERANCE_SECS)
            .is_ok()
    });
    let mut log = shared
        .log
        .lock()
        .expect("the receiver's log is never poisoned");
    if !verified {
        log.refused += 1;
        return HttpResponse::Unauthorized().body("bad signature");
    }
    let first = !log.received.iter().any(|r| r.webhook_id == id);
    let answer = match (log.script.pop_front(), log.fail_first) {
        (Some(s), _) => Some(s),
        (None, Some(status)) if first => Some(Scripted {
            status,
            retry_after: Some("0".into()),
        }),
        _ => None,
    };
    let status = answer.as_ref().map_or(204, |a| a.status);
    if status / 100 == 2 {
        if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&body) {
            for item in doc["data"].as_array().into_iter().flatten() {
                if let Some(id) = item["id"].as_str() {
                    log.items.insert(id.to_string(), item.clone());
                }
            }
        }
    }
    log.received.push(Received {
        webhook_id: id,
        body: String::from_utf8_lossy(&body).into_owned(),
        status,
        at: Instant::now(),
    });
    drop(log);
    let mut resp = HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
    );
    if let Some(ra) = answer.and_then(|a| a.retry_after) {
        resp.insert_header(("retry-after", ra));
    }
    resp.finish()
}
