//! `spawn_app()`: the real gateway on port 0 over a fresh SQLite database (or PostgreSQL when
//! `TEST_DATABASE_URL` is set and the test asks for it).

use std::collections::BTreeMap;
use wxexpress::store::EntryState;

use wxexpress::app::Application;
use wxexpress::config::{self, Settings};

pub const API_KEY: &str = "test-key-0123456789abcdef";
pub const TOKEN: &str = "AAAAA";
pub const AES_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
pub const APPID: &str = "wxba5fad812f8e6fb9";
pub const ORIGINAL_ID: &str = "gh_97417a04a28d";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    #[allow(dead_code)]
    pub settings: Settings,
    pub store: wxexpress::store::Store,
    /// The in-process WeChat sandbox (sandbox-mode apps only).
    pub sandbox: Option<wxexpress::sandbox::Sandbox>,
    #[allow(dead_code)]
    pub stats: Option<std::sync::Arc<wxexpress::outbox::worker::PushStats>>,
    _dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Extra `WXEXPRESS_*` settings override the defaults below.
pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    spawn_app_as(extra, false).await
}

/// `sandbox`: as `serve --sandbox` (the in-process sandbox plays the app in `[wechat]`).
async fn spawn_app_as(extra: &[(&str, &str)], sandbox: bool) -> TestApp {
    wxexpress::telemetry::init();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/gw.db", dir.path().display());
    let mut env: BTreeMap<String, String> = [
        ("WXEXPRESS_SERVER__LISTEN", "127.0.0.1:0"),
        ("WXEXPRESS_SERVER__WORKERS", "2"),
        ("WXEXPRESS_DATABASE__URL", url.as_str()),
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
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        if v.is_empty() {
            env.remove(*k);
        } else {
            env.insert(k.to_string(), v.to_string());
        }
    }
    let opts = config::LoadOptions {
        generate: false,
        sandbox,
    };
    let settings = config::load_with(None, &env, opts).expect("test settings are valid");
    let app = Application::build(settings.clone())
        .await
        .expect("app builds");
    let base = format!("http://{}", app.addr());
    let store = app.store().clone();
    let sandbox = app.sandbox().cloned();
    let stats = app.worker_stats();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        base,
        client: reqwest::Client::new(),
        settings,
        store,
        sandbox,
        stats,
        _dir: dir,
    }
}

/// The gateway with no WeChat secret: it starts the in-process sandbox and pushes to it.
/// Fast polling and a short retry schedule keep the tests quick. An empty value removes a key.
#[allow(dead_code)]
pub async fn spawn_sandboxed_app(extra: &[(&str, &str)]) -> TestApp {
    let mut all: Vec<(&str, &str)> = vec![
        ("WXEXPRESS_WECHAT__SECRET", ""),
        ("WXEXPRESS_WECHAT__API_BASE", ""),
        ("WXEXPRESS_OUTBOX__POLL_INTERVAL_MS", "20"),
        ("WXEXPRESS_OUTBOX__RETRY_SCHEDULE", "0.05,0.1,0.2"),
    ];
    all.extend_from_slice(extra);
    spawn_app_as(&all, true).await
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn put_waybill(&self, id: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .put(self.url(&format!("/v1/waybills/{id}")))
            .bearer_auth(API_KEY)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn post_event(&self, id: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/waybills/{id}/events")))
            .bearer_auth(API_KEY)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get_waybill(&self, id: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/v1/waybills/{id}")))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("request")
    }

    pub async fn post_batch(&self, ndjson: String) -> reqwest::Response {
        self.client
            .post(self.url("/v1/events/batch"))
            .bearer_auth(API_KEY)
            .header("content-type", "application/x-ndjson")
            .body(ndjson)
            .send()
            .await
            .expect("request")
    }
}

impl TestApp {
    #[allow(dead_code)]
    pub fn sandbox(&self) -> &wxexpress::sandbox::Sandbox {
        self.sandbox.as_ref().expect("a sandbox-mode app")
    }

    /// Poll (bounded) until `f` holds; the pipeline is asynchronous.
    #[allow(dead_code)]
    pub async fn eventually<F: Fn() -> bool>(&self, what: &str, f: F) {
        for _ in 0..300 {
            if f() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("timed out waiting until {what}");
    }

    /// Wait until no outbox entry is pending.
    #[allow(dead_code)]
    pub async fn drained(&self) {
        for _ in 0..300 {
            let counts = self.store.outbox_counts().await.unwrap();
            if !counts
                .iter()
                .any(|(state, _, n)| *state == EntryState::Pending && *n > 0)
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!(
            "the outbox did not drain: {:?}",
            self.store.outbox_counts().await.unwrap()
        );
    }
}

pub fn waybill_body() -> serde_json::Value {
    serde_json::json!({
        "create_time": 1_700_000_000,
        "sender": { "name": "张三", "phone": "13800138001", "province": "浙江省", "city": "绍兴市", "area": "柯桥区", "address": "纺都路137号" },
        "receiver": { "name": "李四", "phone": "13800138000", "province": "福建省", "city": "泉州市", "area": "晋江市", "address": "庄宅北区158-6" }
    })
}

pub fn event_body(action_type: i64, action_time: i64, msg: &str) -> serde_json::Value {
    serde_json::json!({ "action_type": action_type, "action_time": action_time, "action_msg": msg })
}
