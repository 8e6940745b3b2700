//! The `cells` table: the landing-page cells an operator set through `PUT /v1/cells`.
//!
//! The list is replaced as a whole, in one transaction, together with the `meta` row
//! `cells_updated_at`; that row is what tells "never set" (the config file's cells apply)
//! from "set to an empty list" (no cells at all). Rows arrive validated: the store checks
//! nothing but the unique key.

use super::{Store, StoreError};

/// The `meta` key whose presence means the database copy of the cells is in force.
const UPDATED_AT_KEY: &str = "cells_updated_at";

/// One stored cell. `condition_json` is the cell's `when`, as JSON; `None` = always shown.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CellRecord {
    pub cell_key: String,
    pub name: String,
    pub link: String,
    pub condition_json: Option<String>,
}

/// The stored list and when it was last replaced (Unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellSet {
    pub cells: Vec<CellRecord>,
    pub updated_at: i64,
}

impl Store {
    /// The stored cells in display order, or `None` when no list was ever set (or it was
    /// cleared).
    pub async fn get_cells(&self) -> Result<Option<CellSet>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let updated_at: Option<String> =
            sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
                .bind(UPDATED_AT_KEY)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(updated_at) = updated_at else {
            tx.commit().await?;
            return Ok(None);
        };
        let cells = sqlx::query_as::<_, CellRecord>(
            "SELECT cell_key, name, link, condition_json FROM cells ORDER BY ordinal",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(CellSet {
            cells,
            // Written only by `replace_cells`, always a number.
            updated_at: updated_at.parse().unwrap_or_default(),
        }))
    }

    /// Replaces the whole list (which may be empty) in one transaction; from now on it is
    /// the list in force.
    pub async fn replace_cells(&self, cells: &[CellRecord], now: i64) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM cells").execute(&mut *tx).await?;
        for (ordinal, c) in cells.iter().enumerate() {
            sqlx::query(
                "INSERT INTO cells (ordinal, cell_key, name, link, condition_json) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(ordinal as i64)
            .bind(&c.cell_key)
            .bind(&c.name)
            .bind(&c.link)
            .bind(&c.condition_json)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(UPDATED_AT_KEY)
        .bind(now.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets the stored list, so the config file's cells apply again. True if one was set.
    pub async fn clear_cells(&self) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM cells").execute(&mut *tx).await?;
        let removed = sqlx::query("DELETE FROM meta WHERE key = $1")
            .bind(UPDATED_AT_KEY)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(removed > 0)
    }
}
