use super::*;
use crate::domain::NodeText;
use crate::notify::section::NotificationRuleSection;

fn section(rules: Vec<NotificationRuleSection>) -> NotificationsSection {
    NotificationsSection {
        rules,
        ..NotificationsSection::default()
    }
}

fn rule(data: &[(&str, &str)]) -> NotificationRuleSection {
    NotificationRuleSection {
        name: "r".into(),
        action_types: vec![300002],
        recipients: vec!["receiver".into()],
        api: "subscribe".into(),
        template_id: "T1".into(),
        page: Some("pages/w/d?id={waybill_id}".into()),
        emphasis_keyword: None,
        data: data
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn errors(rules: Vec<NotificationRuleSection>) -> Vec<String> {
    Rules::compile(&section(rules), false).unwrap_err()
}

#[test]
fn the_sandbox_example_rules_compile_and_plan_each_moment() {
    let rules = Rules::compile(&NotificationsSection::default(), true).unwrap();
    assert!(rules.is_sandbox_example());
    assert_eq!(rules.plan().for_action(100001).len(), 1);
    assert_eq!(
        rules.plan().for_action(300003).len(),
        2,
        "sender and receiver"
    );
    assert_eq!(rules.plan().for_action(200001).len(), 0);
    assert_eq!(rules.plan().for_action(90011)[0].kind, NotifyKind::Template);
    assert!(Rules::default().plan().is_empty());
}

#[test]
fn keywords_are_checked_against_their_types_at_start() {
    let e = errors(vec![rule(&[("phrase2", "{action_msg}")])]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("notifications.rules[0] (r).data.phrase2: must be one of {status}"),
        "{e:?}"
    );
    let e = errors(vec![rule(&[("time4", "at {action_time}")])]);
    assert!(e[0].contains("exactly one placeholder"), "{e:?}");
    let e = errors(vec![rule(&[("phrase2", "正在派送中啦")])]);
    assert!(e[0].contains("literal"), "{e:?}");
    let e = errors(vec![rule(&[("thingy3", "x")])]);
    assert!(e[0].contains("not a subscribe keyword"), "{e:?}");
    let e = errors(vec![rule(&[("thing3", "{nope}")])]);
    assert!(e[0].contains("unknown placeholder {nope}"), "{e:?}");
    let e = errors(vec![rule(&[("character_string1", "单号{waybill_id}")])]);
    assert!(e[0].contains("letters, digits and symbols"), "{e:?}");
    let e = errors(vec![rule(&[("car_number1", "{waybill_id}")])]);
    assert!(e[0].contains("literal value only"), "{e:?}");
}

#[test]
fn rules_pages_and_names_are_checked() {
    let mut r = rule(&[("thing3", "{action_msg}")]);
    r.page = Some("/pages/x?id={courier_phone}".into());
    r.action_types = vec![300001];
    r.recipients = vec!["courier".into()];
    r.api = "sms".into();
    let e = errors(vec![r, rule(&[("thing3", "x")])]);
    let text = e.join("\n");
    for needle in [
        "action_types: 300001 is not in WeChat's action_type table",
        "recipients: \"courier\" is not sender or receiver",
        "api: \"sms\" is not subscribe or template",
        "page: \"/pages/x\" is not a relative page path",
        "notifications.rules[1] (r).name: \"r\" is used by another rule",
    ] {
        assert!(text.contains(needle), "{needle} not in\n{text}");
    }
}

#[test]
fn a_message_is_built_with_every_value_fitted() {
    let mut r = rule(&[
        ("character_string1", "{waybill_id}"),
        ("phrase2", "{status}"),
        ("thing3", "{action_msg}"),
        ("time4", "{action_time}"),
        ("name5", "{courier|快递员}"),
        ("phone_number6", "{courier_phone}"),
    ]);
    r.name = "ofd".into();
    let rules = Rules::compile(&section(vec![r]), false).unwrap();
    let text = NodeText {
        action_msg: "【深圳市】快件已到达深圳转运中心，下一站泉州集散中心，预计明天送达".into(),
        ..NodeText::default()
    };
    let ctx = MessageContext {
        waybill_id: "SF1001",
        action_type: ActionType::OUT_FOR_DELIVERY,
        action_time: 1_730_380_560,
        create_time: 1_730_000_000,
        text: &text,
        contacts: None,
        total_fee: None,
        out_trade_no: None,
    };
    let m = rules.build(rules.rule("ofd").unwrap(), &ctx).unwrap();
    let v = |k: &str| m.data[k]["value"].as_str().unwrap().to_string();
    assert_eq!(v("character_string1"), "SF1001");
    assert_eq!(v("phrase2"), "派送中");
    assert_eq!(v("thing3"), "【深圳市】快件已到达深圳转运中心…");
    assert_eq!(v("time4"), "2024-10-31 21:16");
    assert_eq!(v("name5"), "快递员", "the fallback");
    assert_eq!(v("phone_number6"), "-", "the type's neutral value");
    assert_eq!(m.page.as_deref(), Some("pages/w/d?id=SF1001"));
    let body = rules.body(rules.rule("ofd").unwrap(), "o1", &m, None);
    assert_eq!(body["miniprogram_state"], "formal");
    assert!(body.get("form_id").is_none());
}

#[test]
fn every_built_in_status_is_a_phrase() {
    for (code, _, _) in crate::domain::action::ACTION_TYPES {
        let t = ActionType::parse(*code).unwrap();
        assert!(
            values::check(KeywordType::Phrase, default_status_phrase(t)).is_ok(),
            "{code}"
        );
    }
}

#[test]
fn the_worked_configuration_of_the_docs_compiles_and_shortens_as_shown() {
    let doc = include_str!("../../../docs/NOTIFICATIONS.md");
    let worked = doc
        .split("## A worked configuration")
        .nth(1)
        .and_then(|s| s.split("```toml").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("the worked configuration block");
    #[derive(serde::Deserialize)]
    struct File {
        notifications: NotificationsSection,
    }
    let file: File = toml::from_str(&format!("[notifications]\n{worked}")).unwrap();
    let rules = Rules::compile(&file.notifications, false).unwrap();
    assert_eq!(rules.rules().len(), 5);
    for code in [100001, 300002, 300003, 300007, 400004, 90011] {
        assert!(!rules.plan().for_action(code).is_empty(), "{code}");
    }
    let text = NodeText {
        action_msg: "收件人拒收，快件将退回寄件网点，请联系客服处理".into(),
        ..NodeText::default()
    };
    let ctx = MessageContext {
        waybill_id: "SF1002",
        action_type: ActionType::parse(400004).unwrap(),
        action_time: 1_730_528_400,
        create_time: 1_730_000_000,
        text: &text,
        contacts: None,
        total_fee: None,
        out_trade_no: None,
    };
    let m = rules.build(rules.rule("exception").unwrap(), &ctx).unwrap();
    assert_eq!(m.data["thing3"]["value"], "收件人拒收，快件将退回寄件网点…");
    assert_eq!(m.data["phrase2"]["value"], "已拒收");
    assert_eq!(
        m.page.as_deref(),
        Some("pages/waybill/detail?waybill_id=SF1002&tab=issue")
    );
}

#[test]
fn value_templates_parse_braces_and_fallbacks() {
    let t = ValueTemplate::parse("{{x}} {courier|无} {status}").unwrap();
    assert_eq!(t.parts.len(), 4);
    assert!(ValueTemplate::parse("{status").is_err());
    assert!(ValueTemplate::parse("status}").is_err());
}
