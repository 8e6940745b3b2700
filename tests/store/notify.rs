//! Shipping notifications: enqueued with their event, claimed per openid, consent taken
//! atomically (grants and legacy credentials), completed without touching the push queue,
//! and payments recorded once per transaction.

use wxexpress::store::{
    Completion, CredentialInsert, DeadReason, EntryKind, EntryState, EventInsert, GrantTake,
    NewAttempt, NewCredential, NewPayment, NotificationIntent, NotificationPlan, NotifyKind,
    PaymentInsert, ReportOutcome, Role, SkipReason, Store, StoreError, SubscriptionGrant,
    WaybillRecord,
};

use crate::{due_at, event, migrated, waybill};

fn with_openids(id: &str, sender: Option<&str>, receiver: Option<&str>) -> WaybillRecord {
    WaybillRecord {
        sender_openid: sender.map(str::to_owned),
        receiver_openid: receiver.map(str::to_owned),
        ..waybill(id)
    }
}

fn intent(rule: &str, role: Role, kind: NotifyKind, template_id: &str) -> NotificationIntent {
    NotificationIntent {
        rule: rule.into(),
        role,
        kind,
        template_id: template_id.into(),
    }
}

fn plan() -> NotificationPlan {
    let mut p = NotificationPlan::new();
    p.add(
        300003,
        intent("delivered", Role::Sender, NotifyKind::Subscribe, "T1"),
    );
    p.add(
        300003,
        intent("delivered", Role::Receiver, NotifyKind::Subscribe, "T1"),
    );
    // The same message twice for one user (another rule) is enqueued once.
    p.add(
        300003,
        intent("again", Role::Sender, NotifyKind::Subscribe, "T1"),
    );
    p.add(
        90011,
        intent("paid", Role::Sender, NotifyKind::Template, "L1"),
    );
    p
}

/// Records a new event with the test plan; its id.
async fn record(store: &Store, w: Option<&WaybillRecord>, e: &wxexpress::store::NewEvent) -> i64 {
    match store.record_event(w, e, &plan()).await.unwrap() {
        EventInsert::Inserted { id } => id,
        other => panic!("expected a new event, got {other:?}"),
    }
}

/// Enqueues one subscribe notification for `openid` (as the sender of a fresh waybill).
async fn one_notification(store: &Store, waybill_id: &str, openid: &str, at: i64) -> i64 {
    let w = with_openids(waybill_id, Some(openid), None);
    record(store, Some(&w), &event(waybill_id, 300003, at)).await;
    let n = store.list_outbox(waybill_id).await.unwrap();
    n.iter()
        .find(|e| e.kind == EntryKind::Subscribe)
        .expect("enqueued")
        .id
}

fn attempt(outbox_id: i64, errcode: i64) -> NewAttempt {
    NewAttempt {
        outbox_id,
        started_at: 1,
        duration_ms: 2,
        http_status: Some(200),
        errcode: Some(errcode),
        outcome: "x".into(),
        detail: "subscribe/send".into(),
        rid: Some(format!("rid-{outbox_id}")),
    }
}

