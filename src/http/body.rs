//! Reading request bodies with a hard size limit, before any parsing.

use actix_web::{web, HttpRequest};
use futures_util::StreamExt;

use super::problem::Problem;
use crate::domain::strict::Strict;

/// Read the whole body, refusing (413) as soon as it exceeds `limit` bytes — by
/// `Content-Length` when present, else while streaming.
pub async fn read_limited(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, Problem> {
    if let Some(len) = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(Problem::too_large(limit));
        }
    }
    let mut buf = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| Problem::bad_request(format!("reading the body failed: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(Problem::too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// The media type of the request, lowercase, without parameters.
pub fn media_type(req: &HttpRequest) -> String {
    req.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// A JSON body (`application/json` or `+json`; else 415) as `T` (else 400 naming the error).
pub fn parse_json<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    body: &[u8],
) -> Result<T, Problem> {
    let mt = media_type(req);
    if mt != "application/json" && !mt.ends_with("+json") {
        return Err(Problem::unsupported_media("application/json"));
    }
    serde_json::from_slice::<Strict<T>>(body)
        .map(|s| s.0)
        .map_err(|e| {
            Problem::bad_request(format!("the body is not valid JSON for this endpoint: {e}"))
        })
}
