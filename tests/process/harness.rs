//! Real `wxexpress` processes for the process-level tests: a `sandbox` process playing WeChat,
//! `serve` processes configured entirely by environment variables, and guards that kill every
//! child when a test ends (and print the tail of its log when the test failed).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use wxexpress::sandbox::defaults as sd;
use wxexpress::sandbox::{ExchangeLogEntry, InboxNode, SandboxStats};
use wxexpress::store::{EntryState, Store};

pub const API_KEY: &str = "process-test-key-0123456789abcdef";
pub const DATA_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
/// Any process must answer its readiness probe within this.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Tests of this binary run one at a time: they measure shutdown times and kill processes at
/// chosen moments, which two cores shared by several pipelines would blur.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// A free port on 127.0.0.1 (bound, then released for the process that will listen on it).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// The `[wechat]` section both the sandbox and the gateways use: the sandbox's default mini
/// program, with its secret set so the gateway talks to `api_base` instead of starting its
/// own in-process sandbox.
pub fn wechat_env(api_base: &str) -> Vec<(String, String)> {
    [
        ("WXEXPRESS_WECHAT__APPID", sd::APPID),
        ("WXEXPRESS_WECHAT__SECRET", sd::SECRET),
        ("WXEXPRESS_WECHAT__ORIGINAL_ID", sd::ORIGINAL_ID),
        ("WXEXPRESS_WECHAT__TOKEN", sd::TOKEN),
        ("WXEXPRESS_WECHAT__ENCODING_AES_KEY", sd::ENCODING_AES_KEY),
        ("WXEXPRESS_WECHAT__API_BASE", api_base),
        ("WXEXPRESS_BACKOFFICE__API_KEYS", API_KEY),
        ("WXEXPRESS_PRIVACY__DATA_KEY", DATA_KEY),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// One child process. Dropping it kills it (SIGKILL) and reaps it.
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Start `wxexpress ARGS` in `dir` with exactly `env` (nothing inherited but `PATH`), its
    /// output appended to `dir/NAME.log`.
    pub fn spawn(name: &str, dir: &Path, args: &[&str], env: &BTreeMap<String, String>) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the log file");
        let err = out.try_clone().expect("clone the log file");
        let child = Command::new(env!("CARGO_BIN_EXE_wxexpress"))
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_BACKTRACE", "1")
            .envs(env)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("the process was started")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the process was started").id()
    }

    /// `kill -9`, and reap it.
    pub fn kill9(&mut self) {
        let child = self.child();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// `kill -TERM`.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.name);
    }

    /// The exit status, if the process exits within `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child().try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Panics (with the log) if the process has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child().try_wait().expect("try_wait") {
            panic!(
                "{} exited with {status} while starting:\n{}",
                self.name,
                self.log_tail(40)
            );
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- last lines of {} ({}) ----\n{}",
                self.name,
                self.log.display(),
                self.log_tail(30)
            );
        }
    }
}

/// Poll `url` until it answers 2xx, while `proc` is still running.
async fn wait_ready(proc: &mut Proc, url: &str) {
    let client = http();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        proc.assert_running();
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} did not become ready at {url}:\n{}",
            proc.name,
            proc.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `wxexpress sandbox --listen 127.0.0.1:PORT`: WeChat, in its own process.
pub struct SandboxProc {
    pub base: String,
    client: reqwest::Client,
    _proc: Proc,
}

