//! Queues: list with counts, describe (settings, counts by state, oldest
//! ready age), browse a page of ready, in-flight, delayed or dead
//! messages with their attempts and last error, redrive the dead letters
//! held in a queue, and purge (with the queue's name repeated as the
//! confirmation). Browsing needs `consume` on the queue; redrive and purge
//! need `admin` (and a redrive to another queue `produce` on that one).

use std::sync::Arc;

use axum::extract::{Path, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use pgbroker::auth::Permission;
use pgbroker::queues::{BrowseState, MAX_BROWSE_PAGE};
use pgbroker::QueueName;
use serde::Deserialize;

use super::topics::Confirm;
use super::{ms, JsonBody};
use crate::access::{Caller, Changer};
use crate::error::{json_response, ApiError, ApiResult};
use crate::State;

/// Body bytes shown per browsed message.
const PREVIEW: usize = 16 << 10;

/// `GET /api/queues`: the queues the caller may see, with their counts as
/// of the newest sample of the history.
pub(crate) async fn list(AxState(state): AxState<Arc<State>>, caller: Caller) -> ApiResult<Response> {
    let latest = state.history.fresh(&state.broker, state.config.sample_every * 2).await;
    let queues: Vec<_> = state
        .broker
        .queues()
        .list()
        .await?
        .into_iter()
        .filter(|q| caller.sees_queue(q.name.as_str()))
        .map(|q| {
            let stats = latest
                .queues
                .iter()
                .find(|r| r.name == q.name.as_str())
                .map(|r| r.stats);
            serde_json::json!({ "queue": q, "stats": stats })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &serde_json::json!({ "queues": queues })))
}

/// `GET /api/queues/{queue}`: settings and counts read now.
pub(crate) async fn describe(
    AxState(state): AxState<Arc<State>>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Response> {
    let queue = QueueName::new(raw.as_str())?;
    caller.need_visible(caller.sees_queue(queue.as_str()), "queue", queue.as_str())?;
    let info = state.broker.queues().info(&queue).await?;
    let stats = state.broker.queues().stats(&queue).await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "queue": info, "stats": stats }),
    ))
}

/// Which page to browse.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BrowseQuery {
    state: String,
    after: Option<i64>,
    limit: Option<usize>,
}

/// `GET /api/queues/{queue}/messages`: bodies and header values as
/// base64, bodies cut to 16 KiB.
pub(crate) async fn browse(
    AxState(state): AxState<Arc<State>>,
    caller: Caller,
    Path(raw): Path<String>,
    Query(q): Query<BrowseQuery>,
) -> ApiResult<Response> {
    let queue = QueueName::new(raw.as_str())?;
    caller.need_queue(Permission::Consume, queue.as_str())?;
    let which: BrowseState = q.state.parse()?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_BROWSE_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_BROWSE_PAGE}, not {limit}"
        )));
    }
    let after = q.after.unwrap_or(0);
    let page = state
        .broker
        .queues()
        .browse(&queue, which, after, limit, PREVIEW)
        .await?;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let next = page.last().map(|m| m.id);
    let messages: Vec<_> = page
        .into_iter()
        .map(|m| {
            serde_json::json!({
                "id": m.id,
                "enqueued_at_ms": ms(m.enqueued_at),
                "visible_at_ms": ms(m.visible_at),
                "attempts": m.attempts,
                "dead_attempts": m.dead_attempts,
                "priority": m.priority,
                "group": m.group,
                "last_error": m.last_error,
                "dead_letter_source": m.dead_letter_source,
                "headers": m.headers.iter().map(|h| serde_json::json!({
                    "key": h.key,
                    "value": h.value.as_deref().map(b64),
                })).collect::<Vec<_>>(),
                "body_bytes": m.body_bytes,
                "body": b64(&m.body_preview),
                "truncated": usize::try_from(m.body_bytes).unwrap_or(usize::MAX) > m.body_preview.len(),
            })
        })
        .collect();
    let full = messages.len() == limit;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "state": which,
            "messages": messages,
            "next_after": if full { next } else { None },
        }),
    ))
}

/// Where dead letters go.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Redrive {
    to: Option<String>,
}

/// `POST /api/queues/{queue}/redrive`: moves the dead letters held in the
/// queue back to the queues they died in, or all to `to`.
pub(crate) async fn redrive(
    AxState(state): AxState<Arc<State>>,
    Changer(caller): Changer,
    Path(raw): Path<String>,
    JsonBody(r): JsonBody<Redrive>,
) -> ApiResult<Response> {
    let queue = QueueName::new(raw.as_str())?;
    caller.need_queue(Permission::Admin, queue.as_str())?;
    let to = r.to.as_deref().map(QueueName::new).transpose()?;
    if let Some(t) = &to {
        caller.need_queue(Permission::Produce, t.as_str())?;
    }
    let moved = state.broker.queues().redrive(&queue, to.as_ref()).await?;
    Ok(json_response(StatusCode::OK, &serde_json::json!({ "moved": moved })))
}

/// `POST /api/queues/{queue}/purge`: the body's `confirm` must be the
/// queue's name.
pub(crate) async fn purge(
    AxState(state): AxState<Arc<State>>,
    Changer(caller): Changer,
    Path(raw): Path<String>,
    JsonBody(c): JsonBody<Confirm>,
) -> ApiResult<Response> {
    let queue = QueueName::new(raw.as_str())?;
    caller.need_queue(Permission::Admin, queue.as_str())?;
    if c.confirm != queue.as_str() {
        return Err(ApiError::bad_request("confirm with the queue's name to purge it"));
    }
    let purged = state.broker.queues().purge(&queue).await?;
    Ok(json_response(StatusCode::OK, &serde_json::json!({ "purged": purged })))
}
