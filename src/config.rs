//! Settings: a TOML file (`--config`, default `wxexpress.toml` when present) overlaid with
//! `WXEXPRESS_<SECTION>__<KEY>` environment variables (env wins; lists comma-separated),
//! validated in one pass so that every problem is reported on its own line.
//!
//! Secrets are [`Secret`]s (`crate::secret`): their `Debug` and `Serialize` print `<redacted>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::notify::section::NotificationsSection;
use crate::secret::Secret;
use crate::wechat::crypto::AesKey;
use crate::wechat::envelope::{MessageFormat, MessageMode};

/// The raw, untyped view of the configuration (what the file and env can say).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSettings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub wechat: RawWechat,
    pub backoffice: BackofficeSettings,
    pub privacy: PrivacySettings,
    pub wechatpay: WechatPaySettings,
    pub sandbox: SandboxSection,
    pub outbox: OutboxSettings,
    pub jsonp: JsonpSettings,
    /// Landing-page cells (`[[cells]]`); a list set through `PUT /v1/cells` replaces these.
    pub cells: Vec<crate::domain::CellInput>,
    pub notifications: NotificationsSection,
}

/// The JSONP waybill lookup (`GET /wechat/waybill`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JsonpSettings {
    /// Lookups per second per client IP (IPv6: per /64), refilled continuously; 0 = no limit.
    /// A flood guard sized for WeChat's own servers, which seem to fetch the JSONP for its
    /// users (spec §11.3): one IP may stand for many users.
    pub rate_per_sec: f64,
    /// Lookups a client IP may make at once before the rate applies.
    pub rate_burst: u32,
    /// Lookups per second per signed URL and per `openid`, each with a bucket of its own;
    /// 0 = no limit. The limits that follow a user, whoever relays the request.
    pub key_rate_per_sec: f64,
    /// Lookups a signed URL or an openid may make at once before `key_rate_per_sec` applies.
    pub key_rate_burst: u32,
    /// Behind a reverse proxy: the header it sets to the client's address (for example
    /// `X-Forwarded-For`; its last entry is used). Unset: the TCP peer address.
    pub client_ip_header: Option<String>,
    /// The token WeChat signs the lookup URL with: the one configured for the carrier's
    /// official account (spec §11.1), which need not be the mini program's message-push
    /// token. Unset: `wechat.token`.
    pub token: Option<Secret>,
    /// The waybill-number regular expression given to WeChat at onboarding (spec §11.2): an
    /// `orderid` it does not match is refused without a database read. Unset: none.
    pub waybill_pattern: Option<String>,
}

impl Default for JsonpSettings {
    fn default() -> Self {
        JsonpSettings {
            rate_per_sec: 200.0,
            rate_burst: 400,
            key_rate_per_sec: 2.0,
            key_rate_burst: 20,
            client_ip_header: None,
            token: None,
            waybill_pattern: None,
        }
    }
}

