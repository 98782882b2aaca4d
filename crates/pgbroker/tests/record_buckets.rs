//! The log's two levels: `records` holds buckets of 64 partition ids, each
//! bucket holds its partitions' segments. A schema made by the flat layout
//! (every segment directly under `records`) is moved into buckets by the
//! migration, its records intact and its log writable.

use pgbroker::streams::Isolation;
use pgbroker::{Broker, BrokerConfig, Record, TopicConfig, TopicName};
use pgbroker_testkit::db::{partitions, read_partition, TestDb};
use pgbroker_testkit::{database_url, TestSchema};
use tokio_postgres::NoTls;

/// The migrations of the flat layout, in order: versions 1 to 16.
const FLAT: &[&str] = &[
    include_str!("../src/migrations/0001_streams.sql"),
    include_str!("../src/migrations/0002_queues.sql"),
    include_str!("../src/migrations/0003_kafka_groups.sql"),
    include_str!("../src/migrations/0004_kafka_nodes.sql"),
    include_str!("../src/migrations/0005_users.sql"),
    include_str!("../src/migrations/0006_acls.sql"),
    include_str!("../src/migrations/0007_queue_settle.sql"),
    include_str!("../src/migrations/0008_access_keys.sql"),
    include_str!("../src/migrations/0009_sql_functions.sql"),
    include_str!("../src/migrations/0010_sqs.sql"),
    include_str!("../src/migrations/0011_compaction.sql"),
    include_str!("../src/migrations/0012_transactions.sql"),
    include_str!("../src/migrations/0013_consumer_groups.sql"),
    include_str!("../src/migrations/0014_node_listeners.sql"),
    include_str!("../src/migrations/0015_share_groups.sql"),
    include_str!("../src/migrations/0016_member_principal.sql"),
];

async fn raw(schema: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&database_url(), NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path = {schema}"
        ))
        .await
        .expect("schema");
    client
}

/// Builds schema version 16 and, as that version's broker would have, a
/// topic `old` of one partition with segments of 100 records: two
/// segments, 150 records.
async fn flat_schema(c: &tokio_postgres::Client) {
    c.batch_execute(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
                                         applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .expect("schema_migrations");
    for (i, sql) in FLAT.iter().enumerate() {
        c.batch_execute(sql).await.expect("flat migration");
        let version = i32::try_from(i + 1).expect("version");
        c.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, 'flat')",
            &[&version],
        )
        .await
        .expect("version row");
    }
    let pid: i64 = c
        .query_one(
            "WITH t AS (INSERT INTO topics (name, segment_records, max_message_bytes)
                        VALUES ('old', 100, 1048576) RETURNING id)
             INSERT INTO partitions (topic_id, partition, next_offset) SELECT id, 0, 150 FROM t RETURNING id",
            &[],
        )
        .await
        .expect("topic")
        .get(0);
    for base in [0i64, 100] {
        // Integers only in the SQL text.
        c.batch_execute(&format!(
            "CREATE TABLE seg_{pid}_{base} (LIKE records);
             ALTER TABLE records ATTACH PARTITION seg_{pid}_{base}
                 FOR VALUES FROM ({pid}, {base}) TO ({pid}, {end});
             INSERT INTO segments (partition_id, base_offset, end_offset, table_name)
                 VALUES ({pid}, {base}, {end}, 'seg_{pid}_{base}');",
            end = base + 100
        ))
        .await
        .expect("flat segment");
    }
    c.execute(
        "INSERT INTO records (partition_id, \"offset\", ts, value)
         SELECT $1, o, now(), convert_to('v' || o, 'UTF8') FROM generate_series(0, 149) AS o",
        &[&pid],
    )
    .await
    .expect("records");
}

