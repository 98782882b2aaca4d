//! Kafka's consumer group protocol (KIP-848) on the wire: topic ids in
//! Metadata, ConsumerGroupHeartbeat and ConsumerGroupDescribe, OffsetCommit
//! 9 and OffsetFetch 9 fenced by member epoch (OffsetFetch 8+ batching groups), ListGroups 5 with the type filter, and the
//! group and topic rights.

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupHeartbeatRequest, ListGroupsRequest, MetadataRequest,
    OffsetCommitRequest, OffsetFetchRequest,
};
use kafka_protocol::protocol::StrBytes;
use pgbroker::auth::Permission;
use pgbroker::TopicConfig;
use pgbroker_testkit::kafka::auth::{self, group_prefix, login, topic, user};
use pgbroker_testkit::kafka::{Conn, TestServer};
use uuid::Uuid;

const GROUP_AUTHORIZATION_FAILED: i16 = 30;
const UNKNOWN_MEMBER_ID: i16 = 25;
const UNKNOWN_TOPIC_ID: i16 = 100;
const FENCED_MEMBER_EPOCH: i16 = 110;
const STALE_MEMBER_EPOCH: i16 = 113;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn heartbeat(group: &str, member: &str, epoch: i32, topics: Option<&[&str]>) -> ConsumerGroupHeartbeatRequest {
    let mut req = ConsumerGroupHeartbeatRequest::default();
    req.group_id = s(group).into();
    req.member_id = s(member);
    req.member_epoch = epoch;
    req.rebalance_timeout_ms = if epoch == 0 { 30_000 } else { -1 };
    req.subscribed_topic_names = topics.map(|ts| ts.iter().map(|t| s(t).into()).collect());
    req
}

fn commit(group: &str, member: &str, epoch: i32, topic: &str) -> OffsetCommitRequest {
    let mut p = OffsetCommitRequestPartition::default();
    p.committed_offset = 1;
    let mut t = OffsetCommitRequestTopic::default();
    t.name = s(topic).into();
    t.partitions = vec![p];
    let mut req = OffsetCommitRequest::default();
    req.group_id = s(group).into();
    req.generation_id_or_member_epoch = epoch;
    req.member_id = s(member);
    req.topics = vec![t];
    req
}

async fn commit_code(conn: &mut Conn, req: &OffsetCommitRequest) -> i16 {
    conn.call(9, req).await.topics[0].partitions[0].error_code
}

async fn listed(conn: &mut Conn, types: &[&str]) -> Vec<(String, String)> {
    let mut req = ListGroupsRequest::default();
    req.types_filter = types.iter().map(|t| s(t)).collect();
    let resp = conn.call(5, &req).await;
    assert_eq!(resp.error_code, 0);
    resp.groups
        .iter()
        .map(|g| (g.group_id.to_string(), g.group_type.to_string()))
        .collect()
}

