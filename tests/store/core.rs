//! Waybills, events, callback exchanges, meta, migrations and the committed schema.

use wxexpress::store::{
    Backend, EventInsert, ExchangeInsert, NewEvent, NewExchange, NotificationPlan, Store,
    StoreError, WaybillRecord,
};

use crate::{event, exchange, migrated, waybill};

pub async fn migrating_twice_is_harmless(store: Store) {
    store.migrate().await.expect("first migrate");
    store.migrate().await.expect("second migrate");
    store
        .check_ready()
        .await
        .expect("ready after migrating twice");
    assert!(store.upsert_waybill(&waybill("SF1")).await.unwrap());
}

pub async fn check_ready_fails_before_migrate_and_passes_after(store: Store) {
    let before = store.check_ready().await;
    assert!(
        matches!(before, Err(StoreError::NotMigrated)),
        "expected NotMigrated, got {before:?}"
    );
    store.migrate().await.unwrap();
    store.check_ready().await.expect("ready after migrate");
}

pub async fn a_waybill_is_created_then_updated_keeping_its_created_at(store: Store) {
    let store = migrated(store).await;
    let first = waybill("SF100");
    assert!(store.upsert_waybill(&first).await.unwrap(), "created");
    assert_eq!(
        store.get_waybill("SF100").await.unwrap(),
        Some(first.clone())
    );

    let second = WaybillRecord {
        contacts: vec![9, 9, 9],
        receiver_phone_hash: "b".repeat(64),
        sender_phone_hash: None,
        sender_openid: Some("o-sender".into()),
        receiver_openid: Some("o-receiver".into()),
        payment_out_trade_no: Some("T1".into()),
        payment_total_fee: Some(1200),
        created_at: first.created_at + 5_000,
        updated_at: first.updated_at + 5_000,
        ..first.clone()
    };
    assert!(!store.upsert_waybill(&second).await.unwrap(), "updated");
    let stored = store.get_waybill("SF100").await.unwrap().expect("stored");
    assert_eq!(
        stored,
        WaybillRecord {
            created_at: first.created_at,
            ..second
        }
    );
    assert_eq!(store.get_waybill("NOPE").await.unwrap(), None);
    assert_eq!(store.count_waybills().await.unwrap(), 1);
}

pub async fn a_duplicate_event_returns_the_same_id_and_is_stored_once(store: Store) {
    let store = migrated(store).await;
    store.upsert_waybill(&waybill("SF1")).await.unwrap();
    let first = event("SF1", 100001, 1_700_000_000);
    let EventInsert::Inserted { id } = store
        .record_event(None, &first, &NotificationPlan::default())
        .await
        .unwrap()
    else {
        panic!("first record is an insert");
    };

    let retry = NewEvent {
        payload: vec![7; 8],
        received_at: first.received_at + 1,
        ..first.clone()
    };
    assert_eq!(
        store
            .record_event(None, &retry, &NotificationPlan::default())
            .await
            .unwrap(),
        EventInsert::Duplicate { id }
    );
    assert_eq!(store.count_events().await.unwrap(), 1);
    let listed = store.list_events("SF1").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].payload, first.payload,
        "the first payload is kept"
    );
}

pub async fn an_event_for_an_unknown_waybill_stores_nothing(store: Store) {
    let store = migrated(store).await;
    let outcome = store
        .record_event(
            None,
            &event("GHOST", 100001, 1),
            &NotificationPlan::default(),
        )
        .await;
    assert!(
        matches!(&outcome, Err(StoreError::UnknownWaybill(id)) if id == "GHOST"),
        "{outcome:?}"
    );
    assert_eq!(store.count_events().await.unwrap(), 0);
    assert_eq!(store.count_waybills().await.unwrap(), 0);
}

pub async fn an_event_with_its_waybill_in_the_same_call_stores_both(store: Store) {
    let store = migrated(store).await;
    let w = waybill("SF2");
    let outcome = store
        .record_event(
            Some(&w),
            &event("SF2", 100001, 1),
            &NotificationPlan::default(),
        )
        .await
        .unwrap();
    assert!(matches!(outcome, EventInsert::Inserted { .. }));
    assert_eq!(store.get_waybill("SF2").await.unwrap(), Some(w));
    assert_eq!(store.list_events("SF2").await.unwrap().len(), 1);
}