/// The push pipeline: workers, retries, binding cache, rate limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxSettings {
    /// Run outbox workers in this process (false: an API-only node).
    pub enabled: bool,
    /// Pushes in flight at once in this process.
    pub concurrency: usize,
    /// Waybills claimed per poll.
    pub batch_size: i64,
    /// Idle poll interval, milliseconds.
    pub poll_interval_ms: u64,
    /// Lease on a claimed waybill; another instance takes over after it lapses, seconds.
    pub lease_secs: i64,
    /// Delays between tries, seconds, comma-separated.
    pub retry_schedule: String,
    /// Each delay is jittered by up to this fraction.
    pub retry_jitter: f64,
    /// When several events of one waybill wait, push only the newest.
    pub coalesce: bool,
    /// How long a `userquery` "bound" answer is trusted, seconds.
    pub binding_ttl_bound_secs: i64,
    /// How long a "not bound" answer is trusted, seconds.
    pub binding_ttl_unbound_secs: i64,
    /// Outbound calls per second per API in this process (0 = unlimited).
    pub pathnotify_rate: f64,
    pub userquery_rate: f64,
    /// Timeout of one call to WeChat, milliseconds (above WeChat's own 5 s reverse-query timeout).
    pub call_timeout_ms: u64,
    /// `stable` (POST /cgi-bin/stable_token) or `classic` (GET /cgi-bin/token).
    pub token_endpoint: String,
    /// How long SIGTERM waits for in-flight pushes before stopping, seconds.
    pub shutdown_grace_secs: u64,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        OutboxSettings {
            enabled: true,
            // A push waits on WeChat (two calls and its reverse query, tens to hundreds of
            // ms): a node pushes about `concurrency / latency` a second (docs/PERFORMANCE.md).
            concurrency: 128,
            batch_size: 64,
            poll_interval_ms: 200,
            lease_secs: 30,
            retry_schedule: "5,30,120,600,1800,3600,10800,21600".into(),
            retry_jitter: 0.2,
            coalesce: true,
            binding_ttl_bound_secs: 86_400,
            binding_ttl_unbound_secs: 3_600,
            pathnotify_rate: 0.0,
            userquery_rate: 0.0,
            call_timeout_ms: 8_000,
            token_endpoint: "stable".into(),
            shutdown_grace_secs: 20,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: String,
    /// Largest accepted JSON body on the backoffice API and the WeChat callback.
    pub body_limit_bytes: usize,
    /// Largest accepted NDJSON batch.
    pub batch_limit_bytes: usize,
    /// Most lines in one NDJSON batch.
    pub batch_max_lines: usize,
    /// Accepted clock difference of WeChat's `timestamp` (replay window), seconds.
    pub callback_window_secs: i64,
    /// How long a SIGTERM waits for in-flight requests, seconds.
    pub shutdown_grace_secs: u64,
    /// HTTP worker threads (0 = one per core).
    pub workers: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: "127.0.0.1:8080".into(),
            body_limit_bytes: 64 * 1024,
            batch_limit_bytes: 16 * 1024 * 1024,
            batch_max_lines: 10_000,
            callback_window_secs: 300,
            shutdown_grace_secs: 10,
            workers: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: "sqlite://data/wxexpress.db".into(),
            max_connections: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawWechat {
    pub appid: Option<String>,
    pub secret: Option<Secret>,
    pub original_id: Option<String>,
    pub token: Option<Secret>,
    pub encoding_aes_key: Option<Secret>,
    pub previous_encoding_aes_key: Option<Secret>,
    pub message_format: String,
    pub message_mode: String,
    /// Plaintext mode authenticates a push only by sha1(token, timestamp, nonce), a triple
    /// every WeChat user sees in a JSONP URL: refused unless this is set.
    pub allow_plaintext: bool,
    pub api_base: Option<String>,
}

impl RawWechat {
    /// Whether any `[wechat]` setting was given (file or environment): then the gateway is
    /// tied to a real mini program and never falls back to the sandbox.
    fn any_given(&self) -> bool {
        let d = RawWechat::default();
        self.appid.is_some()
            || self.secret.is_some()
            || self.original_id.is_some()
            || self.token.is_some()
            || self.encoding_aes_key.is_some()
            || self.previous_encoding_aes_key.is_some()
            || self.api_base.is_some()
            || self.allow_plaintext
            || self.message_format != d.message_format
            || self.message_mode != d.message_mode
    }
}

impl Default for RawWechat {
    fn default() -> Self {
        RawWechat {
            appid: None,
            secret: None,
            original_id: None,
            token: None,
            encoding_aes_key: None,
            previous_encoding_aes_key: None,
            message_format: "json".into(),
            message_mode: "secure".into(),
            allow_plaintext: false,
            api_base: None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackofficeSettings {
    pub api_keys: Vec<Secret>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacySettings {
    pub data_key: Option<Secret>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WechatPaySettings {
    pub mch_id: Option<String>,
    pub api_key: Option<Secret>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxSection {
    pub listen: String,
    pub callback_url: Option<String>,
    pub jsonp_url: Option<String>,
}

impl Default for SandboxSection {
    fn default() -> Self {
        SandboxSection {
            listen: "127.0.0.1:9090".into(),
            callback_url: None,
            jsonp_url: None,
        }
    }
}

/// The WeChat mini program the gateway acts for, validated.
#[derive(Debug, Clone)]
pub struct WechatSettings {
    pub appid: String,
    /// `None`: no real credentials; the gateway talks to an in-process sandbox.
    pub secret: Option<Secret>,
    pub original_id: String,
    pub token: Secret,
    pub encoding_aes_key: Secret,
    pub previous_encoding_aes_key: Option<Secret>,
    pub message_format: MessageFormat,
    pub message_mode: MessageMode,
    /// `None` in sandbox mode until the in-process sandbox is bound.
    pub api_base: Option<String>,
}

/// Validated settings: everything the app needs, typed.
#[derive(Debug, Clone)]
pub struct Settings {
    pub raw: RawSettings,
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub wechat: WechatSettings,
    pub api_keys: Vec<Secret>,
    pub data_key: Secret,
    pub wechatpay: WechatPaySettings,
    pub sandbox: SandboxSection,
    pub outbox: OutboxSettings,
    pub jsonp: JsonpSettings,
    /// The token that signs JSONP lookup URLs: `jsonp.token`, else `wechat.token`.
    pub jsonp_token: Secret,
    /// `jsonp.waybill_pattern`, compiled and anchored at both ends.
    pub waybill_pattern: Option<regex::Regex>,
    /// The validated `[[cells]]` of the file (the database copy, once set, wins).
    pub cells: Vec<crate::domain::Cell>,
    /// The checked notification rules and worker settings.
    pub notifications: crate::notify::rules::Rules,
    /// The parsed `outbox.retry_schedule`.
    pub retry_schedule: crate::outbox::policy::Schedule,
    pub token_endpoint: crate::wechat::client::TokenEndpoint,
    /// Where generated keys live (the SQLite file's directory, else `./data`).
    pub data_dir: PathBuf,
    /// Notes for the start-up log (generated keys, sandbox mode), never containing secrets.
    pub notices: Vec<String>,
    /// Sandbox mode: WeChat is emulated (no `[wechat]` setting at all, or `serve --sandbox`).
    sandboxed: bool,
}

/// How to load: what the command line adds to the file and the environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// May write generated keys into the data directory (no file given).
    pub generate: bool,
    /// `serve --sandbox`: run against the WeChat sandbox whatever `[wechat]` says (its
    /// settings then describe the emulated mini program).
    pub sandbox: bool,
}

/// Every problem found, one line each (`key: problem`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ConfigErrors(pub Vec<String>);

/// Where the configuration came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A file was read.
    File,
    /// No file: defaults plus environment only; keys may be generated into the data directory.
    NoFile,
}

/// Load and validate. `path`: `--config`; when `None`, `wxexpress.toml` is used if present.
/// `sandbox`: `serve --sandbox`.
pub fn load(path: Option<&Path>, sandbox: bool) -> Result<Settings, ConfigErrors> {
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("WXEXPRESS_"))
        .collect();
    load_with(
        path,
        &env,
        LoadOptions {
            generate: true,
            sandbox,
        },
    )
}

/// Load with an explicit environment (tests). `generate` allows writing generated keys.
pub fn load_from(
    path: Option<&Path>,
    env: &BTreeMap<String, String>,
    generate: bool,
) -> Result<Settings, ConfigErrors> {
    load_with(
        path,
        env,
        LoadOptions {
            generate,
            sandbox: false,
        },
    )
}

/// Load with an explicit environment and options.
pub fn load_with(
    path: Option<&Path>,
    env: &BTreeMap<String, String>,
    opts: LoadOptions,
) -> Result<Settings, ConfigErrors> {
    let default_path = Path::new("wxexpress.toml");
    let file = match path {
        Some(p) => Some(p.to_path_buf()),
        None if default_path.exists() => Some(default_path.to_path_buf()),
        None => None,
    };
    let mut table = match &file {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                ConfigErrors(vec![format!("--config {}: cannot read: {e}", p.display())])
            })?;
            text.parse::<toml::Table>()
                .map_err(|e| ConfigErrors(vec![format!("{}: {}", p.display(), e.message())]))?
        }
        None => toml::Table::new(),
    };
    let source = if file.is_some() {
        Source::File
    } else {
        Source::NoFile
    };
    apply_env(&mut table, env)?;
    let raw: RawSettings = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigErrors(vec![e.message().replace('\n', " ")]))?;
    validate(raw, source, opts)
}

