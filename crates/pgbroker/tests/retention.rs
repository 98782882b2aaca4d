//! Retention drops whole segments: the log start advances, readers before
//! it get out-of-range, and storage stays bounded over many rotations.

use std::time::Duration;

use pgbroker::streams::{FetchLimits, OffsetReset};
use pgbroker::{Consumer, ConsumerConfig, Error, Record, TopicConfig};
use pgbroker_testkit::db::{partitions, TestDb};

async fn segment_tables(db: &TestDb) -> i64 {
    let client = db.raw().await;
    let row = client
        .query_one("SELECT count(*) FROM pg_partition_tree('records') WHERE isleaf", &[])
        .await
        .expect("count");
    row.get(0)
}

#[tokio::test]
async fn retention_by_bytes_keeps_storage_bounded() {
    let db = TestDb::new().await;
    let config = TopicConfig {
        segment_records: 50,
        retention_bytes: Some(200_000),
        ..partitions(1)
    };
    let t = db.topic("bounded", config).await;
    let payload = vec![7u8; 1024];
    let mut sizes = Vec::new();
    for round in 0..40 {
        let records: Vec<Record> = (0..50).map(|_| Record::from_value(payload.clone())).collect();
        db.broker
            .streams()
            .produce(&t, Some(0), &records)
            .await
            .expect("produce");
        db.broker.maintenance().enforce_retention().await.expect("retention");
        let d = db.broker.topics().describe(&t).await.expect("describe");
        let p = &d.partition_states[0];
        assert_eq!(p.high_watermark, (round + 1) * 50);
        sizes.push(p.bytes);
    }
    let d = db.broker.topics().describe(&t).await.expect("describe");
    let p = &d.partition_states[0];
    assert!(p.log_start_offset >= 1500, "log start advanced: {p:?}");
    assert_eq!(p.records, p.high_watermark - p.log_start_offset);
    // 2,000 records of 1 KiB were written; storage stays near the limit.
    let max = sizes.iter().max().copied().unwrap_or(0);
    assert!(max < 600_000, "partition grew to {max} bytes: {sizes:?}");
    assert!(segment_tables(&db).await <= 8, "old segment tables were dropped");
    // Nothing was ever DELETEd from the log: every row removed went with its table.
    let client = db.raw().await;
    let row = client
        .query_one(
            "SELECT coalesce(sum(n_tup_del), 0)::bigint FROM pg_stat_user_tables
             WHERE schemaname = current_schema() AND relname LIKE 'seg\\_%'",
            &[],
        )
        .await
        .expect("stats");
    assert_eq!(row.get::<_, i64>(0), 0);
    // A reader before the log start gets a clear answer...
    match db.broker.streams().fetch(&t, 0, 0, FetchLimits::default()).await {
        Err(e @ Error::OffsetOutOfRange { .. }) => assert!(e.to_string().contains("out of range")),
        other => panic!("expected out of range, got {other:?}"),
    }
    // ...and one at the log start reads on.
    let r = db
        .broker
        .streams()
        .fetch(&t, 0, p.log_start_offset, FetchLimits::default())
        .await
        .expect("fetch");
    assert_eq!(r.records[0].offset, p.log_start_offset);
}

#[tokio::test]
async fn retention_by_time_drops_only_old_segments() {
    let db = TestDb::new().await;
    let config = TopicConfig {
        segment_records: 10,
        retention: Some(Duration::from_millis(800)),
        ..partitions(1)
    };
    let t = db.topic("aging", config).await;
    let old: Vec<Record> = (0..30).map(|i| Record::from_value(format!("old{i}"))).collect();
    db.broker.streams().produce(&t, Some(0), &old).await.expect("produce");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let new: Vec<Record> = (0..25).map(|i| Record::from_value(format!("new{i}"))).collect();
    db.broker.streams().produce(&t, Some(0), &new).await.expect("produce");
    let dropped = db.broker.maintenance().enforce_retention().await.expect("retention");
    assert_eq!(dropped, 3, "the three old segments go, the new ones stay");
    let (start, end) = db.broker.streams().watermarks(&t, 0).await.expect("watermarks");
    assert_eq!((start, end), (30, 55));
    // A group consumer positioned before the log start is moved to it.
    let mut c = Consumer::new(
        db.broker.clone(),
        ConsumerConfig {
            reset: OffsetReset::Earliest,
            ..ConsumerConfig::new(vec![t.clone()], None)
        },
    )
    .await
    .expect("consumer");
    let tp = c.assignment()[0].clone();
    c.seek(&tp, 5).expect("seek");
    let mut got = Vec::new();
    while got.len() < 25 {
        got.extend(c.poll(Duration::from_millis(500)).await.expect("poll"));
    }
    assert_eq!(got[0].record.offset, 30);
    assert_eq!(got[0].record.value.as_deref(), Some(&b"new0"[..]));
}

