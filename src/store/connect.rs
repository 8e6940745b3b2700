//! Opening a [`Store`]: URL → backend, pool options, SQLite file and pragmas.
//!
//! The URL is never logged nor echoed in an error: it may hold a password.

use std::path::Path;
use std::sync::Once;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, Connection, Executor};

use super::section::{DatabaseSettings, Synchronous};
use super::{Backend, Store, StoreError};

/// Default pool sizes. SQLite has one writer at a time, so more connections only help
/// concurrent readers; PostgreSQL gets enough for the HTTP workers and the outbox.
const SQLITE_MAX_CONNECTIONS: u32 = 8;
const POSTGRES_MAX_CONNECTIONS: u32 = 16;

/// Run on every new SQLite connection. WAL lets readers proceed during a write;
/// busy_timeout makes a writer wait for the lock instead of failing; SQLite leaves foreign
/// keys off unless asked, per connection. `synchronous` follows the setting
/// ([`Synchronous`]): FULL fsyncs every commit, so a write is on disk before its caller is
/// answered.
fn sqlite_pragmas(synchronous: Synchronous) -> &'static str {
    match synchronous {
        Synchronous::Full => {
            "PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; \
             PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
        }
        Synchronous::Normal => {
            "PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; \
             PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
        }
    }
}

static INSTALL_DRIVERS: Once = Once::new();

impl Backend {
    /// The backend a database URL names: `sqlite:…`, `postgres://…` or `postgresql://…`.
    pub fn from_url(url: &str) -> Result<Backend, StoreError> {
        let scheme = url.split_once(':').map(|(scheme, _)| scheme);
        match scheme {
            Some("sqlite") => Ok(Backend::Sqlite),
            Some("postgres" | "postgresql") => Ok(Backend::Postgres),
            Some(other) => Err(StoreError::UnsupportedUrl(format!("{other}:…"))),
            None => Err(StoreError::UnsupportedUrl("(no scheme)".to_owned())),
        }
    }
}

impl Store {
    /// Connects with the default pool size (SQLite 8, PostgreSQL 16).
    ///
    /// For SQLite, a missing file and its parent directories are created. Does not migrate:
    /// call [`Store::migrate`].
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let max_connections = match Backend::from_url(url)? {
            Backend::Sqlite => SQLITE_MAX_CONNECTIONS,
            Backend::Postgres => POSTGRES_MAX_CONNECTIONS,
        };
        Store::connect_with(url, max_connections).await
    }

    /// Connects with at most `max_connections` pooled connections. Opens one connection
    /// before returning, so a wrong URL or an unreachable server fails here.
    pub async fn connect_with(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        Store::connect_as(url, max_connections, Synchronous::Full).await
    }

    /// Connects as `[database]` says: its URL, pool size (0 = the backend's default) and
    /// SQLite's `synchronous`.
    pub async fn open(settings: &DatabaseSettings) -> Result<Store, StoreError> {
        let max_connections = match (settings.max_connections, Backend::from_url(&settings.url)?) {
            (0, Backend::Sqlite) => SQLITE_MAX_CONNECTIONS,
            (0, Backend::Postgres) => POSTGRES_MAX_CONNECTIONS,
            (n, _) => n,
        };
        Store::connect_as(&settings.url, max_connections, settings.synchronous).await
    }

    async fn connect_as(
        url: &str,
        max_connections: u32,
        synchronous: Synchronous,
    ) -> Result<Store, StoreError> {
        INSTALL_DRIVERS.call_once(sqlx::any::install_default_drivers);
        let backend = Backend::from_url(url)?;
        let max_connections = max_connections.max(1);
        let (pool, writer) = match backend {
            Backend::Sqlite => connect_sqlite(url, max_connections, synchronous).await?,
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(max_connections)
                    .connect(url)
                    .await?;
                (pool.clone(), pool)
            }
        };
        match backend {
            Backend::Sqlite => tracing::info!(
                ?backend,
                max_connections,
                synchronous = synchronous.as_str(),
                "database pool ready"
            ),
            Backend::Postgres => tracing::info!(?backend, max_connections, "database pool ready"),
        }
        Store::assemble(pool, writer, backend)
    }
}

