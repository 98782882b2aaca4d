//! The Kafka listener against raw requests: what a well-behaved client
//! sends, and what a broken or hostile one sends.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, FetchRequest, InitProducerIdRequest, MetadataRequest, ProduceRequest,
    TopicName as WireTopic,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use pgbroker::{Header, Record, StoredRecord, TopicConfig};
use pgbroker_kafka::{decode_batches, encode_batch, BatchLimits, KafkaConfig};
use pgbroker_testkit::kafka::{bare_error, battery, Conn, TestServer};

#[global_allocator]
static ALLOC: pgbroker_kafka::GuardedAlloc = pgbroker_kafka::GuardedAlloc;

const LIMITS: BatchLimits = BatchLimits {
    max_decompressed: 64 << 20,
    max_records: 1_000_000,
};

fn wire_topic(name: &str) -> WireTopic {
    StrBytes::from_string(name.to_string()).into()
}

fn batch(values: &[&str]) -> Vec<u8> {
    let records: Vec<StoredRecord> = values
        .iter()
        .enumerate()
        .map(|(i, v)| StoredRecord {
            partition: 0,
            offset: i64::try_from(i).expect("small"),
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000),
            key: Some(format!("k{i}").into_bytes().into()),
            value: Some(v.as_bytes().to_vec().into()),
            headers: vec![Header {
                key: "trace".into(),
                value: Some(b"abc".to_vec()),
            }],
        })
        .collect();
    let mut buf = Vec::new();
    encode_batch(&mut buf, &records);
    buf
}

