//! The names of the Prometheus series (`crate::prometheus` serves them): one list, so the
//! code that records, the dashboard and its test agree.

/// Events offered to the backoffice API, by outcome (`stored`, `duplicate`, `rejected`).
pub const EVENTS_INGESTED: &str = "wxexpress_events_ingested_total";
/// Pushes and notifications, by kind (`pathnotify`, `subscribe`, `template`) and outcome.
pub const PUSHES: &str = "wxexpress_pushes_total";
/// Calls to WeChat, by api and errcode (`0`, WeChat's code, `http_503`, `timeout`, …).
pub const WECHAT_CALLS: &str = "wxexpress_wechat_calls_total";
/// Outbox entries waiting or dead, by kind and state (scrape time).
pub const OUTBOX_ENTRIES: &str = "wxexpress_outbox_entries";
/// Age of the oldest pending outbox entry (scrape time; 0 when none).
pub const OLDEST_PENDING: &str = "wxexpress_outbox_oldest_pending_seconds";
/// WeChat's reverse queries and other pushes to the callback, answered: seconds.
pub const CALLBACK_DURATION: &str = "wxexpress_callback_duration_seconds";
/// The callback's answers, by HTTP status and reverse-query result code.
pub const CALLBACK_RESULTS: &str = "wxexpress_callback_results_total";
/// JSONP waybill lookups, by `err_code`.
pub const JSONP_REQUESTS: &str = "wxexpress_jsonp_requests_total";
/// access_token fetches from WeChat (this instance).
pub const TOKEN_REFRESHES: &str = "wxexpress_token_refreshes_total";
/// 1 while WeChat's quota has an API paused (what `/readyz` shows), by api.
pub const API_PAUSED: &str = "wxexpress_api_paused";
/// Final outcomes this instance decided, by kind (`push`, `notification`) and outcome
/// (`delivered`, `unbound`, `dead`, `coalesced`, `stale`).
pub const OUTCOMES: &str = "wxexpress_outcomes_total";
/// Outcomes that tell the carrier to send its SMS (`unbound` and `dead`), by kind.
pub const SMS_FALLBACKS: &str = "wxexpress_sms_fallbacks_total";
/// How old the oldest outcome is that the webhook has not delivered (scrape time; 0 when none).
pub const WEBHOOK_LAG: &str = "wxexpress_outcome_webhook_lag_seconds";
/// Webhook requests that failed, by HTTP status (`timeout`, `network` without one).
pub const WEBHOOK_FAILURES: &str = "wxexpress_outcome_webhook_failures_total";
/// Webhook requests answered 2xx (this instance).
pub const WEBHOOK_DELIVERED: &str = "wxexpress_outcome_webhook_deliveries_total";
/// 1 while delivery is stopped because the endpoint answered 410 Gone: an alert.
pub const WEBHOOK_GONE: &str = "wxexpress_outcome_webhook_gone";

/// Every series a dashboard may query.
pub const SERIES: &[&str] = &[
    EVENTS_INGESTED,
    PUSHES,
    WECHAT_CALLS,
    OUTBOX_ENTRIES,
    OLDEST_PENDING,
    CALLBACK_DURATION,
    CALLBACK_RESULTS,
    JSONP_REQUESTS,
    TOKEN_REFRESHES,
    API_PAUSED,
    OUTCOMES,
    SMS_FALLBACKS,
    WEBHOOK_LAG,
    WEBHOOK_FAILURES,
    WEBHOOK_DELIVERED,
    WEBHOOK_GONE,
];
