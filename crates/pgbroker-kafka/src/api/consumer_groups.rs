//! Kafka's consumer group protocol (KIP-848): ConsumerGroupHeartbeat and
//! ConsumerGroupDescribe, each one library call on the coordinator (see
//! `pgbroker::groups::consumer`). Assignments travel with topic ids.

use std::time::Duration;

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup, Member, TopicPartitions as DescribedTopicPartitions,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse,
};
use kafka_protocol::ResponseError;
use pgbroker::auth::Permission;
use pgbroker::groups::consumer::{AssignedTopic, ConsumerHeartbeat};
use pgbroker::{TopicName, TopicPartition};

use super::{group_id, sb};
use crate::auth::Session;
use crate::authz::Access;
use crate::dispatch::ReqInfo;
use crate::errors::group_code;

/// Kafka's member type of a member that speaks the consumer protocol.
const CONSUMER_MEMBER: i8 = 1;

/// Not asked for: the authorized operations field's null.
const NOT_ASKED: i32 = i32::MIN;

fn millis(ms: i32) -> Option<Duration> {
    u64::try_from(ms).ok().map(Duration::from_millis)
}

/// The partitions a member reports owning, by topic name; topic ids the
/// broker does not know are left out.
async fn owned(
    info: &ReqInfo<'_>,
    tps: &[kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions],
) -> pgbroker::Result<Vec<TopicPartition>> {
    let ids: Vec<[u8; 16]> = tps.iter().map(|t| *t.topic_id.as_bytes()).collect();
    let names = info.ctx.broker.consumer_groups().topic_names(&ids).await?;
    Ok(tps
        .iter()
        .filter_map(|t| Some((names.get(t.topic_id.as_bytes())?, &t.partitions)))
        .flat_map(|(topic, parts)| {
            parts.iter().map(move |p| TopicPartition {
                topic: topic.clone(),
                partition: *p,
            })
        })
        .collect())
}

pub(crate) async fn consumer_group_heartbeat(
    info: &ReqInfo<'_>,
    req: ConsumerGroupHeartbeatRequest,
    session: &mut Session,
) -> Option<ConsumerGroupHeartbeatResponse> {
    let ctx = info.ctx;
    let mut resp = ConsumerGroupHeartbeatResponse::default();
    let fail = |mut resp: ConsumerGroupHeartbeatResponse, code: i16, message: String| {
        resp.error_code = code;
        resp.error_message = Some(sb(message));
        Some(resp)
    };
    if !info.access.group(Permission::Group, req.group_id.0.as_str()) {
        let code = ResponseError::GroupAuthorizationFailed.code();
        return fail(resp, code, "not authorized to use this group".into());
    }
    let group = match group_id(&req.group_id.0) {
        Ok(g) => g,
        Err(e) => return fail(resp, group_code(&e), e.to_string()),
    };
    let owned = match &req.topic_partitions {
        None => None,
        Some(tps) => match owned(info, tps).await {
            Ok(o) => Some(o),
            Err(e) => return fail(resp, group_code(&e), e.to_string()),
        },
    };
    let heartbeat = ConsumerHeartbeat {
        group,
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(|s| s.to_string()),
        rack_id: req.rack_id.as_ref().map(|s| s.to_string()),
        client_id: info.client_id().to_string(),
        client_host: format!("/{}", info.peer.ip()),
        rebalance_timeout: millis(req.rebalance_timeout_ms),
        subscribed_topics: req
            .subscribed_topic_names
            .as_ref()
            .map(|names| names.iter().filter_map(|n| TopicName::new(n.0.as_str()).ok()).collect()),
        subscribed_regex: req.subscribed_topic_regex.as_ref().map(|s| s.to_string()),
        server_assignor: req.server_assignor.as_ref().map(|s| s.to_string()),
        owned,
        // A user held to its grants: its regular expression matches only
        // topics it may see.
        principal: match info.access {
            Access::All => None,
            Access::Granted(_) => session.user().map(str::to_string),
        },
    };
    match ctx.broker.consumer_groups().heartbeat(&heartbeat).await {
        Ok(a) => {
            resp.member_id = Some(sb(a.member_id));
            resp.member_epoch = a.member_epoch;
            resp.heartbeat_interval_ms = i32::try_from(a.heartbeat_interval.as_millis()).unwrap_or(i32::MAX);
            resp.assignment = a
                .assignment
                .map(|topics| assignment!(Assignment, TopicPartitions, topics));
            Some(resp)
        }
        Err(e) => fail(resp, group_code(&e), e.to_string()),
    }
}

fn described(topics: Vec<AssignedTopic>) -> DescribedAssignment {
    assignment!(DescribedAssignment, DescribedTopicPartitions, topics, named)
}

pub(crate) async fn consumer_group_describe(
    info: &ReqInfo<'_>,
    req: ConsumerGroupDescribeRequest,
) -> Option<ConsumerGroupDescribeResponse> {
    let ctx = info.ctx;
    let mut resp = ConsumerGroupDescribeResponse::default();
    for name in &req.group_ids {
        let mut d = DescribedGroup::default();
        d.group_id = name.clone();
        d.authorized_operations = NOT_ASKED;
        if !info.access.sees_group(name.0.as_str()) {
            d.error_code = ResponseError::GroupAuthorizationFailed.code();
            resp.groups.push(d);
            continue;
        }
        let found = match group_id(&name.0) {
            Ok(g) => ctx.broker.consumer_groups().describe(&g).await,
            Err(e) => Err(e),
        };
        match found {
            Ok(g) => {
                d.group_state = sb(g.state);
                d.group_epoch = g.group_epoch;
                d.assignment_epoch = g.assignment_epoch;
                d.assignor_name = sb(g.assignor);
                d.members = g
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut dm = Member::default();
                        dm.member_id = sb(m.member_id);
                        dm.instance_id = m.instance_id.map(sb);
                        dm.rack_id = m.rack_id.map(sb);
                        dm.member_epoch = m.member_epoch;
                        dm.client_id = sb(m.client_id);
                        dm.client_host = sb(m.client_host);
                        dm.subscribed_topic_names = m.subscribed_topics.into_iter().map(|t| sb(t).into()).collect();
                        dm.subscribed_topic_regex = m.subscribed_regex.map(sb);
                        dm.assignment = described(m.assignment);
                        dm.target_assignment = described(m.target);
                        if info.version >= 1 {
                            dm.member_type = CONSUMER_MEMBER;
                        }
                        dm
                    })
                    .collect();
            }
            Err(e) => {
                d.error_code = group_code(&e);
                d.error_message = Some(sb(e.to_string()));
            }
        }
        resp.groups.push(d);
    }
    Some(resp)
}