/// Sets a batch's producer fields and fixes its CRC.
fn with_producer(mut b: Vec<u8>, producer_id: i64, epoch: i16, base_sequence: i32) -> Vec<u8> {
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn produce_req(topic: &str, partition: i32, records: Vec<u8>) -> ProduceRequest {
    let mut p = PartitionProduceData::default();
    p.index = partition;
    p.records = Some(Bytes::from(records));
    let mut t = TopicProduceData::default();
    t.name = wire_topic(topic);
    t.partition_data = vec![p];
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 5000;
    req.topic_data = vec![t];
    req
}

/// Produces and returns (error code, base offset) of the one partition.
async fn produce(conn: &mut Conn, topic: &str, partition: i32, records: Vec<u8>) -> (i16, i64) {
    let resp = conn.call(9, &produce_req(topic, partition, records)).await;
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn fetch_req(topic: &str, partition: i32, offset: i64, max_wait_ms: i32) -> FetchRequest {
    let mut p = FetchPartition::default();
    p.partition = partition;
    p.fetch_offset = offset;
    p.partition_max_bytes = 1 << 20;
    let mut t = FetchTopic::default();
    t.topic = wire_topic(topic);
    t.partitions = vec![p];
    let mut req = FetchRequest::default();
    req.max_wait_ms = max_wait_ms;
    req.min_bytes = 1;
    req.max_bytes = 4 << 20;
    req.topics = vec![t];
    req
}

#[tokio::test]
async fn api_versions_lists_exactly_the_served_apis() {
    let server = TestServer::start().await;
    let mut conn = server.connect().await;
    let resp = conn.call(3, &ApiVersionsRequest::default()).await;
    let listed: Vec<(i16, i16, i16)> = resp
        .api_keys
        .iter()
        .map(|k| (k.api_key, k.min_version, k.max_version))
        .collect();
    let served: Vec<(i16, i16, i16)> = pgbroker_kafka::APIS
        .iter()
        .map(|a| (a.key as i16, a.min_version, a.max_version))
        .collect();
    assert_eq!(listed, served);
}

#[tokio::test]
async fn api_versions_unknown_apis_and_versions_are_answered() {
    let server = TestServer::start().await;
    let mut conn = server.connect().await;
    let resp = conn.call(3, &ApiVersionsRequest::default()).await;
    assert_eq!(resp.error_code, 0);
    assert!(
        resp.api_keys.iter().any(|k| k.api_key == 0 && k.max_version >= 7),
        "Produce listed"
    );
    assert!(resp.api_keys.iter().any(|k| k.api_key == 11), "JoinGroup listed");

    // ApiVersions at a version the server does not know: a v0 answer with
    // UNSUPPORTED_VERSION and the list, so the client can retry.
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes());
    body.extend_from_slice(&99i16.to_be_bytes());
    body.extend_from_slice(&77i32.to_be_bytes());
    body.extend_from_slice(&(-1i16).to_be_bytes());
    conn.send_raw_frame(&body).await;
    let mut frame = conn.read_frame().await.expect("answered");
    assert_eq!(bytes::Buf::get_i32(&mut frame), 77);
    let v0 = ApiVersionsResponse::decode(&mut frame, 0).expect("v0 body");
    assert_eq!(v0.error_code, 35);
    assert!(!v0.api_keys.is_empty());

    // An API key nobody knows, and a known API at an unsupported version.
    for (name, bytes, id) in battery::unsupported_requests() {
        conn.send_bytes(&bytes).await;
        let answer = conn.read_frame().await.expect("answered");
        assert_eq!(bare_error(answer), (id, 35), "{name}");
    }
    // The connection still works.
    assert_eq!(conn.call(3, &ApiVersionsRequest::default()).await.error_code, 0);
    server.stop().await;
}

#[tokio::test]
async fn bad_frames_close_only_their_own_connection() {
    let server = TestServer::start().await;
    let topic = server.topic("safe", TopicConfig::default()).await;
    let mut keep = server.connect().await;
    assert_eq!(produce(&mut keep, "safe", 0, batch(&["before"])).await, (0, 0));

    // A frame announcing 2 GiB, a negative length, garbage, a header cut
    // short, a topic name that is not UTF-8, a body that does not decode.
    for (name, bytes) in battery::closing_inputs() {
        let mut bad = server.connect().await;
        bad.send_bytes(&bytes).await;
        assert!(bad.closed_by_server().await, "closed after {name}");
    }
    // A body that never arrives.
    let mut truncated = server.connect().await;
    truncated.send_bytes(&100i32.to_be_bytes()).await;
    truncated.send_bytes(&[0, 18, 0, 3]).await;
    drop(truncated);

    // Everyone else is still served, and nothing written was touched.
    assert_eq!(keep.call(3, &ApiVersionsRequest::default()).await.error_code, 0);
    let mut fresh = server.connect().await;
    assert_eq!(fresh.call(3, &ApiVersionsRequest::default()).await.error_code, 0);
    assert_eq!(server.broker.streams().watermarks(&topic, 0).await.expect("hw"), (0, 1));
    server.stop().await;
}

/// An ApiVersions v0 request: key 18, version 0, correlation id 9, no client id.
const API_VERSIONS_V0: [u8; 10] = [0, 18, 0, 0, 0, 0, 0, 9, 0xff, 0xff];

#[tokio::test]
async fn connections_past_the_limit_are_closed_and_the_rest_served() {
    let config = KafkaConfig {
        max_connections: 2,
        ..KafkaConfig::default()
    };
    let server = TestServer::start_with(config).await;
    let mut first = server.connect().await;
    let mut second = server.connect().await;
    assert_eq!(first.call(3, &ApiVersionsRequest::default()).await.error_code, 0);
    assert_eq!(second.call(3, &ApiVersionsRequest::default()).await.error_code, 0);

    // A third is closed on arrival, however many times it tries.
    for _ in 0..3 {
        let mut over = server.connect().await;
        over.send_raw_frame(&API_VERSIONS_V0).await;
        assert!(over.closed_by_server().await, "a connection past the limit is closed");
    }
    // The two admitted are unaffected.
    assert_eq!(first.call(3, &ApiVersionsRequest::default()).await.error_code, 0);

    // Once one leaves, a newcomer is served.
    drop(second);
    let mut admitted = false;
    let until = Instant::now() + Duration::from_secs(10);
    while !admitted && Instant::now() < until {
        let mut next = server.connect().await;
        next.send_raw_frame(&API_VERSIONS_V0).await;
        admitted = next.read_frame().await.is_some();
        if !admitted {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(admitted, "a slot freed by a closed connection is given to a new one");
    server.stop().await;
}

#[tokio::test]
async fn absurd_array_counts_do_not_take_the_server_down() {
    let server = TestServer::start().await;
    for (name, bytes) in battery::absurd_array_counts() {
        let mut bad = server.connect().await;
        bad.send_bytes(&bytes).await;
        assert!(bad.closed_by_server().await, "{name} closes its connection");
    }
    let mut fresh = server.connect().await;
    assert_eq!(fresh.call(3, &ApiVersionsRequest::default()).await.error_code, 0);
    server.stop().await;
}

#[tokio::test]
async fn the_whole_battery_leaves_the_server_serving() {
    let server = TestServer::start().await;
    let topic = server.topic("battered", TopicConfig::default()).await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || battery::fire(addr, "battered", 32))
        .await
        .expect("battery");
    assert_eq!(server.broker.streams().watermarks(&topic, 0).await.expect("hw"), (0, 1));
    server.stop().await;
}

#[tokio::test]
async fn refused_produce_requests_write_nothing() {
    let server = TestServer::start().await;
    let config = TopicConfig {
        partitions: 2,
        max_message_bytes: 1024,
        ..TopicConfig::default()
    };
    let topic = server.topic("guarded", config).await;
    let mut conn = server.connect().await;

    assert_eq!(produce(&mut conn, "nope", 0, batch(&["x"])).await.0, 3, "unknown topic");
    assert_eq!(
        produce(&mut conn, "guarded", 2, batch(&["x"])).await.0,
        3,
        "partition out of range"
    );
    assert_eq!(
        produce(&mut conn, "bad name!", 0, batch(&["x"])).await.0,
        17,
        "invalid topic name"
    );

    let mut bad_crc = batch(&["x"]);
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0x55;
    assert_eq!(
        produce(&mut conn, "guarded", 0, bad_crc).await.0,
        2,
        "bad CRC is CORRUPT_MESSAGE"
    );

    let mut old_magic = batch(&["x"]);
    old_magic[16] = 1;
    assert_eq!(produce(&mut conn, "guarded", 0, old_magic).await.0, 43);

    let big = "v".repeat(2000);
    assert_eq!(
        produce(&mut conn, "guarded", 0, batch(&[&big])).await.0,
        10,
        "MESSAGE_TOO_LARGE"
    );

    // Bombs of every codec: small on the wire, past the limit inflated.
    for (name, bomb) in battery::bombs() {
        assert_eq!(
            produce(&mut conn, "guarded", 0, bomb).await.0,
            18,
            "{name}: RECORD_LIST_TOO_LARGE"
        );
    }

    assert_eq!(server.broker.streams().watermarks(&topic, 0).await.expect("hw"), (0, 0));
    assert_eq!(server.broker.streams().watermarks(&topic, 1).await.expect("hw"), (0, 0));
    assert_eq!(produce(&mut conn, "guarded", 1, batch(&["ok"])).await, (0, 0));
    server.stop().await;
}

#[tokio::test]
async fn records_cross_between_the_library_and_the_wire_intact() {
    let server = TestServer::start().await;
    let topic = server.topic("both", TopicConfig::default()).await;
    let sent_at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_650_000_000_123);
    let lib = Record {
        key: Some(b"lib-key".to_vec().into()),
        value: Some(b"from the library".to_vec().into()),
        headers: vec![
            Header {
                key: "h".into(),
                value: Some(b"1".to_vec()),
            },
            Header {
                key: "h".into(),
                value: None,
            },
        ],
        timestamp: Some(sent_at),
    };
    server
        .broker
        .streams()
        .produce(&topic, Some(0), std::slice::from_ref(&lib))
        .await
        .expect("produce");
    let mut conn = server.connect().await;
    assert_eq!(produce(&mut conn, "both", 0, batch(&["from the wire"])).await, (0, 1));

    let resp = conn.call(11, &fetch_req("both", 0, 0, 0)).await;
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(p.high_watermark, 2);
    let mut raw = p.records.clone().expect("records");
    let batches = decode_batches(&raw.split_off(0), LIMITS).expect("decodes");
    let got: Vec<Record> = batches.into_iter().flat_map(|b| b.records).collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], lib, "key, value, repeated headers and timestamp survive");

    let read = server
        .broker
        .streams()
        .fetch(&topic, 0, 1, Default::default())
        .await
        .expect("fetch");
    let r = &read.records[0];
    assert_eq!(r.value.as_deref(), Some(&b"from the wire"[..]));
    assert_eq!(r.key.as_deref(), Some(&b"k0"[..]));
    assert_eq!(r.headers[0].key, "trace");
    assert_eq!(pgbroker::streams::timestamp_ms(r), 1_700_000_000_000);
    server.stop().await;
}

