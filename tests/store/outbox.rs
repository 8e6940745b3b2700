//! Outbox entries: written with their event, completed, skipped, receipted, redriven, counted.

use wxexpress::store::{
    AttemptRecord, Completion, DeadReason, EntryKind, EntryState, EventInsert, NewAttempt,
    NotificationPlan, OutboxEntry, SkipReason, Store, StoreError,
};

use crate::{due_at, event, migrated, new_event_id, waybill};

pub async fn an_accepted_event_creates_one_pending_outbox_entry_and_makes_its_waybill_due(
    store: Store,
) {
    let store = migrated(store).await;
    let e = event("SF1", 100001, 1_700_000_000);
    let id = new_event_id(&store, Some(&waybill("SF1")), &e).await;

    let entries = store.list_outbox("SF1").await.unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_eq!(
        entry,
        &OutboxEntry {
            id: entry.id,
            kind: EntryKind::Pathnotify,
            waybill_id: "SF1".into(),
            event_id: Some(id),
            action_time: e.action_time,
            recipient: None,
            state: EntryState::Pending,
            skip_reason: None,
            tries: 0,
            next_attempt_at: e.received_at,
            receipt_at: None,
            last_error: None,
            created_at: e.received_at,
            updated_at: e.received_at,
            done_at: None,
        }
    );
    assert_eq!(
        store.get_outbox(entry.id).await.unwrap().as_ref(),
        Some(entry)
    );
    assert_eq!(store.get_outbox(entry.id + 1000).await.unwrap(), None);
    assert_eq!(due_at(&store, "SF1").await, Some(Some(e.received_at)));

    // A later event received earlier (clock skew between ingest nodes) lowers due_at; one
    // received later leaves it.
    let earlier = event("SF1", 200001, 1_700_000_100);
    let earlier = wxexpress::store::NewEvent {
        received_at: e.received_at - 50,
        ..earlier
    };
    new_event_id(&store, None, &earlier).await;
    new_event_id(&store, None, &event("SF1", 300002, 1_700_000_200)).await;
    assert_eq!(due_at(&store, "SF1").await, Some(Some(e.received_at - 50)));
    assert_eq!(store.list_outbox("SF1").await.unwrap().len(), 3);
}

pub async fn a_duplicate_event_creates_no_outbox_entry_and_leaves_the_queue_alone(store: Store) {
    let store = migrated(store).await;
    let e = event("SF2", 100001, 1_700_000_000);
    new_event_id(&store, Some(&waybill("SF2")), &e).await;
    let claimed = store
        .claim_waybills("node-a", e.received_at, 60_000, 10)
        .await
        .unwrap();
    assert_eq!(claimed, vec!["SF2".to_owned()]);
    let [entry] = &store.list_outbox("SF2").await.unwrap()[..] else {
        panic!("one entry");
    };
    store
        .complete_entry(
            entry.id,
            "node-a",
            None,
            &Completion::Delivered,
            e.received_at + 1,
        )
        .await
        .unwrap();
    store.release_waybill("SF2", "node-a").await.unwrap();
    assert_eq!(due_at(&store, "SF2").await, Some(None));

    let retry = wxexpress::store::NewEvent {
        received_at: e.received_at + 10_000,
        ..e.clone()
    };
    assert!(matches!(
        store
            .record_event(None, &retry, &NotificationPlan::default())
            .await
            .unwrap(),
        EventInsert::Duplicate { .. }
    ));
    assert_eq!(store.list_outbox("SF2").await.unwrap().len(), 1);
    assert_eq!(due_at(&store, "SF2").await, Some(None), "not due again");
}

