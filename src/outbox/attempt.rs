//! Attempt rows: one per try of any outbox entry (pushes and shipping notifications alike).

use super::policy::errcode_name;
use crate::store::{Completion, NewAttempt};
use crate::wechat::client::{ApiError, Call};

/// The attempt row of one try that did not reach WeChat's answer (a token error, a receipt).
pub fn plain(outbox_id: i64, started: i64, outcome: &str, detail: &str) -> NewAttempt {
    NewAttempt {
        outbox_id,
        started_at: started,
        duration_ms: 0,
        http_status: None,
        errcode: None,
        outcome: outcome.to_string(),
        detail: detail.to_string(),
        rid: None,
    }
}

/// The attempt row of one call to `api`. `failed_outcome` is the caller's classification of a
/// failed call (`transient`, `permanent`, …); a successful call is `ok` with errcode 0.
pub fn of_call<T>(
    outbox_id: i64,
    started: i64,
    call: &Call<T>,
    api: &str,
    failed_outcome: &str,
) -> NewAttempt {
    let (outcome, errcode, detail) = match &call.result {
        Ok(_) => ("ok", Some(0), format!("{api}: ok")),
        Err(e) => {
            let name = e.errcode().map(errcode_name).unwrap_or("");
            (
                failed_outcome,
                e.errcode(),
                format!("{api}: {e} {name}").trim_end().to_string(),
            )
        }
    };
    NewAttempt {
        outbox_id,
        started_at: started,
        duration_ms: call.duration.as_millis() as i64,
        http_status: call.http_status.map(i64::from),
        errcode,
        outcome: outcome.to_string(),
        detail,
        rid: call
            .result
            .as_ref()
            .err()
            .and_then(ApiError::rid)
            .map(str::to_string),
    }
}

/// A retry at `at_ms`: its error is the attempt's detail, or `why` when no call was made
/// (an API paused by WeChat's quota, say).
pub fn retry(attempt: Option<&NewAttempt>, at_ms: i64, why: &str) -> Completion {
    let error = attempt.map_or_else(|| why.to_string(), |a| a.detail.clone());
    Completion::Retry {
        next_attempt_at: at_ms,
        error,
    }
}
