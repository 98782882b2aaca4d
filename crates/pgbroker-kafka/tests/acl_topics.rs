//! ACLs on topics, on the wire: each right allows what it names, its
//! absence is answered with the authorization error and changes nothing,
//! and Metadata shows only what the user may see.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteRecordsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    FetchRequest, InitProducerIdRequest, ListOffsetsRequest, MetadataRequest, OffsetForLeaderEpochRequest,
    ProduceRequest, TopicName as WireTopic,
};
use kafka_protocol::protocol::StrBytes;
use pgbroker::auth::{Acl, Permission};
use pgbroker::{StoredRecord, TopicConfig, TopicName};
use pgbroker_kafka::encode_batch;
use pgbroker_testkit::kafka::auth::{self, login, topic, topic_prefix, user, ROOT};
use pgbroker_testkit::kafka::{Conn, TestServer};

const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

fn wire(name: &str) -> WireTopic {
    StrBytes::from_string(name.to_string()).into()
}

fn name(n: &str) -> TopicName {
    TopicName::new(n).expect("topic name")
}

fn batch(value: &str) -> Bytes {
    let r = StoredRecord {
        partition: 0,
        offset: 0,
        timestamp: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000),
        key: None,
        value: Some(value.as_bytes().to_vec().into()),
        headers: Vec::new(),
    };
    let mut buf = Vec::new();
    encode_batch(&mut buf, &[r]);
    Bytes::from(buf)
}

async fn produce(conn: &mut Conn, topic: &str, value: &str) -> i16 {
    let mut p = PartitionProduceData::default();
    p.index = 0;
    p.records = Some(batch(value));
    let mut t = TopicProduceData::default();
    t.name = wire(topic);
    t.partition_data = vec![p];
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 5000;
    req.topic_data = vec![t];
    conn.call(9, &req).await.responses[0].partition_responses[0].error_code
}

async fn fetch(conn: &mut Conn, topic: &str) -> (i16, Option<Bytes>) {
    let mut p = FetchPartition::default();
    p.partition_max_bytes = 1 << 20;
    let mut t = FetchTopic::default();
    t.topic = wire(topic);
    t.partitions = vec![p];
    let mut req = FetchRequest::default();
    req.max_bytes = 1 << 20;
    req.topics = vec![t];
    let resp = conn.call(11, &req).await;
    let p = &resp.responses[0].partitions[0];
    (p.error_code, p.records.clone().filter(|r| !r.is_empty()))
}

async fn list_offsets(conn: &mut Conn, topic: &str) -> (i16, i64) {
    let mut p = ListOffsetsPartition::default();
    p.timestamp = -1;
    let mut t = ListOffsetsTopic::default();
    t.name = wire(topic);
    t.partitions = vec![p];
    let mut req = ListOffsetsRequest::default();
    req.topics = vec![t];
    let resp = conn.call(5, &req).await;
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.offset)
}

async fn leader_epoch(conn: &mut Conn, topic: &str) -> (i16, i64) {
    let mut p = OffsetForLeaderPartition::default();
    p.current_leader_epoch = -1;
    let mut t = OffsetForLeaderTopic::default();
    t.topic = wire(topic);
    t.partitions = vec![p];
    let mut req = OffsetForLeaderEpochRequest::default();
    req.topics = vec![t];
    let resp = conn.call(3, &req).await;
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.end_offset)
}

/// Metadata for `topics` (`None`: every topic): `(name, error code)` pairs.
async fn metadata(conn: &mut Conn, topics: Option<&[&str]>) -> Vec<(String, i16)> {
    let mut req = MetadataRequest::default();
    req.topics = topics.map(|ts| {
        ts.iter()
            .map(|t| {
                let mut m = MetadataRequestTopic::default();
                m.name = Some(wire(t));
                m
            })
            .collect()
    });
    req.allow_auto_topic_creation = true;
    let resp = conn.call(9, &req).await;
    let mut got: Vec<(String, i16)> = resp
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                t.error_code,
            )
        })
        .collect();
    got.sort();
    got
}

async fn hw(server: &TestServer, topic: &str) -> i64 {
    server
        .broker
        .streams()
        .watermarks(&name(topic), 0)
        .await
        .expect("watermarks")
        .1
}

#[tokio::test]
async fn produce_needs_the_produce_right() {
    let server = auth::start().await;
    server.topic("orders", TopicConfig::default()).await;
    server.topic("audit", TopicConfig::default()).await;
    user(&server, "writer", &[(Permission::Produce, topic("orders"))]).await;
    user(&server, "reader", &[(Permission::Consume, topic_prefix(""))]).await;

    let mut writer = login(&server, "writer").await;
    assert_eq!(produce(&mut writer, "orders", "o1").await, 0);
    assert_eq!(hw(&server, "orders").await, 1);
    assert_eq!(produce(&mut writer, "audit", "a1").await, TOPIC_AUTHORIZATION_FAILED);
    let mut reader = login(&server, "reader").await;
    assert_eq!(produce(&mut reader, "orders", "o2").await, TOPIC_AUTHORIZATION_FAILED);
    assert_eq!(hw(&server, "audit").await, 0, "a refused produce writes nothing");
    assert_eq!(hw(&server, "orders").await, 1, "a refused produce writes nothing");

    // Idempotent producer ids go to users that may produce somewhere.
    let mut init = InitProducerIdRequest::default();
    init.transaction_timeout_ms = 60_000;
    init.producer_id = (-1).into();
    init.producer_epoch = -1;
    let ok = writer.call(3, &init).await;
    assert_eq!(ok.error_code, 0);
    assert!(ok.producer_id.0 >= 0);
    let refused = reader.call(3, &init).await;
    assert_eq!(refused.error_code, CLUSTER_AUTHORIZATION_FAILED);
    assert_eq!(refused.producer_id.0, -1);
    server.stop().await;
}

