//! The closed vocabularies of the `outbox` table as types: an entry's kind, its state, and
//! why it was skipped. The database stores their [`as_str`](EntryState::as_str) names; a
//! name read back is parsed here, at the SQL edge, and an unknown one is a decode error, not
//! a string compared further in.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::NotifyKind;

/// Declares a fieldless enum with its stored names, `as_str`, `parse`, `ALL`, `Display` and
/// `Serialize` (as the stored name).
macro_rules! stored_names {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name stored in the database and shown in JSON.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The value a stored name stands for.
            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        /// A string, one of the stored names (the API's JSON shows them).
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some($name::ALL.iter().map(|v| v.as_str())))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

stored_names! {
    /// What an outbox entry sends.
    pub enum EntryKind {
        /// A path node pushed to the receiver (`pathnotify`).
        Pathnotify = "pathnotify",
        /// A subscribe message (`message/subscribe/send`).
        Subscribe = "subscribe",
        /// A legacy template message on a form_id/prepay_id.
        Template = "template",
    }
}

stored_names! {
    /// Where an outbox entry is in its life: `pending` until it is delivered, skipped or dead.
    pub enum EntryState {
        Pending = "pending",
        Delivered = "delivered",
        Skipped = "skipped",
        /// Failed for good or out of tries: kept for a redrive.
        Dead = "dead",
    }
}

stored_names! {
    /// Why an entry was skipped rather than sent.
    pub enum SkipReason {
        /// A newer node of the waybill was already pushed.
        Stale = "stale",
        /// A newer pending node of the waybill is pushed in its place.
        Coalesced = "coalesced",
        /// The receiver has not bound their phone in WeChat's express service.
        Unbound = "unbound",
        /// The recipient gave no consent that covers the message.
        NoConsent = "no_consent",
    }
}

stored_names! {
    /// Why a dead entry is dead (`outbox.dead_reason`, an outcome's `reason.code`).
    pub enum DeadReason {
        /// Not delivered by `outbox.deadline_secs` after it was accepted: never pushed later.
        Deadline = "deadline",
        /// WeChat refused it for good (a permanent errcode, a credential it refused).
        Refused = "refused",
        /// A notification WeChat refused for the rule's own fault (template id, data).
        TemplateError = "template_error",
        /// The retry schedule was spent.
        RetriesSpent = "retries_spent",
        /// What it needs is missing or cannot be opened (waybill, event, data key).
        Unreadable = "unreadable",
        /// Not retried after a try that got no answer, because a retry could send it twice.
        Unanswered = "unanswered",
    }
}

stored_names! {
    /// What became of an accepted event's entry, as the carrier is told (`outcomes.outcome`).
    pub enum Outcome {
        /// WeChat accepted the node (or the notification) for a bound receiver.
        Delivered = "delivered",
        /// The receiver is not bound, or their number cannot be bound.
        Unbound = "unbound",
        /// A permanent error, the retries spent, or the deadline passed.
        Dead = "dead",
        /// A newer pending node of the waybill was pushed in its place.
        Coalesced = "coalesced",
        /// A newer node of the waybill had been pushed already.
        Stale = "stale",
    }
}

stored_names! {
    /// Which channel an outcome is about (`outcomes.kind`).
    pub enum OutcomeKind {
        /// A path node (`pathnotify`).
        Push = "push",
        /// A shipping notification (subscribe or template message).
        Notification = "notification",
    }
}

impl Outcome {
    /// Whether the carrier should send its SMS: WeChat did not reach the receiver.
    pub fn sms_fallback(self) -> bool {
        matches!(self, Outcome::Unbound | Outcome::Dead)
    }
}

impl EntryKind {
    /// The notification API of a notification entry; `None` for a path-node push.
    pub fn notify_kind(self) -> Option<NotifyKind> {
        match self {
            EntryKind::Pathnotify => None,
            EntryKind::Subscribe => Some(NotifyKind::Subscribe),
            EntryKind::Template => Some(NotifyKind::Template),
        }
    }
}

impl From<NotifyKind> for EntryKind {
    fn from(k: NotifyKind) -> EntryKind {
        match k {
            NotifyKind::Subscribe => EntryKind::Subscribe,
            NotifyKind::Template => EntryKind::Template,
        }
    }
}

