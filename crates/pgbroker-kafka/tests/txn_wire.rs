//! Transactions over the wire, with raw requests: the coordinator's
//! answers and error codes, KIP-890's partition check, RequireStable,
//! read_committed Fetch and ListOffsets, the admin listing and
//! DescribeProducers, keyless records refused on compacted topics, and a
//! delayed EndTxn that must not decide a later transaction.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::describe_producers_response::PartitionResponse;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, DescribeProducersRequest, DescribeTransactionsRequest,
    EndTxnRequest, FetchRequest, FindCoordinatorRequest, GroupId, InitProducerIdRequest, ListOffsetsRequest,
    ListTransactionsRequest, OffsetFetchRequest, ProduceRequest, ProducerId, TopicName as WireTopic, TransactionalId,
    TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use pgbroker::streams::{Cleanup, CleanupPolicy};
use pgbroker::TopicConfig;
use pgbroker_testkit::kafka::{Conn, TestServer};

#[global_allocator]
static ALLOC: pgbroker_kafka::GuardedAlloc = pgbroker_kafka::GuardedAlloc;

const INVALID_TXN_STATE: i16 = 48;
const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
const PRODUCER_FENCED: i16 = 90;
const UNSTABLE_OFFSET_COMMIT: i16 = 88;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_RECORD: i16 = 87;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn batch(pid: i64, epoch: i16, seq: i32, value: &str) -> Bytes {
    encoded(true, pid, epoch, seq, value)
}

/// One keyless record in a batch, transactional or only idempotent.
fn encoded(transactional: bool, pid: i64, epoch: i16, seq: i32, value: &str) -> Bytes {
    let r = Record {
        transactional,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: pid,
        producer_epoch: epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: seq,
        timestamp: 1_700_000_000_000,
        key: None,
        value: Some(Bytes::from(value.to_string())),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, [&r], &options).expect("encode");
    buf.freeze()
}

async fn produce(conn: &mut Conn, txn: &str, topic: &str, partition: i32, records: Bytes) -> i16 {
    produce_as(conn, Some(txn), topic, partition, records).await
}

async fn produce_as(conn: &mut Conn, txn: Option<&str>, topic: &str, partition: i32, records: Bytes) -> i16 {
    let mut p = PartitionProduceData::default();
    p.index = partition;
    p.records = Some(records);
    let mut t = TopicProduceData::default();
    t.name = WireTopic(s(topic));
    t.partition_data = vec![p];
    let mut req = ProduceRequest::default();
    req.transactional_id = txn.map(|t| TransactionalId(s(t)));
    req.acks = -1;
    req.timeout_ms = 5000;
    req.topic_data = vec![t];
    conn.call(9, &req).await.responses[0].partition_responses[0].error_code
}

async fn init(conn: &mut Conn, txn: &str, timeout_ms: i32) -> (i16, i64, i16) {
    init_as(conn, Some(txn), timeout_ms).await
}

async fn init_as(conn: &mut Conn, txn: Option<&str>, timeout_ms: i32) -> (i16, i64, i16) {
    let mut req = InitProducerIdRequest::default();
    req.transactional_id = txn.map(|t| TransactionalId(s(t)));
    req.transaction_timeout_ms = timeout_ms;
    req.producer_id = ProducerId(-1);
    req.producer_epoch = -1;
    let r = conn.call(4, &req).await;
    (r.error_code, r.producer_id.0, r.producer_epoch)
}

async fn add(conn: &mut Conn, txn: &str, pid: i64, epoch: i16, topic: &str, partitions: Vec<i32>) -> i16 {
    let mut t = AddPartitionsToTxnTopic::default();
    t.name = WireTopic(s(topic));
    t.partitions = partitions;
    let mut req = AddPartitionsToTxnRequest::default();
    req.v3_and_below_transactional_id = TransactionalId(s(txn));
    req.v3_and_below_producer_id = ProducerId(pid);
    req.v3_and_below_producer_epoch = epoch;
    req.v3_and_below_topics = vec![t];
    let r = conn.call(0, &req).await;
    r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}

async fn end(conn: &mut Conn, txn: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
    let mut req = EndTxnRequest::default();
    req.transactional_id = TransactionalId(s(txn));
    req.producer_id = ProducerId(pid);
    req.producer_epoch = epoch;
    req.committed = commit;
    conn.call(1, &req).await.error_code
}

async fn latest(conn: &mut Conn, topic: &str, isolation: i8) -> i64 {
    let mut p = ListOffsetsPartition::default();
    p.partition_index = 0;
    p.timestamp = -1;
    let mut t = ListOffsetsTopic::default();
    t.name = WireTopic(s(topic));
    t.partitions = vec![p];
    let mut req = ListOffsetsRequest::default();
    req.isolation_level = isolation;
    req.topics = vec![t];
    conn.call(5, &req).await.topics[0].partitions[0].offset
}

