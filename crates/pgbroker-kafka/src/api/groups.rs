//! Consumer groups over Kafka's classic protocol: each request is one
//! library call on the coordinator, whose state is all in Postgres.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse, HeartbeatRequest,
    HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use pgbroker::auth::Permission;
use pgbroker::groups::classic::ClassicJoinRequest;
use pgbroker::{Error, GroupId};

use super::{group_id, sb};
use crate::dispatch::ReqInfo;
use crate::errors::{group_code, NONE};

/// What a group request needs the connection to hold on its group.
#[derive(Debug, Clone, Copy)]
enum Need {
    /// This permission.
    Right(Permission),
    /// Any permission: enough to see the group.
    Sight,
}

/// How every group request opens: the group it names, once the connection
/// holds what it needs on it and the id is valid; else the code to answer
/// with (authorization is checked first, as in Kafka).
fn named_group(info: &ReqInfo<'_>, need: Need, name: &StrBytes) -> Result<GroupId, i16> {
    let allowed = match need {
        Need::Right(permission) => info.access.group(permission, name.as_str()),
        Need::Sight => info.access.sees_group(name.as_str()),
    };
    if !allowed {
        return Err(ResponseError::GroupAuthorizationFailed.code());
    }
    group_id(name).map_err(|e| group_code(&e))
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

pub(crate) async fn join_group(info: &ReqInfo<'_>, req: JoinGroupRequest) -> Option<JoinGroupResponse> {
    let (ctx, v) = (info.ctx, info.version);
    let mut resp = JoinGroupResponse::default();
    resp.generation_id = -1;
    resp.member_id = req.member_id.clone();
    if v < 7 {
        resp.protocol_name = Some(sb(""));
    }
    let Ok(group) =
        named_group(info, Need::Right(Permission::Group), &req.group_id.0).map_err(|code| resp.error_code = code)
    else {
        return Some(resp);
    };
    let join = ClassicJoinRequest {
        group,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: info.client_id().to_string(),
        client_host: format!("/{}", info.peer.ip()),
        session_timeout: millis(req.session_timeout_ms),
        rebalance_timeout: if v >= 1 {
            millis(req.rebalance_timeout_ms)
        } else {
            millis(req.session_timeout_ms)
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.to_vec()))
            .collect(),
        require_known_member_id: v >= 4 && req.member_id.is_empty(),
    };
    match ctx.broker.classic_groups().join(&join).await {
        Ok(j) => {
            resp.generation_id = j.generation;
            if v >= 7 {
                resp.protocol_type = Some(sb(j.protocol_type));
            }
            resp.protocol_name = Some(sb(j.protocol_name));
            resp.leader = sb(j.leader);
            resp.member_id = sb(j.member_id);
            resp.members = j
                .members
                .into_iter()
                .map(|m| {
                    let mut rm = JoinGroupResponseMember::default();
                    rm.member_id = sb(m.member_id);
                    if v >= 5 {
                        rm.group_instance_id = m.group_instance_id.map(sb);
                    }
                    rm.metadata = Bytes::from(m.metadata);
                    rm
                })
                .collect();
        }
        Err(Error::MemberIdRequired { member_id }) => {
            resp.error_code = ResponseError::MemberIdRequired.code();
            resp.member_id = sb(member_id);
        }
        Err(e) => resp.error_code = group_code(&e),
    }
    Some(resp)
}

pub(crate) async fn sync_group(info: &ReqInfo<'_>, req: SyncGroupRequest) -> Option<SyncGroupResponse> {
    let (ctx, v) = (info.ctx, info.version);
    let mut resp = SyncGroupResponse::default();
    let Ok(group) =
        named_group(info, Need::Right(Permission::Group), &req.group_id.0).map_err(|code| resp.error_code = code)
    else {
        return Some(resp);
    };
    let assignments = req
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.to_vec()))
        .collect();
    let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
    match ctx
        .broker
        .classic_groups()
        .sync(
            &group,
            req.member_id.as_str(),
            req.generation_id,
            instance.as_deref(),
            assignments,
        )
        .await
    {
        Ok(bytes) => {
            resp.assignment = Bytes::from(bytes);
            if v >= 5 {
                resp.protocol_type = req.protocol_type.clone();
                resp.protocol_name = req.protocol_name.clone();
            }
        }
        Err(e) => resp.error_code = group_code(&e),
    }
    Some(resp)
}

pub(crate) async fn heartbeat(info: &ReqInfo<'_>, req: HeartbeatRequest) -> Option<HeartbeatResponse> {
    let ctx = info.ctx;
    let mut resp = HeartbeatResponse::default();
    resp.error_code = match named_group(info, Need::Right(Permission::Group), &req.group_id.0) {
        Err(code) => code,
        Ok(group) => {
            let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
            match ctx
                .broker
                .classic_groups()
                .heartbeat(&group, req.member_id.as_str(), req.generation_id, instance.as_deref())
                .await
            {
                Ok(()) => NONE,
                Err(e) => group_code(&e),
            }
        }
    };
    Some(resp)
}

