//! Produce and fetch: keys, headers, null values, limits, offsets, long
//! polls, the outbox and the batching producer.

use std::time::{Duration, Instant, SystemTime};

use pgbroker::partitioner::partition_for_key;
use pgbroker::streams::{FetchLimits, OffsetSpec};
use pgbroker::{Error, Header, ProducerConfig, Record, TopicConfig, TopicName};
use pgbroker_testkit::db::{partitions, TestDb};

fn limits(max_records: usize) -> FetchLimits {
    FetchLimits {
        max_records,
        ..FetchLimits::default()
    }
}

#[tokio::test]
async fn records_round_trip_with_keys_headers_and_nulls() {
    let db = TestDb::new().await;
    let t = db.topic("rt", partitions(1)).await;
    let ts = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    let records = vec![
        Record {
            key: Some(b"k1".to_vec().into()),
            value: Some(vec![0, 159, 255].into()),
            headers: vec![
                Header {
                    key: "h".into(),
                    value: Some(b"1".to_vec()),
                },
                Header {
                    key: "h".into(),
                    value: None,
                },
            ],
            timestamp: Some(ts),
        },
        Record {
            key: None,
            value: None,
            headers: vec![],
            timestamp: None,
        },
    ];
    let before = SystemTime::now() - Duration::from_secs(5);
    let at = db
        .broker
        .streams()
        .produce(&t, Some(0), &records)
        .await
        .expect("produce");
    assert_eq!(at.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![0, 1]);
    let got = db.broker.streams().fetch(&t, 0, 0, limits(10)).await.expect("fetch");
    assert_eq!(got.high_watermark, 2);
    assert_eq!(got.records.len(), 2);
    let (a, b) = (&got.records[0], &got.records[1]);
    assert_eq!(a.key, records[0].key);
    assert_eq!(a.value, records[0].value);
    assert_eq!(a.headers, records[0].headers);
    assert_eq!(a.timestamp, ts);
    assert_eq!((b.key.clone(), b.value.clone(), b.headers.len()), (None, None, 0));
    assert!(b.timestamp > before, "write time used when no timestamp given");
}