pub async fn a_batch_creates_an_outbox_entry_for_each_new_event_only(store: Store) {
    let store = migrated(store).await;
    new_event_id(&store, Some(&waybill("OLD")), &event("OLD", 100001, 10)).await;

    let late = wxexpress::store::NewEvent {
        received_at: 5,
        ..event("NEW", 200001, 30)
    };
    let items = vec![
        (Some(waybill("NEW")), event("NEW", 100001, 20)), // new
        (None, late),                                     // new, received earliest
        (None, event("NEW", 100001, 20)),                 // duplicate within the batch
        (None, event("OLD", 100001, 10)),                 // duplicate of a stored event
        (None, event("OLD", 300002, 40)),                 // new
        (None, event("GHOST", 100001, 50)),               // unknown waybill
    ];
    let outcomes = store
        .record_events_batch(&items, &NotificationPlan::default())
        .await
        .unwrap();
    let inserted = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(EventInsert::Inserted { .. })))
        .count();
    assert_eq!(inserted, 3, "{outcomes:?}");

    let new_entries = store.list_outbox("NEW").await.unwrap();
    let old_entries = store.list_outbox("OLD").await.unwrap();
    assert_eq!(new_entries.len(), 2);
    assert_eq!(old_entries.len(), 2);
    assert!(store.list_outbox("GHOST").await.unwrap().is_empty());
    let event_ids: Vec<Option<i64>> = new_entries.iter().map(|e| e.event_id).collect();
    assert_eq!(
        event_ids,
        vec![
            Some(outcomes[0].as_ref().unwrap().id()),
            Some(outcomes[1].as_ref().unwrap().id())
        ]
    );
    assert_eq!(due_at(&store, "NEW").await, Some(Some(5)));
    assert_eq!(due_at(&store, "OLD").await, Some(Some(10_007)));
    assert_eq!(due_at(&store, "GHOST").await, None);
}

