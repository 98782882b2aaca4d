//! `take`: the claim and the acknowledgement in one statement of the
//! caller's transaction. A commit acknowledges, a rollback leaves the
//! message as it was; FIFO groups, deduplication keys, the archive and the
//! dead-letter rule hold as for receive and ack; the library's `take_in`
//! and the SQL function answer alike. Each test runs in a fresh schema of a
//! real PostgreSQL.

use std::time::Duration;

use pgbroker::sql_api::sqlstate;
use pgbroker::{Error, Message, QueueConfig, QueueName};
use pgbroker_testkit::db::{assert_refused, TestDb};
use tokio_postgres::Client;

/// What one `take` call answers: (id, attempt, body) per message.
async fn take(c: &Client, s: &str, queue: &str, max: i32) -> Vec<(i64, i32, String)> {
    c.query(
        &format!("SELECT id, attempt, convert_from(body, 'UTF8') FROM {s}.take($1, $2)"),
        &[&queue, &max],
    )
    .await
    .expect("take")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// Calls of function `name` of schema `s` in the open transaction (with
/// `track_functions` on).
async fn xact_calls(c: &Client, s: &str, name: &str) -> i64 {
    c.query_one(
        "SELECT coalesce(sum(calls), 0)::int8 FROM pg_stat_xact_user_functions
         WHERE schemaname = $1 AND funcname = $2",
        &[&s, &name],
    )
    .await
    .expect("calls")
    .get(0)
}

fn bodies(taken: &[(i64, i32, String)]) -> Vec<&str> {
    taken.iter().map(|t| t.2.as_str()).collect()
}

async fn stats(db: &TestDb, queue: &str) -> (i64, i64, i64) {
    let s = db
        .broker
        .queues()
        .stats(&QueueName::new(queue).expect("name"))
        .await
        .expect("stats");
    (s.ready, s.in_flight, s.dead_lettered)
}

#[tokio::test]
async fn a_commit_acknowledges_and_a_rollback_leaves_the_message_as_it_was() {
    let db = TestDb::new().await;
    db.queue("jobs", QueueConfig::default()).await;
    let worker = db.raw().await;
    let other = db.raw().await;
    let s = &db.schema;
    worker
        .batch_execute(&format!(
            "SELECT {s}.send('jobs', 'one'); SELECT {s}.send('jobs', 'two')"
        ))
        .await
        .expect("send");

    worker.batch_execute("BEGIN").await.expect("begin");
    let first = take(&worker, s, "jobs", 1).await;
    assert_eq!(bodies(&first), ["one"]);
    assert_eq!(first[0].1, 1, "the first delivery");
    // Held by the open transaction: another worker passes it by.
    assert_eq!(bodies(&take(&other, s, "jobs", 5).await), ["two"]);
    worker.batch_execute("ROLLBACK").await.expect("rollback");
    // "two" was taken and committed by the other worker (autocommit); "one"
    // is back as it was: due at once, no attempt counted.
    assert_eq!(stats(&db, "jobs").await, (1, 0, 0));
    let again = take(&other, s, "jobs", 1).await;
    assert_eq!((again[0].0, again[0].1, again[0].2.as_str()), (first[0].0, 1, "one"));
    assert_eq!(stats(&db, "jobs").await, (0, 0, 0));
    assert!(take(&worker, s, "jobs", 1).await.is_empty());
}

#[tokio::test]
async fn takes_by_priority_then_age_and_keeps_fifo_groups_in_order() {
    let db = TestDb::new().await;
    db.queue("jobs", QueueConfig::default()).await;
    let worker = db.raw().await;
    let other = db.raw().await;
    let s = &db.schema;
    worker
        .batch_execute(&format!(
            "SELECT {s}.send('jobs', 'low');
             SELECT {s}.send('jobs', 'high', priority => 5);
             SELECT {s}.send('jobs', 'low2')"
        ))
        .await
        .expect("send");
    assert_eq!(bodies(&take(&worker, s, "jobs", 10).await), ["high", "low", "low2"]);

    worker
        .batch_execute(&format!(
            "SELECT {s}.send('jobs', 'a1', group_key => 'a');
             SELECT {s}.send('jobs', 'b1', group_key => 'b');
             SELECT {s}.send('jobs', 'a2', group_key => 'a')"
        ))
        .await
        .expect("send grouped");
    worker.batch_execute("BEGIN").await.expect("begin");
    assert_eq!(bodies(&take(&worker, s, "jobs", 1).await), ["a1"]);
    // a2 waits for a1's transaction: only b's head is free.
    assert_eq!(bodies(&take(&other, s, "jobs", 10).await), ["b1"]);
    worker.batch_execute("COMMIT").await.expect("commit");
    assert_eq!(bodies(&take(&other, s, "jobs", 10).await), ["a2"]);

    // A rolled-back take of a head leaves the group as it was.
    worker
        .batch_execute(&format!(
            "SELECT {s}.send('jobs', 'c1', group_key => 'c'); SELECT {s}.send('jobs', 'c2', group_key => 'c')"
        ))
        .await
        .expect("send c");
    worker.batch_execute("BEGIN").await.expect("begin");
    assert_eq!(bodies(&take(&worker, s, "jobs", 10).await), ["c1"]);
    worker.batch_execute("ROLLBACK").await.expect("rollback");
    assert_eq!(bodies(&take(&other, s, "jobs", 10).await), ["c1"]);
    assert_eq!(bodies(&take(&other, s, "jobs", 10).await), ["c2"]);
    let groups: i64 = other
        .query_one(&format!("SELECT count(*) FROM {s}.queue_groups"), &[])
        .await
        .expect("groups")
        .get(0);
    assert_eq!(groups, 0, "emptied groups are dropped");
}

#[tokio::test]
async fn a_take_frees_the_key_and_archives_where_asked() {
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
        // The key holds while the message is in the queue.
        let same: i64 = c.query_one(&send, &[]).await.expect("send twice").get(0);
        assert_eq!(same, first, "{queue}");
        let taken = take(&c, s, queue, 1).await;
        assert_eq!(taken[0].0, first, "{queue}");
        let second: i64 = c.query_one(&send, &[]).await.expect("send again").get(0);
        assert_ne!(second, first, "{queue}: the key was not freed");
        let archived: Vec<(i64, i32)> = c
            .query(
                &format!("SELECT id, attempts FROM {s}.queue_archived WHERE queue = $1"),
                &[&queue],
            )
            .await
            .expect("archive")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let expected: &[(i64, i32)] = if queue == "kept" { &[(first, 1)] } else { &[] };
        assert_eq!(archived, expected, "{queue}");
    }
}

