//! The only place that calls WeChat's server APIs: access tokens, `userquery`, `pathnotify`.
//! Every call returns either WeChat's parsed answer or an [`ApiError`] that says what kind
//! of failure it was, so the retry policy can classify it without looking at strings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What went wrong on a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// WeChat answered with a non-zero `errcode`.
    #[error("wechat errcode {errcode}: {errmsg}")]
    WeChat { errcode: i64, errmsg: String },
    /// An HTTP status other than 200.
    #[error("http status {0}")]
    Http(u16),
    #[error("timed out")]
    Timeout,
    #[error("network: {0}")]
    Network(String),
    #[error("undecodable answer: {0}")]
    Decode(String),
}

impl ApiError {
    /// What a metric calls this failure: WeChat's errcode, `http_503`, `timeout`, `network`,
    /// `decode`.
    pub fn label(&self) -> String {
        match self {
            ApiError::WeChat { errcode, .. } => errcode.to_string(),
            ApiError::Http(s) => format!("http_{s}"),
            ApiError::Timeout => "timeout".into(),
            ApiError::Network(_) => "network".into(),
            ApiError::Decode(_) => "decode".into(),
        }
    }

    pub fn errcode(&self) -> Option<i64> {
        match self {
            ApiError::WeChat { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }
    /// The request id WeChat appended to the `errmsg` (spec §11.6), if any.
    pub fn rid(&self) -> Option<&str> {
        match self {
            ApiError::WeChat { errmsg, .. } => parse_rid(errmsg),
            _ => None,
        }
    }
    pub fn http_status(&self) -> Option<u16> {
        match self {
            ApiError::Http(s) => Some(*s),
            _ => None,
        }
    }
}

/// The request id in an `errmsg`: `… rid: 6583e1f7-3c2b1a0d-…`, or in older answers
/// `… hint: [AbCd1234]`. Read as an id (letters, digits, `-`, `_`), never as a sentence: the
/// wording around it changes.
pub fn parse_rid(errmsg: &str) -> Option<&str> {
    if let Some(at) = errmsg.rfind("rid:") {
        return leading_id(&errmsg[at + 4..]);
    }
    let at = errmsg.rfind("hint:")?;
    leading_id(errmsg[at + 5..].trim_start().strip_prefix('[')?)
}

fn leading_id(rest: &str) -> Option<&str> {
    let rest = rest.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .unwrap_or(rest.len());
    let id = &rest[..end];
    (!id.is_empty() && id.len() <= 128).then_some(id)
}

/// An access token as WeChat hands it out. `Debug` hides the token.
#[derive(Clone, Deserialize)]
pub struct TokenAnswer {
    pub access_token: String,
    pub expires_in: i64,
}

impl std::fmt::Debug for TokenAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenAnswer(<redacted>, expires_in={})", self.expires_in)
    }
}

/// What WeChat logged for a failed call, by its rid (`POST /cgi-bin/openapi/rid/get`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RidAnswer {
    pub request: RidRequest,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RidRequest {
    #[serde(default)]
    pub invoke_time: i64,
    #[serde(default)]
    pub cost_in_ms: i64,
    #[serde(default)]
    pub request_url: String,
    #[serde(default)]
    pub request_body: String,
    #[serde(default)]
    pub response_body: String,
    #[serde(default)]
    pub client_ip: String,
}

/// `userquery` / `pathnotify` answer: `exist` 1 = the phone is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ExistAnswer {
    #[serde(default)]
    pub exist: i64,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

/// Which token endpoint to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenEndpoint {
    /// `POST /cgi-bin/stable_token` (recommended).
    Stable,
    /// `GET /cgi-bin/token`: every call issues a new token.
    Classic,
}

/// HTTP client for WeChat's APIs. Cheap to clone.
#[derive(Clone)]
pub struct WechatClient {
    http: reqwest::Client,
    base: String,
}

/// Outcome of one call plus what the attempt log needs.
#[derive(Debug)]
pub struct Call<T> {
    pub result: Result<T, ApiError>,
    pub http_status: Option<u16>,
    pub duration: Duration,
}

