//! Share groups' membership (KIP-932): ShareGroupHeartbeat and
//! ShareGroupDescribe, each one library call (see `pgbroker::groups::share`).
//! Assignments travel with topic ids, as in the consumer protocol.

use kafka_protocol::messages::share_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup, Member, TopicPartitions as DescribedTopicPartitions,
};
use kafka_protocol::messages::share_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{
    ShareGroupDescribeRequest, ShareGroupDescribeResponse, ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse,
};
use kafka_protocol::ResponseError;
use pgbroker::auth::Permission;
use pgbroker::groups::consumer::AssignedTopic;
use pgbroker::groups::share::ShareHeartbeat;
use pgbroker::TopicName;

use super::{group_id, sb};
use crate::dispatch::ReqInfo;
use crate::errors::group_code;

/// Not asked for: the authorized operations field's null.
const NOT_ASKED: i32 = i32::MIN;

/// The only assignor of share groups.
const SIMPLE_ASSIGNOR: &str = "simple";

pub(crate) async fn share_group_heartbeat(
    info: &ReqInfo<'_>,
    req: ShareGroupHeartbeatRequest,
) -> Option<ShareGroupHeartbeatResponse> {
    let mut resp = ShareGroupHeartbeatResponse::default();
    let fail = |mut resp: ShareGroupHeartbeatResponse, code: i16, message: String| {
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
    let subscribed_topics = match &req.subscribed_topic_names {
        None => None,
        Some(names) => {
            let mut topics = Vec::with_capacity(names.len());
            for n in names {
                if !info.access.topic(Permission::Consume, n.0.as_str()) {
                    let code = ResponseError::TopicAuthorizationFailed.code();
                    return fail(resp, code, format!("not authorized to read topic {}", n.0.as_str()));
                }
                match TopicName::new(n.0.as_str()) {
                    Ok(t) => topics.push(t),
                    Err(e) => return fail(resp, ResponseError::InvalidTopicException.code(), e.to_string()),
                }
            }
            Some(topics)
        }
    };
    let heartbeat = ShareHeartbeat {
        group,
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        rack_id: req.rack_id.as_ref().map(|s| s.to_string()),
        client_id: info.client_id().to_string(),
        client_host: format!("/{}", info.peer.ip()),
        subscribed_topics,
    };
    match info.ctx.broker.share_groups().heartbeat(&heartbeat).await {
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

pub(crate) async fn share_group_describe(
    info: &ReqInfo<'_>,
    req: ShareGroupDescribeRequest,
) -> Option<ShareGroupDescribeResponse> {
    let mut resp = ShareGroupDescribeResponse::default();
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
            Ok(g) => info.ctx.broker.share_groups().describe(&g).await,
            Err(e) => Err(e),
        };
        match found {
            Ok(g) => {
                d.group_state = sb(g.state);
                d.group_epoch = g.group_epoch;
                d.assignment_epoch = g.group_epoch;
                d.assignor_name = sb(SIMPLE_ASSIGNOR);
                d.members = g
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut dm = Member::default();
                        dm.member_id = sb(m.member_id);
                        dm.rack_id = m.rack_id.map(sb);
                        dm.member_epoch = m.member_epoch;
                        dm.client_id = sb(m.client_id);
                        dm.client_host = sb(m.client_host);
                        dm.subscribed_topic_names = m.subscribed_topics.into_iter().map(|t| sb(t).into()).collect();
                        dm.assignment = described(m.assignment);
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