pub async fn an_event_with_the_record_of_another_waybill_stores_nothing(store: Store) {
    let store = migrated(store).await;
    let outcome = store
        .record_event(
            Some(&waybill("SF3")),
            &event("SF4", 100001, 1),
            &NotificationPlan::default(),
        )
        .await;
    assert!(
        matches!(outcome, Err(StoreError::WaybillMismatch { .. })),
        "{outcome:?}"
    );
    assert_eq!(store.count_waybills().await.unwrap(), 0);
    assert_eq!(store.count_events().await.unwrap(), 0);
}

pub async fn a_batch_keeps_its_good_items_and_reports_duplicates_and_unknown_waybills(
    store: Store,
) {
    let store = migrated(store).await;
    store.upsert_waybill(&waybill("OLD")).await.unwrap();
    let EventInsert::Inserted { id: old_id } = store
        .record_event(
            None,
            &event("OLD", 100001, 10),
            &NotificationPlan::default(),
        )
        .await
        .unwrap()
    else {
        panic!("insert");
    };

    let items = vec![
        (Some(waybill("NEW")), event("NEW", 100001, 20)), // good, creates its waybill
        (None, event("OLD", 200001, 30)),                 // good, existing waybill
        (None, event("GHOST", 100001, 40)),               // unknown waybill
        (None, event("NEW", 100001, 20)),                 // duplicate of item 0
        (None, event("OLD", 100001, 10)),                 // duplicate of a stored event
        (Some(waybill("X")), event("Y", 100001, 50)),     // mismatched waybill record
    ];
    let outcomes = store
        .record_events_batch(&items, &NotificationPlan::default())
        .await
        .expect("batch");
    assert_eq!(outcomes.len(), items.len());

    let new_id = match outcomes[0] {
        Ok(EventInsert::Inserted { id }) => id,
        ref other => panic!("item 0: {other:?}"),
    };
    assert!(
        matches!(outcomes[1], Ok(EventInsert::Inserted { .. })),
        "{:?}",
        outcomes[1]
    );
    assert!(
        matches!(&outcomes[2], Err(StoreError::UnknownWaybill(id)) if id == "GHOST"),
        "{:?}",
        outcomes[2]
    );
    assert!(matches!(outcomes[3], Ok(EventInsert::Duplicate { id }) if id == new_id));
    assert!(matches!(outcomes[4], Ok(EventInsert::Duplicate { id }) if id == old_id));
    assert!(matches!(
        outcomes[5],
        Err(StoreError::WaybillMismatch { .. })
    ));

    assert_eq!(store.count_events().await.unwrap(), 3);
    assert_eq!(
        store.count_waybills().await.unwrap(),
        2,
        "OLD and NEW, not X"
    );
    assert_eq!(store.list_events("NEW").await.unwrap().len(), 1);
    assert_eq!(store.list_events("OLD").await.unwrap().len(), 2);
}

pub async fn events_are_listed_newest_first_with_ties_broken_by_id(store: Store) {
    let store = migrated(store).await;
    store.upsert_waybill(&waybill("SF5")).await.unwrap();
    let mut ids = Vec::new();
    for (action_type, action_time) in [(100001, 100), (200001, 300), (300002, 200), (300003, 300)] {
        let outcome = store
            .record_event(
                None,
                &event("SF5", action_type, action_time),
                &NotificationPlan::default(),
            )
            .await
            .unwrap();
        ids.push(outcome.id());
    }
    let listed: Vec<(i64, i64)> = store
        .list_events("SF5")
        .await
        .unwrap()
        .iter()
        .map(|e| (e.id, e.action_time))
        .collect();
    assert_eq!(
        listed,
        vec![(ids[3], 300), (ids[1], 300), (ids[2], 200), (ids[0], 100)]
    );
    assert!(store.list_events("NOPE").await.unwrap().is_empty());
}