#[tokio::test]
async fn transactions_over_the_wire() {
    let server = TestServer::start().await;
    server
        .topic(
            "out",
            TopicConfig {
                partitions: 2,
                ..TopicConfig::default()
            },
        )
        .await;
    let mut a = server.connect().await;

    let mut fc = FindCoordinatorRequest::default();
    fc.key = s("tx");
    fc.key_type = 1;
    assert_eq!(a.call(3, &fc).await.error_code, 0, "transaction coordinator found");

    assert_eq!(init(&mut a, "tx", 900_001).await.0, INVALID_TRANSACTION_TIMEOUT);
    let (err, pid, epoch) = init(&mut a, "tx", 60_000).await;
    assert_eq!((err, epoch), (0, 0));

    // KIP-890: a transactional write to a partition not added is refused.
    assert_eq!(
        produce(&mut a, "tx", "out", 0, batch(pid, epoch, 0, "early")).await,
        INVALID_TXN_STATE
    );
    assert_eq!(add(&mut a, "tx", pid, epoch, "out", vec![0]).await, 0);
    assert_eq!(
        produce(&mut a, "tx", "out", 1, batch(pid, epoch, 0, "stray")).await,
        INVALID_TXN_STATE
    );
    assert_eq!(produce(&mut a, "tx", "out", 0, batch(pid, epoch, 0, "one")).await, 0);

    // Offsets inside the transaction: pending, so RequireStable is told so.
    let mut ao = AddOffsetsToTxnRequest::default();
    ao.transactional_id = TransactionalId(s("tx"));
    ao.producer_id = ProducerId(pid);
    ao.producer_epoch = epoch;
    ao.group_id = GroupId(s("g"));
    assert_eq!(a.call(0, &ao).await.error_code, 0);
    let mut op = TxnOffsetCommitRequestPartition::default();
    op.partition_index = 0;
    op.committed_offset = 5;
    let mut ot = TxnOffsetCommitRequestTopic::default();
    ot.name = WireTopic(s("out"));
    ot.partitions = vec![op];
    let mut toc = TxnOffsetCommitRequest::default();
    toc.transactional_id = TransactionalId(s("tx"));
    toc.group_id = GroupId(s("g"));
    toc.producer_id = ProducerId(pid);
    toc.producer_epoch = epoch;
    toc.generation_id = -1;
    toc.topics = vec![ot];
    assert_eq!(a.call(3, &toc).await.topics[0].partitions[0].error_code, 0);
    let mut oft = OffsetFetchRequestTopic::default();
    oft.name = WireTopic(s("out"));
    oft.partition_indexes = vec![0];
    let mut of = OffsetFetchRequest::default();
    of.group_id = GroupId(s("g"));
    of.topics = Some(vec![oft]);
    of.require_stable = true;
    let p = &a.call(7, &of).await.topics[0].partitions[0];
    assert_eq!((p.error_code, p.committed_offset), (UNSTABLE_OFFSET_COMMIT, -1));

    // The open transaction pins the stable offset.
    assert_eq!(latest(&mut a, "out", 1).await, 0);
    assert_eq!(latest(&mut a, "out", 0).await, 1);
    let mut lt = ListTransactionsRequest::default();
    lt.state_filters = vec![s("Ongoing")];
    lt.duration_filter = -1;
    let listed = a.call(1, &lt).await;
    assert_eq!(listed.transaction_states.len(), 1);
    assert_eq!(listed.transaction_states[0].producer_id.0, pid);
    let mut dt = DescribeTransactionsRequest::default();
    dt.transactional_ids = vec![TransactionalId(s("tx")), TransactionalId(s("nobody"))];
    let described = a.call(0, &dt).await;
    assert_eq!(described.transaction_states[0].topics[0].partitions, vec![0]);
    assert_eq!(described.transaction_states[1].error_code, 105);

    // The client gives up on connection a and commits on b, then starts
    // the next transaction there.
    let mut b = server.connect().await;
    assert_eq!(end(&mut b, "tx", pid, epoch, true).await, 0);
    assert_eq!(latest(&mut b, "out", 1).await, 2, "record and marker");
    assert_eq!(add(&mut b, "tx", pid, epoch, "out", vec![0]).await, 0);
    assert_eq!(produce(&mut b, "tx", "out", 0, batch(pid, epoch, 1, "two")).await, 0);
    // The request left on connection a arrives late: it must not commit
    // the second transaction.
    assert_eq!(end(&mut a, "tx", pid, epoch, true).await, INVALID_TXN_STATE);
    assert_eq!(latest(&mut b, "out", 1).await, 2, "still open");
    assert_eq!(end(&mut b, "tx", pid, epoch, false).await, 0);

    // read_committed Fetch: the aborted transaction is listed; a
    // read_uncommitted one is told of none.
    for (isolation, listed) in [(1i8, 1usize), (0, 0)] {
        let mut fp = FetchPartition::default();
        fp.partition = 0;
        fp.partition_max_bytes = 1 << 20;
        let mut ft = FetchTopic::default();
        ft.topic = WireTopic(s("out"));
        ft.partitions = vec![fp];
        let mut f = FetchRequest::default();
        f.max_bytes = 1 << 20;
        f.isolation_level = isolation;
        f.topics = vec![ft];
        let r = a.call(12, &f).await;
        let p = &r.responses[0].partitions[0];
        assert_eq!((p.high_watermark, p.last_stable_offset), (4, 4));
        assert_eq!(p.aborted_transactions.as_ref().map_or(0, Vec::len), listed);
        if isolation == 1 {
            let at = &p.aborted_transactions.as_ref().expect("list")[0];
            assert_eq!((at.producer_id.0, at.first_offset), (pid, 2));
        }
    }

    // A new instance fences the old one.
    let (_, pid2, epoch2) = init(&mut b, "tx", 60_000).await;
    assert_eq!((pid2, epoch2), (pid, epoch + 1));
    assert_eq!(add(&mut a, "tx", pid, epoch, "out", vec![0]).await, PRODUCER_FENCED);
    assert_eq!(end(&mut a, "tx", pid, epoch, false).await, PRODUCER_FENCED);
    server.stop().await;
}

