//! Field-level validation errors, collected so one response can name every bad field.

use serde::Serialize;

/// One bad input field: a JSON-pointer-like path (`receiver.phone`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Accumulates [`FieldError`]s while a payload is converted to domain types.
#[derive(Debug, Default)]
pub struct Errors(Vec<FieldError>);

impl Errors {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn into_vec(self) -> Vec<FieldError> {
        self.0
    }
    /// `Ok(value)` when nothing was added, otherwise every error.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            Err(self.0)
        }
    }
}

/// A required text field: trimmed of nothing (bytes go to WeChat as sent), 1..=max characters,
/// no control characters.
pub fn text(
    errors: &mut Errors,
    field: &str,
    value: Option<&str>,
    max_chars: usize,
    required: bool,
) -> Option<String> {
    match value {
        None | Some("") if required => {
            errors.add(field, "is required");
            None
        }
        None | Some("") => None,
        Some(v) => {
            if v.chars().count() > max_chars {
                errors.add(field, format!("is longer than {max_chars} characters"));
                None
            } else if v.chars().any(|c| c.is_control()) {
                errors.add(field, "contains control characters");
                None
            } else if v.trim().is_empty() {
                errors.add(field, "is blank");
                None
            } else {
                Some(v.to_string())
            }
        }
    }
}

/// Times must be after 2000-01-01 and not more than a day in the future (clock skew margin).
pub fn unix_time(errors: &mut Errors, field: &str, value: Option<i64>, now: i64) -> Option<i64> {
    const Y2000: i64 = 946_684_800;
    match value {
        None => {
            errors.add(field, "is required (Unix seconds)");
            None
        }
        Some(t) if t < Y2000 => {
            errors.add(field, "is before 2000-01-01; expected Unix seconds");
            None
        }
        Some(t) if t > now + 86_400 => {
            errors.add(
                field,
                "is more than a day in the future; expected Unix seconds",
            );
            None
        }
        Some(t) => Some(t),
    }
}
