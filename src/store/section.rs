//! `[database]`, as the file and the environment say it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    /// SQLite only: when a commit is on disk (PostgreSQL has its own `synchronous_commit`).
    pub synchronous: Synchronous,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: "sqlite://data/wxexpress.db".into(),
            max_connections: 0,
            synchronous: Synchronous::Full,
        }
    }
}

/// SQLite's `PRAGMA synchronous` in WAL mode.
///
/// - `full`: every commit is fsynced before it returns, so an answered write survives a
///   power loss or an OS crash. Group commit (`group.rs`) makes this one fsync per group,
///   not per write.
/// - `normal`: the WAL is fsynced only at checkpoints. A crash of the gateway loses nothing,
///   but a power loss or an OS crash can lose the last commits, which were already answered
///   (a 202 for an event that is then gone).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    #[default]
    Full,
    Normal,
}

impl Synchronous {
    pub fn as_str(self) -> &'static str {
        match self {
            Synchronous::Full => "full",
            Synchronous::Normal => "normal",
        }
    }
}
