use super::*;
use crate::wechat::envelope::{MessageFormat, MessageMode};

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), text).unwrap();
    f
}

const GOOD: &str = r#"
[database]
url = "sqlite://x/db.sqlite"
[wechat]
appid = "wxba5fad812f8e6fb9"
secret = "s3cr3t"
original_id = "gh_97417a04a28d"
token = "AAAAA"
encoding_aes_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
[backoffice]
api_keys = ["0123456789abcdef"]
[privacy]
data_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
"#;

#[test]
fn a_complete_file_loads() {
    let f = file(GOOD);
    let s = load_from(Some(f.path()), &env(&[]), false).unwrap();
    assert!(!s.sandbox_mode());
    assert_eq!(
        s.wechat.api_base.as_deref(),
        Some("https://api.weixin.qq.com")
    );
    assert_eq!(s.wechat.message_mode, MessageMode::Secure);
}

#[test]
fn env_overrides_the_file_and_splits_lists() {
    let f = file(GOOD);
    let s = load_from(
        Some(f.path()),
        &env(&[
            ("WXEXPRESS_WECHAT__MESSAGE_FORMAT", "xml"),
            (
                "WXEXPRESS_BACKOFFICE__API_KEYS",
                "aaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbb",
            ),
            ("WXEXPRESS_SERVER__CALLBACK_WINDOW_SECS", "60"),
        ]),
        false,
    )
    .unwrap();
    assert_eq!(s.wechat.message_format, MessageFormat::Xml);
    assert_eq!(s.api_keys.len(), 2);
    assert_eq!(s.server.callback_window_secs, 60);
}

#[test]
fn every_problem_gets_its_own_line() {
    let f = file(GOOD);
    let e = load_from(
        Some(f.path()),
        &env(&[
            ("WXEXPRESS_WECHAT__ENCODING_AES_KEY", "short"),
            ("WXEXPRESS_WECHAT__MESSAGE_MODE", "loud"),
            ("WXEXPRESS_DATABASE__URL", "mysql://x"),
        ]),
        false,
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("wechat.encoding_aes_key: must be exactly 43"),
        "{text}"
    );
    assert!(text.contains("wechat.message_mode: \"loud\""), "{text}");
    assert!(text.contains("database.url:"), "{text}");
    assert_eq!(e.0.len(), 3, "{text}");
}

#[test]
fn a_config_file_without_a_data_key_is_refused() {
    let f = file(&GOOD.replace("data_key = ", "#"));
    let e = load_from(Some(f.path()), &env(&[]), true).unwrap_err();
    assert!(e.to_string().contains("privacy.data_key: is required"));
}

#[test]
fn unknown_keys_are_named() {
    let f = file(&format!("{GOOD}\n[server]\nlisten_on = \"x\"\n"));
    let e = load_from(Some(f.path()), &env(&[]), false).unwrap_err();
    assert!(e.to_string().contains("listen_on"), "{e}");
}

#[test]
fn redacted_output_has_no_secrets() {
    let f = file(GOOD);
    let s = load_from(
        Some(f.path()),
        &env(&[("WXEXPRESS_DATABASE__URL", "postgres://u:pw@h/db")]),
        false,
    )
    .unwrap();
    let out = s.redacted_toml();
    for secret in [
        "s3cr3t",
        "AAAAA\"",
        "0123456789abcdef",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ":pw@",
    ] {
        assert!(!out.contains(secret), "{secret} leaked in\n{out}");
    }
    assert!(out.contains("<redacted>"));
}

#[test]
fn no_configuration_means_sandbox_mode_with_generated_keys() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/db.sqlite", dir.path().display());
    let s = load_from(None, &env(&[("WXEXPRESS_DATABASE__URL", &url)]), true).unwrap();
    assert!(s.sandbox_mode());
    assert!(dir.path().join("data_key").exists());
    assert!(dir.path().join("api_key").exists());
    let again = load_from(None, &env(&[("WXEXPRESS_DATABASE__URL", &url)]), true).unwrap();
    assert_eq!(again.data_key, s.data_key, "the generated key is reused");
}

#[test]
fn an_empty_secret_is_an_error_never_a_silent_sandbox() {
    // As an unset template variable renders it, next to real settings.
    let f = file(GOOD);
    let e = load_from(
        Some(f.path()),
        &env(&[("WXEXPRESS_WECHAT__SECRET", "")]),
        false,
    )
    .unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    assert!(e.0[0].starts_with("wechat.secret: "), "{e}");
    // Even alone: the empty secret itself is a [wechat] setting.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/db.sqlite", dir.path().display());
    let e = load_from(
        None,
        &env(&[
            ("WXEXPRESS_DATABASE__URL", &url),
            ("WXEXPRESS_WECHAT__SECRET", ""),
        ]),
        true,
    )
    .unwrap_err();
    assert!(e.0.iter().any(|l| l.starts_with("wechat.secret: ")), "{e}");
    // A file whose [wechat] has no secret at all.
    let f = file(&GOOD.replace("secret = \"s3cr3t\"\n", ""));
    let e = load_from(Some(f.path()), &env(&[]), false).unwrap_err();
    assert!(e.0.iter().any(|l| l.starts_with("wechat.secret: ")), "{e}");
}

