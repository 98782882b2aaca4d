//! Producing through SQL: the outbox for any language. Records appear if
//! and only if the caller's transaction commits, offsets stay gap-free,
//! segments missing inside the transaction are created with it, keys land
//! where the library (and Kafka) put them, and an application role needs
//! only the granted functions. Each test runs in a fresh schema of a real
//! PostgreSQL.

use pgbroker::partitioner::{murmur2, partition_for_key};
use pgbroker::sql_api::sqlstate;
use pgbroker::streams::{Cleanup, CleanupPolicy, FetchLimits};
use pgbroker::{QueueConfig, Record, TopicConfig, TopicName};
use pgbroker_testkit::db::{assert_refused, partitions, TestDb};
use rand::Rng;
use std::time::Duration;
use tokio_postgres::{Client, NoTls};

async fn committed(db: &TestDb, topic: &TopicName, partition: i32) -> Vec<(i64, Option<Vec<u8>>)> {
    let got = db
        .broker
        .streams()
        .fetch(
            topic,
            partition,
            0,
            FetchLimits {
                max_records: 10_000,
                max_bytes: 64 << 20,
                ..FetchLimits::default()
            },
        )
        .await
        .expect("fetch");
    got.records
        .into_iter()
        .map(|r| (r.offset, r.value.map(|v| v.to_vec())))
        .collect()
}

#[tokio::test]
async fn produce_is_visible_only_when_the_transaction_commits() {
    let db = TestDb::new().await;
    let t = db.topic("orders", partitions(3)).await;
    let c = db.raw().await;
    let s = &db.schema;
    let want = partition_for_key(b"user-1", 3);
    c.batch_execute("BEGIN").await.expect("begin");
    let row = c
        .query_one(
            &format!("SELECT partition, \"offset\" FROM {s}.produce('orders', key => 'user-1', value => 'created')"),
            &[],
        )
        .await
        .expect("produce");
    assert_eq!((row.get::<_, i32>(0), row.get::<_, i64>(1)), (want, 0));
    assert!(committed(&db, &t, want).await.is_empty(), "invisible before the commit");
    c.batch_execute("ROLLBACK").await.expect("rollback");
    c.batch_execute("BEGIN").await.expect("begin");
    let rows = c
        .query(
            &format!(
                "SELECT partition, \"offset\" FROM {s}.produce_batch('orders', ARRAY['paid', 'shipped'],
                                                                    keys => ARRAY['user-1', 'user-1'])"
            ),
            &[],
        )
        .await
        .expect("produce batch");
    let got: Vec<(i32, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        [(want, 0), (want, 1)],
        "the rolled-back offsets are reused: no gap"
    );
    c.batch_execute("COMMIT").await.expect("commit");
    // The library appends after them.
    let pos = db
        .broker
        .streams()
        .produce(&t, Some(want), &[Record::keyed("user-1", "delivered")])
        .await
        .expect("library produce");
    assert_eq!(pos[0].offset, 2);
    let values: Vec<(i64, Option<Vec<u8>>)> = committed(&db, &t, want).await;
    assert_eq!(
        values,
        [
            (0, Some(b"paid".to_vec())),
            (1, Some(b"shipped".to_vec())),
            (2, Some(b"delivered".to_vec()))
        ]
    );
}

#[tokio::test]
async fn missing_segments_are_created_inside_the_transaction() {
    let db = TestDb::new().await;
    let t = db
        .topic(
            "small",
            TopicConfig {
                segment_records: 4,
                ..TopicConfig::default()
            },
        )
        .await;
    let c = db.raw().await;
    let s = &db.schema;
    let values: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    let sql = format!("SELECT \"offset\" FROM {s}.produce_batch('small', $1::text[], to_partition => 0)");
    let segments = format!("SELECT count(*) FROM {s}.segments");
    let before: i64 = c.query_one(&segments, &[]).await.expect("count").get(0);
    c.batch_execute("BEGIN").await.expect("begin");
    c.query(&sql, &[&values]).await.expect("produce past the segments");
    c.batch_execute("ROLLBACK").await.expect("rollback");
    let after: i64 = c.query_one(&segments, &[]).await.expect("count").get(0);
    assert_eq!(
        after, before,
        "segments made by a rolled-back transaction are gone with it"
    );
    c.batch_execute("BEGIN").await.expect("begin");
    let rows = c.query(&sql, &[&values]).await.expect("produce again");
    c.batch_execute("COMMIT").await.expect("commit");
    let offsets: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(offsets, (0..10).collect::<Vec<i64>>());
    // The library keeps producing into the same log, gap-free.
    let pos = db
        .broker
        .streams()
        .produce(&t, Some(0), &[Record::from_value("lib")])
        .await
        .expect("library produce");
    assert_eq!(pos[0].offset, 10);
    let got = committed(&db, &t, 0).await;
    let offsets: Vec<i64> = got.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (0..11).collect::<Vec<i64>>());
}