pub async fn completing_entries_moves_them_and_only_ever_raises_the_last_pushed_node(store: Store) {
    let store = migrated(store).await;
    let w = Some(waybill("SF3"));
    let e1 = new_event_id(&store, w.as_ref(), &event("SF3", 100001, 100)).await;
    let e2 = new_event_id(&store, None, &event("SF3", 200001, 200)).await;
    let e3 = new_event_id(&store, None, &event("SF3", 300002, 300)).await;
    let e4 = new_event_id(&store, None, &event("SF3", 300003, 300)).await;
    let ids: Vec<i64> = entry_ids(&store, "SF3").await;
    let (o1, o2, o3, o4) = (ids[0], ids[1], ids[2], ids[3]);
    let now = 1_000_000;
    let claimed = store.claim_waybills("me", now, 60_000, 1).await.unwrap();
    assert_eq!(claimed, vec!["SF3".to_owned()]);

    // Retry: stays pending, one more try, the new time and error; the attempt is recorded.
    assert!(store.begin_push("SF3", "me", o2).await.unwrap());
    let attempt = NewAttempt {
        outbox_id: o2,
        started_at: now,
        duration_ms: 120,
        http_status: Some(200),
        errcode: Some(-1),
        outcome: "retry".into(),
        detail: "system busy".into(),
        rid: None,
    };
    let retry = Completion::Retry {
        next_attempt_at: now + 5_000,
        error: "errcode -1".into(),
    };
    store
        .complete_entry(o2, "me", Some(&attempt), &retry, now)
        .await
        .unwrap();
    let entry = store.get_outbox(o2).await.unwrap().unwrap();
    assert_eq!(
        (entry.state.as_str(), entry.tries, entry.next_attempt_at),
        ("pending", 1, now + 5_000)
    );
    assert_eq!(entry.last_error.as_deref(), Some("errcode -1"));
    assert_eq!((entry.updated_at, entry.done_at), (now, None));
    assert_eq!(store.inflight("SF3").await.unwrap(), None, "cleared");
    let attempts = store.list_attempts(o2).await.unwrap();
    assert_eq!(
        attempts,
        vec![AttemptRecord {
            id: attempts[0].id,
            outbox_id: o2,
            started_at: now,
            duration_ms: 120,
            http_status: Some(200),
            errcode: Some(-1),
            outcome: "retry".into(),
            detail: "system busy".into(),
            rid: None,
        }]
    );

    // Delivered: done, and the pushed position is this node.
    assert!(store.begin_push("SF3", "me", o3).await.unwrap());
    store
        .complete_entry(o3, "me", None, &Completion::Delivered, now + 1)
        .await
        .unwrap();
    let entry = store.get_outbox(o3).await.unwrap().unwrap();
    assert_eq!(entry.state, EntryState::Delivered);
    assert_eq!(entry.done_at, Some(now + 1));
    assert_eq!(entry.tries, 0);
    assert_eq!(pushed(&store, "SF3").await, (Some(300), Some(e3), None));

    // Same action_time, higher event id: raises it. An older node delivered later: does not.
    store
        .complete_entry(o4, "me", None, &Completion::Delivered, now + 2)
        .await
        .unwrap();
    assert_eq!(pushed(&store, "SF3").await, (Some(300), Some(e4), None));
    store
        .complete_entry(o1, "me", None, &Completion::Delivered, now + 3)
        .await
        .unwrap();
    assert_eq!(pushed(&store, "SF3").await, (Some(300), Some(e4), None));
    assert_ne!(e1, e4);

    // An entry that is no longer pending stays as it is: the completion is refused.
    let refused = store
        .complete_entry(
            o1,
            "me",
            Some(&attempt),
            &Completion::Retry {
                next_attempt_at: now + 9_000,
                error: "late".into(),
            },
            now + 4,
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::Fenced(id)) if id == o1),
        "{refused:?}"
    );
    let entry = store.get_outbox(o1).await.unwrap().unwrap();
    assert_eq!((entry.state.as_str(), entry.tries), ("delivered", 0));
    assert_eq!(store.list_attempts(o1).await.unwrap(), vec![]);

    // Completing an entry that is not in flight leaves the in-flight marker alone.
    new_event_id(&store, None, &event("SF3", 400001, 40)).await;
    let o6 = *entry_ids(&store, "SF3").await.last().unwrap();
    assert!(store.begin_push("SF3", "me", o2).await.unwrap());
    let skip = Completion::Skipped {
        reason: SkipReason::Stale,
    };
    store
        .complete_entry(o6, "me", None, &skip, now + 4)
        .await
        .unwrap();
    assert_eq!(pushed(&store, "SF3").await.2, Some(o2));

    // Dead: one more try, the error, done.
    store
        .complete_entry(
            o2,
            "me",
            None,
            &Completion::Dead {
                error: "errcode 40097".into(),
                reason: DeadReason::Refused,
            },
            now + 5,
        )
        .await
        .unwrap();
    let entry = store.get_outbox(o2).await.unwrap().unwrap();
    assert_eq!((entry.state.as_str(), entry.tries), ("dead", 2));
    assert_eq!(entry.last_error.as_deref(), Some("errcode 40097"));
    assert_eq!(entry.done_at, Some(now + 5));
    assert_eq!(pushed(&store, "SF3").await, (Some(300), Some(e4), None));
    assert_ne!(e2, e4);

    // Skipped: the reason, done.
    let e5 = new_event_id(&store, None, &event("SF3", 400002, 50)).await;
    let o5 = *entry_ids(&store, "SF3").await.last().unwrap();
    assert!(store.begin_push("SF3", "me", o5).await.unwrap());
    store
        .complete_entry(
            o5,
            "me",
            None,
            &Completion::Skipped {
                reason: SkipReason::Stale,
            },
            now + 6,
        )
        .await
        .unwrap();
    let entry = store.get_outbox(o5).await.unwrap().unwrap();
    assert_eq!(entry.event_id, Some(e5));
    assert_eq!(entry.state, EntryState::Skipped);
    assert_eq!(entry.skip_reason, Some(SkipReason::Stale));
    assert_eq!(entry.done_at, Some(now + 6));
    assert_eq!(entry.tries, 0);
    assert_eq!(pushed(&store, "SF3").await, (Some(300), Some(e4), None));
}

pub async fn completing_an_unknown_entry_fails_and_records_no_attempt(store: Store) {
    let store = migrated(store).await;
    let attempt = NewAttempt {
        outbox_id: 999,
        started_at: 1,
        duration_ms: 1,
        http_status: None,
        errcode: None,
        outcome: "timeout".into(),
        detail: "".into(),
        rid: None,
    };
    let outcome = store
        .complete_entry(999, "me", Some(&attempt), &Completion::Delivered, 1)
        .await;
    assert!(
        matches!(outcome, Err(StoreError::UnknownOutboxEntry(999))),
        "{outcome:?}"
    );
    assert_eq!(store.count_attempts().await.unwrap(), 0);
}

