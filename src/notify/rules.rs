//! Notification rules: `[notifications]` checked at start, and the messages they build.
//!
//! A rule maps action types to a template: who receives it (the waybill's sender and/or
//! receiver openid), which API sends it, the mini program page, and a value template per
//! keyword (`thing3 = "{action_msg}"`). Every keyword is checked at start against its type
//! (a `phrase` can only hold `{status}` or a literal phrase, a `time` only a time, …), and
//! every value is fitted to its type when a message is built ([`super::values`]), so our own
//! data never earns a 47003. Pure: the worker supplies waybill and event.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use super::section::{NotificationRuleSection, NotificationsSection};
use super::values::{self, KeywordType};
use crate::domain::{ActionType, Contacts, NodeText};
use crate::store::{NotificationIntent, NotificationPlan, NotifyKind, Role};

/// What a placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    WaybillId,
    /// The action type's code, e.g. `300002`.
    ActionType,
    /// A phrase of at most 5 Chinese characters, e.g. `派送中` (`status_phrases`).
    Status,
    /// WeChat's stage name, e.g. `派送阶段-派送中`.
    Stage,
    ActionMsg,
    /// `2024-10-31 21:16`, Beijing time.
    ActionTime,
    /// `2024-10-31`.
    ActionDate,
    /// The waybill's creation, like `ActionTime`.
    CreateTime,
    /// The delivery courier's name, else the pickup courier's.
    Courier,
    CourierPhone,
    SenderCity,
    ReceiverCity,
    /// The freight, `¥19.90`.
    Freight,
    OutTradeNo,
}

const FIELDS: &[(&str, Field)] = &[
    ("waybill_id", Field::WaybillId),
    ("action_type", Field::ActionType),
    ("status", Field::Status),
    ("stage", Field::Stage),
    ("action_msg", Field::ActionMsg),
    ("action_time", Field::ActionTime),
    ("action_date", Field::ActionDate),
    ("create_time", Field::CreateTime),
    ("courier", Field::Courier),
    ("courier_phone", Field::CourierPhone),
    ("sender_city", Field::SenderCity),
    ("receiver_city", Field::ReceiverCity),
    ("freight", Field::Freight),
    ("out_trade_no", Field::OutTradeNo),
];

/// Fields whose values are printable ASCII (may be mixed into a `character_string`).
const ASCII_FIELDS: &[Field] = &[Field::WaybillId, Field::ActionType, Field::OutTradeNo];

/// One piece of a value template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// `{field}` or `{field|fallback}`: the fallback stands in when the field is empty.
    Field(Field, Option<String>),
}

/// A value template: literal text with `{placeholders}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueTemplate {
    parts: Vec<Part>,
}

impl ValueTemplate {
    /// `{name}` and `{name|fallback}` placeholders; `{{` and `}}` are literal braces.
    pub fn parse(s: &str) -> Result<ValueTemplate, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '}' => return Err("unmatched `}` (write `}}` for a brace)".into()),
                '{' => {
                    let mut inner = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => return Err("unclosed `{`".into()),
                            Some(c) => inner.push(c),
                        }
                    }
                    let (name, fallback) = match inner.split_once('|') {
                        Some((n, f)) => (n, Some(f.to_string())),
                        None => (inner.as_str(), None),
                    };
                    let field = FIELDS
                        .iter()
                        .find(|(n, _)| *n == name.trim())
                        .map(|(_, f)| *f)
                        .ok_or_else(|| {
                            format!(
                                "unknown placeholder {{{name}}} (known: {})",
                                FIELDS
                                    .iter()
                                    .map(|(n, _)| *n)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        })?;
                    if !lit.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Field(field, fallback));
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        Ok(ValueTemplate { parts })
    }

    fn fields(&self) -> impl Iterator<Item = Field> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(f, _) => Some(*f),
            Part::Literal(_) => None,
        })
    }

    /// The single field and its fallback when the template is exactly one placeholder.
    fn alone(&self) -> Option<(Field, Option<&str>)> {
        match self.parts.as_slice() {
            [Part::Field(f, fb)] => Some((*f, fb.as_deref())),
            _ => None,
        }
    }

    fn literal(&self) -> Option<String> {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Literal(l) => Some(l.as_str()),
                Part::Field(..) => None,
            })
            .collect()
    }

    fn render(&self, ctx: &MessageContext<'_>, phrases: &BTreeMap<i64, String>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(l) => out.push_str(l),
                Part::Field(f, fallback) => {
                    let v = ctx.value(*f, phrases);
                    if v.trim().is_empty() {
                        out.push_str(fallback.as_deref().unwrap_or(""));
                    } else {
                        out.push_str(&v);
                    }
                }
            }
        }
        out
    }
}

