//! Work queues: FIFO groups, the outbox, stats, administration, bad input,
//! hostile names and long polls. Each test runs in a fresh schema of a real
//! PostgreSQL.

use std::time::{Duration, Instant};

use pgbroker::queues::{NackOptions, ReceiveOptions};
use pgbroker::{Error, Message, QueueConfig, QueueName, Receipt};
use pgbroker_testkit::db::{bodies, is_stale, receipts, take, TestDb};

#[tokio::test]
async fn fifo_groups_deliver_in_order_one_at_a_time_without_starving_others() {
    let db = TestDb::new().await;
    let q = db.queue("fifo", QueueConfig::default()).await;
    let b = &db.broker;
    for chunk in 0..10 {
        let batch: Vec<Message> = (0..1000)
            .map(|i| Message::new(format!("a{}", chunk * 1000 + i)).with_group("A"))
            .collect();
        b.queues().send_batch(&q, &batch).await.expect("send A");
    }
    b.queues()
        .send(&q, &Message::new("b0").with_group("B"))
        .await
        .expect("send B");
    b.queues().send(&q, &Message::new("u0")).await.expect("send ungrouped");
    // One claim round serves the head of every group, busy or not.
    let round = b.queues().receive(&q, &take(10)).await.expect("receive");
    assert_eq!(bodies(&round), ["a0", "b0", "u0"]);
    assert!(
        b.queues().receive(&q, &take(10)).await.expect("receive").is_empty(),
        "A waits for a0"
    );
    let stats = b.queues().stats(&q).await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight), (9999, 3));
    // In order, one at a time.
    let mut current = round[0].clone();
    for i in 1..30 {
        b.queues()
            .ack(&q, std::slice::from_ref(&current.receipt))
            .await
            .expect("ack");
        let got = b.queues().receive(&q, &take(10)).await.expect("receive");
        assert_eq!(bodies(&got), [format!("a{i}")]);
        current = got[0].clone();
    }
    // A released head keeps the group waiting; it is retried first.
    let zero = NackOptions {
        delay: Some(Duration::ZERO),
        ..NackOptions::default()
    };
    b.queues()
        .nack(&q, std::slice::from_ref(&current.receipt), &zero)
        .await
        .expect("nack");
    let got = b.queues().receive(&q, &take(10)).await.expect("receive");
    assert_eq!((bodies(&got), got[0].attempt), (vec!["a29".to_string()], 2));
}

