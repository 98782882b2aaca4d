//! The API's errors: a status and a sentence, sent as `{"error": "..."}`.
//! Library errors map to the status a client can act on; only failures of
//! the database or of the server itself are 5xx.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pgbroker::Error;
use serde::Serialize;

/// An error answer of the API.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

/// What handlers return.
pub(crate) type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// 400: the request is malformed or a value is out of range.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401: no valid session.
    pub fn unauthenticated() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "log in first: no valid session")
    }

    /// 403: the caller may not do this.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// Any status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let status = match &e {
            Error::Invalid { .. }
            | Error::RecordTooLarge { .. }
            | Error::MessageTooLarge { .. }
            | Error::OffsetOutOfRange { .. }
            | Error::UnknownPartition { .. } => StatusCode::BAD_REQUEST,
            Error::UnknownTopic(_)
            | Error::UnknownGroup(_)
            | Error::UnknownQueue(_)
            | Error::UnknownUser(_)
            | Error::UnknownAcl(_) => StatusCode::NOT_FOUND,
            Error::TopicExists(_)
            | Error::QueueExists(_)
            | Error::QueueInUse { .. }
            | Error::GroupNotEmpty(_)
            | Error::RebalanceInProgress { .. }
            | Error::InconsistentGroupProtocol(_) => StatusCode::CONFLICT,
            Error::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ if e.is_retriable() => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::warn!(error = %e, "console request failed");
        }
        ApiError::new(status, e.to_string())
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, &Body { error: &self.message })
    }
}

/// `value` as a JSON answer with `status`.
pub(crate) fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut r = (status, body).into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