#[tokio::test]
async fn a_member_joins_commits_with_its_epoch_and_leaves() {
    let server = TestServer::start().await;
    let orders = server.topic("orders", pgbroker_testkit::db::partitions(3)).await;
    let mut conn = server.connect().await;

    // Topic ids: answered by name, and looked up by id.
    let mut by_name = MetadataRequestTopic::default();
    by_name.name = Some(s("orders").into());
    let mut meta = MetadataRequest::default();
    meta.topics = Some(vec![by_name]);
    let resp = conn.call(12, &meta).await;
    let id = resp.topics[0].topic_id;
    assert!(!id.is_nil());
    assert_eq!(
        *id.as_bytes(),
        server.broker.topics().info(&orders).await.expect("info").topic_id
    );
    let mut by_id = MetadataRequestTopic::default();
    by_id.topic_id = id;
    by_id.name = None;
    let mut unknown = MetadataRequestTopic::default();
    unknown.topic_id = Uuid::from_bytes([9; 16]);
    meta.topics = Some(vec![by_id, unknown]);
    let resp = conn.call(12, &meta).await;
    assert_eq!(
        resp.topics[0].name.as_ref().map(|n| n.to_string()),
        Some("orders".to_string())
    );
    assert_eq!(resp.topics[0].partitions.len(), 3);
    assert_eq!(resp.topics[1].error_code, UNKNOWN_TOPIC_ID);

    // Join: the member id is the client's, every partition by topic id.
    let joined = conn.call(1, &heartbeat("app", "m-1", 0, Some(&["orders"]))).await;
    assert_eq!(joined.error_code, 0, "{:?}", joined.error_message);
    assert_eq!(
        joined.member_id.as_ref().map(|m| m.to_string()),
        Some("m-1".to_string())
    );
    assert_eq!(joined.member_epoch, 1);
    assert_eq!(joined.heartbeat_interval_ms, 5_000);
    let assignment = joined.assignment.expect("an assignment");
    assert_eq!(assignment.topic_partitions.len(), 1);
    assert_eq!(assignment.topic_partitions[0].topic_id, id);
    assert_eq!(assignment.topic_partitions[0].partitions, vec![0, 1, 2]);

    let ahead = conn.call(1, &heartbeat("app", "m-1", 4, None)).await;
    assert_eq!(ahead.error_code, FENCED_MEMBER_EPOCH);
    let stranger = conn.call(1, &heartbeat("app", "m-2", 1, None)).await;
    assert_eq!(stranger.error_code, UNKNOWN_MEMBER_ID);

    // OffsetCommit 9 carries the member epoch.
    assert_eq!(
        commit_code(&mut conn, &commit("app", "m-1", 2, "orders")).await,
        FENCED_MEMBER_EPOCH
    );
    assert_eq!(
        commit_code(&mut conn, &commit("app", "m-1", 0, "orders")).await,
        STALE_MEMBER_EPOCH
    );
    assert_eq!(commit_code(&mut conn, &commit("app", "m-1", 1, "orders")).await, 0);

    let mut describe = ConsumerGroupDescribeRequest::default();
    describe.group_ids = vec![s("app").into(), s("nope").into()];
    let described = conn.call(1, &describe).await;
    let g = &described.groups[0];
    assert_eq!((g.error_code, g.group_state.as_str(), g.group_epoch), (0, "Stable", 1));
    assert_eq!(g.assignor_name.as_str(), "uniform");
    assert_eq!(g.members.len(), 1);
    assert_eq!((g.members[0].member_epoch, g.members[0].member_type), (1, 1));
    assert_eq!(
        g.members[0].assignment.topic_partitions[0].topic_name.as_str(),
        "orders"
    );
    assert_ne!(described.groups[1].error_code, 0, "an unknown group is an error");

    assert_eq!(
        listed(&mut conn, &["consumer"]).await,
        vec![("app".to_string(), "consumer".to_string())]
    );
    assert!(listed(&mut conn, &["classic"]).await.is_empty());

    let left = conn.call(1, &heartbeat("app", "m-1", -1, None)).await;
    assert_eq!((left.error_code, left.member_epoch), (0, -1));
    let gone = conn.call(1, &heartbeat("app", "m-1", 1, None)).await;
    assert_eq!(gone.error_code, UNKNOWN_MEMBER_ID);
    server.stop().await;
}

