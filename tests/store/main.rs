//! The store suite: every test body runs on SQLite, and on PostgreSQL too when
//! `TEST_DATABASE_URL` is set (each PostgreSQL test in a fresh database of its own).
//!
//! Bodies live in one module per area (`core`, `outbox`, `queue`, `shared`); the list
//! below turns each into a `sqlite::name` and a `postgres::name` test.

mod cells;
mod core;
mod notify;
mod outbox;
mod outcomes;
mod queue;
mod settle;
mod shared;

use wxexpress::store::{
    EventInsert, NewEvent, NewExchange, NotificationPlan, Store, WaybillRecord,
};

/// Generates, for each test body `async fn module::name(store: Store)`, a `sqlite::name`
/// and a `postgres::name` test that hand it a fresh, unmigrated store.
macro_rules! store_tests {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = crate::support::TestDb::sqlite().await;
                    crate::$module::$name(db.store.clone()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = crate::support::TestDb::postgres().await else {
                        return;
                    };
                    crate::$module::$name(db.store.clone()).await;
                }
            )*
        }
    };
}

store_tests! {
    settle::a_settle_the_database_refuses_fails_alone_and_the_others_land,
    settle::a_refused_skip_stops_its_begin_and_the_release_still_runs,
    settle::a_settle_of_a_lost_lease_is_fenced_and_changes_nothing,
    cells::cells_are_unset_until_replaced_then_come_back_in_order,
    cells::an_empty_list_is_a_setting_of_its_own_and_clearing_forgets_it,
    cells::a_replacement_with_a_repeated_key_fails_and_keeps_the_old_list,
    core::migrating_twice_is_harmless,
    core::check_ready_fails_before_migrate_and_passes_after,
    core::a_waybill_is_created_then_updated_keeping_its_created_at,
    core::a_duplicate_event_returns_the_same_id_and_is_stored_once,
    core::an_event_for_an_unknown_waybill_stores_nothing,
    core::an_event_with_its_waybill_in_the_same_call_stores_both,
    core::an_event_with_the_record_of_another_waybill_stores_nothing,
    core::a_batch_keeps_its_good_items_and_reports_duplicates_and_unknown_waybills,
    core::concurrent_writers_each_get_their_own_outcome,
    core::concurrent_answers_store_each_question_once,
    core::a_line_the_database_refuses_fails_alone_when_its_chunk_falls_back,
    core::a_batch_stopped_part_way_says_how_many_lines_were_stored,
    core::events_are_listed_newest_first_with_ties_broken_by_id,
    core::a_repeated_exchange_dedupe_key_returns_the_existing_row,
    core::exchanges_without_a_dedupe_key_are_all_kept_and_listed_oldest_first,
    core::meta_values_can_be_set_read_and_overwritten,
    core::twenty_concurrent_records_of_one_event_store_exactly_one_row,
    core::the_migrated_schema_has_the_same_columns_on_every_backend,
    core::unhandled_wechat_events_are_kept_once_listed_newest_first_and_expire,
    outbox::an_accepted_event_creates_one_pending_outbox_entry_and_makes_its_waybill_due,
    outbox::a_duplicate_event_creates_no_outbox_entry_and_leaves_the_queue_alone,
    outbox::a_batch_creates_an_outbox_entry_for_each_new_event_only,
    outbox::completing_entries_moves_them_and_only_ever_raises_the_last_pushed_node,
    outbox::completing_an_unknown_entry_fails_and_records_no_attempt,
    outbox::a_receipt_keeps_the_time_of_the_first_reverse_query,
    outbox::skipping_changes_only_pending_entries_and_clears_the_in_flight_marker,
    outbox::redriving_brings_dead_entries_back_and_makes_their_waybills_due,
    outbox::retrying_one_entry_works_only_on_a_dead_entry,
    outbox::outbox_counts_group_entries_by_state_and_skip_reason,
    outbox::a_late_completion_after_the_lease_lapsed_and_was_claimed_again_changes_nothing,
    outbox::a_receipt_counts_only_for_the_push_in_flight_and_is_forgotten_by_a_retry,
    outbox::concurrent_pushes_settle_each_with_its_own_outcome,
    queue::two_concurrent_claimers_never_get_the_same_waybill_while_its_lease_is_valid,
    queue::only_due_waybills_are_claimed_earliest_first,
    queue::an_expired_lease_can_be_claimed_by_another_owner,
    queue::only_the_lease_holder_can_extend_it_or_begin_a_push,
    queue::push_work_lists_pending_path_entries_by_action_time_then_event_id,
    queue::releasing_a_waybill_recomputes_its_due_time_from_pending_entries,
    queue::an_event_recorded_while_its_waybill_is_released_keeps_it_due,
    queue::a_claims_push_work_loads_in_one_batch_as_it_would_one_by_one,
    shared::binding_answers_are_cached_until_their_ttl_ends,
    shared::exactly_one_of_ten_concurrent_callers_gets_the_token_lease,
    shared::saving_a_token_stores_it_and_clears_the_lease,
    shared::a_token_is_invalidated_only_while_it_is_still_the_current_one,
    shared::api_pauses_apply_until_their_end_and_are_listed_while_active,
    notify::an_event_enqueues_one_notification_per_recipient_in_its_transaction,
    notify::a_batch_enqueues_notifications_for_its_good_new_items_only,
    notify::a_batch_stores_what_its_lines_stored_one_by_one_would,
    notify::a_user_is_never_claimed_by_two_owners_while_its_lease_is_valid,
    notify::two_instances_racing_for_the_last_grant_send_once,
    notify::a_replayed_report_counts_once_and_a_reused_key_is_refused,
    notify::credentials_are_used_soonest_expiring_first_and_never_past_their_uses_or_expiry,
    notify::completing_a_notification_leaves_the_push_queue_alone_and_43101_revokes_consent,
    notify::a_payment_records_its_event_once_per_transaction,
    outcomes::every_settled_entry_gets_exactly_one_outcome_from_the_settle_that_decided_it,
    outcomes::a_refused_settle_and_a_refused_skip_record_no_outcome,
    outcomes::the_feed_pages_in_order_and_filters_by_outcome_and_kind,
    outcomes::concurrent_writers_and_a_paging_reader_end_with_no_gap_and_no_duplicate,
    outcomes::webhook_deliveries_hold_every_item_once_and_keep_their_id_across_tries,
}

