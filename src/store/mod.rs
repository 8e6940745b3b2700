//! The store: the only module with SQL. One [`Store`] over SQLite and PostgreSQL.
//!
//! # Layout
//!
//! - `mod.rs`: [`Store`], [`Backend`], [`StoreError`], the write-transaction helper.
//! - `connect.rs`: URL → backend, pool options, SQLite file setup and pragmas.
//! - `migrate.rs`: the embedded migrations (`migrations/sqlite`, `migrations/postgres`) and
//!   the readiness check.
//! - `records.rs`: the rows read and written ([`WaybillRecord`], [`NewEvent`],
//!   [`OutboxEntry`], …); `states.rs`: the outbox's kind, state and skip reason as types.
//! - `section.rs`: `[database]` of the configuration.
//! - Tables and their use cases (a file may write a table another file also reads):
//!   `waybills.rs`, `events.rs`, `exchanges.rs` (the reverse query's read and answers),
//!   `meta.rs`, `cells.rs`.
//! - The push pipeline: `outbox.rs` (entries to send, written with their event; completions,
//!   receipts, skips, redrives), `attempts.rs` (one row per try), `push_queue.rs` (every
//!   write of the per-waybill due time, lease and in-flight marker: at most one push in
//!   flight per waybill), `bindings.rs` (userquery cache), `access_tokens.rs` (the access
//!   token and its refresher's lease), `pauses.rs` (APIs paused by WeChat's quota).
//! - The writers: `group.rs` (one write connection, group commit: every write on SQLite, the
//!   push worker's settles on PostgreSQL) and `deliver.rs` (a write's outcome after its
//!   group's commit), `ingest.rs` (batches, set-based), `settle/` (the push worker's writes as
//!   group commands, set-based per kind, on both databases); what a claim reads for all its
//!   waybills at once: `push_load.rs`.
//! - Outcomes back to the carrier: `outcomes.rs` (one row per settled entry, written in the
//!   settling transaction; the feed and its commit watermark), `webhooks.rs` (the webhook's
//!   durable deliveries, cut from the feed).
//! - `wechat_events.rs`: WeChat events the gateway does not handle, kept sealed (bounded).
//! - Shipping notifications: `notifications.rs` (outbox rows of kind `subscribe`/`template`
//!   written with their event, the per-openid lease, completion), `consent.rs` (the
//!   subscription ledger and legacy credentials), `payments.rs` (WeChat Pay notifications,
//!   once per transaction).
//!
//! # Rules
//!
//! - One `sqlx::AnyPool`; the few dialect differences branch on [`Backend`]. Queries are
//!   runtime-checked and portable (`$n` placeholders, `ON CONFLICT`, `RETURNING`); the shared
//!   test suite (`tests/store.rs`) runs every one of them on both databases.
//! - Every multi-statement write is one transaction, so nothing is ever half-stored.
//! - Timestamps are Unix ms (`*_at`, `*_until`), except a tracking event's `action_time`
//!   (Unix s, as WeChat takes it). The caller passes `now`: the store never reads a clock,
//!   so tests control time.
//! - PostgreSQL lock order: `outbox` rows before `push_queue` rows, several `push_queue`
//!   rows in `waybill_id` order.
//! - Personal data arrives already protected (AEAD blobs, HMAC hex); the store never logs a
//!   blob nor prints the database URL (it may hold a password).
//! - Depends on nothing else in the crate: callers convert to and from domain types.

mod access_tokens;
mod attempts;
mod bindings;
mod cells;
mod connect;
mod consent;
mod deliver;
mod events;
mod exchanges;
mod gauges;
mod group;
mod ingest;
mod meta;
mod migrate;
mod notifications;
mod outbox;
mod outcomes;
mod pauses;
mod payments;
mod push_load;
mod push_queue;
mod records;
pub mod section;
mod settle;
mod states;
mod waybills;
mod webhooks;
mod wechat_events;

use std::fmt;

use sqlx::{Any, AnyPool, Transaction};

pub use cells::{CellRecord, CellSet};
pub use connect::SqliteTarget;
pub use exchanges::{answer_key, AnswerReceipt, ReverseQueryView, StoredAnswer};
pub use outcomes::{
    record_outcomes_for_bench, FeedPosition, OutcomeFilter, OutcomePage, OutcomeRecord,
};
pub use push_load::PushLoad;
pub use states::{DeadReason, EntryKind, EntryState, Outcome, OutcomeKind, SkipReason};
pub use webhooks::{DeliveryRecord, DeliveryResult, DeliveryRow, NewDelivery, WebhookGauges};

