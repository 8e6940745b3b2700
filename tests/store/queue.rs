//! The per-waybill push queue: claims, leases, push work, in-flight marker, release.

use std::collections::HashSet;

use wxexpress::store::{Completion, EntryState, InFlight, NewEvent, NotificationPlan, Store};

use crate::{due_at, event, migrated, new_event_id, waybill};

pub async fn two_concurrent_claimers_never_get_the_same_waybill_while_its_lease_is_valid(
    store: Store,
) {
    let store = migrated(store).await;
    let items: Vec<_> = (0..50)
        .map(|i| {
            let id = format!("WB{i:03}");
            (Some(waybill(&id)), event(&id, 100001, 1_000 + i))
        })
        .collect();
    let outcomes = store
        .record_events_batch(&items, &NotificationPlan::default())
        .await
        .unwrap();
    assert!(outcomes.iter().all(|o| o.is_ok()), "{outcomes:?}");

    let now = 10_000_000;
    let tasks: Vec<_> = ["node-a", "node-b"]
        .into_iter()
        .map(|owner| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = store
                        .claim_waybills(owner, now, 60_000, 10)
                        .await
                        .expect("claim");
                    if batch.is_empty() {
                        return mine;
                    }
                    assert!(batch.len() <= 10, "{batch:?}");
                    mine.extend(batch);
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("task"));
    }
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 50, "every waybill claimed once: {all:?}");
    assert_eq!(distinct.len(), 50);
    assert!(store
        .claim_waybills("node-c", now + 59_999, 60_000, 100)
        .await
        .unwrap()
        .is_empty());
}