#[tokio::test]
async fn consume_needs_the_consume_right() {
    let server = auth::start().await;
    let orders = server.topic("orders", TopicConfig::default()).await;
    server.topic("audit", TopicConfig::default()).await;
    for t in [&orders, &name("audit")] {
        server
            .broker
            .streams()
            .produce(t, Some(0), &[pgbroker::Record::from_value("v")])
            .await
            .expect("produce");
    }
    user(&server, "reader", &[(Permission::Consume, topic("orders"))]).await;
    user(&server, "writer", &[(Permission::Produce, topic_prefix(""))]).await;

    let mut reader = login(&server, "reader").await;
    let (err, records) = fetch(&mut reader, "orders").await;
    assert_eq!(err, 0);
    assert!(records.is_some(), "the record is served");
    assert_eq!(list_offsets(&mut reader, "orders").await, (0, 1));
    assert_eq!(leader_epoch(&mut reader, "orders").await, (0, 1));

    for (conn, t) in [(&mut reader, "audit"), (&mut login(&server, "writer").await, "orders")] {
        assert_eq!(fetch(conn, t).await, (TOPIC_AUTHORIZATION_FAILED, None), "fetch {t}");
        assert_eq!(list_offsets(conn, t).await, (TOPIC_AUTHORIZATION_FAILED, -1));
        assert_eq!(leader_epoch(conn, t).await, (TOPIC_AUTHORIZATION_FAILED, -1));
    }
    server.stop().await;
}

#[tokio::test]
async fn metadata_shows_only_what_the_user_may_see() {
    let server = auth::start().await;
    for t in ["logs.web", "logs.db", "payments"] {
        server.topic(t, TopicConfig::default()).await;
    }
    user(&server, "ops", &[(Permission::Consume, topic_prefix("logs."))]).await;
    let mut ops = login(&server, "ops").await;
    assert_eq!(
        metadata(&mut ops, None).await,
        vec![("logs.db".to_string(), 0), ("logs.web".to_string(), 0)]
    );
    // Existing or not, a topic without rights is refused alike.
    assert_eq!(
        metadata(&mut ops, Some(&["payments", "ghost", "logs.web"])).await,
        vec![
            ("ghost".to_string(), TOPIC_AUTHORIZATION_FAILED),
            ("logs.web".to_string(), 0),
            ("payments".to_string(), TOPIC_AUTHORIZATION_FAILED),
        ]
    );
    // A topic the user may use but that does not exist is unknown.
    assert_eq!(
        metadata(&mut ops, Some(&["logs.new"])).await,
        vec![("logs.new".to_string(), UNKNOWN_TOPIC_OR_PARTITION)]
    );
    let mut root = login(&server, ROOT).await;
    assert_eq!(metadata(&mut root, None).await.len(), 3, "a super user sees everything");
    server.stop().await;
}

fn create_req(topic: &str, partitions: i32) -> CreateTopicsRequest {
    let mut t = CreatableTopic::default();
    t.name = wire(topic);
    t.num_partitions = partitions;
    t.replication_factor = -1;
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 5000;
    req
}

