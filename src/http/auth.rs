//! Bearer-key authentication of the backoffice API.

use actix_web::HttpRequest;
use subtle::ConstantTimeEq;

use super::problem::Problem;
use crate::secret::Secret;

/// Accept the request when its bearer token equals one of `keys`. Every key is compared in
/// constant time, and all of them are compared, so timing tells nothing about which matched.
pub fn require_bearer(req: &HttpRequest, keys: &[Secret]) -> Result<(), Problem> {
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(Problem::unauthorized)?;
    let mut ok = subtle::Choice::from(0);
    for k in keys {
        ok |= given.as_bytes().ct_eq(k.expose().as_bytes());
    }
    if bool::from(ok) {
        Ok(())
    } else {
        Err(Problem::unauthorized())
    }
}
