//! `[notifications]` and `[wechatpay]`: the sections of the configuration this module reads, as the file and
//! the environment say it (checked by [`super::rules::Rules::compile`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Shipping notifications (`[notifications]`): the worker and the rules that map action
/// types to message templates (`docs/NOTIFICATIONS.md`). Checked by
/// [`super::rules::Rules::compile`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsSection {
    /// Run the notification worker in this process (false: an API-only node).
    pub enabled: bool,
    /// Users being sent to at once in this process (one send per user at a time).
    pub concurrency: usize,
    /// Users claimed per poll.
    pub batch_size: i64,
    /// Idle poll interval, milliseconds.
    pub poll_interval_ms: u64,
    /// Lease on a claimed user, seconds.
    pub lease_secs: i64,
    /// Outbound calls per second in this process (0 = unlimited).
    pub subscribe_rate: f64,
    pub template_rate: f64,
    /// `miniprogram_state` of subscribe messages: developer | trial | formal.
    pub miniprogram_state: String,
    /// `lang` of subscribe messages: zh_CN | en_US | zh_HK | zh_TW.
    pub lang: String,
    /// A legacy credential is not offered when it expires within this many seconds.
    pub credential_margin_secs: i64,
    /// `{status}` per action type (at most 5 Chinese characters), over the built-in phrases.
    pub status_phrases: BTreeMap<String, String>,
    /// `[[notifications.rules]]`.
    pub rules: Vec<NotificationRuleSection>,
}

impl Default for NotificationsSection {
    fn default() -> Self {
        NotificationsSection {
            enabled: true,
            concurrency: 8,
            batch_size: 32,
            poll_interval_ms: 200,
            lease_secs: 30,
            subscribe_rate: 0.0,
            template_rate: 0.0,
            miniprogram_state: "formal".into(),
            lang: "zh_CN".into(),
            credential_margin_secs: 60,
            status_phrases: BTreeMap::new(),
            rules: Vec::new(),
        }
    }
}

/// One `[[notifications.rules]]`: which events notify whom with which template.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationRuleSection {
    /// Unique name, stored with each notification it creates.
    pub name: String,
    pub action_types: Vec<i64>,
    /// `sender` and/or `receiver`: whose openid on the waybill receives it.
    pub recipients: Vec<String>,
    /// `subscribe` (default) or `template` (legacy form_id/prepay_id).
    pub api: String,
    pub template_id: String,
    /// Mini program page, with `{waybill_id}`/`{action_type}` placeholders in its query.
    pub page: Option<String>,
    /// Legacy templates only: `keywordN.DATA` to enlarge.
    pub emphasis_keyword: Option<String>,
    /// Keyword -> value template (`thing3 = "{action_msg}"`).
    pub data: BTreeMap<String, String>,
}

/// `[wechatpay]`: the merchant whose payment notifications record paid freight.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WechatPaySettings {
    pub mch_id: Option<String>,
    pub api_key: Option<Secret>,
}
