//! The API's error answer, `{"error": {"kind", "message"}}`, which every
//! route answers with, the agent routes and the webhook included.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A JSON error.
pub(crate) fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            kind: kind.to_owned(),
            message: message.into(),
        },
    };
    (status, Json(body)).into_response()
}

/// Every error the API answers: `{"error": {"kind", "message"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Error)]
pub(crate) struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// A stable word for programs: `bad_request`, `invalid`,
    /// `unsupported_media_type`, `too_large`, `unauthorized`,
    /// `forbidden`, `not_found`, `refused`, `no_model`, `store`,
    /// `stopping`, `unavailable`.
    pub kind: String,
    /// What happened and what to do, for people.
    pub message: String,
}
