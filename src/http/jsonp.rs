//! `GET /wechat/waybill`: the JSONP waybill lookup WeChat's front end loads with a `<script>`
//! tag (spec §7, `docs/JSONP.md`).
//!
//! Order of checks: the `callback` (anything but a JavaScript identifier path gets a plain
//! 400 and is never echoed), the per-IP rate limit, the signature parameters, the timestamp
//! window, the signature over (`jsonp.token`, timestamp, nonce) in constant time, the signed
//! URL's binding to one waybill, the per-URL and per-openid limits, the onboarding waybill
//! pattern, then the waybill. Every answer after the first check is `/**/callback({...});` with a non-zero
//! `err_code` on failure and no waybill data. The reply is built from the store only, with
//! every phone number masked (also inside `action_msg`), and serialised so that no string in
//! it can end the script or the statement (`<`, `>`, `&`, U+2028, U+2029 are escaped).
//!
//! It must not: hand out signed URLs (only WeChat knows when to sign), reflect an invalid
//! callback, or log an openid.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::cells::cells_in_force;
use super::client_limit::ClientLimiter;
use super::signed_urls::{Binding, SignedUrls};
use super::AppState;
use crate::clock::{self, now_secs};
use crate::codec;
use crate::domain::{mask_phones_in_text, ActionType, WaybillId};
use crate::http::section::JsonpSettings;
use crate::wechat::crypto::verify_sha1_signature;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/wechat/waybill", web::get().to(waybill));
}

/// Longest accepted `callback`.
pub const CALLBACK_MAX_CHARS: usize = 64;
/// Longest accepted `openid` (WeChat's are 28 characters).
const OPENID_MAX_CHARS: usize = 128;
/// Beijing time (UTC+8), in which `accept_time` is written.
const BEIJING_OFFSET_SECS: i32 = 8 * 3600;

/// A JSONP callback: a dot-separated path of JavaScript identifiers made of `[A-Za-z0-9_$]`,
/// none starting with a digit, at most [`CALLBACK_MAX_CHARS`] characters. Nothing else can
/// appear in `/**/callback(` , so the name cannot add code to the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback(String);

