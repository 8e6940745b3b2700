//! The ingest baseline: the rows an accepted event writes (the event, its `pathnotify` outbox
//! entry, its waybill made due), written the fastest known way and nothing else. Typed sqlx
//! (`sqlx::Sqlite` or `sqlx::Postgres`, never the gateway's `Any` pool), on a connection of
//! its own opened for the purpose, multi-row statements of 100 events built with
//! `QueryBuilder::push_values`, 1,000 events per transaction. No duplicate check, no
//! notifications, no group commit: only the rows, so the gateway's ingest is measured against
//! what the database itself allows, not against its own store.
//!
//! The only SQL outside `store/`: it is the yardstick, not the product, and it must not
//! share the code it measures.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Instant;

use sqlx::postgres::PgConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, QueryBuilder};

use crate::store::section::{DatabaseSettings, Synchronous};
use crate::store::{EntryKind, EntryState, NewEvent};

/// Events per multi-row statement.
const ROWS_PER_STATEMENT: usize = 100;

/// The three statements for one slice of events, written once for both databases (the
/// statements are the same; only the types differ).
macro_rules! insert_rows {
    ($db:ty, $conn:expr, $rows:expr) => {{
        let rows: &[NewEvent] = $rows;
        let mut q: QueryBuilder<$db> = QueryBuilder::new(
            "INSERT INTO events (waybill_id, action_type, action_time, payload, received_at) ",
        );
        q.push_values(rows, |mut b, e| {
            b.push_bind(&e.waybill_id)
                .push_bind(e.action_type)
                .push_bind(e.action_time)
                .push_bind(&e.payload)
                .push_bind(e.received_at);
        });
        q.push(" RETURNING id, waybill_id, action_time, received_at");
        let ids: Vec<(i64, String, i64, i64)> = q.build_query_as().fetch_all($conn).await?;

        let mut q: QueryBuilder<$db> = QueryBuilder::new(
            "INSERT INTO outbox (kind, waybill_id, event_id, action_time, state, tries, \
             next_attempt_at, created_at, updated_at) ",
        );
        q.push_values(&ids, |mut b, (id, waybill, time, at)| {
            b.push_bind(EntryKind::Pathnotify.as_str())
                .push_bind(waybill)
                .push_bind(*id)
                .push_bind(*time)
                .push_bind(EntryState::Pending.as_str())
                .push_bind(0_i64)
                .push_bind(*at)
                .push_bind(*at)
                .push_bind(*at);
        });
        q.build().execute($conn).await?;

        // One row per waybill: an upsert may not touch a row twice in one statement.
        let due: BTreeMap<&str, i64> = ids.iter().fold(BTreeMap::new(), |mut m, r| {
            let at = m.entry(r.1.as_str()).or_insert(r.3);
            *at = (*at).min(r.3);
            m
        });
        let mut q: QueryBuilder<$db> =
            QueryBuilder::new("INSERT INTO push_queue (waybill_id, due_at) ");
        q.push_values(&due, |mut b, (waybill, at)| {
            b.push_bind(*waybill).push_bind(*at);
        });
        q.push(
            " ON CONFLICT (waybill_id) DO UPDATE SET due_at = \
             CASE WHEN push_queue.due_at IS NULL OR push_queue.due_at > excluded.due_at \
                  THEN excluded.due_at ELSE push_queue.due_at END",
        );
        q.build().execute($conn).await?;
    }};
}

/// Every event in transactions of `per_transaction` on `conn` (closed after); the seconds.
macro_rules! timed_inserts {
    ($db:ty, $conn:expr, $events:expr, $per_transaction:expr) => {{
        let mut conn = $conn;
        let started = Instant::now();
        for chunk in $events.chunks($per_transaction) {
            let mut tx = conn.begin().await?;
            for rows in chunk.chunks(ROWS_PER_STATEMENT) {
                insert_rows!($db, &mut *tx, rows);
            }
            tx.commit().await?;
        }
        let secs = started.elapsed().as_secs_f64();
        conn.close().await?;
        secs
    }};
}

/// Inserts `events` (of waybills that exist, none of them stored yet) in transactions of
/// `per_transaction`; the seconds it took, connecting not counted.
pub(super) async fn insert_raw(
    db: &DatabaseSettings,
    events: &[NewEvent],
    per_transaction: usize,
) -> anyhow::Result<f64> {
    if db.url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(&db.url)?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match db.synchronous {
                Synchronous::Full => SqliteSynchronous::Full,
                Synchronous::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(std::time::Duration::from_secs(5))
            .foreign_keys(true);
        let conn = SqliteConnection::connect_with(&options).await?;
        Ok(timed_inserts!(sqlx::Sqlite, conn, events, per_transaction))
    } else {
        let conn = PgConnection::connect(&db.url).await?;
        Ok(timed_inserts!(
            sqlx::Postgres,
            conn,
            events,
            per_transaction
        ))
    }
}
