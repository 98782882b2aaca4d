//! Transactional appends that arrive while another append holds their
//! partition are made together: each still gets its own answer (a new
//! batch, a retried one, a refused one), offsets stay consecutive, and a
//! refused append writes nothing.

use std::time::Duration;

use pgbroker::streams::{IdempotentAppend, Isolation, ProducerBatch};
use pgbroker::txn::TxnRefusal;
use pgbroker::{Error, Record, Result, TopicName};
use pgbroker_testkit::db::{partitions, read_partition, TestDb};
use tokio::task::JoinHandle;

/// Producers writing to the partition.
const PRODUCERS: usize = 6;

fn recs(values: &[String]) -> Vec<Record> {
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

fn batch(producer_id: i64, epoch: i16, base_sequence: i32) -> ProducerBatch {
    ProducerBatch {
        producer_id,
        epoch,
        base_sequence,
    }
}

/// Holds partition 0's lock on a connection of its own until `COMMIT`.
async fn hold_partition(db: &TestDb) -> tokio_postgres::Client {
    let raw = db.raw().await;
    raw.batch_execute(&format!(
        "BEGIN; SELECT id FROM \"{}\".partitions ORDER BY id FOR NO KEY UPDATE",
        db.schema
    ))
    .await
    .expect("lock the partition");
    raw
}

/// Starts one append of two records, `v{round}-{producer}-{0,1}`.
fn start(
    db: &TestDb,
    t: &TopicName,
    id: &str,
    producer: (i64, i16),
    round: i32,
    label: usize,
) -> JoinHandle<Result<IdempotentAppend>> {
    let (broker, t, id) = (db.broker.clone(), t.clone(), id.to_string());
    let values: Vec<String> = (0..2).map(|k| format!("v{round}-{label}-{k}")).collect();
    tokio::spawn(async move {
        broker
            .transactions()
            .produce(&id, &t, 0, &recs(&values), batch(producer.0, producer.1, 2 * round))
            .await
    })
}

/// Starts the first append, which waits for the held lock, then `rest`
/// behind it; releases the lock and returns every answer in order.
async fn queued_behind_one(
    raw: tokio_postgres::Client,
    first: JoinHandle<Result<IdempotentAppend>>,
    rest: impl FnOnce() -> Vec<JoinHandle<Result<IdempotentAppend>>>,
) -> Vec<Result<IdempotentAppend>> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut tasks = vec![first];
    tasks.extend(rest());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "every append waits for the partition"
    );
    raw.batch_execute("COMMIT").await.expect("release");
    let mut out = Vec::new();
    for task in tasks {
        out.push(
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("answered in time")
                .expect("task"),
        );
    }
    out
}

/// `n` transactional producers `{prefix}-{i}`, each with `partitions` added
/// to its transaction.
async fn joined(db: &TestDb, prefix: &str, n: usize, partitions: &[(TopicName, i32)]) -> Vec<(String, (i64, i16))> {
    let txn = db.broker.transactions();
    let mut producers = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        let (pid, epoch) = txn.init_producer(&id, 60_000, None).await.expect("init");
        txn.add_partitions(&id, pid, epoch, partitions)
            .await
            .expect("add partitions");
        producers.push((id, (pid, epoch)));
    }
    producers
}

