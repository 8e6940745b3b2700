//! Message templates of the emulated mini program, and the checks of a send's `data`
//! against its template: subscribe keywords typed by name with the limits of
//! [`super::values`] (47003), legacy `keywordN` free text.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::api::{errcode as ec, WxError};
use super::values::{self, KeywordType};

/// Which send API a template belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateKind {
    /// `subscribe/send`, keywords typed by name (`thing2`).
    #[default]
    Subscribe,
    /// `wxopen/template/send`, keywords `keyword1`.. with free text.
    Legacy,
}

/// A template the emulated mini program owns.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Template {
    pub kind: TemplateKind,
    pub title: String,
    /// When set, `data` must use exactly these keys (subscribe) or only these keys (legacy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keywords: Option<Vec<String>>,
    /// Allowed values of each `enum` keyword.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub enums: BTreeMap<String, Vec<String>>,
}

/// `{"value": "..."}` of one data entry.
fn entry_value<'d>(key: &str, entry: &'d Value) -> Result<&'d str, WxError> {
    entry.get("value").and_then(Value::as_str).ok_or_else(|| {
        WxError::with(
            ec::ARGUMENT_INVALID,
            format!("data.{key}.value must be a string"),
        )
    })
}

pub fn check_subscribe_data(t: &Template, data: &Map<String, Value>) -> Result<(), WxError> {
    if let Some(kws) = &t.keywords {
        if let Some(missing) = kws.iter().find(|k| !data.contains_key(k.as_str())) {
            return Err(WxError::with(
                ec::ARGUMENT_INVALID,
                format!("data.{missing} is required by the template"),
            ));
        }
    }
    for (key, entry) in data {
        let kind = KeywordType::of_key(key).ok_or_else(|| {
            WxError::with(
                ec::ARGUMENT_INVALID,
                format!("data.{key}: unknown keyword type"),
            )
        })?;
        if t.keywords
            .as_ref()
            .is_some_and(|kws| !kws.iter().any(|k| k == key))
        {
            return Err(WxError::with(
                ec::ARGUMENT_INVALID,
                format!("data.{key} is not a keyword of the template"),
            ));
        }
        let v = entry_value(key, entry)?;
        values::check(kind, v, t.enums.get(key).map(Vec::as_slice)).map_err(|why| {
            WxError::with(ec::ARGUMENT_INVALID, format!("data.{key}.value {why}"))
        })?;
    }
    Ok(())
}

pub fn check_legacy_data(t: &Template, data: &Map<String, Value>) -> Result<(), WxError> {
    for (key, entry) in data {
        if t.keywords
            .as_ref()
            .is_some_and(|kws| !kws.iter().any(|k| k == key))
        {
            return Err(WxError::with(
                ec::ARGUMENT_INVALID,
                format!("data.{key} is not a keyword of the template"),
            ));
        }
        entry_value(key, entry)?;
    }
    Ok(())
}