pub async fn only_due_waybills_are_claimed_earliest_first(store: Store) {
    let store = migrated(store).await;
    for (w, received_at) in [("LATE", 3_000), ("EARLY", 1_000), ("MID", 2_000)] {
        let e = NewEvent {
            received_at,
            ..event(w, 100001, 1)
        };
        new_event_id(&store, Some(&waybill(w)), &e).await;
    }
    assert!(store
        .claim_waybills("me", 999, 100, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .claim_waybills("me", 0, 100, 0)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.claim_waybills("me", 2_500, 10_000, 1).await.unwrap(),
        vec!["EARLY".to_owned()]
    );
    let mut rest = store.claim_waybills("me", 5_000, 10_000, 10).await.unwrap();
    rest.sort();
    assert_eq!(rest, vec!["LATE".to_owned(), "MID".to_owned()]);
}

pub async fn an_expired_lease_can_be_claimed_by_another_owner(store: Store) {
    let store = migrated(store).await;
    new_event_id(&store, Some(&waybill("SF1")), &event("SF1", 100001, 1)).await;
    let t = 100_000;
    assert_eq!(
        store.claim_waybills("node-a", t, 1_000, 10).await.unwrap(),
        vec!["SF1".to_owned()]
    );
    assert!(store
        .claim_waybills("node-b", t + 1_000, 1_000, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .claim_waybills("node-b", t + 1_001, 1_000, 10)
            .await
            .unwrap(),
        vec!["SF1".to_owned()]
    );

    // node-a lost it: it can neither extend it, nor begin a push, nor release it.
    let entry_id = store.list_outbox("SF1").await.unwrap()[0].id;
    assert!(!store
        .extend_lease("SF1", "node-a", t + 5_000)
        .await
        .unwrap());
    assert!(!store.begin_push("SF1", "node-a", entry_id).await.unwrap());
    store.release_waybill("SF1", "node-a").await.unwrap();
    assert!(
        store
            .claim_waybills("node-c", t + 1_500, 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "node-b still holds it"
    );
}

pub async fn only_the_lease_holder_can_extend_it_or_begin_a_push(store: Store) {
    let store = migrated(store).await;
    let event_id = new_event_id(&store, Some(&waybill("SF2")), &event("SF2", 100001, 7)).await;
    let entry_id = store.list_outbox("SF2").await.unwrap()[0].id;
    assert!(
        !store.extend_lease("SF2", "me", 1).await.unwrap(),
        "not claimed yet"
    );
    assert!(!store.begin_push("SF2", "me", entry_id).await.unwrap());
    assert!(!store.begin_push("NOPE", "me", entry_id).await.unwrap());
    assert_eq!(store.inflight("SF2").await.unwrap(), None);

    let t = 50_000;
    store.claim_waybills("me", t, 1_000, 1).await.unwrap();
    assert!(!store.extend_lease("SF2", "other", t + 9_000).await.unwrap());
    assert!(!store.begin_push("SF2", "other", entry_id).await.unwrap());
    assert!(store.extend_lease("SF2", "me", t + 9_000).await.unwrap());
    assert!(
        store
            .claim_waybills("other", t + 5_000, 1_000, 1)
            .await
            .unwrap()
            .is_empty(),
        "extended past t + 5000"
    );

    assert!(store.begin_push("SF2", "me", entry_id).await.unwrap());
    assert_eq!(
        store.inflight("SF2").await.unwrap(),
        Some(InFlight {
            outbox_id: entry_id,
            event_id,
            action_time: 7,
            push_seq: 1,
        })
    );
    assert_eq!(store.inflight("NOPE").await.unwrap(), None);
}

pub async fn push_work_lists_pending_path_entries_by_action_time_then_event_id(store: Store) {
    let store = migrated(store).await;
    assert_eq!(store.load_push_work("SF3").await.unwrap(), None);
    let w = Some(waybill("SF3"));
    // Arrival order differs from action order; two events share an action_time.
    let late = new_event_id(&store, w.as_ref(), &event("SF3", 300002, 300)).await;
    let first = new_event_id(&store, None, &event("SF3", 100001, 100)).await;
    let tie_a = new_event_id(&store, None, &event("SF3", 200001, 200)).await;
    let tie_b = new_event_id(&store, None, &event("SF3", 300001, 200)).await;
    let done = new_event_id(&store, None, &event("SF3", 400001, 400)).await;
    let done_entry = store
        .list_outbox("SF3")
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.event_id == Some(done))
        .unwrap();
    store
        .claim_waybills("me", i64::MAX / 4, 1_000, 1)
        .await
        .unwrap();
    store
        .complete_entry(done_entry.id, "me", None, &Completion::Delivered, 1)
        .await
        .unwrap();
    store.release_waybill("SF3", "me").await.unwrap();

    let work = store.load_push_work("SF3").await.unwrap().expect("queued");
    assert_eq!(work.waybill_id, "SF3");
    assert_eq!(work.last_pushed_action_time, Some(400));
    assert_eq!(work.last_pushed_event_id, Some(done));
    assert_eq!(work.inflight_outbox_id, None);
    let order: Vec<(i64, Option<i64>)> = work
        .pending
        .iter()
        .map(|e| (e.action_time, e.event_id))
        .collect();
    assert_eq!(
        order,
        vec![
            (100, Some(first)),
            (200, Some(tie_a)),
            (200, Some(tie_b)),
            (300, Some(late)),
        ]
    );
    assert!(work.pending.iter().all(|e| e.state == EntryState::Pending));
}

pub async fn releasing_a_waybill_recomputes_its_due_time_from_pending_entries(store: Store) {
    let store = migrated(store).await;
    new_event_id(&store, Some(&waybill("SF4")), &event("SF4", 100001, 1)).await;
    new_event_id(&store, None, &event("SF4", 200001, 2)).await;
    let ids: Vec<i64> = store
        .list_outbox("SF4")
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let t = 10_000;
    store.claim_waybills("me", t, 1_000, 1).await.unwrap();
    let retry = Completion::Retry {
        next_attempt_at: t + 30_000,
        error: "timeout".into(),
    };
    store
        .complete_entry(ids[0], "me", None, &retry, t)
        .await
        .unwrap();
    store
        .complete_entry(ids[1], "me", None, &Completion::Delivered, t)
        .await
        .unwrap();

    // Someone else's release changes nothing.
    store.release_waybill("SF4", "other").await.unwrap();
    assert_eq!(due_at(&store, "SF4").await, Some(Some(1_007)));

    store.release_waybill("SF4", "me").await.unwrap();
    assert_eq!(due_at(&store, "SF4").await, Some(Some(t + 30_000)));
    assert!(
        store
            .claim_waybills("other", t + 29_999, 1_000, 1)
            .await
            .unwrap()
            .is_empty(),
        "not due before the retry time, though the lease is free"
    );
    assert_eq!(
        store
            .claim_waybills("other", t + 30_000, 1_000, 1)
            .await
            .unwrap(),
        vec!["SF4".to_owned()]
    );

    store
        .complete_entry(ids[0], "other", None, &Completion::Delivered, t + 30_001)
        .await
        .unwrap();
    store.release_waybill("SF4", "other").await.unwrap();
    assert_eq!(due_at(&store, "SF4").await, Some(None), "nothing pending");
    assert!(store
        .claim_waybills("x", i64::MAX / 4, 1, 10)
        .await
        .unwrap()
        .is_empty());
}

pub async fn an_event_recorded_while_its_waybill_is_released_keeps_it_due(store: Store) {
    let store = migrated(store).await;
    new_event_id(&store, Some(&waybill("SF5")), &event("SF5", 100001, 1)).await;
    // Each round: the leased waybill has nothing pending; a new event and the release race.
    // Whatever the interleaving, the new event's waybill must end up due.
    for round in 0..30_i64 {
        let now = 1_000_000 + round * 10_000;
        let claimed = store.claim_waybills("me", now, 60_000, 1).await.unwrap();
        assert_eq!(claimed, vec!["SF5".to_owned()], "round {round}");
        let work = store.load_push_work("SF5").await.unwrap().unwrap();
        for entry in &work.pending {
            store
                .complete_entry(entry.id, "me", None, &Completion::Delivered, now)
                .await
                .unwrap();
        }
        let e = NewEvent {
            received_at: now + 1,
            ..event("SF5", 200001, 10 + round)
        };
        let recorder = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .record_event(None, &e, &NotificationPlan::default())
                    .await
            })
        };
        let releaser = {
            let store = store.clone();
            tokio::spawn(async move { store.release_waybill("SF5", "me").await })
        };
        recorder.await.unwrap().unwrap();
        releaser.await.unwrap().unwrap();
        assert_eq!(
            due_at(&store, "SF5").await,
            Some(Some(now + 1)),
            "round {round}"
        );
    }
}