// ---- fixtures ----------------------------------------------------------------------------

/// Records an event that must be new; its id.
pub async fn new_event_id(store: &Store, waybill: Option<&WaybillRecord>, event: &NewEvent) -> i64 {
    match store
        .record_event(waybill, event, &NotificationPlan::default())
        .await
        .expect("record_event")
    {
        EventInsert::Inserted { id } => id,
        other => panic!("expected a new event, got {other:?}"),
    }
}

/// The waybill's `push_queue.due_at`: `None` without a row, `Some(None)` when not due.
pub async fn due_at(store: &Store, waybill_id: &str) -> Option<Option<i64>> {
    sqlx::query_scalar("SELECT due_at FROM push_queue WHERE waybill_id = $1")
        .bind(waybill_id)
        .fetch_optional(store.pool())
        .await
        .expect("read push_queue")
}

pub async fn migrated(store: Store) -> Store {
    store.migrate().await.expect("migrate");
    store
}

pub fn waybill(id: &str) -> WaybillRecord {
    WaybillRecord {
        waybill_id: id.to_owned(),
        create_time: 1_700_000_000,
        contacts: vec![1, 2, 3, 0, 255],
        receiver_phone_hash: "a".repeat(64),
        sender_phone_hash: Some("c".repeat(64)),
        sender_openid: None,
        receiver_openid: None,
        payment_out_trade_no: None,
        payment_total_fee: None,
        created_at: 1_700_000_000_000,
        updated_at: 1_700_000_000_000,
    }
}

pub fn event(waybill_id: &str, action_type: i64, action_time: i64) -> NewEvent {
    NewEvent {
        waybill_id: waybill_id.to_owned(),
        action_type,
        action_time,
        payload: vec![0xEE, 0, 1],
        received_at: action_time * 1_000 + 7,
        carrier_ref: Some(format!("ref-{waybill_id}-{action_time}")),
    }
}

