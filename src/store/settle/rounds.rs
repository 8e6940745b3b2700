//! The fencing read of a group's settles and the rounds that keep two commands on one
//! waybill apart: one read of the rows, exact because the group's transaction is the only
//! writer.

use crate::store::states::EntryState;
use crate::store::{dialect, json_list, json_rows, Col};
use futures_util::future::BoxFuture;
use sqlx::AnyConnection;
use std::collections::{HashMap, HashSet};

/// What the fences need to know of an entry: its waybill, whether it is pending, who holds
/// the waybill's lease, and the node it carries.
#[derive(sqlx::FromRow)]
pub(super) struct Entry {
    pub(super) id: i64,
    pub(super) waybill_id: String,
    pub(super) state: String,
    pub(super) lease_owner: Option<String>,
    pub(super) action_time: i64,
    pub(super) event_id: Option<i64>,
    #[sqlx(skip)]
    pub(super) pending: bool,
}

impl Entry {
    pub(super) fn held_by(&self, owner: &str) -> bool {
        self.lease_owner.as_deref() == Some(owner)
    }
}

/// The entries with these ids (unknown ids are absent), with their waybills' lease holders.
pub(super) async fn lookup(
    conn: &mut AnyConnection,
    ids: impl Iterator<Item = i64>,
) -> Result<HashMap<i64, Entry>, sqlx::Error> {
    let ids: Vec<i64> = ids.collect::<HashSet<_>>().into_iter().collect();
    let sql = format!(
        "SELECT o.id, o.waybill_id, o.state, q.lease_owner, o.action_time, o.event_id \
         FROM outbox o LEFT JOIN push_queue q ON q.waybill_id = o.waybill_id \
         WHERE o.id IN ({})",
        json_list(dialect(conn), 1, Col::Int)
    );
    let rows: Vec<Entry> = sqlx::query_as(&sql)
        .bind(json_rows(&ids))
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|mut entry| {
            entry.pending = EntryState::parse(&entry.state) == Some(EntryState::Pending);
            (entry.id, entry)
        })
        .collect())
}

/// PostgreSQL: locks every row the fences of `writes` read (the entries they name, then the
/// queue rows of those entries' waybills and of the waybills they name), in the store's
/// lock order, so that no other transaction changes them before this one commits. SQLite
/// needs none: its group is the only writer.
pub(super) async fn lock_rows(
    conn: &mut AnyConnection,
    writes: &[crate::store::PushWrites],
) -> Result<(), sqlx::Error> {
    use crate::store::PushStep;
    let mut ids: Vec<i64> = writes
        .iter()
        .flat_map(|w| {
            let step = match &w.step {
                Some(PushStep::Begin { outbox_id }) => Some(*outbox_id),
                Some(PushStep::Complete { outbox_id, .. }) => Some(*outbox_id),
                None => None,
            };
            w.skips
                .iter()
                .flat_map(|(ids, _)| ids.iter().copied())
                .chain(step)
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut waybills: Vec<String> = writes
        .iter()
        .map(|w| w.waybill_id.clone())
        .filter(|w| !w.is_empty())
        .collect();
    if !ids.is_empty() {
        let sql = format!(
            "SELECT waybill_id FROM outbox WHERE id IN ({}) ORDER BY id FOR UPDATE",
            json_list(dialect(conn), 1, Col::Int)
        );
        let of_entries: Vec<String> = sqlx::query_scalar(&sql)
            .bind(json_rows(&ids))
            .fetch_all(&mut *conn)
            .await?;
        waybills.extend(of_entries);
    }
    waybills.sort_unstable();
    waybills.dedup();
    if !waybills.is_empty() {
        let sql = format!(
            "SELECT waybill_id FROM push_queue WHERE waybill_id IN ({}) \
             ORDER BY waybill_id FOR UPDATE",
            json_list(dialect(conn), 1, Col::Text)
        );
        sqlx::query(&sql)
            .bind(json_rows(&waybills))
            .fetch_all(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The writes of one round of accepted commands.
pub(super) type Round<C> = for<'a> fn(
    &'a mut AnyConnection,
    Vec<&'a C>,
    &'a HashMap<i64, Entry>,
) -> BoxFuture<'a, Result<(), sqlx::Error>>;

/// Runs `round` over the commands in rounds: each round looks the entries up afresh, asks
/// `decide` for each command still open (`Err`: its outcome, decided; `Ok(waybills)`:
/// accepted, touching those waybills), and applies the accepted commands whose waybills no
/// earlier command of the round touches; the others wait for the next round.
pub(super) async fn in_rounds<C, T>(
    conn: &mut AnyConnection,
    commands: &[C],
    ids: impl Fn(&C) -> Vec<i64>,
    decide: impl Fn(&C, &HashMap<i64, Entry>) -> Result<Vec<String>, T>,
    accepted: T,
    round: Round<C>,
) -> Result<Vec<T>, sqlx::Error>
where
    T: Clone,
{
    let mut outcomes: Vec<Option<T>> = vec![None; commands.len()];
    let mut open: Vec<usize> = (0..commands.len()).collect();
    while !open.is_empty() {
        let entries = lookup(&mut *conn, open.iter().flat_map(|&i| ids(&commands[i]))).await?;
        let mut touched: HashSet<String> = HashSet::new();
        let (mut now, mut later) = (Vec::new(), Vec::new());
        for i in open {
            match decide(&commands[i], &entries) {
                Err(outcome) => outcomes[i] = Some(outcome),
                Ok(waybills) if waybills.iter().all(|w| !touched.contains(w)) => {
                    touched.extend(waybills);
                    outcomes[i] = Some(accepted.clone());
                    now.push(i);
                }
                Ok(_) => later.push(i),
            }
        }
        if !now.is_empty() {
            let chosen: Vec<&C> = now.iter().map(|&i| &commands[i]).collect();
            round(&mut *conn, chosen, &entries).await?;
        }
        open = later;
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.expect("every command gets an outcome"))
        .collect())
}