/// Overlay `WXEXPRESS_SECTION__KEY=value` onto the table, typed like the default's field.
fn apply_env(table: &mut toml::Table, env: &BTreeMap<String, String>) -> Result<(), ConfigErrors> {
    let defaults = toml::Table::try_from(RawSettings::default()).expect("defaults serialise");
    let mut problems = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("WXEXPRESS_") else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            problems.push(format!("{name}: expected WXEXPRESS_<SECTION>__<KEY>"));
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let template = defaults.get(&section).and_then(|s| s.get(&key));
        let typed = match template {
            Some(toml::Value::Integer(_)) => match value.trim().parse::<i64>() {
                Ok(i) => toml::Value::Integer(i),
                Err(_) => {
                    problems.push(format!(
                        "{section}.{key} ({name}): expected an integer, got {value:?}"
                    ));
                    continue;
                }
            },
            Some(toml::Value::Float(_)) => match value.trim().parse::<f64>() {
                Ok(f) => toml::Value::Float(f),
                Err(_) => {
                    problems.push(format!(
                        "{section}.{key} ({name}): expected a number, got {value:?}"
                    ));
                    continue;
                }
            },
            Some(toml::Value::Boolean(_)) => match value.trim() {
                "true" | "1" => toml::Value::Boolean(true),
                "false" | "0" => toml::Value::Boolean(false),
                _ => {
                    problems.push(format!("{section}.{key} ({name}): expected true or false"));
                    continue;
                }
            },
            Some(toml::Value::Array(_)) => toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.into()))
                    .collect(),
            ),
            _ => toml::Value::String(value.clone()),
        };
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        match entry {
            toml::Value::Table(t) => {
                t.insert(key, typed);
            }
            _ => problems.push(format!("{section}: is not a table")),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(problems))
    }
}