pub async fn a_receipt_keeps_the_time_of_the_first_reverse_query(store: Store) {
    let store = migrated(store).await;
    new_event_id(&store, Some(&waybill("SF4")), &event("SF4", 100001, 1)).await;
    let id = entry_ids(&store, "SF4").await[0];
    store
        .claim_waybills("me", i64::MAX / 4, 1_000, 1)
        .await
        .unwrap();
    assert!(
        !store.record_receipt(id, 0, 4_000).await.unwrap(),
        "not in flight: no receipt"
    );
    assert!(store.begin_push("SF4", "me", id).await.unwrap());
    let seq = store.inflight("SF4").await.unwrap().unwrap().push_seq;
    assert!(store.record_receipt(id, seq, 5_000).await.unwrap());
    assert!(store.record_receipt(id, seq, 6_000).await.unwrap());
    let entry = store.get_outbox(id).await.unwrap().unwrap();
    assert_eq!(entry.receipt_at, Some(5_000));
    assert_eq!(
        entry.state,
        EntryState::Pending,
        "a receipt alone completes nothing"
    );
}

pub async fn skipping_changes_only_pending_entries_and_clears_the_in_flight_marker(store: Store) {
    let store = migrated(store).await;
    new_event_id(&store, Some(&waybill("SF5")), &event("SF5", 100001, 1)).await;
    new_event_id(&store, None, &event("SF5", 200001, 2)).await;
    new_event_id(&store, None, &event("SF5", 300002, 3)).await;
    let ids = entry_ids(&store, "SF5").await;
    store
        .claim_waybills("me", i64::MAX / 4, 1_000, 5)
        .await
        .unwrap();
    store
        .complete_entry(ids[0], "me", None, &Completion::Delivered, 10)
        .await
        .unwrap();
    assert!(store.begin_push("SF5", "me", ids[1]).await.unwrap());

    store
        .mark_skipped(&[ids[0], ids[1], 424_242], SkipReason::Coalesced, "me", 20)
        .await
        .unwrap();
    store
        .mark_skipped(&[], SkipReason::Coalesced, "me", 21)
        .await
        .unwrap();
    let entries = store.list_outbox("SF5").await.unwrap();
    let states: Vec<(EntryState, Option<SkipReason>, Option<i64>)> = entries
        .iter()
        .map(|e| (e.state, e.skip_reason, e.done_at))
        .collect();
    assert_eq!(
        states,
        vec![
            (EntryState::Delivered, None, Some(10)),
            (EntryState::Skipped, Some(SkipReason::Coalesced), Some(20)),
            (EntryState::Pending, None, None),
        ]
    );
    assert_eq!(store.inflight("SF5").await.unwrap(), None);
}

