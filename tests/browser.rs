//! The landing page in a real browser: the gateway and the WeChat sandbox on port 0, Debian's
//! headless Chromium driven through chromedriver (fantoccini).
//!
//! The page is the sandbox's (`/sandbox/landing/{waybill_id}`): it signs the JSONP URL and
//! loads it with a `<script>` tag from its own origin to the gateway's, as WeChat's front end
//! does. Checked: traces newest first, phones masked, the cells for the waybill's state, and
//! that neither a hostile `callback` nor hostile text in the data can run script.
//!
//! Without chromedriver or Chromium the test says so and returns; with `CI` set it fails
//! instead (`.ci/run` installs both). Tool paths can be overridden with `CHROMEDRIVER` and
//! `CHROME_BIN`. With `WXEXPRESS_SCREENSHOT=docs/landing.png` it also saves a screenshot of
//! the page for a waybill out for delivery.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use wxexpress::app::{self, Application};
use wxexpress::config;
use wxexpress::sandbox::defaults as sd;
use wxexpress::sandbox::Sandbox;

const API_KEY: &str = "browser-test-key-0123456789";
const OUT_FOR_DELIVERY: &str = "SF1234567890";
const AWAITING_PAYMENT: &str = "SF2000000001";
const HOSTILE_TEXT: &str = "SF3000000003";
/// 2024-11-24 09:00:00 in Beijing.
const T0: i64 = 1_732_410_000;

const CELLS: &str = r#"
[[cells]]
key = "pay"
name = "支付运单"
link = "https://carrier.example/pay?waybill={waybill_id}&openid={openid}"
when = { latest_action_in = [90010] }

[[cells]]
key = "address"
name = "修改地址"
link = "https://carrier.example/address/{waybill_id}"
when = { before_delivery = true }

[[cells]]
key = "courier"
name = "联系快递员"
link = "https://carrier.example/courier/{waybill_id}"
when = { latest_action_in = [300002] }

[[cells]]
key = "complain"
name = "投诉"
link = "https://carrier.example/complain/{waybill_id}"
"#;

// ---- the browser ------------------------------------------------------------------------

/// chromedriver (started by this test, killed on drop) and a session on headless Chromium.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    /// chromedriver leads its own process group, which Chromium joins: killing the group
    /// leaves no browser behind, even when a failed assertion skipped closing the session.
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let killed = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !killed {
            let _ = self.driver.kill();
        }
        let _ = self.driver.wait();
    }
}

/// `CHROMEDRIVER`/`CHROME_BIN`, else the first of the usual names on `PATH`.
fn tools() -> Result<(PathBuf, PathBuf), String> {
    let find = |env: &str, names: &[&str]| -> Option<PathBuf> {
        if let Some(p) = std::env::var_os(env).map(PathBuf::from) {
            return p.is_file().then_some(p);
        }
        let path = std::env::var_os("PATH")?;
        names.iter().find_map(|n| {
            std::env::split_paths(&path)
                .map(|d| d.join(n))
                .find(|p| p.is_file())
        })
    };
    let driver = find("CHROMEDRIVER", &["chromedriver"]);
    let chrome = find(
        "CHROME_BIN",
        &["chromium", "chromium-browser", "google-chrome"],
    );
    match (driver, chrome) {
        (Some(d), Some(c)) => Ok((d, c)),
        (d, c) => Err(format!(
            "{}{} not found (install with `apt-get install -y chromium chromium-driver`, or set CHROMEDRIVER / CHROME_BIN)",
            if d.is_none() { "chromedriver" } else { "" },
            match (d.is_none(), c.is_none()) {
                (true, true) => " and Chromium",
                (false, true) => "Chromium",
                _ => "",
            }
        )),
    }
}

async fn start_browser(driver: &Path, chrome: &Path) -> Browser {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let profile = tempfile::tempdir().expect("profile dir");
    let webdriver = format!("http://127.0.0.1:{port}");
    // chromedriver takes a moment to listen.
    let ready = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{webdriver}/status")).await.is_err() {
        assert!(Instant::now() < ready, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let caps = json!({
        // Keep a dialog open instead of dismissing it, so a script that ran is seen.
        "unhandledPromptBehavior": "ignore",
        "goog:chromeOptions": {
            "binary": chrome,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", format!("--user-data-dir={}", profile.path().display()),
                "--window-size=430,932", "--force-device-scale-factor=2", "--lang=zh-CN",
            ],
        },
    });
    let Value::Object(caps) = caps else {
        unreachable!("a JSON object")
    };
    let client = ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&webdriver)
        .await
        .expect("a Chromium session");
    Browser {
        client,
        driver: child,
        _profile: profile,
    }
}