#[tokio::test]
async fn dead_lettered_group_head_lets_the_group_go_on() {
    let db = TestDb::new().await;
    let dlq = db.queue("g.dlq", QueueConfig::default()).await;
    let q = db.queue_failing_once("g", Some(&dlq)).await;
    let b = &db.broker;
    let batch: Vec<Message> = (0..3).map(|i| Message::new(format!("m{i}")).with_group("g")).collect();
    b.queues().send_batch(&q, &batch).await.expect("send");
    let got = b.queues().receive(&q, &take(5)).await.expect("receive");
    assert_eq!(bodies(&got), ["m0"]);
    b.queues()
        .nack(&q, &receipts(&got), &NackOptions::default())
        .await
        .expect("nack");
    assert_eq!(
        bodies(&b.queues().receive(&q, &take(5)).await.expect("receive")),
        ["m1"]
    );
    // In the dead-letter queue the message is a member of its group there.
    let dead = b.queues().receive(&dlq, &take(5)).await.expect("receive");
    assert_eq!(
        (bodies(&dead), dead[0].group.as_deref()),
        (vec!["m0".to_string()], Some("g"))
    );
    b.queues().ack(&dlq, &receipts(&dead)).await.expect("ack dead letter");
    let client = db.raw().await;
    let groups: i64 = client
        .query_one("SELECT count(*) FROM queue_groups", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(groups, 1, "only the source's group is left");
}

#[tokio::test]
async fn outbox_send_and_ack_in_a_transaction_honour_rollback() {
    let db = TestDb::new().await;
    let q = db.queue("outbox", QueueConfig::default()).await;
    let b = &db.broker;
    let mut client = db.raw().await;
    client
        .batch_execute("CREATE TABLE orders (id int PRIMARY KEY)")
        .await
        .expect("table");
    let tx = client.transaction().await.expect("begin");
    tx.execute("INSERT INTO orders VALUES (1)", &[]).await.expect("order");
    b.queues()
        .send_in(&tx, &q, &[Message::new("rolled back").with_group("g")])
        .await
        .expect("send_in");
    assert_eq!(
        b.queues().stats(&q).await.expect("stats").ready,
        0,
        "visible before commit"
    );
    tx.rollback().await.expect("rollback");
    assert!(b.queues().receive(&q, &take(10)).await.expect("receive").is_empty());

    let tx = client.transaction().await.expect("begin");
    tx.execute("INSERT INTO orders VALUES (2)", &[]).await.expect("order");
    b.queues()
        .send_in(
            &tx,
            &q,
            &[Message::new("committed").with_group("g"), Message::new("plain")],
        )
        .await
        .expect("send_in");
    tx.commit().await.expect("commit");
    let got = b.queues().receive(&q, &take(10)).await.expect("receive");
    assert_eq!(bodies(&got), ["committed", "plain"]);

    // Acknowledging with the work: undone by a rollback...
    let tx = client.transaction().await.expect("begin");
    tx.execute("INSERT INTO orders VALUES (3)", &[]).await.expect("work");
    b.queues().ack_in(&tx, &q, &receipts(&got)).await.expect("ack_in");
    tx.rollback().await.expect("rollback");
    let stats = b.queues().stats(&q).await.expect("stats");
    assert_eq!(stats.in_flight, 2, "still leased");
    // ...and done with the commit; the receipts were still good.
    let tx = client.transaction().await.expect("begin");
    tx.execute("INSERT INTO orders VALUES (3)", &[]).await.expect("work");
    b.queues().ack_in(&tx, &q, &receipts(&got)).await.expect("ack_in");
    tx.commit().await.expect("commit");
    let stats = b.queues().stats(&q).await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight), (0, 0));
}

/// The statements a caller's transaction runs name pgbroker's schema
/// themselves: they work whatever the connection's search_path.
#[tokio::test]
async fn outbox_calls_work_on_a_connection_with_another_search_path() {
    let db = TestDb::new().await;
    let q = db.queue("elsewhere", QueueConfig::default()).await;
    let b = &db.broker;
    let mut client = db.raw().await;
    client
        .batch_execute("SET search_path = public")
        .await
        .expect("search_path");
    let tx = client.transaction().await.expect("begin");
    let messages = [
        Message::new("grouped").with_group("g").with_dedup_key("k"),
        Message::new("plain"),
    ];
    b.queues().send_in(&tx, &q, &messages).await.expect("send_in with keys");
    b.queues()
        .send_in(&tx, &q, &[Message::new("lean")])
        .await
        .expect("plain send_in");
    tx.commit().await.expect("commit");
    let got = b.queues().receive(&q, &take(10)).await.expect("receive");
    assert_eq!(bodies(&got), ["grouped", "plain", "lean"]);
    let tx = client.transaction().await.expect("begin");
    // The grouped message takes the transactional path of the settlement.
    b.queues().ack_in(&tx, &q, &receipts(&got)).await.expect("ack_in");
    tx.commit().await.expect("commit");
    let stats = b.queues().stats(&q).await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight), (0, 0));
}

#[tokio::test]
async fn stats_count_each_state() {
    let db = TestDb::new().await;
    let q = db.queue("stats", QueueConfig::default()).await;
    let b = &db.broker;
    b.queues()
        .send_batch(&q, &[Message::new("1"), Message::new("2"), Message::new("3")])
        .await
        .expect("send");
    b.queues()
        .send(&q, &Message::new("later").with_delay(Duration::from_secs(60)))
        .await
        .expect("send");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let got = b.queues().receive(&q, &take(1)).await.expect("receive");
    let stats = b.queues().stats(&q).await.expect("stats");
    assert_eq!(
        (stats.ready, stats.in_flight, stats.delayed, stats.dead_lettered),
        (2, 1, 1, 0)
    );
    let age = stats.oldest_ready_age_ms.expect("age");
    assert!((40..10_000).contains(&age), "{age}");
    b.queues()
        .nack(
            &q,
            &receipts(&got),
            &NackOptions {
                delay: Some(Duration::from_secs(60)),
                ..NackOptions::default()
            },
        )
        .await
        .expect("nack");
    let stats = b.queues().stats(&q).await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight, stats.delayed), (2, 0, 2));
}

