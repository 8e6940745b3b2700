//! The WeChat sandbox against its rules, over HTTP on port 0.
//!
//! The fake carrier callback in here opens the sandbox's reverse queries and seals its replies
//! with its own small implementation of WeChat's scheme (aes/cbc/sha1/base64, checked against
//! the official vector first), not with `wxexpress::wechat`, so a mistake shared by the
//! sandbox and the gateway cannot hide.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Map, Value};
use wxexpress::sandbox::{
    ApiFault, CallbackFault, CredentialKind, Faults, Sandbox, SandboxSettings, Template,
    TemplateKind, Verdict,
};
use wxexpress::wechat::envelope::{MessageFormat, MessageMode};

const APPID: &str = "wxsandboxtest000001";
const SECRET: &str = "test-secret";
const ORIGINAL_ID: &str = "gh_test00000001";
const TOKEN: &str = "testtoken";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const OTHER_AES_KEY: &str = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut";
const WECHAT_TEAM: &str = "oHt_80DRclK4qjKfdYnPg6RxxsNI";
const PHONE: &str = "13800138000";
const SENDER_PHONE: &str = "13800138001";
const OPENID: &str = "oUser0000000000000000000001";
const SUB_TEMPLATE: &str = "sandbox-shipping-status";
const LEGACY_TEMPLATE: &str = "sandbox-legacy-shipping";

// ------------------------------------------------------------------------------------------
// An independent implementation of WeChat's message crypto (spec wechat-message-crypto.md).

mod wx {
    use aes::cipher::block_padding::NoPadding;
    use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
    use base64::Engine as _;
    use sha1::{Digest, Sha1};

    /// base64 of the 43 characters by hand: 258 bits, the 2 spare bits dropped.
    pub fn key(encoding_aes_key: &str) -> [u8; 32] {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut bits: u64 = 0;
        let mut nbits = 0;
        let mut out = Vec::new();
        for c in encoding_aes_key.bytes() {
            let v = ALPHABET.iter().position(|a| *a == c).expect("base64 char") as u64;
            bits = (bits << 6) | v;
            nbits += 6;
            if nbits >= 8 {
                nbits -= 8;
                out.push((bits >> nbits) as u8);
                bits &= (1 << nbits) - 1;
            }
        }
        out.truncate(32);
        out.try_into().expect("32 bytes")
    }

    pub fn sign(parts: &[&str]) -> String {
        let mut v = parts.to_vec();
        v.sort();
        hex::encode(Sha1::digest(v.concat().as_bytes()))
    }

    pub fn decrypt(key: &[u8; 32], b64: &str, appid: &str) -> Result<Vec<u8>, String> {
        let mut buf = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| e.to_string())?;
        let iv: [u8; 16] = key[..16].try_into().unwrap();
        let plain = cbc::Decryptor::<aes::Aes256>::new(key.into(), &iv.into())
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .map_err(|e| e.to_string())?
            .to_vec();
        let pad = *plain.last().ok_or("empty")? as usize;
        if !(1..=32).contains(&pad) || plain.len() < 20 + pad {
            return Err("bad padding".into());
        }
        let body = &plain[..plain.len() - pad];
        let len = u32::from_be_bytes(body[16..20].try_into().unwrap()) as usize;
        if 20 + len > body.len() {
            return Err("bad length".into());
        }
        if &body[20 + len..] != appid.as_bytes() {
            return Err("appid mismatch".into());
        }
        Ok(body[20..20 + len].to_vec())
    }

    pub fn encrypt(key: &[u8; 32], msg: &[u8], appid: &str) -> String {
        let mut buf = b"0123456789abcdef".to_vec();
        buf.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        buf.extend_from_slice(msg);
        buf.extend_from_slice(appid.as_bytes());
        let pad = 32 - buf.len() % 32;
        buf.extend(std::iter::repeat_n(pad as u8, pad));
        let iv: [u8; 16] = key[..16].try_into().unwrap();
        let len = buf.len();
        let ct = cbc::Encryptor::<aes::Aes256>::new(key.into(), &iv.into())
            .encrypt_padded_mut::<NoPadding>(&mut buf, len)
            .unwrap()
            .to_vec();
        base64::engine::general_purpose::STANDARD.encode(ct)
    }
}

/// Flat `<xml>` with optional CDATA, and repeated `<Path>` groups; enough for these messages.
mod xml {
    use serde_json::{Map, Value};

    pub fn parse(s: &str) -> Option<Map<String, Value>> {
        let inner = s.trim().strip_prefix("<xml>")?.strip_suffix("</xml>")?;
        let mut doc = Map::new();
        let mut rest = inner;
        while let Some(start) = rest.find('<') {
            let after = &rest[start + 1..];
            let name_end = after.find('>')?;
            let name = &after[..name_end];
            let close = format!("</{name}>");
            let body_start = start + 1 + name_end + 1;
            let body_len = rest[body_start..].find(&close)?;
            let body = &rest[body_start..body_start + body_len];
            if name == "Path" {
                let item = parse(&format!("<xml>{body}</xml>"))?;
                doc.entry("Path")
                    .or_insert_with(|| Value::Array(vec![]))
                    .as_array_mut()?
                    .push(Value::Object(item));
            } else {
                let text = body.trim();
                let text = text
                    .strip_prefix("<![CDATA[")
                    .and_then(|t| t.strip_suffix("]]>"))
                    .unwrap_or(text);
                doc.insert(name.to_string(), Value::String(text.to_string()));
            }
            rest = &rest[body_start + body_len + close.len()..];
        }
        Some(doc)
    }

    pub fn render(doc: &Map<String, Value>) -> String {
        let mut out = String::from("<xml>");
        for (k, v) in doc {
            field(&mut out, k, v);
        }
        out.push_str("</xml>");
        out
    }

    fn field(out: &mut String, k: &str, v: &Value) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| field(out, k, i)),
            Value::Object(o) => {
                out.push_str(&format!("<{k}>"));
                for (k2, v2) in o {
                    field(out, k2, v2);
                }
                out.push_str(&format!("</{k}>"));
            }
            Value::String(s) => out.push_str(&format!("<{k}><![CDATA[{s}]]></{k}>")),
            other => out.push_str(&format!("<{k}>{other}</{k}>")),
        }
    }
}