#[tokio::test]
async fn the_sql_partitioner_is_the_librarys() {
    let db = TestDb::new().await;
    let c = db.raw().await;
    let s = &db.schema;
    let mut rng = rand::thread_rng();
    let mut keys: Vec<Vec<u8>> = (0..3000)
        .map(|i| {
            let len = i % 40;
            (0..len).map(|_| rng.gen::<u8>()).collect()
        })
        .collect();
    keys.extend(["21", "foobar", "a-little-bit-long-string", "abc", "user-1"].map(|k| k.as_bytes().to_vec()));
    for n in [1i32, 3, 7, 64] {
        let rows = c
            .query(
                &format!("SELECT {s}._pb_murmur2(k), {s}.partition_for_key(k, $2) FROM unnest($1::bytea[]) k"),
                &[&keys, &n],
            )
            .await
            .expect("sql partitioner");
        for (key, row) in keys.iter().zip(&rows) {
            assert_eq!(row.get::<_, i32>(0), murmur2(key), "murmur2 of {key:?}");
            let p = partition_for_key(key, usize::try_from(n).expect("positive"));
            assert_eq!(row.get::<_, i32>(1), p, "partition of {key:?} among {n}");
        }
    }
}

#[tokio::test]
async fn an_application_role_needs_only_the_granted_functions() {
    let db = TestDb::new().await;
    db.topic("orders", partitions(1)).await;
    db.queue("jobs", QueueConfig::default()).await;
    let admin = db.raw().await;
    let s = &db.schema;
    let app = format!("{s}_app");
    let stranger = format!("{s}_stranger");
    admin
        .batch_execute(&format!(
            "CREATE ROLE {app} LOGIN; CREATE ROLE {stranger} LOGIN; SELECT {s}.grant_api('{app}')"
        ))
        .await
        .expect("roles");
    let as_role = |role: String| async move {
        let url = format!(
            "{}?user={role}",
            pgbroker_testkit::database_url().split('?').next().unwrap_or_default()
        );
        let (client, conn) = tokio_postgres::connect(&url, NoTls).await.expect("connect as role");
        tokio::spawn(conn);
        client
    };
    let c: Client = as_role(app.clone()).await;
    c.batch_execute(&format!(
        "SELECT {s}.send('jobs', 'x');
         SELECT {s}.ack('jobs', (SELECT receipt FROM {s}.receive('jobs')));
         SELECT * FROM {s}.produce('orders', 'v');
         SELECT * FROM {s}.stats('jobs');"
    ))
    .await
    .expect("the granted role uses the functions");
    let denied = |e: tokio_postgres::Error| e.code().map(|c| c.code().to_string());
    let insufficient = Some("42501".to_string());
    for sql in [
        format!("SELECT * FROM {s}.queue_messages"),
        format!("INSERT INTO {s}.queue_dedup VALUES (1, 'k', 1)"),
        format!("SELECT * FROM {s}.records"),
        format!("SELECT {s}._pb_fail('PB100', 'x')"),
        format!("SELECT {s}.grant_api('{stranger}')"),
    ] {
        let e = c.batch_execute(&sql).await.expect_err(&sql);
        assert_eq!(denied(e), insufficient, "{sql}");
    }
    let other: Client = as_role(stranger.clone()).await;
    let e = other
        .batch_execute(&format!("SELECT {s}.send('jobs', 'x')"))
        .await
        .expect_err("no grant");
    assert_eq!(denied(e), insufficient);
    drop((c, other));
    admin
        .batch_execute(&format!(
            "SELECT {s}.revoke_api('{app}'); DROP ROLE {app}; DROP ROLE {stranger}"
        ))
        .await
        .expect("drop roles");
}

