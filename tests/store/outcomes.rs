//! Outcomes: exactly one per settled entry, written with the settle; the feed and its
//! commit watermark; the webhook's durable deliveries.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use wxexpress::store::{
    Backend, Completion, DeadReason, DeliveryResult, FeedPosition, NewAttempt, NewDelivery,
    Outcome, OutcomeFilter, OutcomeKind, PushStep, PushWrites, SkipReason, Store,
};

use crate::outbox::entry_ids;
use crate::{event, migrated, new_event_id, waybill};

fn attempt(outbox_id: i64, errcode: i64) -> NewAttempt {
    NewAttempt {
        outbox_id,
        started_at: 1,
        duration_ms: 2,
        http_status: Some(200),
        errcode: Some(errcode),
        outcome: if errcode == 0 { "ok" } else { "permanent" }.into(),
        detail: format!("errcode {errcode}: masked 138****0000"),
        rid: Some(format!("rid-{outbox_id}")),
    }
}

/// Every page of the feed from the start, `limit` items a page, until `expect` items came
/// (or 20 s passed). On PostgreSQL an item shows once every transaction older than its own
/// has ended, and other tests' transactions on the same server count too: the feed may
/// lag a little behind the commits, never skip.
async fn read_all(store: &Store, filter: &OutcomeFilter, limit: i64, expect: usize) -> Vec<i64> {
    let mut after = FeedPosition::default();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let page = store.outcomes_page(after, limit, filter).await.unwrap();
        seen.extend(page.items.iter().map(|r| r.outbox_id));
        after = page.next;
        if !page.has_more && (seen.len() >= expect || std::time::Instant::now() > deadline) {
            return seen;
        }
        if !page.has_more {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

fn complete(
    waybill_id: &str,
    owner: &str,
    now: i64,
    skips: Vec<(Vec<i64>, SkipReason)>,
    outbox_id: i64,
    attempt: Option<NewAttempt>,
    completion: Completion,
) -> PushWrites {
    PushWrites {
        waybill_id: waybill_id.into(),
        owner: owner.into(),
        now,
        skips,
        binding: None,
        step: Some(PushStep::Complete {
            outbox_id,
            attempt,
            completion,
        }),
        release: true,
    }
}

pub async fn every_settled_entry_gets_exactly_one_outcome_from_the_settle_that_decided_it(
    store: Store,
) {
    let store = migrated(store).await;
    // SF1: three nodes; the newest is delivered, the middle one coalesced, the oldest stale.
    new_event_id(&store, Some(&waybill("SF1")), &event("SF1", 100001, 10)).await;
    new_event_id(&store, None, &event("SF1", 200001, 20)).await;
    new_event_id(&store, None, &event("SF1", 300002, 30)).await;
    // SF2: unbound; SF3: dead on a permanent error; SF4: dead at its deadline; SF5: retried.
    for w in ["SF2", "SF3", "SF4", "SF5"] {
        new_event_id(&store, Some(&waybill(w)), &event(w, 100001, 10)).await;
    }
    let claimed = store
        .claim_waybills("me", 50_000, 30_000, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 5);
    let sf1 = entry_ids(&store, "SF1").await;
    let [sf2, sf3, sf4, sf5] = [
        entry_ids(&store, "SF2").await[0],
        entry_ids(&store, "SF3").await[0],
        entry_ids(&store, "SF4").await[0],
        entry_ids(&store, "SF5").await[0],
    ];
    assert_eq!(
        store.count_outcomes().await.unwrap(),
        0,
        "pending: none yet"
    );

    let settles = vec![
        complete(
            "SF1",
            "me",
            51_000,
            vec![
                (vec![sf1[0]], SkipReason::Stale),
                (vec![sf1[1]], SkipReason::Coalesced),
            ],
            sf1[2],
            Some(attempt(sf1[2], 0)),
            Completion::Delivered,
        ),
        complete(
            "SF2",
            "me",
            51_000,
            vec![],
            sf2,
            None,
            Completion::Skipped {
                reason: SkipReason::Unbound,
            },
        ),
        complete(
            "SF3",
            "me",
            51_000,
            vec![],
            sf3,
            Some(attempt(sf3, 47001)),
            Completion::Dead {
                error: "errcode 47001".into(),
                reason: DeadReason::Refused,
            },
        ),
        complete(
            "SF4",
            "me",
            51_000,
            vec![],
            sf4,
            None,
            Completion::Dead {
                error: "deadline passed".into(),
                reason: DeadReason::Deadline,
            },
        ),
        complete(
            "SF5",
            "me",
            51_000,
            vec![],
            sf5,
            Some(attempt(sf5, -1)),
            Completion::Retry {
                next_attempt_at: 60_000,
                error: "system busy".into(),
            },
        ),
    ];
    // All at once, as a busy worker settles them (one group on SQLite).
    let results = futures_util::future::join_all(settles.into_iter().map(|w| {
        let store = store.clone();
        async move { store.settle_push(w).await }
    }))
    .await;
    for r in results {
        assert!(r.unwrap());
    }

    let of = |id: i64| {
        let store = store.clone();
        async move { store.outcome_of(id).await.unwrap() }
    };
    let delivered = of(sf1[2]).await.expect("delivered has an outcome");
    assert_eq!(delivered.kind, OutcomeKind::Push);
    assert_eq!(delivered.outcome, Outcome::Delivered);
    assert_eq!(delivered.reason_code, "delivered");
    assert_eq!(
        (
            delivered.waybill_id.as_str(),
            delivered.action_type,
            delivered.action_time
        ),
        ("SF1", 300002, 30)
    );
    assert_eq!(delivered.carrier_ref.as_deref(), Some("ref-SF1-30"));
    assert_eq!((delivered.errcode, delivered.attempts), (Some(0), 1));
    assert_eq!(
        delivered.rid.as_deref(),
        Some(format!("rid-{}", sf1[2]).as_str())
    );
    assert_eq!(delivered.decided_at, 51_000);
    for (id, outcome) in [(sf1[0], Outcome::Stale), (sf1[1], Outcome::Coalesced)] {
        let o = of(id).await.expect("a skipped node has an outcome");
        assert_eq!((o.outcome, o.attempts), (outcome, 0));
        assert_eq!(o.reason_code, outcome.as_str());
        assert!(!o.outcome.sms_fallback());
    }
    let unbound = of(sf2).await.unwrap();
    assert_eq!(
        (unbound.outcome, unbound.reason_code.as_str()),
        (Outcome::Unbound, "unbound")
    );
    assert!(unbound.outcome.sms_fallback());
    let refused = of(sf3).await.unwrap();
    assert_eq!(
        (refused.outcome, refused.reason_code.as_str()),
        (Outcome::Dead, "refused")
    );
    assert_eq!(refused.errcode, Some(47001));
    assert_eq!(
        refused.errmsg.as_deref(),
        Some("errcode 47001: masked 138****0000")
    );
    let deadline = of(sf4).await.unwrap();
    assert_eq!(
        (deadline.outcome, deadline.reason_code.as_str()),
        (Outcome::Dead, "deadline")
    );
    assert_eq!(of(sf5).await, None, "a retry decides nothing");
    assert_eq!(store.count_outcomes().await.unwrap(), 6);

    // The retried entry dies later: its outcome counts both tries.
    store
        .claim_waybills("me", 70_000, 30_000, 10)
        .await
        .unwrap();
    let dead = complete(
        "SF5",
        "me",
        71_000,
        vec![],
        sf5,
        Some(attempt(sf5, 47001)),
        Completion::Dead {
            error: "spent".into(),
            reason: DeadReason::RetriesSpent,
        },
    );
    assert!(store.settle_push(dead).await.unwrap());
    let spent = of(sf5).await.unwrap();
    assert_eq!(
        (spent.reason_code.as_str(), spent.attempts),
        ("retries_spent", 2)
    );

    // A redrive and a second settle of the same entry keep its one outcome.
    assert!(store.retry_entry(sf3, 80_000).await.unwrap());
    store
        .claim_waybills("me", 80_000, 30_000, 10)
        .await
        .unwrap();
    let again = complete(
        "SF3",
        "me",
        81_000,
        vec![],
        sf3,
        None,
        Completion::Delivered,
    );
    assert!(store.settle_push(again).await.unwrap());
    assert_eq!(
        of(sf3).await.unwrap(),
        refused,
        "the first outcome is final"
    );
    assert_eq!(store.count_outcomes().await.unwrap(), 7);
}

pub async fn a_refused_settle_and_a_refused_skip_record_no_outcome(store: Store) {
    let store = migrated(store).await;
    new_event_id(&store, Some(&waybill("SF1")), &event("SF1", 100001, 10)).await;
    new_event_id(&store, None, &event("SF1", 200001, 20)).await;
    let ids = entry_ids(&store, "SF1").await;
    store
        .claim_waybills("owner-a", 20_000, 30_000, 1)
        .await
        .unwrap();

    // Not the leaseholder: the completion and the skip it carries are refused.
    let late = complete(
        "SF1",
        "owner-b",
        2_000,
        vec![(vec![ids[0]], SkipReason::Stale)],
        ids[1],
        None,
        Completion::Delivered,
    );
    assert!(store.settle_push(late).await.is_err());
    assert_eq!(store.count_outcomes().await.unwrap(), 0);

    // The holder's own settle, whose skip is fine but whose entry is unknown: nothing of its
    // completion is recorded, its skip is.
    let unknown = complete(
        "SF1",
        "owner-a",
        3_000,
        vec![(vec![ids[0]], SkipReason::Stale)],
        ids[1] + 1_000,
        None,
        Completion::Delivered,
    );
    assert!(store.settle_push(unknown).await.is_err());
    let kept: Vec<i64> = read_all(&store, &OutcomeFilter::default(), 10, 1).await;
    assert_eq!(kept, vec![ids[0]]);
    assert_eq!(store.outcome_of(ids[1]).await.unwrap(), None);
}

pub async fn the_feed_pages_in_order_and_filters_by_outcome_and_kind(store: Store) {
    let store = migrated(store).await;
    let mut expected = Vec::new();
    for i in 0..12 {
        let w = format!("W{i:02}");
        new_event_id(&store, Some(&waybill(&w)), &event(&w, 100001, 10)).await;
        store.claim_waybills("me", 20_000, 30_000, 1).await.unwrap();
        let id = entry_ids(&store, &w).await[0];
        let completion = if i % 3 == 0 {
            Completion::Skipped {
                reason: SkipReason::Unbound,
            }
        } else {
            Completion::Delivered
        };
        let writes = complete(&w, "me", 2_000 + i, vec![], id, None, completion);
        assert!(store.settle_push(writes).await.unwrap());
        expected.push(id);
    }
    // Pages of 5: 5, 5, 2, in the order they were settled.
    assert_eq!(
        read_all(&store, &OutcomeFilter::default(), 5, 12).await,
        expected
    );
    let first = store
        .outcomes_page(FeedPosition::default(), 5, &OutcomeFilter::default())
        .await
        .unwrap();
    assert!(first.has_more);
    let rest = store
        .outcomes_page(first.next, 100, &OutcomeFilter::default())
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 7);
    assert!(!rest.has_more);
    let empty = store
        .outcomes_page(rest.next, 100, &OutcomeFilter::default())
        .await
        .unwrap();
    assert!(empty.items.is_empty());
    assert_eq!(empty.next, rest.next, "an empty page hands the cursor back");

    let sms = OutcomeFilter {
        outcomes: vec![Outcome::Unbound, Outcome::Dead],
        kind: None,
    };
    let unbound: Vec<i64> = expected.iter().step_by(3).copied().collect();
    assert_eq!(read_all(&store, &sms, 2, unbound.len()).await, unbound);
    let notifications = OutcomeFilter {
        outcomes: vec![],
        kind: Some(OutcomeKind::Notification),
    };
    assert!(read_all(&store, &notifications, 10, 0).await.is_empty());
    let pushes = OutcomeFilter {
        outcomes: vec![],
        kind: Some(OutcomeKind::Push),
    };
    assert_eq!(read_all(&store, &pushes, 100, 12).await, expected);
}

/// The feed's promise: writers commit concurrently (on PostgreSQL, one of them holds its
/// transaction open after taking an earlier sequence value), a reader pages all the while,
/// and in the end it has seen every item exactly once.
pub async fn concurrent_writers_and_a_paging_reader_end_with_no_gap_and_no_duplicate(store: Store) {
    let store = migrated(store).await;
    const WRITERS: usize = 6;
    const PER_WRITER: usize = 25;
    let mut all = BTreeSet::new();
    for w in 0..WRITERS {
        for i in 0..PER_WRITER {
            let id = format!("G{w}_{i:02}");
            new_event_id(&store, Some(&waybill(&id)), &event(&id, 100001, 10)).await;
        }
    }
    let claimed = store
        .claim_waybills("me", 20_000, 600_000, (WRITERS * PER_WRITER) as i64)
        .await
        .unwrap();
    assert_eq!(claimed.len(), WRITERS * PER_WRITER);

    let done = Arc::new(AtomicBool::new(false));
    let expect = WRITERS * PER_WRITER + usize::from(store.backend() == Backend::Postgres);
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let mut after = FeedPosition::default();
            let mut seen = Vec::new();
            let mut quiet_since: Option<std::time::Instant> = None;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let page = store
                    .outcomes_page(after, 7, &OutcomeFilter::default())
                    .await
                    .unwrap();
                assert!(page.next >= after, "the cursor never moves back");
                seen.extend(page.items.iter().map(|r| r.outbox_id));
                after = page.next;
                // Done once every item came, or (a gap) nothing more came long after the
                // writers finished.
                if finished && !page.has_more {
                    if seen.len() >= expect {
                        return seen;
                    }
                    if quiet_since
                        .get_or_insert_with(std::time::Instant::now)
                        .elapsed()
                        > std::time::Duration::from_secs(20)
                    {
                        return seen;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                tokio::task::yield_now().await;
            }
        })
    };

    // On PostgreSQL: a transaction that takes a sequence value early and commits late.
    let slow = if store.backend() == Backend::Postgres {
        let pool = store.pool().clone();
        Some(tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query(
                "INSERT INTO outcomes (outbox_id, kind, waybill_id, action_type, action_time, \
                                       outcome, reason_code, attempts, decided_at) \
                 VALUES (999999999, 'push', 'SLOW', 100001, 1, 'delivered', 'delivered', 1, 1)",
            )
            .execute(&mut *tx)
            .await
            .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
            tx.commit().await.unwrap();
        }))
    } else {
        None
    };
    if slow.is_some() {
        all.insert(999_999_999);
    }

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let mut ids = Vec::new();
        for i in 0..PER_WRITER {
            let waybill_id = format!("G{w}_{i:02}");
            let id = entry_ids(&store, &waybill_id).await[0];
            all.insert(id);
            ids.push((waybill_id, id));
        }
        writers.push(tokio::spawn(async move {
            for (waybill_id, id) in ids {
                let writes = complete(
                    &waybill_id,
                    "me",
                    2_000,
                    vec![],
                    id,
                    None,
                    Completion::Delivered,
                );
                assert!(store.settle_push(writes).await.unwrap());
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    if let Some(slow) = slow {
        slow.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.unwrap();
    let distinct: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), seen.len(), "no item twice");
    let seen: BTreeSet<i64> = seen.into_iter().collect();
    assert_eq!(seen, all, "no item skipped");
}

pub async fn webhook_deliveries_hold_every_item_once_and_keep_their_id_across_tries(store: Store) {
    let store = migrated(store).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let w = format!("H{i}");
        new_event_id(&store, Some(&waybill(&w)), &event(&w, 100001, 10)).await;
        store.claim_waybills("me", 20_000, 30_000, 1).await.unwrap();
        let id = entry_ids(&store, &w).await[0];
        let writes = complete(&w, "me", 2_000 + i, vec![], id, None, Completion::Delivered);
        assert!(store.settle_push(writes).await.unwrap());
        ids.push(id);
    }
    let body_of = |records: &[wxexpress::store::OutcomeRecord]| NewDelivery {
        webhook_id: format!("msg_{}", records[0].outbox_id),
        body: records
            .iter()
            .map(|r| r.outbox_id.to_string())
            .collect::<Vec<_>>()
            .join(","),
    };
    let mut cut = Vec::new();
    loop {
        let n = store.cut_webhook_delivery(3, 5_000, body_of).await.unwrap();
        if n == 0 {
            break;
        }
        cut.push(n);
    }
    assert_eq!(cut, vec![3, 3, 1]);
    let rows = store.list_webhook_deliveries().await.unwrap();
    let carried: Vec<i64> = rows
        .iter()
        .flat_map(|r| r.body.split(',').map(|s| s.parse::<i64>().unwrap()))
        .collect();
    assert_eq!(
        carried, ids,
        "every item in exactly one delivery, in feed order"
    );

    // Claimed by one owner, invisible to another while leased.
    let a = store
        .claim_webhook_deliveries("a", 5_000, 65_000, 10)
        .await
        .unwrap();
    assert_eq!(a.len(), 3);
    assert!(store
        .claim_webhook_deliveries("b", 5_000, 65_000, 10)
        .await
        .unwrap()
        .is_empty());
    // A try that failed: tried again later, with the same webhook id.
    let retry = DeliveryResult::Retry {
        at: 10_000,
        status: Some(503),
        error: "HTTP 503".into(),
    };
    assert!(
        !store
            .finish_webhook_delivery(a[0].id, "b", retry.clone(), 6_000)
            .await
            .unwrap(),
        "not b's lease"
    );
    assert!(store
        .finish_webhook_delivery(a[0].id, "a", retry, 6_000)
        .await
        .unwrap());
    for d in &a[1..] {
        let ok = DeliveryResult::Delivered { status: 204 };
        assert!(store
            .finish_webhook_delivery(d.id, "a", ok, 6_000)
            .await
            .unwrap());
    }
    assert!(store
        .claim_webhook_deliveries("b", 9_000, 70_000, 10)
        .await
        .unwrap()
        .is_empty());
    let again = store
        .claim_webhook_deliveries("b", 10_000, 70_000, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].webhook_id.as_str(), again[0].tries),
        (a[0].webhook_id.as_str(), 1)
    );
    let gauges = store.webhook_gauges().await.unwrap();
    assert_eq!(
        (gauges.pending, gauges.oldest_undelivered_at),
        (1, Some(2_000))
    );

    // Retention: the outcomes and finished deliveries older than the cut-off go, in batches.
    assert_eq!(store.delete_outcomes_before(2_004, 2).await.unwrap(), 2);
    assert_eq!(store.delete_outcomes_before(2_004, 2).await.unwrap(), 2);
    assert_eq!(store.delete_outcomes_before(2_004, 2).await.unwrap(), 0);
    assert_eq!(store.count_outcomes().await.unwrap(), 3);
    assert_eq!(
        store
            .delete_webhook_deliveries_before(7_000, 10)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store.list_webhook_deliveries().await.unwrap().len(),
        1,
        "the pending one stays"
    );
}