/// Which fields a keyword type can hold; `None`: a literal only.
fn allowed_fields(kind: KeywordType) -> Option<(&'static [Field], bool)> {
    // (fields, whether the field must stand alone)
    match kind {
        KeywordType::Thing => Some((
            &[
                Field::WaybillId,
                Field::ActionType,
                Field::Status,
                Field::Stage,
                Field::ActionMsg,
                Field::ActionTime,
                Field::ActionDate,
                Field::CreateTime,
                Field::Courier,
                Field::CourierPhone,
                Field::SenderCity,
                Field::ReceiverCity,
                Field::Freight,
                Field::OutTradeNo,
            ],
            false,
        )),
        KeywordType::CharacterString => Some((ASCII_FIELDS, false)),
        KeywordType::Phrase => Some((&[Field::Status], true)),
        KeywordType::Time => Some((&[Field::ActionTime, Field::CreateTime], true)),
        KeywordType::Date => Some((
            &[Field::ActionTime, Field::ActionDate, Field::CreateTime],
            true,
        )),
        KeywordType::Number => Some((&[Field::ActionType], true)),
        KeywordType::Amount => Some((&[Field::Freight], true)),
        KeywordType::PhoneNumber => Some((&[Field::CourierPhone], true)),
        KeywordType::Name => Some((&[Field::Courier], true)),
        KeywordType::Letter | KeywordType::Symbol | KeywordType::CarNumber | KeywordType::Enum => {
            None
        }
    }
}

/// One keyword of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyword {
    pub key: String,
    /// `None` for a legacy template's `keywordN` (free text).
    pub kind: Option<KeywordType>,
    template: ValueTemplate,
}

/// A checked rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub action_types: Vec<ActionType>,
    pub recipients: Vec<Role>,
    pub api: NotifyKind,
    pub template_id: String,
    page: Option<ValueTemplate>,
    pub emphasis_keyword: Option<String>,
    pub keywords: Vec<Keyword>,
}

/// What a message is built from.
pub struct MessageContext<'a> {
    pub waybill_id: &'a str,
    pub action_type: ActionType,
    /// Unix s.
    pub action_time: i64,
    /// Unix s.
    pub create_time: i64,
    pub text: &'a NodeText,
    pub contacts: Option<&'a Contacts>,
    /// Fen.
    pub total_fee: Option<i64>,
    pub out_trade_no: Option<&'a str>,
}

impl MessageContext<'_> {
    fn value(&self, f: Field, phrases: &BTreeMap<i64, String>) -> String {
        let t = self.text;
        match f {
            Field::WaybillId => self.waybill_id.to_string(),
            Field::ActionType => self.action_type.code().to_string(),
            Field::Status => status_phrase(self.action_type, phrases),
            Field::Stage => self.action_type.stage().to_string(),
            Field::ActionMsg => t.action_msg.clone(),
            Field::ActionTime => values::format_time(self.action_time),
            Field::ActionDate => values::format_date(self.action_time),
            Field::CreateTime => values::format_time(self.create_time),
            Field::Courier => t
                .delivery_courier_name
                .clone()
                .or_else(|| t.pickup_courier_name.clone())
                .unwrap_or_default(),
            Field::CourierPhone => t
                .delivery_courier_phone
                .clone()
                .or_else(|| t.pickup_courier_phone.clone())
                .unwrap_or_default(),
            Field::SenderCity => self
                .contacts
                .map(|c| c.sender.city.clone())
                .unwrap_or_default(),
            Field::ReceiverCity => self
                .contacts
                .map(|c| c.receiver.city.clone())
                .unwrap_or_default(),
            Field::Freight => self
                .total_fee
                .map(values::format_amount)
                .unwrap_or_default(),
            Field::OutTradeNo => self.out_trade_no.unwrap_or_default().to_string(),
        }
    }
}