async fn describe_producers(conn: &mut Conn, topic: &str, partitions: Vec<i32>) -> Vec<PartitionResponse> {
    let mut t = TopicRequest::default();
    t.name = WireTopic(s(topic));
    t.partition_indexes = partitions;
    let mut req = DescribeProducersRequest::default();
    req.topics = vec![t];
    conn.call(0, &req).await.topics.remove(0).partitions
}

/// DescribeProducers shows an idempotent producer's last sequence, a
/// transactional producer's open transaction until it ends, and refuses
/// unknown partitions.
#[tokio::test]
async fn describe_producers_shows_sequences_and_open_transactions() {
    let server = TestServer::start().await;
    server.topic("p", TopicConfig::default()).await;
    let mut a = server.connect().await;

    let (err, idem, idem_epoch) = init_as(&mut a, None, 60_000).await;
    assert_eq!(err, 0);
    for seq in 0..3 {
        let b = encoded(false, idem, idem_epoch, seq, "plain");
        assert_eq!(produce_as(&mut a, None, "p", 0, b).await, 0);
    }
    let (err, txp, epoch) = init(&mut a, "dp", 60_000).await;
    assert_eq!(err, 0);
    assert_eq!(add(&mut a, "dp", txp, epoch, "p", vec![0]).await, 0);
    assert_eq!(produce(&mut a, "dp", "p", 0, batch(txp, epoch, 0, "open")).await, 0);

    let parts = describe_producers(&mut a, "p", vec![0, 7]).await;
    assert_eq!(parts[0].error_code, 0);
    let by_id = |id: i64| {
        parts[0]
            .active_producers
            .iter()
            .find(|p| p.producer_id.0 == id)
            .unwrap_or_else(|| panic!("producer {id} listed"))
            .clone()
    };
    let plain = by_id(idem);
    assert_eq!((plain.last_sequence, plain.current_txn_start_offset), (2, -1));
    assert!(plain.last_timestamp > 1_700_000_000_000, "{}", plain.last_timestamp);
    let open = by_id(txp);
    assert_eq!((open.producer_epoch, open.last_sequence), (i32::from(epoch), 0));
    assert_eq!(
        open.current_txn_start_offset, 3,
        "the open transaction began at offset 3"
    );
    assert_eq!(parts[1].error_code, UNKNOWN_TOPIC_OR_PARTITION);

    assert_eq!(end(&mut a, "dp", txp, epoch, true).await, 0);
    let parts = describe_producers(&mut a, "p", vec![0]).await;
    let after = parts[0]
        .active_producers
        .iter()
        .find(|p| p.producer_id.0 == txp)
        .expect("still listed after commit");
    assert_eq!(
        after.current_txn_start_offset, -1,
        "no transaction open after the commit"
    );
    let unknown = describe_producers(&mut a, "missing", vec![0]).await;
    assert_eq!(unknown[0].error_code, UNKNOWN_TOPIC_OR_PARTITION);
}

/// A compacted topic refuses keyless records from idempotent and
/// transactional producers alike, and nothing is written.
#[tokio::test]
async fn keyless_records_refused_on_compacted_topics_by_every_producer() {
    let server = TestServer::start().await;
    let compacted = TopicConfig {
        cleanup: Cleanup {
            policy: CleanupPolicy::Compact,
            ..Cleanup::default()
        },
        ..TopicConfig::default()
    };
    server.topic("c", compacted).await;
    let mut a = server.connect().await;

    let (_, idem, idem_epoch) = init_as(&mut a, None, 60_000).await;
    let b = encoded(false, idem, idem_epoch, 0, "no key");
    assert_eq!(produce_as(&mut a, None, "c", 0, b).await, INVALID_RECORD);

    let (_, txp, epoch) = init(&mut a, "kc", 60_000).await;
    assert_eq!(add(&mut a, "kc", txp, epoch, "c", vec![0]).await, 0);
    assert_eq!(
        produce(&mut a, "kc", "c", 0, batch(txp, epoch, 0, "no key")).await,
        INVALID_RECORD
    );
    assert_eq!(end(&mut a, "kc", txp, epoch, true).await, 0);
    // The transaction wrote nothing, so it needs no marker either.
    assert_eq!(latest(&mut a, "c", 0).await, 0, "nothing was written");
}