// ---- the gateway and the sandbox ---------------------------------------------------------

struct Stack {
    gateway: String,
    sandbox: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// The gateway with the sandbox as its WeChat (as `wxexpress sandbox` next to `wxexpress
/// serve`), `[[cells]]` from a config file.
async fn spawn_stack() -> Stack {
    wxexpress::telemetry::init();
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway_listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let sandbox_listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (gw, sb) = (
        gateway_listener.local_addr().unwrap(),
        sandbox_listener.local_addr().unwrap(),
    );
    let path = dir.path().join("wxexpress.toml");
    std::fs::write(&path, CELLS).unwrap();
    let db = format!("sqlite://{}/gw.db", dir.path().display());
    let api_base = format!("http://{sb}");
    let env: BTreeMap<String, String> = [
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
        ("WXEXPRESS_SERVER__WORKERS", "2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let settings = config::load_from(Some(&path), &env, false).expect("settings");
    let sandbox = Sandbox::try_new(app::sandbox_settings(
        &settings,
        &format!("http://{gw}/wechat/callback"),
        &format!("http://{gw}/wechat/waybill"),
    ))
    .expect("sandbox settings");
    sandbox.start(sandbox_listener).expect("sandbox starts");
    let store = app::connect_store(&settings).await.expect("database");
    store.migrate().await.expect("migrate");
    let gateway = Application::build_with(settings, store, gateway_listener).expect("gateway");
    tokio::spawn(gateway.run_until_stopped());
    Stack {
        gateway: format!("http://{gw}"),
        sandbox: format!("http://{sb}"),
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl Stack {
    async fn seed(&self, id: &str, events: &[(i64, i64, &str)]) {
        let waybill = json!({
            "create_time": T0 - 3600,
            "sender": { "name": "张三", "phone": "13800138001", "province": "浙江省", "city": "杭州市", "area": "萧山区", "address": "建设一路66号" },
            "receiver": { "name": "李四", "phone": "13800138000", "province": "福建省", "city": "泉州市", "area": "晋江市", "address": "庄宅北区158-6" }
        });
        let r = self
            .http
            .put(format!("{}/v1/waybills/{id}", self.gateway))
            .bearer_auth(API_KEY)
            .json(&waybill)
            .send()
            .await
            .expect("request");
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        for (action_type, at, msg) in events {
            let r = self
                .http
                .post(format!("{}/v1/waybills/{id}/events", self.gateway))
                .bearer_auth(API_KEY)
                .json(&json!({ "action_type": action_type, "action_time": at, "action_msg": msg }))
                .send()
                .await
                .expect("request");
            assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        }
    }

    fn landing(&self, id: &str, callback: Option<&str>) -> String {
        let mut url = url::Url::parse(&format!("{}/sandbox/landing/{id}", self.sandbox)).unwrap();
        url.query_pairs_mut().append_pair("openid", "oViewer_42");
        if let Some(cb) = callback {
            url.query_pairs_mut().append_pair("callback", cb);
        }
        url.into()
    }
}

// ---- reading the page ----------------------------------------------------------------------

/// What the page shows once it has settled (`data-state` no longer `loading`).
#[derive(Debug)]
struct Page {
    state: String,
    err_code: Option<String>,
    traces: Vec<(i64, String)>,
    cells: Vec<(String, String, String)>,
    pwned: Option<String>,
    injected_elements: i64,
    text: String,
}

const READ_PAGE: &str = r##"
const q = (s) => Array.from(document.querySelectorAll(s));
return {
  state: document.body.getAttribute("data-state"),
  err_code: document.body.getAttribute("data-err-code"),
  traces: q("#traces li.trace").map(li => [Number(li.getAttribute("data-action-type")), li.querySelector(".msg").textContent]),
  cells: q("#cells a.cell").map(a => [a.getAttribute("data-key"), a.textContent, a.getAttribute("href") || ""]),
  pwned: window.__pwned === undefined ? null : String(window.__pwned),
  injected_elements: q("main img, main script, main iframe").length,
  text: document.body.innerText,
};
"##;

async fn open(b: &Browser, url: &str) -> Page {
    b.client.goto(url).await.expect("navigate");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        no_dialog(b, url).await;
        let state = b
            .client
            .execute(
                "return document.body && document.body.getAttribute('data-state')",
                vec![],
            )
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        if state.as_str().is_some_and(|s| s != "loading") {
            break;
        }
        assert!(Instant::now() < deadline, "{url}: the page never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Scripts that might still run (a late injected handler) get a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;
    no_dialog(b, url).await;
    let v = b
        .client
        .execute(READ_PAGE, vec![])
        .await
        .expect("read the page");
    let s = |v: &Value| v.as_str().map(str::to_string);
    Page {
        state: s(&v["state"]).unwrap_or_default(),
        err_code: s(&v["err_code"]),
        traces: v["traces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t[0].as_i64().unwrap(), s(&t[1]).unwrap()))
            .collect(),
        cells: v["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (s(&c[0]).unwrap(), s(&c[1]).unwrap(), s(&c[2]).unwrap()))
            .collect(),
        pwned: s(&v["pwned"]),
        injected_elements: v["injected_elements"].as_i64().unwrap(),
        text: s(&v["text"]).unwrap_or_default(),
    }
}

/// An open alert/confirm/prompt means injected script ran.
async fn no_dialog(b: &Browser, url: &str) {
    if let Ok(text) = b.client.get_alert_text().await {
        panic!("{url}: a dialog opened ({text:?}): injected script ran");
    }
}

fn keys(p: &Page) -> Vec<&str> {
    p.cells.iter().map(|c| c.0.as_str()).collect()
}

// ---- the test ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_landing_page_renders_the_waybill_in_chromium_and_no_callback_or_text_can_run_script() {
    let (driver, chrome) = match tools() {
        Ok(t) => t,
        Err(missing) => {
            let msg = format!("browser test NOT RUN: {missing}");
            if std::env::var_os("CI").is_some() {
                panic!("{msg}; CI is set, so the browser must be there");
            }
            // Straight to the process's stderr: the test harness captures `eprintln!` of a
            // passing test, and this must not pass silently.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "\n*** {msg} ***\n");
            return;
        }
    };
    let stack = spawn_stack().await;
    stack
        .seed(
            OUT_FOR_DELIVERY,
            &[
                (100001, T0, "【杭州萧山集散中心】已揽收，揽件员张师傅 13800138009"),
                (200001, T0 + 3 * 3600, "快件离开【杭州萧山集散中心】，发往【泉州转运中心】"),
                (200001, T0 + 20 * 3600, "快件到达【泉州转运中心】"),
                (
                    300002,
                    T0 + 24 * 3600,
                    "【晋江庄宅营业部】派件员王五（13912345678）正在为您派件，营业部电话 0595-85666888",
                ),
            ],
        )
        .await;
    stack
        .seed(
            AWAITING_PAYMENT,
            &[
                (90001, T0, "网点已接单"),
                (90010, T0 + 600, "运费待支付，共 12.00 元"),
            ],
        )
        .await;
    stack
        .seed(
            HOSTILE_TEXT,
            &[(
                200001,
                T0,
                "</script><script>window.__pwned=1;alert(1)</script><img src=x onerror=\"window.__pwned=2\">\u{2028}');window.__pwned=3;//",
            )],
        )
        .await;
    let b = start_browser(&driver, &chrome).await;

    // Out for delivery: newest first, phones masked, the cells for that state.
    let url = stack.landing(OUT_FOR_DELIVERY, None);
    let page = open(&b, &url).await;
    assert_eq!(page.state, "ok", "{page:?}");
    let order: Vec<i64> = page.traces.iter().map(|t| t.0).collect();
    assert_eq!(order, [300002, 200001, 200001, 100001], "newest first");
    assert!(page.traces[0].1.contains("139****5678"), "{page:?}");
    assert!(page.traces[0].1.contains("0595-****6888"), "{page:?}");
    assert!(page.traces[3].1.contains("138****8009"), "{page:?}");
    for raw in ["13912345678", "85666888", "13800138009"] {
        assert!(!page.text.contains(raw), "{raw} shown unmasked");
    }
    assert!(
        page.text.contains("2024-11-25 09:00:00"),
        "Beijing time: {}",
        page.text
    );
    assert_eq!(keys(&page), ["courier", "complain"]);
    assert_eq!(page.cells[0].1, "联系快递员");
    assert_eq!(
        page.cells[1].2,
        format!("https://carrier.example/complain/{OUT_FOR_DELIVERY}")
    );
    // The page and the JSONP come from different origins, as on WeChat.
    let footer = b
        .client
        .find(Locator::Css("#jsonp-origin"))
        .await
        .expect("footer")
        .text()
        .await
        .unwrap();
    assert_eq!(footer, stack.gateway);
    assert_ne!(stack.gateway, stack.sandbox);
    if let Some(path) = std::env::var_os("WXEXPRESS_SCREENSHOT") {
        let png = b.client.screenshot().await.expect("screenshot");
        let path = PathBuf::from(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(&path, png).unwrap();
        println!("screenshot saved to {}", path.display());
    }

    // Awaiting payment: 支付运单 and 修改地址 appear, with the viewer in the pay link.
    let page = open(&b, &stack.landing(AWAITING_PAYMENT, None)).await;
    assert_eq!(keys(&page), ["pay", "address", "complain"], "{page:?}");
    assert_eq!(page.cells[0].1, "支付运单");
    assert_eq!(
        page.cells[0].2,
        format!("https://carrier.example/pay?waybill={AWAITING_PAYMENT}&openid=oViewer_42")
    );

    // Hostile text in the data is shown as text.
    let page = open(&b, &stack.landing(HOSTILE_TEXT, None)).await;
    assert_eq!(page.state, "ok", "{page:?}");
    assert!(page.traces[0]
        .1
        .starts_with("</script><script>window.__pwned=1;"));
    assert_eq!((page.pwned.as_deref(), page.injected_elements), (None, 0));

    // An unknown waybill: an error code and nothing else.
    let page = open(&b, &stack.landing("SF0000000000", None)).await;
    assert_eq!(
        (page.state.as_str(), page.err_code.as_deref()),
        ("error", Some("40400"))
    );
    assert!(page.traces.is_empty() && page.cells.is_empty());

    // Any valid identifier path works as the callback.
    let page = open(&b, &stack.landing(OUT_FOR_DELIVERY, Some("wx.order_cb$1"))).await;
    assert_eq!((page.state.as_str(), page.traces.len()), ("ok", 4));

    // Hostile callbacks: refused by the gateway, nothing runs, nothing of the waybill shows.
    let long = "a".repeat(65);
    for hostile in [
        "alert(1)//",
        "WxOrderCb(1);window.__pwned=1;//",
        "</script><script>window.__pwned=1;alert(1)</script>",
        "WxOrderCb;alert(1)",
        "WxOrderCb\u{2028}window.__pwned=1",
        "WxOrderCb\u{2029}alert(1)",
        "ＷxOrderCb",
        "Wx\u{202e}OrderCb",
        "WxOrder\u{200b}Cb",
        "WxOrderCb\u{0}",
        "x=window.__pwned=1",
        "a..b",
        "1WxOrderCb",
        long.as_str(),
        // Valid as a name, but no function of this page: the call fails harmlessly.
        "constructor.constructor",
    ] {
        let url = stack.landing(OUT_FOR_DELIVERY, Some(hostile));
        let page = open(&b, &url).await;
        assert_eq!(page.state, "error", "{hostile:?}: {page:?}");
        assert_eq!(page.pwned, None, "{hostile:?} ran script");
        assert_eq!(page.injected_elements, 0, "{hostile:?}");
        assert!(
            page.traces.is_empty() && page.cells.is_empty(),
            "{hostile:?} got data"
        );
        assert!(!page.text.contains("139****5678"), "{hostile:?}");
    }

    b.client.clone().close().await.expect("close the session");
    println!("browser test ran in {}", chrome.display());
}