#[test]
fn serve_sandbox_plays_the_configured_app_without_a_secret() {
    let f = file(&GOOD.replace("secret = \"s3cr3t\"\n", ""));
    let opts = LoadOptions {
        generate: false,
        sandbox: true,
    };
    let s = load_with(Some(f.path()), &env(&[]), opts).unwrap();
    assert!(s.sandbox_mode());
    assert_eq!(s.wechat.appid, "wxba5fad812f8e6fb9");
    assert!(s.notices.iter().any(|n| n.starts_with("SANDBOX MODE")));
}

#[test]
fn sandbox_mode_listens_on_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/db.sqlite", dir.path().display());
    for (listen, ok) in [
        ("0.0.0.0:8080", false),
        ("192.168.1.5:8080", false),
        ("[::]:8080", false),
        ("127.0.0.1:8080", true),
        ("[::1]:8080", true),
    ] {
        let r = load_from(
            None,
            &env(&[
                ("WXEXPRESS_DATABASE__URL", &url),
                ("WXEXPRESS_SERVER__LISTEN", listen),
            ]),
            true,
        );
        match r {
            Ok(s) => assert!(ok && s.sandbox_mode(), "{listen}"),
            Err(e) => {
                assert!(!ok, "{listen}: {e}");
                assert!(e.0[0].starts_with("server.listen: "), "{e}");
            }
        }
    }
    // With credentials, any address.
    let f = file(GOOD);
    let s = load_from(
        Some(f.path()),
        &env(&[("WXEXPRESS_SERVER__LISTEN", "0.0.0.0:8080")]),
        false,
    )
    .unwrap();
    assert!(!s.sandbox_mode());
}

#[test]
fn plaintext_mode_needs_allow_plaintext_and_then_warns() {
    let f = file(GOOD);
    let plain = [("WXEXPRESS_WECHAT__MESSAGE_MODE", "plaintext")];
    let e = load_from(Some(f.path()), &env(&plain), false).unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    assert!(
        e.0[0].starts_with("wechat.message_mode: plaintext is refused"),
        "{e}"
    );
    let allowed = [plain[0], ("WXEXPRESS_WECHAT__ALLOW_PLAINTEXT", "true")];
    let s = load_from(Some(f.path()), &env(&allowed), false).unwrap();
    assert_eq!(s.wechat.message_mode, MessageMode::Plaintext);
    assert!(
        s.notices.iter().any(|n| n.contains("plaintext")),
        "{:?}",
        s.notices
    );
}

#[test]
fn the_jsonp_token_defaults_to_the_push_token_and_a_bad_waybill_pattern_is_one_line() {
    let f = file(GOOD);
    let s = load_from(Some(f.path()), &env(&[]), false).unwrap();
    assert_eq!(s.jsonp_token.expose(), "AAAAA");
    assert!(s.waybill_pattern.is_none());
    let s = load_from(
        Some(f.path()),
        &env(&[
            ("WXEXPRESS_JSONP__TOKEN", "OfficialAcct"),
            ("WXEXPRESS_JSONP__WAYBILL_PATTERN", "SF[0-9]{12}"),
        ]),
        false,
    )
    .unwrap();
    assert_eq!(s.jsonp_token.expose(), "OfficialAcct");
    let re = s.waybill_pattern.as_ref().unwrap();
    assert!(re.is_match("SF123456789012") && !re.is_match("SF1234567890123"));
    assert!(!s.redacted_toml().contains("OfficialAcct"), "a secret");
    let e = load_from(
        Some(f.path()),
        &env(&[("WXEXPRESS_JSONP__WAYBILL_PATTERN", "SF[0-9")]),
        false,
    )
    .unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    assert!(e.0[0].starts_with("jsonp.waybill_pattern: "), "{e}");
    assert!(!e.0[0].contains('\n'));
}