impl Callback {
    pub fn parse(s: &str) -> Option<Callback> {
        let ok = !s.is_empty()
            && s.len() <= CALLBACK_MAX_CHARS
            && s.split('.').all(|part| {
                part.bytes().next().is_some_and(|b| !b.is_ascii_digit())
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
            });
        ok.then(|| Callback(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The lookup's defences: rate limits per client IP, per signed URL and per openid, and the
/// binding of each signed URL to the first waybill it was used for.
pub struct JsonpGuard {
    ip: ClientLimiter<IpAddr>,
    url: ClientLimiter<String>,
    openid: ClientLimiter<String>,
    urls: SignedUrls,
}

impl JsonpGuard {
    pub fn new(j: &JsonpSettings) -> JsonpGuard {
        JsonpGuard {
            ip: ClientLimiter::new(j.rate_per_sec, j.rate_burst),
            url: ClientLimiter::new(j.key_rate_per_sec, j.key_rate_burst),
            openid: ClientLimiter::new(j.key_rate_per_sec, j.key_rate_burst),
            urls: SignedUrls::default(),
        }
    }
}

/// Why a lookup carries no data; the code is the reply's `err_code` (`docs/JSONP.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupError {
    MissingParameter(&'static str),
    StaleTimestamp,
    BadSignature,
    /// The signed URL was already used to look up another waybill.
    UrlForAnotherWaybill,
    UnknownWaybill,
    /// The `orderid` does not match `jsonp.waybill_pattern`: not this carrier's number.
    NotCarrierWaybill,
    RateLimited,
    Internal,
}

impl LookupError {
    pub fn code(self) -> i64 {
        match self {
            LookupError::MissingParameter(_) => 40000,
            LookupError::BadSignature => 40100,
            LookupError::StaleTimestamp => 40101,
            LookupError::UrlForAnotherWaybill => 40102,
            LookupError::UnknownWaybill => 40400,
            LookupError::NotCarrierWaybill => 40401,
            LookupError::RateLimited => 42900,
            LookupError::Internal => 50000,
        }
    }
    fn message(self) -> String {
        match self {
            LookupError::MissingParameter(p) => format!("missing or invalid parameter: {p}"),
            LookupError::BadSignature => "invalid signature".into(),
            LookupError::StaleTimestamp => "timestamp outside the accepted window".into(),
            LookupError::UrlForAnotherWaybill => {
                "this signed URL was issued for another waybill".into()
            }
            LookupError::UnknownWaybill => "waybill not found".into(),
            LookupError::NotCarrierWaybill => "not a waybill number of this carrier".into(),
            LookupError::RateLimited => "too many requests".into(),
            LookupError::Internal => "internal error".into(),
        }
    }
}

/// The reply (`OrderInfo`, spec §7.2; field names inside the arrays are ours, CONTRACT.md).
#[derive(Debug, Serialize)]
struct OrderInfo {
    err_code: i64,
    err_msg: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    waybill_id: Option<String>,
    traces: Vec<Trace>,
    cells: Vec<CellView>,
}

#[derive(Debug, Serialize)]
struct Trace {
    accept_time: String,
    action_type: i64,
    action_msg: String,
}

#[derive(Debug, Serialize)]
pub(super) struct CellView {
    key: String,
    name: String,
    link: String,
}

impl OrderInfo {
    fn error(e: LookupError) -> OrderInfo {
        OrderInfo {
            err_code: e.code(),
            err_msg: e.message(),
            waybill_id: None,
            traces: Vec::new(),
            cells: Vec::new(),
        }
    }
}

/// The query parameters, each taken from its first occurrence. WeChat's page documents
/// `orderid==xxx` (a typo), which arrives as an `orderid` starting with `=`.
#[derive(Debug, Default)]
struct Params {
    orderid: Option<String>,
    openid: Option<String>,
    signature: Option<String>,
    timestamp: Option<String>,
    nonce: Option<String>,
    callback: Option<String>,
}

impl Params {
    fn parse(query: &str) -> Params {
        let mut p = Params::default();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match k.as_ref() {
                "orderid" => &mut p.orderid,
                "openid" => &mut p.openid,
                "signature" => &mut p.signature,
                "timestamp" => &mut p.timestamp,
                "nonce" => &mut p.nonce,
                "callback" => &mut p.callback,
                _ => continue,
            };
            slot.get_or_insert_with(|| v.into_owned());
        }
        p
    }
}

async fn waybill(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let params = Params::parse(req.query_string());
    let Some(callback) = params.callback.as_deref().and_then(Callback::parse) else {
        tracing::warn!(
            callback_chars = params.callback.as_deref().map(|c| c.chars().count()),
            "jsonp lookup refused: invalid or missing callback"
        );
        metrics::counter!(crate::series::JSONP_REQUESTS, "err_code" => "bad_callback").increment(1);
        return HttpResponse::BadRequest()
            .content_type("text/plain; charset=utf-8")
            .insert_header(("X-Content-Type-Options", "nosniff"))
            .insert_header(("Cache-Control", "no-store"))
            .body("invalid or missing callback: expected a JavaScript identifier path of [A-Za-z0-9_$.], at most 64 characters\n");
    };
    let client = client_ip(&req, state.settings.jsonp.client_ip_header.as_deref());
    if !state.jsonp.ip.allow(client) {
        tracing::warn!("jsonp lookup refused: client rate limit exceeded");
        return too_many(&callback);
    }
    let info = match lookup(&state, &params).await {
        Ok(info) => info,
        Err(LookupError::RateLimited) => {
            tracing::warn!("jsonp lookup refused: signed URL or openid rate limit exceeded");
            return too_many(&callback);
        }
        Err(e) => {
            tracing::warn!(err_code = e.code(), reason = %e.message(), "jsonp lookup answered with an error");
            OrderInfo::error(e)
        }
    };
    metrics::counter!(crate::series::JSONP_REQUESTS, "err_code" => info.err_code.to_string())
        .increment(1);
    // A script that failed to load tells the page nothing, so errors are 200 with err_code.
    reply(StatusCode::OK, &callback, &info)
}

fn too_many(callback: &Callback) -> HttpResponse {
    metrics::counter!(crate::series::JSONP_REQUESTS, "err_code" => "rate_limited").increment(1);
    let mut resp = reply(
        StatusCode::TOO_MANY_REQUESTS,
        callback,
        &OrderInfo::error(LookupError::RateLimited),
    );
    resp.headers_mut().insert(
        actix_web::http::header::RETRY_AFTER,
        actix_web::http::header::HeaderValue::from_static("1"),
    );
    resp
}

/// A lookup whose parameters passed every check that needs no store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedLookup {
    /// The verified signature: it stands for the signed URL.
    pub signature: String,
    /// Unix s, within the window.
    pub timestamp: i64,
    /// As given, `=` typo prefixes removed; not yet checked as a waybill number.
    pub orderid: String,
    pub openid: String,
}

/// The checks of a lookup's query string that need no store (pure; also the fuzzing entry
/// point): parameters present, timestamp in the window (checked arithmetic), signature over
/// (token, timestamp, nonce) in constant time, `orderid` present, `openid` bounded.
pub fn check_query(
    query: &str,
    token: &str,
    now: i64,
    window: i64,
) -> Result<CheckedLookup, LookupError> {
    check(&Params::parse(query), token, now, window)
}

fn check(p: &Params, token: &str, now: i64, window: i64) -> Result<CheckedLookup, LookupError> {
    let signature = p
        .signature
        .as_deref()
        .ok_or(LookupError::MissingParameter("signature"))?;
    let timestamp = p
        .timestamp
        .as_deref()
        .ok_or(LookupError::MissingParameter("timestamp"))?;
    let nonce = p
        .nonce
        .as_deref()
        .ok_or(LookupError::MissingParameter("nonce"))?;
    let Some(ts) = timestamp
        .parse::<i64>()
        .ok()
        .filter(|t| clock::within_window(now, *t, window))
    else {
        return Err(LookupError::StaleTimestamp);
    };
    if !verify_sha1_signature(signature, &[token, timestamp, nonce]) {
        return Err(LookupError::BadSignature);
    }
    let orderid = p
        .orderid
        .as_deref()
        .map(|o| o.trim_start_matches('='))
        .filter(|o| !o.is_empty())
        .ok_or(LookupError::MissingParameter("orderid"))?;
    let openid = p.openid.as_deref().unwrap_or_default();
    if openid.chars().count() > OPENID_MAX_CHARS {
        return Err(LookupError::MissingParameter("openid"));
    }
    Ok(CheckedLookup {
        signature: signature.to_string(),
        timestamp: ts,
        orderid: orderid.to_string(),
        openid: openid.to_string(),
    })
}

async fn lookup(state: &AppState, p: &Params) -> Result<OrderInfo, LookupError> {
    let window = state.settings.server.callback_window_secs;
    let now = now_secs();
    let c = check(p, state.settings.jsonp_token.expose(), now, window)?;
    let (signature, orderid, openid) =
        (c.signature.as_str(), c.orderid.as_str(), c.openid.as_str());
    let ts = c.timestamp;
    // The signature does not cover orderid: the URL serves the first waybill it was used for,
    // and its users' lookups are limited whoever relays them.
    let guard = &state.jsonp;
    // Hex compares case-insensitively: one URL, one key.
    let url_key = signature.to_ascii_lowercase();
    match guard
        .urls
        .bind(&url_key, orderid, ts.saturating_add(window), now)
    {
        Binding::Allowed => {}
        Binding::OtherWaybill => return Err(LookupError::UrlForAnotherWaybill),
        Binding::Full => return Err(LookupError::RateLimited),
    }
    if !guard.url.allow(url_key) || (!openid.is_empty() && !guard.openid.allow(openid.to_string()))
    {
        return Err(LookupError::RateLimited);
    }
    // The pattern given to WeChat at onboarding: a miss is not worth a database read.
    if let Some(re) = &state.settings.waybill_pattern {
        if !re.is_match(orderid) {
            return Err(LookupError::NotCarrierWaybill);
        }
    }
    let id = WaybillId::parse(orderid).map_err(|_| LookupError::UnknownWaybill)?;
    let internal = |e: crate::store::StoreError| {
        tracing::error!(error = %e, "store error during a jsonp lookup");
        LookupError::Internal
    };
    if state
        .store
        .get_waybill(id.as_str())
        .await
        .map_err(internal)?
        .is_none()
    {
        return Err(LookupError::UnknownWaybill);
    }
    let events = state
        .store
        .list_events(id.as_str())
        .await
        .map_err(internal)?;
    let mut traces = Vec::with_capacity(events.len());
    let mut actions = Vec::with_capacity(events.len());
    for ev in &events {
        let node = codec::open_node(&state.privacy, ev).map_err(|e| {
            tracing::error!(waybill_id = %id, error = %e, "cannot open a stored node");
            LookupError::Internal
        })?;
        actions.extend(ActionType::parse(node.action_type));
        traces.push(Trace {
            accept_time: beijing_time(node.action_time),
            action_type: node.action_type,
            action_msg: mask_phones_in_text(&node.text.action_msg),
        });
    }
    let cells: Vec<CellView> = cells_in_force(state)
        .await
        .map_err(internal)?
        .iter()
        .filter(|c| c.applies(&actions))
        .map(|c| CellView {
            key: c.key().to_string(),
            name: c.name().to_string(),
            link: c.link_for(id.as_str(), openid),
        })
        .collect();
    tracing::debug!(waybill_id = %id, traces = traces.len(), cells = cells.len(), "jsonp lookup answered");
    Ok(OrderInfo {
        err_code: 0,
        err_msg: "ok".into(),
        waybill_id: Some(id.as_str().to_string()),
        traces,
        cells,
    })
}

fn reply(status: StatusCode, callback: &Callback, info: &OrderInfo) -> HttpResponse {
    let json = serde_json::to_value(info).expect("OrderInfo is plain data and always serialises");
    // `/**/` first: a response that starts with a comment cannot be read as another format.
    let body = format!("/**/{}({});", callback.as_str(), script_safe_json(&json));
    HttpResponse::build(status)
        .content_type("application/javascript; charset=utf-8")
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Cache-Control", "no-store"))
        .body(body)
}

/// JSON that is also safe inside a `<script>` and as a JavaScript statement: `<`, `>`, `&`
/// (no `</script>` or `<!--`), U+2028 and U+2029 (line terminators in older JavaScript) are
/// written as `\uXXXX`. They can only occur inside strings, where the escape means the same.
pub fn script_safe_json(value: &serde_json::Value) -> String {
    let raw = serde_json::to_string(value).expect("a serde_json::Value always serialises");
    let mut out = String::with_capacity(raw.len() + 16);
    for c in raw.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS` in Beijing time, as WeChat's page parses `accept_time`.
pub fn beijing_time(unix_secs: i64) -> String {
    let offset =
        chrono::FixedOffset::east_opt(BEIJING_OFFSET_SECS).expect("UTC+8 is a valid offset");
    chrono::DateTime::from_timestamp(unix_secs, 0)
        .map(|t| {
            t.with_timezone(&offset)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

/// The client's address: the last entry of the configured proxy header (the one the nearest
/// proxy wrote), else the TCP peer.
fn client_ip(req: &HttpRequest, header: Option<&str>) -> IpAddr {
    let from_header = header
        .and_then(|h| req.headers().get(h))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .map(str::trim)
        .and_then(|s| {
            s.parse::<IpAddr>()
                .ok()
                .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        });
    from_header
        .or_else(|| req.peer_addr().map(|a| a.ip()))
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks_are_identifier_paths_only() {
        for good in [
            "WxOrderCb",
            "a",
            "_",
            "$",
            "jQuery123_456",
            "a.b.c",
            "$.x_1",
            "A$9",
        ] {
            assert!(Callback::parse(good).is_some(), "{good} refused");
        }
        let long = "a".repeat(65);
        for bad in [
            "",
            "1abc",
            ".a",
            "a.",
            "a..b",
            "a.1b",
            "alert(1)//",
            "a;alert(1)",
            "a b",
            "a-b",
            "a\u{2028}b",
            "ａlert",
            "a\u{200b}",
            "<script>",
            "a[0]",
            "a\nb",
            long.as_str(),
        ] {
            assert!(Callback::parse(bad).is_none(), "{bad:?} accepted");
        }
        assert!(Callback::parse(&"a".repeat(64)).is_some());
    }

    #[test]
    fn json_in_a_script_cannot_close_the_script_or_the_line() {
        let v = serde_json::json!({ "m": "</script><!-- & \u{2028}\u{2029} >" });
        let s = script_safe_json(&v);
        assert_eq!(
            s,
            r#"{"m":"\u003c/script\u003e\u003c!-- \u0026 \u2028\u2029 \u003e"}"#
        );
        let back: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back, v, "the escapes mean the same characters");
    }

    #[test]
    fn accept_time_is_beijing_time() {
        // 2024-10-31 13:16:00 UTC
        assert_eq!(beijing_time(1_730_380_560), "2024-10-31 21:16:00");
    }

    #[test]
    fn the_orderid_typo_and_repeated_parameters_are_handled() {
        let p = Params::parse("orderid==SF1&callback=a&callback=b&company_id=x");
        assert_eq!(p.orderid.as_deref(), Some("=SF1"));
        assert_eq!(p.callback.as_deref(), Some("a"), "first occurrence wins");
    }
}
