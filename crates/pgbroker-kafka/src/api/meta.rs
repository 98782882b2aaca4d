//! ApiVersions, Metadata and FindCoordinator: what a client asks before
//! anything else.

use std::collections::BTreeMap;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse,
    MetadataRequest, MetadataResponse,
};
use kafka_protocol::ResponseError;
use pgbroker::auth::Permission;
use pgbroker::streams::TopicInfo;
use pgbroker::{Error, TopicConfig};
use uuid::Uuid;

use super::{pick, sb, topic_name};
use crate::dispatch::api_list;
use crate::dispatch::ReqInfo;
use crate::errors::{data_code, NONE};
use crate::server::Ctx;

pub(crate) async fn api_versions(_info: &ReqInfo<'_>, _req: ApiVersionsRequest) -> Option<ApiVersionsResponse> {
    let mut resp = ApiVersionsResponse::default();
    resp.api_keys = api_list();
    Some(resp)
}

/// Looks a topic up, creating it when auto-creation is on and allowed.
pub(crate) async fn topic_or_create(ctx: &Ctx, name: &pgbroker::TopicName, allow: bool) -> pgbroker::Result<TopicInfo> {
    match ctx.broker.topics().info(name).await {
        Err(Error::UnknownTopic(_)) if allow && ctx.config.auto_create_topics => {
            let config = TopicConfig {
                partitions: ctx.config.default_partitions,
                ..TopicConfig::default()
            };
            match ctx.broker.topics().create(name, &config).await {
                Ok(info) => {
                    tracing::info!(topic = %name, "topic auto-created");
                    Ok(info)
                }
                Err(Error::TopicExists(_)) => ctx.broker.topics().info(name).await,
                Err(e) => Err(e),
            }
        }
        other => other,
    }
}

pub(crate) async fn metadata(info: &ReqInfo<'_>, req: MetadataRequest) -> Option<MetadataResponse> {
    let (ctx, v) = (info.ctx, info.version);
    let nodes = ctx.live_nodes().await;
    let mut resp = MetadataResponse::default();
    resp.brokers = nodes
        .iter()
        .map(|n| {
            let mut b = MetadataResponseBroker::default();
            b.node_id = BrokerId(n.node_id);
            b.host = sb(n.host.clone());
            b.port = n.port;
            if v >= 1 {
                b.rack = n.rack.clone().map(sb);
            }
            b
        })
        .collect();
    if v >= 2 {
        resp.cluster_id = Some(sb(format!("pgbroker-{}", ctx.broker.schema())));
    }
    if v >= 1 {
        resp.controller_id = BrokerId(nodes.first().map_or(ctx.node_id, |n| n.node_id));
    }
    // Version 0 asks for every topic with an empty list; later versions
    // with a null one.
    let all = match &req.topics {
        None => true,
        Some(t) => t.is_empty() && v == 0,
    };
    let mut topics = Vec::new();
    if all {
        match ctx.broker.topics().list().await {
            Ok(list) => topics.extend(
                list.into_iter()
                    .filter(|t| info.access.sees_topic(t.name.as_str()))
                    .map(|t| topic_entry(ctx, v, &nodes, Ok(t), None)),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "metadata: listing topics failed");
                resp.error_code = data_code(&e);
            }
        }
    } else {
        let allow = req.allow_auto_topic_creation || v < 4;
        let by_id = topics_by_id(info, v, req.topics.as_deref().unwrap_or_default()).await;
        for t in req.topics.iter().flatten() {
            let resolved;
            let raw = match &t.name {
                Some(raw) if !(raw.is_empty() && asks_by_id(v, t)) => raw,
                _ if asks_by_id(v, t) => match by_id.get(t.topic_id.as_bytes()) {
                    // The name is told only to those who may see the topic.
                    Some(name) if info.access.sees_topic(name.as_str()) => {
                        resolved = sb(name.to_string()).into();
                        &resolved
                    }
                    found => {
                        let mut refused = MetadataResponseTopic::default();
                        refused.name = None;
                        refused.topic_id = t.topic_id;
                        refused.error_code = match found {
                            Some(_) => ResponseError::TopicAuthorizationFailed.code(),
                            None => ResponseError::UnknownTopicId.code(),
                        };
                        topics.push(refused);
                        continue;
                    }
                },
                _ => continue,
            };
            // A topic the user has no right on is refused whether it
            // exists or not, so that its existence does not leak.
            if !info.access.sees_topic(raw.0.as_str()) {
                let mut denied = MetadataResponseTopic::default();
                denied.name = Some(raw.clone());
                denied.error_code = ResponseError::TopicAuthorizationFailed.code();
                topics.push(denied);
                continue;
            }
            // Creating needs the admin right, as Kafka's CREATE.
            let create = allow && info.access.topic(Permission::Admin, raw.0.as_str());
            let found = match topic_name(&raw.0) {
                Ok(name) => topic_or_create(ctx, &name, create).await,
                Err(e) => Err(e),
            };
            topics.push(topic_entry(ctx, v, &nodes, found, Some(raw.0.to_string())));
        }
    }
    resp.topics = topics;
    Some(resp)
}