pub async fn a_repeated_exchange_dedupe_key_returns_the_existing_row(store: Store) {
    let store = migrated(store).await;
    let first = exchange(Some("SF6"), Some("msg-1"), 1_000);
    let ExchangeInsert::Inserted { id } = store.record_exchange(&first).await.unwrap() else {
        panic!("first exchange is an insert");
    };

    let again = NewExchange {
        summary: "second delivery".into(),
        reply: Some(vec![2; 4]),
        received_at: 2_000,
        ..first.clone()
    };
    let ExchangeInsert::Duplicate(existing) = store.record_exchange(&again).await.unwrap() else {
        panic!("same key is a duplicate");
    };
    assert_eq!(existing.id, id);
    assert_eq!(existing.summary, first.summary);
    assert_eq!(
        existing.reply, first.reply,
        "the first reply is answered again"
    );
    assert_eq!(store.find_exchange("msg-1").await.unwrap(), Some(existing));
    assert_eq!(store.find_exchange("msg-2").await.unwrap(), None);
    assert_eq!(store.list_exchanges("SF6").await.unwrap().len(), 1);
}

pub async fn exchanges_without_a_dedupe_key_are_all_kept_and_listed_oldest_first(store: Store) {
    let store = migrated(store).await;
    let later = exchange(Some("SF7"), None, 2_000);
    let earlier = NewExchange {
        reply: None,
        ..exchange(Some("SF7"), None, 1_000)
    };
    for ex in [&later, &earlier, &exchange(None, None, 500)] {
        assert!(matches!(
            store.record_exchange(ex).await.unwrap(),
            ExchangeInsert::Inserted { .. }
        ));
    }
    let listed = store.list_exchanges("SF7").await.unwrap();
    let times: Vec<i64> = listed.iter().map(|e| e.received_at).collect();
    assert_eq!(times, vec![1_000, 2_000]);
    assert_eq!(listed[0].reply, None);
    assert_eq!(listed[1].reply, later.reply);
    assert_eq!(listed[1].duration_us, later.duration_us);
}

pub async fn meta_values_can_be_set_read_and_overwritten(store: Store) {
    let store = migrated(store).await;
    assert_eq!(store.get_meta("schema_note").await.unwrap(), None);
    store.set_meta("schema_note", "one").await.unwrap();
    assert_eq!(
        store.get_meta("schema_note").await.unwrap().as_deref(),
        Some("one")
    );
    store.set_meta("schema_note", "two").await.unwrap();
    assert_eq!(
        store.get_meta("schema_note").await.unwrap().as_deref(),
        Some("two")
    );
}

pub async fn twenty_concurrent_records_of_one_event_store_exactly_one_row(store: Store) {
    let store = migrated(store).await;
    let w = waybill("SF8");
    store.upsert_waybill(&w).await.unwrap();
    let e = event("SF8", 100001, 1_700_000_000);
    // Half the callers resend the waybill (write first), half do not (read first, then write).
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (store, w, e) = (store.clone(), w.clone(), e.clone());
            tokio::spawn(async move {
                let waybill = (i % 2 == 0).then_some(&w);
                store
                    .record_event(waybill, &e, &NotificationPlan::default())
                    .await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("task").expect("record_event"));
    }
    let inserted = outcomes
        .iter()
        .filter(|o| matches!(o, EventInsert::Inserted { .. }))
        .count();
    assert_eq!(inserted, 1, "{outcomes:?}");
    let id = outcomes[0].id();
    assert!(outcomes.iter().all(|o| o.id() == id), "{outcomes:?}");
    assert_eq!(store.count_events().await.unwrap(), 1);
    assert_eq!(store.count_waybills().await.unwrap(), 1);
}

