//! The push runs: everything pending pushed end to end by a node against its in-process
//! sandbox, and on PostgreSQL the same work by one node and by two sharing the outbox.

use std::time::{Duration, Instant};

use crate::app::Application;
use crate::store::EntryState;

use super::data::{receiver, waybill_id};
use super::ingest::INGEST_BATCH_LINES;
use super::{gateway_settings, push_node_settings, Row};

/// Everything the runs above left pending (one push per waybill: waiting events coalesce),
/// pushed end to end by a node with 256 pushes in flight against its in-process sandbox,
/// every receiver bound and the binding cache cold: each delivery is a `userquery`, a
/// `pathnotify` and WeChat's encrypted reverse query answered by the node's own callback.
pub(super) async fn pushes(
    db: &crate::store::section::DatabaseSettings,
    data_key: &str,
    waybills: usize,
) -> anyhow::Result<Row> {
    let app = Application::build(gateway_settings(db, data_key, true)?).await?;
    let sandbox = app
        .sandbox()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the push node runs its sandbox in-process"))?;
    for w in 0..waybills {
        sandbox.bind_phone(&receiver(w));
    }
    let store = app.store().clone();
    let before = delivered(&store).await?;
    let stop = app.shutdown_trigger();
    let started = Instant::now();
    let task = tokio::spawn(app.run_until_stopped());
    let secs = drained(&store, started).await?;
    let _ = stop.send(true);
    let _ = task.await;
    let pushed = delivered(&store).await? - before;
    let failed: i64 = store
        .outbox_counts()
        .await?
        .iter()
        .filter(|(s, _, _)| *s == EntryState::Dead)
        .map(|(_, _, n)| n)
        .sum();
    Ok(Row {
        path: "pushes end to end (sandbox)",
        rate: pushed as f64 / secs,
        p50_ms: 0.0,
        p99_ms: 0.0,
        errors: failed as usize,
        baseline: None,
        cpu_us: None,
    })
}

/// What a later push run does besides pushing.
pub(super) struct Again<'a> {
    /// Push nodes sharing the database.
    pub nodes: usize,
    /// Distinct per run: the new events' action_time.
    pub round: i64,
    /// `Some`: outcomes recorded and delivered to this receiver; `None`: not recorded (the
    /// baseline of what outcomes cost).
    pub outcomes: Option<&'a crate::outcomes::receiver::Receiver>,
    pub secret: &'a str,
    pub path: &'static str,
}

/// One new event on every waybill of the earlier runs, then pushed by `nodes` push nodes
/// sharing the database; the second pushes through the first's sandbox (WeChat is one) and
/// the first's callback answers every reverse query (one public address).
pub(super) async fn pushes_again(
    db: &crate::store::section::DatabaseSettings,
    data_key: &str,
    waybills: usize,
    again: Again<'_>,
) -> anyhow::Result<Row> {
    let nodes = again.nodes;
    let with_webhook = |mut s: crate::config::Settings| {
        if let Some(rx) = again.outcomes {
            s.outcomes.webhook_url = rx.url.clone();
            s.outcomes.webhook_secret = Some(crate::secret::Secret::new(again.secret));
            s.outcomes.poll_interval_ms = 20;
        }
        s
    };
    crate::store::record_outcomes_for_bench(again.outcomes.is_some());
    let first = Application::build(with_webhook(gateway_settings(db, data_key, true)?)).await?;
    let sandbox = first
        .sandbox()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the push node runs its sandbox in-process"))?;
    for w in 0..waybills {
        sandbox.bind_phone(&receiver(w));
    }
    let base = first
        .sandbox_addr()
        .map(|a| format!("http://{a}"))
        .ok_or_else(|| anyhow::anyhow!("the push node's sandbox has an address"))?;
    let mut apps = vec![first];
    for _ in 1..nodes {
        let settings = push_node_settings(db, data_key, true, Some(&base))?;
        apps.push(Application::build(with_webhook(settings)).await?);
    }
    let store = apps[0].store().clone();
    let privacy = crate::privacy::Privacy::from_base64(data_key)?;
    let (now, now_ms) = (chrono::Utc::now().timestamp(), crate::clock::now_ms());
    let payload = privacy.seal_json(&crate::domain::NodeText {
        action_msg: "快件已由 【晋江庄宅营业部】 派送".into(),
        ..Default::default()
    });
    let events: Vec<_> = (0..waybills)
        .flat_map(|w| [waybill_id(w), format!("ING{w:08}"), format!("RAW{w:08}")])
        .map(|id| {
            let event = crate::store::NewEvent {
                waybill_id: id,
                action_type: 300002,
                action_time: now - 600 + again.round,
                payload: payload.clone(),
                received_at: now_ms,
                carrier_ref: None,
            };
            (None, event)
        })
        .collect();
    for chunk in events.chunks(INGEST_BATCH_LINES) {
        store
            .record_events_batch(chunk, &crate::store::NotificationPlan::default())
            .await?;
    }
    let before = delivered(&store).await?;
    let cpu_before = super::process_cpu_secs();
    let started = Instant::now();
    let mut running = Vec::new();
    for app in apps {
        running.push((
            app.shutdown_trigger(),
            tokio::spawn(app.run_until_stopped()),
        ));
    }
    let secs = drained(&store, started).await?;
    // The webhook catches up before the next run (not in the rate: it is not a push's
    // latency; in the CPU figure).
    if let Some(rx) = again.outcomes {
        let total = store.count_outcomes().await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while (rx.item_count() as i64) < total && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The CPU counts the webhook's work to the end: it is part of what outcomes cost.
    let cpu = cpu_before
        .zip(super::process_cpu_secs())
        .map(|(a, b)| b - a);
    crate::store::record_outcomes_for_bench(true);
    // The second node first: the first's sandbox and callback serve it.
    for (stop, task) in running.into_iter().rev() {
        let _ = stop.send(true);
        let _ = task.await;
    }
    let pushed = delivered(&store).await? - before;
    Ok(Row {
        path: again.path,
        rate: pushed as f64 / secs,
        p50_ms: 0.0,
        p99_ms: 0.0,
        errors: 0,
        baseline: None,
        cpu_us: cpu.map(|c| c * 1e6 / pushed.max(1) as f64),
    })
}

pub(super) async fn delivered(store: &crate::store::Store) -> anyhow::Result<i64> {
    Ok(store
        .outbox_counts()
        .await?
        .iter()
        .filter(|(s, _, _)| *s == EntryState::Delivered)
        .map(|(_, _, n)| n)
        .sum())
}

/// Seconds from `started` until no entry is pending (at most 10 minutes).
async fn drained(store: &crate::store::Store, started: Instant) -> anyhow::Result<f64> {
    let deadline = started + Duration::from_secs(600);
    while store.any_pending().await? {
        anyhow::ensure!(
            Instant::now() < deadline,
            "pushes did not finish in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(started.elapsed().as_secs_f64())
}