#[test]
fn the_independent_crypto_opens_the_official_vector() {
    let key = wx::key("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(key, [0u8; 32]);
    let encrypt = "+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04=";
    assert_eq!(
        wx::sign(&["AAAAA", "1714112445", "415670741", encrypt]),
        "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3"
    );
    let msg = wx::decrypt(&key, encrypt, "wxba5fad812f8e6fb9").unwrap();
    assert!(String::from_utf8(msg)
        .unwrap()
        .contains(r#""debug_str":"hello world""#));
    assert_eq!(wx::sign(&["AAAAA", "1713424427", "415670741", "ELGduP2YcVatjqIS+eZbp80MNLoAUWvzzyJxgGzxZO/5sAvd070Bs6qrLARC9nVHm48Y4hyRbtzve1L32tmxSQ=="]), "1b9339964ed2e271e7c7b6ff2b0ef902fc94dea1");
}

// ------------------------------------------------------------------------------------------
// The fake carrier callback.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Behavior {
    Correct,
    ChangeActionMsg,
    ChangeCourierPhone,
    ChangeCreateTime,
    BadSignature,
    WrongNonce,
    ForeignKey,
    Delay(u64),
    Garbage,
    Http(u16),
    PlainReply,
    NoPath,
}

#[derive(Clone)]
struct FakeWaybill {
    create_time: i64,
    receiver_phone: String,
    /// Newest first, PascalCase keys as in the reply.
    path: Vec<Value>,
}

/// An opened query: its query-string parameters and its document.
type Received = (HashMap<String, String>, Map<String, Value>);

/// An edit of a request body, named by the field it breaks.
type Edit = (&'static str, Box<dyn Fn(&mut Value)>);

struct Fake {
    mode: MessageMode,
    format: MessageFormat,
    key: [u8; 32],
    behavior: Mutex<Behavior>,
    waybills: Mutex<HashMap<String, FakeWaybill>>,
    /// Opened queries: (query string parameters, document).
    received: Mutex<Vec<Received>>,
    /// Requests whose signature or ciphertext did not verify.
    rejected: Mutex<Vec<String>>,
}

struct FakeCallback {
    fake: Arc<Fake>,
    url: String,
    handle: actix_web::dev::ServerHandle,
}

impl FakeCallback {
    fn start(mode: MessageMode, format: MessageFormat) -> FakeCallback {
        let fake = Arc::new(Fake {
            mode,
            format,
            key: wx::key(AES_KEY),
            behavior: Mutex::new(Behavior::Correct),
            waybills: Mutex::new(HashMap::new()),
            received: Mutex::new(Vec::new()),
            rejected: Mutex::new(Vec::new()),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/wechat/callback", listener.local_addr().unwrap());
        let data = web::Data::from(Arc::clone(&fake));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/wechat/callback", web::post().to(fake_callback))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        FakeCallback { fake, url, handle }
    }

    fn behave(&self, b: Behavior) {
        *self.fake.behavior.lock().unwrap() = b;
    }

    /// Stores the waybill with the node the test will push (so a correct reply contains it).
    fn store(&self, waybill_id: &str, create_time: i64, receiver_phone: &str, nodes: Vec<Value>) {
        self.fake.waybills.lock().unwrap().insert(
            waybill_id.into(),
            FakeWaybill {
                create_time,
                receiver_phone: receiver_phone.into(),
                path: nodes,
            },
        );
    }

    fn received(&self) -> Vec<Received> {
        self.fake.received.lock().unwrap().clone()
    }
}

fn parse_body(format: MessageFormat, body: &[u8]) -> Option<Map<String, Value>> {
    let s = std::str::from_utf8(body).ok()?;
    match format {
        MessageFormat::Json => serde_json::from_str(s).ok(),
        MessageFormat::Xml => xml::parse(s),
    }
}

fn render(format: MessageFormat, doc: &Map<String, Value>) -> String {
    match format {
        MessageFormat::Json => serde_json::to_string(doc).unwrap(),
        MessageFormat::Xml => xml::render(doc),
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn fake_callback(fake: web::Data<Fake>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let q: HashMap<String, String> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let behavior = *fake.behavior.lock().unwrap();
    if let Behavior::Delay(ms) = behavior {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let reject = |why: &str| {
        fake.rejected.lock().unwrap().push(why.to_string());
        HttpResponse::Unauthorized().finish()
    };
    let (ts, nonce) = (
        q.get("timestamp").cloned().unwrap_or_default(),
        q.get("nonce").cloned().unwrap_or_default(),
    );
    if q.get("signature") != Some(&wx::sign(&[TOKEN, &ts, &nonce])) {
        return reject("signature");
    }
    let Some(outer) = parse_body(fake.format, &body) else {
        return reject("unparsable");
    };
    let doc = if fake.mode == MessageMode::Plaintext {
        outer
    } else {
        let Some(encrypt) = outer.get("Encrypt").and_then(Value::as_str) else {
            return reject("no Encrypt");
        };
        if q.get("encrypt_type").map(String::as_str) != Some("aes")
            || q.get("msg_signature") != Some(&wx::sign(&[TOKEN, &ts, &nonce, encrypt]))
        {
            return reject("msg_signature");
        }
        let Ok(plain) = wx::decrypt(&fake.key, encrypt, APPID) else {
            return reject("decrypt");
        };
        let Some(inner) = parse_body(fake.format, &plain) else {
            return reject("inner unparsable");
        };
        if fake.mode == MessageMode::Secure
            && outer.keys().any(|k| k != "ToUserName" && k != "Encrypt")
        {
            return reject("secure body with plaintext fields");
        }
        if fake.mode == MessageMode::Compatible
            && inner
                .iter()
                .any(|(k, v)| outer.get(k).map(text_of) != Some(text_of(v)))
        {
            return reject("compatible plaintext copy differs");
        }
        inner
    };
    fake.received.lock().unwrap().push((q.clone(), doc.clone()));

    // A correct carrier: look the waybill up, check the receiver phone, list every node.
    let waybill_id = doc.get("WaybillId").map(text_of).unwrap_or_default();
    let stored = fake.waybills.lock().unwrap().get(&waybill_id).cloned();
    let mut reply = Map::new();
    reply.insert(
        "ToUserName".into(),
        doc.get("FromUserName").cloned().unwrap_or_default(),
    );
    reply.insert("FromUserName".into(), json!(ORIGINAL_ID));
    reply.insert("CreateTime".into(), json!(chrono::Utc::now().timestamp()));
    reply.insert("MsgType".into(), json!("event"));
    reply.insert("Event".into(), json!("waybill_notify_query"));
    match stored {
        None => {
            reply.insert("ResultCode".into(), json!(1001));
            reply.insert("ResultMsg".into(), json!("waybill not found"));
            reply.insert("WaybillCreateTime".into(), json!(0));
        }
        Some(w) if doc.get("ReceiverPhone").map(text_of) != Some(w.receiver_phone.clone()) => {
            reply.insert("ResultCode".into(), json!(1002));
            reply.insert(
                "ResultMsg".into(),
                json!("phone does not match the waybill"),
            );
            reply.insert("WaybillCreateTime".into(), json!(0));
        }
        Some(w) => {
            reply.insert("ResultCode".into(), json!(0));
            reply.insert("ResultMsg".into(), json!("OK"));
            let create_time = if behavior == Behavior::ChangeCreateTime {
                w.create_time + 1
            } else {
                w.create_time
            };
            reply.insert("WaybillCreateTime".into(), json!(create_time));
            let mut path = w.path.clone();
            match behavior {
                Behavior::ChangeActionMsg => {
                    path[0]["ActionMsg"] = json!(format!("{} ", text_of(&path[0]["ActionMsg"])))
                }
                Behavior::ChangeCourierPhone => {
                    path[0]["DeliveryCourierPhone"] = json!("13900000000")
                }
                _ => {}
            }
            if behavior != Behavior::NoPath {
                reply.insert("Path".into(), Value::Array(path));
            }
        }
    }
    let rendered = render(fake.format, &reply);
    let body = match behavior {
        Behavior::Garbage => "this is not a reply at all".to_string(),
        Behavior::Http(code) => {
            return HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap())
                .finish()
        }
        Behavior::PlainReply => rendered,
        _ if fake.mode == MessageMode::Plaintext => rendered,
        _ => {
            let key = if behavior == Behavior::ForeignKey {
                wx::key(OTHER_AES_KEY)
            } else {
                fake.key
            };
            let encrypt = wx::encrypt(&key, rendered.as_bytes(), APPID);
            let now = chrono::Utc::now().timestamp().to_string();
            let reply_nonce = if behavior == Behavior::WrongNonce {
                format!("{nonce}1")
            } else {
                nonce.clone()
            };
            let mut sig = wx::sign(&[TOKEN, &now, &reply_nonce, &encrypt]);
            if behavior == Behavior::BadSignature {
                sig = sig.replace(|c: char| c.is_ascii_digit(), "0");
            }
            let mut w = Map::new();
            w.insert("Encrypt".into(), json!(encrypt));
            w.insert("MsgSignature".into(), json!(sig));
            w.insert("TimeStamp".into(), json!(now.parse::<i64>().unwrap()));
            w.insert("Nonce".into(), json!(reply_nonce));
            render(fake.format, &w)
        }
    };
    let content_type = if fake.format == MessageFormat::Json {
        "application/json"
    } else {
        "text/xml"
    };
    HttpResponse::Ok().content_type(content_type).body(body)
}

// ------------------------------------------------------------------------------------------
// The sandbox under test.

struct TestSandbox {
    sandbox: Sandbox,
    base: String,
    http: reqwest::Client,
}

fn settings() -> SandboxSettings {
    SandboxSettings {
        appid: APPID.into(),
        secret: SECRET.into(),
        original_id: ORIGINAL_ID.into(),
        token: TOKEN.into(),
        encoding_aes_key: AES_KEY.into(),
        callback_timeout_ms: 1500,
        ..SandboxSettings::default()
    }
}

fn spawn_sandbox(settings: SandboxSettings) -> TestSandbox {
    let sandbox = Sandbox::new(settings);
    let running = sandbox
        .start(TcpListener::bind("127.0.0.1:0").unwrap())
        .unwrap();
    TestSandbox {
        sandbox,
        base: format!("http://{}", running.addr),
        http: reqwest::Client::new(),
    }
}

/// A sandbox whose reverse queries go to a fake callback in `mode`/`format`.
fn spawn_pair(
    mode: MessageMode,
    format: MessageFormat,
    tweak: impl FnOnce(&mut SandboxSettings),
) -> (TestSandbox, FakeCallback) {
    let cb = FakeCallback::start(mode, format);
    let mut s = SandboxSettings {
        message_mode: mode,
        message_format: format,
        callback_url: cb.url.clone(),
        ..settings()
    };
    tweak(&mut s);
    (spawn_sandbox(s), cb)
}

impl TestSandbox {
    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn put(&self, path: &str, body: Value) -> reqwest::StatusCode {
        self.http
            .put(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn classic_token(&self) -> String {
        let v = self
            .get(&format!(
                "/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret={SECRET}"
            ))
            .await;
        v["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {v}"))
            .to_string()
    }

    async fn stable(&self, force: bool) -> Value {
        self.post("/cgi-bin/stable_token", json!({"grant_type":"client_credential","appid":APPID,"secret":SECRET,"force_refresh":force})).await
    }

    async fn call(&self, api: &str, token: &str, body: Value) -> Value {
        let path = match api {
            "userquery" => "/cgi-bin/express/delivery/userquery",
            "pathnotify" => "/cgi-bin/express/delivery/pathnotify",
            "subscribe" => "/cgi-bin/message/subscribe/send",
            "template" => "/cgi-bin/message/wxopen/template/send",
            other => panic!("{other}"),
        };
        self.post(&format!("{path}?access_token={token}"), body)
            .await
    }

    async fn userquery(&self, token: &str, phone: &str) -> Value {
        self.call("userquery", token, json!({ "phone": phone }))
            .await
    }
}

fn errcode(v: &Value) -> i64 {
    v["errcode"]
        .as_i64()
        .unwrap_or_else(|| panic!("no errcode in {v}"))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The spec's recommended pathnotify body (§3.5), with a delivery courier.
fn push_body(waybill_id: &str, receiver_phone: &str, create_time: i64, action_time: i64) -> Value {
    json!({
        "sender":   { "name": "张三", "phone": SENDER_PHONE, "province": "浙江省", "city": "绍兴市", "area": "柯桥区", "address": "纺都路137号" },
        "receiver": { "name": "李四", "phone": receiver_phone, "province": "福建省", "city": "泉州市", "area": "晋江市", "address": "庄宅北区158-6" },
        "waybill_id": waybill_id,
        "create_time": create_time,
        "path": { "action_time": action_time, "action_type": 300002, "action_msg": "派送中，派件员张三 13800000000",
                  "delivery_courier_name": "张三", "delivery_courier_phone": "13800000000" }
    })
}

/// The nodes a correct carrier stores for [`push_body`]: the pushed one first, then pickup.
fn stored_nodes(create_time: i64, action_time: i64) -> Vec<Value> {
    vec![
        json!({"ActionType": 300002, "ActionTime": action_time, "ActionMsg": "派送中，派件员张三 13800000000", "DeliveryCourierName": "张三", "DeliveryCourierPhone": "13800000000"}),
        json!({"ActionType": 100001, "ActionTime": create_time + 60, "ActionMsg": "已揽件"}),
    ]
}

/// Binds PHONE, stores W1 at the fake callback, pushes it; returns the pathnotify answer.
async fn push_once(sb: &TestSandbox, cb: &FakeCallback, waybill_id: &str) -> Value {
    let token = sb.classic_token().await;
    sb.sandbox.bind_phone(PHONE);
    let (ct, at) = (now() - 3600, now() - 10);
    cb.store(waybill_id, ct, PHONE, stored_nodes(ct, at));
    sb.call("pathnotify", &token, push_body(waybill_id, PHONE, ct, at))
        .await
}

// ------------------------------------------------------------------------------------------
// access_token

#[tokio::test]
async fn token_issues_a_new_token_per_call_and_the_previous_one_works_for_the_overlap_only() {
    let sb = spawn_sandbox(settings());
    let t1 = sb.classic_token().await;
    let t2 = sb.classic_token().await;
    assert_ne!(t1, t2);
    assert!(t1.len() >= 100, "tokens are long like WeChat's");
    assert_eq!(
        errcode(&sb.userquery(&t1, PHONE).await),
        0,
        "the previous token overlaps"
    );
    sb.sandbox.advance_clock(301);
    assert_eq!(
        errcode(&sb.userquery(&t1, PHONE).await),
        40001,
        "after 5 minutes it is invalid"
    );
    assert_eq!(errcode(&sb.userquery(&t2, PHONE).await), 0);
    sb.sandbox.advance_clock(7200);
    assert_eq!(
        errcode(&sb.userquery(&t2, PHONE).await),
        42001,
        "past its lifetime it is expired"
    );
}

#[tokio::test]
async fn token_answers_expires_in_from_the_settings() {
    let sb = spawn_sandbox(SandboxSettings {
        token_ttl_secs: 60,
        ..settings()
    });
    let v = sb
        .get(&format!(
            "/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret={SECRET}"
        ))
        .await;
    assert_eq!(v["expires_in"], 60);
    assert!(
        v.get("errcode").is_none(),
        "a token answer has no errcode: {v}"
    );
}

#[tokio::test]
async fn token_with_wrong_grant_type_appid_or_secret_is_refused_with_wechats_codes() {
    let sb = spawn_sandbox(settings());
    for (query, code) in [
        (
            format!("grant_type=password&appid={APPID}&secret={SECRET}"),
            40002,
        ),
        (
            format!("grant_type=client_credential&secret={SECRET}"),
            41002,
        ),
        (format!("grant_type=client_credential&appid={APPID}"), 41004),
        (
            format!("grant_type=client_credential&appid=wxother&secret={SECRET}"),
            40013,
        ),
        (
            format!("grant_type=client_credential&appid={APPID}&secret=wrong"),
            40125,
        ),
    ] {
        let v = sb.get(&format!("/cgi-bin/token?{query}")).await;
        assert_eq!(errcode(&v), code, "{query}: {v}");
        assert!(v.get("access_token").is_none());
    }
    let v = sb
        .post(
            "/cgi-bin/stable_token",
            json!({"grant_type":"client_credential","appid":APPID,"secret":"wrong"}),
        )
        .await;
    assert_eq!(errcode(&v), 40125);
}

#[tokio::test]
async fn token_daily_limit_answers_45009_until_the_next_day() {
    let sb = spawn_sandbox(SandboxSettings {
        token_daily_limit: 2,
        ..settings()
    });
    sb.classic_token().await;
    sb.classic_token().await;
    let v = sb
        .get(&format!(
            "/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret={SECRET}"
        ))
        .await;
    assert_eq!(errcode(&v), 45009);
    sb.sandbox.advance_clock(86_400);
    sb.classic_token().await;
}

#[tokio::test]
async fn stable_token_returns_the_same_token_until_its_last_five_minutes() {
    let sb = spawn_sandbox(settings());
    let a = sb.stable(false).await;
    assert_eq!(a["expires_in"], 7200);
    sb.sandbox.advance_clock(100);
    let b = sb.stable(false).await;
    assert_eq!(a["access_token"], b["access_token"]);
    assert!(b["expires_in"].as_i64().unwrap() <= 7100);
    let classic = sb.classic_token().await;
    assert_eq!(
        sb.stable(false).await["access_token"],
        a["access_token"],
        "the classic endpoint does not touch stable tokens"
    );
    sb.sandbox.advance_clock(6850);
    let renewed = sb.stable(false).await;
    assert_ne!(
        renewed["access_token"], a["access_token"],
        "renewed in the last 5 minutes"
    );
    assert_eq!(renewed["expires_in"], 7200);
    let old = a["access_token"].as_str().unwrap();
    assert_eq!(
        errcode(&sb.userquery(old, PHONE).await),
        0,
        "old and new both work for the rest of the old one's life"
    );
    sb.sandbox.advance_clock(300);
    assert_eq!(errcode(&sb.userquery(old, PHONE).await), 42001);
    assert_eq!(
        errcode(&sb.userquery(&classic, PHONE).await),
        0,
        "the classic token lives on its own clock"
    );
}

#[tokio::test]
async fn stable_token_force_refresh_overlaps_needs_30_seconds_and_is_limited_per_day() {
    let sb = spawn_sandbox(SandboxSettings {
        force_refresh_daily_limit: 3,
        ..settings()
    });
    let leaked = sb.stable(false).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let f1 = sb.stable(true).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(leaked, f1);
    assert_eq!(
        errcode(&sb.userquery(&leaked, PHONE).await),
        0,
        "one force refresh keeps the 5-minute overlap"
    );
    sb.sandbox.advance_clock(10);
    assert_eq!(
        sb.stable(true).await["access_token"],
        f1.as_str(),
        "within 30 s no refresh happens"
    );
    sb.sandbox.advance_clock(30);
    let f2 = sb.stable(true).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(f2, f1);
    assert_eq!(
        errcode(&sb.userquery(&leaked, PHONE).await),
        40001,
        "two force calls 30 s apart kill the leaked token"
    );
    assert_eq!(errcode(&sb.userquery(&f1, PHONE).await), 0);
    assert_eq!(
        errcode(&sb.stable(true).await),
        45009,
        "the fourth force call of the day"
    );
    assert_eq!(
        sb.stable(false).await["access_token"],
        f2.as_str(),
        "normal mode still works"
    );
}

#[tokio::test]
async fn stable_token_wants_post_with_a_json_body_and_a_boolean_force_refresh() {
    let sb = spawn_sandbox(settings());
    assert_eq!(errcode(&sb.get("/cgi-bin/stable_token").await), 43002);
    let form = sb
        .http
        .post(format!("{}/cgi-bin/stable_token", sb.base))
        .body(format!(
            "grant_type=client_credential&appid={APPID}&secret={SECRET}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(errcode(&form.json().await.unwrap()), 41002);
    let v = sb.post("/cgi-bin/stable_token", json!({"grant_type":"client_credential","appid":APPID,"secret":SECRET,"force_refresh":"yes"})).await;
    assert_eq!(errcode(&v), 40097);
}

#[tokio::test]
async fn business_apis_without_a_token_answer_41001_and_with_a_foreign_one_40014() {
    let sb = spawn_sandbox(settings());
    let v = sb
        .post(
            "/cgi-bin/express/delivery/userquery",
            json!({"phone": PHONE}),
        )
        .await;
    assert_eq!(errcode(&v), 41001);
    for api in ["userquery", "pathnotify", "subscribe", "template"] {
        assert_eq!(
            errcode(&sb.call(api, "not-a-token", json!({})).await),
            40014,
            "{api}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// userquery

#[tokio::test]
async fn userquery_answers_exist_from_the_bindings_the_operator_controls() {
    let sb = spawn_sandbox(settings());
    let token = sb.classic_token().await;
    let v = sb.userquery(&token, PHONE).await;
    assert_eq!((errcode(&v), v["exist"].as_i64()), (0, Some(0)));
    assert_eq!(
        sb.put(&format!("/sandbox/bindings/{PHONE}"), json!({}))
            .await,
        204
    );
    assert_eq!(sb.userquery(&token, PHONE).await["exist"], 1);
    let del = sb
        .http
        .delete(format!("{}/sandbox/bindings/{PHONE}", sb.base))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    assert_eq!(sb.userquery(&token, PHONE).await["exist"], 0);
}

#[tokio::test]
async fn userquery_with_a_missing_or_malformed_phone_is_40097() {
    let sb = spawn_sandbox(settings());
    let token = sb.classic_token().await;
    for body in [
        json!({}),
        json!({"phone": 13800138000u64}),
        json!({"phone": "+8613800138000"}),
        json!({"phone": "1380013800"}),
        json!({"phone": "010-12345678"}),
    ] {
        assert_eq!(
            errcode(&sb.call("userquery", &token, body.clone()).await),
            40097,
            "{body}"
        );
    }
    let raw = sb
        .http
        .post(format!(
            "{}/cgi-bin/express/delivery/userquery?access_token={token}",
            sb.base
        ))
        .body("phone=13800138000")
        .send()
        .await
        .unwrap();
    assert_eq!(errcode(&raw.json().await.unwrap()), 40097);
}

// ------------------------------------------------------------------------------------------
// pathnotify

#[tokio::test]
async fn pathnotify_refuses_invalid_bodies_with_40097_naming_the_field() {
    let sb = spawn_sandbox(settings());
    let token = sb.classic_token().await;
    let good = push_body("W1", PHONE, now() - 100, now() - 10);
    let cases: Vec<Edit> = vec![
        (
            "create_time",
            Box::new(|b| drop(b.as_object_mut().unwrap().remove("create_time"))),
        ),
        (
            "create_time",
            Box::new(|b| b["create_time"] = json!(now() * 1000)),
        ),
        ("waybill_id", Box::new(|b| b["waybill_id"] = json!(123))),
        (
            "path.action_type",
            Box::new(|b| b["path"]["action_type"] = json!(300001)),
        ),
        (
            "path.action_time",
            Box::new(|b| b["path"]["action_time"] = json!("1700000000")),
        ),
        (
            "path.action_msg",
            Box::new(|b| drop(b["path"].as_object_mut().unwrap().remove("action_msg"))),
        ),
        (
            "receiver.phone",
            Box::new(|b| drop(b["receiver"].as_object_mut().unwrap().remove("phone"))),
        ),
        (
            "receiver.name",
            Box::new(|b| b["receiver"]["name"] = json!("")),
        ),
        (
            "sender.province",
            Box::new(|b| drop(b["sender"].as_object_mut().unwrap().remove("province"))),
        ),
        ("path", Box::new(|b| b["path"] = json!([]))),
    ];
    for (field, edit) in cases {
        let mut b = good.clone();
        edit(&mut b);
        let v = sb.call("pathnotify", &token, b).await;
        assert_eq!(errcode(&v), 40097, "{field}: {v}");
        assert!(
            v["errmsg"].as_str().unwrap().contains(field),
            "{field}: {v}"
        );
    }
}

#[tokio::test]
async fn pathnotify_for_an_unbound_phone_answers_exist_0_without_a_reverse_query() {
    let (sb, cb) = spawn_pair(MessageMode::Secure, MessageFormat::Json, |_| {});
    let token = sb.classic_token().await;
    let v = sb
        .call(
            "pathnotify",
            &token,
            push_body("W1", PHONE, now() - 100, now() - 10),
        )
        .await;
    assert_eq!((errcode(&v), v["exist"].as_i64()), (0, Some(0)));
    assert!(cb.received().is_empty());
    assert!(sb.sandbox.inbox_for_phone(PHONE).is_empty());
}

#[tokio::test]
async fn a_correct_callback_gets_the_node_delivered_in_all_six_mode_and_format_combinations() {
    for mode in [
        MessageMode::Plaintext,
        MessageMode::Compatible,
        MessageMode::Secure,
    ] {
        for format in [MessageFormat::Json, MessageFormat::Xml] {
            let (sb, cb) = spawn_pair(mode, format, |_| {});
            let v = push_once(&sb, &cb, "SF1001").await;
            assert_eq!(
                (errcode(&v), v["exist"].as_i64()),
                (0, Some(1)),
                "{mode:?}/{format:?}: {v}"
            );
            assert!(
                cb.fake.rejected.lock().unwrap().is_empty(),
                "{mode:?}/{format:?}: the query verified independently"
            );

            let received = cb.received();
            assert_eq!(received.len(), 1, "exactly one reverse query");
            let (q, doc) = &received[0];
            assert_eq!(text_of(&doc["ToUserName"]), ORIGINAL_ID);
            assert_eq!(text_of(&doc["FromUserName"]), WECHAT_TEAM);
            assert_eq!(text_of(&doc["MsgType"]), "event");
            assert_eq!(text_of(&doc["Event"]), "waybill_notify_query");
            assert_eq!(text_of(&doc["WaybillId"]), "SF1001");
            assert_eq!(text_of(&doc["ReceiverPhone"]), PHONE);
            assert_eq!(text_of(&doc["SenderPhone"]), SENDER_PHONE);
            assert!((text_of(&doc["CreateTime"]).parse::<i64>().unwrap() - now()).abs() < 5);
            if format == MessageFormat::Json {
                assert!(doc["CreateTime"].is_i64(), "JSON numbers are numbers");
            }
            if mode != MessageMode::Plaintext {
                assert_eq!(q.get("openid").map(String::as_str), Some(WECHAT_TEAM));
            }

            let inbox = sb.get(&format!("/sandbox/inbox/{PHONE}")).await;
            assert_eq!(inbox.as_array().unwrap().len(), 1);
            let node = &inbox[0];
            assert_eq!(node["waybill_id"], "SF1001");
            assert_eq!(node["action_type"], 300002);
            assert_eq!(node["action_msg"], "派送中，派件员张三 13800000000");
            assert_eq!(node["delivery_courier_phone"], "13800000000");
            assert!(node["action_time"].is_i64());
            let log = sb.sandbox.exchanges();
            assert_eq!(log.len(), 1);
            assert_eq!(log[0].verdict, Verdict::Consistent);
            assert_eq!(
                log[0].receiver_phone, "138****8000",
                "phones are masked in the log"
            );
        }
    }
}

#[tokio::test]
async fn nodes_arrive_in_the_inbox_oldest_first() {
    let (sb, cb) = spawn_pair(MessageMode::Secure, MessageFormat::Json, |_| {});
    let token = sb.classic_token().await;
    sb.sandbox.bind_phone(PHONE);
    let ct = now() - 3600;
    let first = json!({"ActionType": 100001, "ActionTime": ct + 60, "ActionMsg": "已揽件"});
    cb.store("W1", ct, PHONE, vec![first.clone()]);
    let mut b = push_body("W1", PHONE, ct, ct + 60);
    b["path"] = json!({"action_type": 100001, "action_time": ct + 60, "action_msg": "已揽件"});
    assert_eq!(errcode(&sb.call("pathnotify", &token, b).await), 0);
    cb.store("W1", ct, PHONE, stored_nodes(ct, now() - 10));
    assert_eq!(
        errcode(
            &sb.call("pathnotify", &token, push_body("W1", PHONE, ct, now() - 10))
                .await
        ),
        0
    );
    let inbox = sb.sandbox.inbox_for_phone(PHONE);
    assert_eq!(
        inbox.iter().map(|n| n.action_type).collect::<Vec<_>>(),
        [100001, 300002]
    );
}

#[tokio::test]
async fn a_reply_that_disagrees_with_the_push_is_932002() {
    for (format, behavior) in [
        (MessageFormat::Json, Behavior::ChangeActionMsg),
        (MessageFormat::Xml, Behavior::ChangeActionMsg),
        (MessageFormat::Json, Behavior::ChangeCourierPhone),
        (MessageFormat::Xml, Behavior::ChangeCreateTime),
    ] {
        let (sb, cb) = spawn_pair(MessageMode::Secure, format, |_| {});
        cb.behave(behavior);
        let v = push_once(&sb, &cb, "W1").await;
        assert_eq!(errcode(&v), 932002, "{format:?}/{behavior:?}: {v}");
        assert!(
            sb.sandbox.inbox_for_phone(PHONE).is_empty(),
            "nothing is delivered"
        );
        assert_eq!(sb.sandbox.exchanges()[0].verdict, Verdict::Inconsistent);
    }
}

#[tokio::test]
async fn a_push_for_a_phone_that_does_not_own_the_waybill_is_932002() {
    let (sb, cb) = spawn_pair(MessageMode::Secure, MessageFormat::Json, |_| {});
    let token = sb.classic_token().await;
    let other = "13912345678";
    sb.sandbox.bind_phone(other);
    let (ct, at) = (now() - 3600, now() - 10);
    cb.store("W1", ct, PHONE, stored_nodes(ct, at));
    let v = sb
        .call("pathnotify", &token, push_body("W1", other, ct, at))
        .await;
    assert_eq!(
        errcode(&v),
        932002,
        "the carrier answered ResultCode 1002: {v}"
    );
    let v = sb
        .call("pathnotify", &token, push_body("UNKNOWN", other, ct, at))
        .await;
    assert_eq!(errcode(&v), 932002, "unknown waybill: {v}");
    let log = sb.get("/sandbox/exchanges").await;
    assert_eq!(log[0]["reply"]["ResultCode"], 1002);
    assert_eq!(log[0]["receiver_phone"], "139****5678");
}

#[tokio::test]
async fn a_badly_signed_or_undecryptable_reply_is_932001() {
    for format in [MessageFormat::Json, MessageFormat::Xml] {
        for behavior in [
            Behavior::BadSignature,
            Behavior::WrongNonce,
            Behavior::ForeignKey,
            Behavior::PlainReply,
            Behavior::Http(500),
        ] {
            let (sb, cb) = spawn_pair(MessageMode::Secure, format, |_| {});
            cb.behave(behavior);
            let v = push_once(&sb, &cb, "W1").await;
            assert_eq!(errcode(&v), 932001, "{format:?}/{behavior:?}: {v}");
            assert!(sb.sandbox.inbox_for_phone(PHONE).is_empty());
        }
    }
}

#[tokio::test]
async fn compatible_mode_accepts_a_plaintext_reply() {
    let (sb, cb) = spawn_pair(MessageMode::Compatible, MessageFormat::Xml, |_| {});
    cb.behave(Behavior::PlainReply);
    assert_eq!(errcode(&push_once(&sb, &cb, "W1").await), 0);
}

#[tokio::test]
async fn a_callback_that_answers_too_late_is_932001_after_the_timeout() {
    let (sb, cb) = spawn_pair(MessageMode::Secure, MessageFormat::Json, |s| {
        s.callback_timeout_ms = 300
    });
    cb.behave(Behavior::Delay(2000));
    let started = Instant::now();
    let v = push_once(&sb, &cb, "W1").await;
    assert_eq!(errcode(&v), 932001);
    assert!(
        started.elapsed() < Duration::from_millis(1800),
        "WeChat gives up at its timeout"
    );
    assert_eq!(sb.sandbox.exchanges()[0].verdict, Verdict::Timeout);
}

#[tokio::test]
async fn an_unreachable_callback_is_932001() {
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/wechat/callback", dead.local_addr().unwrap());
    drop(dead);
    let sb = spawn_sandbox(SandboxSettings {
        callback_url: url,
        ..settings()
    });
    let token = sb.classic_token().await;
    sb.sandbox.bind_phone(PHONE);
    let v = sb
        .call(
            "pathnotify",
            &token,
            push_body("W1", PHONE, now() - 100, now() - 10),
        )
        .await;
    assert_eq!(errcode(&v), 932001);
    assert_eq!(sb.sandbox.exchanges()[0].verdict, Verdict::Unreachable);
    assert_eq!(sb.sandbox.stats().reverse_queries.failed, 1);
}

#[tokio::test]
async fn a_garbage_or_incomplete_reply_is_932003() {
    for (mode, format, behavior) in [
        (MessageMode::Secure, MessageFormat::Json, Behavior::Garbage),
        (
            MessageMode::Plaintext,
            MessageFormat::Xml,
            Behavior::Garbage,
        ),
        (MessageMode::Secure, MessageFormat::Xml, Behavior::NoPath),
        (
            MessageMode::Plaintext,
            MessageFormat::Json,
            Behavior::NoPath,
        ),
    ] {
        let (sb, cb) = spawn_pair(mode, format, |_| {});
        cb.behave(behavior);
        let v = push_once(&sb, &cb, "W1").await;
        assert_eq!(errcode(&v), 932003, "{mode:?}/{format:?}/{behavior:?}: {v}");
        assert_eq!(sb.sandbox.exchanges()[0].verdict, Verdict::Malformed);
    }
}

#[tokio::test]
async fn set_callback_url_redirects_reverse_queries() {
    let (sb, cb) = spawn_pair(MessageMode::Secure, MessageFormat::Json, |s| {
        s.callback_url = "http://127.0.0.1:9/nowhere".into()
    });
    sb.sandbox.set_callback_url(&cb.url);
    assert_eq!(errcode(&push_once(&sb, &cb, "W1").await), 0);
    let v = sb.get("/sandbox/callback").await;
    assert_eq!(v["url"], cb.url.as_str());
}

#[tokio::test]
async fn a_slow_pathnotify_does_not_hold_up_other_requests() {
    let (sb, cb) = spawn_pair(MessageMode::Secure, MessageFormat::Json, |_| {});
    cb.behave(Behavior::Delay(800));
    let token = sb.classic_token().await;
    let slow = push_once(&sb, &cb, "W1");
    let quick = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        for _ in 0..5 {
            assert_eq!(errcode(&sb.userquery(&token, PHONE).await), 0);
        }
        started.elapsed()
    };
    let (v, quick_took) = tokio::join!(slow, quick);
    assert_eq!(errcode(&v), 0);
    assert!(
        quick_took < Duration::from_millis(500),
        "userquery waited for pathnotify: {quick_took:?}"
    );
}

// ------------------------------------------------------------------------------------------
// subscribe/send

fn shipping_data() -> Value {
    json!({
        "character_string1": {"value": "SF1001"},
        "phrase2": {"value": "运输中"},
        "thing3": {"value": "快件到达泉州磁灶集散中心"},
        "time4": {"value": "2020年08月14日 17:08"}
    })
}

fn subscribe_body(data: Value) -> Value {
    json!({"touser": OPENID, "template_id": SUB_TEMPLATE, "page": "pages/info/info?no=1", "miniprogram_state": "formal", "lang": "zh_CN", "data": data})
}

#[tokio::test]
async fn each_accepted_subscription_allows_one_message_then_43101() {
    let sb = spawn_sandbox(settings());
    let token = sb.classic_token().await;
    let g = sb
        .post(
            "/sandbox/grants",
            json!({"openid": OPENID, "template_id": SUB_TEMPLATE, "count": 2}),
        )
        .await;
    assert_eq!(g["remaining"], 2);
    for _ in 0..2 {
        assert_eq!(
            errcode(
                &sb.call("subscribe", &token, subscribe_body(shipping_data()))
                    .await
            ),
            0
        );
    }
    assert_eq!(
        errcode(
            &sb.call("subscribe", &token, subscribe_body(shipping_data()))
                .await
        ),
        43101
    );
    let inbox = sb.get(&format!("/sandbox/inbox/openid/{OPENID}")).await;
    assert_eq!(inbox.as_array().unwrap().len(), 2);
    assert_eq!(inbox[0]["template_id"], SUB_TEMPLATE);
    assert_eq!(inbox[0]["data"]["phrase2"]["value"], "运输中");
}

#[tokio::test]
async fn subscribe_send_refuses_unknown_users_and_templates() {
    let sb = spawn_sandbox(settings());
    let token = sb.classic_token().await;
    sb.sandbox
        .grant_subscriptions(OPENID, SUB_TEMPLATE, 5)
        .unwrap();
    let mut b = subscribe_body(shipping_data());
    b["touser"] = json!("oSomebodyElse");
    assert_eq!(errcode(&sb.call("subscribe", &token, b).await), 40003);
    let mut b = subscribe_body(shipping_data());
    b["template_id"] = json!("no-such-template");
    assert_eq!(errcode(&sb.call("subscribe", &token, b).await), 40037);
    let mut b = subscribe_body(shipping_data());
    b["template_id"] = json!(LEGACY_TEMPLATE);
    assert_eq!(
        errcode(&sb.call("subscribe", &token, b).await),
        40037,
        "a legacy template is not a subscribe template"
    );
}

#[tokio::test]
async fn subscribe_values_breaking_their_keyword_type_are_47003_and_keep_the_grant() {
    let sb = spawn_sandbox(settings());
    let token = sb.classic_token().await;
    sb.sandbox
        .grant_subscriptions(OPENID, SUB_TEMPLATE, 1)
        .unwrap();
    for (key, value) in [
        (
            "thing3",
            json!({"value": "这是一段超过二十个字符的很长很长的物流描述文字"}),
        ),
        ("phrase2", json!({"value": "运输中的快件"})),
        ("character_string1", json!({"value": "中文单号"})),
        ("time4", json!({"value": "明天下午"})),
        ("time4", json!("2020-08-14 17:08")),
    ] {
        let mut data = shipping_data();
        data[key] = value.clone();
        let v = sb.call("subscribe", &token, subscribe_body(data)).await;
        assert_eq!(errcode(&v), 47003, "{key}={value}: {v}");
    }
    let mut data = shipping_data();
    data.as_object_mut().unwrap().remove("thing3");
    assert_eq!(
        errcode(&sb.call("subscribe", &token, subscribe_body(data)).await),
        47003,
        "a template keyword is missing"
    );
    let mut b = subscribe_body(shipping_data());
    b["miniprogram_state"] = json!("production");
    assert_eq!(errcode(&sb.call("subscribe", &token, b).await), 47003);
    assert_eq!(
        errcode(
            &sb.call("subscribe", &token, subscribe_body(shipping_data()))
                .await
        ),
        0,
        "the grant survived"
    );
}

#[tokio::test]
async fn enum_keywords_take_only_the_templates_values() {
    let sb = spawn_sandbox(settings());
    let token = sb.classic_token().await;
    let t = Template {
        kind: TemplateKind::Subscribe,
        keywords: Some(vec!["enum1".into()]),
        enums: [("enum1".to_string(), vec!["已发货".to_string()])].into(),
        ..Default::default()
    };
    sb.sandbox.put_template("tmpl-enum", t);
    sb.sandbox
        .grant_subscriptions(OPENID, "tmpl-enum", 2)
        .unwrap();
    let body = |v: &str| json!({"touser": OPENID, "template_id": "tmpl-enum", "data": {"enum1": {"value": v}}});
    assert_eq!(
        errcode(&sb.call("subscribe", &token, body("已签收")).await),
        47003
    );
    assert_eq!(
        errcode(&sb.call("subscribe", &token, body("已发货")).await),
        0
    );
}

#[tokio::test]
async fn concurrent_sends_to_one_user_get_43108() {
    let sb = spawn_sandbox(settings());
    let token = sb.classic_token().await;
    sb.sandbox
        .grant_subscriptions(OPENID, SUB_TEMPLATE, 5)
        .unwrap();
    sb.sandbox.set_faults(Faults {
        subscribe_send: ApiFault {
            latency_ms: 400,
            ..Default::default()
        },
        ..Default::default()
    });
    let first = sb.call("subscribe", &token, subscribe_body(shipping_data()));
    let second = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        sb.call("subscribe", &token, subscribe_body(shipping_data()))
            .await
    };
    let (a, b) = tokio::join!(first, second);
    assert_eq!((errcode(&a), errcode(&b)), (0, 43108));
    sb.sandbox.set_faults(Faults::default());
    assert_eq!(
        errcode(
            &sb.call("subscribe", &token, subscribe_body(shipping_data()))
                .await
        ),
        0,
        "after the first ended the user is free"
    );
}

// ------------------------------------------------------------------------------------------
// legacy template/send

fn template_body(form_id: &str) -> Value {
    json!({"touser": OPENID, "template_id": LEGACY_TEMPLATE, "page": "pages/index/index", "form_id": form_id,
           "data": {"keyword1": {"value": "SF1001"}, "keyword2": {"value": "2015年01月05日 12:30"}}, "emphasis_keyword": "keyword1.DATA"})
}

#[tokio::test]
async fn a_form_id_allows_one_message_and_a_prepay_id_three() {
    let sb = spawn_sandbox(settings());
    let token = sb.classic_token().await;
    let c = sb
        .post(
            "/sandbox/credentials",
            json!({"openid": OPENID, "kind": "form_id", "value": "form-1"}),
        )
        .await;
    assert_eq!(c["kind"], "form_id");
    sb.post("/sandbox/credentials", json!({"openid": OPENID, "kind": "prepay_id", "value": "wx201410272009395522657a690389285100"})).await;
    assert_eq!(
        errcode(&sb.call("template", &token, template_body("form-1")).await),
        0
    );
    assert_eq!(
        errcode(&sb.call("template", &token, template_body("form-1")).await),
        41029
    );
    for _ in 0..3 {
        assert_eq!(
            errcode(
                &sb.call(
                    "template",
                    &token,
                    template_body("wx201410272009395522657a690389285100")
                )
                .await
            ),
            0
        );
    }
    assert_eq!(
        errcode(
            &sb.call(
                "template",
                &token,
                template_body("wx201410272009395522657a690389285100")
            )
            .await
        ),
        41029
    );
    assert_eq!(sb.sandbox.inbox_for_openid(OPENID).len(), 4);
}

#[tokio::test]
async fn legacy_credentials_expire_after_seven_days_on_the_sandbox_clock() {
    let sb = spawn_sandbox(settings());
    let issued = sb.sandbox.now();
    sb.sandbox
        .add_credential(OPENID, CredentialKind::PrepayId, "prepay-1", issued);
    sb.sandbox
        .add_credential(OPENID, CredentialKind::FormId, "form-1", issued);
    sb.sandbox.advance_clock(7 * 86_400 - 60);
    let token = sb.classic_token().await;
    assert_eq!(
        errcode(&sb.call("template", &token, template_body("prepay-1")).await),
        0
    );
    let v = sb
        .post("/sandbox/clock/advance", json!({"secs": 120}))
        .await;
    assert!(v["offset_secs"].as_i64().unwrap() >= 7 * 86_400);
    let token = sb.classic_token().await;
    assert_eq!(
        errcode(&sb.call("template", &token, template_body("prepay-1")).await),
        41028
    );
    assert_eq!(
        errcode(&sb.call("template", &token, template_body("form-1")).await),
        41028
    );
}

#[tokio::test]
async fn template_send_refuses_foreign_or_unknown_form_ids_bad_pages_and_unknown_templates() {
    let sb = spawn_sandbox(settings());
    let token = sb.classic_token().await;
    sb.sandbox.add_credential(
        "oOtherUser",
        CredentialKind::FormId,
        "form-other",
        sb.sandbox.now(),
    );
    sb.sandbox
        .add_credential(OPENID, CredentialKind::FormId, "form-1", sb.sandbox.now());
    assert_eq!(
        errcode(
            &sb.call("template", &token, template_body("form-other"))
                .await
        ),
        41028,
        "another user's form_id"
    );
    assert_eq!(
        errcode(
            &sb.call("template", &token, template_body("never-issued"))
                .await
        ),
        41028
    );
    let mut b = template_body("form-1");
    b.as_object_mut().unwrap().remove("form_id");
    assert_eq!(errcode(&sb.call("template", &token, b).await), 41028);
    let mut b = template_body("form-1");
    b["page"] = json!("https://example.com/x");
    assert_eq!(errcode(&sb.call("template", &token, b).await), 41030);
    assert_eq!(
        sb.put("/sandbox/pages", json!(["pages/waybill/detail"]))
            .await,
        200
    );
    assert_eq!(
        errcode(&sb.call("template", &token, template_body("form-1")).await),
        41030,
        "not in the page list"
    );
    let mut b = template_body("form-1");
    b["template_id"] = json!(SUB_TEMPLATE);
    assert_eq!(errcode(&sb.call("template", &token, b).await), 40037);
    let mut b = template_body("form-1");
    b["touser"] = json!("oNobody");
    assert_eq!(errcode(&sb.call("template", &token, b).await), 40003);
    let mut b = template_body("form-1");
    b["page"] = json!("pages/waybill/detail?id=1");
    assert_eq!(
        errcode(&sb.call("template", &token, b).await),
        0,
        "the refusals did not use the form_id"
    );
}

// ------------------------------------------------------------------------------------------
// faults, reset, stats, control

#[tokio::test]
async fn injected_errcodes_answer_for_the_given_number_of_calls() {
    let sb = spawn_sandbox(settings());
    let token = sb.classic_token().await;
    let faults = json!({"userquery": {"errcode": -1, "times": 2}, "token": {"errcode": 45011}, "pathnotify": {"errcode": 45009}});
    assert_eq!(sb.put("/sandbox/faults", faults).await, 200);
    assert_eq!(errcode(&sb.userquery(&token, PHONE).await), -1);
    assert_eq!(errcode(&sb.userquery(&token, PHONE).await), -1);
    assert_eq!(errcode(&sb.userquery(&token, PHONE).await), 0, "only twice");
    assert_eq!(
        errcode(
            &sb.get(&format!(
                "/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret={SECRET}"
            ))
            .await
        ),
        45011
    );
    assert_eq!(
        errcode(
            &sb.call(
                "pathnotify",
                &token,
                push_body("W1", PHONE, now() - 9, now() - 1)
            )
            .await
        ),
        45009
    );
    assert_eq!(sb.get("/sandbox/faults").await["userquery"]["times"], 2);
}

#[tokio::test]
async fn injected_http_errors_and_dropped_connections_fail_below_the_json() {
    let sb = spawn_sandbox(settings());
    let token = sb.classic_token().await;
    sb.sandbox.set_faults(Faults {
        userquery: ApiFault {
            http_status: Some(503),
            ..Default::default()
        },
        ..Default::default()
    });
    let r = sb
        .http
        .post(format!(
            "{}/cgi-bin/express/delivery/userquery?access_token={token}",
            sb.base
        ))
        .json(&json!({"phone": PHONE}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    sb.sandbox.set_faults(Faults {
        userquery: ApiFault {
            drop_connection: true,
            ..Default::default()
        },
        ..Default::default()
    });
    let r = sb
        .http
        .post(format!(
            "{}/cgi-bin/express/delivery/userquery?access_token={token}",
            sb.base
        ))
        .json(&json!({"phone": PHONE}))
        .send()
        .await;
    let failed = match r {
        Err(_) => true,
        Ok(resp) => resp.bytes().await.is_err(),
    };
    assert!(failed, "a dropped connection gives no complete answer");
    assert_eq!(sb.sandbox.stats().apis["userquery"].http_faults, 2);
}

#[tokio::test]
async fn injected_latency_delays_the_answer() {
    let sb = spawn_sandbox(settings());
    let token = sb.classic_token().await;
    sb.sandbox.set_faults(Faults {
        userquery: ApiFault {
            latency_ms: 300,
            ..Default::default()
        },
        ..Default::default()
    });
    let started = Instant::now();
    assert_eq!(errcode(&sb.userquery(&token, PHONE).await), 0);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_failing_or_too_slow_callback_fault_makes_pathnotify_932001() {
    let (sb, cb) = spawn_pair(MessageMode::Secure, MessageFormat::Json, |s| {
        s.callback_timeout_ms = 300
    });
    sb.sandbox.set_faults(Faults {
        callback: CallbackFault {
            fail: true,
            times: Some(1),
            ..Default::default()
        },
        ..Default::default()
    });
    assert_eq!(errcode(&push_once(&sb, &cb, "W1").await), 932001);
    assert_eq!(
        errcode(&push_once(&sb, &cb, "W1").await),
        0,
        "the fault fired once"
    );
    sb.sandbox.set_faults(Faults {
        callback: CallbackFault {
            latency_ms: 500,
            ..Default::default()
        },
        ..Default::default()
    });
    assert_eq!(errcode(&push_once(&sb, &cb, "W1").await), 932001);
    assert_eq!(
        sb.sandbox.exchanges().last().unwrap().verdict,
        Verdict::Timeout
    );
}

#[tokio::test]
async fn a_fault_after_the_reverse_query_fails_a_consistent_push_and_delivers_nothing() {
    let (sb, cb) = spawn_pair(MessageMode::Secure, MessageFormat::Json, |_| {});
    // Set from outside, as the CONTRACT spells it.
    assert_eq!(
        sb.put(
            "/sandbox/faults",
            json!({"pathnotify": {"errcode": 932001, "after_reverse_query": true, "times": 1}})
        )
        .await,
        200
    );
    assert_eq!(errcode(&push_once(&sb, &cb, "W9").await), 932001);
    let exchanges = sb.sandbox.exchanges();
    assert_eq!(exchanges.len(), 1, "the reverse query was made first");
    assert_eq!(exchanges[0].verdict, Verdict::Consistent);
    assert!(
        sb.sandbox.inbox_for_phone(PHONE).is_empty(),
        "nothing delivered"
    );
    assert_eq!(errcode(&push_once(&sb, &cb, "W9").await), 0, "fired once");
    assert_eq!(sb.sandbox.inbox_for_phone(PHONE).len(), 1);
}

#[tokio::test]
async fn invalid_control_input_is_a_400() {
    let sb = spawn_sandbox(settings());
    assert_eq!(
        sb.put(
            "/sandbox/faults",
            json!({"pathnotify": {"http_status": 404}})
        )
        .await,
        400
    );
    assert_eq!(
        sb.put("/sandbox/faults", json!({"nosuchapi": {}})).await,
        400
    );
    assert_eq!(
        sb.put(
            "/sandbox/faults",
            json!({"userquery": {"errcode": -1, "after_reverse_query": true}})
        )
        .await,
        400,
        "only pathnotify makes a reverse query"
    );
    assert_eq!(sb.put("/sandbox/bindings/12345", json!({})).await, 400);
    let r = sb
        .http
        .post(format!("{}/sandbox/clock/advance", sb.base))
        .json(&json!({"seconds": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = sb
        .http
        .post(format!("{}/sandbox/grants", sb.base))
        .json(&json!({"openid": OPENID, "template_id": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        sb.put(
            "/sandbox/templates/t1",
            json!({"kind": "subscribe", "keywords": ["keyword1"]})
        )
        .await,
        400
    );
    assert_eq!(
        sb.put("/sandbox/callback", json!({"url": "ftp://x"})).await,
        400
    );
}

#[tokio::test]
async fn reset_forgets_tokens_bindings_inboxes_faults_and_the_clock() {
    let (sb, cb) = spawn_pair(MessageMode::Secure, MessageFormat::Json, |_| {});
    let token = sb.classic_token().await;
    assert_eq!(errcode(&push_once(&sb, &cb, "W1").await), 0);
    sb.sandbox
        .grant_subscriptions(OPENID, SUB_TEMPLATE, 1)
        .unwrap();
    sb.sandbox.set_faults(Faults {
        userquery: ApiFault {
            errcode: Some(-1),
            ..Default::default()
        },
        ..Default::default()
    });
    sb.sandbox.advance_clock(1000);
    let r = sb
        .http
        .post(format!("{}/sandbox/reset", sb.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        errcode(&sb.userquery(&token, PHONE).await),
        40014,
        "tokens are forgotten"
    );
    let token = sb.classic_token().await;
    assert_eq!(
        sb.userquery(&token, PHONE).await["exist"],
        0,
        "bindings are forgotten and faults cleared"
    );
    assert!(sb.sandbox.inbox_for_phone(PHONE).is_empty());
    assert!(sb.sandbox.exchanges().is_empty());
    assert_eq!(sb.get("/sandbox/clock").await["offset_secs"], 0);
    assert_eq!(
        errcode(
            &sb.call("subscribe", &token, subscribe_body(shipping_data()))
                .await
        ),
        40003,
        "users are forgotten"
    );
    assert!(
        sb.get("/sandbox/templates").await[SUB_TEMPLATE].is_object(),
        "default templates come back"
    );
}

#[tokio::test]
async fn stats_count_calls_answers_by_errcode_and_reverse_queries() {
    let (sb, cb) = spawn_pair(MessageMode::Secure, MessageFormat::Json, |_| {});
    let token = sb.classic_token().await;
    sb.userquery(&token, PHONE).await;
    sb.userquery(&token, "bad").await;
    push_once(&sb, &cb, "W1").await;
    let s = sb.get("/sandbox/stats").await;
    assert_eq!(s["apis"]["userquery"]["calls"], 2);
    assert_eq!(s["apis"]["userquery"]["ok"], 1);
    assert_eq!(s["apis"]["userquery"]["errors"]["40097"], 1);
    assert_eq!(s["apis"]["token"]["calls"], 2);
    assert_eq!(s["apis"]["pathnotify"]["ok"], 1);
    assert_eq!(
        s["reverse_queries"],
        json!({"sent": 1, "ok": 1, "failed": 0})
    );
}

#[tokio::test]
async fn many_concurrent_pushes_all_arrive() {
    let (sb, cb) = spawn_pair(MessageMode::Secure, MessageFormat::Json, |_| {});
    let token = sb.classic_token().await;
    let (ct, at) = (now() - 3600, now() - 10);
    let phones: Vec<String> = (0..40).map(|i| format!("1380000{i:04}")).collect();
    for (i, p) in phones.iter().enumerate() {
        sb.sandbox.bind_phone(p);
        cb.store(&format!("W{i}"), ct, p, stored_nodes(ct, at));
    }
    let calls = phones.iter().enumerate().map(|(i, p)| {
        let (sb, token) = (&sb, &token);
        async move {
            errcode(
                &sb.call("pathnotify", token, push_body(&format!("W{i}"), p, ct, at))
                    .await,
            )
        }
    });
    let codes = futures_util::future::join_all(calls).await;
    assert!(codes.iter().all(|c| *c == 0), "{codes:?}");
    assert!(phones
        .iter()
        .all(|p| sb.sandbox.inbox_for_phone(p).len() == 1));
    assert_eq!(sb.sandbox.exchanges().len(), 40);
    cb.handle.stop(false).await;
}

// ------------------------------------------------------------------------------------------
// Conformance: the real gateway's callback against the sandbox's checks.

struct Gateway {
    base: String,
    callback_url: String,
    _dir: tempfile::TempDir,
}

const GW_KEY: &str = "sandbox-conformance-key-0123456789";

async fn spawn_gateway(mode: &str, format: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/gw.db", dir.path().display());
    let env: std::collections::BTreeMap<String, String> = [
        ("WXEXPRESS_SERVER__LISTEN", "127.0.0.1:0"),
        ("WXEXPRESS_DATABASE__URL", url.as_str()),
        ("WXEXPRESS_WECHAT__APPID", APPID),
        ("WXEXPRESS_WECHAT__SECRET", SECRET),
        ("WXEXPRESS_WECHAT__ORIGINAL_ID", ORIGINAL_ID),
        ("WXEXPRESS_WECHAT__TOKEN", TOKEN),
        ("WXEXPRESS_WECHAT__ENCODING_AES_KEY", AES_KEY),
        ("WXEXPRESS_WECHAT__MESSAGE_MODE", mode),
        (
            "WXEXPRESS_WECHAT__ALLOW_PLAINTEXT",
            if mode == "plaintext" { "true" } else { "false" },
        ),
        ("WXEXPRESS_WECHAT__MESSAGE_FORMAT", format),
        // The gateway's own pushes go nowhere: this test pushes by hand.
        ("WXEXPRESS_WECHAT__API_BASE", "http://127.0.0.1:9"),
        ("WXEXPRESS_BACKOFFICE__API_KEYS", GW_KEY),
        (
            "WXEXPRESS_PRIVACY__DATA_KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        ),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let settings = wxexpress::config::load_from(None, &env, false).expect("gateway settings");
    let app = wxexpress::app::Application::build(settings)
        .await
        .expect("gateway builds");
    let base = format!("http://{}", app.addr());
    tokio::spawn(app.run_until_stopped());
    Gateway {
        callback_url: format!("{base}/wechat/callback"),
        base,
        _dir: dir,
    }
}

impl Gateway {
    /// Stores the waybill and one event of [`push_body`] at the gateway.
    async fn record(&self, waybill_id: &str, create_time: i64, action_time: i64) {
        let http = reqwest::Client::new();
        let mut waybill = push_body(waybill_id, PHONE, create_time, action_time);
        let w = waybill.as_object_mut().unwrap();
        let path = w.remove("path").unwrap();
        w.remove("waybill_id");
        let r = http
            .put(format!("{}/v1/waybills/{waybill_id}", self.base))
            .bearer_auth(GW_KEY)
            .json(&waybill)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "PUT waybill: {}",
            r.text().await.unwrap()
        );
        let r = http
            .post(format!("{}/v1/waybills/{waybill_id}/events", self.base))
            .bearer_auth(GW_KEY)
            .json(&path)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "POST event: {}",
            r.text().await.unwrap()
        );
    }
}

#[tokio::test]
async fn the_gateways_callback_passes_the_consistency_check_in_all_six_combinations() {
    for mode in ["plaintext", "compatible", "secure"] {
        for format in ["json", "xml"] {
            let gw = spawn_gateway(mode, format).await;
            let sb = spawn_sandbox(SandboxSettings {
                message_mode: mode.parse().unwrap(),
                message_format: format.parse().unwrap(),
                callback_url: gw.callback_url.clone(),
                ..settings()
            });
            let (ct, at) = (now() - 3600, now() - 60);
            gw.record("SF2001", ct, at).await;
            sb.sandbox.bind_phone(PHONE);
            let token = sb.classic_token().await;
            let v = sb
                .call("pathnotify", &token, push_body("SF2001", PHONE, ct, at))
                .await;
            let log = sb.sandbox.exchanges();
            assert_eq!(
                errcode(&v),
                0,
                "{mode}/{format}: {v} {:?}",
                log.last().map(|e| &e.detail)
            );
            assert_eq!(v["exist"], 1);
            assert_eq!(
                sb.sandbox.inbox_for_phone(PHONE).len(),
                1,
                "{mode}/{format}"
            );
        }
    }
}

#[tokio::test]
async fn the_sandbox_refuses_a_gateway_reply_that_is_wrong_as_wechat_would() {
    let gw = spawn_gateway("secure", "json").await;
    let sb = spawn_sandbox(SandboxSettings {
        callback_url: gw.callback_url.clone(),
        ..settings()
    });
    let token = sb.classic_token().await;
    let (ct, at) = (now() - 3600, now() - 60);
    let other = "13912345678";
    sb.sandbox.bind_phone(PHONE);
    sb.sandbox.bind_phone(other);

    // The carrier stored a different text than it pushed.
    gw.record("SF3001", ct, at).await;
    let mut b = push_body("SF3001", PHONE, ct, at);
    b["path"]["action_msg"] = json!("派送中（已改）");
    assert_eq!(errcode(&sb.call("pathnotify", &token, b).await), 932002);

    // The push names a phone that does not own the waybill: the gateway answers 1002.
    gw.record("SF3002", ct, at).await;
    assert_eq!(
        errcode(
            &sb.call("pathnotify", &token, push_body("SF3002", other, ct, at))
                .await
        ),
        932002
    );

    // WeChat and the carrier disagree on the Token: the gateway refuses the signature.
    let wrong = spawn_sandbox(SandboxSettings {
        callback_url: gw.callback_url.clone(),
        token: "anothertoken".into(),
        ..settings()
    });
    wrong.sandbox.bind_phone(PHONE);
    gw.record("SF3003", ct, at).await;
    let t = wrong.classic_token().await;
    assert_eq!(
        errcode(
            &wrong
                .call("pathnotify", &t, push_body("SF3003", PHONE, ct, at))
                .await
        ),
        932001
    );
    assert_eq!(wrong.sandbox.exchanges()[0].http_status, Some(401));

    // And the right push still goes through.
    gw.record("SF3004", ct, at).await;
    assert_eq!(
        errcode(
            &sb.call("pathnotify", &token, push_body("SF3004", PHONE, ct, at))
                .await
        ),
        0
    );
}

/// The configuration JSON the landing page carries (between the `application/json` tags).
async fn landing_config(sb: &TestSandbox, waybill_id: &str) -> Value {
    let html = sb
        .http
        .get(format!("{}/sandbox/landing/{waybill_id}", sb.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let start = html.find("{\"").expect("a configuration block");
    let mut de = serde_json::Deserializer::from_str(&html[start..]).into_iter::<Value>();
    de.next().expect("one JSON value").expect("valid JSON")
}

#[tokio::test]
async fn the_landing_page_signs_with_the_official_accounts_token_and_honours_the_waybill_pattern() {
    let sb = spawn_sandbox(SandboxSettings {
        jsonp_token: Some("OfficialAcct".into()),
        waybill_pattern: Some("SF[0-9]{3}".into()),
        ..settings()
    });
    let ours = landing_config(&sb, "SF123").await;
    let src = url::Url::parse(ours["jsonp_src"].as_str().expect("a JSONP URL")).unwrap();
    let q: std::collections::BTreeMap<String, String> = src.query_pairs().into_owned().collect();
    assert_eq!(
        q["signature"],
        wx::sign(&["OfficialAcct", &q["timestamp"], &q["nonce"]]),
        "signed with the official account's token"
    );
    let theirs = landing_config(&sb, "YT9876543210").await;
    assert!(theirs["jsonp_src"].is_null(), "not looked up: {theirs}");
    let bad = Sandbox::try_new(SandboxSettings {
        waybill_pattern: Some("SF[".into()),
        ..settings()
    });
    assert!(bad.is_err());
}

fn rid_in(v: &Value) -> String {
    let errmsg = v["errmsg"].as_str().expect("an errmsg");
    errmsg[errmsg.rfind("rid: ").expect("a rid") + 5..].to_string()
}

#[tokio::test]
async fn rid_get_returns_the_logged_call_for_seven_days_to_the_same_account_only() {
    let sb = spawn_sandbox(settings());
    let token = sb.classic_token().await;
    let failed = sb.userquery(&token, "12345").await;
    assert_eq!(errcode(&failed), 40097);
    let rid = rid_in(&failed);
    let path = format!("/cgi-bin/openapi/rid/get?access_token={token}");
    let ask = |rid: &str| sb.post(&path, json!({ "rid": rid }));
    let v = ask(&rid).await;
    assert_eq!(errcode(&v), 0, "{v}");
    let r = &v["request"];
    assert_eq!(
        r["request_url"], "/cgi-bin/express/delivery/userquery?access_token=%3Credacted%3E",
        "the token is not logged"
    );
    assert_eq!(r["request_body"], r#"{"phone":"12345"}"#);
    assert!(r["response_body"].as_str().unwrap().contains(&rid));
    assert!(r["invoke_time"].as_i64().unwrap() > 0);
    assert_eq!(r["client_ip"], "127.0.0.1");
    // Not a rid; an unknown one.
    assert_eq!(errcode(&ask("no spaces allowed").await), 76002);
    assert_eq!(errcode(&ask("").await), 76002);
    assert_eq!(errcode(&ask("00000000-00000000").await), 76001);
    // Another account's call (a token request naming another appid) is not ours to read.
    let other = sb
        .get(&format!(
            "/cgi-bin/token?grant_type=client_credential&appid=wxother0000000000&secret={SECRET}"
        ))
        .await;
    assert_ne!(errcode(&other), 0);
    assert_eq!(errcode(&ask(&rid_in(&other)).await), 76003);
    // Kept seven days.
    sb.sandbox.advance_clock(7 * 86_400 + 1);
    let token = sb.classic_token().await;
    let v = sb
        .post(
            &format!("/cgi-bin/openapi/rid/get?access_token={token}"),
            json!({ "rid": rid }),
        )
        .await;
    assert_eq!(errcode(&v), 76001, "expired: {v}");
    // A question without a valid token is refused like every API's.
    let v = sb
        .post(
            "/cgi-bin/openapi/rid/get?access_token=nope",
            json!({ "rid": rid }),
        )
        .await;
    assert_eq!(errcode(&v), 40014, "a token never issued: {v}");
}
