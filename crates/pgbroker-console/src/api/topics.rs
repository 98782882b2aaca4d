//! Topics: list, describe, create, add partitions, delete. Creating,
//! growing and deleting need the `admin` grant on the topic; deleting also
//! needs the topic's name repeated in the body, as the page's
//! confirmation.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::Response;
use pgbroker::auth::Permission;
use pgbroker::{TopicConfig, TopicName};
use serde::Deserialize;

use super::JsonBody;
use crate::access::{Caller, Changer};
use crate::error::{json_response, ApiError, ApiResult};
use crate::State;

/// `GET /api/topics`: the topics the caller may see, with their settings,
/// partition counts and records stored.
pub(crate) async fn list(AxState(state): AxState<Arc<State>>, caller: Caller) -> ApiResult<Response> {
    let infos = state.broker.topics().list().await?;
    let totals = state.broker.topics().totals().await?;
    let topics: Vec<_> = infos
        .into_iter()
        .filter(|t| caller.sees_topic(t.name.as_str()))
        .map(|t| {
            let total = totals.iter().find(|x| x.name == t.name);
            serde_json::json!({
                "name": t.name,
                "partitions": t.partitions,
                "retention_ms": t.retention_ms,
                "retention_bytes": t.retention_bytes,
                "max_message_bytes": t.max_message_bytes,
                "created_at_ms": t.created_at_ms,
                "records": total.map_or(0, |x| x.records),
                "high_watermarks": total.map_or(0, |x| x.high_watermarks),
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &serde_json::json!({ "topics": topics })))
}

/// A topic to create.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTopic {
    name: String,
    partitions: Option<i32>,
    retention_ms: Option<i64>,
    retention_bytes: Option<i64>,
}

/// `POST /api/topics`.
pub(crate) async fn create(
    AxState(state): AxState<Arc<State>>,
    Changer(caller): Changer,
    JsonBody(new): JsonBody<NewTopic>,
) -> ApiResult<Response> {
    let topic = TopicName::new(new.name.as_str())?;
    caller.need_topic(Permission::Admin, topic.as_str())?;
    let retention = match new.retention_ms {
        None => None,
        Some(ms) if ms > 0 => Some(Duration::from_millis(ms.unsigned_abs())),
        Some(ms) => {
            return Err(ApiError::bad_request(format!(
                "retention_ms must be positive, not {ms}"
            )))
        }
    };
    let config = TopicConfig {
        partitions: new.partitions.unwrap_or(1),
        retention,
        retention_bytes: new.retention_bytes,
        ..TopicConfig::default()
    };
    let info = state.broker.topics().create(&topic, &config).await?;
    Ok(json_response(StatusCode::CREATED, &info))
}

/// `GET /api/topics/{topic}`: settings and every partition's log start,
/// high watermark, records and bytes.
pub(crate) async fn describe(
    AxState(state): AxState<Arc<State>>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Response> {
    let topic = TopicName::new(raw.as_str())?;
    caller.need_visible(caller.sees_topic(topic.as_str()), "topic", topic.as_str())?;
    let d = state.broker.topics().describe(&topic).await?;
    Ok(json_response(StatusCode::OK, &d))
}

/// Partitions to add.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddPartitions {
    additional: i32,
}

/// `POST /api/topics/{topic}/partitions`.
pub(crate) async fn add_partitions(
    AxState(state): AxState<Arc<State>>,
    Changer(caller): Changer,
    Path(raw): Path<String>,
    JsonBody(add): JsonBody<AddPartitions>,
) -> ApiResult<Response> {
    let topic = TopicName::new(raw.as_str())?;
    caller.need_topic(Permission::Admin, topic.as_str())?;
    if add.additional < 1 {
        return Err(ApiError::bad_request(format!(
            "additional must be at least 1, not {}",
            add.additional
        )));
    }
    let info = state.broker.topics().add_partitions(&topic, add.additional).await?;
    Ok(json_response(StatusCode::OK, &info))
}

/// A confirmed deletion.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Confirm {
    pub confirm: String,
}

/// `POST /api/topics/{topic}/delete`: the body's `confirm` must be the
/// topic's name.
pub(crate) async fn delete(
    AxState(state): AxState<Arc<State>>,
    Changer(caller): Changer,
    Path(raw): Path<String>,
    JsonBody(c): JsonBody<Confirm>,
) -> ApiResult<Response> {
    let topic = TopicName::new(raw.as_str())?;
    caller.need_topic(Permission::Admin, topic.as_str())?;
    if c.confirm != topic.as_str() {
        return Err(ApiError::bad_request("confirm with the topic's name to delete it"));
    }
    state.broker.topics().delete(&topic).await?;
    Ok(json_response(StatusCode::OK, &serde_json::json!({ "deleted": topic })))
}