fn topic_entry(
    ctx: &Ctx,
    v: i16,
    nodes: &[pgbroker::cluster::Node],
    info: pgbroker::Result<TopicInfo>,
    asked: Option<String>,
) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    match info {
        Ok(info) => {
            let name = info.name.to_string();
            t.name = Some(sb(name.clone()).into());
            if v >= 10 {
                t.topic_id = Uuid::from_bytes(info.topic_id);
            }
            t.partitions = (0..info.partitions)
                .map(|p| {
                    let leader = pick(nodes, &name, p).map_or(ctx.node_id, |n| n.node_id);
                    let mut mp = MetadataResponsePartition::default();
                    mp.partition_index = p;
                    mp.leader_id = BrokerId(leader);
                    if v >= 7 {
                        mp.leader_epoch = 0;
                    }
                    mp.replica_nodes = vec![BrokerId(leader)];
                    mp.isr_nodes = vec![BrokerId(leader)];
                    mp
                })
                .collect();
        }
        Err(e) => {
            t.name = asked.map(|a| sb(a).into());
            t.error_code = topic_error_code(&e);
        }
    }
    t
}

/// True when a Metadata topic names a topic by id (version 10 and later:
/// a null or empty name and an id).
fn asks_by_id(v: i16, t: &kafka_protocol::messages::metadata_request::MetadataRequestTopic) -> bool {
    v >= 10 && !t.topic_id.is_nil() && t.name.as_ref().is_none_or(|n| n.is_empty())
}

/// The names of the topics a Metadata request (version 10 and later)
/// asks for by id; none when the lookup fails.
async fn topics_by_id(
    info: &ReqInfo<'_>,
    v: i16,
    asked: &[kafka_protocol::messages::metadata_request::MetadataRequestTopic],
) -> BTreeMap<[u8; 16], pgbroker::TopicName> {
    let ids: Vec<[u8; 16]> = asked
        .iter()
        .filter(|t| asks_by_id(v, t))
        .map(|t| *t.topic_id.as_bytes())
        .collect();
    if ids.is_empty() {
        return BTreeMap::new();
    }
    match info.ctx.broker.consumer_groups().topic_names(&ids).await {
        Ok(names) => names,
        Err(e) => {
            tracing::warn!(error = %e, "metadata: looking topic ids up failed");
            BTreeMap::new()
        }
    }
}

/// The error code of a topic Metadata could not describe.
fn topic_error_code(e: &Error) -> i16 {
    match e {
        Error::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition.code(),
        // Postgres unreachable: a transient error, which clients retry while
        // keeping what they knew of the topic. Any other code with no
        // partitions makes librdkafka drop the topic's partitions and fail
        // its queued and new messages.
        e if e.is_retriable() => ResponseError::LeaderNotAvailable.code(),
        other => data_code(other),
    }
}

pub(crate) async fn find_coordinator(
    info: &ReqInfo<'_>,
    req: FindCoordinatorRequest,
) -> Option<FindCoordinatorResponse> {
    let (ctx, v) = (info.ctx, info.version);
    let nodes = ctx.live_nodes().await;
    let keys: Vec<String> = if v >= 4 {
        req.coordinator_keys.iter().map(|k| k.to_string()).collect()
    } else {
        vec![req.key.to_string()]
    };
    let found: Vec<(String, Option<ResponseError>, Option<pgbroker::cluster::Node>)> = keys
        .into_iter()
        .map(|k| {
            match req.key_type {
                0 => {}
                // Any node coordinates any transactional id: its state is
                // in Postgres. The same users who may produce may use one.
                1 if info.access.produces_anywhere() => {
                    let node = pick(&nodes, &k, 0).cloned().unwrap_or_else(|| ctx.self_node());
                    return (k, None, Some(node));
                }
                _ => return (k, Some(ResponseError::TransactionalIdAuthorizationFailed), None),
            }
            if !info.access.sees_group(&k) {
                return (k, Some(ResponseError::GroupAuthorizationFailed), None);
            }
            let node = pick(&nodes, &k, 0).cloned().unwrap_or_else(|| ctx.self_node());
            (k, None, Some(node))
        })
        .collect();
    let mut resp = FindCoordinatorResponse::default();
    if v >= 4 {
        resp.coordinators = found
            .into_iter()
            .map(|(k, err, node)| {
                let mut c = Coordinator::default();
                c.key = sb(k);
                c.error_code = err.map_or(NONE, |e| e.code());
                fill(&mut c.node_id, &mut c.host, &mut c.port, node.as_ref());
                c.error_message = refusal(err).map(sb);
                c
            })
            .collect();
    } else if let Some((_, err, node)) = found.into_iter().next() {
        resp.error_code = err.map_or(NONE, |e| e.code());
        fill(&mut resp.node_id, &mut resp.host, &mut resp.port, node.as_ref());
        if v >= 1 {
            resp.error_message = refusal(err).map(sb);
        }
    }
    Some(resp)
}

/// Why FindCoordinator refused a key.
fn refusal(err: Option<ResponseError>) -> Option<&'static str> {
    match err? {
        ResponseError::GroupAuthorizationFailed => Some("not authorized to use this group"),
        _ => Some("not authorized to use this transactional id, or an unknown key type"),
    }
}

fn fill(
    id: &mut BrokerId,
    host: &mut kafka_protocol::protocol::StrBytes,
    port: &mut i32,
    node: Option<&pgbroker::cluster::Node>,
) {
    match node {
        Some(n) => {
            *id = BrokerId(n.node_id);
            *host = sb(n.host.clone());
            *port = n.port;
        }
        None => {
            *id = BrokerId(-1);
            *host = sb("");
            *port = -1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_database_is_a_transient_topic_error() {
        assert_eq!(
            topic_error_code(&Error::Pool("timed out".into())),
            ResponseError::LeaderNotAvailable.code()
        );
        assert_eq!(
            topic_error_code(&Error::UnknownTopic("t".into())),
            ResponseError::UnknownTopicOrPartition.code()
        );
    }
}