#[tokio::test]
async fn a_message_out_of_attempts_is_dead_lettered_not_taken() {
    let db = TestDb::new().await;
    db.queue("dlq", QueueConfig::default()).await;
    db.queue(
        "work",
        QueueConfig {
            max_attempts: 1,
            dead_letter: Some(QueueName::new("dlq").expect("name")),
            ..QueueConfig::default()
        },
    )
    .await;
    let c = db.raw().await;
    let s = &db.schema;
    c.batch_execute(&format!(
        "SELECT {s}.send('work', 'poison'); SELECT {s}.send('work', 'next')"
    ))
    .await
    .expect("send");
    // The first message's one delivery, by receive, whose lease runs out.
    let receipt: String = c
        .query_one(
            &format!("SELECT receipt FROM {s}.receive('work', 1, interval '1 millisecond')"),
            &[],
        )
        .await
        .expect("receive")
        .get(0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Out of attempts: not taken, but dead-lettered, and the old lease fenced.
    assert_eq!(bodies(&take(&c, s, "work", 1).await), Vec::<&str>::new());
    // "next" still ready; one of the queue's messages held dead.
    assert_eq!(stats(&db, "work").await, (1, 0, 1));
    assert_eq!(bodies(&take(&c, s, "dlq", 1).await), ["poison"]);
    assert_refused(
        &c,
        s,
        &format!("SELECT {s}.ack('work', '{receipt}')"),
        sqlstate::STALE_RECEIPT,
    )
    .await;
    // With more than one asked for, the others are still taken: "next"
    // runs out of attempts as "poison" did, "later" is taken.
    c.batch_execute(&format!("SELECT {s}.send('work', 'later')"))
        .await
        .expect("send");
    c.query_one(
        &format!("SELECT receipt FROM {s}.receive('work', 1, interval '1 millisecond')"),
        &[],
    )
    .await
    .expect("receive");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(bodies(&take(&c, s, "work", 10).await), ["later"]);
    assert_eq!(bodies(&take(&c, s, "dlq", 10).await), ["next"]);
}

#[tokio::test]
async fn the_library_takes_as_the_function_does_and_both_refuse_bad_input() {
    let db = TestDb::new().await;
    let queue = db.queue("jobs", QueueConfig::default()).await;
    let messages: Vec<Message> = ["a", "b", "c"]
        .iter()
        .map(|b| Message::new(b.as_bytes().to_vec()))
        .collect();
    db.broker.queues().send_batch(&queue, &messages).await.expect("send");
    let mut c = db.raw().await;
    let tx = c.transaction().await.expect("begin");
    let taken = db.broker.queues().take_in(&tx, &queue, 2).await.expect("take_in");
    let got: Vec<&[u8]> = taken.iter().map(|m| m.body.as_slice()).collect();
    assert_eq!(got, [b"a".as_slice(), b"b".as_slice()]);
    assert!(taken.iter().all(|m| m.attempt == 1 && m.group.is_none()));
    tx.rollback().await.expect("rollback");
    assert_eq!(stats(&db, "jobs").await, (3, 0, 0));
    let tx = c.transaction().await.expect("begin");
    let taken = db.broker.queues().take_in(&tx, &queue, 10).await.expect("take_in");
    assert_eq!(taken.len(), 3);
    tx.commit().await.expect("commit");
    assert_eq!(stats(&db, "jobs").await, (0, 0, 0));

    let e = db.broker.queues().take_in(&c, &queue, 0).await.expect_err("max 0");
    assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
    let e = db
        .broker
        .queues()
        .take_in(&c, &QueueName::new("nope").expect("name"), 1)
        .await
        .expect_err("unknown queue");
    assert!(matches!(e, Error::UnknownQueue(_)), "{e:?}");
    let s = &db.schema;
    c.batch_execute(&format!("SELECT {s}.send('jobs', 'kept')"))
        .await
        .expect("send");
    for (sql, code) in [
        (format!("SELECT * FROM {s}.take('jobs', 0)"), sqlstate::INVALID_ARGUMENT),
        (
            format!("SELECT * FROM {s}.take('jobs', 1001)"),
            sqlstate::INVALID_ARGUMENT,
        ),
        (
            format!("SELECT * FROM {s}.take('jobs', NULL)"),
            sqlstate::INVALID_ARGUMENT,
        ),
        (format!("SELECT * FROM {s}.take('nope')"), sqlstate::UNKNOWN_QUEUE),
    ] {
        assert_refused(&c, s, &sql, code).await;
    }
    assert_eq!(stats(&db, "jobs").await, (1, 0, 0));
}

#[tokio::test]
async fn takes_from_either_partition_across_a_rotation() {
    let db = TestDb::new().await;
    db.queue("jobs", QueueConfig::default()).await;
    let c = db.raw().await;
    let s = &db.schema;
    c.batch_execute(&format!("SELECT {s}.send('jobs', 'older')"))
        .await
        .expect("send");
    let pass = db.broker.maintenance().maintain_queues().await.expect("maintain");
    assert!(pass.rotated, "{pass:?}");
    c.batch_execute(&format!("SELECT {s}.send('jobs', 'newer')"))
        .await
        .expect("send");
    let slots: Vec<i16> = c
        .query(&format!("SELECT slot FROM {s}.queue_messages ORDER BY id"), &[])
        .await
        .expect("slots")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(slots.len(), 2);
    assert_ne!(slots[0], slots[1], "one message in each partition");

    // The lean take deletes each from its own partition, oldest first,
    // without falling back to the general way (which would take it too).
    c.batch_execute("SET track_functions = 'pl'; BEGIN")
        .await
        .expect("begin");
    assert_eq!(bodies(&take(&c, s, "jobs", 1).await), ["older"]);
    assert_eq!(bodies(&take(&c, s, "jobs", 1).await), ["newer"]);
    assert!(take(&c, s, "jobs", 1).await.is_empty());
    let calls = (xact_calls(&c, s, "take").await, xact_calls(&c, s, "_pb_take").await);
    assert_eq!(calls, (3, 0));
    c.batch_execute("COMMIT").await.expect("commit");
    let left: i64 = c
        .query_one(&format!("SELECT count(*) FROM {s}.queue_messages"), &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 0);
    assert_eq!(stats(&db, "jobs").await, (0, 0, 0));
}

#[tokio::test]
async fn concurrent_takers_each_get_every_message_once() {
    let db = TestDb::new().await;
    db.queue("jobs", QueueConfig::default()).await;
    let s = db.schema.clone();
    let c = db.raw().await;
    let sent: Vec<i64> = c
        .query(
            &format!("SELECT {s}.send('jobs', 'm' || i) FROM generate_series(1, 200) i"),
            &[],
        )
        .await
        .expect("send")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (w, s) = (db.raw().await, s.clone());
        workers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                w.batch_execute("BEGIN").await.expect("begin");
                let taken = take(&w, &s, "jobs", 1).await;
                w.batch_execute("COMMIT").await.expect("commit");
                match taken.as_slice() {
                    [] => break got,
                    [(id, attempt, _)] => {
                        assert_eq!(*attempt, 1);
                        got.push(*id);
                    }
                    more => panic!("one at most: {more:?}"),
                }
            }
        }));
    }
    let mut taken = Vec::new();
    for w in workers {
        taken.extend(w.await.expect("worker"));
    }
    taken.sort_unstable();
    let mut expected = sent;
    expected.sort_unstable();
    assert_eq!(taken, expected, "each message taken exactly once");
    assert_eq!(stats(&db, "jobs").await, (0, 0, 0));
}
