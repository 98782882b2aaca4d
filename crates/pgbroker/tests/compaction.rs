//! Compacted topics: the latest record of each key survives, offsets never
//! change, tombstones go after their horizon, readers step over holes,
//! storage shrinks without dead tuples, and compaction racing producers
//! and consumers loses nothing.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use pgbroker::streams::{Cleanup, CleanupPolicy, FetchLimits};
use pgbroker::{Error, Invalid, Record, TopicConfig, TopicName};
use pgbroker_testkit::db::TestDb;

fn compacted(segment_records: i64, delete_retention_ms: i64) -> TopicConfig {
    TopicConfig {
        segment_records,
        cleanup: Cleanup {
            policy: CleanupPolicy::Compact,
            delete_retention_ms,
            ..Cleanup::default()
        },
        ..TopicConfig::default()
    }
}

fn tombstone(key: &str) -> Record {
    Record {
        key: Some(key.as_bytes().to_vec().into()),
        ..Record::default()
    }
}

/// Every record of partition 0 from `from`, following `next_offset`.
async fn read_all(db: &TestDb, t: &TopicName, from: i64) -> Vec<pgbroker::StoredRecord> {
    let limits = FetchLimits {
        max_records: 997,
        ..FetchLimits::default()
    };
    let mut out = Vec::new();
    let mut at = from;
    loop {
        let r = db.broker.streams().fetch(t, 0, at, limits).await.expect("fetch");
        assert!(r.next_offset >= at, "fetch went backwards");
        out.extend(r.records);
        if r.next_offset >= r.high_watermark || r.next_offset == at {
            return out;
        }
        at = r.next_offset;
    }
}

/// Bytes and dead tuples of the partition's segment tables. Dead tuples
/// are counted by reading the tables (pgstattuple), not from the
/// statistics, which other sessions flush late.
async fn storage(db: &TestDb) -> (i64, i64) {
    let c = db.raw().await;
    c.batch_execute("CREATE EXTENSION IF NOT EXISTS pgstattuple SCHEMA public")
        .await
        .expect("pgstattuple");
    let row = c
        .query_one(
            "SELECT coalesce(sum(pg_total_relation_size(to_regclass(s.table_name))), 0)::bigint,
                    coalesce(sum((public.pgstattuple(to_regclass(s.table_name))).dead_tuple_count), 0)::bigint
             FROM segments s WHERE NOT s.dropping",
            &[],
        )
        .await
        .expect("sizes");
    (row.get(0), row.get(1))
}

fn key(k: usize) -> String {
    format!("key-{k:04}")
}

