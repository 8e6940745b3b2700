//! A forwarding proxy between one gateway and the sandbox's WeChat APIs (the gateway's
//! `wechat.api_base` points at it). It counts the `pathnotify` calls that went through it, so
//! a test can tell which instance pushed, and it can swallow one `pathnotify` answer: the
//! sandbox has delivered the node (its reverse query was answered), but the gateway never
//! hears back — the moment to `kill -9` it.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use tokio::sync::oneshot;

struct State {
    upstream: String,
    client: reqwest::Client,
    pathnotify: AtomicU64,
    /// Waybill whose next pathnotify answer is swallowed, and whom to tell when it arrives.
    hold: Mutex<Option<(String, oneshot::Sender<()>)>>,
}

pub struct Proxy {
    pub base: String,
    state: Arc<State>,
    handle: actix_web::dev::ServerHandle,
}

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        let state = Arc::new(State {
            upstream: upstream.to_string(),
            client: crate::harness::http(),
            pathnotify: AtomicU64::new(0),
            hold: Mutex::new(None),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(forward))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(0)
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Proxy {
            base,
            state,
            handle,
        }
    }

    /// `pathnotify` calls forwarded so far.
    pub fn pathnotify_calls(&self) -> u64 {
        self.state.pathnotify.load(Ordering::SeqCst)
    }

    /// Swallow the answer to the next `pathnotify` of `waybill_id`: the returned receiver
    /// fires once the sandbox has answered it (and so has delivered the node).
    pub fn swallow_pathnotify_answer(&self, waybill_id: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        *self.state.hold.lock().expect("lock") = Some((waybill_id.to_string(), tx));
        rx
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Not awaited: the server future is dropped with the test's runtime anyway.
        drop(self.handle.stop(false));
    }
}

async fn forward(state: web::Data<State>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let is_pathnotify = req.path().ends_with("/pathnotify");
    let waybill_id = if is_pathnotify {
        state.pathnotify.fetch_add(1, Ordering::SeqCst);
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["waybill_id"].as_str().map(str::to_string))
    } else {
        None
    };
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).expect("method");
    let mut upstream = state
        .client
        .request(method, format!("{}{path}", state.upstream))
        .body(body.to_vec());
    if let Some(ct) = req.headers().get("content-type") {
        upstream = upstream.header("content-type", ct.as_bytes());
    }
    let answer = match upstream.send().await {
        Ok(r) => r,
        Err(_) => return HttpResponse::BadGateway().finish(),
    };
    let status = answer.status().as_u16();
    let content_type = answer
        .headers()
        .get("content-type")
        .map(|v| v.as_bytes().to_vec());
    let bytes = answer.bytes().await.unwrap_or_default();
    if let Some(w) = waybill_id {
        let held = {
            let mut hold = state.hold.lock().expect("lock");
            match hold.take() {
                Some((target, tx)) if target == w => Some(tx),
                other => {
                    *hold = other;
                    None
                }
            }
        };
        if let Some(tx) = held {
            let _ = tx.send(());
            // The gateway never hears back (it is killed meanwhile).
            std::future::pending::<()>().await;
        }
    }
    let mut out =
        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("a valid status"));
    if let Some(ct) = content_type {
        out.insert_header(("content-type", ct));
    }
    out.body(bytes)
}