#[tokio::test]
async fn idempotent_producers_get_duplicates_answered_and_gaps_refused() {
    let grace = Duration::from_millis(400);
    let server = TestServer::start_with(KafkaConfig {
        sequence_gap_grace: grace,
        ..KafkaConfig::default()
    })
    .await;
    let topic = server.topic("idem", TopicConfig::default()).await;
    let mut conn = server.connect().await;
    let init = conn.call(4, &InitProducerIdRequest::default()).await;
    assert_eq!(init.error_code, 0);
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
    assert!(pid >= 0);

    let first = with_producer(batch(&["a", "b", "c"]), pid, epoch, 0);
    assert_eq!(produce(&mut conn, "idem", 0, first.clone()).await, (0, 0));
    // The same batch again (a retry): answered with its first offset, not written twice.
    assert_eq!(produce(&mut conn, "idem", 0, first).await, (0, 0));
    assert_eq!(server.broker.streams().watermarks(&topic, 0).await.expect("hw").1, 3);
    // A batch that skips sequence numbers: retriable (NOT_ENOUGH_REPLICAS)
    // while the batches before it may still come, then
    // OUT_OF_ORDER_SEQUENCE_NUMBER; never written.
    let gap = with_producer(batch(&["x"]), pid, epoch, 5);
    let started = Instant::now();
    assert_eq!(produce(&mut conn, "idem", 0, gap.clone()).await.0, 19);
    assert_eq!(produce(&mut conn, "idem", 0, gap.clone()).await.0, 19);
    tokio::time::sleep(grace.saturating_sub(started.elapsed()) + Duration::from_millis(50)).await;
    assert_eq!(produce(&mut conn, "idem", 0, gap).await.0, 45);
    assert_eq!(server.broker.streams().watermarks(&topic, 0).await.expect("hw").1, 3);
    // The batch behind a gap, sent again after the missing one arrived,
    // is written in its turn.
    let later = with_producer(batch(&["e2"]), pid, epoch, 4);
    assert_eq!(produce(&mut conn, "idem", 0, later.clone()).await.0, 19);
    let next = with_producer(batch(&["d"]), pid, epoch, 3);
    assert_eq!(produce(&mut conn, "idem", 0, next).await, (0, 3));
    assert_eq!(produce(&mut conn, "idem", 0, later).await, (0, 4));
    // An older epoch is fenced.
    let bumped = with_producer(batch(&["e"]), pid, epoch + 1, 0);
    assert_eq!(produce(&mut conn, "idem", 0, bumped).await, (0, 5));
    let stale = with_producer(batch(&["f"]), pid, epoch, 5);
    assert_eq!(produce(&mut conn, "idem", 0, stale).await.0, 47);
    assert_eq!(server.broker.streams().watermarks(&topic, 0).await.expect("hw").1, 6);
    server.stop().await;
}