/// A built message, ready to be addressed.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub data: Map<String, Value>,
    pub page: Option<String>,
}

/// The built-in `{status}` phrases: at most 5 Chinese characters each (a `phrase`).
pub fn default_status_phrase(action_type: ActionType) -> &'static str {
    match action_type.code() {
        90001 => "已接单",
        90002 | 90003 => "待揽件",
        90010 => "待支付",
        90011 => "已支付",
        100001 => "已揽件",
        100002 => "揽件失败",
        200001 => "运输中",
        300002 => "派送中",
        300003 => "已签收",
        300004 => "签收失败",
        300005 => "待取件",
        300006 => "重新派送",
        300007 => "已代签收",
        400001 => "已取消",
        400002 => "滞留中",
        400003 => "已退回",
        400004 => "已拒收",
        400005 => "问题件",
        _ => "状态更新",
    }
}

fn status_phrase(action_type: ActionType, phrases: &BTreeMap<i64, String>) -> String {
    phrases
        .get(&action_type.code())
        .cloned()
        .unwrap_or_else(|| default_status_phrase(action_type).to_string())
}

/// Checked `[notifications]`: rules by name, the plan the event path enqueues by, and the
/// worker's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    rules: Vec<Rule>,
    plan: NotificationPlan,
    status_phrases: BTreeMap<i64, String>,
    sandbox_example: bool,
    pub enabled: bool,
    pub concurrency: usize,
    pub batch_size: i64,
    pub poll_interval_ms: u64,
    pub lease_secs: i64,
    pub subscribe_rate: f64,
    pub template_rate: f64,
    pub miniprogram_state: String,
    pub lang: String,
    pub credential_margin_secs: i64,
}

impl Default for Rules {
    /// No rules: nothing is ever enqueued.
    fn default() -> Self {
        Rules::compile(&NotificationsSection::default(), false)
            .expect("the default section is valid")
    }
}