pub fn exchange(
    waybill_id: Option<&str>,
    dedupe_key: Option<&str>,
    received_at: i64,
) -> NewExchange {
    NewExchange {
        waybill_id: waybill_id.map(str::to_owned),
        dedupe_key: dedupe_key.map(str::to_owned),
        event: "waybill_notify_query".into(),
        received_at,
        result_code: 0,
        summary: "query for SF6, phone 138****0000".into(),
        reply: Some(vec![1; 16]),
        duration_us: 1_234,
    }
}

mod support {
    //! A fresh database per test: a temporary SQLite file, or a PostgreSQL database created
    //! for the test and dropped (even after a failure) when it ends.

    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};

    use sqlx::{Connection, Executor, PgConnection};
    use wxexpress::store::Store;

    pub struct TestDb {
        pub store: Store,
        _dir: Option<tempfile::TempDir>,
        _pg: Option<PgDatabase>,
    }

    struct PgDatabase {
        admin_url: String,
        name: String,
    }

    impl TestDb {
        pub async fn sqlite() -> TestDb {
            let dir = tempfile::tempdir().expect("tempdir");
            let url = format!("sqlite://{}/wx.db", dir.path().display());
            let store = Store::connect(&url).await.expect("connect to sqlite");
            TestDb {
                store,
                _dir: Some(dir),
                _pg: None,
            }
        }

        /// `None` (with a note) when `TEST_DATABASE_URL` is unset.
        pub async fn postgres() -> Option<TestDb> {
            let Ok(admin_url) = std::env::var("TEST_DATABASE_URL") else {
                eprintln!("note: TEST_DATABASE_URL is not set; PostgreSQL run skipped");
                return None;
            };
            let name = unique_name();
            let mut admin = PgConnection::connect(&admin_url)
                .await
                .expect("connect to TEST_DATABASE_URL");
            admin
                .execute(format!("CREATE DATABASE {name}").as_str())
                .await
                .expect("create test database");
            admin.close().await.ok();

            let mut url = url::Url::parse(&admin_url).expect("TEST_DATABASE_URL is a URL");
            url.set_path(&name);
            let store = Store::connect(url.as_str())
                .await
                .expect("connect to test database");
            Some(TestDb {
                store,
                _dir: None,
                _pg: Some(PgDatabase { admin_url, name }),
            })
        }
    }

    impl Drop for PgDatabase {
        fn drop(&mut self) {
            // Drop runs inside the test's runtime, where blocking on a future is not allowed:
            // a short-lived thread with its own runtime drops the database.
            let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
            let dropped = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    let mut admin = PgConnection::connect(&admin_url).await?;
                    admin
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await?;
                    admin.close().await
                })
            })
            .join();
            if !matches!(dropped, Ok(Ok(()))) {
                eprintln!("note: could not drop test database {}", self.name);
            }
        }
    }

    fn unique_name() -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!(
            "wxt_{}_{}_{}",
            std::process::id(),
            nanos % 1_000_000_000_000,
            n
        )
    }
}

/// A fault injected for a test: the database refuses (`RAISE`, the statement only) an insert
/// into `table` whose `column` is `value`; `name` names the trigger.
pub async fn refuse_inserts(store: &Store, name: &str, table: &str, column: &str, value: &str) {
    use wxexpress::store::Backend;
    let statements: Vec<String> = match store.backend() {
        Backend::Sqlite => vec![format!(
            "CREATE TRIGGER {name} BEFORE INSERT ON {table} \
             WHEN NEW.{column} = '{value}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )],
        Backend::Postgres => vec![
            format!(
                "CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN IF NEW.{column} = '{value}' THEN RAISE EXCEPTION 'refused'; END IF; \
                 RETURN NEW; END $$"
            ),
            format!(
                "CREATE TRIGGER {name} BEFORE INSERT ON {table} \
                 FOR EACH ROW EXECUTE FUNCTION {name}()"
            ),
        ],
    };
    for sql in &statements {
        sqlx::query(sql).execute(store.pool()).await.expect(sql);
    }
}