#[tokio::test]
async fn all_stats_agree_with_each_queue_s_stats() {
    let db = TestDb::new().await;
    let b = &db.broker;
    let dlq = db.queue("all.dlq", QueueConfig::default()).await;
    let jobs = db.queue_failing_once("all.jobs", Some(&dlq)).await;
    let solo = db.queue_failing_once("all.solo", None).await;
    let fifo = db.queue("all.fifo", QueueConfig::default()).await;
    let empty = db.queue("all.empty", QueueConfig::default()).await;
    for q in [&jobs, &solo] {
        b.queues()
            .send_batch(q, &[Message::new("1"), Message::new("2"), Message::new("3")])
            .await
            .expect("send");
        b.queues()
            .send(q, &Message::new("later").with_delay(Duration::from_secs(60)))
            .await
            .expect("send");
        // One dies (dead-lettered or dead in place), one stays in flight.
        let got = b.queues().receive(q, &take(2)).await.expect("receive");
        b.queues()
            .nack(q, &receipts(&got[..1]), &NackOptions::default())
            .await
            .expect("nack");
    }
    let grouped: Vec<Message> = (0..5).map(|i| Message::new(format!("g{i}")).with_group("g")).collect();
    b.queues().send_batch(&fifo, &grouped).await.expect("send");
    b.queues().receive(&fifo, &take(1)).await.expect("receive");

    let all = b.queues().all_stats().await.expect("all stats");
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["all.dlq", "all.empty", "all.fifo", "all.jobs", "all.solo"]);
    for (name, got) in &all {
        let one = b.queues().stats(name).await.expect("stats");
        assert_eq!(
            (got.ready, got.in_flight, got.delayed, got.dead_lettered),
            (one.ready, one.in_flight, one.delayed, one.dead_lettered),
            "{name}"
        );
        match (got.oldest_ready_age_ms, one.oldest_ready_age_ms) {
            (None, None) => {}
            (Some(a), Some(b)) => assert!(a.abs_diff(b) < 5_000, "{name}: {a} against {b}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    let counts = |q: &QueueName| {
        let (_, s) = all.iter().find(|(n, _)| n == q).expect("listed");
        (s.ready, s.in_flight, s.delayed, s.dead_lettered)
    };
    assert_eq!(counts(&jobs), (1, 1, 1, 1));
    assert_eq!(counts(&dlq), (1, 0, 0, 0));
    assert_eq!(counts(&solo), (1, 1, 1, 1));
    assert_eq!(counts(&fifo), (4, 1, 0, 0));
    assert_eq!(counts(&empty), (0, 0, 0, 0));
}

#[tokio::test]
async fn administration_lists_updates_purges_and_deletes() {
    let db = TestDb::new().await;
    let dlq = db.queue("z.dlq", QueueConfig::default()).await;
    let config = QueueConfig {
        dead_letter: Some(dlq.clone()),
        archive_retention: Some(Duration::from_secs(3600)),
        ..QueueConfig::default()
    };
    let q = db.queue("a", config.clone()).await;
    let b = &db.broker;
    let names: Vec<String> = b
        .queues()
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|i| i.name.to_string())
        .collect();
    assert_eq!(names, ["a", "z.dlq"]);
    let info = b.queues().info(&q).await.expect("info");
    assert_eq!(
        (info.dead_letter.as_ref(), info.archive_retention_ms),
        (Some(&dlq), Some(3_600_000))
    );
    // Archived on ack when the queue keeps acknowledged messages.
    b.queues().send(&q, &Message::new("kept")).await.expect("send");
    let got = b.queues().receive(&q, &take(1)).await.expect("receive");
    b.queues().ack(&q, &receipts(&got)).await.expect("ack");
    let client = db.raw().await;
    let archived: i64 = client
        .query_one("SELECT count(*) FROM queue_archived WHERE queue = 'a'", &[])
        .await
        .expect("archive")
        .get(0);
    assert_eq!(archived, 1);

    assert!(matches!(b.queues().delete(&dlq).await, Err(Error::QueueInUse { .. })));
    b.queues()
        .send_batch(&q, &[Message::new("1"), Message::new("2").with_group("g")])
        .await
        .expect("send");
    let leased = b.queues().receive(&q, &take(1)).await.expect("receive");
    assert_eq!(b.queues().purge(&q).await.expect("purge"), 2);
    assert!(
        is_stale(b.queues().ack(&q, &receipts(&leased)).await),
        "purged while leased"
    );
    let stats = b.queues().stats(&q).await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight), (0, 0));
    b.queues()
        .update(
            &q,
            &QueueConfig {
                dead_letter: None,
                ..config
            },
        )
        .await
        .expect("update");
    b.queues().delete(&dlq).await.expect("delete dlq");
    b.queues().delete(&q).await.expect("delete");
    assert!(b.queues().list().await.expect("list").is_empty());
    for table in ["queue_messages", "queue_groups", "queue_dedup", "queue_archive"] {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 0, "{table}");
    }
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let db = TestDb::new().await;
    let q = db
        .queue(
            "bad",
            QueueConfig {
                max_message_bytes: 100,
                ..QueueConfig::default()
            },
        )
        .await;
    let b = &db.broker;
    let missing = QueueName::new("missing").expect("valid");
    let unknown = |r: Result<_, Error>| matches!(r, Err(Error::UnknownQueue(_)));
    assert!(unknown(b.queues().send(&missing, &Message::new("x")).await.map(|_| ())));
    assert!(unknown(b.queues().receive(&missing, &take(1)).await.map(|_| ())));
    assert!(unknown(b.queues().stats(&missing).await.map(|_| ())));
    assert!(unknown(b.queues().purge(&missing).await.map(|_| ())));
    assert!(unknown(b.queues().delete(&missing).await));
    assert!(unknown(b.queues().redrive(&missing, None).await.map(|_| ())));
    assert!(unknown(b.queues().redrive(&q, Some(&missing)).await.map(|_| ())));
    let with_missing_dlq = QueueConfig {
        dead_letter: Some(missing.clone()),
        ..QueueConfig::default()
    };
    assert!(unknown(
        b.queues()
            .create(&QueueName::new("n").expect("valid"), &with_missing_dlq)
            .await
            .map(|_| ())
    ));
    assert!(matches!(
        b.queues().create(&q, &QueueConfig::default()).await,
        Err(Error::QueueExists(_))
    ));
    let invalid = |r: Result<_, Error>| matches!(r, Err(Error::Invalid { .. }));
    assert!(invalid(
        b.queues()
            .send(&q, &Message::new("x").with_priority(10))
            .await
            .map(|_| ())
    ));
    assert!(invalid(
        b.queues()
            .send(&q, &Message::new("x").with_delay(Duration::from_secs(365 * 24 * 3600)))
            .await
            .map(|_| ())
    ));
    assert!(matches!(
        b.queues()
            .send_batch(&q, &[Message::new("ok"), Message::new(vec![0; 101])])
            .await,
        Err(Error::MessageTooLarge { size: 101, max: 100 })
    ));
    assert!(invalid(b.queues().receive(&q, &take(0)).await.map(|_| ())));
    assert!(invalid(b.queues().receive(&q, &take(1001)).await.map(|_| ())));
    let r: Receipt = "1:00000000-0000-0000-0000-000000000000".parse().expect("shape");
    assert!(invalid(
        b.queues()
            .extend_lease(&q, std::slice::from_ref(&r), Duration::ZERO)
            .await
            .map(|_| ())
    ));
    let far = NackOptions {
        delay: Some(Duration::from_secs(365 * 24 * 3600)),
        ..NackOptions::default()
    };
    assert!(invalid(b.queues().nack(&q, &[r], &far).await));
    let stats = b.queues().stats(&q).await.expect("stats");
    assert_eq!((stats.ready, stats.delayed), (0, 0), "nothing was sent");
    assert_eq!(b.queues().list().await.expect("list").len(), 1, "nothing created");
}

