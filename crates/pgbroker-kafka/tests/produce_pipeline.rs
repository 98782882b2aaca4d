//! Produce requests sent back to back on one connection, as librdkafka
//! sends one request per partition: they run concurrently, yet each
//! partition's requests apply in the order they came, and every answer
//! leaves in the order of the requests.

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    InitProducerIdRequest, MetadataRequest, ProduceRequest, ResponseHeader, TopicName as WireTopic,
};
use kafka_protocol::protocol::{Decodable, HeaderVersion, Request, StrBytes};
use pgbroker::streams::FetchLimits;
use pgbroker::TopicConfig;
use pgbroker_testkit::kafka::{battery, Conn, TestServer};

#[global_allocator]
static ALLOC: pgbroker_kafka::GuardedAlloc = pgbroker_kafka::GuardedAlloc;

/// A one-record batch of producer `producer_id` at `epoch`, sequence
/// `sequence` (CRC fixed).
fn sequenced(value: &str, producer_id: i64, epoch: i16, sequence: i32) -> Vec<u8> {
    let mut b = battery::batch(value.as_bytes());
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&sequence.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn produce_req(topic: &str, partition: i32, records: Vec<u8>, acks: i16) -> ProduceRequest {
    let mut p = PartitionProduceData::default();
    p.index = partition;
    p.records = Some(Bytes::from(records));
    let mut t = TopicProduceData::default();
    t.name = WireTopic(StrBytes::from_string(topic.to_string()));
    t.partition_data = vec![p];
    let mut req = ProduceRequest::default();
    req.acks = acks;
    req.timeout_ms = 5000;
    req.topic_data = vec![t];
    req
}

/// Reads the next answer, to a request `R`, checking its correlation id.
async fn answer<R: Request>(conn: &mut Conn, version: i16, id: i32) -> R::Response {
    let mut body = conn.read_frame().await.expect("an answer");
    let header = ResponseHeader::decode(&mut body, R::Response::header_version(version)).expect("header");
    assert_eq!(header.correlation_id, id, "answers come in the order of the requests");
    R::Response::decode(&mut body, version).expect("body")
}

#[tokio::test]
async fn back_to_back_produce_requests_apply_per_partition_in_order_and_answer_in_order() {
    let server = TestServer::start().await;
    let topic = server
        .topic(
            "pipelined",
            TopicConfig {
                partitions: 4,
                ..TopicConfig::default()
            },
        )
        .await;
    let other = server.topic("fire-and-forget", TopicConfig::default()).await;
    let mut conn = server.connect().await;
    let init = conn.call(4, &InitProducerIdRequest::default()).await;
    assert_eq!(init.error_code, 0);
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);

    // Five rounds over four partitions, nothing read in between: a
    // partition's second request must not run before its first, or its
    // sequence would be refused (OUT_OF_ORDER_SEQUENCE_NUMBER). One acks=0
    // request in the middle has no answer.
    let mut ids = Vec::new();
    for round in 0..5 {
        for partition in 0..4 {
            let records = sequenced(&format!("r{round}p{partition}"), pid, epoch, round);
            let id = conn.send(9, &produce_req("pipelined", partition, records, -1)).await;
            ids.push((id, round, partition));
        }
        if round == 2 {
            conn.send(9, &produce_req("fire-and-forget", 0, battery::batch(b"x"), 0))
                .await;
        }
    }
    // Any other request runs after every Produce before it.
    let mut all = MetadataRequest::default();
    all.topics = None;
    let metadata = conn.send(12, &all).await;

    for (id, round, partition) in ids {
        let resp = answer::<ProduceRequest>(&mut conn, 9, id).await;
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(p.index, partition);
        assert_eq!(
            (p.error_code, p.base_offset),
            (0, i64::from(round)),
            "round {round}, partition {partition}"
        );
    }
    let meta = answer::<MetadataRequest>(&mut conn, 12, metadata).await;
    assert_eq!(meta.topics.len(), 2);
    for partition in 0..4 {
        let (_, high) = server.broker.streams().watermarks(&topic, partition).await.expect("hw");
        assert_eq!(high, 5, "partition {partition}");
        let values: Vec<Vec<u8>> = server
            .broker
            .streams()
            .fetch(&topic, partition, 0, FetchLimits::default())
            .await
            .expect("fetch")
            .records
            .into_iter()
            .filter_map(|r| r.value.map(|v| v.to_vec()))
            .collect();
        let expected: Vec<Vec<u8>> = (0..5).map(|r| format!("r{r}p{partition}").into_bytes()).collect();
        assert_eq!(values, expected, "partition {partition} in request order");
    }
    // The acks=0 request was written before the Metadata answer left.
    assert_eq!(server.broker.streams().watermarks(&other, 0).await.expect("hw").1, 1);
    server.stop().await;
}