pub(crate) async fn leave_group(info: &ReqInfo<'_>, req: LeaveGroupRequest) -> Option<LeaveGroupResponse> {
    let (ctx, v) = (info.ctx, info.version);
    let mut resp = LeaveGroupResponse::default();
    let Ok(group) =
        named_group(info, Need::Right(Permission::Group), &req.group_id.0).map_err(|code| resp.error_code = code)
    else {
        return Some(resp);
    };
    let members: Vec<(String, Option<String>)> = if v >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    match ctx.broker.classic_groups().leave(&group, &members).await {
        Ok(results) => {
            if v >= 3 {
                resp.members = members
                    .iter()
                    .zip(&results)
                    .map(|((id, instance), r)| {
                        let mut m = MemberResponse::default();
                        m.member_id = sb(id.clone());
                        m.group_instance_id = instance.clone().map(sb);
                        m.error_code = r.as_ref().err().map_or(NONE, group_code);
                        m
                    })
                    .collect();
            } else if let Some(Err(e)) = results.first() {
                resp.error_code = group_code(e);
            }
        }
        Err(e) => resp.error_code = group_code(&e),
    }
    Some(resp)
}

pub(crate) async fn list_groups(info: &ReqInfo<'_>, req: ListGroupsRequest) -> Option<ListGroupsResponse> {
    let (ctx, v) = (info.ctx, info.version);
    let mut resp = ListGroupsResponse::default();
    match ctx.broker.classic_groups().list().await {
        Ok(groups) => {
            resp.groups = groups
                .into_iter()
                .filter(|g| info.access.sees_group(g.group.as_str()))
                .filter(|g| {
                    v < 4 || req.states_filter.is_empty() || req.states_filter.iter().any(|s| s.as_str() == g.state)
                })
                .filter(|g| {
                    v < 5
                        || req.types_filter.is_empty()
                        || req
                            .types_filter
                            .iter()
                            .any(|t| t.as_str().eq_ignore_ascii_case(&g.group_type))
                })
                .map(|g| {
                    let mut l = ListedGroup::default();
                    l.group_id = sb(g.group.to_string()).into();
                    l.protocol_type = sb(g.protocol_type);
                    if v >= 4 {
                        l.group_state = sb(g.state);
                    }
                    if v >= 5 {
                        l.group_type = sb(g.group_type);
                    }
                    l
                })
                .collect();
        }
        Err(e) => resp.error_code = group_code(&e),
    }
    Some(resp)
}

pub(crate) async fn describe_groups(info: &ReqInfo<'_>, req: DescribeGroupsRequest) -> Option<DescribeGroupsResponse> {
    let (ctx, v) = (info.ctx, info.version);
    let mut resp = DescribeGroupsResponse::default();
    for name in &req.groups {
        let mut d = DescribedGroup::default();
        d.group_id = name.clone();
        let described = match named_group(info, Need::Sight, &name.0) {
            Ok(g) => ctx.broker.classic_groups().describe(&g).await,
            Err(code) => {
                d.error_code = code;
                resp.groups.push(d);
                continue;
            }
        };
        match described {
            Ok(g) => {
                d.group_state = sb(g.state);
                d.protocol_type = sb(g.protocol_type);
                d.protocol_data = sb(g.protocol_name);
                d.members = g
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut dm = DescribedGroupMember::default();
                        dm.member_id = sb(m.member_id);
                        if v >= 4 {
                            dm.group_instance_id = m.group_instance_id.map(sb);
                        }
                        dm.client_id = sb(m.client_id);
                        dm.client_host = sb(m.client_host);
                        dm.member_metadata = Bytes::from(m.metadata);
                        dm.member_assignment = Bytes::from(m.assignment);
                        dm
                    })
                    .collect();
            }
            // Kafka describes a group it does not know as Dead, not as an error.
            Err(Error::UnknownGroup(_)) => d.group_state = sb("Dead"),
            Err(e) => d.error_code = group_code(&e),
        }
        resp.groups.push(d);
    }
    Some(resp)
}

pub(crate) async fn delete_groups(info: &ReqInfo<'_>, req: DeleteGroupsRequest) -> Option<DeleteGroupsResponse> {
    let ctx = info.ctx;
    let mut resp = DeleteGroupsResponse::default();
    for name in &req.groups_names {
        let mut r = DeletableGroupResult::default();
        r.group_id = name.clone();
        r.error_code = match named_group(info, Need::Right(Permission::Admin), &name.0) {
            Err(code) => code,
            Ok(g) => match ctx.broker.groups().delete(&g).await {
                Ok(()) => NONE,
                Err(e) => group_code(&e),
            },
        };
        resp.results.push(r);
    }
    Some(resp)
}
