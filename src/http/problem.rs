//! RFC 9457 problem details (`application/problem+json`) for every error the API returns.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::domain::{mask_phones_in_text, FieldError};

/// An error response. `errors` names each bad field.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(title = "application/problem+json (RFC 9457) error body")]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    /// The detail is shown to people and logged: phone numbers in it (a parser's error can
    /// quote the input, e.g. a phone sent as a JSON number) are masked here, once for all.
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("https://wxexpress.dev/problems/{slug}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: mask_phones_in_text(&detail.into()),
            errors: Vec::new(),
        }
    }
    pub fn validation(mut errors: Vec<FieldError>) -> Problem {
        for e in &mut errors {
            e.message = mask_phones_in_text(&e.message);
        }
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "Invalid input",
            format!("{} field(s) are invalid", errors.len()),
        );
        p.errors = errors;
        p
    }
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            "Malformed request",
            detail,
        )
    }
    pub fn unauthorized() -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            "a valid `Authorization: Bearer <api key>` header is required",
        )
    }
    pub fn too_large(limit: usize) -> Problem {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "Payload too large",
            format!("the body exceeds {limit} bytes"),
        )
    }
    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }
    pub fn unsupported_media(expected: &str) -> Problem {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "media-type",
            "Unsupported media type",
            format!("expected Content-Type {expected}"),
        )
    }
    pub fn internal() -> Problem {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the request could not be completed; it was not stored",
        )
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.title, self.detail)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
    fn error_response(&self) -> HttpResponse {
        let mut b = HttpResponse::build(self.status_code());
        b.content_type("application/problem+json");
        if self.status == 401 {
            b.insert_header(("WWW-Authenticate", "Bearer"));
        }
        b.json(self)
    }
}

impl From<crate::store::StoreError> for Problem {
    fn from(e: crate::store::StoreError) -> Problem {
        tracing::error!(error = %e, "store error");
        Problem::internal()
    }
}