pub use records::{
    AttemptRecord, BindingWrite, Completion, EventInsert, EventRecord, ExchangeInsert,
    ExchangeRecord, InFlight, NewAttempt, NewEvent, NewExchange, OutboxEntry, PushStep, PushWork,
    PushWrites, TokenRow, WaybillRecord,
};

pub use consent::{
    CredentialInsert, CredentialRow, GrantTake, NewCredential, ReportOutcome, SubscriptionGrant,
    SubscriptionRow,
};
pub use notifications::{NotificationIntent, NotificationPlan, NotificationWork, NotifyKind, Role};
pub use payments::{NewPayment, PaymentInsert, PaymentRecord};
pub use wechat_events::{
    NewWechatEvent, WechatEventRecord, RETENTION_MS as WECHAT_EVENTS_RETENTION_MS,
};

/// The database behind a [`Store`], chosen from the URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Errors at the store's edge.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Carries the scheme only: the rest of a URL may hold a password.
    #[error("unsupported database url: {0}")]
    UnsupportedUrl(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("waybill {0} does not exist")]
    UnknownWaybill(String),
    #[error("migrations not applied")]
    NotMigrated,
    /// An event was given together with a waybill record for a different waybill: a caller
    /// bug, rejected before anything is written.
    #[error("event for waybill {event} came with the record of waybill {waybill}")]
    WaybillMismatch { waybill: String, event: String },
    /// [`Store::complete_entry`] was given an id with no outbox row; nothing was written.
    #[error("outbox entry {0} does not exist")]
    UnknownOutboxEntry(i64),
    /// A write of a leaseholder (completing a try, beginning a push, skipping entries) was
    /// refused, writing nothing: the caller's lease is gone (it lapsed and someone else
    /// claimed the work) or the entry is no longer pending. The fence that keeps a late
    /// worker from undoing what the new leaseholder did.
    #[error(
        "outbox entry {0} was left as it is: the lease on it was lost or it is no longer pending"
    )]
    Fenced(i64),
    /// The shared transaction this write was part of could not begin or commit: nothing of
    /// it was stored.
    #[error("database: the group commit failed: {0}")]
    GroupCommit(String),
    /// A batch stopped part-way: its first `stored` items were stored (and keep their
    /// outcomes), the rest were not. Sending the batch again is safe: the stored items come
    /// back as duplicates.
    #[error("database: the batch stopped after its first {stored} items were stored: {error}")]
    BatchInterrupted { stored: usize, error: String },
    /// The writer task is gone (the runtime is shutting down): nothing was stored.
    #[error("database: the writer has stopped")]
    WriterStopped,
}

/// Handle to the database: cheap to clone (the pools are shared).
#[derive(Clone)]
pub struct Store {
    /// Reads (and, on PostgreSQL, everything).
    pool: AnyPool,
    /// Writes: on SQLite the one write connection, on PostgreSQL the same pool.
    writer: AnyPool,
    /// SQLite's group commit over `writer`, for every write; `None` on PostgreSQL.
    group: Option<group::GroupCommit>,
    /// The push worker's settles, group-committed on both databases: on SQLite the same
    /// writer as `group`; on PostgreSQL a writer of its own over one pooled connection.
    settler: group::GroupCommit,
    backend: Backend,
}

impl StoreError {
    /// A stable code for this error, for `/readyz` and other places a machine reads: the
    /// text (sqlx's, which may change between versions) goes to the log only.
    pub fn reason_code(&self) -> &'static str {
        match self {
            StoreError::NotMigrated => "not_migrated",
            StoreError::WriterStopped => "writer_stopped",
            StoreError::Database(sqlx::Error::PoolTimedOut) => "database_timeout",
            StoreError::Database(
                sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed,
            ) => "database_unreachable",
            StoreError::UnsupportedUrl(_) => "unsupported_url",
            StoreError::Migrate(_) => "migration_failed",
            _ => "database_error",
        }
    }
}

