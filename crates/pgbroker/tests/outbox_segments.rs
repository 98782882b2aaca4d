//! The outbox path across segment boundaries: one caller transaction that
//! produces again and again, past the segments that existed when it began,
//! to one partition and, by key, to several in one call. Each new segment
//! is created on another connection while the caller's transaction already
//! holds `records`; its inserts must still find it.

use std::collections::BTreeMap;

use pgbroker::streams::FetchLimits;
use pgbroker::{Record, TopicConfig};
use pgbroker_testkit::db::TestDb;

/// A topic whose segments hold 8 records, so a few batches cross several.
fn small_segments(partitions: i32) -> TopicConfig {
    TopicConfig {
        partitions,
        segment_records: 8,
        ..TopicConfig::default()
    }
}

#[tokio::test]
async fn one_transaction_produces_past_the_segments_it_began_with() {
    let db = TestDb::new().await;
    let t = db.topic("outbox-segments", small_segments(3)).await;
    let mut client = db.raw().await;
    let tx = client.transaction().await.expect("begin");
    let mut expected: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    for round in 0..6 {
        let values: Vec<String> = (0..7).map(|i| format!("p0-{round}-{i}")).collect();
        let records: Vec<Record> = values.iter().map(|v| Record::from_value(v.as_bytes())).collect();
        let at = db
            .broker
            .streams()
            .produce_in(&tx, &t, Some(0), &records)
            .await
            .expect("produce_in to one partition");
        for (pos, v) in at.iter().zip(values) {
            expected.entry(pos.partition).or_default().push((pos.offset, v));
        }
        let values: Vec<String> = (0..9).map(|i| format!("k-{round}-{i}")).collect();
        let records: Vec<Record> = values
            .iter()
            .map(|v| Record::keyed(v.as_bytes(), v.as_bytes()))
            .collect();
        let at = db
            .broker
            .streams()
            .produce_in(&tx, &t, None, &records)
            .await
            .expect("produce_in by key");
        for (pos, v) in at.iter().zip(values) {
            expected.entry(pos.partition).or_default().push((pos.offset, v));
        }
    }
    tx.commit().await.expect("commit");

    assert!(
        expected.len() > 1,
        "the keys spread over several partitions: {:?}",
        expected.keys()
    );
    let limits = FetchLimits {
        max_records: 1000,
        ..FetchLimits::default()
    };
    for (partition, mut want) in expected {
        want.sort();
        let offsets: Vec<i64> = want.iter().map(|(o, _)| *o).collect();
        let count = i64::try_from(want.len()).expect("fits");
        assert_eq!(
            offsets,
            (0..count).collect::<Vec<_>>(),
            "partition {partition}: gap-free"
        );
        assert!(
            count > 8,
            "partition {partition} crossed a segment boundary ({count} records)"
        );
        let got = db
            .broker
            .streams()
            .fetch(&t, partition, 0, limits)
            .await
            .expect("fetch");
        let got: Vec<(i64, String)> = got
            .records
            .iter()
            .map(|r| {
                let v = r.value.clone().expect("value");
                (r.offset, String::from_utf8(v.to_vec()).expect("utf8"))
            })
            .collect();
        assert_eq!(got, want, "partition {partition}: every record, in order");
    }
}

/// A caller's transaction holds the partition's row lock and needs a new
/// segment while every pooled connection waits for that lock: the segment
/// is created on connections of its own, so nothing waits forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_is_created_while_the_pool_waits_on_the_partition() {
    let db = TestDb::new().await;
    let t = db.topic("pool-wait", small_segments(1)).await;
    let small = pgbroker::Broker::connect(pgbroker::BrokerConfig {
        database_url: pgbroker_testkit::database_url(),
        schema: db.schema.clone(),
        pool_size: 1,
        ..pgbroker::BrokerConfig::default()
    })
    .await
    .expect("broker with one pooled connection");
    let mut client = db.raw().await;
    let tx = client.transaction().await.expect("begin");
    small
        .streams()
        .produce_in(&tx, &t, Some(0), &[Record::from_value("first")])
        .await
        .expect("produce_in");
    // The pooled connection now waits for the row lock the caller holds;
    // the second produce waits in the process behind the first, to be
    // made together with it.
    let waiting: Vec<_> = (0..2)
        .map(|i| {
            let (b, t) = (small.clone(), t.clone());
            tokio::spawn(async move {
                b.streams()
                    .produce(&t, Some(0), &[Record::from_value(format!("pooled {i}"))])
                    .await
            })
        })
        .collect();
    let raw = db.raw().await;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let blocked: i64 = raw
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()
                   AND query LIKE '%next_offset%'",
                &[],
            )
            .await
            .expect("activity")
            .get(0);
        if blocked >= 1 {
            break;
        }
        assert!(std::time::Instant::now() < until, "the pooled produces never blocked");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Far past the segments that exist: new ones are needed now.
    let many: Vec<Record> = (0..40).map(|i| Record::from_value(format!("many {i}"))).collect();
    let at = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        small.streams().produce_in(&tx, &t, Some(0), &many),
    )
    .await
    .expect("produce_in finished: segment creation did not wait for the pool")
    .expect("produce_in");
    assert_eq!(at.last().map(|p| p.offset), Some(40));
    tx.commit().await.expect("commit");
    for w in waiting {
        w.await.expect("task").expect("pooled produce");
    }
    assert_eq!(small.streams().watermarks(&t, 0).await.expect("watermarks"), (0, 43));
}