impl SandboxProc {
    /// Reverse queries go to `callback_url`.
    pub async fn start(dir: &Path, callback_url: &str) -> SandboxProc {
        let port = free_port();
        let mut env: BTreeMap<String, String> =
            wechat_env("http://127.0.0.1:9").into_iter().collect();
        env.insert(
            "WXEXPRESS_SANDBOX__CALLBACK_URL".into(),
            callback_url.into(),
        );
        env.insert(
            "WXEXPRESS_DATABASE__URL".into(),
            format!("sqlite://{}/sandbox-unused.db", dir.display()),
        );
        let listen = format!("127.0.0.1:{port}");
        let mut proc = Proc::spawn("sandbox", dir, &["sandbox", "--listen", &listen], &env);
        let base = format!("http://{listen}");
        wait_ready(&mut proc, &format!("{base}/sandbox/stats")).await;
        SandboxProc {
            base,
            client: http(),
            _proc: proc,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn bind(&self, phone: &str) {
        let r = self
            .client
            .put(self.url(&format!("/sandbox/bindings/{phone}")))
            .send()
            .await
            .expect("bind");
        assert!(r.status().is_success(), "binding {phone}: {}", r.status());
    }

    pub async fn set_faults(&self, faults: Value) {
        let r = self
            .client
            .put(self.url("/sandbox/faults"))
            .json(&faults)
            .send()
            .await
            .expect("faults");
        assert!(r.status().is_success(), "faults refused: {}", r.status());
    }

    pub async fn inbox(&self, phone: &str) -> Vec<InboxNode> {
        self.client
            .get(self.url(&format!("/sandbox/inbox/{phone}")))
            .send()
            .await
            .expect("inbox")
            .json()
            .await
            .expect("inbox JSON")
    }

    pub async fn exchanges(&self, waybill_id: &str) -> Vec<ExchangeLogEntry> {
        self.client
            .get(self.url(&format!("/sandbox/exchanges?waybill_id={waybill_id}")))
            .send()
            .await
            .expect("exchanges")
            .json()
            .await
            .expect("exchanges JSON")
    }

    pub async fn stats(&self) -> SandboxStats {
        self.client
            .get(self.url("/sandbox/stats"))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats JSON")
    }

    /// `pathnotify` calls the sandbox has received so far.
    pub async fn pathnotify_calls(&self) -> u64 {
        self.stats()
            .await
            .apis
            .get("pathnotify")
            .map_or(0, |a| a.calls)
    }
}

/// A `wxexpress serve` process that can be killed and started again on the same port and
/// database (the sandbox's callback URL points at that port).
pub struct Gateway {
    name: String,
    dir: PathBuf,
    pub base: String,
    env: BTreeMap<String, String>,
    proc: Option<Proc>,
    client: reqwest::Client,
}

impl Gateway {
    /// Configured, not started. `extra` overrides or adds `WXEXPRESS_*` settings.
    pub fn new(
        name: &str,
        dir: &Path,
        port: u16,
        database_url: &str,
        api_base: &str,
        extra: &[(&str, &str)],
    ) -> Gateway {
        let mut env: BTreeMap<String, String> = wechat_env(api_base).into_iter().collect();
        let listen = format!("127.0.0.1:{port}");
        for (k, v) in [
            ("WXEXPRESS_SERVER__LISTEN", listen.as_str()),
            // Several gateways run at once: each its own metrics port.
            ("WXEXPRESS_SERVER__METRICS_LISTEN", "127.0.0.1:0"),
            ("WXEXPRESS_SERVER__WORKERS", "2"),
            ("WXEXPRESS_DATABASE__URL", database_url),
            ("WXEXPRESS_OUTBOX__POLL_INTERVAL_MS", "20"),
            ("WXEXPRESS_OUTBOX__RETRY_SCHEDULE", "0.2,0.5,1,2,2,2"),
            ("WXEXPRESS_OUTBOX__LEASE_SECS", "5"),
            ("WXEXPRESS_OUTBOX__SHUTDOWN_GRACE_SECS", "5"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        {
            env.insert(k.to_string(), v.to_string());
        }
        Gateway {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            base: format!("http://{listen}"),
            env,
            proc: None,
            client: http(),
        }
    }

    /// `wxexpress migrate` with this gateway's settings; asserts it succeeded.
    pub async fn migrate(&self) {
        let name = format!("{}-migrate", self.name);
        let mut p = Proc::spawn(&name, &self.dir, &["migrate"], &self.env);
        let status = p.wait_exit(START_TIMEOUT).await.expect("migrate finishes");
        assert!(status.success(), "migrate failed:\n{}", p.log_tail(20));
    }

    /// Start the process (its database is migrated on start) and wait for `/healthz`.
    pub async fn start(&mut self) {
        self.spawn();
        self.ready().await;
    }

    /// Start the process without waiting (see [`Gateway::ready`]).
    pub fn spawn(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            assert!(
                p.child().try_wait().expect("try_wait").is_some(),
                "{} is already running",
                self.name
            );
        }
        self.proc = Some(Proc::spawn(&self.name, &self.dir, &["serve"], &self.env));
    }

    pub async fn ready(&mut self) {
        let url = format!("{}/healthz", self.base);
        wait_ready(self.proc.as_mut().expect("spawned"), &url).await;
    }

    fn proc(&mut self) -> &mut Proc {
        self.proc.as_mut().expect("the gateway was started")
    }

    pub fn kill9(&mut self) {
        self.proc().kill9();
    }

    pub fn sigterm(&mut self) {
        self.proc().sigterm();
    }

    /// Waits for the process to exit after a signal; `None` if it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc().wait_exit(timeout).await
    }

    /// `POST /v1/events/batch`; asserts every line was accepted.
    pub async fn post_batch(&self, lines: &[Value]) {
        let body: String = lines
            .iter()
            .map(|l| serde_json::to_string(l).expect("JSON") + "\n")
            .collect();
        let r = self
            .client
            .post(format!("{}/v1/events/batch", self.base))
            .bearer_auth(API_KEY)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .expect("batch request");
        assert_eq!(r.status(), 200, "batch refused");
        let v: Value = r.json().await.expect("batch JSON");
        assert_eq!(v["accepted"], lines.len(), "batch outcome: {v}");
    }

    pub async fn get_waybill(&self, id: &str) -> Value {
        let r = self
            .client
            .get(format!("{}/v1/waybills/{id}", self.base))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("waybill request");
        assert_eq!(r.status(), 200, "GET waybill {id}");
        r.json().await.expect("waybill JSON")
    }
}

/// Outbox entries by state, read straight from the database the gateways share.
pub async fn outbox_states(store: &Store) -> BTreeMap<EntryState, i64> {
    let mut by_state = BTreeMap::new();
    for (state, _, n) in store.outbox_counts().await.expect("outbox counts") {
        *by_state.entry(state).or_insert(0) += n;
    }
    by_state
}

pub fn count(states: &BTreeMap<EntryState, i64>, state: EntryState) -> i64 {
    states.get(&state).copied().unwrap_or(0)
}

/// Wait until no entry is pending (every one delivered, skipped or dead).
pub async fn drained(store: &Store, within: Duration) -> BTreeMap<EntryState, i64> {
    let deadline = Instant::now() + within;
    loop {
        let states = outbox_states(store).await;
        if count(&states, EntryState::Pending) == 0 {
            return states;
        }
        assert!(
            Instant::now() < deadline,
            "the outbox did not drain within {within:?}: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
