//! The environment's layer: `WXEXPRESS_<SECTION>__<KEY>=value` as a figment provider, merged
//! over the file. Each value is typed like the default's field (lists comma-separated), not
//! guessed from its text: a numeric merchant id or an all-digit token stays a string.

use std::collections::BTreeMap;

use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

use super::{ConfigErrors, RawSettings};

/// The `WXEXPRESS_*` variables, typed and nested by section.
pub(super) struct EnvLayer {
    sections: BTreeMap<String, Dict>,
}

impl EnvLayer {
    /// Reads the `WXEXPRESS_*` entries of `env`; every variable that cannot be read is a
    /// problem of its own.
    pub(super) fn new(env: &BTreeMap<String, String>) -> Result<EnvLayer, ConfigErrors> {
        let defaults = toml::Table::try_from(RawSettings::default()).expect("defaults serialise");
        let mut problems = Vec::new();
        let mut sections: BTreeMap<String, Dict> = BTreeMap::new();
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
            match typed(template, value) {
                Ok(v) => {
                    sections.entry(section).or_default().insert(key, v);
                }
                Err(expected) => problems.push(format!(
                    "{section}.{key} ({name}): expected {expected}, got {value:?}"
                )),
            }
        }
        if problems.is_empty() {
            Ok(EnvLayer { sections })
        } else {
            Err(ConfigErrors(problems))
        }
    }
}

/// `value` typed like `template` (the default's value of the same key); `Err` names the
/// type expected.
fn typed(template: Option<&toml::Value>, value: &str) -> Result<Value, &'static str> {
    Ok(match template {
        Some(toml::Value::Integer(_)) => value
            .trim()
            .parse::<i64>()
            .map_err(|_| "an integer")?
            .into(),
        Some(toml::Value::Float(_)) => value.trim().parse::<f64>().map_err(|_| "a number")?.into(),
        Some(toml::Value::Boolean(_)) => match value.trim() {
            "true" | "1" => true.into(),
            "false" | "0" => false.into(),
            _ => return Err("true or false"),
        },
        Some(toml::Value::Array(_)) => value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect::<Vec<String>>()
            .into(),
        _ => value.to_string().into(),
    })
}

impl Provider for EnvLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named("WXEXPRESS_* environment variables")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let dict: Dict = self
            .sections
            .iter()
            .map(|(section, keys)| (section.clone(), Value::from(keys.clone())))
            .collect();
        Ok(Profile::Default.collect(dict))
    }
}
