//! `[outcomes]`, as the file and the environment say it (checked by `crate::config`).

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// The outcome feed's retention and the carrier's webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutcomesSettings {
    /// The carrier's receiver; "" = the feed only.
    pub webhook_url: String,
    /// Standard Webhooks secret, `whsec_` + base64 of 24 to 64 bytes.
    pub webhook_secret: Option<Secret>,
    /// The secret being rotated out: while set, every request carries both signatures.
    pub previous_webhook_secret: Option<Secret>,
    /// Delays between tries of one delivery, seconds, comma-separated.
    pub retry_schedule: String,
    /// Items per webhook request.
    pub batch_max: i64,
    /// Outcomes (and finished deliveries) are deleted this many days after they were decided.
    pub retention_days: i64,
    /// How often the deliverer looks for new outcomes when idle, milliseconds.
    pub poll_interval_ms: u64,
    /// Timeout of one webhook request, milliseconds.
    pub timeout_ms: u64,
    /// Deliveries in flight at once in this process.
    pub concurrency: usize,
}

impl Default for OutcomesSettings {
    fn default() -> Self {
        OutcomesSettings {
            webhook_url: String::new(),
            webhook_secret: None,
            previous_webhook_secret: None,
            retry_schedule: "5,30,120,600,1800,3600,7200".into(),
            batch_max: 100,
            retention_days: 14,
            poll_interval_ms: 250,
            timeout_ms: 10_000,
            concurrency: 4,
        }
    }
}