fn validate(raw: RawSettings, source: Source, opts: LoadOptions) -> Result<Settings, ConfigErrors> {
    let generate = opts.generate;
    let mut p: Vec<String> = Vec::new();
    let mut notices = Vec::new();

    if raw.server.listen.parse::<std::net::SocketAddr>().is_err() {
        p.push(format!(
            "server.listen: {:?} is not an address like 127.0.0.1:8080",
            raw.server.listen
        ));
    }
    if raw.server.body_limit_bytes < 1024 {
        p.push("server.body_limit_bytes: must be at least 1024".into());
    }
    if raw.server.callback_window_secs < 30 {
        p.push("server.callback_window_secs: must be at least 30".into());
    }
    let data_dir = match database_data_dir(&raw.database.url) {
        Ok(d) => d,
        Err(e) => {
            p.push(format!("database.url: {e}"));
            PathBuf::from("data")
        }
    };

    // WeChat: the sandbox only with no [wechat] setting at all, or when asked for
    // (`serve --sandbox`); any [wechat] setting ties the gateway to a real mini program, and
    // then a missing or empty secret is an error, never a silent fallback to the emulator.
    let w = &raw.wechat;
    let sandbox = opts.sandbox || !w.any_given();
    let no_secret = w.secret.as_ref().is_none_or(|s| s.expose().is_empty());
    if !sandbox && no_secret {
        p.push(
            "wechat.secret: is missing or empty, but [wechat] is configured; set the AppSecret (or run `serve --sandbox` to use the WeChat sandbox)"
                .into(),
        );
    }
    if sandbox {
        let loopback = raw
            .server
            .listen
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback());
        if !loopback {
            p.push(format!(
                "server.listen: {:?} is not a loopback address; sandbox mode (no WeChat credentials) serves only this machine",
                raw.server.listen
            ));
        }
    }
    use crate::sandbox::defaults as sd;
    let pick = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.to_string());
    let pick_secret = |v: &Option<Secret>, d: &str| v.clone().unwrap_or_else(|| Secret::new(d));
    let (appid, original_id, token, aes) = if sandbox {
        notices.push(
            "SANDBOX MODE: no WeChat credentials are used; pushes go to the WeChat sandbox (in-process unless wechat.api_base points at one), never to WeChat"
                .to_string(),
        );
        (
            pick(&w.appid, sd::APPID),
            pick(&w.original_id, sd::ORIGINAL_ID),
            pick_secret(&w.token, sd::TOKEN),
            pick_secret(&w.encoding_aes_key, sd::ENCODING_AES_KEY),
        )
    } else {
        for (k, v) in [
            ("wechat.appid", w.appid.is_none()),
            ("wechat.original_id", w.original_id.is_none()),
            ("wechat.token", w.token.is_none()),
            ("wechat.encoding_aes_key", w.encoding_aes_key.is_none()),
        ] {
            if v {
                p.push(format!("{k}: is required when [wechat] is configured"));
            }
        }
        (
            pick(&w.appid, ""),
            pick(&w.original_id, ""),
            pick_secret(&w.token, ""),
            pick_secret(&w.encoding_aes_key, ""),
        )
    };
    let appid_ok = appid.starts_with("wx")
        && appid.len() <= 32
        && appid.bytes().all(|b| b.is_ascii_alphanumeric());
    if !appid.is_empty() && !appid_ok {
        p.push(
            "wechat.appid: expected the mini program AppID (wx followed by letters and digits)"
                .into(),
        );
    }
    if !token.expose().is_empty() && !(3..=32).contains(&token.expose().len()) {
        p.push("wechat.token: must be 3 to 32 characters, as the WeChat console allows".into());
    }
    if !aes.expose().is_empty() {
        if let Err(e) = AesKey::parse(aes.expose()) {
            p.push(format!(
                "wechat.encoding_aes_key: must be exactly 43 characters of [A-Za-z0-9] ({e})"
            ));
        }
    }
    if let Some(prev) = &w.previous_encoding_aes_key {
        if AesKey::parse(prev.expose()).is_err() {
            p.push(
                "wechat.previous_encoding_aes_key: must be exactly 43 characters of [A-Za-z0-9]"
                    .into(),
            );
        }
    }
    let message_format = w.message_format.parse::<MessageFormat>().map_err(|_| {
        p.push(format!(
            "wechat.message_format: {:?} is not one of json, xml",
            w.message_format
        ));
    });
    let message_mode = w.message_mode.parse::<MessageMode>().map_err(|_| {
        p.push(format!(
            "wechat.message_mode: {:?} is not one of plaintext, compatible, secure",
            w.message_mode
        ));
    });
    if message_mode == Ok(MessageMode::Plaintext) {
        if w.allow_plaintext {
            notices.push(
                "wechat.message_mode is plaintext: WeChat's pushes are authenticated only by sha1(token, timestamp, nonce), the same triple every user sees in a JSONP URL; use secure mode in production"
                    .into(),
            );
        } else {
            p.push(
                "wechat.message_mode: plaintext is refused unless wechat.allow_plaintext = true (its pushes are authenticated only by sha1(token, timestamp, nonce), which every JSONP URL discloses); use secure"
                    .into(),
            );
        }
    }
    let api_base = match &w.api_base {
        Some(b)
            if url::Url::parse(b)
                .map(|u| matches!(u.scheme(), "http" | "https"))
                .unwrap_or(false) =>
        {
            Some(b.trim_end_matches('/').to_string())
        }
        Some(b) => {
            p.push(format!("wechat.api_base: {b:?} is not an http(s) URL"));
            None
        }
        None if sandbox => None,
        None => Some("https://api.weixin.qq.com".to_string()),
    };

    // Backoffice keys: generated into the data directory only when there is no config file.
    let mut api_keys: Vec<Secret> = raw
        .backoffice
        .api_keys
        .iter()
        .filter(|k| !k.expose().is_empty())
        .cloned()
        .collect();
    if api_keys.iter().any(|k| k.expose().len() < 16) {
        p.push("backoffice.api_keys: every key must be at least 16 characters".into());
    }
    if api_keys.is_empty() {
        if source == Source::NoFile && generate {
            match generated_file(&data_dir, "api_key", || {
                hex::encode(rand::random::<[u8; 24]>())
            }) {
                Ok((key, created)) => {
                    notices.push(format!(
                        "no backoffice.api_keys configured: {} the development API key in {}",
                        if created { "generated" } else { "using" },
                        data_dir.join("api_key").display()
                    ));
                    api_keys.push(Secret::new(key));
                }
                Err(e) => p.push(format!(
                    "backoffice.api_keys: none configured and cannot write {}: {e}",
                    data_dir.display()
                )),
            }
        } else {
            p.push("backoffice.api_keys: at least one key is required".into());
        }
    }

    let data_key = match &raw.privacy.data_key {
        Some(k) => {
            if crate::privacy::Privacy::from_base64(k.expose()).is_err() {
                p.push("privacy.data_key: must be base64 of exactly 32 bytes".into());
            }
            k.clone()
        }
        None if source == Source::NoFile && generate => {
            match crate::privacy::Privacy::load_or_generate(&data_dir) {
                Ok((k, created)) => {
                    notices.push(format!(
                    "no privacy.data_key configured: {} the data key in {} (back it up: without it stored phone numbers cannot be read)",
                    if created { "generated" } else { "using" },
                    data_dir.join("data_key").display()
                ));
                    Secret::new(k)
                }
                Err(e) => {
                    p.push(format!(
                        "privacy.data_key: not set and cannot create one in {}: {e}",
                        data_dir.display()
                    ));
                    Secret::new("")
                }
            }
        }
        None => {
            p.push("privacy.data_key: is required (base64 of 32 random bytes, e.g. `openssl rand -base64 32`)".into());
            Secret::new("")
        }
    };

    if raw.wechatpay.mch_id.is_some() != raw.wechatpay.api_key.is_some() {
        p.push("wechatpay: mch_id and api_key must be set together".into());
    }
    if raw.sandbox.listen.parse::<std::net::SocketAddr>().is_err() {
        p.push(format!(
            "sandbox.listen: {:?} is not an address like 127.0.0.1:9090",
            raw.sandbox.listen
        ));
    }

    let o = &raw.outbox;
    let retry_schedule = crate::outbox::policy::Schedule::parse(&o.retry_schedule, o.retry_jitter)
        .map_err(|e| p.push(format!("outbox.retry_schedule: {e}")));
    if o.concurrency == 0 || o.concurrency > 1024 {
        p.push("outbox.concurrency: must be 1..=1024".into());
    }
    if o.batch_size < 1 {
        p.push("outbox.batch_size: must be at least 1".into());
    }
    if o.lease_secs < 5 {
        p.push("outbox.lease_secs: must be at least 5 (a push may take WeChat's 5-second reverse query)".into());
    }
    if o.pathnotify_rate < 0.0 || o.userquery_rate < 0.0 {
        p.push("outbox.*_rate: must be >= 0".into());
    }
    let token_endpoint = match o.token_endpoint.as_str() {
        "stable" => Ok(crate::wechat::client::TokenEndpoint::Stable),
        "classic" => Ok(crate::wechat::client::TokenEndpoint::Classic),
        other => {
            p.push(format!(
                "outbox.token_endpoint: {other:?} is not one of stable, classic"
            ));
            Err(())
        }
    };

    let j = &raw.jsonp;
    if !j.rate_per_sec.is_finite() || j.rate_per_sec < 0.0 {
        p.push("jsonp.rate_per_sec: must be a number >= 0 (0 = no limit)".into());
    }
    if j.rate_per_sec > 0.0 && j.rate_burst == 0 {
        p.push("jsonp.rate_burst: must be at least 1 when jsonp.rate_per_sec is set".into());
    }
    if !j.key_rate_per_sec.is_finite() || j.key_rate_per_sec < 0.0 {
        p.push("jsonp.key_rate_per_sec: must be a number >= 0 (0 = no limit)".into());
    }
    if j.key_rate_per_sec > 0.0 && j.key_rate_burst == 0 {
        p.push(
            "jsonp.key_rate_burst: must be at least 1 when jsonp.key_rate_per_sec is set".into(),
        );
    }
    let jsonp_token = match &j.token {
        Some(t) if !(3..=32).contains(&t.expose().len()) => {
            p.push("jsonp.token: must be 3 to 32 characters, as WeChat's consoles allow".into());
            t.clone()
        }
        Some(t) => t.clone(),
        None => token.clone(),
    };
    let waybill_pattern = match j.waybill_pattern.as_deref() {
        None => None,
        Some(pat) => match compile_waybill_pattern(pat) {
            Ok(re) => Some(re),
            Err(e) => {
                p.push(format!("jsonp.waybill_pattern: {e}"));
                None
            }
        },
    };
    if let Some(h) = &j.client_ip_header {
        if actix_web::http::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
            p.push(format!(
                "jsonp.client_ip_header: {h:?} is not a header name"
            ));
        }
    }
    let cells = crate::domain::cell::parse_cells(&raw.cells, "cells").map_err(|errs| {
        p.extend(
            errs.into_iter()
                .map(|e| format!("{}: {}", e.field, e.message)),
        );
    });

    let notifications = crate::notify::rules::Rules::compile(&raw.notifications, sandbox)
        .map_err(|errs| p.extend(errs));
    if let Ok(rules) = &notifications {
        if rules.is_sandbox_example() {
            notices.push(
                "no notifications.rules configured: using the sandbox's example rules".into(),
            );
        }
    }

    if !p.is_empty() {
        return Err(ConfigErrors(p));
    }
    Ok(Settings {
        server: raw.server.clone(),
        database: raw.database.clone(),
        wechat: WechatSettings {
            appid,
            secret: if no_secret { None } else { w.secret.clone() },
            original_id,
            token,
            encoding_aes_key: aes,
            previous_encoding_aes_key: w.previous_encoding_aes_key.clone(),
            message_format: message_format.expect("checked"),
            message_mode: message_mode.expect("checked"),
            api_base,
        },
        api_keys,
        data_key,
        wechatpay: raw.wechatpay.clone(),
        sandbox: raw.sandbox.clone(),
        outbox: raw.outbox.clone(),
        jsonp: raw.jsonp.clone(),
        jsonp_token,
        waybill_pattern,
        cells: cells.expect("checked"),
        notifications: notifications.expect("checked"),
        retry_schedule: retry_schedule.expect("checked"),
        token_endpoint: token_endpoint.expect("checked"),
        data_dir,
        notices,
        sandboxed: sandbox,
        raw,
    })
}

