//! Transaction markers on compacted topics: kept until the tombstone
//! horizon, then dropped with their aborted ranges, unless a record of the
//! aborted transaction is still there.

use pgbroker::streams::{Cleanup, CleanupPolicy, FetchResult, Isolation, ProducerBatch};
use pgbroker::{Broker, Record, TopicConfig, TopicName};
use pgbroker_testkit::db::{partitions, read_partition, TestDb};

fn batch(pid: i64, epoch: i16, seq: i32) -> ProducerBatch {
    ProducerBatch {
        producer_id: pid,
        epoch,
        base_sequence: seq,
    }
}

fn record(key: Option<&str>, value: &str) -> Record {
    Record {
        key: key.map(|k| k.as_bytes().to_vec().into()),
        value: Some(value.as_bytes().to_vec().into()),
        headers: vec![],
        timestamp: None,
    }
}

fn compacted(policy: CleanupPolicy) -> TopicConfig {
    TopicConfig {
        segment_records: 10,
        cleanup: Cleanup {
            policy,
            delete_retention_ms: 0,
            ..Cleanup::default()
        },
        ..partitions(1)
    }
}

async fn read(b: &Broker, t: &TopicName, isolation: Isolation) -> FetchResult {
    read_partition(b, t, 0, 0, isolation).await
}

fn data(r: &FetchResult) -> Vec<String> {
    r.records
        .iter()
        .filter(|x| !r.producers.iter().any(|p| p.offset == x.offset && p.control))
        .map(|x| String::from_utf8_lossy(x.value.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

fn markers_below(r: &FetchResult, end: i64) -> usize {
    r.producers.iter().filter(|p| p.control && p.offset < end).count()
}

async fn aborted_ranges(db: &TestDb) -> i64 {
    let row = db
        .raw()
        .await
        .query_one(&format!("SELECT count(*) FROM {}.kafka_aborted_txns", db.schema), &[])
        .await
        .expect("count");
    row.get(0)
}

/// One transaction of `records` on partition 0, committed or aborted.
async fn transaction(db: &TestDb, t: &TopicName, (pid, epoch): (i64, i16), seq: i32, records: &[Record], commit: bool) {
    let txn = db.broker.transactions();
    txn.add_partitions("app", pid, epoch, &[(t.clone(), 0)])
        .await
        .expect("add");
    txn.produce("app", t, 0, records, batch(pid, epoch, seq))
        .await
        .expect("produce");
    txn.end("app", pid, epoch, commit, None).await.expect("end");
}

#[tokio::test]
async fn markers_go_after_the_horizon_with_their_aborted_ranges() {
    let db = TestDb::new().await;
    let t = db.topic("state", compacted(CleanupPolicy::Compact)).await;
    let producer = db
        .broker
        .transactions()
        .init_producer("app", 60_000, None)
        .await
        .expect("init");
    // k=v1 committed (offset 0, marker 1); k=bad aborted (2, marker 3).
    transaction(&db, &t, producer, 0, &[record(Some("k"), "v1")], true).await;
    transaction(&db, &t, producer, 1, &[record(Some("k"), "bad")], false).await;
    let plain: Vec<Record> = (0..21)
        .map(|i| record(Some(&format!("p{}", i % 4)), &format!("x{i}")))
        .collect();
    db.broker.streams().produce(&t, Some(0), &plain).await.expect("plain");

    // The first pass removes the aborted record and keeps both markers:
    // their horizon counts from this first cleaning.
    db.broker.maintenance().compact(true).await.expect("compact");
    let raw = read(&db.broker, &t, Isolation::ReadUncommitted).await;
    assert_eq!(markers_below(&raw, 10), 2, "{:?}", raw.producers);
    assert!(!data(&raw).contains(&"bad".to_string()));
    assert_eq!(aborted_ranges(&db).await, 1);
    let rc = read(&db.broker, &t, Isolation::ReadCommitted).await;
    assert_eq!(rc.aborted.len(), 1, "the range is still told: {:?}", rc.aborted);

    // Past the horizon (0 ms) both go, and the range with the abort marker.
    db.broker.maintenance().compact(true).await.expect("compact");
    let raw = read(&db.broker, &t, Isolation::ReadUncommitted).await;
    assert_eq!(markers_below(&raw, 20), 0, "{:?}", raw.producers);
    assert_eq!(aborted_ranges(&db).await, 0);
    let rc = read(&db.broker, &t, Isolation::ReadCommitted).await;
    assert!(rc.aborted.is_empty(), "{:?}", rc.aborted);
    assert!(data(&rc).contains(&"v1".to_string()), "{:?}", data(&rc));

    // The same producer's later transactions read as before.
    transaction(&db, &t, producer, 2, &[record(Some("k"), "v2")], true).await;
    transaction(&db, &t, producer, 3, &[record(Some("k"), "bad2")], false).await;
    let rc = read(&db.broker, &t, Isolation::ReadCommitted).await;
    let seen = data(&rc);
    assert!(seen.contains(&"v2".to_string()), "{seen:?}");
    assert_eq!(rc.aborted.len(), 1, "only the new range: {:?}", rc.aborted);
    assert!(rc.aborted[0].first_offset >= 25, "{:?}", rc.aborted);
}

#[tokio::test]
async fn an_abort_marker_stays_while_its_keyless_record_does() {
    let db = TestDb::new().await;
    // Keyless records exist only from before a topic became compacted.
    let t = db.topic("state", compacted(CleanupPolicy::Delete)).await;
    let producer = db
        .broker
        .transactions()
        .init_producer("app", 60_000, None)
        .await
        .expect("init");
    // An aborted keyless record (offset 0, marker 1), a committed keyed one
    // (2, marker 3).
    transaction(&db, &t, producer, 0, &[record(None, "orphan")], false).await;
    transaction(&db, &t, producer, 1, &[record(Some("k"), "v1")], true).await;
    let plain: Vec<Record> = (0..21)
        .map(|i| record(Some(&format!("p{}", i % 4)), &format!("x{i}")))
        .collect();
    db.broker.streams().produce(&t, Some(0), &plain).await.expect("plain");
    db.broker
        .topics()
        .alter(&t, &compacted(CleanupPolicy::Compact))
        .await
        .expect("alter");

    for _ in 0..2 {
        db.broker.maintenance().compact(true).await.expect("compact");
    }
    let raw = read(&db.broker, &t, Isolation::ReadUncommitted).await;
    let kept: Vec<i64> = raw.producers.iter().filter(|p| p.control).map(|p| p.offset).collect();
    assert_eq!(kept, [1], "the abort marker stays, the commit marker goes");
    assert!(
        data(&raw).contains(&"orphan".to_string()),
        "a record without a key is kept"
    );
    assert_eq!(aborted_ranges(&db).await, 1);
    let rc = read(&db.broker, &t, Isolation::ReadCommitted).await;
    assert_eq!(rc.aborted.len(), 1, "{:?}", rc.aborted);
    assert!(data(&rc).contains(&"v1".to_string()));
}
