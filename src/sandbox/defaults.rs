//! What a sandbox and a gateway without WeChat credentials agree on out of the box: the
//! emulated mini program's credentials, its default message templates, and the example
//! notification rules written for those templates. Production code may read these (a gateway
//! in sandbox mode uses them); nothing here reads the rest of the sandbox.

use crate::notify::section::NotificationRuleSection;

/// Credentials of the emulated mini program, used when no `wechat.secret` is configured.
pub const APPID: &str = "wx5a9dbox0000000001";
pub const SECRET: &str = "sandbox-app-secret";
pub const ORIGINAL_ID: &str = "gh_5a9db0x00001";
pub const TOKEN: &str = "sandboxtoken";
pub const ENCODING_AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

/// Default templates so a fresh sandbox can send: the spec's §2.4 shipping notification and
/// a free legacy template.
pub const DEFAULT_SUBSCRIBE_TEMPLATE: &str = "sandbox-shipping-status";
pub const DEFAULT_LEGACY_TEMPLATE: &str = "sandbox-legacy-shipping";

/// The worked example of `docs/NOTIFICATIONS.md` against the sandbox's default templates
/// (`sandbox-shipping-status`: `character_string1`, `phrase2`, `thing3`, `time4`;
/// `sandbox-legacy-shipping`: free `keywordN`). Used in sandbox mode when no rules are set.
pub fn example_rules() -> Vec<NotificationRuleSection> {
    let page = Some("pages/waybill/detail?waybill_id={waybill_id}".to_string());
    let shipping = |name: &str, codes: &[i64], who: &[&str]| NotificationRuleSection {
        name: name.into(),
        action_types: codes.to_vec(),
        recipients: who.iter().map(|s| s.to_string()).collect(),
        api: "subscribe".into(),
        template_id: DEFAULT_SUBSCRIBE_TEMPLATE.into(),
        page: page.clone(),
        emphasis_keyword: None,
        data: [
            ("character_string1", "{waybill_id}"),
            ("phrase2", "{status}"),
            ("thing3", "{action_msg}"),
            ("time4", "{action_time}"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    };
    vec![
        shipping("picked_up", &[100001], &["sender"]),
        shipping("out_for_delivery", &[300002], &["receiver"]),
        shipping("delivered", &[300003, 300007], &["sender", "receiver"]),
        shipping(
            "exception",
            &[100002, 300004, 400001, 400002, 400003, 400004, 400005],
            &["sender"],
        ),
        NotificationRuleSection {
            name: "paid".into(),
            action_types: vec![90011],
            recipients: vec!["sender".into()],
            api: "template".into(),
            template_id: DEFAULT_LEGACY_TEMPLATE.into(),
            page: page.clone(),
            emphasis_keyword: Some("keyword2.DATA".into()),
            data: [
                ("keyword1", "{waybill_id}"),
                ("keyword2", "{freight}"),
                ("keyword3", "{action_time}"),
                ("keyword4", "{action_msg}"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        },
    ]
}
