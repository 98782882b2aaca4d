//! Share groups (KIP-932) on the wire: the four APIs in ApiVersions,
//! group configs through IncrementalAlterConfigs and DescribeConfigs,
//! ShareGroupHeartbeat and ShareGroupDescribe, and ShareFetch and
//! ShareAcknowledge with their share session epochs, piggy-backed
//! acknowledgements and errors, and ListGroups with the `share` type.

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::share_acknowledge_request::{
    AcknowledgePartition, AcknowledgeTopic, AcknowledgementBatch as AckBatch,
};
use kafka_protocol::messages::share_fetch_request::{AcknowledgementBatch, FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiVersionsRequest, DescribeConfigsRequest, IncrementalAlterConfigsRequest, ListGroupsRequest,
    ShareAcknowledgeRequest, ShareFetchRequest, ShareFetchResponse, ShareGroupDescribeRequest,
    ShareGroupHeartbeatRequest,
};
use kafka_protocol::protocol::StrBytes;
use pgbroker::Record;
use pgbroker_testkit::kafka::{Conn, TestServer};
use uuid::Uuid;

const INVALID_REQUEST: i16 = 42;
const INVALID_CONFIG: i16 = 40;
const UNKNOWN_MEMBER_ID: i16 = 25;
const INVALID_RECORD_STATE: i16 = 121;
const SHARE_SESSION_NOT_FOUND: i16 = 122;
const INVALID_SHARE_SESSION_EPOCH: i16 = 123;
const GROUP: i8 = 32;
const ACCEPT: i8 = 1;
const RELEASE: i8 = 2;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

async fn alter(conn: &mut Conn, group: &str, configs: &[(&str, &str)]) -> i16 {
    let mut res = AlterConfigsResource::default();
    res.resource_type = GROUP;
    res.resource_name = s(group);
    res.configs = configs
        .iter()
        .map(|(k, v)| {
            let mut c = AlterableConfig::default();
            c.name = s(k);
            c.config_operation = 0;
            c.value = Some(s(v));
            c
        })
        .collect();
    let mut req = IncrementalAlterConfigsRequest::default();
    req.resources = vec![res];
    conn.call(1, &req).await.responses[0].error_code
}

async fn described(conn: &mut Conn, group: &str, name: &str) -> String {
    let mut res = DescribeConfigsResource::default();
    res.resource_type = GROUP;
    res.resource_name = s(group);
    let mut req = DescribeConfigsRequest::default();
    req.resources = vec![res];
    let resp = conn.call(4, &req).await;
    assert_eq!(resp.results[0].error_code, 0);
    resp.results[0]
        .configs
        .iter()
        .find(|c| c.name.as_str() == name)
        .and_then(|c| c.value.as_ref().map(|v| v.to_string()))
        .expect("the config listed")
}

fn join(group: &str, member: &str, topic: &str) -> ShareGroupHeartbeatRequest {
    let mut req = ShareGroupHeartbeatRequest::default();
    req.group_id = s(group).into();
    req.member_id = s(member);
    req.member_epoch = 0;
    req.subscribed_topic_names = Some(vec![s(topic).into()]);
    req
}

fn fetch(member: &str, epoch: i32, topic: Uuid, acks: &[(i64, i64, i8)]) -> ShareFetchRequest {
    let mut p = FetchPartition::default();
    p.partition_index = 0;
    p.partition_max_bytes = 1 << 20;
    p.acknowledgement_batches = acks
        .iter()
        .map(|(first, last, kind)| {
            let mut b = AcknowledgementBatch::default();
            b.first_offset = *first;
            b.last_offset = *last;
            b.acknowledge_types = vec![*kind];
            b
        })
        .collect();
    let mut t = FetchTopic::default();
    t.topic_id = topic;
    t.partitions = vec![p];
    let mut req = ShareFetchRequest::default();
    req.group_id = Some(s("sg").into());
    req.member_id = Some(s(member));
    req.share_session_epoch = epoch;
    req.max_wait_ms = 200;
    req.max_bytes = 1 << 20;
    req.max_records = 3;
    req.topics = vec![t];
    req
}

fn acknowledge(member: &str, epoch: i32, topic: Uuid, first: i64, last: i64) -> ShareAcknowledgeRequest {
    let mut b = AckBatch::default();
    b.first_offset = first;
    b.last_offset = last;
    b.acknowledge_types = vec![ACCEPT];
    let mut p = AcknowledgePartition::default();
    p.partition_index = 0;
    p.acknowledgement_batches = vec![b];
    let mut t = AcknowledgeTopic::default();
    t.topic_id = topic;
    t.partitions = vec![p];
    let mut req = ShareAcknowledgeRequest::default();
    req.group_id = Some(s("sg").into());
    req.member_id = Some(s(member));
    req.share_session_epoch = epoch;
    req.topics = vec![t];
    req
}

/// (first, last, delivery count) of every range acquired.
fn acquired(resp: &ShareFetchResponse) -> Vec<(i64, i64, i16)> {
    resp.responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .flat_map(|p| p.acquired_records.iter())
        .map(|a| (a.first_offset, a.last_offset, a.delivery_count))
        .collect()
}