/// The scenario: 1,000 keys written 100 times each, 100 of them
/// then deleted; after compaction and the tombstone horizon a full read
/// returns exactly the latest value of each live key, at the offset it was
/// written at.
#[tokio::test]
async fn latest_value_of_each_key_survives_at_its_offset() {
    let db = TestDb::new().await;
    // 100,100 offsets fill exactly 100 segments, so all of them close.
    let t = db.topic("state", compacted(1001, 0)).await;
    // Key k is written in rounds k % 50 .. k % 50 + 100, so the last
    // values end up spread over the last half of the log.
    let mut latest: HashMap<String, (i64, Option<Vec<u8>>)> = HashMap::new();
    for round in 0..150usize {
        let batch: Vec<Record> = (0..1000)
            .filter(|k| (k % 50..k % 50 + 100).contains(&round))
            .map(|k| Record::keyed(key(k), format!("{}@{round}", key(k))))
            .collect();
        let at = db.broker.streams().produce(&t, Some(0), &batch).await.expect("produce");
        for (r, pos) in batch.iter().zip(at) {
            let k = String::from_utf8(r.key.clone().expect("key").to_vec()).expect("utf8");
            latest.insert(k, (pos.offset, r.value.as_deref().map(<[u8]>::to_vec)));
        }
    }
    let tombstones: Vec<Record> = (0..100).map(|k| tombstone(&key(k))).collect();
    let at = db
        .broker
        .streams()
        .produce(&t, Some(0), &tombstones)
        .await
        .expect("tombstones");
    for (k, pos) in (0..100).zip(at) {
        latest.insert(key(k), (pos.offset, None));
    }
    let hw = db.broker.streams().watermarks(&t, 0).await.expect("watermarks").1;
    assert_eq!(hw, 100_100);

    // A record without a key is refused and changes nothing.
    let refused = db
        .broker
        .streams()
        .produce(&t, Some(0), &[Record::from_value("x")])
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::Invalid {
                what: Invalid::RecordKey,
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(db.broker.streams().watermarks(&t, 0).await.expect("watermarks").1, hw);

    // A consumer positioned at offset 10, about to be removed.
    let (bytes_before, _) = storage(&db).await;
    let first = db.broker.maintenance().compact(false).await.expect("compact");
    assert_eq!(first.partitions_cleaned, 1);
    assert_eq!(first.records_removed, 100_100 - 1000, "{first:?}");
    // The tombstones stay until their horizon: one more pass removes them.
    let after_first = read_all(&db, &t, 0).await;
    assert_eq!(after_first.len(), 1000);
    assert_eq!(after_first.iter().filter(|r| r.value.is_none()).count(), 100);
    let second = db.broker.maintenance().compact(false).await.expect("compact");
    assert_eq!(second.records_removed, 100, "{second:?}");
    let third = db.broker.maintenance().compact(false).await.expect("compact");
    assert_eq!(third.partitions_cleaned, 0, "nothing left to do: {third:?}");

    let records = read_all(&db, &t, 0).await;
    let expected: BTreeMap<i64, Vec<u8>> = latest
        .values()
        .filter_map(|(o, v)| v.clone().map(|v| (*o, v)))
        .collect();
    assert_eq!(expected.len(), 900);
    let got: BTreeMap<i64, Vec<u8>> = records
        .iter()
        .map(|r| (r.offset, r.value.clone().expect("no tombstone left").to_vec()))
        .collect();
    assert_eq!(got.len(), records.len(), "each offset once");
    assert_eq!(
        got, expected,
        "exactly the latest value of each live key, at its offset"
    );
    assert!(records.windows(2).all(|w| w[0].offset < w[1].offset), "ascending");
    assert!(records.last().expect("records").offset < hw);
    assert_eq!(
        db.broker.streams().watermarks(&t, 0).await.expect("watermarks"),
        (0, hw),
        "offsets and watermarks never change"
    );

    // A reader inside a removed range goes on from the next survivor.
    let removed = 10;
    assert!(!expected.contains_key(&removed));
    let next_survivor = *expected.keys().find(|o| **o > removed).expect("a survivor");
    let r = db
        .broker
        .streams()
        .fetch(&t, 0, removed, FetchLimits::default())
        .await
        .expect("fetch inside a hole");
    assert_eq!(r.records.first().map(|r| r.offset), Some(next_survivor));
    // Past the last survivor the read steps over the removed tail.
    let last = *expected.keys().last().expect("survivors");
    let tail = db
        .broker
        .streams()
        .fetch(&t, 0, last + 1, FetchLimits::default())
        .await
        .expect("fetch in the removed tail");
    assert!(tail.records.is_empty());
    assert_eq!(tail.next_offset, hw);

    let (bytes_after, dead_after) = storage(&db).await;
    eprintln!("segment bytes before {bytes_before}, after {bytes_after}; dead tuples after {dead_after}");
    assert!(bytes_after * 4 < bytes_before, "{bytes_before} -> {bytes_after}");
    assert_eq!(dead_after, 0, "no dead tuples left behind");
}

/// Compaction keeps its hands off the active segment, records younger
/// than `min.compaction.lag.ms`, and topics whose policy is `delete`.
#[tokio::test]
async fn limits_of_the_cleaner() {
    let db = TestDb::new().await;
    let young = TopicConfig {
        cleanup: Cleanup {
            min_compaction_lag_ms: 3_600_000,
            ..compacted(10, 0).cleanup
        },
        ..compacted(10, 0)
    };
    let lagged = db.topic("lagged", young).await;
    let active = db.topic("active", compacted(1000, 0)).await;
    let plain = db
        .topic(
            "plain",
            TopicConfig {
                segment_records: 10,
                ..TopicConfig::default()
            },
        )
        .await;
    for t in [&lagged, &active, &plain] {
        let batch: Vec<Record> = (0..50).map(|i| Record::keyed("same", format!("{i}"))).collect();
        db.broker.streams().produce(t, Some(0), &batch).await.expect("produce");
    }
    let report = db.broker.maintenance().compact(true).await.expect("compact");
    assert_eq!(report.records_removed, 0, "{report:?}");
    for t in [&lagged, &active, &plain] {
        assert_eq!(read_all(&db, t, 0).await.len(), 50, "{t}");
    }
    // Once the lag is lifted, the five closed segments are compacted to
    // the latest record of the key.
    let mut config = db.broker.topics().info(&lagged).await.expect("info").config();
    config.cleanup.min_compaction_lag_ms = 0;
    db.broker.topics().alter(&lagged, &config).await.expect("alter");
    let report = db.broker.maintenance().compact(true).await.expect("compact");
    assert_eq!(report.records_removed, 49, "{report:?}");
    let left: Vec<i64> = read_all(&db, &lagged, 0).await.iter().map(|r| r.offset).collect();
    assert_eq!(left, vec![49]);
}

/// Settings are validated: a refused change changes nothing.
#[tokio::test]
async fn bad_settings_change_nothing() {
    let db = TestDb::new().await;
    let t = db.topic("conf", compacted(100, 5)).await;
    let before = db.broker.topics().info(&t).await.expect("info");
    assert_eq!(before.cleanup.policy, CleanupPolicy::Compact);
    assert_eq!(before.cleanup.delete_retention_ms, 5);
    for bad in [
        Cleanup {
            min_cleanable_dirty_ratio: 1.5,
            ..before.cleanup
        },
        Cleanup {
            max_compaction_lag_ms: 0,
            ..before.cleanup
        },
        Cleanup {
            delete_retention_ms: -1,
            ..before.cleanup
        },
        Cleanup {
            min_compaction_lag_ms: -1,
            ..before.cleanup
        },
    ] {
        let mut config = before.config();
        config.cleanup = bad;
        let r = db.broker.topics().alter(&t, &config).await;
        assert!(matches!(r, Err(Error::Invalid { .. })), "{bad:?}: {r:?}");
    }
    let mut config = before.config();
    config.segment_records = 7;
    assert!(db.broker.topics().alter(&t, &config).await.is_err());
    assert_eq!(db.broker.topics().info(&t).await.expect("info"), before);
    let mut config = before.config();
    config.cleanup.policy = CleanupPolicy::CompactDelete;
    config.retention = Some(Duration::from_secs(60));
    let after = db.broker.topics().alter(&t, &config).await.expect("alter");
    assert_eq!(after.cleanup.policy, CleanupPolicy::CompactDelete);
    assert_eq!(after.retention_ms, Some(60_000));
    assert!("compact,compact".parse::<CleanupPolicy>().is_err());
}

/// A producer and a consumer run while a cleaner compacts over and over:
/// the consumer sees every key's values in order and ends on each key's
/// last value, and a final read holds exactly the last value of each key.
#[tokio::test]
async fn compaction_during_producers_and_consumers_loses_nothing() {
    let db = TestDb::new().await;
    let t = db.topic("busy", compacted(300, 0)).await;
    const KEYS: usize = 150;
    const ROUNDS: usize = 60;
    let producer = {
        let broker = db.broker.clone();
        let t = t.clone();
        tokio::spawn(async move {
            for round in 0..ROUNDS {
                let batch: Vec<Record> = (0..KEYS).map(|k| Record::keyed(key(k), round.to_string())).collect();
                broker.streams().produce(&t, Some(0), &batch).await.expect("produce");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let consumer = {
        let broker = db.other_broker().await;
        let t = t.clone();
        tokio::spawn(async move {
            let mut seen: HashMap<String, usize> = HashMap::new();
            let mut at = 0;
            let limits = FetchLimits {
                max_records: 200,
                max_wait: Duration::from_millis(50),
                ..FetchLimits::default()
            };
            loop {
                let r = broker.streams().fetch(&t, 0, at, limits).await.expect("fetch");
                for rec in &r.records {
                    let k = String::from_utf8(rec.key.clone().expect("key").to_vec()).expect("utf8");
                    let v: usize = String::from_utf8(rec.value.clone().expect("value").to_vec())
                        .expect("utf8")
                        .parse()
                        .expect("round");
                    let prev = seen.insert(k.clone(), v);
                    assert!(prev.is_none_or(|p| p < v), "{k}: {prev:?} then {v}");
                }
                at = r.next_offset;
                let done = seen.len() == KEYS && seen.values().all(|v| *v == ROUNDS - 1);
                if done {
                    return seen;
                }
            }
        })
    };
    let cleaner = {
        let broker = db.broker.clone();
        tokio::spawn(async move {
            let mut removed = 0;
            for _ in 0..400 {
                removed += broker
                    .maintenance()
                    .compact(true)
                    .await
                    .expect("compact")
                    .records_removed;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            removed
        })
    };
    producer.await.expect("producer");
    let seen = tokio::time::timeout(Duration::from_secs(60), consumer)
        .await
        .expect("the consumer reaches every last value")
        .expect("consumer");
    assert_eq!(seen.len(), KEYS);
    let removed = cleaner.await.expect("cleaner");
    assert!(removed > 0, "the cleaner ran while producing");
    db.broker.maintenance().compact(true).await.expect("compact");
    let records = read_all(&db, &t, 0).await;
    let mut last: HashMap<String, String> = HashMap::new();
    for r in &records {
        let k = String::from_utf8(r.key.clone().expect("key").to_vec()).expect("utf8");
        last.insert(
            k,
            String::from_utf8(r.value.clone().expect("value").to_vec()).expect("utf8"),
        );
    }
    assert_eq!(last.len(), KEYS);
    assert!(last.values().all(|v| *v == (ROUNDS - 1).to_string()), "{last:?}");
    // Only the active segment keeps more than one record per key.
    let hw = db.broker.streams().watermarks(&t, 0).await.expect("watermarks").1;
    let closed_end = hw - hw % 300;
    let closed = records.iter().filter(|r| r.offset < closed_end).count();
    assert!(closed <= KEYS, "{closed} records in closed segments");
}
