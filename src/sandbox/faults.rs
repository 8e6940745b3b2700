//! Fault injection: per emulated API, added latency and failures WeChat really shows
//! (`-1` system busy, 45009/45011 quotas, HTTP 5xx, dropped connections), and for the reverse
//! query a slow or failing callback. Set as a whole with `PUT /sandbox/faults`.
//!
//! Read on every request through an `ArcSwap` (no lock); `times` counts down atomically.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use super::api::Api;

/// Faults for every API. `{}` (the default) means none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    pub token: ApiFault,
    pub stable_token: ApiFault,
    pub userquery: ApiFault,
    pub pathnotify: ApiFault,
    pub subscribe_send: ApiFault,
    pub template_send: ApiFault,
    /// How the carrier's callback behaves during pathnotify's reverse query.
    pub callback: CallbackFault,
}

/// Faults of one API. `latency_ms` always applies; the failure (`drop_connection`, else
/// `http_status`, else `errcode`) fires with `probability` (default 1) on at most `times`
/// calls (default: until the faults are changed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiFault {
    /// Added before the API does anything, in milliseconds.
    pub latency_ms: u64,
    /// Answer `{errcode, errmsg}` with this code instead, e.g. -1, 45009, 45011.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errcode: Option<i64>,
    /// Answer this HTTP status (500..=599) with an empty body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Close the connection without a complete response.
    pub drop_connection: bool,
    /// `pathnotify` only: the failure fires after the reverse query was answered and the
    /// node checked (WeChat saw a consistent node, then failed anyway: the node is not
    /// delivered). Without it, failures fire before anything is done.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub after_reverse_query: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

/// The carrier's callback as seen by the reverse query. `latency_ms` counts against the
/// callback timeout (a latency at or above it is a timeout); `fail` makes the callback
/// unreachable. Both give 932001 the way a real slow or dead callback would.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallbackFault {
    pub latency_ms: u64,
    pub fail: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

/// What a handler must do instead of (or before) its normal work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    Errcode(i64),
    HttpStatus(u16),
    Drop,
}

/// The decision for one call.
#[derive(Debug, Clone, Copy, Default)]
pub struct Decision {
    pub latency: Duration,
    pub action: Option<FaultAction>,
}

/// The decision for one reverse query.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallbackDecision {
    pub latency: Duration,
    pub fail: bool,
}

impl Faults {
    /// Rejects values that cannot be emulated, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        for api in Api::ALL {
            let f = self.api(api);
            let name = api.name();
            if let Some(s) = f.http_status {
                if !(500..=599).contains(&s) {
                    return Err(format!("{name}.http_status: {s} is not a 5xx status"));
                }
            }
            if f.errcode == Some(0) {
                return Err(format!("{name}.errcode: 0 is not an error"));
            }
            if f.after_reverse_query && api != Api::Pathnotify {
                return Err(format!(
                    "{name}.after_reverse_query: only pathnotify makes a reverse query"
                ));
            }
            check_probability(&format!("{name}.probability"), f.probability)?;
        }
        check_probability("callback.probability", self.callback.probability)
    }

    pub fn api(&self, api: Api) -> &ApiFault {
        match api {
            Api::Token => &self.token,
            Api::StableToken => &self.stable_token,
            Api::Userquery => &self.userquery,
            Api::Pathnotify => &self.pathnotify,
            Api::SubscribeSend => &self.subscribe_send,
            Api::TemplateSend => &self.template_send,
        }
    }
}

fn check_probability(field: &str, p: Option<f64>) -> Result<(), String> {
    match p {
        Some(p) if !(0.0..=1.0).contains(&p) => Err(format!("{field}: {p} is not between 0 and 1")),
        _ => Ok(()),
    }
}

/// Slot of the callback in `remaining`, after the APIs.
const CALLBACK_SLOT: usize = Api::ALL.len();

struct Armed {
    faults: Faults,
    active: bool,
    /// Failures left per API (and the callback); negative means unlimited.
    remaining: [AtomicI64; Api::ALL.len() + 1],
}

impl Armed {
    fn new(faults: Faults) -> Armed {
        let times = |t: Option<u32>| AtomicI64::new(t.map_or(-1, i64::from));
        let remaining = std::array::from_fn(|i| match Api::ALL.get(i) {
            Some(api) => times(faults.api(*api).times),
            None => times(faults.callback.times),
        });
        Armed {
            active: faults != Faults::default(),
            faults,
            remaining,
        }
    }