pub async fn an_event_enqueues_one_notification_per_recipient_in_its_transaction(store: Store) {
    let store = migrated(store).await;
    let w = with_openids("N1", Some("oSender"), Some("oReceiver"));
    let e = event("N1", 300003, 1_700_000_000);
    let event_id = record(&store, Some(&w), &e).await;

    let entries = store.list_outbox("N1").await.unwrap();
    let kinds: Vec<(&str, Option<&str>)> = entries
        .iter()
        .map(|e| (e.kind.as_str(), e.recipient.as_deref()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("pathnotify", None),
            ("subscribe", Some("oSender")),
            ("subscribe", Some("oReceiver"))
        ]
    );
    let n = store
        .get_notification(entries[1].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (n.rule.as_str(), n.role.as_str(), n.template_id.as_str()),
        ("delivered", "sender", "T1")
    );
    assert_eq!(
        (n.entry.event_id, n.entry.state.as_str()),
        (Some(event_id), "pending")
    );
    assert_eq!(n.consent_held, 0);
    assert_eq!(
        store.get_notification(entries[0].id).await.unwrap(),
        None,
        "a path node"
    );

    // A duplicate event writes nothing; an action type without rules only its path node; a
    // waybill without openids no notification.
    let again = store.record_event(None, &e, &plan()).await.unwrap();
    assert_eq!(again, EventInsert::Duplicate { id: event_id });
    record(&store, None, &event("N1", 200001, 1_700_000_100)).await;
    assert_eq!(store.list_outbox("N1").await.unwrap().len(), 4);
    record(
        &store,
        Some(&waybill("N2")),
        &event("N2", 300003, 1_700_000_000),
    )
    .await;
    assert_eq!(store.list_outbox("N2").await.unwrap().len(), 1);

    // An unknown waybill stores nothing at all.
    let err = store
        .record_event(None, &event("NOPE", 300003, 1), &plan())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownWaybill(_)));
}

pub async fn a_batch_enqueues_notifications_for_its_good_new_items_only(store: Store) {
    let store = migrated(store).await;
    let w = with_openids("B1", Some("oS"), None);
    let items = vec![
        (Some(w.clone()), event("B1", 300003, 1_700_000_000)),
        (None, event("B1", 300003, 1_700_000_000)),
        (None, event("UNKNOWN", 300003, 1_700_000_000)),
    ];
    let outcomes = store.record_events_batch(&items, &plan()).await.unwrap();
    assert!(matches!(outcomes[0], Ok(EventInsert::Inserted { .. })));
    assert!(matches!(outcomes[1], Ok(EventInsert::Duplicate { .. })));
    assert!(matches!(outcomes[2], Err(StoreError::UnknownWaybill(_))));
    let kinds: Vec<EntryKind> = store
        .list_outbox("B1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, [EntryKind::Pathnotify, EntryKind::Subscribe]);
}

pub async fn a_user_is_never_claimed_by_two_owners_while_its_lease_is_valid(store: Store) {
    let store = migrated(store).await;
    let t = 1_700_000_000;
    for (i, openid) in ["oA", "oB", "oC"].iter().enumerate() {
        one_notification(&store, &format!("C{i}"), openid, t).await;
    }
    // The entries are due at their received_at; ten owners race for them.
    let now = t * 1_000 + 10_000;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let owner = format!("node-{i}");
                let got = store
                    .claim_recipients(&owner, now, 30_000, 10)
                    .await
                    .unwrap();
                (owner, got)
            })
        })
        .collect();
    let mut claimed: Vec<(String, String)> = Vec::new();
    for task in tasks {
        let (owner, got) = task.await.unwrap();
        claimed.extend(got.into_iter().map(|o| (o, owner.clone())));
    }
    claimed.sort();
    let users: Vec<&str> = claimed.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(users, ["oA", "oB", "oC"], "each user once: {claimed:?}");

    // Only the holder extends or releases; after release (or expiry) another owner may claim.
    let (user, holder) = &claimed[0];
    assert!(!store
        .extend_recipient_lease(user, "stranger", now + 1)
        .await
        .unwrap());
    assert!(store
        .extend_recipient_lease(user, holder, now + 60_000)
        .await
        .unwrap());
    store.release_recipient(user, "stranger").await.unwrap();
    assert!(store
        .claim_recipients("late", now, 30_000, 10)
        .await
        .unwrap()
        .is_empty());
    store.release_recipient(user, holder).await.unwrap();
    assert_eq!(
        store
            .claim_recipients("late", now, 30_000, 10)
            .await
            .unwrap(),
        std::slice::from_ref(user)
    );
    assert_eq!(
        store
            .claim_recipients("later", now + 31_000, 30_000, 10)
            .await
            .unwrap(),
        ["oA", "oB", "oC"],
        "expired leases can be taken over"
    );
    // Work lists only the user's due pending notifications.
    let work = store.load_notification_work(user, now, 10).await.unwrap();
    assert_eq!(work.len(), 1);
    assert!(store
        .load_notification_work(user, t * 1_000 - 1, 10)
        .await
        .unwrap()
        .is_empty());
}

