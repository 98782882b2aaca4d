//! ACLs on consumer groups, on the wire: membership and commits need the
//! group right (commits also consume on the topic), deleting a group needs
//! admin on it, and ListGroups, DescribeGroups and FindCoordinator show
//! only groups the user has a right on. Refusals change nothing.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId as WireGroup, HeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest,
    TopicName as WireTopic,
};
use kafka_protocol::protocol::StrBytes;
use pgbroker::auth::Permission;
use pgbroker::groups::OffsetCommit;
use pgbroker::{GroupId, TopicConfig};
use pgbroker_testkit::kafka::auth::{self, group, group_prefix, login, topic, user, ROOT};
use pgbroker_testkit::kafka::{Conn, TestServer};

const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
const GROUP_AUTHORIZATION_FAILED: i16 = 30;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn g(v: &str) -> WireGroup {
    s(v).into()
}

fn t(v: &str) -> WireTopic {
    s(v).into()
}

fn join_req(group: &str) -> JoinGroupRequest {
    let mut p = JoinGroupRequestProtocol::default();
    p.name = s("range");
    p.metadata = Bytes::from_static(b"meta");
    let mut req = JoinGroupRequest::default();
    req.group_id = g(group);
    req.session_timeout_ms = 10_000;
    req.rebalance_timeout_ms = 10_000;
    req.protocol_type = s("consumer");
    req.protocols = vec![p];
    req
}

fn commit_req(group: &str, generation: i32, member: &str, topics: &[&str]) -> OffsetCommitRequest {
    let mut req = OffsetCommitRequest::default();
    req.group_id = g(group);
    req.generation_id_or_member_epoch = generation;
    req.member_id = s(member);
    req.topics = topics
        .iter()
        .map(|name| {
            let mut p = OffsetCommitRequestPartition::default();
            p.committed_offset = 1;
            let mut ct = OffsetCommitRequestTopic::default();
            ct.name = t(name);
            ct.partitions = vec![p];
            ct
        })
        .collect();
    req
}

/// Error codes of an OffsetCommit answer, by topic, in request order.
async fn commit(conn: &mut Conn, req: &OffsetCommitRequest) -> Vec<i16> {
    let resp = conn.call(8, req).await;
    resp.topics.iter().map(|t| t.partitions[0].error_code).collect()
}

async fn committed(server: &TestServer, group: &str) -> Vec<(String, i64)> {
    let group = GroupId::new(group).expect("group");
    match server.broker.groups().all_offsets(&group).await {
        Ok(c) => c.into_iter().map(|(t, c)| (t.to_string(), c.offset)).collect(),
        Err(pgbroker::Error::UnknownGroup(_)) => Vec::new(),
        Err(e) => panic!("reading offsets: {e}"),
    }
}

async fn groups(server: &TestServer) -> Vec<String> {
    let list = server.broker.classic_groups().list().await.expect("groups");
    list.into_iter().map(|l| l.group.to_string()).collect()
}

#[tokio::test]
async fn membership_and_commits_need_the_group_right() {
    let server = auth::start().await;
    server
        .broker
        .classic_groups()
        .set_initial_rebalance_delay(Duration::ZERO);
    server.topic("orders", TopicConfig::default()).await;
    server.topic("audit", TopicConfig::default()).await;
    let reads = (Permission::Consume, topic("orders"));
    user(
        &server,
        "member",
        &[(Permission::Group, group_prefix("app-")), reads.clone()],
    )
    .await;
    user(&server, "outsider", &[reads]).await;
    let mut member = login(&server, "member").await;
    let mut outsider = login(&server, "outsider").await;

    let refused = outsider.call(3, &join_req("app-1")).await;
    assert_eq!(refused.error_code, GROUP_AUTHORIZATION_FAILED);
    assert!(groups(&server).await.is_empty(), "a refused join creates no group");

    let joined = member.call(3, &join_req("app-1")).await;
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.leader, joined.member_id);
    let (generation, member_id) = (joined.generation_id, joined.member_id.to_string());

    let mut sync = SyncGroupRequest::default();
    sync.group_id = g("app-1");
    sync.generation_id = generation;
    sync.member_id = s(&member_id);
    let mut a = SyncGroupRequestAssignment::default();
    a.member_id = s(&member_id);
    a.assignment = Bytes::from_static(b"assigned");
    sync.assignments = vec![a];
    assert_eq!(outsider.call(3, &sync).await.error_code, GROUP_AUTHORIZATION_FAILED);
    let synced = member.call(3, &sync).await;
    assert_eq!((synced.error_code, synced.assignment.as_ref()), (0, &b"assigned"[..]));

    let mut hb = HeartbeatRequest::default();
    hb.group_id = g("app-1");
    hb.generation_id = generation;
    hb.member_id = s(&member_id);
    assert_eq!(outsider.call(3, &hb).await.error_code, GROUP_AUTHORIZATION_FAILED);
    let mut leave = LeaveGroupRequest::default();
    leave.group_id = g("app-1");
    leave.member_id = s(&member_id);
    assert_eq!(outsider.call(2, &leave).await.error_code, GROUP_AUTHORIZATION_FAILED);
    assert_eq!(
        member.call(3, &hb).await.error_code,
        0,
        "the refused leave left the member in"
    );

    // OffsetCommit: the group right, and consume on each topic.
    let both = commit_req("app-1", generation, &member_id, &["orders"]);
    assert_eq!(commit(&mut outsider, &both).await, vec![GROUP_AUTHORIZATION_FAILED]);
    assert!(committed(&server, "app-1").await.is_empty(), "nothing committed");
    let audit = commit_req("app-1", generation, &member_id, &["audit"]);
    assert_eq!(commit(&mut member, &audit).await, vec![TOPIC_AUTHORIZATION_FAILED]);
    assert!(committed(&server, "app-1").await.is_empty(), "nothing committed");
    assert_eq!(commit(&mut member, &both).await, vec![0]);
    assert_eq!(committed(&server, "app-1").await, vec![("orders".to_string(), 1)]);

    // OffsetFetch: the group right; topics without any right are refused.
    let mut fetch = OffsetFetchRequest::default();
    fetch.group_id = g("app-1");
    fetch.topics = Some(
        ["orders", "audit"]
            .iter()
            .map(|name| {
                let mut ft = OffsetFetchRequestTopic::default();
                ft.name = t(name);
                ft.partition_indexes = vec![0];
                ft
            })
            .collect(),
    );
    let refused = outsider.call(7, &fetch).await;
    assert_eq!(refused.error_code, GROUP_AUTHORIZATION_FAILED);
    assert!(refused.topics.iter().all(|t| t.partitions[0].committed_offset == -1));
    let got = member.call(7, &fetch).await;
    assert_eq!(got.error_code, 0);
    assert_eq!(got.topics[0].partitions[0].committed_offset, 1);
    assert_eq!(got.topics[1].partitions[0].error_code, TOPIC_AUTHORIZATION_FAILED);

    leave.member_id = s(&member_id);
    assert_eq!(member.call(2, &leave).await.error_code, 0);
    server.stop().await;
}