/// SQLite's pools: readers (`max_connections`) and the one writer connection. SQLite lets
/// one connection write at a time; writers of one process queue for that connection in
/// order instead of polling the file lock in SQLite's sleeping busy handler. Other
/// processes on the same file (the CLI) still meet the busy handler.
async fn connect_sqlite(
    url: &str,
    max_connections: u32,
    synchronous: Synchronous,
) -> Result<(sqlx::AnyPool, sqlx::AnyPool), StoreError> {
    let target = SqliteTarget::parse(url);
    let pragmas = sqlite_pragmas(synchronous);
    // An embedded database has no connection to lose: no ping before every acquire (a
    // round trip to the connection's thread each time).
    let options = AnyPoolOptions::new()
        .test_before_acquire(false)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                conn.execute(pragmas).await?;
                Ok(())
            })
        });
    match target {
        SqliteTarget::Memory => {
            // Each connection to `:memory:` is its own database: keep exactly one, forever.
            let pool = options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect(url)
                .await?;
            Ok((pool.clone(), pool))
        }
        SqliteTarget::File { path, has_mode } => {
            if let Some(parent) = Path::new(path).parent() {
                if !parent.as_os_str().is_empty() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(sqlx::Error::Io)?;
                }
            }
            let url = if has_mode {
                url.to_owned()
            } else {
                let separator = if url.contains('?') { '&' } else { '?' };
                format!("{url}{separator}mode=rwc")
            };
            // Switching to WAL needs an exclusive lock that busy_timeout does not wait for,
            // so do it once here, before the pool opens connections concurrently; the
            // mode is stored in the file, and the pragma in `after_connect` is then a no-op.
            let mut conn = AnyConnection::connect(&url).await?;
            conn.execute("PRAGMA journal_mode = WAL").await?;
            conn.close().await?;
            let writer = options
                .clone()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .connect(&url)
                .await?;
            let pool = options
                .max_connections(max_connections)
                .connect(&url)
                .await?;
            Ok((pool, writer))
        }
    }
}

/// What a `sqlite:` URL points at: the one reading of such a URL (the store opens it, the
/// configuration puts generated keys beside its file).
#[derive(Debug, PartialEq, Eq)]
pub enum SqliteTarget<'a> {
    Memory,
    /// `has_mode`: the URL already says how to open the file (`mode=ro|rw|rwc`).
    File {
        path: &'a str,
        has_mode: bool,
    },
}

impl<'a> SqliteTarget<'a> {
    /// `None` unless `url` is a `sqlite:` URL.
    pub fn of(url: &'a str) -> Option<SqliteTarget<'a>> {
        (url.starts_with("sqlite:")).then(|| SqliteTarget::parse(url))
    }

    fn parse(url: &'a str) -> SqliteTarget<'a> {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mode = query.split('&').find_map(|pair| pair.strip_prefix("mode="));
        if path == ":memory:" || mode == Some("memory") {
            SqliteTarget::Memory
        } else {
            SqliteTarget::File {
                path,
                has_mode: mode.is_some(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_chosen_by_scheme() {
        assert_eq!(
            Backend::from_url("sqlite://data/x.db").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("sqlite::memory:").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("postgres://u:p@h/db").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("postgresql://h/db").ok(),
            Some(Backend::Postgres)
        );
    }

    #[test]
    fn an_unsupported_url_error_names_the_scheme_only() {
        let err = Backend::from_url("mysql://root:hunter2@db/x").unwrap_err();
        let shown = err.to_string();
        assert_eq!(shown, "unsupported database url: mysql:…");
    }

    #[test]
    fn sqlite_urls_are_parsed_into_targets() {
        assert_eq!(SqliteTarget::parse("sqlite::memory:"), SqliteTarget::Memory);
        assert_eq!(
            SqliteTarget::parse("sqlite://x.db?mode=memory"),
            SqliteTarget::Memory
        );
        assert_eq!(
            SqliteTarget::parse("sqlite://data/wx.db"),
            SqliteTarget::File {
                path: "data/wx.db",
                has_mode: false
            }
        );
        assert_eq!(
            SqliteTarget::parse("sqlite:///var/lib/wx.db?mode=ro"),
            SqliteTarget::File {
                path: "/var/lib/wx.db",
                has_mode: true
            }
        );
        assert_eq!(
            SqliteTarget::parse("sqlite:wx.db"),
            SqliteTarget::File {
                path: "wx.db",
                has_mode: false
            }
        );
    }
}