pub async fn redriving_brings_dead_entries_back_and_makes_their_waybills_due(store: Store) {
    let store = migrated(store).await;
    for w in ["A", "B"] {
        new_event_id(&store, Some(&waybill(w)), &event(w, 100001, 1)).await;
        new_event_id(&store, None, &event(w, 200001, 2)).await;
    }
    let a = entry_ids(&store, "A").await;
    let b = entry_ids(&store, "B").await;
    let claimed = store.claim_waybills("me", 10_000, 1_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let dead = |error: &str| Completion::Dead {
        error: error.into(),
        reason: DeadReason::Refused,
    };
    for id in [a[0], a[1], b[0]] {
        store
            .complete_entry(id, "me", None, &dead("errcode 40097"), 11_000)
            .await
            .unwrap();
    }
    store
        .complete_entry(b[1], "me", None, &Completion::Delivered, 11_000)
        .await
        .unwrap();
    store.release_waybill("A", "me").await.unwrap();
    store.release_waybill("B", "me").await.unwrap();
    assert_eq!(due_at(&store, "A").await, Some(None));

    assert_eq!(store.redrive_dead(Some("A"), 20_000).await.unwrap(), 2);
    let entry = store.get_outbox(a[0]).await.unwrap().unwrap();
    assert_eq!(
        (entry.state.as_str(), entry.tries, entry.next_attempt_at),
        ("pending", 0, 20_000)
    );
    assert_eq!(entry.last_error.as_deref(), Some("errcode 40097"), "kept");
    assert_eq!((entry.done_at, entry.updated_at), (None, 20_000));
    assert_eq!(due_at(&store, "A").await, Some(Some(20_000)));
    assert_eq!(due_at(&store, "B").await, Some(None), "another waybill");

    assert_eq!(store.redrive_dead(None, 30_000).await.unwrap(), 1);
    assert_eq!(due_at(&store, "B").await, Some(Some(30_000)));
    assert_eq!(
        store.get_outbox(b[1]).await.unwrap().unwrap().state,
        EntryState::Delivered
    );
    assert_eq!(store.redrive_dead(None, 40_000).await.unwrap(), 0);
    assert_eq!(due_at(&store, "A").await, Some(Some(20_000)), "not raised");
}

pub async fn retrying_one_entry_works_only_on_a_dead_entry(store: Store) {
    let store = migrated(store).await;
    new_event_id(&store, Some(&waybill("SF6")), &event("SF6", 100001, 1)).await;
    let id = entry_ids(&store, "SF6").await[0];
    assert!(!store.retry_entry(id, 5_000).await.unwrap(), "pending");
    assert!(
        !store.retry_entry(id + 1_000, 5_000).await.unwrap(),
        "unknown"
    );

    store.claim_waybills("me", 2_000, 1_000, 1).await.unwrap();
    let dead = Completion::Dead {
        error: "errcode 150004".into(),
        reason: DeadReason::Refused,
    };
    store
        .complete_entry(id, "me", None, &dead, 2_100)
        .await
        .unwrap();
    store.release_waybill("SF6", "me").await.unwrap();
    assert_eq!(due_at(&store, "SF6").await, Some(None));

    assert!(store.retry_entry(id, 9_000).await.unwrap());
    let entry = store.get_outbox(id).await.unwrap().unwrap();
    assert_eq!((entry.state.as_str(), entry.tries), ("pending", 0));
    assert_eq!(entry.next_attempt_at, 9_000);
    assert_eq!(due_at(&store, "SF6").await, Some(Some(9_000)));
    assert!(
        !store.retry_entry(id, 9_500).await.unwrap(),
        "no longer dead"
    );
}

pub async fn outbox_counts_group_entries_by_state_and_skip_reason(store: Store) {
    let store = migrated(store).await;
    assert!(store.outbox_counts().await.unwrap().is_empty());
    new_event_id(&store, Some(&waybill("SF7")), &event("SF7", 100001, 1)).await;
    for t in 2..=6 {
        new_event_id(&store, None, &event("SF7", 200001, t)).await;
    }
    let ids = entry_ids(&store, "SF7").await;
    store
        .claim_waybills("me", i64::MAX / 4, 1_000, 1)
        .await
        .unwrap();
    let attempt = |id: i64| NewAttempt {
        outbox_id: id,
        started_at: 1,
        duration_ms: 2,
        http_status: Some(200),
        errcode: Some(0),
        outcome: "delivered".into(),
        detail: "ok".into(),
        rid: None,
    };
    for id in &ids[0..2] {
        store
            .complete_entry(*id, "me", Some(&attempt(*id)), &Completion::Delivered, 10)
            .await
            .unwrap();
    }
    store
        .mark_skipped(&ids[2..4], SkipReason::Stale, "me", 10)
        .await
        .unwrap();
    let skipped = Completion::Skipped {
        reason: SkipReason::Unbound,
    };
    store
        .complete_entry(ids[4], "me", Some(&attempt(ids[4])), &skipped, 10)
        .await
        .unwrap();

    assert_eq!(
        store.outbox_counts().await.unwrap(),
        vec![
            (EntryState::Pending, None, 1),
            (EntryState::Delivered, None, 2),
            (EntryState::Skipped, Some(SkipReason::Stale), 2),
            (EntryState::Skipped, Some(SkipReason::Unbound), 1),
        ]
    );
    assert_eq!(store.count_attempts().await.unwrap(), 3);
}

// ---- helpers -----------------------------------------------------------------------------

/// The waybill's outbox ids, in creation order.
pub async fn entry_ids(store: &Store, waybill_id: &str) -> Vec<i64> {
    store
        .list_outbox(waybill_id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect()
}

/// (last_pushed_action_time, last_pushed_event_id, inflight_outbox_id) of the waybill.
async fn pushed(store: &Store, waybill_id: &str) -> (Option<i64>, Option<i64>, Option<i64>) {
    let work = store
        .load_push_work(waybill_id)
        .await
        .unwrap()
        .expect("queued");
    (
        work.last_pushed_action_time,
        work.last_pushed_event_id,
        work.inflight_outbox_id,
    )
}

pub async fn a_late_completion_after_the_lease_lapsed_and_was_claimed_again_changes_nothing(
    store: Store,
) {
    let store = migrated(store).await;
    new_event_id(&store, Some(&waybill("SF8")), &event("SF8", 100001, 1)).await;
    new_event_id(&store, None, &event("SF8", 200001, 2)).await;
    let ids = entry_ids(&store, "SF8").await;
    let t = 1_000_000;
    // Instance A claims and begins pushing; its lease lapses (a stalled call).
    assert_eq!(
        store.claim_waybills("a#1", t, 1_000, 1).await.unwrap(),
        ["SF8"]
    );
    assert!(store.begin_push("SF8", "a#1", ids[1]).await.unwrap());
    // Instance B claims the lapsed lease and delivers the same node.
    assert_eq!(
        store
            .claim_waybills("b#1", t + 1_001, 1_000, 1)
            .await
            .unwrap(),
        ["SF8"]
    );
    assert!(store.begin_push("SF8", "b#1", ids[1]).await.unwrap());
    store
        .complete_entry(ids[1], "b#1", None, &Completion::Delivered, t + 1_100)
        .await
        .unwrap();

    // A's answer arrives late: a retry of the delivered entry is refused and writes nothing.
    let attempt = NewAttempt {
        outbox_id: ids[1],
        started_at: t,
        duration_ms: 8_000,
        http_status: None,
        errcode: None,
        outcome: "transient".into(),
        detail: "timeout".into(),
        rid: None,
    };
    let retry = Completion::Retry {
        next_attempt_at: t + 60_000,
        error: "timeout".into(),
    };
    let late = store
        .complete_entry(ids[1], "a#1", Some(&attempt), &retry, t + 1_200)
        .await;
    assert!(matches!(late, Err(StoreError::Fenced(_))), "{late:?}");
    let entry = store.get_outbox(ids[1]).await.unwrap().unwrap();
    assert_eq!((entry.state.as_str(), entry.tries), ("delivered", 0));
    assert!(store.list_attempts(ids[1]).await.unwrap().is_empty());

    // The same goes for a still-pending entry of the waybill: B holds the lease, not A.
    let late = store
        .complete_entry(ids[0], "a#1", None, &Completion::Delivered, t + 1_300)
        .await;
    assert!(matches!(late, Err(StoreError::Fenced(_))), "{late:?}");
    let late = store
        .mark_skipped(&[ids[0]], SkipReason::Stale, "a#1", t + 1_300)
        .await;
    assert!(matches!(late, Err(StoreError::Fenced(_))), "{late:?}");
    assert_eq!(
        store.get_outbox(ids[0]).await.unwrap().unwrap().state,
        EntryState::Pending
    );
    assert!(!store.begin_push("SF8", "a#1", ids[0]).await.unwrap());
    assert!(!store.extend_lease("SF8", "a#1", t + 99_000).await.unwrap());
    // A's release leaves B's lease alone.
    store.release_waybill("SF8", "a#1").await.unwrap();
    assert!(store.extend_lease("SF8", "b#1", t + 5_000).await.unwrap());
    // Beginning a push of an entry that is no longer pending is refused too.
    assert!(!store.begin_push("SF8", "b#1", ids[1]).await.unwrap());
}

pub async fn a_receipt_counts_only_for_the_push_in_flight_and_is_forgotten_by_a_retry(
    store: Store,
) {
    let store = migrated(store).await;
    new_event_id(&store, Some(&waybill("SF9")), &event("SF9", 100001, 1)).await;
    let id = entry_ids(&store, "SF9").await[0];
    let t = 1_000_000;
    store.claim_waybills("me", t, 60_000, 1).await.unwrap();

    // Push 1: WeChat's reverse query answers it (a receipt), then WeChat fails anyway.
    assert!(store.begin_push("SF9", "me", id).await.unwrap());
    let first = store.inflight("SF9").await.unwrap().unwrap();
    assert!(store
        .record_receipt(id, first.push_seq, t + 1)
        .await
        .unwrap());
    assert_eq!(
        store.get_outbox(id).await.unwrap().unwrap().receipt_at,
        Some(t + 1)
    );
    let retry = Completion::Retry {
        next_attempt_at: t,
        error: "errcode 932001".into(),
    };
    store
        .complete_entry(id, "me", None, &retry, t + 2)
        .await
        .unwrap();
    assert_eq!(
        store.get_outbox(id).await.unwrap().unwrap().receipt_at,
        None,
        "the receipt belonged to push 1"
    );

    // Push 2: a late answer for push 1 is not push 2's receipt.
    assert!(store.begin_push("SF9", "me", id).await.unwrap());
    let second = store.inflight("SF9").await.unwrap().unwrap();
    assert_eq!(second.push_seq, first.push_seq + 1);
    assert!(!store
        .record_receipt(id, first.push_seq, t + 3)
        .await
        .unwrap());
    assert_eq!(
        store.get_outbox(id).await.unwrap().unwrap().receipt_at,
        None
    );
    assert!(store
        .record_receipt(id, second.push_seq, t + 4)
        .await
        .unwrap());
    assert_eq!(
        store.get_outbox(id).await.unwrap().unwrap().receipt_at,
        Some(t + 4)
    );

    // Dead, then redriven: the receipt goes with the redrive; a new push starts without one.
    let dead = Completion::Dead {
        error: "spent".into(),
        reason: DeadReason::Refused,
    };
    store
        .complete_entry(id, "me", None, &dead, t + 5)
        .await
        .unwrap();
    assert!(!store
        .record_receipt(id, second.push_seq, t + 6)
        .await
        .unwrap());
    store.release_waybill("SF9", "me").await.unwrap();
    assert!(store.retry_entry(id, t + 7).await.unwrap());
    let entry = store.get_outbox(id).await.unwrap().unwrap();
    assert_eq!((entry.state.as_str(), entry.receipt_at), ("pending", None));
}

/// Many pushes settling at once (on SQLite they share the writer's groups, set-based): each
/// caller gets the outcome it would have had alone, and the intruder's writes change nothing.
pub async fn concurrent_pushes_settle_each_with_its_own_outcome(store: Store) {
    let store = migrated(store).await;
    let n = 40;
    let names: Vec<String> = (0..n).map(|i| format!("SFC{i:03}")).collect();
    for w in &names {
        new_event_id(&store, Some(&waybill(w)), &event(w, 100001, 1)).await;
        new_event_id(&store, None, &event(w, 200001, 2)).await;
    }
    let t = 1_000_000;
    let mut claimed = store.claim_waybills("a#1", t, 60_000, n).await.unwrap();
    claimed.sort();
    assert_eq!(claimed, names);
    let mut ids = Vec::new();
    for w in &names {
        ids.push(entry_ids(&store, w).await);
    }

    // Begin every push at once; an intruder's begins and skips are refused meanwhile.
    let mut tasks = Vec::new();
    for (w, e) in names.iter().zip(&ids) {
        let (s, w, e) = (store.clone(), w.clone(), e.clone());
        tasks.push(tokio::spawn(async move {
            let first = [e[0]];
            let (holder, intruder, skip) = tokio::join!(
                s.begin_push(&w, "a#1", e[1]),
                s.begin_push(&w, "x#9", e[1]),
                s.mark_skipped(&first, SkipReason::Stale, "x#9", t)
            );
            assert!(holder.unwrap(), "{w}: the holder begins");
            assert!(!intruder.unwrap(), "{w}: the intruder does not");
            assert!(
                matches!(skip, Err(StoreError::Fenced(id)) if id == e[0]),
                "{skip:?}"
            );
        }));
    }
    for task in tasks.drain(..) {
        task.await.unwrap();
    }

    // Complete every push at once, each its own way; some twice (the second is refused).
    let completion = |i: usize| match i % 4 {
        0 => Completion::Delivered,
        1 => Completion::Retry {
            next_attempt_at: t + 60_000 + i as i64,
            error: "busy".into(),
        },
        2 => Completion::Dead {
            error: "invalid".into(),
            reason: DeadReason::Refused,
        },
        _ => Completion::Skipped {
            reason: SkipReason::Unbound,
        },
    };
    for (i, e) in ids.iter().enumerate() {
        let (s, e, c) = (store.clone(), e.clone(), completion(i));
        tasks.push(tokio::spawn(async move {
            let attempt = NewAttempt {
                outbox_id: e[1],
                started_at: t,
                duration_ms: 5,
                http_status: Some(200),
                errcode: Some(0),
                outcome: "ok".into(),
                detail: format!("try {i}"),
                rid: None,
            };
            // (A retry keeps the entry pending: a second one would land too.)
            let twice = i % 5 == 0 && i % 4 != 1;
            let older = [e[0]];
            let (first, second, skip, intruder, unknown) = tokio::join!(
                s.complete_entry(e[1], "a#1", Some(&attempt), &c, t + 10),
                async {
                    if twice {
                        Some(
                            s.complete_entry(e[1], "a#1", Some(&attempt), &c, t + 10)
                                .await,
                        )
                    } else {
                        None
                    }
                },
                s.mark_skipped(&older, SkipReason::Coalesced, "a#1", t + 10),
                s.complete_entry(e[0], "x#9", None, &Completion::Delivered, t + 10),
                s.complete_entry(
                    e[1] + 1_000_000,
                    "a#1",
                    None,
                    &Completion::Delivered,
                    t + 10
                )
            );
            skip.unwrap();
            assert!(
                matches!(intruder, Err(StoreError::Fenced(_))),
                "{intruder:?}"
            );
            assert!(
                matches!(unknown, Err(StoreError::UnknownOutboxEntry(_))),
                "{unknown:?}"
            );
            match second {
                None => first.unwrap(),
                Some(second) => {
                    // Exactly one of the two lands; the other finds the entry settled.
                    let oks = [&first, &second].iter().filter(|r| r.is_ok()).count();
                    let fenced = [&first, &second]
                        .iter()
                        .filter(|r| matches!(r, Err(StoreError::Fenced(_))))
                        .count();
                    assert_eq!((oks, fenced), (1, 1), "{first:?} {second:?}");
                }
            }
        }));
    }
    for task in tasks.drain(..) {
        task.await.unwrap();
    }

    // Release at once: the intruder's releases leave the holder's lease alone.
    for w in &names {
        let (s, w) = (store.clone(), w.clone());
        tasks.push(tokio::spawn(async move {
            let (a, b) = tokio::join!(s.release_waybill(&w, "x#9"), s.release_waybill(&w, "a#1"));
            a.unwrap();
            b.unwrap();
        }));
    }
    for task in tasks.drain(..) {
        task.await.unwrap();
    }

    for (i, (w, e)) in names.iter().zip(&ids).enumerate() {
        let first = store.get_outbox(e[0]).await.unwrap().unwrap();
        assert_eq!(
            (first.state, first.skip_reason),
            (EntryState::Skipped, Some(SkipReason::Coalesced)),
            "{w}"
        );
        let entry = store.get_outbox(e[1]).await.unwrap().unwrap();
        let (state, tries) = (entry.state, entry.tries);
        let attempts = store.list_attempts(e[1]).await.unwrap();
        assert_eq!(
            attempts.len(),
            1,
            "{w}: one attempt, however often completed"
        );
        assert_eq!(attempts[0].detail, format!("try {i}"));
        let (last_time, last_event, inflight) = pushed(&store, w).await;
        assert_eq!(inflight, None, "{w}: nothing in flight after a completion");
        match i % 4 {
            0 => {
                assert_eq!((state, tries), (EntryState::Delivered, 0), "{w}");
                assert_eq!(last_time, Some(2), "{w}");
                assert_eq!(last_event, entry.event_id, "{w}");
                assert_eq!(due_at(&store, w).await, Some(None), "{w}");
            }
            1 => {
                assert_eq!((state, tries), (EntryState::Pending, 1), "{w}");
                assert_eq!(entry.last_error.as_deref(), Some("busy"), "{w}");
                assert_eq!(entry.next_attempt_at, t + 60_000 + i as i64, "{w}");
                assert_eq!(last_time, None, "{w}");
                assert_eq!(due_at(&store, w).await, Some(Some(t + 60_000 + i as i64)));
            }
            2 => {
                assert_eq!((state, tries), (EntryState::Dead, 1), "{w}");
                assert_eq!(entry.last_error.as_deref(), Some("invalid"), "{w}");
                assert!(entry.done_at.is_some(), "{w}");
            }
            _ => {
                assert_eq!(
                    (state, entry.skip_reason),
                    (EntryState::Skipped, Some(SkipReason::Unbound)),
                    "{w}"
                );
            }
        }
    }
    // Every lease was given back: the waybills still due are claimable by anyone.
    let again = store
        .claim_waybills("b#1", t + 61_000 + n, 60_000, n)
        .await
        .unwrap();
    assert_eq!(again.len(), (0..n).filter(|i| i % 4 == 1).count());
}
