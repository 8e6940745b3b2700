//! State shared by every instance: the binding cache, the access token and its lease, API
//! pauses.

use wxexpress::store::{Store, TokenRow};

use crate::migrated;

pub async fn binding_answers_are_cached_until_their_ttl_ends(store: Store) {
    let store = migrated(store).await;
    let phone = "a".repeat(64);
    assert_eq!(store.get_binding(&phone, 1_000).await.unwrap(), None);

    store.put_binding(&phone, true, 1_000, 500).await.unwrap();
    assert_eq!(store.get_binding(&phone, 1_000).await.unwrap(), Some(true));
    assert_eq!(store.get_binding(&phone, 1_499).await.unwrap(), Some(true));
    assert_eq!(
        store.get_binding(&phone, 1_500).await.unwrap(),
        None,
        "expired"
    );

    // A negative answer is cached too, and replaces the earlier one.
    store.put_binding(&phone, false, 2_000, 100).await.unwrap();
    assert_eq!(store.get_binding(&phone, 2_050).await.unwrap(), Some(false));
    assert_eq!(store.get_binding(&phone, 2_100).await.unwrap(), None);
    assert_eq!(
        store.get_binding(&"b".repeat(64), 2_050).await.unwrap(),
        None
    );
}

pub async fn exactly_one_of_ten_concurrent_callers_gets_the_token_lease(store: Store) {
    let store = migrated(store).await;
    let now = 1_000_000;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let owner = format!("node-{i}");
                let won = store
                    .try_token_lease("wxapp", &owner, now, 15_000)
                    .await
                    .expect("try_token_lease");
                (owner, won)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (owner, won) = task.await.expect("task");
        if won {
            winners.push(owner);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let winner = &winners[0];
    let row = store
        .get_token("wxapp")
        .await
        .unwrap()
        .expect("row created");
    assert_eq!(row.lease_owner.as_deref(), Some(winner.as_str()));
    assert_eq!(row.lease_until, Some(now + 15_000));
    assert_eq!(
        (row.token_sealed, row.expires_at, row.fetched_at),
        (None, 0, 0)
    );

    // The holder may renew; nobody else until it expires.
    assert!(store
        .try_token_lease("wxapp", winner, now + 1, 15_000)
        .await
        .unwrap());
    assert!(!store
        .try_token_lease("wxapp", "late", now + 15_001, 15_000)
        .await
        .unwrap());
    assert!(store
        .try_token_lease("wxapp", "late", now + 15_002, 15_000)
        .await
        .unwrap());

    // A release by a non-holder does nothing; by the holder frees it.
    store.release_token_lease("wxapp", winner).await.unwrap();
    assert!(!store
        .try_token_lease("wxapp", winner, now + 15_003, 15_000)
        .await
        .unwrap());
    store.release_token_lease("wxapp", "late").await.unwrap();
    assert!(store
        .try_token_lease("wxapp", winner, now + 15_004, 15_000)
        .await
        .unwrap());
    assert!(store
        .try_token_lease("other-app", "late", now, 15_000)
        .await
        .unwrap());
}

pub async fn saving_a_token_stores_it_and_clears_the_lease(store: Store) {
    let store = migrated(store).await;
    assert_eq!(store.get_token("wxapp").await.unwrap(), None);
    assert!(store
        .try_token_lease("wxapp", "node-a", 10, 15_000)
        .await
        .unwrap());
    store
        .save_token("wxapp", &[1, 2, 3, 0, 255], "hash-1", 7_200_000, 20)
        .await
        .unwrap();
    assert_eq!(
        store.get_token("wxapp").await.unwrap(),
        Some(TokenRow {
            appid: "wxapp".into(),
            token_sealed: Some(vec![1, 2, 3, 0, 255]),
            token_hash: Some("hash-1".into()),
            expires_at: 7_200_000,
            fetched_at: 20,
            lease_owner: None,
            lease_until: None,
        })
    );
    assert!(store
        .try_token_lease("wxapp", "node-b", 30, 15_000)
        .await
        .unwrap());

    // Saving without a row first (a caller that skipped the lease) creates it.
    store.save_token("fresh", &[9], "h", 5, 6).await.unwrap();
    let row = store.get_token("fresh").await.unwrap().unwrap();
    assert_eq!((row.expires_at, row.fetched_at), (5, 6));
}

pub async fn a_token_is_invalidated_only_while_it_is_still_the_current_one(store: Store) {
    let store = migrated(store).await;
    assert!(
        !store.invalidate_token("wxapp", "hash-1").await.unwrap(),
        "no row"
    );
    store
        .save_token("wxapp", &[1], "hash-1", 7_200_000, 0)
        .await
        .unwrap();
    // Another instance already replaced the failing token: the new one stays valid.
    store
        .save_token("wxapp", &[2], "hash-2", 9_000_000, 1)
        .await
        .unwrap();
    assert!(!store.invalidate_token("wxapp", "hash-1").await.unwrap());
    assert_eq!(
        store.get_token("wxapp").await.unwrap().unwrap().expires_at,
        9_000_000
    );

    assert!(store.invalidate_token("wxapp", "hash-2").await.unwrap());
    let row = store.get_token("wxapp").await.unwrap().unwrap();
    assert_eq!(row.expires_at, 0);
    assert_eq!(
        row.token_hash.as_deref(),
        Some("hash-2"),
        "the hash is kept"
    );
}

pub async fn api_pauses_apply_until_their_end_and_are_listed_while_active(store: Store) {
    let store = migrated(store).await;
    assert_eq!(store.api_paused_until("pathnotify", 0).await.unwrap(), None);
    store
        .pause_api("pathnotify", 5_000, "errcode 45009")
        .await
        .unwrap();
    store
        .pause_api("userquery", 3_000, "errcode 45009")
        .await
        .unwrap();
    assert_eq!(
        store.api_paused_until("pathnotify", 4_999).await.unwrap(),
        Some(5_000)
    );
    assert_eq!(
        store.api_paused_until("pathnotify", 5_000).await.unwrap(),
        None
    );
    assert_eq!(
        store.list_pauses(2_000).await.unwrap(),
        vec![
            ("pathnotify".to_owned(), 5_000, "errcode 45009".to_owned()),
            ("userquery".to_owned(), 3_000, "errcode 45009".to_owned()),
        ]
    );
    assert_eq!(
        store.list_pauses(3_000).await.unwrap(),
        vec![("pathnotify".to_owned(), 5_000, "errcode 45009".to_owned())]
    );

    // A new pause replaces the old one.
    store
        .pause_api("pathnotify", 9_000, "quota again")
        .await
        .unwrap();
    assert_eq!(
        store.list_pauses(6_000).await.unwrap(),
        vec![("pathnotify".to_owned(), 9_000, "quota again".to_owned())]
    );
    assert!(store.list_pauses(9_000).await.unwrap().is_empty());
}