#[tokio::test]
async fn share_consumers_fetch_acknowledge_and_close_their_sessions() {
    let server = TestServer::start().await;
    let topic = server.topic("tasks", pgbroker_testkit::db::partitions(1)).await;
    let mut conn = server.connect().await;

    let versions = conn.call(3, &ApiVersionsRequest::default()).await;
    for key in 76..=79 {
        let row = versions.api_keys.iter().find(|k| k.api_key == key).expect("listed");
        assert_eq!((row.min_version, row.max_version), (1, 1), "API {key}");
    }

    // Group configs: a bad value refuses the whole change.
    let bad = alter(
        &mut conn,
        "sg",
        &[
            ("share.auto.offset.reset", "earliest"),
            ("share.delivery.count.limit", "99"),
        ],
    );
    assert_eq!(bad.await, INVALID_CONFIG);
    assert_eq!(described(&mut conn, "sg", "share.auto.offset.reset").await, "latest");
    let ok = alter(
        &mut conn,
        "sg",
        &[
            ("share.auto.offset.reset", "earliest"),
            ("share.record.lock.duration.ms", "5000"),
        ],
    );
    assert_eq!(ok.await, 0);
    assert_eq!(described(&mut conn, "sg", "share.auto.offset.reset").await, "earliest");

    let records: Vec<Record> = (0..5).map(|i| Record::from_value(format!("r{i}"))).collect();
    server
        .broker
        .streams()
        .produce(&topic, Some(0), &records)
        .await
        .expect("produce");

    let hb = conn.call(1, &join("sg", "m1", "tasks")).await;
    assert_eq!(hb.error_code, 0);
    assert_eq!(hb.member_epoch, 1);
    let assignment = hb.assignment.expect("assigned");
    let id = assignment.topic_partitions[0].topic_id;
    assert_eq!(assignment.topic_partitions[0].partitions, vec![0]);

    // Session rules.
    assert_eq!(
        conn.call(1, &fetch("m1", 1, id, &[])).await.error_code,
        SHARE_SESSION_NOT_FOUND
    );
    assert_eq!(
        conn.call(1, &fetch("m1", 0, id, &[(0, 0, ACCEPT)])).await.error_code,
        INVALID_REQUEST
    );
    assert_eq!(
        conn.call(1, &fetch("stranger", 0, id, &[])).await.error_code,
        UNKNOWN_MEMBER_ID
    );

    let first = conn.call(1, &fetch("m1", 0, id, &[])).await;
    assert_eq!(first.error_code, 0);
    assert_eq!(first.acquisition_lock_timeout_ms, 5000);
    assert_eq!(acquired(&first), vec![(0, 2, 1)]);
    let records = first.responses[0].partitions[0].records.as_ref().expect("records");
    assert!(!records.is_empty());
    assert_eq!(
        conn.call(1, &fetch("m1", 2, id, &[])).await.error_code,
        INVALID_SHARE_SESSION_EPOCH
    );

    // Accept 0-1, release 2: the same request gets 2 back, then 3-4.
    let second = conn
        .call(1, &fetch("m1", 1, id, &[(0, 1, ACCEPT), (2, 2, RELEASE)]))
        .await;
    assert_eq!(second.error_code, 0);
    assert_eq!(second.responses[0].partitions[0].acknowledge_error_code, 0);
    assert_eq!(acquired(&second), vec![(2, 2, 2), (3, 4, 1)]);

    // Settled records cannot be settled again; nothing else changes.
    let again = conn.call(1, &acknowledge("m1", 2, id, 0, 0)).await;
    assert_eq!(again.error_code, 0);
    assert_eq!(again.responses[0].partitions[0].error_code, INVALID_RECORD_STATE);
    assert_eq!(
        conn.call(1, &acknowledge("m1", 0, id, 3, 3)).await.error_code,
        INVALID_SHARE_SESSION_EPOCH,
        "ShareAcknowledge cannot open a session"
    );

    let mut list = ListGroupsRequest::default();
    list.types_filter = vec![s("share")];
    let listed = conn.call(5, &list).await;
    let found: Vec<(String, String, String)> = listed
        .groups
        .iter()
        .map(|g| {
            (
                g.group_id.to_string(),
                g.group_type.to_string(),
                g.group_state.to_string(),
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![("sg".to_string(), "share".to_string(), "Stable".to_string())]
    );

    let mut describe = ShareGroupDescribeRequest::default();
    describe.group_ids = vec![s("sg").into()];
    let d = conn.call(1, &describe).await;
    assert_eq!(d.groups[0].error_code, 0);
    assert_eq!(d.groups[0].group_state.as_str(), "Stable");
    assert_eq!(d.groups[0].assignor_name.as_str(), "simple");
    assert_eq!(d.groups[0].members.len(), 1);

    // Closing the session accepts 3 and puts back 2 and 4 for another member.
    let close = conn.call(1, &acknowledge("m1", -1, id, 3, 3)).await;
    assert_eq!(close.responses[0].partitions[0].error_code, 0);
    assert_eq!(
        conn.call(1, &fetch("m1", 3, id, &[])).await.error_code,
        SHARE_SESSION_NOT_FOUND
    );
    let mut other = server.connect().await;
    assert_eq!(other.call(1, &join("sg", "m2", "tasks")).await.error_code, 0);
    let taken = other.call(1, &fetch("m2", 0, id, &[])).await;
    assert_eq!(acquired(&taken), vec![(2, 2, 3), (4, 4, 2)]);
}
