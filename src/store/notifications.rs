//! Shipping notifications in the outbox: rows of kind `subscribe` or `template` whose
//! `recipient` is the user's openid, each with a `notify_entries` row naming the rule that
//! asked for it and the consent it holds; the per-openid lease (`notify_leases`) that keeps
//! at most one send per user in flight across every instance; completing a try.
//!
//! Notification rows are written only here, in the transaction of their event. The push
//! pipeline never sends them (`load_push_work` and `release_waybill` look at `pathnotify`
//! rows only), and completing one never moves a waybill's pushed position. Attempts, dead
//! entries and redrives are the outbox's own (`list_attempts`, `redrive_dead`,
//! `retry_entry`).

use std::collections::{BTreeMap, BTreeSet};

use sqlx::AnyConnection;

use super::records::OUTBOX_COLUMNS;
use super::states::{Column, EntryKind, EntryState, SkipReason};
use super::{
    attempts, events, push_queue, Completion, EventInsert, NewAttempt, NewEvent, OutboxEntry,
    Store, StoreError, WaybillRecord,
};

/// Which WeChat API sends a notification; also its outbox `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NotifyKind {
    /// `message/subscribe/send`, consent from the subscription ledger.
    Subscribe,
    /// `message/wxopen/template/send`, consent from a legacy form_id/prepay_id.
    Template,
}

impl NotifyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyKind::Subscribe => "subscribe",
            NotifyKind::Template => "template",
        }
    }

    pub fn parse(s: &str) -> Option<NotifyKind> {
        match s {
            "subscribe" => Some(NotifyKind::Subscribe),
            "template" => Some(NotifyKind::Template),
            _ => None,
        }
    }
}

/// Who on the waybill receives a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Sender,
    Receiver,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Sender => "sender",
            Role::Receiver => "receiver",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "sender" => Some(Role::Sender),
            "receiver" => Some(Role::Receiver),
            _ => None,
        }
    }
}

/// One notification an event asks for (compiled from the configured rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationIntent {
    /// Name of the rule: the worker builds the message from it at send time.
    pub rule: String,
    pub role: Role,
    pub kind: NotifyKind,
    pub template_id: String,
}

/// Action type -> the notifications an event of that type asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationPlan {
    by_action: BTreeMap<i64, Vec<NotificationIntent>>,
}

impl NotificationPlan {
    pub fn new() -> NotificationPlan {
        NotificationPlan::default()
    }

    pub fn add(&mut self, action_type: i64, intent: NotificationIntent) {
        self.by_action.entry(action_type).or_default().push(intent);
    }

    pub fn for_action(&self, action_type: i64) -> &[NotificationIntent] {
        self.by_action
            .get(&action_type)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.by_action.is_empty()
    }
}

/// A pending notification with what its worker needs.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NotificationWork {
    #[sqlx(flatten)]
    pub entry: OutboxEntry,
    pub rule: String,
    /// `sender` or `receiver`.
    pub role: String,
    pub template_id: String,
    /// 1 once a one-time subscription was taken for this entry (its retries reuse it).
    pub consent_held: i64,
    /// The legacy credential offered by the last try.
    pub credential_id: Option<i64>,
}