impl Rules {
    /// Checks `[notifications]`; every problem is one line naming its key. In sandbox mode
    /// and without rules, the example rules of [`crate::sandbox::defaults::example_rules`] apply.
    pub fn compile(section: &NotificationsSection, sandbox: bool) -> Result<Rules, Vec<String>> {
        let mut p = Vec::new();
        let s = section;
        if s.concurrency == 0 || s.concurrency > 1024 {
            p.push("notifications.concurrency: must be 1..=1024".into());
        }
        if s.batch_size < 1 {
            p.push("notifications.batch_size: must be at least 1".into());
        }
        if s.lease_secs < 5 {
            p.push("notifications.lease_secs: must be at least 5".into());
        }
        if !(s.subscribe_rate >= 0.0 && s.template_rate >= 0.0) {
            p.push("notifications.*_rate: must be >= 0".into());
        }
        if !["developer", "trial", "formal"].contains(&s.miniprogram_state.as_str()) {
            p.push(format!(
                "notifications.miniprogram_state: {:?} is not one of developer, trial, formal",
                s.miniprogram_state
            ));
        }
        if !["zh_CN", "en_US", "zh_HK", "zh_TW"].contains(&s.lang.as_str()) {
            p.push(format!(
                "notifications.lang: {:?} is not one of zh_CN, en_US, zh_HK, zh_TW",
                s.lang
            ));
        }
        if !(0..=86_400).contains(&s.credential_margin_secs) {
            p.push("notifications.credential_margin_secs: must be 0..=86400".into());
        }
        let mut status_phrases = BTreeMap::new();
        for (code, phrase) in &s.status_phrases {
            let key = format!("notifications.status_phrases.{code}");
            match code.parse::<i64>().ok().and_then(ActionType::parse) {
                None => p.push(format!("{key}: not an action_type of WeChat's table")),
                Some(t) => match values::check(KeywordType::Phrase, phrase) {
                    Ok(()) => {
                        status_phrases.insert(t.code(), phrase.clone());
                    }
                    Err(_) => p.push(format!("{key}: must be 1 to 5 Chinese characters")),
                },
            }
        }

        let sandbox_example = sandbox && s.rules.is_empty();
        let sections = if sandbox_example {
            crate::sandbox::defaults::example_rules()
        } else {
            s.rules.clone()
        };
        let mut rules = Vec::new();
        let mut names = BTreeSet::new();
        for (i, r) in sections.iter().enumerate() {
            let at = if r.name.is_empty() {
                format!("notifications.rules[{i}]")
            } else {
                format!("notifications.rules[{i}] ({})", r.name)
            };
            if !names.insert(r.name.clone()) {
                p.push(format!("{at}.name: {:?} is used by another rule", r.name));
            }
            match compile_rule(r) {
                Ok(rule) => rules.push(rule),
                Err(errs) => p.extend(errs.into_iter().map(|e| format!("{at}.{e}"))),
            }
        }
        if !p.is_empty() {
            return Err(p);
        }
        let mut plan = NotificationPlan::new();
        for rule in &rules {
            for t in &rule.action_types {
                for role in &rule.recipients {
                    plan.add(
                        t.code(),
                        NotificationIntent {
                            rule: rule.name.clone(),
                            role: *role,
                            kind: rule.api,
                            template_id: rule.template_id.clone(),
                        },
                    );
                }
            }
        }
        Ok(Rules {
            rules,
            plan,
            status_phrases,
            sandbox_example,
            enabled: s.enabled,
            concurrency: s.concurrency,
            batch_size: s.batch_size,
            poll_interval_ms: s.poll_interval_ms,
            lease_secs: s.lease_secs,
            subscribe_rate: s.subscribe_rate,
            template_rate: s.template_rate,
            miniprogram_state: s.miniprogram_state.clone(),
            lang: s.lang.clone(),
            credential_margin_secs: s.credential_margin_secs,
        })
    }

