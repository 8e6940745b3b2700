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
//!   transaction) closes the group at once, so no later job runs outside it. The typed
//!   commands the group had taken were not applied yet: they go to the next group, so one
//!   failing job fails only itself;
//! - a set-based write that fails is applied again one command at a time, each in a
//!   savepoint of its own, so a failing command fails only itself too (`settle/`,
//!   `ingest.rs`, and the answers here). That fallback runs only once the rollback of the
//!   failed attempt succeeded, which proves the transaction still open: nothing ever runs
//!   outside it.
//!
//! Three kinds of write are not jobs but typed commands, applied set-based for the whole
//! group after its jobs, a few statements however many there are: single events (as a batch
//! of them, in the order they came: `ingest.rs`), reverse-query answers (the exchanges in one
//! multi-row insert: `exchanges.rs`), and the push worker's writes (beginning, skipping,
//! completing, releasing, caching a binding: `settle.rs`). The writers of one group were all
//! waiting at once, so any order among them is one they could have had.
//!
//! No waiting to fill a group: a group is what queued while the previous one ran, so a lone
//! writer pays no latency.
//!
//! PostgreSQL runs one of these too, for the push worker's settles only (`settle/`): its
//! other writers run concurrently, each in its own transaction ([`super::Store::write`]).
//! There the group's transaction is not the only writer, so a settle locks the rows it
//! fences on before reading them (`settle/rounds.rs`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::deliver::{deliver, Deliver};
use super::exchanges::{record_answers, AnswerReceipt};
use super::ingest::{self, Item};
use super::notifications::NotificationIntent;
use super::settle::{self, Settle};
use super::{Backend, EventInsert, ExchangeInsert, NewExchange, PushWrites, StoreError};

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

/// A write of exactly one statement (or none), given the group's connection itself: a
/// statement is atomic on its own, so it needs no savepoint (two round trips saved).
pub(super) type WriteOneFn<T> =
    Box<dyn for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, StoreError>> + Send>;

/// Handle to the writer task; cheap to clone. The task ends when every handle is dropped.
#[derive(Clone)]
pub(super) struct GroupCommit {
    queue: mpsc::Sender<Work>,
}

/// What the writer is sent.
enum Work {
    Job(Box<dyn Job>),
    Event {
        item: Item,
        intents: Vec<NotificationIntent>,
        reply: oneshot::Sender<Result<EventInsert, StoreError>>,
    },
    Answer {
        exchange: NewExchange,
        receipt: Option<AnswerReceipt>,
        reply: oneshot::Sender<Result<ExchangeInsert, StoreError>>,
    },
    Settle(Settle),
    /// Ends the writer, as a crash of its thread would (`Store::stop_writer`).
    Stop,
}

impl Work {
    /// Tells the caller that its write never ran.
    fn fail(self, error: String) {
        let error = StoreError::GroupCommit(error);
        match self {
            Work::Job(job) => job.fail(error),
            Work::Event { reply, .. } => drop(reply.send(Err(error))),
            Work::Answer { reply, .. } => drop(reply.send(Err(error))),
            Work::Settle(settle) => settle.fail(error),
            Work::Stop => {}
        }
    }
}

impl GroupCommit {
    /// Starts the writer, writing through `writer` (the pool of the one write connection),
    /// on a thread of its own: every statement is a round trip to the connection's thread,
    /// and the writer must not wait for a turn on a runtime busy with HTTP and crypto
    /// between them. The thread ends when every handle is dropped.
    pub(super) fn start(writer: AnyPool, backend: Backend) -> std::io::Result<GroupCommit> {
        let (queue, rx) = mpsc::channel(QUEUE);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("wxexpress-writer".into())
            .spawn(move || runtime.block_on(run(writer, backend, rx)))?;
        Ok(GroupCommit { queue })
    }

