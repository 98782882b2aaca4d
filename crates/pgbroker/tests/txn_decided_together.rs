//! EndTxns that arrive while another decision holds the partitions are
//! decided together: each still gets its own answer (commit, abort, a
//! retried commit, a fenced producer), each decided transaction gets its
//! own marker on every partition it wrote to, offsets are applied for the
//! committed ones only, and read_committed sees exactly the committed
//! records.

use std::time::Duration;

use pgbroker::groups::OffsetCommit;
use pgbroker::streams::{Isolation, ProducerBatch};
use pgbroker::txn::{TxnRefusal, TxnState};
use pgbroker::{Error, GroupId, Record, TopicName};
use pgbroker_testkit::db::{partitions, read_partition, TestDb};

/// Transactions decided in the burst.
const PRODUCERS: usize = 8;

/// A small count as Kafka's numbers.
fn n(i: usize) -> i32 {
    i32::try_from(i).expect("small")
}

fn rec(value: &str) -> Vec<Record> {
    vec![Record {
        key: None,
        value: Some(value.as_bytes().to_vec().into()),
        headers: vec![],
        timestamp: None,
    }]
}

fn batch(producer_id: i64, epoch: i16) -> ProducerBatch {
    ProducerBatch {
        producer_id,
        epoch,
        base_sequence: 0,
    }
}

/// What read_committed shows of partition `p`: the committed values, the
/// markers' producer ids, and the last stable offset and high watermark.
async fn committed(db: &TestDb, t: &TopicName, p: i32) -> (Vec<String>, Vec<i64>, i64, i64) {
    let mut r = read_partition(&db.broker, t, p, 0, Isolation::ReadCommitted).await;
    let markers = r
        .producers
        .iter()
        .filter(|x| x.control)
        .map(|x| x.producer_id)
        .collect();
    let (lso, hw) = (r.last_stable_offset, r.high_watermark);
    r.keep_committed();
    let values = r
        .records
        .iter()
        .map(|x| String::from_utf8_lossy(x.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    (values, markers, lso, hw)
}

#[tokio::test]
async fn end_txns_queued_behind_a_decision_are_decided_together_each_as_alone() {
    let db = TestDb::new().await;
    let t = db.topic("out", partitions(2)).await;
    let input = db.topic("in", partitions(n(PRODUCERS))).await;
    let group = GroupId::new("pipeline").expect("group");
    let txn = db.broker.transactions();
    let mut producers = Vec::new();
    for i in 0..PRODUCERS {
        let id = format!("app-{i}");
        let (pid, epoch) = txn.init_producer(&id, 60_000, None).await.expect("init");
        txn.add_partitions(&id, pid, epoch, &[(t.clone(), 0), (t.clone(), 1)])
            .await
            .expect("add partitions");
        for p in 0..2 {
            txn.produce(&id, &t, p, &rec(&format!("v{i}-{p}")), batch(pid, epoch))
                .await
                .expect("produce");
        }
        txn.add_group(&id, pid, epoch, &group).await.expect("add group");
        let offsets = [OffsetCommit {
            topic: input.clone(),
            partition: n(i),
            offset: 10 + i64::from(n(i)),
            metadata: None,
        }];
        txn.commit_offsets(&id, pid, epoch, &group, None, &offsets)
            .await
            .expect("offsets");
        producers.push((id, pid, epoch));
    }
    // A producer fenced by a new instance: its EndTxn must be refused
    // even in company.
    let (zombie_pid, zombie_epoch) = txn.init_producer("zombie", 60_000, None).await.expect("init");
    txn.init_producer("zombie", 60_000, None).await.expect("new instance");

    // Hold every partition's lock, so that the first EndTxn waits in its
    // markers and the others queue behind it.
    let raw = db.raw().await;
    raw.batch_execute(&format!(
        "BEGIN; SELECT id FROM \"{}\".partitions ORDER BY id FOR NO KEY UPDATE",
        db.schema
    ))
    .await
    .expect("lock the partitions");
    let mut tasks = Vec::new();
    let mut requests: Vec<(String, i64, i16, bool)> = producers
        .iter()
        .enumerate()
        .map(|(i, (id, pid, epoch))| (id.clone(), *pid, *epoch, i % 2 == 0))
        .collect();
    // A retried commit, and the zombie's commit.
    requests.push((producers[0].0.clone(), producers[0].1, producers[0].2, true));
    requests.push(("zombie".to_string(), zombie_pid, zombie_epoch, true));
    for (id, pid, epoch, commit) in requests {
        let broker = db.broker.clone();
        tasks.push(tokio::spawn(async move {
            broker.transactions().end(&id, pid, epoch, commit, None).await
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "every EndTxn waits for the partitions"
    );
    raw.batch_execute("COMMIT").await.expect("release");
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("decided in time")
                .expect("task"),
        );
    }
    for (i, out) in outcomes.iter().take(PRODUCERS + 1).enumerate() {
        assert!(out.is_ok(), "EndTxn {i}: {out:?}");
    }
    match &outcomes[PRODUCERS + 1] {
        Err(Error::Transaction {
            refusal: TxnRefusal::Fenced { presented, .. },
            ..
        }) => assert_eq!(*presented, zombie_epoch),
        other => panic!("the zombie's commit must be fenced, got {other:?}"),
    }

    for (i, (id, _, _)) in producers.iter().enumerate() {
        let d = txn.describe(id).await.expect("describe").expect("known");
        let want = if i % 2 == 0 {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        assert_eq!(d.state, want, "{id}");
        assert!(d.partitions.is_empty(), "{id} forgot its partitions");
    }
    for p in 0..2 {
        let (values, markers, lso, hw) = committed(&db, &t, p).await;
        let want: Vec<String> = (0..PRODUCERS).step_by(2).map(|i| format!("v{i}-{p}")).collect();
        assert_eq!(values, want, "partition {p}: the committed records only");
        let mut markers = markers;
        markers.sort_unstable();
        let mut pids: Vec<i64> = producers.iter().map(|x| x.1).collect();
        pids.sort_unstable();
        assert_eq!(markers, pids, "partition {p}: one marker per decided transaction");
        assert_eq!(lso, hw, "partition {p}: nothing left open");
        assert_eq!(hw, 2 * i64::from(n(PRODUCERS)), "partition {p}: records and markers");
    }
    // Decided together: the markers of the queued transactions were
    // written by one SQL transaction.
    let writers: i64 = raw
        .query_one(
            &format!(
                "SELECT count(DISTINCT xmin::text) FROM \"{}\".records WHERE control",
                db.schema
            ),
            &[],
        )
        .await
        .expect("marker writers")
        .get(0);
    assert!(
        writers < i64::from(n(PRODUCERS)) / 2,
        "{writers} SQL transactions wrote the markers of {PRODUCERS} decisions"
    );
    let mut offsets: Vec<(i32, i64)> = db
        .broker
        .groups()
        .all_offsets(&group)
        .await
        .expect("offsets")
        .into_iter()
        .map(|(_, o)| (o.partition, o.offset))
        .collect();
    offsets.sort_unstable();
    let want: Vec<(i32, i64)> = (0..PRODUCERS)
        .step_by(2)
        .map(|i| (n(i), 10 + i64::from(n(i))))
        .collect();
    assert_eq!(offsets, want, "the committed transactions' offsets only");
    assert!(txn.pending_offsets(&group).await.expect("pending").is_empty());
}
