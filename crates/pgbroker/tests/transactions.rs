//! The transaction coordinator's edge cases through the library: fencing,
//! KIP-890's partition check, markers, the last stable offset, aborted
//! ranges, offsets inside a transaction, timeouts and the traps of
//! Kafka's protocol.

use std::time::Duration;

use pgbroker::groups::OffsetCommit;
use pgbroker::streams::{FetchLimits, Isolation, ProducerBatch};
use pgbroker::txn::{TxnRefusal, TxnState};
use pgbroker::{Broker, Error, GroupId, Record, TopicName};
use pgbroker_testkit::db::{partitions, read_partition, TestDb};

fn recs(values: &[&str]) -> Vec<Record> {
    values
        .iter()
        .map(|v| Record {
            key: None,
            value: Some(v.as_bytes().to_vec().into()),
            headers: vec![],
            timestamp: None,
        })
        .collect()
}

fn batch(pid: i64, epoch: i16, seq: i32) -> ProducerBatch {
    ProducerBatch {
        producer_id: pid,
        epoch,
        base_sequence: seq,
    }
}

fn refusal(r: Result<impl std::fmt::Debug, Error>) -> TxnRefusal {
    match r {
        Err(Error::Transaction { refusal, .. }) => refusal,
        other => panic!("expected a transaction refusal, got {other:?}"),
    }
}

/// Reads one partition from `offset` with the isolation asked.
async fn read(b: &Broker, t: &TopicName, p: i32, offset: i64, isolation: Isolation) -> pgbroker::streams::FetchResult {
    read_partition(b, t, p, offset, isolation).await
}

