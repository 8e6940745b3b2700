//! The sections of the configuration the HTTP side reads: `[server]`, `[jsonp]` and
//! `[backoffice]`, as the file and the environment say them (checked by `crate::config`).

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: String,
    /// `GET /metrics` (Prometheus text) is served here and only here; `""` turns it off.
    pub metrics_listen: String,
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
            metrics_listen: "127.0.0.1:9464".into(),
            body_limit_bytes: 64 * 1024,
            batch_limit_bytes: 16 * 1024 * 1024,
            batch_max_lines: 10_000,
            callback_window_secs: 300,
            shutdown_grace_secs: 10,
            workers: 0,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackofficeSettings {
    pub api_keys: Vec<Secret>,
}
