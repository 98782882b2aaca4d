//! The queue SQL functions inside the caller's transaction: a worker that
//! runs `BEGIN; receive; ...work...; ack; COMMIT` holds the message by its
//! row lock until it commits, commits its work and the acknowledgement
//! together, and on a rollback (or a dead connection) leaves the message as
//! it was: due at once, its attempt not counted, the receipt it got fenced.
//! A failure caught in a savepoint and answered with `nack` counts the
//! attempt and dead-letters as usual. Each test runs in a fresh schema of a
//! real PostgreSQL.

use std::time::Duration;

use pgbroker::sql_api::sqlstate;
use pgbroker::{QueueConfig, QueueName};
use pgbroker_testkit::db::{assert_refused, TestDb};
use tokio_postgres::Client;

/// One message received by `c`: (id, receipt, attempt, body).
async fn receive_one(c: &Client, s: &str, queue: &str, options: &str) -> Option<(i64, String, i32, Vec<u8>)> {
    let rows = c
        .query(
            &format!("SELECT id, receipt, attempt, body FROM {s}.receive($1{options})"),
            &[&queue],
        )
        .await
        .expect("receive");
    assert!(rows.len() <= 1, "asked for one message, got {}", rows.len());
    rows.first().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
}

async fn counts(db: &TestDb, queue: &str) -> (i64, i64) {
    let stats = db
        .broker
        .queues()
        .stats(&QueueName::new(queue).expect("name"))
        .await
        .expect("stats");
    (stats.ready, stats.in_flight)
}

#[tokio::test]
async fn receive_work_and_ack_commit_together() {
    let db = TestDb::new().await;
    db.queue("jobs", QueueConfig::default()).await;
    let worker = db.raw().await;
    let other = db.raw().await;
    let s = &db.schema;
    worker
        .batch_execute(&format!(
            "CREATE TABLE {s}.results (id int8 PRIMARY KEY); SELECT {s}.send('jobs', 'one')"
        ))
        .await
        .expect("setup");

    worker.batch_execute("BEGIN").await.expect("begin");
    let (id, receipt, attempt, body) = receive_one(&worker, s, "jobs", "").await.expect("a message");
    assert_eq!((attempt, body.as_slice()), (1, b"one".as_slice()));
    // While the transaction is open, nobody else gets the message.
    assert!(receive_one(&other, s, "jobs", "").await.is_none());
    worker
        .execute(&format!("INSERT INTO {s}.results VALUES ($1)"), &[&id])
        .await
        .expect("work");
    worker
        .execute(&format!("SELECT {s}.ack('jobs', $1::text)"), &[&receipt])
        .await
        .expect("ack in the transaction");
    // Not yet committed: the others still see the message as it was.
    let uncommitted: i64 = other
        .query_one(&format!("SELECT count(*) FROM {s}.results"), &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(uncommitted, 0);
    assert!(receive_one(&other, s, "jobs", "").await.is_none());
    worker.batch_execute("COMMIT").await.expect("commit");

    assert_eq!(counts(&db, "jobs").await, (0, 0));
    let done: i64 = other
        .query_one(&format!("SELECT count(*) FROM {s}.results WHERE id = $1"), &[&id])
        .await
        .expect("count")
        .get(0);
    assert_eq!(done, 1);
    assert!(receive_one(&other, s, "jobs", "").await.is_none());
    assert_refused(
        &other,
        s,
        &format!("SELECT {s}.ack('jobs', '{receipt}')"),
        sqlstate::STALE_RECEIPT,
    )
    .await;
}

#[tokio::test]
async fn a_rollback_leaves_the_message_due_its_attempt_uncounted_and_the_receipt_fenced() {
    let db = TestDb::new().await;
    db.queue("jobs", QueueConfig::default()).await;
    let c = db.raw().await;
    let s = &db.schema;
    c.batch_execute(&format!("SELECT {s}.send('jobs', 'one')"))
        .await
        .expect("send");
    for _ in 0..3 {
        c.batch_execute("BEGIN").await.expect("begin");
        let (_, receipt, attempt, _) = receive_one(&c, s, "jobs", "").await.expect("due again at once");
        assert_eq!(attempt, 1, "a rolled back delivery is not an attempt");
        c.batch_execute("ROLLBACK").await.expect("rollback");
        assert_eq!(counts(&db, "jobs").await, (1, 0));
        assert_refused(
            &c,
            s,
            &format!("SELECT {s}.ack('jobs', '{receipt}')"),
            sqlstate::STALE_RECEIPT,
        )
        .await;
    }
}

#[tokio::test]
async fn a_worker_that_dies_mid_transaction_frees_the_message_at_once() {
    let db = TestDb::new().await;
    db.queue("jobs", QueueConfig::default()).await;
    let worker = db.raw().await;
    let other = db.raw().await;
    let s = &db.schema;
    worker
        .batch_execute(&format!("SELECT {s}.send('jobs', 'one')"))
        .await
        .expect("send");
    worker.batch_execute("BEGIN").await.expect("begin");
    let (id, _, _, _) = receive_one(&worker, s, "jobs", ", visibility_timeout => interval '1 hour'")
        .await
        .expect("a message");
    assert!(receive_one(&other, s, "jobs", "").await.is_none());
    // The connection closes with the transaction open; Postgres rolls it
    // back, and the hour-long lease goes with it.
    drop(worker);
    let (again, _, attempt, _) = receive_one(&other, s, "jobs", ", wait => interval '10 s'")
        .await
        .expect("freed when the connection ended");
    assert_eq!((again, attempt), (id, 1));
}

#[tokio::test]
async fn the_open_transaction_holds_the_message_past_its_lease() {
    let db = TestDb::new().await;
    db.queue("jobs", QueueConfig::default()).await;
    let worker = db.raw().await;
    let other = db.raw().await;
    let s = &db.schema;
    worker
        .batch_execute(&format!("SELECT {s}.send('jobs', 'slow')"))
        .await
        .expect("send");
    worker.batch_execute("BEGIN").await.expect("begin");
    let (_, receipt, _, _) = receive_one(&worker, s, "jobs", ", visibility_timeout => interval '50 ms'")
        .await
        .expect("a message");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        receive_one(&other, s, "jobs", "").await.is_none(),
        "the row lock outlasts the lease: no second delivery while the work runs"
    );
    worker
        .execute(&format!("SELECT {s}.ack('jobs', $1::text)"), &[&receipt])
        .await
        .expect("the receipt is still current");
    worker.batch_execute("COMMIT").await.expect("commit");
    assert_eq!(counts(&db, "jobs").await, (0, 0));
}

