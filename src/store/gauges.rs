//! What an operator watches, read when Prometheus scrapes: entries waiting or dead, and the
//! age of the oldest one waiting. Index reads only.

use super::states::{Column, EntryKind, EntryState};
use super::{Store, StoreError};

impl Store {
    /// Entries waiting or dead, counted by (kind, state): what an operator watches, read
    /// through the state index (delivered and skipped entries are the workers' counters).
    pub async fn outbox_gauges(&self) -> Result<Vec<(EntryKind, EntryState, i64)>, StoreError> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT kind, state, COUNT(*) FROM outbox WHERE state IN ($1, $2) \
             GROUP BY kind, state",
        )
        .bind(EntryState::Pending.as_str())
        .bind(EntryState::Dead.as_str())
        .fetch_all(&self.pool)
        .await?;
        // Every kind in both states, so a series drops to 0 instead of vanishing.
        let mut counts: Vec<(EntryKind, EntryState, i64)> = EntryKind::ALL
            .iter()
            .flat_map(|k| [(*k, EntryState::Pending, 0), (*k, EntryState::Dead, 0)])
            .collect();
        for (kind, state, n) in rows {
            let (kind, state) = (
                EntryKind::stored("kind", kind)?,
                EntryState::stored("state", state)?,
            );
            if let Some(c) = counts.iter_mut().find(|c| c.0 == kind && c.1 == state) {
                c.2 = n;
            }
        }
        Ok(counts)
    }

    /// `created_at` (Unix ms) of the oldest pending entry.
    pub async fn oldest_pending_created_at(&self) -> Result<Option<i64>, StoreError> {
        let oldest: Option<i64> =
            sqlx::query_scalar("SELECT MIN(created_at) FROM outbox WHERE state = $1")
                .bind(EntryState::Pending.as_str())
                .fetch_one(&self.pool)
                .await?;
        Ok(oldest)
    }
}