/// The committed schema: both migration directories must produce exactly these columns,
/// in this order, with this nullability (`true` = NOT NULL).
const SCHEMA: &[(&str, &str, bool)] = &[
    ("access_tokens", "appid", true),
    ("access_tokens", "token_sealed", false),
    ("access_tokens", "token_hash", false),
    ("access_tokens", "expires_at", true),
    ("access_tokens", "fetched_at", true),
    ("access_tokens", "lease_owner", false),
    ("access_tokens", "lease_until", false),
    ("api_pauses", "api", true),
    ("api_pauses", "paused_until", true),
    ("api_pauses", "reason", true),
    ("bindings", "phone_hash", true),
    ("bindings", "bound", true),
    ("bindings", "checked_at", true),
    ("bindings", "expires_at", true),
    ("callback_exchanges", "id", true),
    ("callback_exchanges", "waybill_id", false),
    ("callback_exchanges", "dedupe_key", false),
    ("callback_exchanges", "event", true),
    ("callback_exchanges", "received_at", true),
    ("callback_exchanges", "result_code", true),
    ("callback_exchanges", "summary", true),
    ("callback_exchanges", "reply", false),
    ("callback_exchanges", "duration_us", true),
    ("cells", "ordinal", true),
    ("cells", "cell_key", true),
    ("cells", "name", true),
    ("cells", "link", true),
    ("cells", "condition_json", false),
    ("events", "id", true),
    ("events", "waybill_id", true),
    ("events", "action_type", true),
    ("events", "action_time", true),
    ("events", "payload", true),
    ("events", "received_at", true),
    ("events", "carrier_ref", false),
    ("meta", "key", true),
    ("meta", "value", true),
    ("notify_credentials", "id", true),
    ("notify_credentials", "openid", true),
    ("notify_credentials", "kind", true),
    ("notify_credentials", "value", true),
    ("notify_credentials", "max_uses", true),
    ("notify_credentials", "uses", true),
    ("notify_credentials", "issued_at", true),
    ("notify_credentials", "expires_at", true),
    ("notify_credentials", "discarded", false),
    ("notify_credentials", "created_at", true),
    ("notify_entries", "outbox_id", true),
    ("notify_entries", "rule", true),
    ("notify_entries", "role", true),
    ("notify_entries", "template_id", true),
    ("notify_entries", "consent_held", true),
    ("notify_entries", "credential_id", false),
    ("notify_leases", "openid", true),
    ("notify_leases", "lease_owner", true),
    ("notify_leases", "lease_until", true),
    ("notify_reports", "idempotency_key", true),
    ("notify_reports", "openid", true),
    ("notify_reports", "body_hash", true),
    ("notify_reports", "received_at", true),
    ("notify_subscriptions", "openid", true),
    ("notify_subscriptions", "template_id", true),
    ("notify_subscriptions", "remaining", true),
    ("notify_subscriptions", "long_term", true),
    ("notify_subscriptions", "updated_at", true),
    ("outbox", "id", true),
    ("outbox", "kind", true),
    ("outbox", "waybill_id", true),
    ("outbox", "event_id", false),
    ("outbox", "action_time", true),
    ("outbox", "recipient", false),
    ("outbox", "state", true),
    ("outbox", "skip_reason", false),
    ("outbox", "tries", true),
    ("outbox", "next_attempt_at", true),
    ("outbox", "receipt_at", false),
    ("outbox", "last_error", false),
    ("outbox", "created_at", true),
    ("outbox", "updated_at", true),
    ("outbox", "done_at", false),
    ("outbox", "push_seq", true),
    ("outbox", "dead_reason", false),
    ("outbox_attempts", "id", true),
    ("outbox_attempts", "outbox_id", true),
    ("outbox_attempts", "started_at", true),
    ("outbox_attempts", "duration_ms", true),
    ("outbox_attempts", "http_status", false),
    ("outbox_attempts", "errcode", false),
    ("outbox_attempts", "outcome", true),
    ("outbox_attempts", "detail", true),
    ("outbox_attempts", "rid", false),
    ("outcomes", "id", true),
    ("outcomes", "outbox_id", true),
    ("outcomes", "kind", true),
    ("outcomes", "waybill_id", true),
    ("outcomes", "action_type", true),
    ("outcomes", "action_time", true),
    ("outcomes", "carrier_ref", false),
    ("outcomes", "outcome", true),
    ("outcomes", "reason_code", true),
    ("outcomes", "errcode", false),
    ("outcomes", "errmsg", false),
    ("outcomes", "rid", false),
    ("outcomes", "attempts", true),
    ("outcomes", "decided_at", true),
    ("payments", "transaction_id", true),
    ("payments", "waybill_id", true),
    ("payments", "out_trade_no", true),
    ("payments", "total_fee", true),
    ("payments", "event_id", false),
    ("payments", "received_at", true),
    ("push_queue", "waybill_id", true),
    ("push_queue", "due_at", false),
    ("push_queue", "lease_owner", false),
    ("push_queue", "lease_until", false),
    ("push_queue", "inflight_outbox_id", false),
    ("push_queue", "last_pushed_action_time", false),
    ("push_queue", "last_pushed_event_id", false),
    ("waybills", "waybill_id", true),
    ("waybills", "create_time", true),
    ("waybills", "contacts", true),
    ("waybills", "receiver_phone_hash", true),
    ("waybills", "sender_phone_hash", false),
    ("waybills", "sender_openid", false),
    ("waybills", "receiver_openid", false),
    ("waybills", "payment_out_trade_no", false),
    ("waybills", "payment_total_fee", false),
    ("waybills", "created_at", true),
    ("waybills", "updated_at", true),
    ("webhook_deliveries", "id", true),
    ("webhook_deliveries", "webhook_id", true),
    ("webhook_deliveries", "body", true),
    ("webhook_deliveries", "items", true),
    ("webhook_deliveries", "oldest_item_at", true),
    ("webhook_deliveries", "state", true),
    ("webhook_deliveries", "tries", true),
    ("webhook_deliveries", "next_attempt_at", true),
    ("webhook_deliveries", "last_status", false),
    ("webhook_deliveries", "last_error", false),
    ("webhook_deliveries", "lease_owner", false),
    ("webhook_deliveries", "lease_until", false),
    ("webhook_deliveries", "created_at", true),
    ("webhook_deliveries", "updated_at", true),
    ("webhook_deliveries", "done_at", false),
    ("wechat_events", "id", true),
    ("wechat_events", "event", true),
    ("wechat_events", "dedupe_key", true),
    ("wechat_events", "received_at", true),
    ("wechat_events", "body", true),
];

