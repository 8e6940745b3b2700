//! The demo's configuration: SQLite in its temporary directory, a compressed day's retry
//! schedule, and its shipping-notification rules.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::Settings;

pub(super) const API_KEY: &str = "demo-api-key-0123456789";

/// Shipping notifications of the demo: senders hear about pickup and delivery, through a
/// subscribe message when they accepted one in the mini program, else through a legacy
/// template message when the carrier holds a prepay_id of theirs.
const DEMO_TOML: &str = r#"
[notifications]
poll_interval_ms = 10
concurrency = 16

[[notifications.rules]]
name = "status_subscribe"
action_types = [100001, 300003]
recipients = ["sender"]
api = "subscribe"
template_id = "sandbox-shipping-status"
page = "pages/waybill/detail?waybill_id={waybill_id}"
[notifications.rules.data]
character_string1 = "{waybill_id}"
phrase2 = "{status}"
thing3 = "{action_msg}"
time4 = "{action_time}"

[[notifications.rules]]
name = "status_legacy"
action_types = [100001, 300003]
recipients = ["sender"]
api = "template"
template_id = "sandbox-legacy-shipping"
page = "pages/waybill/detail?waybill_id={waybill_id}"
[notifications.rules.data]
keyword1 = "{waybill_id}"
keyword2 = "{status}"
keyword3 = "{action_time}"
keyword4 = "{action_msg}"
"#;

/// A fresh Standard Webhooks secret for a run.
pub(super) fn webhook_secret() -> String {
    use base64::Engine;
    let key: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// The settings of a run in `dir`, its outcomes sent to `webhook_url` signed with
/// `webhook_secret`.
pub(super) fn settings(
    dir: &Path,
    webhook_url: &str,
    webhook_secret: &str,
) -> anyhow::Result<Settings> {
    let env: BTreeMap<String, String> = [
        ("WXEXPRESS_SERVER__LISTEN", "127.0.0.1:0".to_string()),
        (
            "WXEXPRESS_DATABASE__URL",
            format!("sqlite://{}/demo.db", dir.display()),
        ),
        ("WXEXPRESS_BACKOFFICE__API_KEYS", API_KEY.to_string()),
        (
            "WXEXPRESS_PRIVACY__DATA_KEY",
            crate::privacy::Privacy::generate_key_base64(),
        ),
        ("WXEXPRESS_OUTBOX__POLL_INTERVAL_MS", "10".to_string()),
        ("WXEXPRESS_OUTBOX__CONCURRENCY", "32".to_string()),
        // A compressed day: retries after fractions of a second instead of minutes.
        (
            "WXEXPRESS_OUTBOX__RETRY_SCHEDULE",
            "0.1,0.3,0.6,1,2,3,5".to_string(),
        ),
        ("WXEXPRESS_OUTBOX__LEASE_SECS", "15".to_string()),
        ("WXEXPRESS_OUTCOMES__WEBHOOK_URL", webhook_url.to_string()),
        (
            "WXEXPRESS_OUTCOMES__WEBHOOK_SECRET",
            webhook_secret.to_string(),
        ),
        (
            "WXEXPRESS_OUTCOMES__RETRY_SCHEDULE",
            "0.1,0.3,0.6,1,2,3,5".to_string(),
        ),
        ("WXEXPRESS_OUTCOMES__POLL_INTERVAL_MS", "20".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let config_path = dir.join("demo.toml");
    std::fs::write(&config_path, DEMO_TOML)?;
    crate::config::load_from(Some(&config_path), &env, false)
        .map_err(|e| anyhow::anyhow!("demo settings: {e}"))
}
