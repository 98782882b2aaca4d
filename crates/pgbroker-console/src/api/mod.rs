//! The admin API: one module per page of the console. Every answer is
//! JSON; every error is `{"error": "..."}` with a 4xx status for what the
//! client can change (module `error`). [`ROUTES`] lists every path and
//! method, and the OpenAPI document is checked against it by a test.

mod groups;
mod messages;
mod overview;
mod queues;
mod session;
mod topics;

use std::sync::Arc;

use axum::extract::{FromRequest, Request};
use axum::http::header;
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};
use crate::State;

/// Largest request body accepted, in bytes.
pub(crate) const MAX_BODY: usize = 2 << 20;

/// Every route of the API as (method, path), in the OpenAPI document's
/// path syntax.
#[cfg(test)]
pub(crate) const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/session"),
    ("post", "/api/login"),
    ("post", "/api/logout"),
    ("get", "/api/overview"),
    ("get", "/api/history"),
    ("get", "/api/users"),
    ("get", "/api/topics"),
    ("post", "/api/topics"),
    ("get", "/api/topics/{topic}"),
    ("post", "/api/topics/{topic}/partitions"),
    ("post", "/api/topics/{topic}/delete"),
    ("get", "/api/topics/{topic}/messages"),
    ("post", "/api/topics/{topic}/messages"),
    ("get", "/api/groups"),
    ("get", "/api/groups/{group}"),
    ("post", "/api/groups/{group}/reset"),
    ("get", "/api/queues"),
    ("get", "/api/queues/{queue}"),
    ("get", "/api/queues/{queue}/messages"),
    ("post", "/api/queues/{queue}/redrive"),
    ("post", "/api/queues/{queue}/purge"),
    ("get", "/api/openapi.json"),
];

/// The API's routes.
pub(crate) fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/api/session", get(session::current))
        .route("/api/login", post(session::login))
        .route("/api/logout", post(session::logout))
        .route("/api/overview", get(overview::overview))
        .route("/api/history", get(overview::history))
        .route("/api/users", get(overview::users))
        .route("/api/topics", get(topics::list).post(topics::create))
        .route("/api/topics/{topic}", get(topics::describe))
        .route("/api/topics/{topic}/partitions", post(topics::add_partitions))
        .route("/api/topics/{topic}/delete", post(topics::delete))
        .route(
            "/api/topics/{topic}/messages",
            get(messages::browse).post(messages::produce),
        )
        .route("/api/groups", get(groups::list))
        .route("/api/groups/{group}", get(groups::describe))
        .route("/api/groups/{group}/reset", post(groups::reset))
        .route("/api/queues", get(queues::list))
        .route("/api/queues/{queue}", get(queues::describe))
        .route("/api/queues/{queue}/messages", get(queues::browse))
        .route("/api/queues/{queue}/redrive", post(queues::redrive))
        .route("/api/queues/{queue}/purge", post(queues::purge))
        .route("/api/openapi.json", get(crate::assets::openapi))
        .fallback(|| async { ApiError::not_found("no such API path") })
}

/// A JSON request body of type `T`: the request must say
/// `Content-Type: application/json` (which a cross-site form cannot), and
/// a body that does not parse is a 400 naming what is wrong.
pub(crate) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> ApiResult<JsonBody<T>> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("application/json")
            });
        if !json {
            return Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as Content-Type: application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("could not read the body: {e}")))?;
        if bytes.len() > MAX_BODY {
            return Err(ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {MAX_BODY} bytes"),
            ));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("the body is not what this call takes: {e}")))
    }
}

/// Milliseconds since the epoch of `t`.
pub(crate) fn ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Latest time accepted as milliseconds since the epoch (year 9999).
pub(crate) const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// `ms` since the epoch as a time, or a 400 when out of range.
pub(crate) fn time_of_ms(ms: i64) -> ApiResult<std::time::SystemTime> {
    if !(0..=MAX_TIMESTAMP_MS).contains(&ms) {
        return Err(ApiError::bad_request(format!(
            "timestamp {ms} is not between 0 and {MAX_TIMESTAMP_MS} ms since 1970"
        )));
    }
    Ok(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.unsigned_abs()))
}

#[cfg(test)]
mod tests {
    use super::ROUTES;

    /// The OpenAPI document describes exactly the routes served.
    #[test]
    fn openapi_document_lists_every_route() {
        let doc: serde_json::Value = serde_json::from_str(crate::assets::OPENAPI).expect("valid JSON");
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for method in ops.as_object().expect("operations").keys() {
                documented.push((method.clone(), path.clone()));
            }
        }
        let mut served: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
    }
}
