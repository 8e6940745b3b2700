//! The push worker's settle ([`Store::settle_push`]), called directly: each command is all
//! or nothing and gets its own outcome, however many settle together.

use futures_util::future::join_all;
use wxexpress::store::{
    Completion, EntryState, NewAttempt, PushStep, PushWrites, SkipReason, Store, StoreError,
};

use crate::{event, migrated, new_event_id, waybill};

const OWNER: &str = "node-a#1";

/// One pending entry on each waybill, all claimed by [`OWNER`]; their outbox ids.
async fn claimed(store: &Store, waybills: &[&str], now: i64) -> Vec<i64> {
    let mut ids = Vec::new();
    for (i, w) in waybills.iter().enumerate() {
        new_event_id(
            store,
            Some(&waybill(w)),
            &event(w, 100001, 1_700_000_000 + i as i64),
        )
        .await;
        ids.push(store.list_outbox(w).await.unwrap()[0].id);
    }
    let mut got = store
        .claim_waybills(OWNER, now, 60_000, waybills.len() as i64)
        .await
        .unwrap();
    got.sort();
    let mut want: Vec<String> = waybills.iter().map(|w| w.to_string()).collect();
    want.sort();
    assert_eq!(got, want);
    ids
}

fn attempt(outbox_id: i64, now: i64, detail: &str) -> NewAttempt {
    NewAttempt {
        outbox_id,
        started_at: now,
        duration_ms: 3,
        http_status: Some(200),
        errcode: Some(0),
        outcome: "delivered".into(),
        detail: detail.into(),
        rid: None,
    }
}

fn complete(waybill_id: &str, outbox_id: i64, now: i64, detail: &str) -> PushWrites {
    PushWrites {
        waybill_id: waybill_id.into(),
        owner: OWNER.into(),
        now,
        step: Some(PushStep::Complete {
            outbox_id,
            attempt: Some(attempt(outbox_id, now, detail)),
            completion: Completion::Delivered,
        }),
        release: true,
        ..PushWrites::default()
    }
}

/// The database refuses an attempt whose detail is `poison` (a fault injected for the test).
async fn refuse_poisoned_attempts(store: &Store) {
    crate::refuse_inserts(
        store,
        "refuse_poison",
        "outbox_attempts",
        "detail",
        "poison",
    )
    .await;
}

/// Settles sent together (one group on SQLite): the one the database refuses fails alone,
/// keeping nothing of itself; the others are applied with the outcomes they would have had
/// alone.
pub async fn a_settle_the_database_refuses_fails_alone_and_the_others_land(store: Store) {
    let store = migrated(store).await;
    let now = 1_700_000_100_000;
    let waybills = ["SFA", "SFBOOM", "SFC", "SFD"];
    let ids = claimed(&store, &waybills, now).await;
    refuse_poisoned_attempts(&store).await;
    let writes = vec![
        complete("SFA", ids[0], now + 1, "ok"),
        complete("SFBOOM", ids[1], now + 1, "poison"),
        PushWrites {
            waybill_id: "SFC".into(),
            owner: OWNER.into(),
            now: now + 1,
            step: Some(PushStep::Begin { outbox_id: ids[2] }),
            ..PushWrites::default()
        },
        complete("SFD", ids[3], now + 1, "ok"),
    ];
    let outcomes = join_all(writes.into_iter().map(|w| store.settle_push(w))).await;
    assert!(matches!(outcomes[0], Ok(true)), "{outcomes:?}");
    assert!(
        matches!(outcomes[1], Err(StoreError::Database(_))),
        "{outcomes:?}"
    );
    assert!(matches!(outcomes[2], Ok(true)), "{outcomes:?}");
    assert!(matches!(outcomes[3], Ok(true)), "{outcomes:?}");

    for (w, id) in [("SFA", ids[0]), ("SFD", ids[3])] {
        let entry = store.get_outbox(id).await.unwrap().unwrap();
        assert_eq!(entry.state, EntryState::Delivered, "{w}");
        assert_eq!(store.list_attempts(id).await.unwrap().len(), 1, "{w}");
        assert_eq!(
            store
                .outcome_of(id)
                .await
                .unwrap()
                .map(|o| o.outcome.as_str().to_owned()),
            Some("delivered".to_owned()),
            "{w}: the outcome is written with the completion"
        );
    }
    let refused = store.get_outbox(ids[1]).await.unwrap().unwrap();
    assert_eq!(refused.state, EntryState::Pending, "nothing of it was kept");
    assert_eq!(refused.tries, 0);
    assert!(store.list_attempts(ids[1]).await.unwrap().is_empty());
    assert!(store.outcome_of(ids[1]).await.unwrap().is_none());
    let begun = store.inflight("SFC").await.unwrap();
    assert_eq!(begun.map(|f| f.outbox_id), Some(ids[2]), "SFC's push began");
}