#[tokio::test]
async fn appends_queued_behind_one_are_made_together_each_answered_as_alone() {
    let db = TestDb::new().await;
    let t = db.topic("out", partitions(1)).await;
    let txn = db.broker.transactions();
    let producers = joined(&db, "app", PRODUCERS, &[(t.clone(), 0)]).await;

    // Round 0: the first append waits for the lock; the others, and a
    // retry of the first one's batch, queue behind it and are made
    // together once it is through.
    let raw = hold_partition(&db).await;
    let first = start(&db, &t, &producers[0].0, producers[0].1, 0, 0);
    let out = queued_behind_one(raw, first, || {
        let mut rest: Vec<_> = producers
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, (id, p))| start(&db, &t, id, *p, 0, i))
            .collect();
        rest.push(start(&db, &t, &producers[0].0, producers[0].1, 0, 0));
        rest
    })
    .await;
    let appended: Vec<IdempotentAppend> = out.into_iter().map(|o| o.expect("appended")).collect();
    assert_eq!(appended[0].base_offset, 0, "the first one went first");
    let retry = appended[PRODUCERS];
    assert!(retry.duplicate, "the retry is answered as a duplicate");
    assert_eq!(retry.base_offset, 0, "with the first one's offset");
    let mut bases: Vec<i64> = appended[..PRODUCERS]
        .iter()
        .inspect(|a| assert!(!a.duplicate))
        .map(|a| a.base_offset)
        .collect();
    bases.sort_unstable();
    let n = i64::try_from(PRODUCERS).expect("small");
    assert_eq!(bases, (0..n).map(|i| 2 * i).collect::<Vec<_>>(), "consecutive, no gap");
    // Those that queued were written by one SQL transaction.
    let raw = db.raw().await;
    let writers: i64 = raw
        .query_one(
            &format!(
                "SELECT count(DISTINCT xmin::text) FROM \"{}\".records WHERE \"offset\" >= 2",
                db.schema
            ),
            &[],
        )
        .await
        .expect("writers")
        .get(0);
    assert_eq!(writers, 1, "the queued appends were made together");

    // Round 1: among the queued ones, a producer whose partition was not
    // added and a fenced one: they are refused, the others appended.
    let (spid, sepoch) = txn.init_producer("stranger", 60_000, None).await.expect("init");
    txn.add_partitions(
        "stranger",
        spid,
        sepoch,
        &[(db.topic("elsewhere", partitions(1)).await, 0)],
    )
    .await
    .expect("add another partition");
    let (zpid, zepoch) = txn.init_producer("zombie", 60_000, None).await.expect("init");
    txn.add_partitions("zombie", zpid, zepoch, &[(t.clone(), 0)])
        .await
        .expect("add partition");
    txn.init_producer("zombie", 60_000, None).await.expect("new instance");
    let raw = hold_partition(&db).await;
    let first = start(&db, &t, &producers[0].0, producers[0].1, 1, 0);
    let out = queued_behind_one(raw, first, || {
        let mut rest: Vec<_> = producers
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, (id, p))| start(&db, &t, id, *p, 1, i))
            .collect();
        rest.push(start(&db, &t, "stranger", (spid, sepoch), 0, 98));
        rest.push(start(&db, &t, "zombie", (zpid, zepoch), 0, 99));
        rest
    })
    .await;
    for (i, o) in out.iter().take(PRODUCERS).enumerate() {
        assert!(matches!(o, Ok(a) if !a.duplicate), "append {i}: {o:?}");
    }
    assert!(
        matches!(
            &out[PRODUCERS],
            Err(Error::Transaction {
                refusal: TxnRefusal::PartitionNotAdded,
                ..
            })
        ),
        "{:?}",
        out[PRODUCERS]
    );
    assert!(
        matches!(
            &out[PRODUCERS + 1],
            Err(Error::Transaction {
                refusal: TxnRefusal::Fenced { .. },
                ..
            })
        ),
        "{:?}",
        out[PRODUCERS + 1]
    );

    // Every producer's two records of each round side by side, nothing of
    // the refused ones, and no state of theirs on the partition.
    let r = read_partition(&db.broker, &t, 0, 0, Isolation::ReadUncommitted).await;
    assert_eq!(r.high_watermark, 4 * n);
    let values: Vec<String> = r
        .records
        .iter()
        .map(|x| String::from_utf8_lossy(x.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    for pair in values.chunks(2) {
        let first = pair[0].strip_suffix("-0").expect("a batch's first record");
        assert_eq!(pair[1].strip_suffix("-1"), Some(first), "{values:?}");
    }
    assert!(values.iter().all(|v| !v.contains("-98-") && !v.contains("-99-")));
    let states = txn.producers(&t, 0).await.expect("producers");
    assert_eq!(states.len(), PRODUCERS);
    assert!(states.iter().all(|s| s.producer_id != spid && s.last_sequence == 3));
}

#[tokio::test]
async fn batches_for_several_partitions_sent_at_once_are_one_round_with_gap_free_offsets_on_each() {
    let db = TestDb::new().await;
    let t = db.topic("spread", partitions(4)).await;
    let txn = db.broker.transactions();
    let all: Vec<(TopicName, i32)> = (0..4).map(|p| (t.clone(), p)).collect();
    let producers = joined(&db, "spread", 2, &all).await;
    let raw = db.raw().await;
    for round in 0..2 {
        // Polled together, as a produce request's partitions are.
        let calls = producers.iter().flat_map(|(id, (pid, epoch))| {
            let t = &t;
            (0..4).map(move |p| {
                let values: Vec<String> = (0..2).map(|k| format!("{id}-{p}-{round}-{k}")).collect();
                async move {
                    txn.produce(id, t, p, &recs(&values), batch(*pid, *epoch, 2 * round))
                        .await
                }
            })
        });
        let out = futures_util::future::join_all(calls).await;
        for p in 0..4_usize {
            let mut bases: Vec<i64> = [p, 4 + p]
                .iter()
                .map(|&i| {
                    let a = out[i].as_ref().expect("appended");
                    assert!(!a.duplicate);
                    a.base_offset
                })
                .collect();
            bases.sort_unstable();
            let first = 4 * i64::from(round);
            assert_eq!(bases, vec![first, first + 2], "partition {p}, round {round}");
        }
        let writers: i64 = raw
            .query_one(
                &format!(
                    "SELECT count(DISTINCT xmin::text) FROM \"{}\".records WHERE \"offset\" >= $1",
                    db.schema
                ),
                &[&(4 * i64::from(round))],
            )
            .await
            .expect("writers")
            .get(0);
        assert_eq!(
            writers, 1,
            "round {round}: every partition's batches in one SQL transaction"
        );
    }
    // The transactions are open on every partition from offset 0.
    for p in 0..4 {
        assert_eq!(txn.last_stable_offset(&t, p).await.expect("lso"), 0);
    }
    for (id, (pid, epoch)) in &producers {
        txn.end(id, *pid, *epoch, true, None).await.expect("commit");
    }
    for p in 0..4 {
        let r = read_partition(&db.broker, &t, p, 0, Isolation::ReadCommitted).await;
        let values: Vec<String> = r
            .records
            .iter()
            .map(|x| String::from_utf8_lossy(x.value.as_deref().unwrap_or_default()).into_owned())
            .filter(|v| v.starts_with("spread-"))
            .collect();
        assert_eq!(values.len(), 8, "partition {p}: {values:?}");
        assert!(values.iter().all(|v| v.contains(&format!("-{p}-"))), "{values:?}");
        for (id, _) in &producers {
            let own: Vec<&String> = values.iter().filter(|v| v.starts_with(id.as_str())).collect();
            let expected: Vec<String> = (0..2)
                .flat_map(|round| (0..2).map(move |k| format!("{id}-{p}-{round}-{k}")))
                .collect();
            assert_eq!(own, expected.iter().collect::<Vec<_>>(), "partition {p}");
        }
    }
}

/// Sessions of the test's schema waiting for a lock.
async fn lock_waiters(raw: &tokio_postgres::Client, schema: &str) -> i64 {
    raw.query_one(
        "SELECT count(*) FROM pg_stat_activity
          WHERE wait_event_type = 'Lock' AND position($1 in query) > 0",
        &[&schema],
    )
    .await
    .expect("waiters")
    .get(0)
}

#[tokio::test]
async fn a_round_whose_caller_went_away_runs_to_its_end_before_the_next_one_starts() {
    let db = TestDb::new().await;
    let t = db.topic("out", partitions(1)).await;
    let producers = joined(&db, "gone", 2, &[(t.clone(), 0)]).await;
    let watcher = db.raw().await;
    let raw = hold_partition(&db).await;
    let first = start(&db, &t, &producers[0].0, producers[0].1, 0, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        lock_waiters(&watcher, &db.schema).await,
        1,
        "the first round waits for the partition"
    );
    first.abort();
    let second = start(&db, &t, &producers[1].0, producers[1].1, 0, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        lock_waiters(&watcher, &db.schema).await,
        1,
        "the next round waits for the first one to end, not for the partition beside it"
    );
    raw.batch_execute("COMMIT").await.expect("release");
    let appended = tokio::time::timeout(Duration::from_secs(30), second)
        .await
        .expect("answered in time")
        .expect("task")
        .expect("appended");
    assert_eq!(appended.base_offset, 2, "after the first round's batch");
    let r = read_partition(&db.broker, &t, 0, 0, Isolation::ReadUncommitted).await;
    let values: Vec<String> = r
        .records
        .iter()
        .map(|x| String::from_utf8_lossy(x.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(
        values,
        ["v0-0-0", "v0-0-1", "v0-1-0", "v0-1-1"],
        "the first round was made all the same"
    );
}