pub async fn two_instances_racing_for_the_last_grant_send_once(store: Store) {
    let store = migrated(store).await;
    let t = 1_700_000_000;
    let first = one_notification(&store, "G1", "oG", t).await;
    let second = one_notification(&store, "G2", "oG", t).await;
    let grant = |count| SubscriptionGrant {
        template_id: "T1".into(),
        count,
        long_term: false,
    };
    assert_eq!(
        store
            .add_subscriptions("oG", &[grant(1)], None, 1)
            .await
            .unwrap(),
        ReportOutcome::Applied
    );
    let race = |id: i64| {
        let store = store.clone();
        tokio::spawn(async move { store.take_grant(id, "oG", "T1", 2).await.unwrap() })
    };
    let (a, b) = (race(first), race(second));
    let mut results = vec![a.await.unwrap(), b.await.unwrap()];
    results.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(
        results,
        [GrantTake::NoGrant, GrantTake::Taken { remaining: 0 }]
    );
    let rows = store.subscriptions_of("oG").await.unwrap();
    assert_eq!(rows[0].remaining, 0);
    // The entry that got it keeps it for its retries; the other holds nothing.
    let mut held = 0;
    for id in [first, second] {
        if store.take_grant(id, "oG", "T1", 3).await.unwrap() == GrantTake::AlreadyHeld {
            held += 1;
        }
    }
    assert_eq!(held, 1);

    // Many racers, three grants: exactly three win.
    store
        .add_subscriptions(
            "oH",
            &[SubscriptionGrant {
                template_id: "T1".into(),
                count: 3,
                long_term: false,
            }],
            None,
            1,
        )
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(one_notification(&store, &format!("H{i}"), "oH", t).await);
    }
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let store = store.clone();
            let id = *id;
            tokio::spawn(async move { store.take_grant(id, "oH", "T1", 2).await.unwrap() })
        })
        .collect();
    let mut taken = 0;
    for task in tasks {
        if matches!(task.await.unwrap(), GrantTake::Taken { .. }) {
            taken += 1;
        }
    }
    assert_eq!(taken, 3);

    // A long-term template is never used up; 43101 revokes it.
    store
        .add_subscriptions(
            "oL",
            &[SubscriptionGrant {
                template_id: "T1".into(),
                count: 0,
                long_term: true,
            }],
            None,
            1,
        )
        .await
        .unwrap();
    for i in 0..3 {
        let id = one_notification(&store, &format!("L{i}"), "oL", t).await;
        assert_eq!(
            store.take_grant(id, "oL", "T1", 2).await.unwrap(),
            GrantTake::Taken { remaining: 0 }
        );
    }
    store.revoke_subscriptions("oL", "T1", 3).await.unwrap();
    let id = one_notification(&store, "L9", "oL", t).await;
    assert_eq!(
        store.take_grant(id, "oL", "T1", 4).await.unwrap(),
        GrantTake::NoGrant
    );
    assert!(matches!(
        store.take_grant(999_999, "oL", "T1", 4).await,
        Err(StoreError::UnknownOutboxEntry(999_999))
    ));
}