#[tokio::test]
async fn heartbeats_and_describes_need_the_group_right() {
    let server = auth::start().await;
    server.topic("orders", TopicConfig::default()).await;
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

    let refused = outsider.call(1, &heartbeat("app-1", "x", 0, Some(&["orders"]))).await;
    assert_eq!(refused.error_code, GROUP_AUTHORIZATION_FAILED);
    assert!(
        server.broker.classic_groups().list().await.expect("list").is_empty(),
        "no group created"
    );
    let joined = member.call(1, &heartbeat("app-1", "m", 0, Some(&["orders"]))).await;
    assert_eq!((joined.error_code, joined.member_epoch), (0, 1));

    let mut describe = ConsumerGroupDescribeRequest::default();
    describe.group_ids = vec![s("app-1").into()];
    assert_eq!(
        outsider.call(0, &describe).await.groups[0].error_code,
        GROUP_AUTHORIZATION_FAILED
    );
    assert_eq!(member.call(0, &describe).await.groups[0].members.len(), 1);
    assert!(
        listed(&mut outsider, &[]).await.is_empty(),
        "the outsider sees no group"
    );

    // A topic asked by id is named only to those who may see it.
    let secret = server.topic("secret", TopicConfig::default()).await;
    let id = server.broker.topics().info(&secret).await.expect("info").topic_id;
    let mut by_id = MetadataRequestTopic::default();
    by_id.topic_id = Uuid::from_bytes(id);
    by_id.name = None;
    let mut meta = MetadataRequest::default();
    meta.topics = Some(vec![by_id]);
    let refused = outsider.call(12, &meta).await;
    assert_eq!(
        (refused.topics[0].error_code, refused.topics[0].name.is_none()),
        (29, true)
    );
    server.stop().await;
}

#[tokio::test]
async fn offset_fetch_batches_groups_and_fences_by_member_epoch() {
    let server = TestServer::start().await;
    server.topic("orders", pgbroker_testkit::db::partitions(2)).await;
    let mut conn = server.connect().await;
    let joined = conn.call(1, &heartbeat("app", "m-1", 0, Some(&["orders"]))).await;
    assert_eq!(joined.member_epoch, 1);
    assert_eq!(commit_code(&mut conn, &commit("app", "m-1", 1, "orders")).await, 0);

    let group = |name: &str, member: Option<&str>, epoch: i32| {
        let mut g = OffsetFetchRequestGroup::default();
        g.group_id = s(name).into();
        g.member_id = member.map(s);
        g.member_epoch = epoch;
        g.topics = None;
        g
    };
    let mut req = OffsetFetchRequest::default();
    req.groups = vec![
        group("app", Some("m-1"), 1),
        group("app", Some("m-1"), 0),
        group("app", Some("ghost"), 1),
        group("app", None, -1),
        group("nobody", None, -1),
    ];
    let resp = conn.call(9, &req).await;
    let codes: Vec<i16> = resp.groups.iter().map(|g| g.error_code).collect();
    assert_eq!(codes, vec![0, STALE_MEMBER_EPOCH, UNKNOWN_MEMBER_ID, 0, 0]);
    let offsets = |g: &kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup| {
        g.topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.name.to_string(), p.partition_index, p.committed_offset))
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(offsets(&resp.groups[0]), vec![("orders".to_string(), 0, 1)]);
    assert_eq!(offsets(&resp.groups[3]), offsets(&resp.groups[0]));
    assert!(offsets(&resp.groups[4]).is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_pattern_that_is_not_re2_is_an_invalid_regular_expression() {
    const INVALID_REGULAR_EXPRESSION: i16 = 128;
    let server = TestServer::start().await;
    server.topic("logs-1", TopicConfig::default()).await;
    let mut conn = server.connect().await;
    for bad in ["logs-(", r"(l)\1", "logs-(?!2)"] {
        let mut req = heartbeat("by-pattern", "m-1", 0, Some(&[]));
        req.subscribed_topic_regex = Some(s(bad));
        let resp = conn.call(1, &req).await;
        assert_eq!(resp.error_code, INVALID_REGULAR_EXPRESSION, "{bad}");
        assert!(resp.error_message.is_some(), "{bad}: the reason is given");
    }
    assert!(listed(&mut conn, &[]).await.is_empty(), "no group was created");
    let mut req = heartbeat("by-pattern", "m-1", 0, Some(&[]));
    req.subscribed_topic_regex = Some(s(r"logs-\d"));
    let joined = conn.call(1, &req).await;
    assert_eq!(joined.error_code, 0, "{:?}", joined.error_message);
    let assignment = joined.assignment.expect("an assignment");
    assert_eq!(assignment.topic_partitions.len(), 1, "logs-1 matched in full");
    server.stop().await;
}
