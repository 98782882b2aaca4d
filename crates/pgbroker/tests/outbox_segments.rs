//! The outbox path across segment boundaries: one caller transaction that
//! produces again and again, past the segments that existed when it began,
//! to one partition and, by key, to several in one call. Each new segment
//! is created on another connection while the caller's transaction already
//! holds `records`; its inserts must still find it.

mod common;

use std::collections::BTreeMap;

use common::TestDb;
use pgbroker::{FetchLimits, Record, TopicConfig};

#[tokio::test]
async fn one_transaction_produces_past_the_segments_it_began_with() {
    let db = TestDb::new().await;
    let config = TopicConfig {
        partitions: 3,
        segment_records: 8,
        ..TopicConfig::default()
    };
    let t = db.topic("outbox-segments", config).await;
    let mut client = db.raw().await;
    let tx = client.transaction().await.expect("begin");
    let mut expected: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    for round in 0..6 {
        let values: Vec<String> = (0..7).map(|i| format!("p0-{round}-{i}")).collect();
        let records: Vec<Record> = values.iter().map(|v| Record::from_value(v.as_bytes())).collect();
        let at = db
            .broker
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
        let got = db.broker.fetch(&t, partition, 0, limits).await.expect("fetch");
        let got: Vec<(i64, String)> = got
            .records
            .iter()
            .map(|r| {
                let v = r.value.clone().expect("value");
                (r.offset, String::from_utf8(v).expect("utf8"))
            })
            .collect();
        assert_eq!(got, want, "partition {partition}: every record, in order");
    }
    db.drop().await;
}