impl Store {
    /// Records one event, in one transaction: upserts `waybill` if given, fails with
    /// [`StoreError::UnknownWaybill`] (storing nothing) if the event's waybill then does not
    /// exist, and inserts the event unless the same (waybill_id, action_type, action_time)
    /// is already stored, in which case the stored row's id comes back as a duplicate.
    ///
    /// A new event also gets its `pathnotify` outbox entry (pending, due at `received_at`),
    /// makes its waybill due in `push_queue` by `received_at`, and gets the notifications
    /// `plan` asks for its action type: one outbox row (kind `subscribe`/`template`,
    /// recipient the openid) per intent whose role has an openid on the waybill, at most one
    /// per (openid, kind, template). A duplicate event writes nothing.
    ///
    /// The one way an event is written (a batch writes each line as this would).
    pub async fn record_event(
        &self,
        waybill: Option<&WaybillRecord>,
        event: &NewEvent,
        plan: &NotificationPlan,
    ) -> Result<EventInsert, StoreError> {
        let intents = plan.for_action(event.action_type).to_vec();
        if let Some(group) = &self.group {
            return group
                .event((waybill.cloned(), event.clone()), intents)
                .await;
        }
        let (waybill, event) = (waybill.cloned(), event.clone());
        self.write(Box::new(move |mut tx| {
            Box::pin(async move {
                let outcome = events::record_in(&mut tx, waybill.as_ref(), &event).await?;
                if let EventInsert::Inserted { id } = outcome {
                    enqueue_in(&mut tx, id, &event, &intents).await?;
                    push_queue::mark_due_in(&mut tx, &event.waybill_id, event.received_at).await?;
                }
                tx.commit().await?;
                Ok(outcome)
            })
        }))
        .await
    }

    /// Leases up to `limit` openids that have a due notification (`next_attempt_at <= now`)
    /// and no valid lease, to `owner` until `now + lease_ms`. An openid is never handed to
    /// two owners while its lease is valid: that is what keeps one send per user in flight.
    pub async fn claim_recipients(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let mut candidates: Vec<String> = sqlx::query_scalar(
            "SELECT o.recipient FROM outbox o \
             WHERE o.kind IN ($1, $2) AND o.state = $3 AND o.next_attempt_at <= $4 \
               AND o.recipient IS NOT NULL \
               AND NOT EXISTS (SELECT 1 FROM notify_leases l \
                               WHERE l.openid = o.recipient AND l.lease_until >= $4) \
             GROUP BY o.recipient \
             ORDER BY MIN(o.next_attempt_at) \
             LIMIT $5",
        )
        .bind(NotifyKind::Subscribe.as_str())
        .bind(NotifyKind::Template.as_str())
        .bind(EntryState::Pending.as_str())
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        candidates.sort();
        let mut claimed = Vec::with_capacity(candidates.len());
        for openid in candidates {
            // Each lease is its own statement: the upsert's WHERE decides between concurrent
            // claimers (PostgreSQL re-checks it on the row a racing claimer committed).
            let won: Option<String> = sqlx::query_scalar(
                "INSERT INTO notify_leases (openid, lease_owner, lease_until) VALUES ($1, $2, $3) \
                 ON CONFLICT (openid) DO UPDATE SET lease_owner = excluded.lease_owner, \
                     lease_until = excluded.lease_until \
                 WHERE notify_leases.lease_until < $4 \
                 RETURNING openid",
            )
            .bind(&openid)
            .bind(owner)
            .bind(now.saturating_add(lease_ms))
            .bind(now)
            .fetch_optional(&self.writer)
            .await?;
            claimed.extend(won);
        }
        Ok(claimed)
    }