pub async fn a_replayed_report_counts_once_and_a_reused_key_is_refused(store: Store) {
    let store = migrated(store).await;
    let g = |t: &str, count| SubscriptionGrant {
        template_id: t.into(),
        count,
        long_term: false,
    };
    let report = [g("T1", 2), g("T2", 1)];
    let key = Some(("k-1", "hash-a"));
    assert_eq!(
        store
            .add_subscriptions("o1", &report, key, 10)
            .await
            .unwrap(),
        ReportOutcome::Applied
    );
    assert_eq!(
        store
            .add_subscriptions("o1", &report, key, 11)
            .await
            .unwrap(),
        ReportOutcome::Duplicate
    );
    assert_eq!(
        store
            .add_subscriptions("o1", &[g("T1", 5)], Some(("k-1", "hash-b")), 12)
            .await
            .unwrap(),
        ReportOutcome::KeyReused
    );
    assert_eq!(
        store
            .add_subscriptions("o2", &report, key, 12)
            .await
            .unwrap(),
        ReportOutcome::KeyReused
    );
    // Without a key, every report adds.
    store
        .add_subscriptions("o1", &[g("T1", 1)], None, 13)
        .await
        .unwrap();
    let rows = store.subscriptions_of("o1").await.unwrap();
    let left: Vec<(&str, i64)> = rows
        .iter()
        .map(|r| (r.template_id.as_str(), r.remaining))
        .collect();
    assert_eq!(left, [("T1", 3), ("T2", 1)]);
    assert!(store.subscriptions_of("o2").await.unwrap().is_empty());
}

pub async fn credentials_are_used_soonest_expiring_first_and_never_past_their_uses_or_expiry(
    store: Store,
) {
    let store = migrated(store).await;
    let now = 1_700_000_000;
    let cred = |kind: &str, value: &str, issued_at: i64| NewCredential {
        openid: "oP".into(),
        kind: kind.into(),
        value: value.into(),
        max_uses: if kind == "form_id" { 1 } else { 3 },
        issued_at,
        expires_at: issued_at + 7 * 86_400,
        created_at: 1,
    };
    let prepay = cred("prepay_id", "wxPREPAY", now - 3_600);
    let form = cred("form_id", "FORM1", now - 86_400);
    let stale = cred("form_id", "OLDFORM", now - 7 * 86_400 + 30);
    for c in [&prepay, &form, &stale] {
        assert!(matches!(
            store.add_credential(c).await.unwrap(),
            CredentialInsert::Inserted(_)
        ));
    }
    let entry = one_notification(&store, "P1", "oP", now).await;
    let take = || store.take_credential(entry, "oP", now, 60);

    // `stale` expires within the margin: never offered. Then the form_id (sooner), then the
    // prepay_id three times, then nothing: a fourth message on one prepay_id is never sent.
    let mut taken = Vec::new();
    for _ in 0..5 {
        taken.push(take().await.unwrap().map(|c| (c.value, c.uses)));
    }
    assert_eq!(
        taken,
        [
            Some(("FORM1".to_string(), 1)),
            Some(("wxPREPAY".to_string(), 1)),
            Some(("wxPREPAY".to_string(), 2)),
            Some(("wxPREPAY".to_string(), 3)),
            None,
        ]
    );
    let n = store.get_notification(entry).await.unwrap().unwrap();
    assert!(
        n.credential_id.is_some(),
        "the last offered credential is noted"
    );

    // A replayed registration changes nothing (no reset of uses).
    match store.add_credential(&prepay).await.unwrap() {
        CredentialInsert::Existing(row) => assert_eq!((row.uses, row.max_uses), (3, 3)),
        other => panic!("{other:?}"),
    }

    // A discarded credential (41028/41029) is never offered; an expired one neither.
    let fresh = cred("prepay_id", "wxFRESH", now);
    let CredentialInsert::Inserted(row) = store.add_credential(&fresh).await.unwrap() else {
        panic!("new");
    };
    store.discard_credential(row.id, "41028").await.unwrap();
    assert_eq!(take().await.unwrap(), None);
    let later = cred("form_id", "FORM2", now);
    store.add_credential(&later).await.unwrap();
    assert_eq!(
        store
            .take_credential(entry, "oP", later.expires_at, 0)
            .await
            .unwrap(),
        None
    );
    let listed = store.credentials_of("oP").await.unwrap();
    assert_eq!(listed.len(), 5);
    assert_eq!(
        listed
            .iter()
            .find(|c| c.value == "wxFRESH")
            .unwrap()
            .discarded
            .as_deref(),
        Some("41028")
    );

    // Two racers for the last use of a prepay_id: one gets it.
    let last = NewCredential {
        openid: "oQ".into(),
        ..cred("prepay_id", "wxLAST", now)
    };
    store.add_credential(&last).await.unwrap();
    let e1 = one_notification(&store, "Q1", "oQ", now).await;
    let e2 = one_notification(&store, "Q2", "oQ", now).await;
    store
        .take_credential(e1, "oQ", now, 0)
        .await
        .unwrap()
        .unwrap();
    store
        .take_credential(e1, "oQ", now, 0)
        .await
        .unwrap()
        .unwrap();
    let race = |id: i64| {
        let store = store.clone();
        tokio::spawn(async move { store.take_credential(id, "oQ", now, 0).await.unwrap() })
    };
    let (a, b) = (race(e1), race(e2));
    let got = [a.await.unwrap(), b.await.unwrap()];
    assert_eq!(got.iter().filter(|g| g.is_some()).count(), 1, "{got:?}");
}