#[test]
fn notification_rules_load_and_a_bad_keyword_stops_the_start_with_one_line() {
    let rule = "\n[[notifications.rules]]\nname = \"picked_up\"\naction_types = [100001]\nrecipients = [\"sender\"]\ntemplate_id = \"T1\"\n[notifications.rules.data]\nthing3 = \"{action_msg}\"\n";
    let f = file(&format!("{GOOD}{rule}"));
    let s = load_from(Some(f.path()), &env(&[]), false).unwrap();
    assert_eq!(s.notifications.plan().for_action(100001).len(), 1);
    assert!(!s.notifications.is_sandbox_example());
    assert!(s.redacted_toml().contains("[[notifications.rules]]"));
    let f = file(&format!("{GOOD}{}", rule.replace("thing3", "phrase2")));
    let e = load_from(Some(f.path()), &env(&[]), false).unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    assert_eq!(
        e.0[0],
        "notifications.rules[0] (picked_up).data.phrase2: must be one of {status}"
    );
}

#[test]
fn cells_load_from_the_file_with_their_conditions() {
    let f = file(&format!(
        "{GOOD}\n[[cells]]\nkey = \"pay\"\nname = \"支付运单\"\nlink = \"https://c.example/pay/{{waybill_id}}\"\nwhen = {{ latest_action_in = [90010] }}\n\n[[cells]]\nkey = \"complain\"\nname = \"投诉\"\nlink = \"https://c.example/complain?w={{waybill_id}}\"\n"
    ));
    let s = load_from(Some(f.path()), &env(&[]), false).unwrap();
    assert_eq!(s.cells.len(), 2);
    assert_eq!(s.cells[0].key(), "pay");
    assert!(s.cells[1].condition().is_none());
    assert!(s.redacted_toml().contains("[[cells]]"));
}

#[test]
fn a_cell_key_over_20_characters_stops_the_start_with_one_line() {
    let f = file(&format!(
        "{GOOD}\n[[cells]]\nkey = \"{}\"\nname = \"投诉\"\nlink = \"https://c.example/\"\n",
        "k".repeat(21)
    ));
    let e = load_from(Some(f.path()), &env(&[]), false).unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    assert_eq!(e.0[0], "cells[0].key: is longer than 20 characters");
}

#[test]
fn values_are_typed_by_their_field_not_guessed_from_their_text() {
    let f = file(GOOD);
    let s = load_from(
        Some(f.path()),
        &env(&[
            ("WXEXPRESS_WECHATPAY__MCH_ID", "1900000109"),
            (
                "WXEXPRESS_WECHATPAY__API_KEY",
                "192006250b4c09247ec02edce69f6a2d",
            ),
            ("WXEXPRESS_WECHAT__TOKEN", "12345"),
            ("WXEXPRESS_OUTBOX__CONCURRENCY", " 64 "),
            ("WXEXPRESS_OUTBOX__ENABLED", "0"),
        ]),
        false,
    )
    .unwrap();
    assert_eq!(s.wechatpay.mch_id.as_deref(), Some("1900000109"));
    assert_eq!(s.wechat.token.expose(), "12345");
    assert_eq!(s.outbox.concurrency, 64);
    assert!(!s.outbox.enabled);
}

#[test]
fn every_problem_of_the_file_and_the_environment_is_one_line_naming_its_key() {
    let f = file(&format!("{GOOD}\n[outbox]\nconcurency = 4\n"));
    let e = load_from(Some(f.path()), &env(&[]), false).unwrap_err();
    assert_eq!(e.0.len(), 1, "{:?}", e.0);
    assert!(
        e.0[0].starts_with("outbox.concurency: unknown field"),
        "{}",
        e.0[0]
    );
    assert!(
        e.0[0].contains(&f.path().display().to_string()),
        "{}",
        e.0[0]
    );

    let f = file(&format!("{GOOD}\n[outbox]\nconcurrency = \"many\"\n"));
    let e = load_from(Some(f.path()), &env(&[]), false).unwrap_err();
    assert!(
        e.0[0].starts_with("outbox.concurrency: invalid type"),
        "{:?}",
        e.0
    );

    let f = file("[server\nlisten = 1");
    let e = load_from(Some(f.path()), &env(&[]), false).unwrap_err();
    assert_eq!(e.0.len(), 1, "{:?}", e.0);
    assert!(!e.0[0].contains('\n'));

    let f = file(GOOD);
    let e = load_from(
        Some(f.path()),
        &env(&[
            ("WXEXPRESS_OUTBOX__CONCURRENCY", "many"),
            ("WXEXPRESS_OUTBOX__ENABLED", "yes"),
            ("WXEXPRESS_NOSECTION", "x"),
        ]),
        false,
    )
    .unwrap_err();
    assert_eq!(
        e.0,
        [
            "WXEXPRESS_NOSECTION: expected WXEXPRESS_<SECTION>__<KEY>",
            "outbox.concurrency (WXEXPRESS_OUTBOX__CONCURRENCY): expected an integer, got \"many\"",
            "outbox.enabled (WXEXPRESS_OUTBOX__ENABLED): expected true or false, got \"yes\"",
        ]
    );

    let e = load_from(
        Some(f.path()),
        &env(&[("WXEXPRESS_OUTBOX__NO_SUCH_KEY", "1")]),
        false,
    )
    .unwrap_err();
    assert!(
        e.0[0].starts_with("outbox.no_such_key: unknown field") && e.0[0].contains("WXEXPRESS_"),
        "{:?}",
        e.0
    );
    let missing = f.path().with_extension("missing");
    let e = load_from(Some(&missing), &env(&[]), false).unwrap_err();
    assert!(e.0[0].starts_with("--config "), "{:?}", e.0);
}