#[tokio::test]
async fn topic_administration_needs_the_admin_right() {
    let server = auth::start().await;
    let audit = server.topic("audit", TopicConfig::default()).await;
    server
        .broker
        .streams()
        .produce(
            &audit,
            Some(0),
            &[pgbroker::Record::from_value("a"), pgbroker::Record::from_value("b")],
        )
        .await
        .expect("produce");
    user(&server, "admin", &[(Permission::Admin, topic_prefix("team."))]).await;
    // Every right but admin, on everything: still no administration.
    let others = [Permission::Produce, Permission::Consume].map(|p| (p, topic_prefix("")));
    user(&server, "user", &others).await;
    let mut admin = login(&server, "admin").await;
    let mut plain = login(&server, "user").await;

    // CreateTopics.
    let resp = plain.call(5, &create_req("team.a", 2)).await;
    assert_eq!(resp.topics[0].error_code, TOPIC_AUTHORIZATION_FAILED);
    assert!(
        server.broker.topics().info(&name("team.a")).await.is_err(),
        "nothing created"
    );
    let resp = admin.call(5, &create_req("other", 2)).await;
    assert_eq!(resp.topics[0].error_code, TOPIC_AUTHORIZATION_FAILED);
    assert!(
        server.broker.topics().info(&name("other")).await.is_err(),
        "nothing created"
    );
    assert_eq!(admin.call(5, &create_req("team.a", 2)).await.topics[0].error_code, 0);
    assert_eq!(
        server
            .broker
            .topics()
            .info(&name("team.a"))
            .await
            .expect("created")
            .partitions,
        2
    );

    // CreatePartitions.
    let grow = |t: &str| {
        let mut ct = CreatePartitionsTopic::default();
        ct.name = wire(t);
        ct.count = 3;
        let mut req = CreatePartitionsRequest::default();
        req.topics = vec![ct];
        req.timeout_ms = 5000;
        req
    };
    assert_eq!(
        plain.call(2, &grow("team.a")).await.results[0].error_code,
        TOPIC_AUTHORIZATION_FAILED
    );
    assert_eq!(
        server
            .broker
            .topics()
            .info(&name("team.a"))
            .await
            .expect("t")
            .partitions,
        2
    );
    assert_eq!(admin.call(2, &grow("team.a")).await.results[0].error_code, 0);
    assert_eq!(
        server
            .broker
            .topics()
            .info(&name("team.a"))
            .await
            .expect("t")
            .partitions,
        3
    );

    // DeleteRecords.
    let truncate = {
        let mut p = DeleteRecordsPartition::default();
        p.offset = 1;
        let mut t = DeleteRecordsTopic::default();
        t.name = wire("audit");
        t.partitions = vec![p];
        let mut req = DeleteRecordsRequest::default();
        req.topics = vec![t];
        req.timeout_ms = 5000;
        req
    };
    let resp = admin.call(2, &truncate).await;
    assert_eq!(resp.topics[0].partitions[0].error_code, TOPIC_AUTHORIZATION_FAILED);
    assert_eq!(
        server.broker.streams().watermarks(&audit, 0).await.expect("wm").0,
        0,
        "log start unchanged"
    );

    // DescribeConfigs: topics need admin, the broker a super user.
    let describe = |kind: i8, res: &str| {
        let mut r = DescribeConfigsResource::default();
        r.resource_type = kind;
        r.resource_name = StrBytes::from_string(res.to_string());
        let mut req = DescribeConfigsRequest::default();
        req.resources = vec![r];
        req
    };
    assert_eq!(admin.call(3, &describe(2, "team.a")).await.results[0].error_code, 0);
    assert_eq!(
        plain.call(3, &describe(2, "team.a")).await.results[0].error_code,
        TOPIC_AUTHORIZATION_FAILED
    );
    let refused = admin.call(3, &describe(4, "0")).await;
    assert_eq!(refused.results[0].error_code, CLUSTER_AUTHORIZATION_FAILED);
    assert!(refused.results[0].configs.is_empty());
    let mut root = login(&server, ROOT).await;
    assert_eq!(root.call(3, &describe(4, "0")).await.results[0].error_code, 0);

    // DeleteTopics.
    let delete = |t: &str| {
        let mut req = DeleteTopicsRequest::default();
        req.topic_names = vec![wire(t)];
        req.timeout_ms = 5000;
        req
    };
    assert_eq!(
        plain.call(5, &delete("team.a")).await.responses[0].error_code,
        TOPIC_AUTHORIZATION_FAILED
    );
    assert_eq!(
        admin.call(5, &delete("audit")).await.responses[0].error_code,
        TOPIC_AUTHORIZATION_FAILED
    );
    assert!(
        server.broker.topics().info(&name("team.a")).await.is_ok(),
        "still there"
    );
    assert!(server.broker.topics().info(&audit).await.is_ok(), "still there");
    assert_eq!(admin.call(5, &delete("team.a")).await.responses[0].error_code, 0);
    assert!(server.broker.topics().info(&name("team.a")).await.is_err(), "deleted");
    server.stop().await;
}

#[tokio::test]
async fn rights_are_read_at_login() {
    let server = auth::start().await;
    server.topic("orders", TopicConfig::default()).await;
    user(&server, "late", &[]).await;
    let mut before = login(&server, "late").await;
    assert_eq!(metadata(&mut before, None).await, vec![], "no rights, nothing seen");
    let acl = Acl::new("late", Permission::Produce, topic("orders")).expect("acl");
    server.broker.auth().grant(&acl).await.expect("grant");
    assert_eq!(
        produce(&mut before, "orders", "x").await,
        TOPIC_AUTHORIZATION_FAILED,
        "an open connection keeps the rights it logged in with"
    );
    let mut after = login(&server, "late").await;
    assert_eq!(produce(&mut after, "orders", "x").await, 0);
    assert_eq!(hw(&server, "orders").await, 1);
    server.stop().await;
}

#[tokio::test]
async fn without_authentication_nothing_is_enforced() {
    let server = TestServer::start().await;
    server.topic("orders", TopicConfig::default()).await;
    let mut conn = server.connect().await;
    assert_eq!(produce(&mut conn, "orders", "x").await, 0);
    assert_eq!(metadata(&mut conn, None).await, vec![("orders".to_string(), 0)]);
    server.stop().await;
}