/// A waybill-number pattern as given to WeChat, matched against the whole `orderid`
/// (`^(?:…)$` is added), with a bounded size so a pattern cannot be a denial of service.
pub fn compile_waybill_pattern(pattern: &str) -> Result<regex::Regex, String> {
    if pattern.trim().is_empty() {
        return Err("is empty; leave it unset to accept every waybill number".into());
    }
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| {
            format!(
                "{pattern:?} is not a valid regular expression ({})",
                e.to_string().replace('\n', " ")
            )
        })
}

/// The directory generated keys go to: the SQLite file's directory, or `./data`.
fn database_data_dir(url: &str) -> Result<PathBuf, String> {
    if let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = rest.split('?').next().unwrap_or("");
        if path.is_empty() || path == ":memory:" {
            return Ok(PathBuf::from("data"));
        }
        let parent = Path::new(path)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        return Ok(if parent.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            parent
        });
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        url::Url::parse(url).map_err(|e| format!("cannot parse the PostgreSQL URL ({e})"))?;
        return Ok(PathBuf::from("data"));
    }
    Err("expected sqlite://PATH or postgres://USER:PASSWORD@HOST/DB".into())
}

fn generated_file(
    dir: &Path,
    name: &str,
    make: impl FnOnce() -> String,
) -> std::io::Result<(String, bool)> {
    crate::privacy::read_or_create(&dir.join(name), make)
}