/// pitfalls.md, SQL injection: pgmq had injection through queue names.
/// Names cannot carry SQL; keys, headers and error texts are bound data.
#[tokio::test]
async fn hostile_names_are_data_not_sql() {
    let db = TestDb::new().await;
    for name in ["q'; DROP TABLE queues; --", "a\"b", "q;", &"q".repeat(250)] {
        assert!(QueueName::new(name).is_err(), "{name:?}");
    }
    let q = db.queue("hostile", QueueConfig::default()).await;
    let b = &db.broker;
    let evil = "x'); DELETE FROM queue_messages; --\"";
    b.queues()
        .send(
            &q,
            &Message::new(evil)
                .with_group(evil)
                .with_dedup_key(evil)
                .with_header(evil, evil),
        )
        .await
        .expect("send");
    let got = b.queues().receive(&q, &take(1)).await.expect("receive");
    assert_eq!(
        (got[0].group.as_deref(), got[0].dedup_key.as_deref()),
        (Some(evil), Some(evil))
    );
    assert_eq!(got[0].headers[0].key, evil);
    let nack = NackOptions {
        delay: Some(Duration::ZERO),
        error: Some(format!("{evil}\0")),
    };
    b.queues().nack(&q, &receipts(&got), &nack).await.expect("nack");
    let again = b.queues().receive(&q, &take(1)).await.expect("receive");
    assert!(again[0].last_error.as_deref().is_some_and(|e| e.starts_with(evil)));
    // Long names sharing a 63-byte prefix stay distinct queues.
    let long_a = db.queue(&format!("{}a", "p".repeat(100)), QueueConfig::default()).await;
    let long_b = db.queue(&format!("{}b", "p".repeat(100)), QueueConfig::default()).await;
    b.queues().send(&long_a, &Message::new("a")).await.expect("send");
    assert_eq!(b.queues().stats(&long_b).await.expect("stats").ready, 0);
    assert_eq!(b.queues().stats(&long_a).await.expect("stats").ready, 1);
}