pub async fn the_migrated_schema_has_the_same_columns_on_every_backend(store: Store) {
    let store = migrated(store).await;
    let sql = match store.backend() {
        // An INTEGER PRIMARY KEY is the rowid: never null, though not declared NOT NULL.
        Backend::Sqlite => {
            "SELECT m.name, p.name, \
                    CASE WHEN p.\"notnull\" = 1 OR (p.pk > 0 AND p.type = 'INTEGER') \
                         THEN 1 ELSE 0 END \
             FROM sqlite_master m JOIN pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' \
               AND m.name <> '_sqlx_migrations' \
             ORDER BY m.name, p.cid"
        }
        Backend::Postgres => {
            "SELECT table_name::text, column_name::text, \
                    CASE WHEN is_nullable = 'NO' THEN 1 ELSE 0 END \
             FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations' \
             ORDER BY table_name, ordinal_position"
        }
    };
    let columns: Vec<(String, String, i64)> =
        sqlx::query_as(sql).fetch_all(store.pool()).await.unwrap();
    let columns: Vec<(&str, &str, bool)> = columns
        .iter()
        .map(|(table, column, not_null)| (table.as_str(), column.as_str(), *not_null == 1))
        // The feed position's transaction id: PostgreSQL's only (store/outcomes.rs).
        .filter(|c| *c != ("outcomes", "xid", true) || store.backend() == Backend::Sqlite)
        .collect();
    assert_eq!(columns, SCHEMA);
}

// ---- SQLite-only and backend-independent -------------------------------------------------

#[tokio::test]
async fn a_sqlite_store_creates_its_directory_and_file_and_sets_its_pragmas() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/wx.db");
    let store = Store::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("connect creates what is missing");
    assert!(path.exists());
    assert_eq!(store.backend(), Backend::Sqlite);

    let pool = store.pool();
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await
        .unwrap();
    let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(pool)
        .await
        .unwrap();
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(pool)
        .await
        .unwrap();
    let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(journal.to_lowercase(), "wal");
    assert_eq!(foreign_keys, 1);
    assert_eq!(
        synchronous, 2,
        "FULL: a commit is on disk before its caller hears of it"
    );
    assert_eq!(busy, 5000);
}