pub async fn completing_a_notification_leaves_the_push_queue_alone_and_43101_revokes_consent(
    store: Store,
) {
    let store = migrated(store).await;
    let t = 1_700_000_000;
    let w = with_openids("K1", Some("oK"), None);
    record(&store, Some(&w), &event("K1", 300003, t)).await;
    let entries = store.list_outbox("K1").await.unwrap();
    let (path, note) = (entries[0].id, entries[1].id);
    let claimed = store
        .claim_recipients("n", i64::MAX / 4, 60_000, 10)
        .await
        .unwrap();
    assert_eq!(claimed, ["oK"]);
    store
        .add_subscriptions(
            "oK",
            &[SubscriptionGrant {
                template_id: "T1".into(),
                count: 2,
                long_term: false,
            }],
            None,
            1,
        )
        .await
        .unwrap();

    // Delivering the notification does not move the waybill's pushed position.
    store
        .complete_notification(
            note,
            "n",
            Some(&attempt(note, 0)),
            &Completion::Delivered,
            false,
            5,
        )
        .await
        .unwrap();
    let work = store.load_push_work("K1").await.unwrap().unwrap();
    assert_eq!(work.last_pushed_action_time, None);
    assert_eq!(work.pending.len(), 1, "the path node is still to push");
    assert_eq!(
        store.get_outbox(note).await.unwrap().unwrap().state,
        EntryState::Delivered
    );
    let attempts = store.list_attempts(note).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        attempts[0].rid,
        Some(format!("rid-{note}")),
        "the rid is kept"
    );
    // complete_notification refuses a path node, writing nothing.
    assert!(matches!(
        store
            .complete_notification(
                path,
                "n",
                Some(&attempt(path, 0)),
                &Completion::Delivered,
                false,
                5
            )
            .await,
        Err(StoreError::UnknownOutboxEntry(_))
    ));
    assert!(store.list_attempts(path).await.unwrap().is_empty());

    // Only the holder of the user's lease completes a notification.
    record(&store, None, &event("K1", 300003, t + 5)).await;
    let fenced = store.list_outbox("K1").await.unwrap().last().unwrap().id;
    let late = store
        .complete_notification(
            fenced,
            "someone-else",
            Some(&attempt(fenced, 0)),
            &Completion::Delivered,
            false,
            5,
        )
        .await;
    assert!(matches!(late, Err(StoreError::Fenced(_))), "{late:?}");
    assert_eq!(
        store.get_outbox(fenced).await.unwrap().unwrap().state,
        EntryState::Pending
    );
    assert!(store.list_attempts(fenced).await.unwrap().is_empty());
    store
        .complete_notification(fenced, "n", None, &Completion::Delivered, false, 5)
        .await
        .unwrap();

    // 43101: skipped for lack of consent, and the user's count for the template is zero.
    record(&store, None, &event("K1", 300003, t + 10)).await;
    let second = store.list_outbox("K1").await.unwrap().last().unwrap().id;
    store
        .complete_notification(
            second,
            "n",
            Some(&attempt(second, 43101)),
            &Completion::Skipped {
                reason: SkipReason::NoConsent,
            },
            true,
            6,
        )
        .await
        .unwrap();
    assert_eq!(store.subscriptions_of("oK").await.unwrap()[0].remaining, 0);
    let e = store.get_outbox(second).await.unwrap().unwrap();
    assert_eq!(
        (e.state, e.skip_reason),
        (EntryState::Skipped, Some(SkipReason::NoConsent))
    );

    // Dead notifications come back with the outbox's redrive; attempts stay listed.
    record(&store, None, &event("K1", 300003, t + 20)).await;
    let third = store.list_outbox("K1").await.unwrap().last().unwrap().id;
    store
        .complete_notification(
            third,
            "n",
            Some(&attempt(third, 47003)),
            &Completion::Dead {
                error: "47003".into(),
                reason: DeadReason::Refused,
            },
            false,
            7,
        )
        .await
        .unwrap();
    store
        .record_notification_attempt(&attempt(third, 41029))
        .await
        .unwrap();
    assert_eq!(store.list_attempts(third).await.unwrap().len(), 2);
    assert!(store.retry_entry(third, 8).await.unwrap());
    assert_eq!(
        store.get_outbox(third).await.unwrap().unwrap().state,
        EntryState::Pending
    );

    // Releasing the waybill recomputes its due time from path nodes only.
    let claimed = store
        .claim_waybills("w", t * 1_000 + 100_000, 30_000, 10)
        .await
        .unwrap();
    assert_eq!(claimed, ["K1"]);
    for e in store.load_push_work("K1").await.unwrap().unwrap().pending {
        store
            .complete_entry(e.id, "w", None, &Completion::Delivered, 9)
            .await
            .unwrap();
    }
    store.release_waybill("K1", "w").await.unwrap();
    assert_eq!(
        due_at(&store, "K1").await,
        Some(None),
        "a pending notification keeps no waybill due"
    );
    let counts = store.notification_counts().await.unwrap();
    assert!(
        counts.contains(&(EntryKind::Subscribe, EntryState::Pending, None, 1)),
        "{counts:?}"
    );
}