/// Median time from a send starting to a waiting receive returning.
async fn wake_latency(reader: &pgbroker::Broker, writer: &pgbroker::Broker, q: &QueueName) -> Duration {
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let (broker, queue) = (reader.clone(), q.clone());
        let waiter = tokio::spawn(async move {
            let wait = ReceiveOptions {
                wait: Duration::from_secs(10),
                ..take(1)
            };
            let got = broker.queues().receive(&queue, &wait).await.expect("receive");
            (Instant::now(), got)
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = Instant::now();
        writer.queues().send(q, &Message::new("x")).await.expect("send");
        let (woke, got) = waiter.await.expect("waiter");
        assert_eq!(got.len(), 1);
        reader.queues().ack(q, &receipts(&got)).await.expect("ack");
        latencies.push(woke.duration_since(sent));
    }
    latencies.sort();
    latencies[2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_on_send_not_on_timer() {
    let db = TestDb::new().await;
    let q = db.queue("poll", QueueConfig::default()).await;
    // Receivers that re-read on their own only every 30 s: a wake-up within
    // seconds came from the send, in the same process or, in another
    // broker, through NOTIFY. The bound leaves room for a busy machine.
    let slow = Duration::from_secs(30);
    let (reader, other) = (db.broker_polling_every(slow).await, db.broker_polling_every(slow).await);
    let local = wake_latency(&reader, &reader, &q).await;
    assert!(local < Duration::from_secs(5), "same process: {local:?}");
    let remote = wake_latency(&other, &db.broker, &q).await;
    assert!(remote < Duration::from_secs(5), "other process, by NOTIFY: {remote:?}");
    let wait = ReceiveOptions {
        wait: Duration::from_millis(300),
        ..take(1)
    };
    let started = Instant::now();
    assert!(db.broker.queues().receive(&q, &wait).await.expect("receive").is_empty());
    assert!(started.elapsed() >= Duration::from_millis(300));
}
