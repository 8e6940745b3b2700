//! A `[[notifications.rules]]` entry checked and compiled: its recipients, API, page and every
//! keyword against its type, each problem reported on its own line.

use super::template::{allowed_fields, Field, Part, ValueTemplate, FIELDS};
use super::{Keyword, Rule};
use crate::domain::ActionType;
use crate::notify::section::NotificationRuleSection;
use crate::notify::values::{self, KeywordType};
use crate::store::{NotifyKind, Role};

pub(super) fn compile_rule(r: &NotificationRuleSection) -> Result<Rule, Vec<String>> {
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