#[tokio::test]
async fn deleting_a_topic_drops_its_segments() {
    let db = TestDb::new().await;
    let t = db
        .topic(
            "gone",
            TopicConfig {
                segment_records: 5,
                ..partitions(3)
            },
        )
        .await;
    let records: Vec<Record> = (0..40).map(|i| Record::from_value(format!("{i}"))).collect();
    db.broker.streams().produce(&t, None, &records).await.expect("produce");
    assert!(segment_tables(&db).await >= 3);
    db.broker.topics().delete(&t).await.expect("delete");
    assert_eq!(segment_tables(&db).await, 0);
    assert!(matches!(
        db.broker.topics().delete(&t).await,
        Err(Error::UnknownTopic(_))
    ));
    // The name can be used again and starts from offset 0.
    db.topic("gone", partitions(1)).await;
    let at = db
        .broker
        .streams()
        .produce(&t, Some(0), &[Record::from_value("x")])
        .await
        .expect("produce");
    assert_eq!(at[0].offset, 0);
}

/// The offset range of every segment of `topic`'s partition 0, and its
/// next offset.
async fn extent(db: &TestDb, topic: &str) -> (Vec<(i64, i64)>, i64) {
    let c = db.raw().await;
    let rows = c
        .query(
            "SELECT s.base_offset, s.end_offset FROM segments s
               JOIN partitions p ON p.id = s.partition_id JOIN topics t ON t.id = p.topic_id
              WHERE t.name = $1 ORDER BY 1",
            &[&topic],
        )
        .await
        .expect("segments");
    let next = c
        .query_one(
            "SELECT p.next_offset FROM partitions p JOIN topics t ON t.id = p.topic_id WHERE t.name = $1",
            &[&topic],
        )
        .await
        .expect("next offset");
    (rows.iter().map(|r| (r.get(0), r.get(1))).collect(), next.get(0))
}

/// Produces `values` to topic `emptied` through the SQL function, in
/// `schema`, committed at once.
async fn produce_through_sql(c: &tokio_postgres::Client, schema: &str, values: &[&str]) {
    c.query(
        &format!("SELECT * FROM {schema}.produce_batch('emptied', $1::text[])"),
        &[&values],
    )
    .await
    .expect("produce through SQL");
}

#[tokio::test]
async fn a_partition_left_without_segments_gets_them_from_its_next_offset() {
    let db = TestDb::new().await;
    let config = TopicConfig {
        segment_records: 10,
        retention: Some(Duration::from_millis(1)),
        ..partitions(1)
    };
    let t = db.topic("emptied", config).await;
    let c = db.raw().await;
    let s = &db.schema;
    // Produced through SQL, which makes no room ahead: the last segment
    // ends exactly at the next offset.
    for _ in 0..3 {
        produce_through_sql(&c, s, &["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]).await;
    }
    let (segments, next) = extent(&db, "emptied").await;
    assert_eq!(next, 30);
    assert_eq!(segments.last().map(|s| s.1), Some(30), "{segments:?}");
    // Retention drops every segment: all are full and old.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(db.broker.maintenance().enforce_retention().await.expect("retention") >= 3);
    assert_eq!(extent(&db, "emptied").await.0, vec![], "no segment is left");
    // The next write through SQL makes segments from offset 30 on, none
    // below it.
    produce_through_sql(&c, s, &["k", "l", "m"]).await;
    let (segments, next) = extent(&db, "emptied").await;
    assert_eq!(next, 33);
    assert_eq!(segments, vec![(30, 40)]);
    // Filled and emptied again, the same through the library.
    produce_through_sql(&c, s, &["n", "o", "p", "q", "r", "s", "t"]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    db.broker.maintenance().enforce_retention().await.expect("retention");
    assert_eq!(extent(&db, "emptied").await, (vec![], 40));
    let records: Vec<Record> = (0..3).map(|i| Record::from_value(vec![i])).collect();
    let at = db
        .broker
        .streams()
        .produce(&t, Some(0), &records)
        .await
        .expect("produce");
    assert_eq!(at.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![40, 41, 42]);
    let (segments, next) = extent(&db, "emptied").await;
    assert_eq!(next, 43);
    assert_eq!(segments.first(), Some(&(40, 50)), "{segments:?}");
    let before = db.broker.streams().fetch(&t, 0, 30, FetchLimits::default()).await;
    assert!(matches!(before, Err(Error::OffsetOutOfRange { .. })), "{before:?}");
    let r = db
        .broker
        .streams()
        .fetch(&t, 0, 40, FetchLimits::default())
        .await
        .expect("fetch");
    assert_eq!(r.records.len(), 3);
}
