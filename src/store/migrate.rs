//! Schema migrations and the readiness check.
//!
//! Both directories hold the same schema in each dialect, with the same version numbers;
//! they are embedded at compile time, so the binary carries its own schema.

use std::collections::HashMap;

use sqlx::migrate::Migrator;

use super::{Backend, Store, StoreError};

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

impl Store {
    fn migrator(&self) -> &'static Migrator {
        match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        }
    }

    /// Applies the embedded migrations not yet applied. Harmless to repeat; on PostgreSQL
    /// concurrent callers (several nodes starting at once) serialise on an advisory lock.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrator().run(&self.writer).await?;
        tracing::info!(backend = ?self.backend, "database migrations applied");
        Ok(())
    }

    /// Ready = the database answers and every embedded migration is applied, successfully
    /// and with the same checksum ([`StoreError::NotMigrated`] otherwise).
    /// A store whose writer has stopped is not ready ([`StoreError::WriterStopped`]): it
    /// would answer reads and refuse every write.
    pub async fn check_ready(&self) -> Result<(), StoreError> {
        if self.settler.stopped() {
            return Err(StoreError::WriterStopped);
        }
        sqlx::query("SELECT 1").execute(&self.pool).await?;

        let table_exists_sql = match self.backend {
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master \
                 WHERE type = 'table' AND name = '_sqlx_migrations'"
            }
            // to_regclass resolves through search_path, as the migrator's unqualified name does.
            Backend::Postgres => {
                "SELECT CASE WHEN to_regclass('_sqlx_migrations') IS NULL THEN 0 ELSE 1 END"
            }
        };
        let table_exists: i64 = sqlx::query_scalar(table_exists_sql)
            .fetch_one(&self.pool)
            .await?;
        if table_exists == 0 {
            return Err(StoreError::NotMigrated);
        }

        let applied: HashMap<i64, Vec<u8>> = sqlx::query_as::<_, (i64, Vec<u8>)>(
            "SELECT version, checksum FROM _sqlx_migrations WHERE success",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .collect();
        let all_applied = self
            .migrator()
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .all(|m| {
                applied
                    .get(&m.version)
                    .is_some_and(|checksum| checksum[..] == m.checksum[..])
            });
        if all_applied {
            Ok(())
        } else {
            Err(StoreError::NotMigrated)
        }
    }
}
