//! Logging: `tracing`, with `[log]` choosing the format (`text` for people, `json` for a log
//! store: one object per line with `timestamp`, `level`, `target`, `message` and the event's
//! fields) and the level (`RUST_LOG`, when set, wins). Fields are structured values. Phones,
//! tokens, keys and decrypted bodies are never logged anywhere in the crate, whatever the
//! format: masking happens where a value is logged, not here.

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// `[log]`, as the file and the environment say it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: String,
    /// A level (`info`) or `tracing` filter directives (`info,wxexpress::outbox=debug`).
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// Libraries that are loud at `info`: their warnings still show.
const QUIET: &str = "sqlx=warn,actix_server=warn";

impl LogSettings {
    /// The filter `level` stands for, or why it is not one.
    pub fn filter(&self) -> Result<String, String> {
        // `tracing` reads a bare word as a target (everything of it); here a bare word must
        // be a level, so that a typo (`inof`) is an error rather than silence.
        const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
        let level_of = |d: &str| {
            d.rsplit_once('=')
                .map_or(d, |(_, l)| l)
                .trim()
                .to_ascii_lowercase()
        };
        if let Some(bad) = self
            .level
            .split(',')
            .find(|d| !LEVELS.contains(&level_of(d).as_str()))
        {
            return Err(format!(
                "{:?} is not a level (trace, debug, info, warn, error, off) or TARGET=LEVEL",
                bad.trim()
            ));
        }
        let directives = format!("{},{QUIET}", self.level.trim());
        EnvFilter::try_new(&directives)
            .map(|_| directives)
            .map_err(|e| format!("{:?} is not a level or filter ({e})", self.level))
    }
}

/// Install the global subscriber once; later calls are ignored (tests call it repeatedly).
pub fn init() {
    init_with(&format!("info,{QUIET}"));
}

/// Install as `[log]` says (checked by the configuration).
pub fn init_from(log: &LogSettings) {
    let filter = log.filter().unwrap_or_else(|_| format!("info,{QUIET}"));
    install(
        &filter,
        LogFormat::parse(&log.format).unwrap_or(LogFormat::Text),
    );
}

/// Install text logs with this default filter (`RUST_LOG` still wins).
pub fn init_with(default_filter: &str) {
    install(default_filter, LogFormat::Text);
}

fn install(default_filter: &str, format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false)
            .try_init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(true)
            .with_env_filter(filter)
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_or_directives_make_a_filter_and_nonsense_does_not() {
        let mut log = LogSettings::default();
        assert_eq!(log.filter().unwrap(), format!("info,{QUIET}"));
        log.level = "info,wxexpress::outbox=debug".into();
        assert!(log.filter().is_ok());
        log.level = "loud".into();
        assert!(log.filter().unwrap_err().contains("\"loud\""));
        log.level = "wxexpress=verbose".into();
        assert!(log.filter().is_err());
        log.level = "WARN".into();
        assert!(log.filter().is_ok());
        assert_eq!(LogFormat::parse("json"), Some(LogFormat::Json));
        assert_eq!(LogFormat::parse("JSON"), None);
    }
}
