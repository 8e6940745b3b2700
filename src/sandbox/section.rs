//! `[sandbox]`: where `wxexpress sandbox` listens and whom it calls, as the configuration
//! says it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxSection {
    pub listen: String,
    pub callback_url: Option<String>,
    pub jsonp_url: Option<String>,
}

impl Default for SandboxSection {
    fn default() -> Self {
        SandboxSection {
            listen: "127.0.0.1:9090".into(),
            callback_url: None,
            jsonp_url: None,
        }
    }
}