    /// Moves the end of `owner`'s lease on `openid` to `until`; `false` if it was lost.
    pub async fn extend_recipient_lease(
        &self,
        openid: &str,
        owner: &str,
        until: i64,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE notify_leases SET lease_until = $3 WHERE openid = $1 AND lease_owner = $2",
        )
        .bind(openid)
        .bind(owner)
        .bind(until)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    /// Gives up `owner`'s lease on `openid` (nothing happens if it does not hold it).
    pub async fn release_recipient(&self, openid: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM notify_leases WHERE openid = $1 AND lease_owner = $2")
            .bind(openid)
            .bind(owner)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Up to `limit` pending notifications to `openid` that are due at `now`, oldest first.
    pub async fn load_notification_work(
        &self,
        openid: &str,
        now: i64,
        limit: i64,
    ) -> Result<Vec<NotificationWork>, StoreError> {
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS}, rule, role, template_id, consent_held, credential_id \
             FROM outbox JOIN notify_entries ON notify_entries.outbox_id = outbox.id \
             WHERE recipient = $1 AND state = $2 AND kind IN ($3, $4) AND next_attempt_at <= $5 \
             ORDER BY id LIMIT $6"
        );
        let rows = sqlx::query_as::<_, NotificationWork>(&sql)
            .bind(openid)
            .bind(EntryState::Pending.as_str())
            .bind(NotifyKind::Subscribe.as_str())
            .bind(NotifyKind::Template.as_str())
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    /// One notification (any state), with its entry row; `None` for an unknown id or a
    /// path-node entry.
    pub async fn get_notification(
        &self,
        outbox_id: i64,
    ) -> Result<Option<NotificationWork>, StoreError> {
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS}, rule, role, template_id, consent_held, credential_id \
             FROM outbox JOIN notify_entries ON notify_entries.outbox_id = outbox.id \
             WHERE id = $1"
        );
        let row = sqlx::query_as::<_, NotificationWork>(&sql)
            .bind(outbox_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row)
    }

    /// Applies the outcome of one try of a notification in one transaction, like
    /// [`Store::complete_entry`] but without touching the push queue. `revoke_consent`
    /// (WeChat answered 43101) also sets the user's subscriptions of the entry's template to
    /// zero. Fails with [`StoreError::UnknownOutboxEntry`] (writing nothing) unless `outbox_id`
    /// is a notification. Fenced: unless the entry is still pending and `owner` (the claim's
    /// token) still holds the lease on its recipient, nothing is written and
    /// [`StoreError::Fenced`] returned.
    pub async fn complete_notification(
        &self,
        outbox_id: i64,
        owner: &str,
        attempt: Option<&NewAttempt>,
        completion: &Completion,
        revoke_consent: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let kinds = [EntryKind::Subscribe, EntryKind::Template];
        let found = super::outbox::complete_in(&mut tx, outbox_id, now, completion, kinds).await?;
        let Some(recipient) = found else {
            return Err(
                match super::outbox::not_pending(&mut tx, outbox_id).await? {
                    // A path-node entry is not a notification.
                    StoreError::Fenced(_) if !self.is_notification(&mut tx, outbox_id).await? => {
                        StoreError::UnknownOutboxEntry(outbox_id)
                    }
                    e => e,
                },
            );
        };
        let openid = recipient.unwrap_or_default();
        if !holds_lease_in(&mut tx, self.backend, &openid, owner).await? {
            return Err(StoreError::Fenced(outbox_id));
        }
        if let Some(attempt) = attempt {
            attempts::insert_in(&mut tx, attempt).await?;
        }
        if !matches!(completion, Completion::Retry { .. }) {
            super::outcomes::record_in(&mut tx, &[outbox_id]).await?;
        }
        if revoke_consent {
            sqlx::query(
                "UPDATE notify_subscriptions SET remaining = 0, long_term = 0, updated_at = $2 \
                 WHERE (openid, template_id) IN ( \
                     SELECT o.recipient, n.template_id FROM outbox o \
                     JOIN notify_entries n ON n.outbox_id = o.id WHERE o.id = $1)",
            )
            .bind(outbox_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn is_notification(
        &self,
        conn: &mut AnyConnection,
        outbox_id: i64,
    ) -> Result<bool, sqlx::Error> {
        let kind: Option<String> = sqlx::query_scalar("SELECT kind FROM outbox WHERE id = $1")
            .bind(outbox_id)
            .fetch_optional(&mut *conn)
            .await?;
        Ok(kind
            .as_deref()
            .and_then(EntryKind::parse)
            .and_then(EntryKind::notify_kind)
            .is_some())
    }

    /// Records a try that leaves the entry pending (a refused legacy credential: the next
    /// one is tried at once).
    pub async fn record_notification_attempt(
        &self,
        attempt: &NewAttempt,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        attempts::insert_in(&mut tx, attempt).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Notifications counted by (kind, state, skip_reason), sorted.
    pub async fn notification_counts(
        &self,
    ) -> Result<Vec<(EntryKind, EntryState, Option<SkipReason>, i64)>, StoreError> {
        let rows: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(
            "SELECT kind, state, skip_reason, COUNT(*) FROM outbox \
             WHERE kind IN ($1, $2) GROUP BY kind, state, skip_reason",
        )
        .bind(EntryKind::Subscribe.as_str())
        .bind(EntryKind::Template.as_str())
        .fetch_all(&self.pool)
        .await?;
        let mut counts = rows
            .into_iter()
            .map(|(kind, state, reason, n)| {
                Ok((
                    EntryKind::stored("kind", kind)?,
                    EntryState::stored("state", state)?,
                    reason
                        .map(|r| SkipReason::stored("skip_reason", r))
                        .transpose()?,
                    n,
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        counts.sort();
        Ok(counts)
    }
}

/// Writes the notification rows of a newly inserted event inside the caller's transaction.
pub(super) async fn enqueue_in(
    conn: &mut AnyConnection,
    event_id: i64,
    event: &NewEvent,
    intents: &[NotificationIntent],
) -> Result<(), sqlx::Error> {
    if intents.is_empty() {
        return Ok(());
    }
    let openids: Option<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT sender_openid, receiver_openid FROM waybills WHERE waybill_id = $1")
            .bind(&event.waybill_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((sender, receiver)) = openids else {
        return Ok(());
    };
    enqueue_for_in(
        conn,
        event_id,
        event,
        intents,
        sender.as_deref(),
        receiver.as_deref(),
    )
    .await
}

/// [`enqueue_in`] with the waybill's openids as the caller knows them (as of this event).
pub(super) async fn enqueue_for_in(
    conn: &mut AnyConnection,
    event_id: i64,
    event: &NewEvent,
    intents: &[NotificationIntent],
    sender: Option<&str>,
    receiver: Option<&str>,
) -> Result<(), sqlx::Error> {
    let mut seen = BTreeSet::new();
    for intent in intents {
        let openid = match intent.role {
            Role::Sender => sender,
            Role::Receiver => receiver,
        };
        let Some(openid) = openid.filter(|o| !o.is_empty()) else {
            continue;
        };
        if !seen.insert((openid, intent.kind, intent.template_id.as_str())) {
            continue;
        }
        let outbox_id: i64 = sqlx::query_scalar(
            "INSERT INTO outbox (kind, waybill_id, event_id, action_time, recipient, state, \
                                 tries, next_attempt_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $7, $7) RETURNING id",
        )
        .bind(intent.kind.as_str())
        .bind(&event.waybill_id)
        .bind(event_id)
        .bind(event.action_time)
        .bind(openid)
        .bind(EntryState::Pending.as_str())
        .bind(event.received_at)
        .fetch_one(&mut *conn)
        .await?;
        sqlx::query(
            "INSERT INTO notify_entries (outbox_id, rule, role, template_id, consent_held) \
             VALUES ($1, $2, $3, $4, 0)",
        )
        .bind(outbox_id)
        .bind(&intent.rule)
        .bind(intent.role.as_str())
        .bind(&intent.template_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Whether `owner` (a claim's token) holds the lease on `openid`, inside the caller's write
/// transaction. On PostgreSQL the lease row stays locked until the transaction ends, so a
/// claimer that would take the lease over waits, then finds it renewed or released; on
/// SQLite the one writer already keeps every other writer out. Callers lock the outbox row
/// first (the store's lock order).
async fn holds_lease_in(
    conn: &mut AnyConnection,
    backend: super::Backend,
    openid: &str,
    owner: &str,
) -> Result<bool, sqlx::Error> {
    let select = "SELECT openid FROM notify_leases WHERE openid = $1 AND lease_owner = $2";
    let sql = match backend {
        super::Backend::Postgres => format!("{select} FOR UPDATE"),
        super::Backend::Sqlite => select.to_string(),
    };
    let held: Option<String> = sqlx::query_scalar(&sql)
        .bind(openid)
        .bind(owner)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(held.is_some())
}