    /// Runs `f` in the next group and returns its result once the group has committed.
    pub(super) async fn submit<T: Send + 'static>(&self, f: WriteFn<T>) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Work::Job(Box::new(Task { f, reply }))).await?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Runs the one statement of `f` in the next group (no savepoint) and returns its result
    /// once the group has committed.
    pub(super) async fn submit_one<T: Send + 'static>(
        &self,
        f: WriteOneFn<T>,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Work::Job(Box::new(OneStatement { f, reply })))
            .await?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Records one event as a line of the group's batch (see `ingest.rs`).
    pub(super) async fn event(
        &self,
        item: Item,
        intents: Vec<NotificationIntent>,
    ) -> Result<EventInsert, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Work::Event {
            item,
            intents,
            reply,
        })
        .await?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Records a reverse query's answer (its exchange has a dedupe key) with the group's.
    pub(super) async fn answer(
        &self,
        exchange: NewExchange,
        receipt: Option<AnswerReceipt>,
    ) -> Result<ExchangeInsert, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Work::Answer {
            exchange,
            receipt,
            reply,
        })
        .await?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Applies the push worker's writes with the group's (see `settle.rs`).
    pub(super) async fn settle(&self, writes: PushWrites) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Work::Settle(Settle { writes, reply })).await?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Whether the writer has ended: every write would fail with
    /// [`StoreError::WriterStopped`].
    pub(super) fn stopped(&self) -> bool {
        self.queue.is_closed()
    }

    /// Ends the writer after what is queued before this.
    pub(super) async fn stop(&self) {
        let _ = self.queue.send(Work::Stop).await;
    }

    async fn send(&self, work: Work) -> Result<(), StoreError> {
        self.queue
            .send(work)
            .await
            .map_err(|_| StoreError::WriterStopped)
    }
}

/// What the writer task sees of a job: its type is erased.
trait Job: Send {
    /// Runs the job in a savepoint of `conn`'s transaction. Returns whether the group must
    /// close now (a database error), and the delivery of the job's result, called with the
    /// group's commit outcome.
    fn run<'c>(self: Box<Self>, conn: &'c mut AnyConnection) -> BoxFuture<'c, (bool, Deliver)>;
    /// Tells the caller that the job never ran.
    fn fail(self: Box<Self>, error: StoreError);
}

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
            (fatal, deliver(result, reply))
        })
    }

    fn fail(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error));
    }
}

struct OneStatement<T> {
    f: WriteOneFn<T>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T: Send + 'static> Job for OneStatement<T> {
    fn run<'c>(self: Box<Self>, conn: &'c mut AnyConnection) -> BoxFuture<'c, (bool, Deliver)> {
        Box::pin(async move {
            let OneStatement { f, reply } = *self;
            let result = f(conn).await;
            let fatal = matches!(result, Err(StoreError::Database(_)));
            (fatal, deliver(result, reply))
        })
    }

    fn fail(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error));
    }
}

/// Groups in a row on one checkout of the write connection, before it goes back to the pool
/// (where the few writes that do not go through the group wait their turn).
const GROUPS_PER_CHECKOUT: usize = 16;

