//! The environment's overlay: `WXEXPRESS_<SECTION>__<KEY>=value` onto the file's table,
//! each value typed like the default's field (lists comma-separated).

use std::collections::BTreeMap;

use super::{ConfigErrors, RawSettings};

/// Overlay `WXEXPRESS_SECTION__KEY=value` onto the table, typed like the default's field.
pub(super) fn apply_env(
    table: &mut toml::Table,
    env: &BTreeMap<String, String>,
) -> Result<(), ConfigErrors> {
    let defaults = toml::Table::try_from(RawSettings::default()).expect("defaults serialise");
    let mut problems = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("WXEXPRESS_") else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            problems.push(format!("{name}: expected WXEXPRESS_<SECTION>__<KEY>"));
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let template = defaults.get(&section).and_then(|s| s.get(&key));
        let typed = match template {
            Some(toml::Value::Integer(_)) => match value.trim().parse::<i64>() {
                Ok(i) => toml::Value::Integer(i),
                Err(_) => {
                    problems.push(format!(
                        "{section}.{key} ({name}): expected an integer, got {value:?}"
                    ));
                    continue;
                }
            },
            Some(toml::Value::Float(_)) => match value.trim().parse::<f64>() {
                Ok(f) => toml::Value::Float(f),
                Err(_) => {
                    problems.push(format!(
                        "{section}.{key} ({name}): expected a number, got {value:?}"
                    ));
                    continue;
                }
            },
            Some(toml::Value::Boolean(_)) => match value.trim() {
                "true" | "1" => toml::Value::Boolean(true),
                "false" | "0" => toml::Value::Boolean(false),
                _ => {
                    problems.push(format!("{section}.{key} ({name}): expected true or false"));
                    continue;
                }
            },
            Some(toml::Value::Array(_)) => toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.into()))
                    .collect(),
            ),
            _ => toml::Value::String(value.clone()),
        };
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        match entry {
            toml::Value::Table(t) => {
                t.insert(key, typed);
            }
            _ => problems.push(format!("{section}: is not a table")),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(problems))
    }
}