pub async fn a_payment_records_its_event_once_per_transaction(store: Store) {
    let store = migrated(store).await;
    let w = WaybillRecord {
        payment_out_trade_no: Some("WX1".into()),
        payment_total_fee: Some(1990),
        ..with_openids("PAY1", Some("oPay"), None)
    };
    store.upsert_waybill(&w).await.unwrap();
    let found = store.find_waybills_by_out_trade_no("WX1").await.unwrap();
    assert_eq!(found.len(), 1);
    assert!(store
        .find_waybills_by_out_trade_no("WX2")
        .await
        .unwrap()
        .is_empty());

    let payment = NewPayment {
        transaction_id: "4200001".into(),
        waybill_id: "PAY1".into(),
        out_trade_no: "WX1".into(),
        total_fee: 1990,
        received_at: 5,
    };
    let paid = event("PAY1", 90011, 1_700_000_000);
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let (store, payment, paid) = (store.clone(), payment.clone(), paid.clone());
            tokio::spawn(async move {
                store
                    .record_payment(&payment, &paid, &plan())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut recorded = 0;
    for task in tasks {
        match task.await.unwrap() {
            PaymentInsert::Recorded {
                event: EventInsert::Inserted { .. },
            } => recorded += 1,
            PaymentInsert::Repeat => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(recorded, 1);
    let events = store.list_events("PAY1").await.unwrap();
    assert_eq!(events.len(), 1);
    let p = store.get_payment("4200001").await.unwrap().unwrap();
    assert_eq!(p.event_id, Some(events[0].id));
    let kinds: Vec<EntryKind> = store
        .list_outbox("PAY1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [EntryKind::Pathnotify, EntryKind::Template],
        "the event flows like any other"
    );
    assert_eq!(store.count_events().await.unwrap(), 1);
}

/// The set-based batch gives exactly what storing its lines one by one, in order, gives:
/// the same outcomes (a duplicate of the same line), the same rows, and notifications to
/// the openids each line's waybill had as of that line. 1,500 lines, so the batch spans
/// several transactions; waybills sent before, within and after the lines that rely on them.
pub async fn a_batch_stores_what_its_lines_stored_one_by_one_would(store: Store) {
    let store = migrated(store).await;
    let mut seed: u64 = 0x5eed;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    // (waybill number, record with openid number?, action type, action time)
    let mut lines = Vec::new();
    for _ in 0..1_500 {
        let w = next(40);
        let record = (next(4) == 0).then(|| next(3));
        let action = [100001, 200001, 300003][next(3) as usize];
        lines.push((w, record, action, 1_700_000_000 + next(30) as i64));
    }
    let item = |prefix: &str, &(w, record, action, time): &(u64, Option<u64>, i64, i64)| {
        let id = format!("{prefix}{w}");
        let waybill =
            record.map(|o| with_openids(&id, Some(&format!("oS{o}")), Some(&format!("oR{w}"))));
        (waybill, event(&id, action, time))
    };
    // Waybills 0–9 are stored before, with one event each, on both sides.
    for prefix in ["B", "S"] {
        for w in 0..10 {
            let id = format!("{prefix}{w}");
            store
                .upsert_waybill(&with_openids(&id, Some("oS-old"), None))
                .await
                .unwrap();
            store
                .record_event(None, &event(&id, 300003, 1_700_000_005), &plan())
                .await
                .unwrap();
        }
    }
    let batch: Vec<_> = lines.iter().map(|l| item("B", l)).collect();
    let together = store.record_events_batch(&batch, &plan()).await.unwrap();
    let mut alone = Vec::new();
    for line in &lines {
        let (waybill, event) = item("S", line);
        alone.push(store.record_event(waybill.as_ref(), &event, &plan()).await);
    }
    // Outcomes, with ids replaced by the line that stored the event (or "before").
    let describe = |outcomes: &[Result<EventInsert, StoreError>]| {
        let mut first_line = std::collections::HashMap::new();
        outcomes
            .iter()
            .enumerate()
            .map(|(i, o)| match o {
                Ok(EventInsert::Inserted { id }) => {
                    first_line.insert(*id, i);
                    "inserted".to_string()
                }
                Ok(EventInsert::Duplicate { id }) => match first_line.get(id) {
                    Some(line) => format!("duplicate of line {line}"),
                    None => "duplicate of a stored event".to_string(),
                },
                Err(StoreError::UnknownWaybill(_)) => "unknown waybill".to_string(),
                Err(e) => format!("error {e}"),
            })
            .collect::<Vec<_>>()
    };
    let (together, alone) = (describe(&together), describe(&alone));
    assert!(together.iter().any(|o| o == "unknown waybill"));
    assert!(together.iter().any(|o| o.starts_with("duplicate of line")));
    assert_eq!(together, alone);
    for w in 0..40 {
        let rows = |prefix: &str| {
            let store = store.clone();
            let id = format!("{prefix}{w}");
            async move {
                let waybill = store.get_waybill(&id).await.unwrap().map(|mut r| {
                    r.waybill_id.clear();
                    (
                        r.sender_openid.clone(),
                        r.receiver_openid.clone(),
                        r.updated_at,
                    )
                });
                let events: Vec<_> = store
                    .list_events(&id)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|e| (e.action_type, e.action_time, e.payload, e.received_at))
                    .collect();
                // The same entries; their ids may be in another order (a batch writes its
                // path entries before its notifications).
                let mut outbox: Vec<_> = store
                    .list_outbox(&id)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|e| (e.kind, e.action_time, e.recipient, e.state))
                    .collect();
                outbox.sort();
                (waybill, events, outbox)
            }
        };
        assert_eq!(rows("B").await, rows("S").await, "waybill {w}");
    }
}