    /// What the event path enqueues per action type.
    pub fn plan(&self) -> &NotificationPlan {
        &self.plan
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// True when the sandbox's example rules apply (sandbox mode, none configured).
    pub fn is_sandbox_example(&self) -> bool {
        self.sandbox_example
    }

    /// `{status}` of an action type.
    pub fn status_phrase(&self, action_type: ActionType) -> String {
        status_phrase(action_type, &self.status_phrases)
    }

    /// Builds `rule`'s message for `ctx`: every value fitted to its keyword's type. An
    /// error names the keyword that cannot be filled (nothing is sent then).
    pub fn build(&self, rule: &Rule, ctx: &MessageContext<'_>) -> Result<Message, String> {
        let mut data = Map::new();
        for k in &rule.keywords {
            let raw = k.template.render(ctx, &self.status_phrases);
            let value = match k.kind {
                None => Some(values::fit_legacy(&raw)).filter(|v| !v.is_empty()),
                // Empty or unfittable data: the type's neutral value, if it has one.
                Some(kind) => {
                    values::fit(kind, &raw).or_else(|| kind.empty_default().map(str::to_string))
                }
            };
            let value = value
                .or_else(|| Some("-".to_string()).filter(|_| k.kind.is_none()))
                .ok_or_else(|| format!("keyword {} cannot be filled from this event", k.key))?;
            data.insert(k.key.clone(), json!({ "value": value }));
        }
        let page = rule
            .page
            .as_ref()
            .map(|p| p.render(ctx, &self.status_phrases));
        Ok(Message { data, page })
    }

    /// The JSON body of the send: `subscribe/send`, or `template/send` with `form_id`.
    pub fn body(&self, rule: &Rule, touser: &str, m: &Message, form_id: Option<&str>) -> Value {
        let mut body = json!({
            "touser": touser,
            "template_id": rule.template_id,
            "data": m.data,
        });
        let obj = body.as_object_mut().expect("a JSON object literal");
        if let Some(page) = &m.page {
            obj.insert("page".into(), json!(page));
        }
        match rule.api {
            NotifyKind::Subscribe => {
                obj.insert("miniprogram_state".into(), json!(self.miniprogram_state));
                obj.insert("lang".into(), json!(self.lang));
            }
            NotifyKind::Template => {
                obj.insert("form_id".into(), json!(form_id.unwrap_or_default()));
                if let Some(e) = &rule.emphasis_keyword {
                    obj.insert("emphasis_keyword".into(), json!(e));
                }
            }
        }
        body
    }
}

fn compile_rule(r: &NotificationRuleSection) -> Result<Rule, Vec<String>> {
    let mut p = Vec::new();
    if r.name.is_empty()
        || r.name.len() > 64
        || !r
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        p.push("name: required, 1..=64 of [A-Za-z0-9_-]".to_string());
    }
    let mut action_types = Vec::new();
    if r.action_types.is_empty() {
        p.push("action_types: at least one action type is required".into());
    }
    for code in &r.action_types {
        match ActionType::parse(*code) {
            Some(t) => action_types.push(t),
            None => p.push(format!(
                "action_types: {code} is not in WeChat's action_type table"
            )),
        }
    }
    let mut recipients = Vec::new();
    if r.recipients.is_empty() {
        p.push("recipients: list sender and/or receiver".into());
    }
    for who in &r.recipients {
        match Role::parse(who) {
            Some(role) if !recipients.contains(&role) => recipients.push(role),
            Some(_) => p.push(format!("recipients: {who} is listed twice")),
            None => p.push(format!("recipients: {who:?} is not sender or receiver")),
        }
    }
    let api = match r.api.as_str() {
        "" | "subscribe" => NotifyKind::Subscribe,
        "template" => NotifyKind::Template,
        other => {
            p.push(format!("api: {other:?} is not subscribe or template"));
            NotifyKind::Subscribe
        }
    };
    if r.template_id.is_empty()
        || r.template_id.len() > 128
        || !r
            .template_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        p.push("template_id: required, 1..=128 of [A-Za-z0-9_-]".into());
    }
    let page = match &r.page {
        None => None,
        Some(page) => match check_page(page) {
            Ok(t) => Some(t),
            Err(e) => {
                p.push(format!("page: {e}"));
                None
            }
        },
    };
    if r.data.is_empty() {
        p.push("data: at least one keyword is required".into());
    }
    let mut keywords = Vec::new();
    for (key, value) in &r.data {
        match compile_keyword(api, key, value) {
            Ok(k) => keywords.push(k),
            Err(e) => p.push(format!("data.{key}: {e}")),
        }
    }
    let emphasis_keyword = match (&r.emphasis_keyword, api) {
        (None, _) => None,
        (Some(_), NotifyKind::Subscribe) => {
            p.push("emphasis_keyword: only legacy templates (api = \"template\") have one".into());
            None
        }
        (Some(e), NotifyKind::Template) => {
            let known = e
                .strip_suffix(".DATA")
                .is_some_and(|k| r.data.contains_key(k));
            if !known {
                p.push(format!(
                    "emphasis_keyword: {e:?} is not `keywordN.DATA` of a keyword in data"
                ));
            }
            Some(e.clone())
        }
    };
    if !p.is_empty() {
        return Err(p);
    }
    Ok(Rule {
        name: r.name.clone(),
        action_types,
        recipients,
        api,
        template_id: r.template_id.clone(),
        page,
        emphasis_keyword,
        keywords,
    })
}