impl WechatClient {
    pub fn new(base: &str, timeout: Duration) -> WechatClient {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(64)
            .build()
            .expect("a reqwest client with rustls and a timeout can be built");
        WechatClient {
            http,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn fetch_token(
        &self,
        endpoint: TokenEndpoint,
        appid: &str,
        secret: &str,
        force_refresh: bool,
    ) -> Call<TokenAnswer> {
        let req = match endpoint {
            TokenEndpoint::Stable => self.http.post(format!("{}/cgi-bin/stable_token", self.base)).json(&serde_json::json!({
                "grant_type": "client_credential", "appid": appid, "secret": secret, "force_refresh": force_refresh
            })),
            TokenEndpoint::Classic => self
                .http
                .get(format!("{}/cgi-bin/token", self.base))
                .query(&[("grant_type", "client_credential"), ("appid", appid), ("secret", secret)]),
        };
        let api = match endpoint {
            TokenEndpoint::Stable => "stable_token",
            TokenEndpoint::Classic => "token",
        };
        self.send(api, req).await
    }

    pub async fn userquery(&self, token: &str, phone: &str) -> Call<ExistAnswer> {
        let req = self
            .http
            .post(format!("{}/cgi-bin/express/delivery/userquery", self.base))
            .query(&[("access_token", token)])
            .json(&serde_json::json!({ "phone": phone }));
        self.send("userquery", req).await
    }

    pub async fn pathnotify(&self, token: &str, body: &serde_json::Value) -> Call<ExistAnswer> {
        let req = self
            .http
            .post(format!("{}/cgi-bin/express/delivery/pathnotify", self.base))
            .query(&[("access_token", token)])
            .json(body);
        self.send("pathnotify", req).await
    }

    /// What WeChat logged for the call whose errmsg carried `rid` (kept 7 days, same account).
    pub async fn rid_get(&self, token: &str, rid: &str) -> Call<RidAnswer> {
        let req = self
            .http
            .post(format!("{}/cgi-bin/openapi/rid/get", self.base))
            .query(&[("access_token", token)])
            .json(&serde_json::json!({ "rid": rid }));
        self.send("rid_get", req).await
    }

    /// POST any JSON body to a WeChat path with the token (subscribe/template messages).
    pub async fn post_json(
        &self,
        path: &str,
        token: &str,
        body: &serde_json::Value,
    ) -> Call<serde_json::Value> {
        let req = self
            .http
            .post(format!("{}{}", self.base, path))
            .query(&[("access_token", token)])
            .json(body);
        // `/cgi-bin/message/subscribe/send` is `message_subscribe_send`.
        let api = path.trim_start_matches("/cgi-bin/").replace('/', "_");
        self.send(&api, req).await
    }

    /// Sends `req` to WeChat's `api` and counts the call by its errcode.
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        api: &str,
        req: reqwest::RequestBuilder,
    ) -> Call<T> {
        let started = std::time::Instant::now();
        let (result, http_status) = match req.send().await {
            Err(e) => (Err(transport_error(e)), None),
            Ok(resp) => {
                let status = resp.status().as_u16();
                if status != 200 {
                    (Err(ApiError::Http(status)), Some(status))
                } else {
                    match resp.bytes().await {
                        Err(e) => (Err(transport_error(e)), Some(status)),
                        Ok(bytes) => (decode(&bytes), Some(status)),
                    }
                }
            }
        };
        let errcode = match &result {
            Ok(_) => "0".to_string(),
            Err(e) => e.label(),
        };
        metrics::counter!(crate::series::WECHAT_CALLS, "api" => api.to_string(), "errcode" => errcode)
            .increment(1);
        Call {
            result,
            http_status,
            duration: started.elapsed(),
        }
    }
}

fn transport_error(e: reqwest::Error) -> ApiError {
    if e.is_timeout() {
        ApiError::Timeout
    } else {
        // The URL may carry the access token: never include it in the message.
        ApiError::Network(e.without_url().to_string())
    }
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let env: Envelope =
        serde_json::from_slice(bytes).map_err(|e| ApiError::Decode(e.to_string()))?;
    if env.errcode != 0 {
        return Err(ApiError::WeChat {
            errcode: env.errcode,
            errmsg: env.errmsg.chars().take(200).collect(),
        });
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::Decode(e.to_string()))
}

#[cfg(test)]
mod rid_tests {
    use super::parse_rid;

    #[test]
    fn the_rid_is_read_from_either_form_of_errmsg() {
        assert_eq!(
            parse_rid("invalid credential, access_token is invalid or not latest, could get access_token by getStableAccessToken, more details at https://mmbizurl.cn/s/JtxxFh33r rid: 6583e1f7-0a7d1d3c-6a3d2f1b"),
            Some("6583e1f7-0a7d1d3c-6a3d2f1b")
        );
        assert_eq!(
            parse_rid("invalid args hint: [HaZuUa08613924]"),
            Some("HaZuUa08613924")
        );
        assert_eq!(parse_rid("system error"), None);
        assert_eq!(parse_rid("rid: "), None);
        assert_eq!(parse_rid("hint: no brackets"), None);
    }
}
