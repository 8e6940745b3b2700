//! What each answer to a notification send means (spec `wechat-notifications.md` §1.3, §2.5).
//! Pure: the worker acts on the class.

use crate::store::NotifyKind;
use crate::wechat::client::ApiError;
use crate::wechat::errcode::{answer, errcode_of, of_errcode, Answer};

/// The class of one send's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// 40001/40014/42001: refresh the token once and retry once.
    TokenInvalid,
    /// 43101: the user has not subscribed (or used the subscription): skip, and set the
    /// user's count for the template to zero.
    NoConsent,
    /// 41028/41029: this form_id/prepay_id is invalid, expired or used up: discard it and
    /// try the next one.
    CredentialRefused,
    /// 43108: another send to this user is in progress (not ours: we send one at a time);
    /// retry after a short delay.
    UserBusy,
    /// Network, timeout, 5xx, `-1` on subscribe/send: the retry schedule.
    Transient,
    /// 45011.
    MinuteQuota,
    /// 45009: pause the API until the quota resets.
    DailyQuota,
    /// Anything retrying cannot fix (40003, 40037, 41030, 43107, 45168, 47003, …): dead.
    Permanent,
}

/// Classifies a send's result. Legacy `template/send` is retired at WeChat, so any errcode
/// not handled explicitly there is permanent (spec §1.3).
pub fn classify<T>(kind: NotifyKind, result: &Result<T, ApiError>) -> Outcome {
    match errcode_of(result) {
        Some(errcode) => classify_errcode(kind, errcode),
        None => of_answer(answer(result)),
    }
}

pub fn classify_errcode(kind: NotifyKind, errcode: i64) -> Outcome {
    match (kind, errcode) {
        (NotifyKind::Subscribe, 43101) => Outcome::NoConsent,
        (NotifyKind::Subscribe, 43108) => Outcome::UserBusy,
        (NotifyKind::Template, 41028 | 41029) => Outcome::CredentialRefused,
        // The legacy API is retired at WeChat: its "busy" is not worth a retry.
        (NotifyKind::Template, -1) => Outcome::Permanent,
        _ => of_answer(of_errcode(errcode)),
    }
}

/// The shared meaning ([`crate::wechat::errcode`]) as a send's outcome.
fn of_answer(a: Answer) -> Outcome {
    match a {
        Answer::Ok => Outcome::Delivered,
        Answer::TokenInvalid => Outcome::TokenInvalid,
        Answer::Transient => Outcome::Transient,
        Answer::MinuteQuota => Outcome::MinuteQuota,
        Answer::DailyQuota => Outcome::DailyQuota,
        Answer::Other => Outcome::Permanent,
    }
}

/// Permanent outcomes that mean our configuration is wrong (alert, not just a dead entry).
pub fn is_config_error(errcode: i64) -> bool {
    matches!(errcode, 40037 | 41030 | 43107)
}

/// Whether the spec lists this errcode for the notification APIs (see
/// [`crate::outbox::policy::is_listed`]).
pub fn is_listed(errcode: i64) -> bool {
    errcode_name(errcode) != "other"
}

/// Human name of an errcode for the attempt log.
pub fn errcode_name(errcode: i64) -> &'static str {
    match errcode {
        40003 => "invalid openid",
        40037 => "invalid template_id",
        41028 => "form_id invalid or expired",
        41029 => "form_id used up",
        41030 => "page invalid",
        43101 => "user has not subscribed",
        43107 => "subscribe messages banned for this account or template",
        43108 => "concurrent sends to one user",
        45168 => "sensitive word",
        47003 => "parameter error (data format)",
        other => crate::outbox::policy::errcode_name(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_errcode_of_the_spec_has_a_class() {
        use NotifyKind::{Subscribe as S, Template as T};
        for (kind, code, outcome) in [
            (S, 40001, Outcome::TokenInvalid),
            (S, 40003, Outcome::Permanent),
            (S, 40014, Outcome::TokenInvalid),
            (S, 40037, Outcome::Permanent),
            (S, 43101, Outcome::NoConsent),
            (S, 43107, Outcome::Permanent),
            (S, 43108, Outcome::UserBusy),
            (S, 45168, Outcome::Permanent),
            (S, 47003, Outcome::Permanent),
            (S, -1, Outcome::Transient),
            (S, 45009, Outcome::DailyQuota),
            (S, 45011, Outcome::MinuteQuota),
            (T, 40037, Outcome::Permanent),
            (T, 41028, Outcome::CredentialRefused),
            (T, 41029, Outcome::CredentialRefused),
            (T, 41030, Outcome::Permanent),
            (T, 45009, Outcome::DailyQuota),
            (T, -1, Outcome::Permanent),
            (T, 45109, Outcome::Permanent),
            (T, 43101, Outcome::Permanent),
        ] {
            assert_eq!(classify_errcode(kind, code), outcome, "{kind:?} {code}");
        }
        assert_eq!(
            classify::<()>(S, &Err(ApiError::Timeout)),
            Outcome::Transient
        );
        assert_eq!(
            classify::<()>(T, &Err(ApiError::Http(503))),
            Outcome::Transient
        );
        assert_eq!(
            classify::<()>(T, &Err(ApiError::Http(404))),
            Outcome::Permanent
        );
        assert!(is_config_error(41030));
    }
}