async fn leaf_parents(c: &tokio_postgres::Client) -> Vec<(String, String)> {
    c.query(
        "SELECT t.relid::regclass::text, t.parentrelid::regclass::text
         FROM pg_partition_tree('records') t WHERE t.isleaf ORDER BY 1",
        &[],
    )
    .await
    .expect("tree")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

#[tokio::test]
async fn the_flat_layout_is_moved_into_buckets_and_stays_readable_and_writable() {
    let guard = TestSchema::new("u");
    let c = raw(guard.name()).await;
    flat_schema(&c).await;
    let broker = Broker::connect(BrokerConfig {
        database_url: database_url(),
        schema: guard.name().to_string(),
        pool_size: 4,
        migrate: true,
        ..BrokerConfig::default()
    })
    .await
    .expect("connect and migrate");
    let pid: i64 = c.query_one("SELECT id FROM partitions", &[]).await.expect("pid").get(0);
    let bucket = format!("records_b{}", pid / 64);
    let moved = leaf_parents(&c).await;
    assert_eq!(
        moved,
        vec![
            (format!("seg_{pid}_0"), bucket.clone()),
            (format!("seg_{pid}_100"), bucket.clone())
        ]
    );
    let flat: Option<String> = c
        .query_one("SELECT to_regclass('records_flat')::text", &[])
        .await
        .expect("regclass")
        .get(0);
    assert_eq!(flat, None, "the flat parent is gone");

    // Writable: the next records land after the old ones, into the old
    // second segment and a new third one.
    let t = TopicName::new("old").expect("name");
    let batch: Vec<Record> = (150..230).map(|o| Record::from_value(format!("v{o}"))).collect();
    let written = broker.streams().produce(&t, Some(0), &batch).await.expect("produce");
    assert_eq!(written.first().map(|p| p.offset), Some(150));
    let mut values = Vec::new();
    let mut offset = 0;
    while offset < 230 {
        let r = read_partition(&broker, &t, 0, offset, Isolation::ReadUncommitted).await;
        assert!(!r.records.is_empty(), "records from {offset}");
        offset = r.next_offset;
        values.extend(r.records.into_iter().map(|x| x.value.expect("value")));
    }
    let expected: Vec<Vec<u8>> = (0..230).map(|o| format!("v{o}").into_bytes()).collect();
    assert_eq!(values, expected);
    // The view still reads the log.
    let n: i64 = c
        .query_one("SELECT count(*) FROM messages WHERE topic = 'old'", &[])
        .await
        .expect("view")
        .get(0);
    assert_eq!(n, 230);
    assert_eq!(leaf_parents(&c).await.len(), 3);
    drop(broker);
}

#[tokio::test]
async fn segments_go_to_the_bucket_of_their_partition_id() {
    let db = TestDb::new().await;
    let config = TopicConfig {
        segment_records: 10,
        ..partitions(70)
    };
    let t = db.topic("wide", config).await;
    let c = db.raw().await;
    let rows = c
        .query(
            "SELECT s.partition_id, t.parentrelid::regclass::text
             FROM segments s JOIN pg_partition_tree('records') t ON t.relid = s.table_name::regclass",
            &[],
        )
        .await
        .expect("segments");
    assert!(rows.len() >= 70, "a segment per partition at least: {}", rows.len());
    for r in &rows {
        let pid: i64 = r.get(0);
        let parent: String = r.get(1);
        assert_eq!(parent, format!("records_b{}", pid / 64));
    }
    let buckets: i64 = c
        .query_one("SELECT count(*) FROM pg_partition_tree('records') WHERE level = 1", &[])
        .await
        .expect("buckets")
        .get(0);
    assert!(
        (2..=3).contains(&buckets),
        "70 partition ids span 2 or 3 buckets: {buckets}"
    );
    // Rolling over into new segments, by the library and by the SQL
    // function, keeps each in its bucket and the log gap-free.
    let batch: Vec<Record> = (0..25).map(|i| Record::from_value(format!("r{i}"))).collect();
    db.broker
        .streams()
        .produce(&t, Some(69), &batch)
        .await
        .expect("produce");
    c.query(
        "SELECT * FROM produce_batch('wide', ARRAY['a', 'b']::bytea[], to_partition => 69)",
        &[],
    )
    .await
    .expect("sql produce");
    let r = read_partition(&db.broker, &t, 69, 0, Isolation::ReadUncommitted).await;
    let offsets: Vec<i64> = r.records.iter().map(|x| x.offset).collect();
    assert_eq!(offsets, (0..27).collect::<Vec<_>>());
    let misplaced: i64 = c
        .query_one(
            "SELECT count(*) FROM segments s JOIN pg_partition_tree('records') t ON t.relid = s.table_name::regclass
             WHERE t.parentrelid::regclass::text <> 'records_b' || (s.partition_id / 64)",
            &[],
        )
        .await
        .expect("misplaced")
        .get(0);
    assert_eq!(misplaced, 0);
}

/// The catalogue entry of column `ts` of `bucket`: its row version and
/// statistics target.
async fn ts_column(c: &tokio_postgres::Client, bucket: &str) -> (String, i32) {
    let r = c
        .query_one(
            "SELECT xmin::text, attstattarget::int4 FROM pg_attribute
             WHERE attrelid = to_regclass($1) AND attname = 'ts'",
            &[&bucket],
        )
        .await
        .expect("pg_attribute");
    (r.get(0), r.get(1))
}

/// [`ts_column`] once the follow-up refreshes of the bucket's last
/// changes have run: unchanged over a third of a second.
async fn settled(c: &tokio_postgres::Client, bucket: &str) -> (String, i32) {
    let mut last = ts_column(c, bucket).await;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(350)).await;
        let now = ts_column(c, bucket).await;
        if now == last {
            return now;
        }
        last = now;
    }
}

