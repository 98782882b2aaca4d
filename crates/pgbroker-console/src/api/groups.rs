//! Consumer groups: list, describe (members, assignment, committed
//! offsets and lag per partition), and resetting an empty group's offsets
//! on one topic to the earliest or latest offset, a timestamp or an
//! offset. Resetting needs the `group` grant on the group and `consume` on
//! the topic, as committing offsets does on the Kafka listener.

use std::sync::Arc;

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::Response;
use pgbroker::auth::Permission;
use pgbroker::groups::ResetTo;
use pgbroker::{GroupId, TopicName};
use serde::Deserialize;

use super::{time_of_ms, JsonBody};
use crate::access::{Caller, Changer};
use crate::error::{json_response, ApiError, ApiResult};
use crate::State;

/// `GET /api/groups`: the groups the caller may see, with their lag as of
/// the newest sample of the history.
pub(crate) async fn list(AxState(state): AxState<Arc<State>>, caller: Caller) -> ApiResult<Response> {
    let latest = state.history.fresh(&state.broker, state.config.sample_every * 2).await;
    let groups: Vec<_> = state
        .broker
        .groups()
        .list()
        .await?
        .into_iter()
        .filter(|g| caller.sees_group(g.as_str()))
        .map(|g| {
            let r = latest.groups.iter().find(|r| r.name == g.as_str());
            serde_json::json!({
                "group": g,
                "state": r.map(|r| r.state.clone()),
                "members": r.map(|r| r.members),
                "lag": r.map(|r| r.lag),
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &serde_json::json!({ "groups": groups })))
}

/// `GET /api/groups/{group}`; partitions of topics the caller may not see
/// are left out.
pub(crate) async fn describe(
    AxState(state): AxState<Arc<State>>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Response> {
    let group = GroupId::new(raw.as_str())?;
    caller.need_visible(caller.sees_group(group.as_str()), "group", group.as_str())?;
    let mut d = state.broker.groups().describe(&group).await?;
    d.partitions.retain(|p| caller.sees_topic(p.topic.as_str()));
    for m in &mut d.members {
        m.assignment.retain(|tp| caller.sees_topic(tp.topic.as_str()));
    }
    Ok(json_response(StatusCode::OK, &d))
}

/// Where to move a group's offsets.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Reset {
    topic: String,
    /// `earliest`, `latest`, `timestamp` or `offset`.
    to: String,
    timestamp_ms: Option<i64>,
    offset: Option<i64>,
}

/// `POST /api/groups/{group}/reset`: refused (409) while the group has
/// members.
pub(crate) async fn reset(
    AxState(state): AxState<Arc<State>>,
    Changer(caller): Changer,
    Path(raw): Path<String>,
    JsonBody(r): JsonBody<Reset>,
) -> ApiResult<Response> {
    let group = GroupId::new(raw.as_str())?;
    let topic = TopicName::new(r.topic.as_str())?;
    caller.need_group(Permission::Group, group.as_str())?;
    caller.need_topic(Permission::Consume, topic.as_str())?;
    let to = match (r.to.as_str(), r.timestamp_ms, r.offset) {
        ("earliest", None, None) => ResetTo::Earliest,
        ("latest", None, None) => ResetTo::Latest,
        ("timestamp", Some(t), None) => ResetTo::Timestamp(time_of_ms(t)?),
        ("offset", None, Some(o)) if o >= 0 => ResetTo::Offset(o),
        _ => {
            return Err(ApiError::bad_request(
                "to is earliest, latest, timestamp (with timestamp_ms) or offset (with a non-negative offset)",
            ))
        }
    };
    let offsets = state.broker.groups().reset_offsets(&group, &topic, to).await?;
    let offsets: Vec<_> = offsets
        .into_iter()
        .map(|o| serde_json::json!({ "partition": o.partition, "offset": o.offset }))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "offsets": offsets }),
    ))
}