#[tokio::test]
async fn sqlite_runs_the_synchronous_mode_the_settings_name() {
    use wxexpress::store::section::{DatabaseSettings, Synchronous};
    let dir = tempfile::tempdir().unwrap();
    for (mode, pragma) in [(Synchronous::Normal, 1_i64), (Synchronous::Full, 2)] {
        let settings = DatabaseSettings {
            url: format!("sqlite://{}/{}.db", dir.path().display(), mode.as_str()),
            max_connections: 2,
            synchronous: mode,
        };
        let store = Store::open(&settings).await.unwrap();
        store.migrate().await.unwrap();
        // Every connection of the pool, not only the first.
        let mut conns = Vec::new();
        for _ in 0..2 {
            conns.push(store.pool().acquire().await.unwrap());
        }
        for conn in &mut conns {
            let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            assert_eq!(synchronous, pragma, "{mode:?}");
        }
    }
}

#[tokio::test]
async fn an_in_memory_sqlite_store_works() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    store.migrate().await.unwrap();
    store.check_ready().await.unwrap();
    store.set_meta("k", "v").await.unwrap();
    assert_eq!(store.get_meta("k").await.unwrap().as_deref(), Some("v"));
}

#[tokio::test]
async fn an_unsupported_url_is_rejected_without_echoing_its_password() {
    let err = Store::connect("mysql://root:hunter2@db.internal/wx")
        .await
        .expect_err("mysql is not supported");
    assert!(matches!(err, StoreError::UnsupportedUrl(_)));
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn a_store_debug_output_shows_the_backend_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/secret-name.db", dir.path().display()))
        .await
        .unwrap();
    let shown = format!("{store:?}");
    assert!(shown.contains("Sqlite"), "{shown}");
    assert!(!shown.contains("secret-name"), "{shown}");
}

pub async fn unhandled_wechat_events_are_kept_once_listed_newest_first_and_expire(store: Store) {
    use wxexpress::store::{NewWechatEvent, WECHAT_EVENTS_RETENTION_MS};
    let store = migrated(store).await;
    let ev = |name: &str, key: &str, at: i64| NewWechatEvent {
        event: name.into(),
        dedupe_key: key.into(),
        received_at: at,
        body: vec![1, 2, 3],
    };
    let t = 1_000_000_000_000;
    assert!(store
        .record_wechat_event(&ev("bind_batch", "k1", t))
        .await
        .unwrap());
    assert!(
        !store
            .record_wechat_event(&ev("bind_batch", "k1", t + 5))
            .await
            .unwrap(),
        "a redelivery is kept once"
    );
    assert!(store
        .record_wechat_event(&ev("unbind_batch", "k2", t + 10))
        .await
        .unwrap());
    assert!(store
        .record_wechat_event(&ev("bind_batch", "k3", t + 20))
        .await
        .unwrap());
    let binds = store
        .list_wechat_events(Some("bind_batch"), 10)
        .await
        .unwrap();
    let at: Vec<i64> = binds.iter().map(|e| e.received_at).collect();
    assert_eq!(at, [t + 20, t]);
    assert_eq!(binds[0].body, vec![1, 2, 3]);
    assert_eq!(store.list_wechat_events(None, 2).await.unwrap().len(), 2);
    // A new event past the retention takes the old ones with it.
    let later = t + WECHAT_EVENTS_RETENTION_MS + 15;
    assert!(store
        .record_wechat_event(&ev("bind_batch", "k4", later))
        .await
        .unwrap());
    let left: Vec<i64> = store
        .list_wechat_events(None, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.received_at)
        .collect();
    assert_eq!(left, [later, t + 20]);
}

