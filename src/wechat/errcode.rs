//! What any WeChat API's answer means before the API's own codes are consulted: the one table
//! of the codes and transport failures every API shares (token §3, express §2.3). The push
//! and the notification policies add their own codes over it.

use super::client::ApiError;

/// The shared meaning of one call's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `errcode` 0: accepted.
    Ok,
    /// 40001/40014/42001: the access_token is bad; refresh once and call once more.
    TokenInvalid,
    /// `-1` (WeChat busy), a timeout, a network error, HTTP 5xx, 429 or 408.
    Transient,
    /// 45011: the minute quota is spent.
    MinuteQuota,
    /// 45009: the daily quota is spent.
    DailyQuota,
    /// An HTTP 4xx, or an errcode no shared rule covers (the API's own, or unknown).
    Other,
}

/// The shared meaning of `result`.
pub fn answer<T>(result: &Result<T, ApiError>) -> Answer {
    match result {
        Ok(_) => Answer::Ok,
        Err(ApiError::WeChat { errcode, .. }) => of_errcode(*errcode),
        Err(ApiError::Timeout) | Err(ApiError::Network(_)) | Err(ApiError::Decode(_)) => {
            Answer::Transient
        }
        Err(ApiError::Http(s)) if *s >= 500 || *s == 429 || *s == 408 => Answer::Transient,
        Err(ApiError::Http(_)) => Answer::Other,
    }
}

/// The shared meaning of an `errcode`.
pub fn of_errcode(errcode: i64) -> Answer {
    match errcode {
        0 => Answer::Ok,
        40001 | 40014 | 42001 => Answer::TokenInvalid,
        -1 => Answer::Transient,
        45011 => Answer::MinuteQuota,
        45009 => Answer::DailyQuota,
        _ => Answer::Other,
    }
}

/// The errcode WeChat answered, if it answered one.
pub fn errcode_of<T>(result: &Result<T, ApiError>) -> Option<i64> {
    match result {
        Err(ApiError::WeChat { errcode, .. }) => Some(*errcode),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_codes_and_transport_failures() {
        for (code, a) in [
            (0, Answer::Ok),
            (40001, Answer::TokenInvalid),
            (40014, Answer::TokenInvalid),
            (42001, Answer::TokenInvalid),
            (-1, Answer::Transient),
            (45011, Answer::MinuteQuota),
            (45009, Answer::DailyQuota),
            (43101, Answer::Other),
            (932001, Answer::Other),
        ] {
            assert_eq!(of_errcode(code), a, "{code}");
        }
        for (status, a) in [
            (500, Answer::Transient),
            (429, Answer::Transient),
            (408, Answer::Transient),
            (404, Answer::Other),
        ] {
            assert_eq!(answer::<()>(&Err(ApiError::Http(status))), a, "{status}");
        }
        assert_eq!(answer::<()>(&Err(ApiError::Timeout)), Answer::Transient);
        assert_eq!(answer(&Ok(())), Answer::Ok);
    }
}