/// A claim's reads in one batch give each waybill exactly what reading it alone gives.
pub async fn a_claims_push_work_loads_in_one_batch_as_it_would_one_by_one(store: Store) {
    let store = migrated(store).await;
    // 11 waybills (not a power of two), with 1 to 4 events; one delivered, one never queued.
    let mut ids: Vec<String> = Vec::new();
    for i in 0..11 {
        let w = format!("SFB{i:02}");
        new_event_id(&store, Some(&waybill(&w)), &event(&w, 100001, 10)).await;
        for k in 1..(i % 4) {
            new_event_id(&store, None, &event(&w, 200001 + k as i64, 10 + k as i64)).await;
        }
        ids.push(w);
    }
    let first = store.load_push_work("SFB03").await.unwrap().unwrap();
    let t = 1_000_000;
    store.claim_waybills("a#1", t, 60_000, 50).await.unwrap();
    store
        .complete_entry(first.pending[0].id, "a#1", None, &Completion::Delivered, t)
        .await
        .unwrap();
    store.upsert_waybill(&waybill("SFBNONE")).await.unwrap();
    ids.insert(4, "SFBNONE".into());
    ids.push("SFB07".into()); // asked twice: loaded once
    ids.push("SFBNOWHERE".into());

    let loads = store.load_push_batch(&ids).await.unwrap();
    let got: Vec<&str> = loads.iter().map(|l| l.work.waybill_id.as_str()).collect();
    let expected: Vec<String> = (0..11).map(|i| format!("SFB{i:02}")).collect();
    assert_eq!(
        got, expected,
        "queued waybills, in the order asked, once each"
    );
    for load in &loads {
        let w = &load.work.waybill_id;
        let alone = store.load_push_work(w).await.unwrap().unwrap();
        assert_eq!(load.work, alone, "{w}");
        assert_eq!(load.waybill, store.get_waybill(w).await.unwrap(), "{w}");
        let mut events: Vec<_> = store
            .list_events(w)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| alone.pending.iter().any(|p| p.event_id == Some(e.id)))
            .collect();
        events.sort_by_key(|e| e.id);
        assert_eq!(
            load.events, events,
            "{w}: the events of its pending entries"
        );
    }
    assert!(loads
        .iter()
        .any(|l| l.work.waybill_id == "SFB03" && l.work.pending.len() == 2));
    assert!(store.load_push_batch(&[]).await.unwrap().is_empty());

    // Bindings in one read: valid answers only.
    let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
    store.put_binding(&a, true, 1_000, 500).await.unwrap();
    store.put_binding(&b, false, 1_000, 500).await.unwrap();
    store.put_binding(&c, true, 1_000, 100).await.unwrap();
    let found = store
        .get_bindings(&[a.clone(), b.clone(), c.clone(), "d".repeat(64)], 1_200)
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!((found.get(&a), found.get(&b)), (Some(&true), Some(&false)));
}