/// Many writers at once (on SQLite they share transactions: group commit): each gets its
/// own outcome, a failing writer stores nothing, and the others are unaffected.
pub async fn concurrent_writers_each_get_their_own_outcome(store: Store) {
    let store = migrated(store).await;
    store.upsert_waybill(&waybill("G")).await.unwrap();
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                // Every third writer names a waybill that does not exist; every fifth
                // repeats the event of the writer before it.
                let waybill = if i % 3 == 0 { "NOPE" } else { "G" };
                let time = if i % 5 == 0 { i - 1 } else { i };
                let outcome = store
                    .record_event(
                        None,
                        &event(waybill, 100001, time),
                        &NotificationPlan::default(),
                    )
                    .await;
                (i, waybill, time, outcome)
            })
        })
        .collect();
    let mut stored = std::collections::BTreeMap::new();
    for task in tasks {
        let (i, waybill, time, outcome) = task.await.unwrap();
        match outcome {
            Err(StoreError::UnknownWaybill(id)) => {
                assert_eq!((waybill, id.as_str()), ("NOPE", "NOPE"), "{i}")
            }
            Ok(EventInsert::Inserted { id } | EventInsert::Duplicate { id }) => {
                assert_eq!(waybill, "G", "{i}");
                // Two writers of the same event agree on its id.
                assert_eq!(*stored.entry(time).or_insert(id), id, "writer {i}");
            }
            other => panic!("writer {i}: {other:?}"),
        }
    }
    let events = store.list_events("G").await.unwrap();
    assert_eq!(events.len(), stored.len());
    for e in events {
        assert_eq!(stored.get(&e.action_time), Some(&e.id));
    }
    assert_eq!(store.count_waybills().await.unwrap(), 1);
    assert_eq!(store.list_outbox("G").await.unwrap().len(), stored.len());
}

/// Many answers at once (on SQLite the writer stores a group's answers in one statement):
/// each question is stored once, and every asker of it gets that one exchange back.
pub async fn concurrent_answers_store_each_question_once(store: Store) {
    let store = migrated(store).await;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                // 50 questions, each asked four times.
                let key = format!("wnq:{}:0", i % 50);
                let mut ex = exchange(Some("SF6"), Some(&key), 1_000 + i);
                ex.result_code = (i % 50) % 2;
                // A reply and a summary that only survive a byte-exact round trip.
                ex.reply = Some(reply_for(&key));
                ex.summary = format!("查询 {key}，电话 138****0000");
                let outcome = store.record_answer(&ex, None).await.unwrap();
                (key, outcome)
            })
        })
        .collect();
    let mut ids = std::collections::BTreeMap::new();
    let mut inserted = 0;
    for task in tasks {
        let (key, outcome) = task.await.unwrap();
        let id = match outcome {
            ExchangeInsert::Inserted { id } => {
                inserted += 1;
                id
            }
            ExchangeInsert::Duplicate(prev) => {
                assert_eq!(prev.dedupe_key.as_deref(), Some(key.as_str()));
                prev.id
            }
        };
        assert_eq!(
            *ids.entry(key).or_insert(id),
            id,
            "one exchange per question"
        );
    }
    assert_eq!(inserted, 50);
    let stored = store.list_exchanges("SF6").await.unwrap();
    assert_eq!(stored.len(), 50);
    for ex in stored {
        let key = ex.dedupe_key.clone().expect("a key");
        assert_eq!(ex.reply, Some(reply_for(&key)), "{key}");
        assert_eq!(ex.summary, format!("查询 {key}，电话 138****0000"));
    }
}

/// Bytes of every value, the key's own bytes among them.
fn reply_for(key: &str) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..=255).collect();
    bytes.extend_from_slice(key.as_bytes());
    bytes
}

/// Makes the database refuse any event of waybill `SFBOOM` (a trigger), as a constraint a
/// multi-row statement trips over would.
async fn refuse_events_of_sfboom(store: &Store) {
    crate::refuse_inserts(store, "refuse_sfboom", "events", "waybill_id", "SFBOOM").await;
}