#[tokio::test]
async fn groups_are_seen_with_a_right_and_deleted_with_admin() {
    let server = auth::start().await;
    let orders = server.topic("orders", TopicConfig::default()).await;
    let offset = OffsetCommit {
        topic: orders,
        partition: 0,
        offset: 0,
        metadata: None,
    };
    for name in ["app-1", "app-2", "billing"] {
        let id = GroupId::new(name).expect("group");
        server
            .broker
            .classic_groups()
            .commit(&id, "", -1, std::slice::from_ref(&offset))
            .await
            .expect("commit");
    }
    user(&server, "viewer", &[(Permission::Group, group_prefix("app-"))]).await;
    user(&server, "gadmin", &[(Permission::Admin, group("app-2"))]).await;
    let mut viewer = login(&server, "viewer").await;
    let mut gadmin = login(&server, "gadmin").await;
    let mut root = login(&server, ROOT).await;

    let listed = |resp: kafka_protocol::messages::ListGroupsResponse| {
        let mut names: Vec<String> = resp.groups.iter().map(|l| l.group_id.0.to_string()).collect();
        names.sort();
        names
    };
    let list = ListGroupsRequest::default();
    assert_eq!(listed(viewer.call(4, &list).await), ["app-1", "app-2"]);
    assert_eq!(listed(gadmin.call(4, &list).await), ["app-2"]);
    assert_eq!(listed(root.call(4, &list).await), ["app-1", "app-2", "billing"]);

    let mut describe = DescribeGroupsRequest::default();
    describe.groups = vec![g("app-1"), g("billing")];
    let d = viewer.call(5, &describe).await;
    assert_eq!(d.groups[0].error_code, 0);
    assert_eq!(d.groups[0].group_state.as_str(), "Empty");
    assert_eq!(d.groups[1].error_code, GROUP_AUTHORIZATION_FAILED);
    assert_eq!(d.groups[1].group_state.as_str(), "", "nothing said of a group not seen");

    let mut find = FindCoordinatorRequest::default();
    find.key = s("app-1");
    assert_eq!(viewer.call(3, &find).await.error_code, 0);
    find.key = s("billing");
    let refused = viewer.call(3, &find).await;
    assert_eq!(refused.error_code, GROUP_AUTHORIZATION_FAILED);
    assert_eq!(refused.node_id.0, -1);

    let delete = |name: &str| {
        let mut req = DeleteGroupsRequest::default();
        req.groups_names = vec![g(name)];
        req
    };
    assert_eq!(
        viewer.call(2, &delete("app-2")).await.results[0].error_code,
        GROUP_AUTHORIZATION_FAILED,
        "the group right does not delete"
    );
    assert_eq!(
        gadmin.call(2, &delete("billing")).await.results[0].error_code,
        GROUP_AUTHORIZATION_FAILED
    );
    assert_eq!(groups(&server).await.len(), 3, "nothing deleted");
    assert_eq!(gadmin.call(2, &delete("app-2")).await.results[0].error_code, 0);
    let mut left = groups(&server).await;
    left.sort();
    assert_eq!(left, ["app-1", "billing"]);
    server.stop().await;
}
