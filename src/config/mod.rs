//! Settings: a TOML file (`--config`, default `wxexpress.toml` when present) overlaid with
//! `WXEXPRESS_<SECTION>__<KEY>` environment variables (env wins; lists comma-separated),
//! layered by figment,
//! validated in one pass so that every problem is reported on its own line.
//!
//! Secrets are [`Secret`]s (`crate::secret`): their `Debug` and `Serialize` print `<redacted>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

mod env;
mod keys;
mod validate;
mod wechat;

use crate::http::section::{BackofficeSettings, JsonpSettings, ServerSettings};
use crate::notify::section::{NotificationsSection, WechatPaySettings};
use crate::outbox::section::OutboxSettings;
use crate::outcomes::OutcomesSettings;
use crate::privacy::PrivacySettings;
use crate::sandbox::section::SandboxSection;
use crate::secret::Secret;
use crate::store::section::DatabaseSettings;
use crate::telemetry::LogSettings;
use crate::wechat::section::{RawWechat, WechatSettings};

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
    pub outcomes: OutcomesSettings,
    pub jsonp: JsonpSettings,
    /// Landing-page cells (`[[cells]]`); a list set through `PUT /v1/cells` replaces these.
    pub cells: Vec<crate::domain::CellInput>,
    pub notifications: NotificationsSection,
    pub log: LogSettings,
}

/// Validated settings: everything the app needs, typed.
#[derive(Debug, Clone)]
pub struct Settings {
    pub raw: RawSettings,
    pub log: LogSettings,
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub wechat: WechatSettings,
    pub api_keys: Vec<Secret>,
    pub data_key: Secret,
    pub wechatpay: WechatPaySettings,
    pub sandbox: SandboxSection,
    pub outbox: OutboxSettings,
    pub outcomes: OutcomesSettings,
    /// The parsed `outcomes.retry_schedule` (no jitter beyond the outbox's).
    pub outcome_schedule: crate::outbox::policy::Schedule,
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
    let mut layers = Figment::new();
    if let Some(p) = &file {
        // Read once here: figment would take a missing file for an empty one.
        std::fs::metadata(p)
            .and_then(|_| std::fs::File::open(p))
            .map_err(|e| {
                ConfigErrors(vec![format!("--config {}: cannot read: {e}", p.display())])
            })?;
        layers = layers.merge(Toml::file_exact(p));
    }
    let source = if file.is_some() {
        Source::File
    } else {
        Source::NoFile
    };
    let raw: RawSettings = layers
        .merge(env::EnvLayer::new(env)?)
        .extract()
        .map_err(|e| ConfigErrors(e.into_iter().map(|e| one_line(&e)).collect()))?;
    validate::validate(raw, source, opts)
}

/// A figment error as `key: problem (where)`, on one line.
fn one_line(e: &figment::Error) -> String {
    let key = e.path.join(".");
    let place = e
        .metadata
        .as_ref()
        .map(|md| match &md.source {
            // The path as given: figment's own display makes it relative to the working
            // directory when that is shorter (`../x.toml`), which names another file to a
            // reader somewhere else.
            Some(figment::Source::File(path)) => format!(" (in {})", path.display()),
            Some(source) => format!(" (in {source})"),
            None => format!(" (in the {})", md.name),
        })
        .unwrap_or_default();
    // A TOML syntax error comes with a drawing of the line (`1 | [server` and a caret):
    // keep its words.
    let problem = e
        .kind
        .to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !is_drawing(l))
        .collect::<Vec<_>>()
        .join("; ");
    if key.is_empty() {
        format!("{problem}{place}")
    } else {
        format!("{key}: {problem}{place}")
    }
}

/// A line of the drawing a TOML syntax error comes with: `|`, `1 | [server`, `|   ^`.
fn is_drawing(line: &str) -> bool {
    line.starts_with('|')
        || line
            .split_once(" |")
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
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
        raw.outcomes.webhook_url = redact_url(&raw.outcomes.webhook_url);
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
mod tests;