/// When a chunk's multi-row statements fail, its lines are stored one by one: the line the
/// database refuses fails alone, with the database's error, and the others are stored with
/// the outcomes they would have had.
pub async fn a_line_the_database_refuses_fails_alone_when_its_chunk_falls_back(store: Store) {
    let store = migrated(store).await;
    store.upsert_waybill(&waybill("SFBOOM")).await.unwrap();
    store.upsert_waybill(&waybill("SFOK")).await.unwrap();
    refuse_events_of_sfboom(&store).await;
    let items: Vec<(Option<WaybillRecord>, NewEvent)> = vec![
        (None, event("SFOK", 100001, 10)),
        (None, event("SFBOOM", 100001, 11)),
        (None, event("SFOK", 200001, 12)),
        (None, event("SFOK", 100001, 10)), // a duplicate of the first line
        (None, event("GHOST", 100001, 13)),
    ];
    let outcomes = store
        .record_events_batch(&items, &NotificationPlan::default())
        .await
        .expect("batch");
    assert!(
        matches!(outcomes[0], Ok(EventInsert::Inserted { .. })),
        "{outcomes:?}"
    );
    assert!(
        matches!(outcomes[1], Err(StoreError::Database(_))),
        "{outcomes:?}"
    );
    assert!(
        matches!(outcomes[2], Ok(EventInsert::Inserted { .. })),
        "{outcomes:?}"
    );
    let Ok(EventInsert::Inserted { id: first }) = outcomes[0] else {
        unreachable!()
    };
    assert!(
        matches!(outcomes[3], Ok(EventInsert::Duplicate { id }) if id == first),
        "{outcomes:?}"
    );
    assert!(
        matches!(&outcomes[4], Err(StoreError::UnknownWaybill(w)) if w == "GHOST"),
        "{outcomes:?}"
    );
    assert_eq!(store.list_events("SFOK").await.unwrap().len(), 2);
    assert!(store.list_events("SFBOOM").await.unwrap().is_empty());
    // Each stored line has its outbox entry and its waybill is due; the refused one has none.
    assert_eq!(store.list_outbox("SFOK").await.unwrap().len(), 2);
    assert!(store.list_outbox("SFBOOM").await.unwrap().is_empty());
    assert!(crate::due_at(&store, "SFOK").await.flatten().is_some());
}

/// A batch whose later chunk cannot be stored at all (SQLite ends the whole transaction)
/// reports how many of its first lines were stored; those stay stored, the rest are not.
pub async fn a_batch_stopped_part_way_says_how_many_lines_were_stored(store: Store) {
    let store = migrated(store).await;
    if store.backend() != Backend::Sqlite {
        // PostgreSQL has no trigger action that ends the transaction it runs in.
        return;
    }
    store.upsert_waybill(&waybill("SFOK")).await.unwrap();
    store.upsert_waybill(&waybill("SFBOOM")).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER end_at_sfboom BEFORE INSERT ON events \
         WHEN NEW.waybill_id = 'SFBOOM' BEGIN SELECT RAISE(ROLLBACK, 'ended'); END",
    )
    .execute(store.pool())
    .await
    .unwrap();
    // 250 lines per chunk: the first chunk is stored, the second ends at its first line.
    let mut items: Vec<(Option<WaybillRecord>, NewEvent)> = (0..260)
        .map(|i| (None, event("SFOK", 100001, 1_000 + i)))
        .collect();
    items[255] = (None, event("SFBOOM", 100001, 5));
    let stopped = store
        .record_events_batch(&items, &NotificationPlan::default())
        .await;
    assert!(
        matches!(
            stopped,
            Err(StoreError::BatchInterrupted { stored: 250, .. })
        ),
        "{stopped:?}"
    );
    assert_eq!(store.list_events("SFOK").await.unwrap().len(), 250);
    assert!(store.list_events("SFBOOM").await.unwrap().is_empty());
    // Sending it again (without the line that ends it) stores the rest; the first 250 come
    // back as duplicates.
    items.remove(255);
    let again = store
        .record_events_batch(&items, &NotificationPlan::default())
        .await
        .expect("again");
    let duplicates = again
        .iter()
        .filter(|o| matches!(o, Ok(EventInsert::Duplicate { .. })))
        .count();
    assert_eq!(duplicates, 250);
    assert_eq!(store.list_events("SFOK").await.unwrap().len(), 259);
}
