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

mod compile;
mod message;
mod template;

pub use message::{default_status_phrase, Message, MessageContext};
pub use template::{Field, ValueTemplate};

use compile::compile_rule;
use message::status_phrase;

use super::section::NotificationsSection;
use super::values::{self, KeywordType};
use crate::domain::ActionType;
use crate::store::{NotificationIntent, NotificationPlan, NotifyKind, Role};

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

/// Checked `[notifications]`: rules by name, the plan the event path enqueues by, and the
/// worker's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    rules: Vec<Rule>,
    plan: NotificationPlan,
    status_phrases: BTreeMap<i64, String>,
    sandbox_example: bool,
    pub miniprogram_state: String,
    pub lang: String,
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
            miniprogram_state: s.miniprogram_state.clone(),
            lang: s.lang.clone(),
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
            let raw = k.template.render(|f| ctx.value(f, &self.status_phrases));
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
            .map(|p| p.render(|f| ctx.value(f, &self.status_phrases)));
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

#[cfg(test)]
mod tests;