impl fmt::Debug for Store {
    /// Backend only: the URL may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Which database this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool, for tests that inspect the schema; nothing outside `store/` should write SQL.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Ends SQLite's writer after the writes queued before this call, as a crash of its
    /// thread would: every later write (on PostgreSQL, every settle) fails with
    /// [`StoreError::WriterStopped`] and [`Store::check_ready`] says so. For tests of what a
    /// dead writer looks like.
    #[doc(hidden)]
    pub async fn stop_writer(&self) {
        self.settler.stop().await;
        // The thread drops its queue as it ends.
        while !self.settler.stopped() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    fn assemble(pool: AnyPool, writer: AnyPool, backend: Backend) -> Result<Store, StoreError> {
        let started = group::GroupCommit::start(writer.clone(), backend)
            .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        let group = (backend == Backend::Sqlite).then(|| started.clone());
        Ok(Store {
            pool,
            writer,
            group,
            settler: started,
            backend,
        })
    }

    /// Begins a transaction that will write.
    async fn begin_write(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.backend {
            // A deferred SQLite transaction that reads and then writes fails at once with
            // SQLITE_BUSY (busy_timeout does not apply) when another connection committed in
            // between. IMMEDIATE takes the write lock up front, waiting up to busy_timeout.
            Backend::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await,
            // PostgreSQL serialises conflicting writers on row locks and ON CONFLICT.
            Backend::Postgres => self.writer.begin().await,
        }
    }

    /// Runs `f`, which writes with exactly one statement (or none), and returns its result
    /// once committed: on SQLite in the next group without a savepoint, on PostgreSQL on
    /// a pooled connection (the statement is its own transaction).
    async fn write_one<T: Send + 'static>(&self, f: group::WriteOneFn<T>) -> Result<T, StoreError> {
        match &self.group {
            Some(group) => group.submit_one(f).await,
            None => {
                let mut conn = self.writer.acquire().await?;
                f(&mut conn).await
            }
        }
    }

    /// Runs `f` in a write transaction and returns its result once committed; `f` commits
    /// the transaction it is given to keep its writes (returning without committing, or
    /// with an error, stores nothing). On SQLite `f` shares the transaction with other
    /// writers (group commit, `group.rs`) inside a savepoint of its own; on PostgreSQL it
    /// gets a transaction of its own. `f` must not call the store's write methods itself.
    async fn write<T: Send + 'static>(&self, f: group::WriteFn<T>) -> Result<T, StoreError> {
        match &self.group {
            Some(group) => group.submit(f).await,
            None => {
                let tx = self.begin_write().await?;
                f(tx).await
            }
        }
    }
}

/// Bound parameters per statement when a list of ids is inlined (both databases allow far
/// more; this keeps statements short).
const IDS_PER_STATEMENT: usize = 500;

/// `$start, $start+1, …` (`n` of them), for a list of values inlined in `IN (…)`: the `Any`
/// driver binds no arrays.
fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($1, $2), ($3, $4)` for `rows` rows of `cols` values, for a multi-row `VALUES`.
fn values(rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| format!("({})", placeholders(r * cols + 1, cols)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows for a statement that reads them from one JSON parameter ([`json_table`],
/// [`json_list`]): its text does not depend on how many rows, so it is prepared once.
fn json_rows<T: serde::Serialize + ?Sized>(rows: &T) -> String {
    serde_json::to_string(rows).expect("rows of numbers and strings serialise")
}

/// The SQL type of a column read from a JSON rows parameter.
#[derive(Clone, Copy)]
enum Col {
    Int,
    Text,
}

/// The database a connection talks to.
fn dialect(conn: &sqlx::AnyConnection) -> Backend {
    // sqlx's names: "PostgreSQL", "SQLite".
    if conn.backend_name().eq_ignore_ascii_case("postgresql") {
        Backend::Postgres
    } else {
        Backend::Sqlite
    }
}

/// A query over the rows of JSON parameter `$n` (an array of arrays, [`json_rows`]), each
/// row's values named by `cols` in order: `SELECT … FROM …`, for a `WITH` or `IN`. SQLite
/// reads it with `json_each`; PostgreSQL with `json_array_elements`, each value cast to its
/// column's type.
fn json_table(backend: Backend, n: usize, cols: &[(&str, Col)]) -> String {
    let values: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, (name, col))| match (backend, col) {
            (Backend::Sqlite, _) => format!("value ->> {i} AS {name}"),
            (Backend::Postgres, Col::Int) => format!("(value ->> {i})::bigint AS {name}"),
            (Backend::Postgres, Col::Text) => format!("(value ->> {i}) AS {name}"),
        })
        .collect();
    match backend {
        Backend::Sqlite => format!("SELECT {} FROM json_each(${n})", values.join(", ")),
        Backend::Postgres => format!(
            "SELECT {} FROM json_array_elements(${n}::json) AS j(value)",
            values.join(", ")
        ),
    }
}

/// A query over the values of JSON parameter `$n` (an array of numbers or strings):
/// `SELECT value FROM …`, for an `IN (…)`.
fn json_list(backend: Backend, n: usize, col: Col) -> String {
    match (backend, col) {
        (Backend::Sqlite, _) => format!("SELECT value FROM json_each(${n})"),
        (Backend::Postgres, Col::Int) => {
            format!("SELECT value::bigint FROM json_array_elements_text(${n}::json) AS j(value)")
        }
        (Backend::Postgres, Col::Text) => {
            format!("SELECT value FROM json_array_elements_text(${n}::json) AS j(value)")
        }
    }
}