impl Settings {
    /// The effective settings as TOML, secrets redacted (for `config check`).
    pub fn redacted_toml(&self) -> String {
        let mut raw = self.raw.clone();
        raw.wechat.appid = Some(self.wechat.appid.clone());
        raw.wechat.original_id = Some(self.wechat.original_id.clone());
        raw.wechat.token = Some(self.wechat.token.clone());
        raw.wechat.encoding_aes_key = Some(self.wechat.encoding_aes_key.clone());
        raw.wechat.api_base = self.wechat.api_base.clone();
        raw.backoffice.api_keys = self.api_keys.clone();
        raw.privacy.data_key = Some(self.data_key.clone());
        raw.database.url = redact_url(&raw.database.url);
        toml::to_string_pretty(&raw).unwrap_or_default()
    }

    /// True in sandbox mode: WeChat is emulated, by the in-process sandbox or the one at
    /// `wechat.api_base`.
    pub fn sandbox_mode(&self) -> bool {
        self.sandboxed
    }
}

/// Hide a password inside a database URL.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("<redacted>"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    const GOOD: &str = r#"
[database]
url = "sqlite://x/db.sqlite"
[wechat]
appid = "wxba5fad812f8e6fb9"
secret = "s3cr3t"
original_id = "gh_97417a04a28d"
token = "AAAAA"
encoding_aes_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
[backoffice]
api_keys = ["0123456789abcdef"]
[privacy]
data_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
"#;

    #[test]
    fn a_complete_file_loads() {
        let f = file(GOOD);
        let s = load_from(Some(f.path()), &env(&[]), false).unwrap();
        assert!(!s.sandbox_mode());
        assert_eq!(
            s.wechat.api_base.as_deref(),
            Some("https://api.weixin.qq.com")
        );
        assert_eq!(s.wechat.message_mode, MessageMode::Secure);
    }

    #[test]
    fn env_overrides_the_file_and_splits_lists() {
        let f = file(GOOD);
        let s = load_from(
            Some(f.path()),
            &env(&[
                ("WXEXPRESS_WECHAT__MESSAGE_FORMAT", "xml"),
                (
                    "WXEXPRESS_BACKOFFICE__API_KEYS",
                    "aaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbb",
                ),
                ("WXEXPRESS_SERVER__CALLBACK_WINDOW_SECS", "60"),
            ]),
            false,
        )
        .unwrap();
        assert_eq!(s.wechat.message_format, MessageFormat::Xml);
        assert_eq!(s.api_keys.len(), 2);
        assert_eq!(s.server.callback_window_secs, 60);
    }

    #[test]
    fn every_problem_gets_its_own_line() {
        let f = file(GOOD);
        let e = load_from(
            Some(f.path()),
            &env(&[
                ("WXEXPRESS_WECHAT__ENCODING_AES_KEY", "short"),
                ("WXEXPRESS_WECHAT__MESSAGE_MODE", "loud"),
                ("WXEXPRESS_DATABASE__URL", "mysql://x"),
            ]),
            false,
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("wechat.encoding_aes_key: must be exactly 43"),
            "{text}"
        );
        assert!(text.contains("wechat.message_mode: \"loud\""), "{text}");
        assert!(text.contains("database.url:"), "{text}");
        assert_eq!(e.0.len(), 3, "{text}");
    }

    #[test]
    fn a_config_file_without_a_data_key_is_refused() {
        let f = file(&GOOD.replace("data_key = ", "#"));
        let e = load_from(Some(f.path()), &env(&[]), true).unwrap_err();
        assert!(e.to_string().contains("privacy.data_key: is required"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let f = file(&format!("{GOOD}\n[server]\nlisten_on = \"x\"\n"));
        let e = load_from(Some(f.path()), &env(&[]), false).unwrap_err();
        assert!(e.to_string().contains("listen_on"), "{e}");
    }

    #[test]
    fn redacted_output_has_no_secrets() {
        let f = file(GOOD);
        let s = load_from(
            Some(f.path()),
            &env(&[("WXEXPRESS_DATABASE__URL", "postgres://u:pw@h/db")]),
            false,
        )
        .unwrap();
        let out = s.redacted_toml();
        for secret in [
            "s3cr3t",
            "AAAAA\"",
            "0123456789abcdef",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            ":pw@",
        ] {
            assert!(!out.contains(secret), "{secret} leaked in\n{out}");
        }
        assert!(out.contains("<redacted>"));
    }

    #[test]
    fn no_configuration_means_sandbox_mode_with_generated_keys() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/db.sqlite", dir.path().display());
        let s = load_from(None, &env(&[("WXEXPRESS_DATABASE__URL", &url)]), true).unwrap();
        assert!(s.sandbox_mode());
        assert!(dir.path().join("data_key").exists());
        assert!(dir.path().join("api_key").exists());
        let again = load_from(None, &env(&[("WXEXPRESS_DATABASE__URL", &url)]), true).unwrap();
        assert_eq!(again.data_key, s.data_key, "the generated key is reused");
    }

    #[test]
    fn an_empty_secret_is_an_error_never_a_silent_sandbox() {
        // As an unset template variable renders it, next to real settings.
        let f = file(GOOD);
        let e = load_from(
            Some(f.path()),
            &env(&[("WXEXPRESS_WECHAT__SECRET", "")]),
            false,
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert!(e.0[0].starts_with("wechat.secret: "), "{e}");
        // Even alone: the empty secret itself is a [wechat] setting.
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/db.sqlite", dir.path().display());
        let e = load_from(
            None,
            &env(&[
                ("WXEXPRESS_DATABASE__URL", &url),
                ("WXEXPRESS_WECHAT__SECRET", ""),
            ]),
            true,
        )
        .unwrap_err();
        assert!(e.0.iter().any(|l| l.starts_with("wechat.secret: ")), "{e}");
        // A file whose [wechat] has no secret at all.
        let f = file(&GOOD.replace("secret = \"s3cr3t\"\n", ""));
        let e = load_from(Some(f.path()), &env(&[]), false).unwrap_err();
        assert!(e.0.iter().any(|l| l.starts_with("wechat.secret: ")), "{e}");
    }

    #[test]
    fn serve_sandbox_plays_the_configured_app_without_a_secret() {
        let f = file(&GOOD.replace("secret = \"s3cr3t\"\n", ""));
        let opts = LoadOptions {
            generate: false,
            sandbox: true,
        };
        let s = load_with(Some(f.path()), &env(&[]), opts).unwrap();
        assert!(s.sandbox_mode());
        assert_eq!(s.wechat.appid, "wxba5fad812f8e6fb9");
        assert!(s.notices.iter().any(|n| n.starts_with("SANDBOX MODE")));
    }

    #[test]
    fn sandbox_mode_listens_on_loopback_only() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/db.sqlite", dir.path().display());
        for (listen, ok) in [
            ("0.0.0.0:8080", false),
            ("192.168.1.5:8080", false),
            ("[::]:8080", false),
            ("127.0.0.1:8080", true),
            ("[::1]:8080", true),
        ] {
            let r = load_from(
                None,
                &env(&[
                    ("WXEXPRESS_DATABASE__URL", &url),
                    ("WXEXPRESS_SERVER__LISTEN", listen),
                ]),
                true,
            );
            match r {
                Ok(s) => assert!(ok && s.sandbox_mode(), "{listen}"),
                Err(e) => {
                    assert!(!ok, "{listen}: {e}");
                    assert!(e.0[0].starts_with("server.listen: "), "{e}");
                }
            }
        }
        // With credentials, any address.
        let f = file(GOOD);
        let s = load_from(
            Some(f.path()),
            &env(&[("WXEXPRESS_SERVER__LISTEN", "0.0.0.0:8080")]),
            false,
        )
        .unwrap();
        assert!(!s.sandbox_mode());
    }

    #[test]
    fn plaintext_mode_needs_allow_plaintext_and_then_warns() {
        let f = file(GOOD);
        let plain = [("WXEXPRESS_WECHAT__MESSAGE_MODE", "plaintext")];
        let e = load_from(Some(f.path()), &env(&plain), false).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert!(
            e.0[0].starts_with("wechat.message_mode: plaintext is refused"),
            "{e}"
        );
        let allowed = [plain[0], ("WXEXPRESS_WECHAT__ALLOW_PLAINTEXT", "true")];
        let s = load_from(Some(f.path()), &env(&allowed), false).unwrap();
        assert_eq!(s.wechat.message_mode, MessageMode::Plaintext);
        assert!(
            s.notices.iter().any(|n| n.contains("plaintext")),
            "{:?}",
            s.notices
        );
    }

    #[test]
    fn the_jsonp_token_defaults_to_the_push_token_and_a_bad_waybill_pattern_is_one_line() {
        let f = file(GOOD);
        let s = load_from(Some(f.path()), &env(&[]), false).unwrap();
        assert_eq!(s.jsonp_token.expose(), "AAAAA");
        assert!(s.waybill_pattern.is_none());
        let s = load_from(
            Some(f.path()),
            &env(&[
                ("WXEXPRESS_JSONP__TOKEN", "OfficialAcct"),
                ("WXEXPRESS_JSONP__WAYBILL_PATTERN", "SF[0-9]{12}"),
            ]),
            false,
        )
        .unwrap();
        assert_eq!(s.jsonp_token.expose(), "OfficialAcct");
        let re = s.waybill_pattern.as_ref().unwrap();
        assert!(re.is_match("SF123456789012") && !re.is_match("SF1234567890123"));
        assert!(!s.redacted_toml().contains("OfficialAcct"), "a secret");
        let e = load_from(
            Some(f.path()),
            &env(&[("WXEXPRESS_JSONP__WAYBILL_PATTERN", "SF[0-9")]),
            false,
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert!(e.0[0].starts_with("jsonp.waybill_pattern: "), "{e}");
        assert!(!e.0[0].contains('\n'));
    }

    #[test]
    fn notification_rules_load_and_a_bad_keyword_stops_the_start_with_one_line() {
        let rule = "\n[[notifications.rules]]\nname = \"picked_up\"\naction_types = [100001]\nrecipients = [\"sender\"]\ntemplate_id = \"T1\"\n[notifications.rules.data]\nthing3 = \"{action_msg}\"\n";
        let f = file(&format!("{GOOD}{rule}"));
        let s = load_from(Some(f.path()), &env(&[]), false).unwrap();
        assert_eq!(s.notifications.plan().for_action(100001).len(), 1);
        assert!(!s.notifications.is_sandbox_example());
        assert!(s.redacted_toml().contains("[[notifications.rules]]"));
        let f = file(&format!("{GOOD}{}", rule.replace("thing3", "phrase2")));
        let e = load_from(Some(f.path()), &env(&[]), false).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(
            e.0[0],
            "notifications.rules[0] (picked_up).data.phrase2: must be one of {status}"
        );
    }

    #[test]
    fn cells_load_from_the_file_with_their_conditions() {
        let f = file(&format!(
            "{GOOD}\n[[cells]]\nkey = \"pay\"\nname = \"支付运单\"\nlink = \"https://c.example/pay/{{waybill_id}}\"\nwhen = {{ latest_action_in = [90010] }}\n\n[[cells]]\nkey = \"complain\"\nname = \"投诉\"\nlink = \"https://c.example/complain?w={{waybill_id}}\"\n"
        ));
        let s = load_from(Some(f.path()), &env(&[]), false).unwrap();
        assert_eq!(s.cells.len(), 2);
        assert_eq!(s.cells[0].key(), "pay");
        assert!(s.cells[1].condition().is_none());
        assert!(s.redacted_toml().contains("[[cells]]"));
    }

    #[test]
    fn a_cell_key_over_20_characters_stops_the_start_with_one_line() {
        let f = file(&format!(
            "{GOOD}\n[[cells]]\nkey = \"{}\"\nname = \"投诉\"\nlink = \"https://c.example/\"\n",
            "k".repeat(21)
        ));
        let e = load_from(Some(f.path()), &env(&[]), false).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0], "cells[0].key: is longer than 20 characters");
    }
}