async fn run(writer: AnyPool, backend: Backend, mut rx: mpsc::Receiver<Work>) {
    // SQLite: take the write lock up front (a deferred transaction that reads and then
    // writes fails at once when another connection wrote in between). PostgreSQL locks rows.
    let begin = match backend {
        Backend::Sqlite => "BEGIN IMMEDIATE",
        Backend::Postgres => "BEGIN",
    };
    let mut held: Option<PoolConnection<Any>> = None;
    // Commands a group took but did not apply (a job before them closed it): the next
    // group takes them first, in order.
    let mut carried: VecDeque<Work> = VecDeque::new();
    let mut groups = 0;
    // After a failed begin or commit, the connection is replaced.
    let mut broken = false;
    loop {
        if broken {
            // Closed, not handed back: a commit that failed may leave the connection inside
            // a transaction that sqlx still counts, and every later group would fail on it.
            // The pool opens a fresh one.
            if let Some(conn) = held.take() {
                let _ = conn.close().await;
            }
            groups = 0;
            broken = false;
        }
        // Keep the connection while work is queued (a checkout costs a round trip through
        // the pool); give it back when idle, and every few groups.
        let next = match carried.pop_front() {
            Some(work) => Ok(work),
            None => rx.try_recv(),
        };
        let first = match next {
            Ok(work) if groups < GROUPS_PER_CHECKOUT => work,
            next => {
                held = None;
                groups = 0;
                match next {
                    Ok(work) => work,
                    Err(_) => match rx.recv().await {
                        Some(work) => work,
                        None => break,
                    },
                }
            }
        };
        if matches!(first, Work::Stop) {
            tracing::error!("the writer stops: every write from now on fails");
            break;
        }
        let conn = match held {
            Some(ref mut conn) => conn,
            None => match writer.acquire().await {
                Ok(conn) => held.insert(conn),
                Err(e) => {
                    first.fail(e.to_string());
                    continue;
                }
            },
        };
        groups += 1;
        let mut tx = match conn.begin_with(begin).await {
            Ok(tx) => tx,
            Err(e) => {
                first.fail(e.to_string());
                broken = true;
                continue;
            }
        };
        let started = Instant::now();
        let mut delivers: Vec<Deliver> = Vec::new();
        let mut events = Vec::new();
        let mut answers = Vec::new();
        let mut settles = Vec::new();
        let mut taken = 0;
        let mut fatal = false;
        let mut next = Some(first);
        while let Some(work) = next.take() {
            taken += 1;
            match work {
                Work::Stop => {
                    // After this group, like any work queued behind it.
                    carried.push_front(Work::Stop);
                    break;
                }
                Work::Job(job) => {
                    let (failed, deliver) = job.run(&mut tx).await;
                    delivers.push(deliver);
                    if failed {
                        // SQLite may have ended the transaction: nothing else runs in it.
                        fatal = true;
                        break;
                    }
                }
                Work::Event {
                    item,
                    intents,
                    reply,
                } => events.push((item, intents, reply)),
                Work::Answer {
                    exchange,
                    receipt,
                    reply,
                } => answers.push((exchange, receipt, reply)),
                Work::Settle(settle) => settles.push(settle),
            }
            if taken >= MAX_JOBS || started.elapsed() >= MAX_HOLD {
                break;
            }
            next = carried.pop_front().or_else(|| rx.try_recv().ok());
        }
        if fatal {
            // Not applied yet: they wait for the next group, ahead of what is queued.
            let mut untouched: Vec<Work> = Vec::new();
            untouched.extend(
                events
                    .into_iter()
                    .map(|(item, intents, reply)| Work::Event {
                        item,
                        intents,
                        reply,
                    }),
            );
            untouched.extend(
                answers
                    .into_iter()
                    .map(|(exchange, receipt, reply)| Work::Answer {
                        exchange,
                        receipt,
                        reply,
                    }),
            );
            untouched.extend(settles.into_iter().map(Work::Settle));
            for work in untouched.into_iter().rev() {
                carried.push_front(work);
            }
        } else {
            if !events.is_empty() {
                record_events(&mut tx, events, &mut delivers).await;
            }
            if !answers.is_empty() {
                record_answers(&mut tx, answers, &mut delivers).await;
            }
            if !settles.is_empty() {
                delivers.extend(settle::apply(&mut tx, settles).await);
            }
        }
        let commit = tx.commit().await.map_err(|e| e.to_string());
        if let Err(e) = &commit {
            tracing::error!(error = %e, writes = delivers.len(), "a group commit failed; its writers are told");
            broken = true;
        }
        for deliver in delivers {
            deliver(&commit);
        }
    }
}

type EventWork = (
    Item,
    Vec<NotificationIntent>,
    oneshot::Sender<Result<EventInsert, StoreError>>,
);

/// The group's single events, in the order they came, as one batch.
async fn record_events(conn: &mut AnyConnection, work: Vec<EventWork>, out: &mut Vec<Deliver>) {
    let (mut items, mut intents, mut replies) = (Vec::new(), Vec::new(), Vec::new());
    for (item, wanted, reply) in work {
        items.push(item);
        intents.push(wanted);
        replies.push(reply);
    }
    let wanted: Vec<&[NotificationIntent]> = intents.iter().map(Vec::as_slice).collect();
    match ingest::chunk_in(conn, &items, &wanted).await {
        Ok(outcomes) => {
            for (outcome, reply) in outcomes.into_iter().zip(replies) {
                out.push(deliver(outcome, reply));
            }
        }
        Err(e) => {
            let e = e.to_string();
            for reply in replies {
                out.push(deliver(Err(StoreError::GroupCommit(e.clone())), reply));
            }
        }
    }
}
