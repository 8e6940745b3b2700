//! `[outbox]`, as the file and the environment say it (checked by `crate::config`).

use serde::{Deserialize, Serialize};

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
    /// A path node not delivered this long after it was accepted is dead (reason
    /// `deadline`) and never pushed after that, so the carrier's SMS is not followed by a
    /// late WeChat message about the same step; seconds, 0 = no deadline.
    pub deadline_secs: u64,
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
            deadline_secs: 3_600,
        }
    }
}
