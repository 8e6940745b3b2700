//! Leases as the workers hold them: a token unique to each claim (the fencing token every
//! write of the leaseholder is checked against), and a keep-alive that renews the lease while
//! the work under it runs.
//!
//! Why a token per claim and not per process: a lease that lapses (a stalled push, a paused
//! VM) may be claimed again by anyone, this very process included. With one name per process
//! the late holder's completion would still match; with one per claim it never does, and the
//! store refuses it ([`crate::store::StoreError::Fenced`]).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};

use crate::store::StoreError;

/// Hands out claim tokens: `<instance>#<n>`, `n` counting up from 1 in this process.
#[derive(Debug)]
pub struct ClaimTokens {
    instance: String,
    next: AtomicU64,
}

impl ClaimTokens {
    pub fn new(instance: &str) -> ClaimTokens {
        ClaimTokens {
            instance: instance.to_string(),
            next: AtomicU64::new(1),
        }
    }

    /// A token no other claim of any instance has had.
    pub fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}#{n}", self.instance)
    }

    /// The instance part, for logs.
    pub fn instance(&self) -> &str {
        &self.instance
    }
}

/// After a full loop gets a free slot, how long it waits for more before claiming.
const CLAIM_LINGER: Duration = Duration::from_millis(2);

/// How a worker's claim loop runs (from its section of the configuration).
#[derive(Debug, Clone, Copy)]
pub struct ClaimLoop {
    /// Work items (waybills, users) handled at once.
    pub concurrency: usize,
    /// Most items claimed at once.
    pub batch_size: i64,
    /// Pause when nothing was due.
    pub poll_interval: Duration,
}

/// The loop of a worker, until `shutdown` turns true: claim, under a fresh claim token, only
/// as many items as there are free slots (a claimed item never waits, so its lease never
/// runs down in a queue), and hand each to `process` on a task of its own; when nothing was
/// due, wait `poll_interval`. On shutdown it stops claiming and waits for the tasks in flight.
/// `claim(owner, limit)` leases items to `owner` (with whatever it loads for them);
/// `process(item, owner)` handles one and releases it.
pub async fn run_claims<T, C, CF, P, PF>(
    what: &'static str,
    tokens: &ClaimTokens,
    cfg: ClaimLoop,
    mut shutdown: watch::Receiver<bool>,
    claim: C,
    process: P,
) where
    C: Fn(String, i64) -> CF,
    CF: Future<Output = Result<Vec<T>, StoreError>>,
    P: Fn(T, String) -> PF,
    PF: Future<Output = ()> + Send + 'static,
{
    let concurrency = cfg.concurrency.max(1);
    let permits = Arc::new(Semaphore::new(concurrency));
    tracing::info!(worker = what, owner = %tokens.instance(), concurrency, "worker started");
    while !*shutdown.borrow() {
        let free = (permits.available_permits() as i64).min(cfg.batch_size);
        if free == 0 {
            tokio::select! {
                p = permits.clone().acquire_owned() => drop(p),
                _ = shutdown.changed() => {}
            }
            // Slots free one at a time under load; a claim is a write. Let a few more free
            // before claiming, so one claim serves several slots instead of each its own.
            if concurrency > 1 {
                tokio::time::sleep(CLAIM_LINGER).await;
            }
            continue;
        }
        let owner = tokens.next();
        let claimed = claim(owner.clone(), free).await.unwrap_or_else(|e| {
            tracing::warn!(worker = what, error = %e, "claiming work failed");
            Vec::new()
        });
        if claimed.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(cfg.poll_interval) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        for item in claimed {
            let permit = permits
                .clone()
                .try_acquire_owned()
                .expect("no more items are claimed than there are free permits");
            let work = process(item, owner.clone());
            tokio::spawn(async move {
                work.await;
                drop(permit);
            });
        }
    }
    // Drain: every permit back means every task in flight finished.
    let _ = permits.acquire_many(concurrency as u32).await;
    tracing::info!(worker = what, owner = %tokens.instance(), "worker stopped");
}

/// Runs `work` while renewing its lease every third of `lease` with `renew` (which answers
/// whether the lease is still held). A renewal that finds the lease lost is logged and stops
/// the renewals; the work goes on, and its fenced writes are refused. A renewal that fails
/// (the database is unreachable) is retried at the next tick.
pub async fn while_held<W, R, RF>(lease: Duration, renew: R, work: W) -> W::Output
where
    W: Future,
    R: Fn() -> RF,
    RF: Future<Output = Result<bool, StoreError>>,
{
    let every = (lease / 3).max(Duration::from_millis(10));
    let keep = async {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match renew().await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(
                        "lease lost while its work was running; its writes will be refused"
                    );
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "renewing a lease failed; retrying"),
            }
        }
        std::future::pending::<()>().await;
    };
    tokio::pin!(work);
    tokio::select! {
        out = &mut work => out,
        () = keep => unreachable!("the keep-alive never finishes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn claim_tokens_are_unique_in_a_process() {
        let t = ClaimTokens::new("host-1-abcd");
        let (a, b) = (t.next(), t.next());
        assert_ne!(a, b);
        assert!(a.starts_with("host-1-abcd#"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_lease_is_renewed_while_the_work_runs_and_not_after() {
        let renewals = Arc::new(AtomicUsize::new(0));
        let r = renewals.clone();
        let out = while_held(
            Duration::from_secs(30),
            move || {
                let r = r.clone();
                async move {
                    r.fetch_add(1, Ordering::SeqCst);
                    Ok(true)
                }
            },
            async {
                tokio::time::sleep(Duration::from_secs(65)).await;
                7
            },
        )
        .await;
        assert_eq!(out, 7);
        // Renewed at 10 s, 20 s, … 60 s: six times in 65 s.
        assert_eq!(renewals.load(Ordering::SeqCst), 6);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(renewals.load(Ordering::SeqCst), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_lease_stops_the_renewals_but_not_the_work() {
        let renewals = Arc::new(AtomicUsize::new(0));
        let r = renewals.clone();
        let out = while_held(
            Duration::from_secs(3),
            move || {
                let r = r.clone();
                async move {
                    r.fetch_add(1, Ordering::SeqCst);
                    Ok(false)
                }
            },
            async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "done"
            },
        )
        .await;
        assert_eq!(out, "done");
        assert_eq!(renewals.load(Ordering::SeqCst), 1);
    }
}