fn values(r: &pgbroker::streams::FetchResult) -> Vec<String> {
    r.records
        .iter()
        .filter(|x| !r.producers.iter().any(|p| p.offset == x.offset && p.control))
        .map(|x| String::from_utf8_lossy(x.value.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

#[tokio::test]
async fn commit_writes_markers_moves_the_stable_offset_and_applies_offsets() {
    let db = TestDb::new().await;
    let t = db.topic("out", partitions(2)).await;
    let input = db.topic("in", partitions(1)).await;
    let txn = db.broker.transactions();
    let (pid, epoch) = txn.init_producer("app-1", 60_000, None).await.expect("init");
    assert_eq!(epoch, 0);
    txn.add_partitions("app-1", pid, epoch, &[(t.clone(), 0), (t.clone(), 1)])
        .await
        .expect("add");
    let group = GroupId::new("g").expect("group");
    txn.add_group("app-1", pid, epoch, &group).await.expect("add group");
    // A plain record before, to see the stable offset hold at the
    // transaction's first record.
    db.broker
        .streams()
        .produce(&t, Some(0), &recs(&["plain"]))
        .await
        .expect("plain");
    txn.produce("app-1", &t, 0, &recs(&["a", "b"]), batch(pid, epoch, 0))
        .await
        .expect("produce p0");
    txn.produce("app-1", &t, 1, &recs(&["c"]), batch(pid, epoch, 0))
        .await
        .expect("produce p1");
    let offsets = [OffsetCommit {
        topic: input.clone(),
        partition: 0,
        offset: 7,
        metadata: None,
    }];
    txn.commit_offsets("app-1", pid, epoch, &group, None, &offsets)
        .await
        .expect("offsets");

    // Open: read_committed stops at the first record of the transaction.
    let rc = read(&db.broker, &t, 0, 0, Isolation::ReadCommitted).await;
    assert_eq!(values(&rc), vec!["plain"]);
    assert_eq!(rc.last_stable_offset, 1);
    assert_eq!(rc.high_watermark, 3);
    // (A read may stop early at the end of what the cache holds; the
    // records of the open transaction are never cached.)
    let ru = read(&db.broker, &t, 0, 1, Isolation::ReadUncommitted).await;
    assert_eq!(values(&ru), vec!["a", "b"]);
    assert!(ru.aborted.is_empty());
    assert_eq!(txn.last_stable_offset(&t, 0).await.expect("lso"), 1);
    assert_eq!(
        txn.pending_offsets(&group).await.expect("pending"),
        vec![(input.clone(), 0)]
    );
    assert!(db
        .broker
        .groups()
        .all_offsets(&group)
        .await
        .expect("offsets")
        .is_empty());
    let d = txn.describe("app-1").await.expect("describe").expect("known");
    assert_eq!(d.state, TxnState::Ongoing);
    assert_eq!(d.partitions, vec![(t.clone(), 0), (t.clone(), 1)]);

    txn.end("app-1", pid, epoch, true, None).await.expect("commit");
    let rc = read(&db.broker, &t, 0, 0, Isolation::ReadCommitted).await;
    assert_eq!(values(&rc), vec!["plain", "a", "b"]);
    assert_eq!(rc.high_watermark, 4, "one marker after the records");
    assert_eq!(rc.last_stable_offset, 4);
    assert!(rc.aborted.is_empty());
    let marker = rc.producers.iter().find(|p| p.control).expect("a marker");
    assert_eq!((marker.offset, marker.producer_id), (3, pid));
    let m = &rc.records[3];
    assert_eq!(m.key.as_deref(), Some(&[0u8, 0, 0, 1][..]), "commit marker key");
    assert_eq!(m.value.as_deref(), Some(&[0u8, 0, 0, 0, 0, 0][..]));
    let rc1 = read(&db.broker, &t, 1, 0, Isolation::ReadCommitted).await;
    assert_eq!(values(&rc1), vec!["c"]);
    assert_eq!(rc1.high_watermark, 2);
    let committed = db.broker.groups().all_offsets(&group).await.expect("offsets");
    assert_eq!(committed.len(), 1);
    assert_eq!(committed[0].1.offset, 7);
    assert!(txn.pending_offsets(&group).await.expect("pending").is_empty());
    // A retried commit is answered as the first was; an abort now is an
    // abort of an empty transaction.
    txn.end("app-1", pid, epoch, true, None).await.expect("retried commit");
    txn.end("app-1", pid, epoch, false, None).await.expect("empty abort");
    assert_eq!(
        read(&db.broker, &t, 0, 0, Isolation::ReadCommitted)
            .await
            .high_watermark,
        4
    );
}

#[tokio::test]
async fn abort_reports_the_aborted_range_only_to_read_committed() {
    let db = TestDb::new().await;
    let t = db.topic("out", partitions(1)).await;
    let txn = db.broker.transactions();
    let (pid, epoch) = txn.init_producer("app", 60_000, None).await.expect("init");
    txn.add_partitions("app", pid, epoch, &[(t.clone(), 0)])
        .await
        .expect("add");
    let group = GroupId::new("g").expect("group");
    txn.add_group("app", pid, epoch, &group).await.expect("add group");
    txn.produce("app", &t, 0, &recs(&["x", "y"]), batch(pid, epoch, 0))
        .await
        .expect("produce");
    let offsets = [OffsetCommit {
        topic: t.clone(),
        partition: 0,
        offset: 1,
        metadata: None,
    }];
    txn.commit_offsets("app", pid, epoch, &group, None, &offsets)
        .await
        .expect("offsets");
    txn.end("app", pid, epoch, false, None).await.expect("abort");
    db.broker
        .streams()
        .produce(&t, Some(0), &recs(&["after"]))
        .await
        .expect("plain");
    let rc = read(&db.broker, &t, 0, 0, Isolation::ReadCommitted).await;
    assert_eq!(rc.records.len(), 4, "x, y, the abort marker, after");
    assert_eq!(rc.aborted.len(), 1);
    assert_eq!((rc.aborted[0].producer_id, rc.aborted[0].first_offset), (pid, 0));
    assert_eq!(
        rc.records[2].key.as_deref(),
        Some(&[0u8, 0, 0, 0][..]),
        "abort marker key"
    );
    assert!(read(&db.broker, &t, 0, 0, Isolation::ReadUncommitted)
        .await
        .aborted
        .is_empty());
    // A read past the aborted range is not told of it.
    assert!(read(&db.broker, &t, 0, 3, Isolation::ReadCommitted)
        .await
        .aborted
        .is_empty());
    assert!(db
        .broker
        .groups()
        .all_offsets(&group)
        .await
        .expect("offsets")
        .is_empty());
    // The next transaction of the same producer is unaffected.
    txn.add_partitions("app", pid, epoch, &[(t.clone(), 0)])
        .await
        .expect("add");
    txn.produce("app", &t, 0, &recs(&["z"]), batch(pid, epoch, 2))
        .await
        .expect("produce");
    txn.end("app", pid, epoch, true, None).await.expect("commit");
    let rc = read(&db.broker, &t, 0, 0, Isolation::ReadCommitted).await;
    assert_eq!(rc.aborted.len(), 1);
    assert_eq!(rc.last_stable_offset, rc.high_watermark);
    assert_eq!(rc.aborted[0].last_offset, 2, "the abort marker");
    // The library's committed read drops markers and aborted records and
    // says where to continue.
    let committed = db
        .broker
        .streams()
        .fetch_committed(&t, 0, 0, FetchLimits::default())
        .await
        .expect("fetch");
    assert_eq!(values(&committed), vec!["after", "z"]);
    assert_eq!(committed.next_offset, 6);
    assert!(committed.producers.iter().all(|p| !p.control));
    // Once the log starts past it, the aborted range is forgotten.
    let aborted = format!("SELECT count(*) FROM \"{}\".kafka_aborted_txns", db.schema);
    let raw = db.raw().await;
    let count = |c: tokio_postgres::Row| c.get::<_, i64>(0);
    db.broker
        .streams()
        .delete_records(&t, 0, Some(2))
        .await
        .expect("delete below the marker");
    assert_eq!(
        count(raw.query_one(&aborted, &[]).await.expect("count")),
        1,
        "the marker at 2 remains"
    );
    db.broker
        .streams()
        .delete_records(&t, 0, Some(3))
        .await
        .expect("delete past the marker");
    assert_eq!(count(raw.query_one(&aborted, &[]).await.expect("count")), 0);
}

#[tokio::test]
async fn a_new_instance_fences_the_old_and_aborts_its_transaction() {
    let db = TestDb::new().await;
    let t = db.topic("out", partitions(1)).await;
    let txn = db.broker.transactions();
    let (pid, e0) = txn.init_producer("app", 60_000, None).await.expect("init");
    txn.add_partitions("app", pid, e0, &[(t.clone(), 0)])
        .await
        .expect("add");
    txn.produce("app", &t, 0, &recs(&["zombie"]), batch(pid, e0, 0))
        .await
        .expect("produce");
    let (pid2, e1) = txn.init_producer("app", 60_000, None).await.expect("re-init");
    assert_eq!((pid2, e1), (pid, e0 + 1));
    // The old instance's transaction was aborted: its record is in an
    // aborted range and the stable offset is past its marker.
    let rc = read(&db.broker, &t, 0, 0, Isolation::ReadCommitted).await;
    assert_eq!(rc.aborted.len(), 1);
    assert_eq!(rc.last_stable_offset, 2);
    // Every request of the old epoch is fenced, and writes nothing.
    assert!(matches!(
        refusal(txn.produce("app", &t, 0, &recs(&["late"]), batch(pid, e0, 1)).await),
        TxnRefusal::Fenced {
            presented: 0,
            current: 1
        }
    ));
    assert!(matches!(
        refusal(txn.end("app", pid, e0, true, None).await),
        TxnRefusal::Fenced { .. }
    ));
    assert!(matches!(
        refusal(txn.add_partitions("app", pid, e0, &[(t.clone(), 0)]).await),
        TxnRefusal::Fenced { .. }
    ));
    assert!(matches!(
        refusal(txn.end("app", pid, e1 + 1, false, None).await),
        TxnRefusal::EpochAhead { .. }
    ));
    assert!(matches!(
        refusal(txn.end("app", pid + 1000, e1, false, None).await),
        TxnRefusal::UnknownProducerId(_)
    ));
    assert_eq!(
        read(&db.broker, &t, 0, 0, Isolation::ReadUncommitted)
            .await
            .high_watermark,
        2
    );
}

#[tokio::test]
async fn writes_outside_the_transaction_are_refused() {
    let db = TestDb::new().await;
    let t = db.topic("out", partitions(2)).await;
    let txn = db.broker.transactions();
    let (pid, epoch) = txn.init_producer("app", 60_000, None).await.expect("init");
    // No transaction open yet.
    assert!(matches!(
        refusal(txn.produce("app", &t, 0, &recs(&["r"]), batch(pid, epoch, 0)).await),
        TxnRefusal::InvalidState(_)
    ));
    txn.add_partitions("app", pid, epoch, &[(t.clone(), 0)])
        .await
        .expect("add");
    // Partition 1 was not added (KIP-890).
    assert_eq!(
        refusal(txn.produce("app", &t, 1, &recs(&["r"]), batch(pid, epoch, 0)).await),
        TxnRefusal::PartitionNotAdded
    );
    // Another transactional id cannot write with this producer id.
    txn.init_producer("other", 60_000, None).await.expect("init other");
    assert!(matches!(
        refusal(txn.produce("other", &t, 0, &recs(&["r"]), batch(pid, epoch, 0)).await),
        TxnRefusal::UnknownProducerId(_)
    ));
    assert_eq!(
        read(&db.broker, &t, 1, 0, Isolation::ReadUncommitted)
            .await
            .high_watermark,
        0
    );
    assert_eq!(
        read(&db.broker, &t, 0, 0, Isolation::ReadUncommitted)
            .await
            .high_watermark,
        0
    );
    // Offsets of a group not added, and a commit with nothing open.
    let group = GroupId::new("g").expect("group");
    let offsets = [OffsetCommit {
        topic: t.clone(),
        partition: 0,
        offset: 1,
        metadata: None,
    }];
    assert!(matches!(
        refusal(txn.commit_offsets("app", pid, epoch, &group, None, &offsets).await),
        TxnRefusal::GroupNotAdded(_)
    ));
    let (opid, oepoch) = txn.init_producer("third", 60_000, None).await.expect("init third");
    assert!(matches!(
        refusal(txn.end("third", opid, oepoch, true, None).await),
        TxnRefusal::InvalidState(_)
    ));
    txn.end("third", opid, oepoch, false, None)
        .await
        .expect("empty abort succeeds");
    // Bad requests.
    assert!(matches!(
        refusal(txn.init_producer("app", 0, None).await),
        TxnRefusal::InvalidTimeout { .. }
    ));
    assert!(matches!(
        refusal(txn.init_producer("app", 900_001, None).await),
        TxnRefusal::InvalidTimeout { .. }
    ));
    assert!(matches!(
        txn.init_producer("", 1000, None).await,
        Err(Error::Invalid { .. })
    ));
}

#[tokio::test]
async fn a_delayed_end_of_an_earlier_transaction_never_decides_a_later_one() {
    let db = TestDb::new().await;
    let t = db.topic("out", partitions(1)).await;
    let txn = db.broker.transactions();
    let (pid, epoch) = txn.init_producer("app", 60_000, None).await.expect("init");
    let first = txn
        .add_partitions("app", pid, epoch, &[(t.clone(), 0)])
        .await
        .expect("add");
    txn.produce("app", &t, 0, &recs(&["one"]), batch(pid, epoch, 0))
        .await
        .expect("produce");
    // The commit is sent, times out at the client, and is retried on
    // another connection, where it succeeds.
    txn.end("app", pid, epoch, true, None).await.expect("retried commit");
    let second = txn
        .add_partitions("app", pid, epoch, &[(t.clone(), 0)])
        .await
        .expect("add");
    assert_eq!(second, first + 1);
    txn.produce("app", &t, 0, &recs(&["two"]), batch(pid, epoch, 1))
        .await
        .expect("produce");
    // Now the first request arrives: it must not commit the second
    // transaction.
    assert_eq!(
        refusal(txn.end("app", pid, epoch, true, Some(first)).await),
        TxnRefusal::StaleRequest
    );
    assert_eq!(txn.last_stable_offset(&t, 0).await.expect("lso"), 2, "still open");
    txn.end("app", pid, epoch, false, Some(second)).await.expect("abort");
    let rc = read(&db.broker, &t, 0, 0, Isolation::ReadCommitted).await;
    assert_eq!(rc.aborted.len(), 1);
    assert_eq!(rc.aborted[0].first_offset, 2);
    // A retried abort of the aborted transaction still succeeds.
    txn.end("app", pid, epoch, false, Some(second))
        .await
        .expect("retried abort");
}

#[tokio::test]
async fn a_timed_out_transaction_is_aborted_and_a_late_commit_is_fenced() {
    let db = TestDb::new().await;
    let t = db.topic("out", partitions(1)).await;
    let txn = db.broker.transactions();
    let (pid, epoch) = txn.init_producer("slow", 300, None).await.expect("init");
    txn.add_partitions("slow", pid, epoch, &[(t.clone(), 0)])
        .await
        .expect("add");
    txn.produce("slow", &t, 0, &recs(&["stuck"]), batch(pid, epoch, 0))
        .await
        .expect("produce");
    assert_eq!(txn.abort_expired().await.expect("sweep"), 0, "not due yet");
    assert_eq!(txn.last_stable_offset(&t, 0).await.expect("lso"), 0);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Another broker process sweeps it.
    let other = db.other_broker().await;
    assert_eq!(other.transactions().abort_expired().await.expect("sweep"), 1);
    assert_eq!(txn.last_stable_offset(&t, 0).await.expect("lso"), 2);
    let d = txn.describe("slow").await.expect("describe").expect("known");
    assert_eq!((d.state, d.epoch), (TxnState::CompleteAbort, epoch + 1));
    // The producer's commit arrives late: a fencing error, not a state
    // error, and nothing changes.
    assert!(matches!(
        refusal(txn.end("slow", pid, epoch, true, None).await),
        TxnRefusal::Fenced { .. }
    ));
    let rc = read(&db.broker, &t, 0, 0, Isolation::ReadCommitted).await;
    assert_eq!(rc.aborted.len(), 1);
    // The producer recovers by presenting its old epoch (KIP-360); a
    // stranger presenting another is fenced.
    assert!(matches!(
        refusal(txn.init_producer("slow", 300, Some((pid + 1, epoch))).await),
        TxnRefusal::Fenced { .. }
    ));
    let (pid2, e2) = txn
        .init_producer("slow", 300, Some((pid, epoch)))
        .await
        .expect("recover");
    assert_eq!((pid2, e2), (pid, epoch + 2));
}

#[tokio::test]
async fn cached_reads_stop_at_the_stable_offset() {
    let db = TestDb::new().await;
    let t = db.topic("out", partitions(1)).await;
    let txn = db.broker.transactions();
    db.broker
        .streams()
        .produce(&t, Some(0), &recs(&["a", "b"]))
        .await
        .expect("plain");
    // Warm the cache with a read.
    assert_eq!(
        values(&read(&db.broker, &t, 0, 0, Isolation::ReadCommitted).await),
        vec!["a", "b"]
    );
    let (pid, epoch) = txn.init_producer("app", 60_000, None).await.expect("init");
    txn.add_partitions("app", pid, epoch, &[(t.clone(), 0)])
        .await
        .expect("add");
    txn.produce("app", &t, 0, &recs(&["t"]), batch(pid, epoch, 0))
        .await
        .expect("produce");
    db.broker
        .streams()
        .produce(&t, Some(0), &recs(&["c"]))
        .await
        .expect("plain after");
    for _ in 0..3 {
        let rc = read(&db.broker, &t, 0, 0, Isolation::ReadCommitted).await;
        assert_eq!(values(&rc), vec!["a", "b"]);
        let rc = read(&db.broker, &t, 0, 3, Isolation::ReadCommitted).await;
        assert!(rc.records.is_empty(), "past the stable offset: {:?}", values(&rc));
        let rc = read(&db.broker, &t, 0, 2, Isolation::ReadCommitted).await;
        assert!(rc.records.is_empty());
    }
    txn.end("app", pid, epoch, true, None).await.expect("commit");
    let rc = read(&db.broker, &t, 0, 0, Isolation::ReadCommitted).await;
    assert_eq!(values(&rc), vec!["a", "b", "t", "c"]);
    // The plain fetch of the library sees every record, the marker too.
    let all = db
        .broker
        .streams()
        .fetch(&t, 0, 2, FetchLimits::default())
        .await
        .expect("fetch");
    assert_eq!(all.records.len(), 3);
    assert_eq!(all.producers.iter().filter(|p| p.control).count(), 1);
}

#[tokio::test]
async fn compaction_drops_aborted_records_keeps_markers_and_stops_at_the_stable_offset() {
    use pgbroker::streams::{Cleanup, CleanupPolicy};
    let db = TestDb::new().await;
    let config = pgbroker::TopicConfig {
        segment_records: 10,
        cleanup: Cleanup {
            policy: CleanupPolicy::Compact,
            ..Cleanup::default()
        },
        ..partitions(1)
    };
    let t = db.topic("state", config).await;
    let keyed = |k: &str, v: &str| Record {
        key: Some(k.as_bytes().to_vec().into()),
        value: Some(v.as_bytes().to_vec().into()),
        headers: vec![],
        timestamp: None,
    };
    let txn = db.broker.transactions();
    let (pid, epoch) = txn.init_producer("app", 60_000, None).await.expect("init");
    // Committed k=v1 (offsets 0, marker 1), aborted k=bad (2, marker 3).
    txn.add_partitions("app", pid, epoch, &[(t.clone(), 0)])
        .await
        .expect("add");
    txn.produce("app", &t, 0, &[keyed("k", "v1")], batch(pid, epoch, 0))
        .await
        .expect("produce");
    txn.end("app", pid, epoch, true, None).await.expect("commit");
    txn.add_partitions("app", pid, epoch, &[(t.clone(), 0)])
        .await
        .expect("add");
    txn.produce("app", &t, 0, &[keyed("k", "bad")], batch(pid, epoch, 1))
        .await
        .expect("produce");
    txn.end("app", pid, epoch, false, None).await.expect("abort");
    // Plain records fill the first segment and part of the second; then a
    // transaction stays open in the second segment's successor.
    let plain: Vec<Record> = (0..12)
        .map(|i| keyed(&format!("p{}", i % 3), &format!("x{i}")))
        .collect();
    db.broker.streams().produce(&t, Some(0), &plain).await.expect("plain");
    txn.add_partitions("app", pid, epoch, &[(t.clone(), 0)])
        .await
        .expect("add");
    txn.produce("app", &t, 0, &[keyed("k", "open")], batch(pid, epoch, 2))
        .await
        .expect("produce");
    db.broker
        .streams()
        .produce(
            &t,
            Some(0),
            &(0..10).map(|i| keyed("p0", &format!("y{i}"))).collect::<Vec<_>>(),
        )
        .await
        .expect("plain after");
    db.broker.maintenance().compact(true).await.expect("compact");
    let all = db
        .broker
        .streams()
        .fetch_committed(
            &t,
            0,
            0,
            FetchLimits {
                max_records: 1000,
                ..FetchLimits::default()
            },
        )
        .await
        .expect("fetch");
    let ks: Vec<(String, String)> = all
        .records
        .iter()
        .map(|r| {
            (
                String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
                String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    // k's committed value survives; the aborted one was never its latest.
    assert!(ks.contains(&("k".to_string(), "v1".to_string())), "{ks:?}");
    assert!(!ks.iter().any(|(_, v)| v == "bad" || v == "open"), "{ks:?}");
    // Both markers of the first segment are still there.
    let raw = read(&db.broker, &t, 0, 0, Isolation::ReadUncommitted).await;
    assert!(
        raw.producers.iter().filter(|p| p.control && p.offset < 10).count() == 2,
        "{:?}",
        raw.producers
    );
    assert!(
        !raw.records.iter().any(|r| r.value.as_deref() == Some(&b"bad"[..])),
        "aborted record removed"
    );
    // Nothing at or above the open transaction was compacted: every y is there.
    let lso = txn.last_stable_offset(&t, 0).await.expect("lso");
    assert_eq!(lso, 16);
    let above: Vec<_> = raw.records.iter().filter(|r| r.offset >= lso).collect();
    assert_eq!(above.len(), 11, "the open record and the ten after it");
}

#[tokio::test]
async fn refused_joins_and_offsets_write_nothing() {
    let db = TestDb::new().await;
    let t = db.topic("out", partitions(1)).await;
    let txn = db.broker.transactions();
    let group = GroupId::new("g").expect("group");
    let offsets = [OffsetCommit {
        topic: t.clone(),
        partition: 0,
        offset: 5,
        metadata: None,
    }];
    let (pid, e0) = txn.init_producer("app", 60_000, None).await.expect("init");
    let (_, e1) = txn.init_producer("app", 60_000, None).await.expect("re-init");
    assert!(matches!(
        refusal(txn.add_partitions("app", pid, e0, &[(t.clone(), 0)]).await),
        TxnRefusal::Fenced { .. }
    ));
    assert!(matches!(
        refusal(txn.add_group("app", pid, e0, &group).await),
        TxnRefusal::Fenced { .. }
    ));
    let d = txn.describe("app").await.expect("describe").expect("known");
    assert_eq!(d.state, TxnState::Empty, "a fenced request starts no transaction");
    assert!(d.partitions.is_empty());

    txn.add_partitions("app", pid, e1, &[(t.clone(), 0)])
        .await
        .expect("add");
    assert!(matches!(
        refusal(txn.commit_offsets("app", pid, e1, &group, None, &offsets).await),
        TxnRefusal::GroupNotAdded(_)
    ));
    assert!(txn.pending_offsets(&group).await.expect("pending").is_empty());
    txn.add_group("app", pid, e1, &group).await.expect("add group");
    assert!(matches!(
        refusal(txn.commit_offsets("app", pid, e0, &group, None, &offsets).await),
        TxnRefusal::Fenced { .. }
    ));
    assert!(txn.pending_offsets(&group).await.expect("pending").is_empty());
    txn.commit_offsets("app", pid, e1, &group, None, &offsets)
        .await
        .expect("offsets");
    assert_eq!(
        txn.pending_offsets(&group).await.expect("pending"),
        vec![(t.clone(), 0)]
    );
    txn.end("app", pid, e1, true, None).await.expect("commit");
    let committed = db.broker.groups().all_offsets(&group).await.expect("offsets");
    assert_eq!(committed.len(), 1);
    assert_eq!(committed[0].1.offset, 5);
}

#[tokio::test]
async fn transactions_fill_segment_after_segment_on_every_partition() {
    let db = TestDb::new().await;
    // Each transaction writes three records and a marker to each
    // partition: a whole segment, so appends and markers keep needing new
    // ones.
    let config = pgbroker::TopicConfig {
        partitions: 3,
        segment_records: 4,
        ..pgbroker::TopicConfig::default()
    };
    let t = db.topic("out", config).await;
    let txn = db.broker.transactions();
    let (pid, epoch) = txn.init_producer("app", 60_000, None).await.expect("init");
    let all: Vec<(TopicName, i32)> = (0..3).map(|p| (t.clone(), p)).collect();
    for n in 0..6i32 {
        txn.add_partitions("app", pid, epoch, &all).await.expect("add");
        for p in 0..3 {
            let v: Vec<String> = (0..3).map(|i| format!("t{n}p{p}r{i}")).collect();
            let v: Vec<&str> = v.iter().map(String::as_str).collect();
            let appended = txn
                .produce("app", &t, p, &recs(&v), batch(pid, epoch, n * 3))
                .await
                .expect("produce");
            assert_eq!(appended.base_offset, i64::from(n) * 4);
        }
        // Every third transaction aborts.
        txn.end("app", pid, epoch, n % 3 != 2, None).await.expect("end");
    }
    for p in 0..3 {
        assert_eq!(txn.last_stable_offset(&t, p).await.expect("lso"), 24);
        let mut got = Vec::new();
        let mut aborted = 0;
        let mut markers = Vec::new();
        let mut offset = 0;
        while offset < 24 {
            let rc = read(&db.broker, &t, p, offset, Isolation::ReadCommitted).await;
            assert!(rc.next_offset > offset, "the read moves on from {offset}");
            aborted += rc.aborted.len();
            markers.extend(rc.producers.iter().filter(|x| x.control).map(|x| x.offset));
            // Records of aborted ranges are skipped as a client would.
            let skip = |o: i64| rc.aborted.iter().any(|a| (a.first_offset..=a.last_offset).contains(&o));
            got.extend(
                rc.records
                    .iter()
                    .filter(|r| !skip(r.offset) && !rc.producers.iter().any(|x| x.offset == r.offset && x.control))
                    .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()),
            );
            offset = rc.next_offset;
        }
        let want: Vec<String> = (0..6)
            .filter(|n| n % 3 != 2)
            .flat_map(|n| (0..3).map(move |i| format!("t{n}p{p}r{i}")))
            .collect();
        assert_eq!(got, want, "partition {p}");
        assert_eq!(aborted, 2, "partition {p}");
        assert_eq!(markers, vec![3, 7, 11, 15, 19, 23], "partition {p}");
    }
}
