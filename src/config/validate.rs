//! One pass over the raw settings: every problem is reported on a line of its own
//! (`key: problem`), none stops the others from being found. `[wechat]` and the keys have
//! files of their own; the other sections are checked here.

use std::path::PathBuf;

use super::{keys, wechat, ConfigErrors, LoadOptions, RawSettings, Settings, Source};
use crate::http::section::{JsonpSettings, ServerSettings};
use crate::outbox::policy::Schedule;
use crate::outbox::section::OutboxSettings;
use crate::secret::Secret;
use crate::telemetry::LogFormat;
use crate::wechat::client::TokenEndpoint;

pub(super) fn validate(
    raw: RawSettings,
    source: Source,
    opts: LoadOptions,
) -> Result<Settings, ConfigErrors> {
    let mut p: Vec<String> = Vec::new();
    let mut notices = Vec::new();

    server(&raw.server, &mut p);
    let data_dir = match keys::database_data_dir(&raw.database.url) {
        Ok(d) => d,
        Err(e) => {
            p.push(format!("database.url: {e}"));
            PathBuf::from("data")
        }
    };
    let wechat = wechat::check(
        &raw.wechat,
        &raw.server.listen,
        opts.sandbox,
        &mut p,
        &mut notices,
    );
    let sandbox = wechat.sandbox;
    let (api_keys, data_key) =
        keys::check(&raw, source, opts.generate, &data_dir, &mut p, &mut notices);
    others(&raw, &mut p);
    let (retry_schedule, token_endpoint) = outbox(&raw.outbox, &mut p);
    let outcome_schedule = outcomes(&raw.outcomes, &mut p);
    let (jsonp_token, waybill_pattern) = jsonp(&raw.jsonp, &wechat.settings.token, &mut p);
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
        log: raw.log.clone(),
        server: raw.server.clone(),
        database: raw.database.clone(),
        wechat: wechat.settings,
        api_keys,
        data_key,
        wechatpay: raw.wechatpay.clone(),
        sandbox: raw.sandbox.clone(),
        outbox: raw.outbox.clone(),
        outcomes: raw.outcomes.clone(),
        outcome_schedule: outcome_schedule.expect("checked"),
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

/// `[server]`.
fn server(s: &ServerSettings, p: &mut Vec<String>) {
    if !s.metrics_listen.is_empty() {
        match s.metrics_listen.parse::<std::net::SocketAddr>() {
            Err(_) => p.push(format!(
                "server.metrics_listen: {:?} is not an address like 127.0.0.1:9464 (\"\" turns metrics off)",
                s.metrics_listen
            )),
            Ok(m) if m.port() != 0 && s.listen.parse::<std::net::SocketAddr>().ok() == Some(m) => {
                p.push("server.metrics_listen: must not be server.listen (the public listener never serves metrics)".into())
            }
            Ok(_) => {}
        }
    }
    if s.listen.parse::<std::net::SocketAddr>().is_err() {
        p.push(format!(
            "server.listen: {:?} is not an address like 127.0.0.1:8080",
            s.listen
        ));
    }
    if s.body_limit_bytes < 1024 {
        p.push("server.body_limit_bytes: must be at least 1024".into());
    }
    if s.callback_window_secs < 30 {
        p.push("server.callback_window_secs: must be at least 30".into());
    }
}

/// `[wechatpay]`, `[sandbox]` and `[log]`.
fn others(raw: &RawSettings, p: &mut Vec<String>) {
    if LogFormat::parse(&raw.log.format).is_none() {
        p.push(format!(
            "log.format: {:?} is not one of text, json",
            raw.log.format
        ));
    }
    if let Err(e) = raw.log.filter() {
        p.push(format!("log.level: {e}"));
    }
    if raw.wechatpay.mch_id.is_some() != raw.wechatpay.api_key.is_some() {
        p.push("wechatpay: mch_id and api_key must be set together".into());
    }
    if raw.sandbox.listen.parse::<std::net::SocketAddr>().is_err() {
        p.push(format!(
            "sandbox.listen: {:?} is not an address like 127.0.0.1:9090",
            raw.sandbox.listen
        ));
    }
}

/// `[outbox]`: its retry schedule and token endpoint parsed.
fn outbox(
    o: &OutboxSettings,
    p: &mut Vec<String>,
) -> (Result<Schedule, ()>, Result<TokenEndpoint, ()>) {
    let retry_schedule = Schedule::parse(&o.retry_schedule, o.retry_jitter)
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
        "stable" => Ok(TokenEndpoint::Stable),
        "classic" => Ok(TokenEndpoint::Classic),
        other => {
            p.push(format!(
                "outbox.token_endpoint: {other:?} is not one of stable, classic"
            ));
            Err(())
        }
    };
    (retry_schedule, token_endpoint)
}

/// `[outcomes]`: the webhook's URL and secrets, its retry schedule parsed.
fn outcomes(o: &crate::outcomes::OutcomesSettings, p: &mut Vec<String>) -> Result<Schedule, ()> {
    use crate::outcomes::signature::secret_key;
    let schedule = Schedule::parse(&o.retry_schedule, 0.1)
        .map_err(|e| p.push(format!("outcomes.retry_schedule: {e}")));
    if !o.webhook_url.is_empty() {
        match url::Url::parse(&o.webhook_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => p.push(
                "outcomes.webhook_url: must be an http:// or https:// URL (\"\" = the feed only)"
                    .into(),
            ),
        }
        match &o.webhook_secret {
            None => p.push(
                "outcomes.webhook_secret: is required when outcomes.webhook_url is set".into(),
            ),
            Some(s) => {
                if let Err(e) = secret_key(s.expose()) {
                    p.push(format!("outcomes.webhook_secret: {e}"));
                }
            }
        }
    }
    if let Some(s) = o
        .previous_webhook_secret
        .as_ref()
        .filter(|s| !s.expose().is_empty())
    {
        if let Err(e) = secret_key(s.expose()) {
            p.push(format!("outcomes.previous_webhook_secret: {e}"));
        }
    }
    if !(1..=1000).contains(&o.batch_max) {
        p.push("outcomes.batch_max: must be 1..=1000".into());
    }
    if o.retention_days < 1 {
        p.push("outcomes.retention_days: must be at least 1".into());
    }
    if o.concurrency == 0 || o.concurrency > 64 {
        p.push("outcomes.concurrency: must be 1..=64".into());
    }
    if o.timeout_ms < 100 {
        p.push("outcomes.timeout_ms: must be at least 100".into());
    }
    schedule
}

/// `[jsonp]`: the token that signs lookup URLs (`jsonp.token`, else `wechat_token`) and the
/// waybill pattern compiled.
fn jsonp(
    j: &JsonpSettings,
    wechat_token: &Secret,
    p: &mut Vec<String>,
) -> (Secret, Option<regex::Regex>) {
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
        None => wechat_token.clone(),
    };
    let waybill_pattern = match j.waybill_pattern.as_deref() {
        None => None,
        Some(pat) => match super::compile_waybill_pattern(pat) {
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
    (jsonp_token, waybill_pattern)
}
