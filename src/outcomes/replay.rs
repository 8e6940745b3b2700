//! `wxexpress outcomes replay`: the items decided in a time range, sent again to the webhook
//! with the same item ids and new `webhook-id`s (a replay is a new message, not a retry).

use crate::clock::now_ms;
use crate::store::{NewDelivery, OutcomeFilter, Store, StoreError};

use super::webhook::delivery_of;

/// What a replay queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    pub items: usize,
    pub deliveries: usize,
}

/// Queues deliveries of every outcome decided in `[since, until)` (Unix ms) that `filter`
/// keeps, `batch_max` items per delivery; `progress` is told after each delivery. The
/// deliverer (a running gateway, or the command itself) sends them.
pub async fn queue(
    store: &Store,
    since: i64,
    until: i64,
    filter: &OutcomeFilter,
    batch_max: i64,
    mut progress: impl FnMut(Replayed),
) -> Result<Replayed, StoreError> {
    let mut done = Replayed::default();
    let mut after = 0;
    loop {
        let page = store
            .outcomes_decided_between(since, until, filter, after, batch_max)
            .await?;
        let Some(last) = page.last() else {
            return Ok(done);
        };
        after = last.outbox_id;
        let oldest = page.iter().map(|r| r.decided_at).min().unwrap_or(since);
        let delivery: NewDelivery = delivery_of(&page);
        store
            .queue_webhook_deliveries(vec![(delivery, page.len() as i64, oldest)], now_ms())
            .await?;
        done.items += page.len();
        done.deliveries += 1;
        progress(done);
        if (page.len() as i64) < batch_max {
            return Ok(done);
        }
    }
}