#[tokio::test]
async fn keys_pick_kafkas_partition() {
    let db = TestDb::new().await;
    let t = db.topic("keyed", partitions(5)).await;
    let records: Vec<Record> = (0..50).map(|i| Record::keyed(format!("user-{i}"), "v")).collect();
    let at = db.broker.streams().produce(&t, None, &records).await.expect("produce");
    for (r, pos) in records.iter().zip(&at) {
        let key = r.key.as_deref().expect("key");
        assert_eq!(pos.partition, partition_for_key(key, 5));
    }
    // Offsets per partition are consecutive from 0.
    for p in 0..5 {
        let mut offs: Vec<i64> = at.iter().filter(|x| x.partition == p).map(|x| x.offset).collect();
        offs.sort();
        assert_eq!(offs, (0..i64::try_from(offs.len()).expect("fits")).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn fetch_limits_and_out_of_range() {
    let db = TestDb::new().await;
    let t = db.topic("limits", partitions(2)).await;
    let records: Vec<Record> = (0..20).map(|i| Record::from_value(vec![b'x'; 100 + i])).collect();
    db.broker
        .streams()
        .produce(&t, Some(1), &records)
        .await
        .expect("produce");
    let r = db.broker.streams().fetch(&t, 1, 5, limits(4)).await.expect("fetch");
    assert_eq!(r.records.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![5, 6, 7, 8]);
    let small = FetchLimits {
        max_records: 100,
        max_bytes: 250,
        max_wait: Duration::ZERO,
    };
    let r = db.broker.streams().fetch(&t, 1, 0, small).await.expect("fetch");
    assert_eq!(r.records.len(), 2, "max_bytes bounds the answer");
    let tiny = FetchLimits {
        max_records: 100,
        max_bytes: 1,
        max_wait: Duration::ZERO,
    };
    let r = db.broker.streams().fetch(&t, 1, 3, tiny).await.expect("fetch");
    assert_eq!(r.records.len(), 1, "the first record always comes back");
    let r = db
        .broker
        .streams()
        .fetch(&t, 1, 20, limits(10))
        .await
        .expect("fetch at high watermark");
    assert!(r.records.is_empty());
    match db.broker.streams().fetch(&t, 1, 21, limits(10)).await {
        Err(Error::OffsetOutOfRange { high_watermark: 20, .. }) => {}
        other => panic!("expected out of range, got {other:?}"),
    }
    match db.broker.streams().fetch(&t, 1, -1, limits(10)).await {
        Err(Error::OffsetOutOfRange { log_start: 0, .. }) => {}
        other => panic!("expected out of range, got {other:?}"),
    }
    assert!(matches!(
        db.broker.streams().fetch(&t, 2, 0, limits(1)).await,
        Err(Error::UnknownPartition {
            partition: 2,
            count: 2,
            ..
        })
    ));
}

#[tokio::test]
async fn resolves_earliest_latest_and_timestamps() {
    let db = TestDb::new().await;
    let t = db.topic("times", partitions(1)).await;
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let records: Vec<Record> = (0..10u64)
        .map(|i| Record {
            value: Some(vec![1].into()),
            timestamp: Some(base + Duration::from_secs(i * 10)),
            ..Record::default()
        })
        .collect();
    db.broker
        .streams()
        .produce(&t, Some(0), &records)
        .await
        .expect("produce");
    let b = &db.broker;
    assert_eq!(
        b.streams()
            .resolve_offset(&t, 0, OffsetSpec::Earliest)
            .await
            .expect("earliest"),
        0
    );
    assert_eq!(
        b.streams()
            .resolve_offset(&t, 0, OffsetSpec::Latest)
            .await
            .expect("latest"),
        10
    );
    let at = |s: u64| OffsetSpec::Timestamp(base + Duration::from_secs(s));
    assert_eq!(b.streams().resolve_offset(&t, 0, at(0)).await.expect("ts"), 0);
    assert_eq!(b.streams().resolve_offset(&t, 0, at(35)).await.expect("ts"), 4);
    assert_eq!(b.streams().resolve_offset(&t, 0, at(90)).await.expect("ts"), 9);
    assert_eq!(
        b.streams().resolve_offset(&t, 0, at(1000)).await.expect("ts"),
        10,
        "none later: high watermark"
    );
}

/// Median time from a produce starting to a waiting fetch returning, for a
/// fetch served by `reader` and records written by `writer`.
async fn wake_latency(reader: &pgbroker::Broker, writer: &pgbroker::Broker, t: &TopicName) -> Duration {
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let (_, next) = reader.streams().watermarks(t, 0).await.expect("watermarks");
        let (broker, topic) = (reader.clone(), t.clone());
        let long = FetchLimits {
            max_wait: Duration::from_secs(10),
            ..FetchLimits::default()
        };
        let waiter = tokio::spawn(async move {
            let r = broker.streams().fetch(&topic, 0, next, long).await.expect("fetch");
            (Instant::now(), r.records.len())
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = Instant::now();
        writer
            .streams()
            .produce(t, Some(0), &[Record::from_value("x")])
            .await
            .expect("produce");
        let (woke, n) = waiter.await.expect("waiter");
        assert_eq!(n, 1);
        latencies.push(woke.duration_since(sent));
    }
    latencies.sort();
    latencies[2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_on_commit_not_on_timer() {
    let db = TestDb::new().await;
    let t = db.topic("poll", partitions(1)).await;
    // Readers that re-read on their own only every 30 s, so a wake-up
    // within seconds came from the commit: in the writer's own process, and
    // in another broker, as another pgbroker process would be, that learns
    // of commits only through NOTIFY. The bound leaves room for a busy
    // machine; medians guard against one slow scheduling.
    let slow = Duration::from_secs(30);
    let (reader, other) = (db.broker_polling_every(slow).await, db.broker_polling_every(slow).await);
    let local = wake_latency(&reader, &reader, &t).await;
    assert!(local < Duration::from_secs(5), "same process: {local:?}");
    let remote = wake_latency(&other, &db.broker, &t).await;
    assert!(remote < Duration::from_secs(5), "other process, by NOTIFY: {remote:?}");
    // A poll with nothing to read waits its full time and returns empty.
    let wait = FetchLimits {
        max_wait: Duration::from_millis(100),
        ..FetchLimits::default()
    };
    let started = Instant::now();
    let r = db.broker.streams().fetch(&t, 0, 10, wait).await.expect("fetch");
    assert!(r.records.is_empty() && started.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn outbox_is_visible_only_after_commit() {
    let db = TestDb::new().await;
    let t = db.topic("outbox", partitions(1)).await;
    let mut client = db.raw().await;
    client
        .batch_execute("CREATE TABLE orders (id int PRIMARY KEY)")
        .await
        .expect("table");

    let tx = client.transaction().await.expect("begin");
    tx.execute("INSERT INTO orders VALUES (1)", &[]).await.expect("order");
    db.broker
        .streams()
        .produce_in(&tx, &t, Some(0), &[Record::from_value("rolled back")])
        .await
        .expect("produce");
    assert!(
        db.broker
            .streams()
            .fetch(&t, 0, 0, limits(10))
            .await
            .expect("fetch")
            .records
            .is_empty(),
        "visible before commit"
    );
    tx.rollback().await.expect("rollback");
    assert!(db
        .broker
        .streams()
        .fetch(&t, 0, 0, limits(10))
        .await
        .expect("fetch")
        .records
        .is_empty());

    let tx = client.transaction().await.expect("begin");
    tx.execute("INSERT INTO orders VALUES (2)", &[]).await.expect("order");
    let at = db
        .broker
        .streams()
        .produce_in(&tx, &t, Some(0), &[Record::from_value("committed")])
        .await
        .expect("produce");
    assert!(db
        .broker
        .streams()
        .fetch(&t, 0, 0, limits(10))
        .await
        .expect("fetch")
        .records
        .is_empty());
    tx.commit().await.expect("commit");
    assert_eq!(at[0].offset, 0, "the rolled-back batch left no gap");
    let r = db.broker.streams().fetch(&t, 0, 0, limits(10)).await.expect("fetch");
    assert_eq!(r.records.len(), 1);
    assert_eq!(r.records[0].value.as_deref(), Some(&b"committed"[..]));
}

/// The outbox statements name pgbroker's schema themselves: they work
/// whatever the caller's connection has as its search_path.
#[tokio::test]
async fn outbox_works_on_a_connection_with_another_search_path() {
    let db = TestDb::new().await;
    let t = db.topic("elsewhere", partitions(1)).await;
    let mut client = db.raw().await;
    client
        .batch_execute("SET search_path = public")
        .await
        .expect("search_path");
    let tx = client.transaction().await.expect("begin");
    let at = db
        .broker
        .streams()
        .produce_in(&tx, &t, Some(0), &[Record::from_value("a"), Record::from_value("b")])
        .await
        .expect("produce_in");
    tx.commit().await.expect("commit");
    assert_eq!(at.iter().map(|p| p.offset).collect::<Vec<_>>(), [0, 1]);
    let r = db.broker.streams().fetch(&t, 0, 0, limits(10)).await.expect("fetch");
    assert_eq!(r.records.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batching_producer_coalesces_and_reports_each_offset() {
    let db = TestDb::new().await;
    let t = db.topic("batched", partitions(3)).await;
    let producer = db.broker.streams().producer(ProducerConfig {
        linger: Duration::from_millis(20),
        ..ProducerConfig::default()
    });
    let sends: Vec<_> = (0..300)
        .map(|i| {
            let (p, t) = (producer.clone(), t.clone());
            tokio::spawn(async move { (i, p.send(&t, Some(i % 3), Record::from_value(format!("m{i}"))).await) })
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for s in sends {
        let (i, res) = s.await.expect("task");
        let pos = res.expect("send");
        assert_eq!(pos.partition, i % 3);
        let r = db
            .broker
            .streams()
            .fetch(&t, pos.partition, pos.offset, limits(1))
            .await
            .expect("fetch");
        assert_eq!(
            r.records[0].value.as_deref(),
            Some(format!("m{i}").as_bytes()),
            "offset reported to its sender"
        );
        assert!(seen.insert((pos.partition, pos.offset)));
    }
    // 300 sends in few statements: each statement is one NOTIFY-carrying
    // commit, so count the distinct commit times (one ts per statement).
    let client = db.raw().await;
    let row = client
        .query_one("SELECT count(DISTINCT ts) FROM records", &[])
        .await
        .expect("count");
    let statements: i64 = row.get(0);
    assert!(statements < 100, "300 sends took {statements} statements");
    // A record that is invalid alone fails alone.
    let too_big = Record::from_value(vec![0; 2 << 20]);
    assert!(matches!(
        producer.send(&t, None, too_big).await,
        Err(Error::RecordTooLarge { .. })
    ));
    assert!(matches!(
        producer.send(&t, Some(9), Record::from_value("x")).await,
        Err(Error::UnknownPartition { .. })
    ));
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let db = TestDb::new().await;
    let t = db
        .topic(
            "bad",
            TopicConfig {
                max_message_bytes: 100,
                ..partitions(2)
            },
        )
        .await;
    let b = &db.broker;
    let big = Record::from_value(vec![0; 101]);
    assert!(matches!(
        b.streams().produce(&t, Some(0), &[Record::from_value("ok"), big]).await,
        Err(Error::RecordTooLarge { size: 101, max: 100 })
    ));
    assert!(matches!(
        b.streams().produce(&t, Some(2), &[Record::from_value("x")]).await,
        Err(Error::UnknownPartition { .. })
    ));
    assert!(matches!(
        b.streams().produce(&t, Some(-1), &[Record::from_value("x")]).await,
        Err(Error::UnknownPartition { .. })
    ));
    // A header key Postgres cannot store (JSON text with a NUL) is refused,
    // with the valid record beside it.
    let nul = Record {
        headers: vec![Header {
            key: "a\0b".into(),
            value: None,
        }],
        ..Record::from_value("x")
    };
    assert!(matches!(
        b.streams().produce(&t, Some(0), &[Record::from_value("ok"), nul]).await,
        Err(Error::Invalid {
            what: pgbroker::Invalid::HeaderKey,
            ..
        })
    ));
    let missing = TopicName::new("missing").expect("valid");
    assert!(matches!(
        b.streams().produce(&missing, None, &[Record::from_value("x")]).await,
        Err(Error::UnknownTopic(_))
    ));
    assert!(matches!(
        b.topics().describe(&missing).await,
        Err(Error::UnknownTopic(_))
    ));
    assert!(matches!(
        b.topics().create(&t, &partitions(1)).await,
        Err(Error::TopicExists(_))
    ));
    for bad in [
        partitions(0),
        partitions(1001),
        TopicConfig {
            retention_bytes: Some(-1),
            ..partitions(1)
        },
    ] {
        assert!(
            matches!(b.topics().create(&missing, &bad).await, Err(Error::Invalid { .. })),
            "{bad:?}"
        );
    }
    assert!(matches!(
        b.topics().add_partitions(&t, 0).await,
        Err(Error::Invalid { .. })
    ));
    let d = b.topics().describe(&t).await.expect("describe");
    assert!(
        d.partition_states.iter().all(|p| p.high_watermark == 0),
        "nothing written"
    );
    assert_eq!(b.topics().list().await.expect("list").len(), 1, "nothing created");
}

#[tokio::test]
async fn hostile_names_are_data_not_sql() {
    let db = TestDb::new().await;
    // Topic names cannot carry SQL at all...
    for name in ["x'; DROP TABLE topics; --", "a\"b", "t;", &"a".repeat(1000)] {
        assert!(TopicName::new(name).is_err(), "{name:?}");
    }
    // ...group ids may contain anything printable, and are stored as data.
    let t = db.topic("hostile", partitions(1)).await;
    db.broker
        .streams()
        .produce(&t, Some(0), &[Record::from_value("v")])
        .await
        .expect("produce");
    let evil = pgbroker::GroupId::new("g'); DROP TABLE group_offsets; --\"").expect("valid group id");
    let commit = pgbroker::groups::OffsetCommit {
        topic: t.clone(),
        partition: 0,
        offset: 1,
        metadata: Some("'; --".into()),
    };
    db.broker.groups().commit(&evil, None, &[commit]).await.expect("commit");
    let got = db.broker.groups().offsets(&evil, &t).await.expect("offsets");
    assert_eq!(got[0].offset, 1);
    assert_eq!(got[0].metadata.as_deref(), Some("'; --"));
    assert!(db.broker.groups().list().await.expect("groups").contains(&evil));
    // Long topic names that share a 63-byte prefix stay distinct topics.
    let long_a = db.topic(&format!("{}a", "p".repeat(100)), partitions(1)).await;
    let long_b = db.topic(&format!("{}b", "p".repeat(100)), partitions(1)).await;
    db.broker
        .streams()
        .produce(&long_a, Some(0), &[Record::from_value("a")])
        .await
        .expect("produce");
    assert_eq!(db.broker.streams().watermarks(&long_b, 0).await.expect("wm").1, 0);
    assert_eq!(db.broker.streams().watermarks(&long_a, 0).await.expect("wm").1, 1);
}

#[tokio::test]
async fn migrations_are_versioned() {
    let db = TestDb::new().await;
    let report = db.broker.migrate().await.expect("migrate again");
    assert_eq!(
        (report.from, report.to),
        (pgbroker::latest_version(), pgbroker::latest_version())
    );
    let client = db.raw().await;
    client
        .execute(
            "INSERT INTO schema_migrations (version, name) VALUES (999, 'future')",
            &[],
        )
        .await
        .expect("insert");
    let again = pgbroker::Broker::connect(pgbroker::BrokerConfig {
        database_url: pgbroker_testkit::database_url(),
        schema: db.schema.clone(),
        ..pgbroker::BrokerConfig::default()
    })
    .await;
    match again {
        Err(e @ Error::SchemaTooNew { found: 999, .. }) => assert!(e.to_string().contains("upgrade pgbroker")),
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[tokio::test]
async fn unreachable_database_is_named_without_password() {
    let r = pgbroker::Broker::connect(pgbroker::BrokerConfig {
        database_url: "postgres://someone:s3cret@127.0.0.1:1/somedb".into(),
        ..pgbroker::BrokerConfig::default()
    })
    .await;
    let msg = r.expect_err("must fail").to_string();
    assert!(msg.contains("127.0.0.1:1/somedb"), "{msg}");
    assert!(!msg.contains("s3cret"), "{msg}");
}

#[tokio::test]
async fn messages_are_readable_with_plain_sql() {
    let db = TestDb::new().await;
    let t = db.topic("sql", partitions(2)).await;
    db.broker
        .streams()
        .produce(&t, Some(1), &[Record::keyed("k", "hello")])
        .await
        .expect("produce");
    let client = db.raw().await;
    let row = client
        .query_one(
            "SELECT topic, partition, \"offset\", convert_from(key, 'UTF8'), convert_from(value, 'UTF8')
             FROM messages WHERE topic = 'sql'",
            &[],
        )
        .await
        .expect("select");
    assert_eq!(row.get::<_, String>(0), "sql");
    assert_eq!(row.get::<_, i32>(1), 1);
    assert_eq!(row.get::<_, i64>(2), 0);
    assert_eq!(row.get::<_, String>(3), "k");
    assert_eq!(row.get::<_, String>(4), "hello");
}

#[tokio::test]
async fn long_reads_from_postgres_stop_exactly_at_the_limits() {
    let db = TestDb::new().await;
    let config = TopicConfig {
        partitions: 1,
        segment_records: 50,
        ..TopicConfig::default()
    };
    let t = db.topic("long-reads", config).await;
    // Small records first, then large ones: a read's estimate of how many
    // rows fit changes on the way.
    let sizes: Vec<usize> = (0..300)
        .map(|i| if i < 100 { 10 + i % 7 } else { 900 + i % 13 })
        .collect();
    let records: Vec<Record> = sizes.iter().map(|&n| Record::from_value(vec![b'v'; n])).collect();
    for chunk in records.chunks(60) {
        db.broker.streams().produce(&t, Some(0), chunk).await.expect("produce");
    }
    let expected = |from: usize, max_records: usize, max_bytes: usize| {
        let mut bytes = 0;
        let mut n = 0;
        for &size in &sizes[from..] {
            if n == max_records || (n > 0 && bytes + size > max_bytes) {
                break;
            }
            bytes += size;
            n += 1;
        }
        (from..from + n)
            .map(|o| i64::try_from(o).expect("fits"))
            .collect::<Vec<_>>()
    };
    for (from, max_records, max_bytes) in [
        (0, 10_000, 50_000),
        (7, 10_000, 1 << 20),
        (3, 120, 1 << 20),
        (90, 10_000, 30_000),
        (150, 10_000, 1),
        (49, 40, 2_000),
    ] {
        let lim = FetchLimits {
            max_records,
            max_bytes,
            max_wait: Duration::ZERO,
        };
        // Another broker has nothing cached: the read goes to Postgres.
        let r = db
            .other_broker()
            .await
            .streams()
            .fetch(&t, 0, i64::try_from(from).expect("fits"), lim)
            .await
            .expect("fetch");
        let got: Vec<i64> = r.records.iter().map(|r| r.offset).collect();
        assert_eq!(
            got,
            expected(from, max_records, max_bytes),
            "from {from}, {max_records} records, {max_bytes} bytes"
        );
        for rec in &r.records {
            let size = sizes[usize::try_from(rec.offset).expect("fits")];
            assert_eq!(rec.value.as_ref().map(|v| v.len()), Some(size));
        }
        let next = got.last().map_or(i64::try_from(from).expect("fits"), |o| o + 1);
        assert_eq!(r.next_offset, next);
    }
}

#[tokio::test]
async fn a_fetch_of_many_partitions_spends_its_byte_budget_in_request_order() {
    use pgbroker::streams::{Isolation, ManyLimits, PartitionRead};
    let db = TestDb::new().await;
    let t = db.topic("many", partitions(20)).await;
    for p in 0..20u8 {
        let records: Vec<Record> = (0..3).map(|_| Record::from_value(vec![p; 1_000])).collect();
        db.broker
            .streams()
            .produce(&t, Some(i32::from(p)), &records)
            .await
            .expect("produce");
    }
    // Partition 5 is read from its second record.
    let reads: Vec<PartitionRead> = (0..20)
        .map(|p| PartitionRead {
            topic: t.clone(),
            partition: p,
            offset: i64::from(p == 5),
            max_bytes: 1 << 20,
        })
        .collect();
    let limits = ManyLimits {
        min_bytes: 1,
        max_bytes: 25_500,
        max_records: 100,
        max_wait: Duration::ZERO,
        isolation: Isolation::ReadUncommitted,
    };
    let got = db.broker.streams().fetch_many(&reads, limits).await;
    assert_eq!(got.len(), 20);
    let shape: Vec<(usize, i64, i64)> = got
        .iter()
        .map(|r| {
            let r = r.as_ref().expect("read");
            assert!(r
                .records
                .iter()
                .all(|rec| rec.value.as_ref().map(|v| v.len()) == Some(1_000)));
            (r.records.len(), r.next_offset, r.high_watermark)
        })
        .collect();
    // 3,000 bytes each up to partition 7 (2,000 from partition 5): 23,000.
    // Partition 8 gets the 2,000 its 2,500 left hold, partition 9 the
    // first record of what is left (500 bytes), every later one nothing.
    let mut want = vec![(3, 3, 3); 8];
    want[5] = (2, 3, 3);
    want.push((2, 2, 3));
    want.push((1, 1, 3));
    want.extend(vec![(0, 0, 3); 10]);
    assert_eq!(shape, want);
    let values: Vec<u8> = got
        .iter()
        .flat_map(|r| r.as_ref().expect("read").records.iter())
        .map(|rec| rec.value.as_ref().expect("value")[0])
        .collect();
    let mut expected = Vec::new();
    for (p, n) in want.iter().map(|w| w.0).enumerate() {
        expected.extend(std::iter::repeat_n(u8::try_from(p).expect("small"), n));
    }
    assert_eq!(values, expected, "each partition's own records");
}