#[tokio::test]
async fn a_failure_caught_in_a_savepoint_counts_and_dead_letters() {
    let db = TestDb::new().await;
    db.queue("dlq", QueueConfig::default()).await;
    db.queue(
        "work",
        QueueConfig {
            max_attempts: 2,
            dead_letter: Some(QueueName::new("dlq").expect("name")),
            ..QueueConfig::default()
        },
    )
    .await;
    let c = db.raw().await;
    let s = &db.schema;
    c.batch_execute(&format!("SELECT {s}.send('work', 'poison')"))
        .await
        .expect("send");
    for expected in 1..=2 {
        c.batch_execute("BEGIN").await.expect("begin");
        let (_, receipt, attempt, _) = receive_one(&c, s, "work", "").await.expect("a message");
        assert_eq!(attempt, expected);
        c.batch_execute("SAVEPOINT work").await.expect("savepoint");
        let failed = c.batch_execute("SELECT 1 / 0").await;
        assert!(failed.is_err(), "the work fails");
        c.batch_execute("ROLLBACK TO SAVEPOINT work")
            .await
            .expect("undo the work");
        c.execute(
            &format!("SELECT {s}.nack('work', $1::text, delay => interval '0 s', error => 'division by zero')"),
            &[&receipt],
        )
        .await
        .expect("nack");
        c.batch_execute("COMMIT").await.expect("commit");
    }
    assert_eq!(counts(&db, "work").await, (0, 0));
    let row = c
        .query_one(
            &format!("SELECT body, last_error, dead_letter_source, dead_letter_attempts FROM {s}.receive('dlq')"),
            &[],
        )
        .await
        .expect("dead letter");
    assert_eq!(row.get::<_, Vec<u8>>(0), b"poison");
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("division by zero"));
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("work"));
    assert_eq!(row.get::<_, Option<i32>>(3), Some(2));
}

#[tokio::test]
async fn the_ack_of_one_receipt_frees_its_key_and_archives_where_asked() {
    let db = TestDb::new().await;
    db.queue("plain", QueueConfig::default()).await;
    db.queue(
        "kept",
        QueueConfig {
            archive_retention: Some(Duration::from_secs(3600)),
            ..QueueConfig::default()
        },
    )
    .await;
    let c = db.raw().await;
    let s = &db.schema;
    for queue in ["plain", "kept"] {
        let send = format!("SELECT {s}.send('{queue}', 'x', dedup_key => 'k')");
        let first: i64 = c.query_one(&send, &[]).await.expect("send").get(0);
        c.batch_execute("BEGIN").await.expect("begin");
        let (id, receipt, _, _) = receive_one(&c, s, queue, "").await.expect("a message");
        assert_eq!(id, first);
        c.execute(&format!("SELECT {s}.ack('{queue}', $1::text)"), &[&receipt])
            .await
            .expect("ack");
        c.batch_execute("COMMIT").await.expect("commit");
        assert_eq!(counts(&db, queue).await, (0, 0), "{queue}");
        // The key left with the message: the same key sends a new one.
        let second: i64 = c.query_one(&send, &[]).await.expect("send again").get(0);
        assert_ne!(second, first, "{queue}: the key was not freed");
        let keys: Vec<i64> = c
            .query(
                &format!(
                    "SELECT d.message_id FROM {s}.queue_dedup d JOIN {s}.queues q ON q.id = d.queue_id
                     WHERE q.name = $1"
                ),
                &[&queue],
            )
            .await
            .expect("keys")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(keys, [second], "{queue}");
        let archived: Vec<i64> = c
            .query(
                &format!("SELECT id FROM {s}.queue_archived WHERE queue = $1"),
                &[&queue],
            )
            .await
            .expect("archive")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let expected: &[i64] = if queue == "kept" { &[first] } else { &[] };
        assert_eq!(archived, expected, "{queue}");
    }
}