/// A topic `name` of one partition with segments of 10 records, a raw
/// client on its schema, the partition's id and its bucket's name.
async fn small_topic(name: &str) -> (TestDb, TopicName, tokio_postgres::Client, i64, String) {
    let db = TestDb::new().await;
    let config = TopicConfig {
        segment_records: 10,
        ..partitions(1)
    };
    let t = db.topic(name, config).await;
    let c = db.raw().await;
    let pid: i64 = c.query_one("SELECT id FROM partitions", &[]).await.expect("pid").get(0);
    let bucket = format!("records_b{}", pid / 64);
    (db, t, c, pid, bucket)
}

#[tokio::test]
async fn a_new_segment_is_followed_by_a_refresh_of_every_sessions_map_of_its_bucket() {
    let (db, t, c, pid, bucket) = small_topic("follow").await;
    let before = settled(&c, &bucket).await;
    let count = "SELECT count(*) FROM segments WHERE partition_id = $1";
    let had: i64 = c.query_one(count, &[&pid]).await.expect("segments").get(0);
    let batch: Vec<Record> = (0..35).map(|i| Record::from_value(format!("r{i}"))).collect();
    db.broker.streams().produce(&t, Some(0), &batch).await.expect("produce");
    let has: i64 = c.query_one(count, &[&pid]).await.expect("segments").get(0);
    assert!(has > had, "the batch needed new segments: {had} then {has}");
    let mut touched = false;
    for _ in 0..100 {
        if ts_column(&c, &bucket).await.0 != before.0 {
            touched = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        touched,
        "the bucket's catalogue entry was touched after the new segments"
    );
    assert_eq!(
        ts_column(&c, &bucket).await.1,
        before.1,
        "and its statistics target kept"
    );
}

#[tokio::test]
async fn an_insert_that_misses_a_catalogued_segment_refreshes_its_buckets_map_and_changes_nothing() {
    let (db, t, c, pid, bucket) = small_topic("miss").await;
    let five: Vec<Record> = (0..5).map(|i| Record::from_value(format!("r{i}"))).collect();
    db.broker.streams().produce(&t, Some(0), &five).await.expect("produce");
    let segment = format!("seg_{pid}_0");

    // The catalogue keeps listing the segment that takes offset 5, but
    // no insert can reach it: what a session whose map of the bucket
    // missed that segment meets.
    c.batch_execute(&format!("ALTER TABLE {bucket} DETACH PARTITION {segment}"))
        .await
        .expect("detach");
    let before = settled(&c, &bucket).await;
    let one = vec![Record::from_value("late")];
    let e = db
        .broker
        .streams()
        .produce(&t, Some(0), &one)
        .await
        .expect_err("no segment to route to");
    assert!(matches!(e, pgbroker::Error::Busy(_)), "{e:?}");
    assert!(e.to_string().contains("no segment for the write yet"), "{e}");
    let after = ts_column(&c, &bucket).await;
    assert_ne!(after.0, before.0, "the bucket's catalogue entry was touched");
    assert_eq!(after.1, before.1, "its statistics target is what it was");
    let next: i64 = c
        .query_one("SELECT next_offset FROM partitions WHERE id = $1", &[&pid])
        .await
        .expect("next")
        .get(0);
    assert_eq!(next, 5, "the refused write took no offset");

    // Reachable again, the segment takes the write at the next offset.
    c.batch_execute(&format!(
        "ALTER TABLE {bucket} ATTACH PARTITION {segment} FOR VALUES FROM ({pid}, 0) TO ({pid}, 10)"
    ))
    .await
    .expect("attach");
    let written = db.broker.streams().produce(&t, Some(0), &one).await.expect("produce");
    assert_eq!(written.first().map(|p| p.offset), Some(5));
}