/// A stored name that none of a vocabulary's values has.
#[derive(Debug)]
struct UnknownName {
    vocabulary: &'static str,
    name: String,
}

impl std::fmt::Display for UnknownName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown {} {:?}", self.vocabulary, self.name)
    }
}

impl std::error::Error for UnknownName {}

fn decode_error(column: &str, vocabulary: &'static str, name: String) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_string(),
        source: Box::new(UnknownName { vocabulary, name }),
    }
}

/// Reads `column` of `row` as a name of one of these vocabularies.
pub(super) trait Column: Sized {
    const VOCABULARY: &'static str;
    fn from_name(s: &str) -> Option<Self>;

    fn column(row: &AnyRow, column: &str) -> Result<Self, sqlx::Error> {
        Self::stored(column, row.try_get(column)?)
    }

    /// `name`, read from `column`, as a value.
    fn stored(column: &str, name: String) -> Result<Self, sqlx::Error> {
        Self::from_name(&name).ok_or_else(|| decode_error(column, Self::VOCABULARY, name))
    }

    fn optional_column(row: &AnyRow, column: &str) -> Result<Option<Self>, sqlx::Error> {
        let name: Option<String> = row.try_get(column)?;
        name.map(|n| Self::from_name(&n).ok_or_else(|| decode_error(column, Self::VOCABULARY, n)))
            .transpose()
    }
}

impl Column for EntryKind {
    const VOCABULARY: &'static str = "outbox kind";
    fn from_name(s: &str) -> Option<Self> {
        EntryKind::parse(s)
    }
}

impl Column for EntryState {
    const VOCABULARY: &'static str = "outbox state";
    fn from_name(s: &str) -> Option<Self> {
        EntryState::parse(s)
    }
}

impl Column for SkipReason {
    const VOCABULARY: &'static str = "skip reason";
    fn from_name(s: &str) -> Option<Self> {
        SkipReason::parse(s)
    }
}

impl Column for DeadReason {
    const VOCABULARY: &'static str = "dead reason";
    fn from_name(s: &str) -> Option<Self> {
        DeadReason::parse(s)
    }
}

impl Column for Outcome {
    const VOCABULARY: &'static str = "outcome";
    fn from_name(s: &str) -> Option<Self> {
        Outcome::parse(s)
    }
}

impl Column for OutcomeKind {
    const VOCABULARY: &'static str = "outcome kind";
    fn from_name(s: &str) -> Option<Self> {
        OutcomeKind::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_value_and_no_other_name_does() {
        for k in EntryKind::ALL {
            assert_eq!(EntryKind::parse(k.as_str()), Some(*k));
        }
        for s in EntryState::ALL {
            assert_eq!(EntryState::parse(s.as_str()), Some(*s));
        }
        for r in SkipReason::ALL {
            assert_eq!(SkipReason::parse(r.as_str()), Some(*r));
        }
        for r in DeadReason::ALL {
            assert_eq!(DeadReason::parse(r.as_str()), Some(*r));
        }
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(*o));
        }
        assert_eq!(EntryState::parse("Pending"), None);
        assert_eq!(EntryKind::parse(""), None);
        assert_eq!(SkipReason::parse("no consent"), None);
    }

    #[test]
    fn sms_fallback_is_true_exactly_for_unbound_and_dead() {
        let fallback: Vec<Outcome> = Outcome::ALL
            .iter()
            .copied()
            .filter(|o| o.sms_fallback())
            .collect();
        assert_eq!(fallback, [Outcome::Unbound, Outcome::Dead]);
    }

    #[test]
    fn notification_kinds_are_the_entry_kinds_they_name() {
        for k in [NotifyKind::Subscribe, NotifyKind::Template] {
            assert_eq!(EntryKind::from(k).as_str(), k.as_str());
            assert_eq!(EntryKind::from(k).notify_kind(), Some(k));
        }
        assert_eq!(EntryKind::Pathnotify.notify_kind(), None);
        assert_eq!(
            serde_json::to_string(&SkipReason::NoConsent).unwrap(),
            "\"no_consent\""
        );
    }
}