#[tokio::test]
async fn sql_and_library_producers_together_leave_no_gap() {
    let db = TestDb::new().await;
    // Small segments: producers on both paths keep meeting missing ones.
    let t = db
        .topic(
            "busy",
            TopicConfig {
                segment_records: 8,
                ..TopicConfig::default()
            },
        )
        .await;
    let s = db.schema.clone();
    let mut tasks = Vec::new();
    for w in 0..3 {
        let c = db.raw().await;
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let values = vec![format!("sql{w}-{i}a"), format!("sql{w}-{i}b"), format!("sql{w}-{i}c")];
                c.batch_execute("BEGIN").await.expect("begin");
                c.query(
                    &format!("SELECT * FROM {s}.produce_batch('busy', $1::text[])"),
                    &[&values],
                )
                .await
                .expect("sql produce");
                // Every third transaction rolls back: its offsets are reused.
                let end = if i % 3 == 0 { "ROLLBACK" } else { "COMMIT" };
                c.batch_execute(end).await.expect("end");
            }
        }));
    }
    for w in 0..2 {
        let b = db.broker.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let rs = [
                    Record::from_value(format!("lib{w}-{i}a")),
                    Record::from_value(format!("lib{w}-{i}b")),
                ];
                b.streams().produce(&t, Some(0), &rs).await.expect("library produce");
            }
        }));
    }
    for task in tasks {
        task.await.expect("producer");
    }
    let got = committed(&db, &t, 0).await;
    let offsets: Vec<i64> = got.iter().map(|(o, _)| *o).collect();
    let committed_sql = 3 * (20 - 7) * 3;
    let total = committed_sql + 2 * 20 * 2;
    assert_eq!(offsets, (0..total).collect::<Vec<i64>>(), "gap-free, nothing lost");
    let values: Vec<String> = got
        .iter()
        .map(|(_, v)| String::from_utf8(v.clone().expect("value")).expect("utf8"))
        .collect();
    assert!(
        !values.iter().any(|v| v.starts_with("sql")
            && v[3..].split('-').nth(1).is_some_and(|i| {
                i.trim_end_matches(['a', 'b', 'c'])
                    .parse::<i32>()
                    .is_ok_and(|i| i % 3 == 0)
            })),
        "a rolled-back record is visible"
    );
    // Each batch's records are consecutive.
    for w in 0..3 {
        for i in (0..20).filter(|i| i % 3 != 0) {
            let at = values
                .iter()
                .position(|v| *v == format!("sql{w}-{i}a"))
                .expect("committed batch");
            assert_eq!(values[at + 1], format!("sql{w}-{i}b"));
            assert_eq!(values[at + 2], format!("sql{w}-{i}c"));
        }
    }
}

#[tokio::test]
async fn a_running_broker_makes_room_ahead_of_sql_producers() {
    let db = TestDb::new().await;
    db.topic(
        "ahead",
        TopicConfig {
            segment_records: 4,
            ..TopicConfig::default()
        },
    )
    .await;
    let c = db.raw().await;
    let s = &db.schema;
    let room = format!(
        "SELECT (SELECT max(end_offset) FROM {s}.segments sg WHERE sg.partition_id = p.id) - p.next_offset
         FROM {s}.partitions p JOIN {s}.topics t ON t.id = p.topic_id WHERE t.name = 'ahead'"
    );
    c.query(
        &format!("SELECT * FROM {s}.produce_batch('ahead', ARRAY['a', 'b', 'c'])"),
        &[],
    )
    .await
    .expect("produce");
    let left: i64 = c.query_one(&room, &[]).await.expect("room").get(0);
    assert!(left <= 2, "the produce leaves at most half a segment: {left}");
    let maintenance = db.broker.maintenance().spawn(Duration::from_millis(50));
    let mut after = left;
    for _ in 0..200 {
        after = c.query_one(&room, &[]).await.expect("room").get(0);
        if after > 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    maintenance.abort();
    assert!(after > 2, "maintenance made room ahead: {after} offsets left");
}

#[tokio::test]
async fn a_compacted_topic_refuses_keyless_records_and_keeps_nothing_of_the_batch() {
    let db = TestDb::new().await;
    let compacted = TopicConfig {
        cleanup: Cleanup {
            policy: CleanupPolicy::Compact,
            ..Cleanup::default()
        },
        ..TopicConfig::default()
    };
    db.topic("state", compacted).await;
    let c = db.raw().await;
    let s = &db.schema;
    let single = format!("SELECT * FROM {s}.produce('state', value => 'v')");
    assert_refused(&c, s, &single, sqlstate::INVALID_ARGUMENT).await;
    let batch = format!("SELECT * FROM {s}.produce_batch('state', ARRAY['a', 'b'], keys => ARRAY['k', NULL])");
    assert_refused(&c, s, &batch, sqlstate::INVALID_ARGUMENT).await;
    let e = c.batch_execute(&single).await.expect_err("refused");
    assert!(
        e.as_db_error()
            .is_some_and(|d| d.message().contains("every record needs a key")),
        "{e:?}"
    );
    let keyed = c
        .query_one(
            &format!("SELECT \"offset\" FROM {s}.produce('state', key => 'k', value => 'v')"),
            &[],
        )
        .await
        .expect("a keyed record is taken");
    assert_eq!(keyed.get::<_, i64>(0), 0, "the refused calls wrote nothing");
}
