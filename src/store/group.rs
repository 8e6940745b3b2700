//! Group commit for SQLite: one task applies many writers' work in one transaction.
//!
//! SQLite lets one connection write at a time, and a commit costs the same for one row as
//! for a thousand. So the hot writes (an event, a reverse query's exchange and receipt, a
//! push's completion) are sent as jobs to one task, which owns the write connection for
//! the length of a group: it begins one `IMMEDIATE` transaction, runs the job that woke it
//! and every job already queued behind it (bounded by [`MAX_JOBS`] and [`MAX_HOLD`], so the
//! write lock is never held long), commits once, and only then hands each caller its own
//! result. Durability and each caller's outcome are what they were with a transaction per
//! call:
//!
//! - a caller hears back only after the commit that holds its writes;
//! - each job runs in a savepoint of its own: a job that fails, or returns without
//!   committing its savepoint, leaves nothing behind, and the others are unaffected;
//! - if the commit itself fails, every caller of the group gets the error and nothing of
//!   the group is stored; a job's database error (which may have ended SQLite's
//!   transaction) closes the group at once, so no later job runs outside it.
//!
//! No waiting to fill a group: a group is what queued while the previous one ran, so a lone
//! writer pays no latency. PostgreSQL does not use this (its writers run concurrently, each
//! in its own transaction: [`super::Store::write`]).

use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use sqlx::{Any, AnyConnection, AnyPool, Connection, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;

/// At most this many jobs share a transaction.
pub(super) const MAX_JOBS: usize = 256;
/// No job joins a group once it has held the write lock this long.
pub(super) const MAX_HOLD: Duration = Duration::from_millis(2);
/// Jobs waiting for the writer before a caller's send waits (back-pressure).
const QUEUE: usize = 4096;

/// A unit of work for the group: given a savepoint, it must commit the savepoint to keep
/// its writes.
pub(super) type WriteFn<T> =
    Box<dyn for<'c> FnOnce(Transaction<'c, Any>) -> BoxFuture<'c, Result<T, StoreError>> + Send>;

/// Handle to the writer task; cheap to clone. The task ends when every handle is dropped.
#[derive(Clone)]
pub(super) struct GroupCommit {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl GroupCommit {
    /// Starts the writer, writing through `writer` (the pool of the one write connection),
    /// on a thread of its own: every statement is a round trip to the connection's thread,
    /// and the writer must not wait for a turn on a runtime busy with HTTP and crypto
    /// between them. The thread ends when every handle is dropped.
    pub(super) fn start(writer: AnyPool) -> std::io::Result<GroupCommit> {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("wxexpress-writer".into())
            .spawn(move || runtime.block_on(run(writer, rx)))?;
        Ok(GroupCommit { jobs })
    }

    /// Runs `f` in the next group and returns its result once the group has committed.
    pub(super) async fn submit<T: Send + 'static>(&self, f: WriteFn<T>) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Box::new(Task { f, reply }))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }
}

/// What the writer task sees of a job: its type is erased.
trait Job: Send {
    /// Runs the job in a savepoint of `conn`'s transaction. Returns whether the group must
    /// close now (a database error), and the delivery of the job's result, called with the
    /// group's commit outcome.
    fn run<'c>(self: Box<Self>, conn: &'c mut AnyConnection) -> BoxFuture<'c, (bool, Deliver)>;
    /// Tells the caller that the job never ran.
    fn fail(self: Box<Self>, error: String);
}

type Deliver = Box<dyn FnOnce(&Result<(), String>) + Send>;

struct Task<T> {
    f: WriteFn<T>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T: Send + 'static> Job for Task<T> {
    fn run<'c>(self: Box<Self>, conn: &'c mut AnyConnection) -> BoxFuture<'c, (bool, Deliver)> {
        Box::pin(async move {
            let Task { f, reply } = *self;
            let result = match Connection::begin(conn).await {
                Ok(savepoint) => f(savepoint).await,
                Err(e) => Err(StoreError::Database(e)),
            };
            let fatal = matches!(result, Err(StoreError::Database(_)));
            let deliver: Deliver = Box::new(move |commit: &Result<(), String>| {
                let outcome = match commit {
                    Ok(()) => result,
                    // A job that failed on its own keeps its own error.
                    Err(_) if result.is_err() => result,
                    Err(e) => Err(StoreError::GroupCommit(e.clone())),
                };
                let _ = reply.send(outcome);
            });
            (fatal, deliver)
        })
    }

    fn fail(self: Box<Self>, error: String) {
        let _ = self.reply.send(Err(StoreError::GroupCommit(error)));
    }
}

async fn run(writer: AnyPool, mut rx: mpsc::Receiver<Box<dyn Job>>) {
    while let Some(first) = rx.recv().await {
        let mut conn = match writer.acquire().await {
            Ok(conn) => conn,
            Err(e) => {
                first.fail(e.to_string());
                continue;
            }
        };
        let mut tx = match conn.begin_with("BEGIN IMMEDIATE").await {
            Ok(tx) => tx,
            Err(e) => {
                first.fail(e.to_string());
                continue;
            }
        };
        let started = Instant::now();
        let mut delivers: Vec<Deliver> = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            let (fatal, deliver) = job.run(&mut tx).await;
            delivers.push(deliver);
            if fatal || delivers.len() >= MAX_JOBS || started.elapsed() >= MAX_HOLD {
                break;
            }
            next = rx.try_recv().ok();
        }
        let commit = tx.commit().await.map_err(|e| e.to_string());
        if let Err(e) = &commit {
            tracing::error!(error = %e, jobs = delivers.len(), "a group commit failed; its writers are told");
        }
        for deliver in delivers {
            deliver(&commit);
        }
    }
}