/// One command in several parts: a skip the fence refuses (an entry of a waybill another
/// owner holds) stops the begin behind it, and the release still runs (it is the step's
/// `finally`).
pub async fn a_refused_skip_stops_its_begin_and_the_release_still_runs(store: Store) {
    let store = migrated(store).await;
    let now = 1_700_000_200_000;
    let ids = claimed(&store, &["SFM"], now).await;
    new_event_id(
        &store,
        Some(&waybill("SFX")),
        &event("SFX", 100001, 1_700_000_000),
    )
    .await;
    let other = store.list_outbox("SFX").await.unwrap()[0].id;
    let taken = store
        .claim_waybills("node-b#1", now, 60_000, 1)
        .await
        .unwrap();
    assert_eq!(taken, ["SFX"]);
    let outcome = store
        .settle_push(PushWrites {
            waybill_id: "SFM".into(),
            owner: OWNER.into(),
            now: now + 1,
            skips: vec![(vec![other], SkipReason::Coalesced)],
            step: Some(PushStep::Begin { outbox_id: ids[0] }),
            release: true,
            ..PushWrites::default()
        })
        .await;
    assert!(
        matches!(outcome, Err(StoreError::Fenced(id)) if id == other),
        "{outcome:?}"
    );
    assert_eq!(
        store.get_outbox(other).await.unwrap().unwrap().state,
        EntryState::Pending,
        "a refused skip changes nothing"
    );
    assert!(store.outcome_of(other).await.unwrap().is_none());
    assert!(store.inflight("SFM").await.unwrap().is_none(), "no begin");
    // Released: another owner claims it at once, without waiting for the lease to lapse.
    let claimed = store
        .claim_waybills("node-c#1", now + 2, 60_000, 5)
        .await
        .unwrap();
    assert_eq!(claimed, ["SFM"], "SFM released; SFX still node-b's");
}

/// A settle by an owner whose lease was taken over changes nothing and says so.
pub async fn a_settle_of_a_lost_lease_is_fenced_and_changes_nothing(store: Store) {
    let store = migrated(store).await;
    let now = 1_700_000_300_000;
    let ids = claimed(&store, &["SFL"], now).await;
    // The lease lapses and node-b takes the waybill.
    let taken = store
        .claim_waybills("node-b#1", now + 61_000, 60_000, 1)
        .await
        .unwrap();
    assert_eq!(taken, ["SFL"]);
    let late = store
        .settle_push(complete("SFL", ids[0], now + 61_500, "ok"))
        .await;
    assert!(
        matches!(late, Err(StoreError::Fenced(id)) if id == ids[0]),
        "{late:?}"
    );
    let entry = store.get_outbox(ids[0]).await.unwrap().unwrap();
    assert_eq!(entry.state, EntryState::Pending);
    assert!(store.list_attempts(ids[0]).await.unwrap().is_empty());
    // node-b still holds it: a third owner cannot claim it.
    let none = store
        .claim_waybills("node-c#1", now + 62_000, 60_000, 1)
        .await
        .unwrap();
    assert!(
        none.is_empty(),
        "the late release did not free node-b's lease"
    );
}
