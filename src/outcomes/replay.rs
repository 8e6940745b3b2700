//! `wxexpress outcomes replay`: the items decided in a time range, sent again to the webhook
//! with the same item ids and new `webhook-id`s (a replay is a new message, not a retry).

use crate::clock::now_ms;
use crate::outbox::policy::Schedule;
use crate::store::{NewDelivery, Outcome, OutcomeFilter, Store, StoreError};

use super::section::OutcomesSettings;
use super::webhook::{delivery_of, WebhookWorker};

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

/// What `wxexpress outcomes replay` was asked.
pub struct ReplayArgs<'a> {
    pub since: &'a str,
    pub until: Option<&'a str>,
    pub outcome: Option<&'a str>,
}

/// A time on the command line: Unix seconds or RFC 3339; Unix ms.
pub fn cli_time(flag: &str, v: &str) -> Result<i64, String> {
    if let Ok(secs) = v.trim().parse::<i64>() {
        return Ok(secs.saturating_mul(1000));
    }
    chrono::DateTime::parse_from_rfc3339(v.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            format!(
                "{flag}: {v:?} is not Unix seconds or an RFC 3339 time (2026-12-07T08:00:00+08:00)"
            )
        })
}

/// The replay: queues the range's items as new deliveries (progress on stderr), then sends
/// what is due; returns the summary line. `Err` is one line for the person at the terminal.
pub async fn run(
    store: Store,
    settings: &OutcomesSettings,
    schedule: Schedule,
    owner: &str,
    args: ReplayArgs<'_>,
) -> Result<String, String> {
    if settings.webhook_url.is_empty() {
        return Err("outcomes.webhook_url: is not set; there is no webhook to replay to (the feed, GET /v1/outcomes, holds every item)".into());
    }
    let since = cli_time("--since", args.since)?;
    let until = match args.until {
        Some(u) => cli_time("--until", u)?,
        None => now_ms() + 1,
    };
    if until <= since {
        return Err("--until: must be after --since".into());
    }
    let outcomes = match args.outcome {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|s| {
                Outcome::parse(s.trim()).ok_or_else(|| {
                    format!(
                        "--outcome: {s:?} is not one of delivered, unbound, dead, coalesced, stale"
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let filter = OutcomeFilter {
        outcomes,
        kind: None,
    };
    let store_error = |e: StoreError| format!("database: {e}");
    let queued = queue(&store, since, until, &filter, settings.batch_max, |p| {
        eprint!("\rqueued {} items in {} deliveries", p.items, p.deliveries);
    })
    .await
    .map_err(store_error)?;
    eprintln!();
    let worker = WebhookWorker::new(store, settings.clone(), schedule, owner);
    let sent = worker.drain().await.map_err(store_error)?;
    Ok(format!(
        "replayed {} items in {} deliveries (new webhook-ids); {sent} requests answered 2xx, the rest stay queued for the gateway's retries",
        queued.items, queued.deliveries
    ))
}

#[cfg(test)]
mod tests {
    use super::cli_time;

    #[test]
    fn times_are_unix_seconds_or_rfc_3339() {
        assert_eq!(cli_time("--since", "1700000000"), Ok(1_700_000_000_000));
        assert_eq!(
            cli_time("--since", "2023-11-15T06:13:20+08:00"),
            Ok(1_700_000_000_000)
        );
        assert!(cli_time("--since", "yesterday")
            .unwrap_err()
            .starts_with("--since: "));
    }
}