fn compile_keyword(api: NotifyKind, key: &str, value: &str) -> Result<Keyword, String> {
    let template = ValueTemplate::parse(value)?;
    if api == NotifyKind::Template {
        let numbered = key
            .strip_prefix("keyword")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !numbered {
            return Err("legacy template keywords are keyword1, keyword2, …".into());
        }
        return Ok(Keyword {
            key: key.to_string(),
            kind: None,
            template,
        });
    }
    let kind = KeywordType::of_key(key).ok_or_else(|| {
        "not a subscribe keyword (`<type><number>` with a type of the spec: thing, number, \
         letter, symbol, character_string, time, date, amount, phone_number, car_number, name, \
         phrase, enum)"
            .to_string()
    })?;
    match template.literal() {
        // A literal is sent as it is: it must be valid now.
        Some(lit) => values::check(kind, &lit).map_err(|e| format!("the literal {lit:?} {e}"))?,
        None => {
            let Some((fields, alone)) = allowed_fields(kind) else {
                return Err(format!(
                    "a {key} keyword takes a literal value only, no placeholders"
                ));
            };
            let names = |fs: &[Field]| {
                fs.iter()
                    .filter_map(|f| {
                        FIELDS
                            .iter()
                            .find(|(_, g)| g == f)
                            .map(|(n, _)| format!("{{{n}}}"))
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if alone {
                let Some((field, fallback)) = template.alone() else {
                    return Err(format!(
                        "must be exactly one placeholder of {} (no other text)",
                        names(fields)
                    ));
                };
                if !fields.contains(&field) {
                    return Err(format!("must be one of {}", names(fields)));
                }
                if let Some(fb) = fallback {
                    values::check(kind, fb).map_err(|e| format!("the fallback {fb:?} {e}"))?;
                }
            } else {
                if let Some(f) = template.fields().find(|f| !fields.contains(f)) {
                    let name = FIELDS.iter().find(|(_, g)| *g == f).map(|(n, _)| *n);
                    return Err(format!(
                        "{{{}}} cannot go into a {key} keyword (allowed: {})",
                        name.unwrap_or("?"),
                        names(fields)
                    ));
                }
                if kind == KeywordType::CharacterString {
                    let ascii = template.parts.iter().all(|part| match part {
                        Part::Literal(l) => l.chars().all(|c| c.is_ascii_graphic()),
                        Part::Field(_, fb) => fb
                            .as_deref()
                            .is_none_or(|f| f.chars().all(|c| c.is_ascii_graphic())),
                    });
                    if !ascii {
                        return Err(
                            "character_string text must be letters, digits and symbols".into()
                        );
                    }
                }
            }
        }
    }
    Ok(Keyword {
        key: key.to_string(),
        kind: Some(kind),
        template,
    })
}

/// A relative page of the mini program (`pages/waybill/detail?waybill_id={waybill_id}`):
/// path characters `[A-Za-z0-9_./-]`, no leading `/` or `..`; placeholders only in the query,
/// and only the URL-safe `{waybill_id}` and `{action_type}`.
fn check_page(page: &str) -> Result<ValueTemplate, String> {
    if page.len() > 512 {
        return Err("longer than 512 characters".into());
    }
    let (path, query) = page.split_once('?').unwrap_or((page, ""));
    let path_ok = !path.is_empty()
        && !path.starts_with('/')
        && !path
            .split('/')
            .any(|s| s.is_empty() || s == ".." || s == ".")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'.'));
    if !path_ok {
        return Err(format!(
            "{path:?} is not a relative page path like pages/waybill/detail"
        ));
    }
    if query.bytes().any(|b| !b.is_ascii_graphic() || b == b'#') {
        return Err("the query must be URL-safe text without spaces or #".into());
    }
    let t = ValueTemplate::parse(page)?;
    if let Some(f) = t
        .fields()
        .find(|f| !matches!(f, Field::WaybillId | Field::ActionType))
    {
        let name = FIELDS.iter().find(|(_, g)| *g == f).map(|(n, _)| *n);
        return Err(format!(
            "{{{}}} cannot go into a page; use {{waybill_id}} or {{action_type}}",
            name.unwrap_or("?")
        ));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let doc = include_str!("../../docs/NOTIFICATIONS.md");
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
}
