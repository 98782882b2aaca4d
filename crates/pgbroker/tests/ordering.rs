//! Gap-free, ordered offsets under concurrent producers that commit late or
//! roll back, while consumers tail the partition.

use std::collections::HashSet;
use std::time::Duration;

use pgbroker::streams::FetchLimits;
use pgbroker::{Record, TopicName};
use pgbroker_testkit::database_url;
use pgbroker_testkit::db::{partitions, TestDb};
use rand::Rng;
use tokio_postgres::NoTls;

const PRODUCERS: usize = 16;
const BATCHES: usize = 12;

/// One producer: batches of 1 to 20 records, each in its own transaction,
/// with a random pause between the insert and the commit; about one batch
/// in five is rolled back. Half the producers use the outbox path (their own
/// transaction), half the pool path. Returns the values that committed.
async fn producer(db_broker: pgbroker::Broker, topic: TopicName, id: usize) -> (Vec<String>, Vec<String>) {
    let (mut client, conn) = tokio_postgres::connect(&database_url(), NoTls).await.expect("connect");
    tokio::spawn(conn);
    let (mut committed, mut rolled_back) = (Vec::new(), Vec::new());
    for b in 0..BATCHES {
        let (n, pause, rollback) = {
            let mut rng = rand::thread_rng();
            (rng.gen_range(1..=20), rng.gen_range(0..4u64), rng.gen_bool(0.2))
        };
        let values: Vec<String> = (0..n).map(|i| format!("p{id}-b{b}-r{i}")).collect();
        let records: Vec<Record> = values.iter().map(|v| Record::from_value(v.as_bytes())).collect();
        if id % 2 == 0 {
            let tx = client.transaction().await.expect("begin");
            db_broker
                .streams()
                .produce_in(&tx, &topic, Some(0), &records)
                .await
                .expect("produce_in");
            tokio::time::sleep(Duration::from_millis(pause)).await;
            if rollback {
                tx.rollback().await.expect("rollback");
                rolled_back.extend(values);
            } else {
                tx.commit().await.expect("commit");
                committed.extend(values);
            }
        } else {
            tokio::time::sleep(Duration::from_millis(pause)).await;
            db_broker
                .streams()
                .produce(&topic, Some(0), &records)
                .await
                .expect("produce");
            committed.extend(values);
        }
    }
    (committed, rolled_back)
}

/// Tails partition 0 with long-poll fetches until `end` is given and
/// reached. Returns (offset, value) in the order seen; gives up 10 s after
/// `end` is given (what is missing then fails the caller's assertion).
/// A broker may answer a tail read from its cache, confirmed against
/// Postgres within the last 500 ms, so a record committed in a caller's
/// own transaction may appear that much later: only the end read from
/// Postgres after every producer finished says when the tail is complete.
async fn tail(
    broker: pgbroker::Broker,
    topic: TopicName,
    end: tokio::sync::watch::Receiver<Option<i64>>,
    max_records: usize,
) -> Vec<(i64, String)> {
    let mut seen = Vec::new();
    let mut next = 0;
    let mut give_up = None;
    loop {
        let limits = FetchLimits {
            max_records,
            max_bytes: 1 << 20,
            max_wait: Duration::from_millis(50),
        };
        let r = broker.streams().fetch(&topic, 0, next, limits).await.expect("fetch");
        for rec in &r.records {
            assert_eq!(rec.offset, next, "gap or reordering");
            seen.push((
                rec.offset,
                String::from_utf8(rec.value.clone().expect("value").to_vec()).expect("utf8"),
            ));
            next += 1;
        }
        if let Some(end) = *end.borrow() {
            let deadline = *give_up.get_or_insert_with(|| std::time::Instant::now() + Duration::from_secs(10));
            if next >= end || std::time::Instant::now() > deadline {
                return seen;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_producers_never_leave_gaps() {
    let db = TestDb::new().await;
    let uncached = pgbroker::Broker::connect(pgbroker::BrokerConfig {
        database_url: database_url(),
        schema: db.schema.clone(),
        cache_bytes_per_partition: 0,
        ..pgbroker::BrokerConfig::default()
    })
    .await
    .expect("second broker");
    for iteration in 0..4 {
        // Small segments, so batches also cross segment boundaries.
        let config = pgbroker::TopicConfig {
            segment_records: 64,
            ..partitions(1)
        };
        let topic = db.topic(&format!("order-{iteration}"), config).await;
        let (end_tx, end_rx) = tokio::sync::watch::channel(None);
        // One tail reads through the producers' broker (and its record
        // cache), the other through a broker without a cache, so every read
        // of it is a query: both must see the same gap-free sequence.
        let tails: Vec<_> = [(db.broker.clone(), 7usize), (uncached.clone(), 500)]
            .into_iter()
            .map(|(broker, max)| tokio::spawn(tail(broker, topic.clone(), end_rx.clone(), max)))
            .collect();
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|id| tokio::spawn(producer(db.broker.clone(), topic.clone(), id)))
            .collect();
        let mut committed = HashSet::new();
        let mut rolled_back = HashSet::new();
        for p in producers {
            let (c, r) = p.await.expect("producer");
            committed.extend(c);
            rolled_back.extend(r);
        }
        let (_, hw) = db.broker.streams().watermarks(&topic, 0).await.expect("watermarks");
        assert_eq!(
            hw,
            i64::try_from(committed.len()).expect("fits"),
            "high watermark counts committed records"
        );
        end_tx.send(Some(hw)).expect("end");
        for t in tails {
            let seen = t.await.expect("tail");
            let offsets: Vec<i64> = seen.iter().map(|(o, _)| *o).collect();
            assert_eq!(offsets, (0..hw).collect::<Vec<_>>(), "every offset once, in order");
            let values: HashSet<String> = seen.into_iter().map(|(_, v)| v).collect();
            assert_eq!(values, committed, "exactly the committed records");
            assert!(values.is_disjoint(&rolled_back), "a rolled-back record was seen");
        }
        assert!(
            !rolled_back.is_empty() || iteration > 0,
            "the test should exercise rollbacks"
        );
    }
}