    /// Probability roll, then one unit of `times`.
    fn fire(&self, slot: usize, probability: Option<f64>) -> bool {
        let p = probability.unwrap_or(1.0);
        if p < 1.0 && !rand::thread_rng().gen_bool(p.max(0.0)) {
            return false;
        }
        let counter = &self.remaining[slot];
        loop {
            let left = counter.load(Ordering::Relaxed);
            if left < 0 {
                return true;
            }
            if left == 0 {
                return false;
            }
            if counter
                .compare_exchange(left, left - 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return true;
            }
        }
    }
}

/// The faults in force.
pub struct FaultBox {
    armed: ArcSwap<Armed>,
}

impl Default for FaultBox {
    fn default() -> Self {
        FaultBox {
            armed: ArcSwap::from_pointee(Armed::new(Faults::default())),
        }
    }
}

impl FaultBox {
    pub fn set(&self, faults: Faults) {
        self.armed.store(Arc::new(Armed::new(faults)));
    }

    pub fn get(&self) -> Faults {
        self.armed.load().faults.clone()
    }

    /// The decision before the API does anything: the latency, and a failure unless it is
    /// set to fire after the reverse query.
    pub fn decide(&self, api: Api) -> Decision {
        self.decide_phase(api, false)
    }

    /// The decision after the reverse query was answered: a failure set with
    /// `after_reverse_query`, if it fires (no latency: that was added before).
    pub fn decide_after_reverse_query(&self, api: Api) -> Option<FaultAction> {
        self.decide_phase(api, true).action
    }

    fn decide_phase(&self, api: Api, after_reverse_query: bool) -> Decision {
        let armed = self.armed.load();
        if !armed.active {
            return Decision::default();
        }
        let f = armed.faults.api(api);
        let latency = if after_reverse_query {
            Duration::ZERO
        } else {
            Duration::from_millis(f.latency_ms)
        };
        if f.after_reverse_query != after_reverse_query {
            return Decision {
                latency,
                action: None,
            };
        }
        let wanted = if f.drop_connection {
            Some(FaultAction::Drop)
        } else if let Some(s) = f.http_status {
            Some(FaultAction::HttpStatus(s))
        } else {
            f.errcode.map(FaultAction::Errcode)
        };
        let action = wanted.filter(|_| armed.fire(api.index(), f.probability));
        Decision { latency, action }
    }

    pub fn decide_callback(&self) -> CallbackDecision {
        let armed = self.armed.load();
        if !armed.active {
            return CallbackDecision::default();
        }
        let f = &armed.faults.callback;
        let fail = f.fail && armed.fire(CALLBACK_SLOT, f.probability);
        CallbackDecision {
            latency: Duration::from_millis(f.latency_ms),
            fail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_faults_decide_nothing() {
        let b = FaultBox::default();
        let d = b.decide(Api::Pathnotify);
        assert!(d.action.is_none() && d.latency.is_zero());
    }

    #[test]
    fn times_limits_how_often_a_fault_fires() {
        let b = FaultBox::default();
        b.set(Faults {
            userquery: ApiFault {
                errcode: Some(-1),
                times: Some(2),
                ..Default::default()
            },
            ..Default::default()
        });
        assert_eq!(
            b.decide(Api::Userquery).action,
            Some(FaultAction::Errcode(-1))
        );
        assert_eq!(
            b.decide(Api::Userquery).action,
            Some(FaultAction::Errcode(-1))
        );
        assert_eq!(b.decide(Api::Userquery).action, None);
        assert_eq!(b.decide(Api::Pathnotify).action, None);
    }

    #[test]
    fn drop_wins_over_status_and_errcode() {
        let b = FaultBox::default();
        b.set(Faults {
            token: ApiFault {
                errcode: Some(-1),
                http_status: Some(502),
                drop_connection: true,
                ..Default::default()
            },
            ..Default::default()
        });
        assert_eq!(b.decide(Api::Token).action, Some(FaultAction::Drop));
    }

    #[test]
    fn invalid_faults_are_refused_with_the_field() {
        let f = Faults {
            pathnotify: ApiFault {
                http_status: Some(404),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(f
            .validate()
            .unwrap_err()
            .starts_with("pathnotify.http_status"));
        let f: Faults = serde_json::from_str(r#"{"callback":{"probability":2}}"#).unwrap();
        assert!(f.validate().is_err());
        assert!(serde_json::from_str::<Faults>(r#"{"nope":{}}"#).is_err());
    }
}
