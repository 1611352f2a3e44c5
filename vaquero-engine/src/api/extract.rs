//! The API's extractors: axum's, with every rejection answered as the
//! JSON error all the API's errors are (`{"error": {"kind", "message"}}`),
//! not as text.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::error;

/// An extractor's rejection as a JSON error, with the status it chose:
/// 400 (malformed), 413 (too large), 415 (not JSON), 422 (JSON of the
/// wrong shape).
fn rejected(rejection: impl IntoResponse + std::fmt::Display) -> Response {
    let message = rejection.to_string();
    let status = rejection.into_response().status();
    let kind = match status {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        _ => "bad_request",
    };
    error(status, kind, message)
}

/// A JSON object as the request body (`Content-Type: application/json`);
/// anything but an object (an array, say, which serde would read as a
/// struct's fields in order) is refused with 422.
#[derive(Debug)]
pub(crate) struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let axum::Json(value) = axum::Json::<serde_json::Value>::from_request(req, state)
            .await
            .map_err(rejected)?;
        object(value).map(Body).map_err(invalid)
    }
}

/// `value` as `T`, when it is a JSON object of `T`'s shape; otherwise
/// what is wrong with it.
fn object<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    if !value.is_object() {
        return Err("the body must be a JSON object".into());
    }
    serde_json::from_value(value).map_err(|e| format!("the body: {e}"))
}

/// 422: JSON of the wrong shape.
fn invalid(message: impl Into<String>) -> Response {
    error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
}

/// A JSON request body that may be left out: no body (or only
/// whitespace) and no `Content-Type`, or JSON `null`, is `None`;
/// anything else must be JSON of the right shape.
#[derive(Debug)]
pub(crate) struct MaybeBody<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for MaybeBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        if req.headers().contains_key(header::CONTENT_TYPE) {
            let axum::Json(value) = axum::Json::<serde_json::Value>::from_request(req, state)
                .await
                .map_err(rejected)?;
            if value.is_null() {
                return Ok(MaybeBody(None));
            }
            return object(value).map(|v| MaybeBody(Some(v))).map_err(invalid);
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(rejected)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            Ok(MaybeBody(None))
        } else {
            Err(error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "a request body needs `Content-Type: application/json`",
            ))
        }
    }
}

/// A query string.
#[derive(Debug)]
pub(crate) struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(rejected)
    }
}

/// Parameters of the path.
#[derive(Debug)]
pub(crate) struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(rejected)
    }
}