#[tokio::test]
async fn a_waiting_fetch_wakes_when_records_arrive() {
    let server = TestServer::start().await;
    let topic = server.topic("wake", TopicConfig::default()).await;
    let mut conn = server.connect().await;
    let broker = server.broker.clone();
    let producer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        broker
            .streams()
            .produce(&topic, Some(0), &[Record::from_value("late")])
            .await
            .expect("produce");
    });
    let started = Instant::now();
    let resp = conn.call(11, &fetch_req("wake", 0, 0, 10_000)).await;
    let waited = started.elapsed();
    producer.await.expect("producer");
    let p = &resp.responses[0].partitions[0];
    assert!(p.records.as_ref().is_some_and(|r| !r.is_empty()), "records returned");
    assert!(waited >= Duration::from_millis(250), "it did wait: {waited:?}");
    assert!(
        waited < Duration::from_secs(5),
        "woken by the produce, not the timeout: {waited:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn every_server_on_a_schema_is_listed_in_metadata() {
    let first = TestServer::start().await;
    let second = first.another(Default::default()).await;
    let eight = TopicConfig {
        partitions: 8,
        ..TopicConfig::default()
    };
    first.topic("shared", eight).await;
    let mut conn = second.connect().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut all = MetadataRequest::default();
        all.topics = None;
        let resp = conn.call(9, &all).await;
        let ports: Vec<i32> = resp.brokers.iter().map(|b| b.port).collect();
        if ports.contains(&i32::from(first.addr.port())) && ports.contains(&i32::from(second.addr.port())) {
            let t = resp
                .topics
                .iter()
                .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "shared"));
            let t = t.expect("topic listed");
            assert_eq!(t.partitions.len(), 8);
            let ids: Vec<i32> = resp.brokers.iter().map(|b| b.node_id.0).collect();
            assert!(t.partitions.iter().all(|p| ids.contains(&p.leader_id.0)));
            break;
        }
        assert!(Instant::now() < deadline, "both brokers listed: {ports:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Produce through one, fetch through the other.
    let mut a = first.connect().await;
    assert_eq!(produce(&mut a, "shared", 3, batch(&["one"])).await, (0, 0));
    let resp = conn.call(11, &fetch_req("shared", 3, 0, 0)).await;
    assert!(resp.responses[0].partitions[0]
        .records
        .as_ref()
        .is_some_and(|r| !r.is_empty()));
    second.stop().await;
    first.stop().await;
}
