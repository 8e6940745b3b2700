//! Path parameters shared by routes: parsed here, documented here (OpenAPI).

use super::problem::Problem;
use crate::domain::{FieldError, WaybillId};

/// The `{waybill_id}` of a route's path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // read by hand with `waybill_id`, so that a bad one is a named 422
pub(crate) struct WaybillPath {
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    waybill_id: String,
}

/// The `{waybill_id}` of a path, parsed; a bad one is a 422 naming it.
pub(crate) fn waybill_id(raw: &str) -> Result<WaybillId, Problem> {
    WaybillId::parse(raw).map_err(|m| {
        Problem::validation(vec![FieldError {
            field: "waybill_id".into(),
            message: m,
        }])
    })
}