#[test]
fn the_outcome_webhook_needs_a_standard_webhooks_secret_and_sane_limits_one_line_each() {
    let f = file(GOOD);
    let e = load_from(
        Some(f.path()),
        &env(&[
            (
                "WXEXPRESS_OUTCOMES__WEBHOOK_URL",
                "ftp://carrier.example/hook",
            ),
            (
                "WXEXPRESS_OUTCOMES__PREVIOUS_WEBHOOK_SECRET",
                "not-a-secret",
            ),
            ("WXEXPRESS_OUTCOMES__BATCH_MAX", "0"),
            ("WXEXPRESS_OUTCOMES__RETENTION_DAYS", "0"),
            ("WXEXPRESS_OUTCOMES__RETRY_SCHEDULE", "5,soon"),
        ]),
        false,
    )
    .unwrap_err();
    let lines = e.0.join("\n");
    for key in [
        "outcomes.webhook_url: must be an http:// or https:// URL",
        "outcomes.webhook_secret: is required when outcomes.webhook_url is set",
        "outcomes.previous_webhook_secret: must start with whsec_",
        "outcomes.batch_max: must be 1..=1000",
        "outcomes.retention_days: must be at least 1",
        "outcomes.retry_schedule: ",
    ] {
        assert!(e.0.iter().any(|l| l.starts_with(key)), "{key} in\n{lines}");
    }
    let s = load_from(
        Some(f.path()),
        &env(&[
            (
                "WXEXPRESS_OUTCOMES__WEBHOOK_URL",
                "https://u:pw@carrier.example/hook",
            ),
            (
                "WXEXPRESS_OUTCOMES__WEBHOOK_SECRET",
                "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            ),
        ]),
        false,
    )
    .unwrap();
    assert_eq!(s.outbox.deadline_secs, 3600, "the deadline's default");
    let out = s.redacted_toml();
    assert!(!out.contains("C2FVsBQIhrscChlQIMV"), "{out}");
    assert!(!out.contains(":pw@"), "{out}");
}

#[test]
fn a_problem_names_the_file_by_the_path_given_wherever_the_working_directory_is() {
    // figment shows a path relative to the working directory when that is shorter
    // (`../x.toml`): a checkout next to the file then misnamed it.
    let cwd = std::env::current_dir().unwrap();
    let Some(parent) = cwd.parent().filter(|p| p.parent().is_some()) else {
        return;
    };
    let Ok(f) = tempfile::NamedTempFile::new_in(parent) else {
        return; // a read-only parent: nothing to show
    };
    std::fs::write(f.path(), format!("{GOOD}\n[outbox]\nconcurency = 4\n")).unwrap();
    let e = load_from(Some(f.path()), &env(&[]), false).unwrap_err();
    assert!(
        e.0[0].contains(&format!("(in {})", f.path().display())),
        "{}",
        e.0[0]
    );
}

#[test]
fn sqlite_commits_are_fsynced_unless_the_settings_say_normal_and_a_wrong_mode_is_one_line() {
    use crate::store::section::Synchronous;
    let f = file(GOOD);
    let s = load_from(Some(f.path()), &env(&[]), false).unwrap();
    assert_eq!(s.database.synchronous, Synchronous::Full);
    let s = load_from(
        Some(f.path()),
        &env(&[("WXEXPRESS_DATABASE__SYNCHRONOUS", "normal")]),
        false,
    )
    .unwrap();
    assert_eq!(s.database.synchronous, Synchronous::Normal);
    let f = file(&GOOD.replace(
        "url = \"sqlite://x/db.sqlite\"",
        "url = \"sqlite://x/db.sqlite\"\nsynchronous = \"off\"",
    ));
    let e = load_from(Some(f.path()), &env(&[]), false).unwrap_err();
    assert_eq!(e.0.len(), 1, "{:?}", e.0);
    assert!(e.0[0].starts_with("database.synchronous: "), "{:?}", e.0);
    assert!(e.0[0].contains("full"), "names what is allowed: {:?}", e.0);
}
