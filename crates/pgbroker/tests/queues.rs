//! Work queues: leases and receipts, retries, dead letters, delays,
//! priorities and deduplication. Each test runs in a fresh schema of a real
//! PostgreSQL.

use std::time::{Duration, Instant, SystemTime};

use pgbroker::queues::{NackOptions, ReceiveOptions};
use pgbroker::{Error, Message, QueueConfig, Receipt};
use pgbroker_testkit::db::{bodies, is_stale, receipts, take, TestDb};

#[tokio::test]
async fn send_receive_ack_round_trip() {
    let db = TestDb::new().await;
    let q = db.queue("jobs", QueueConfig::default()).await;
    let b = &db.broker;
    let before = SystemTime::now() - Duration::from_secs(5);
    let sent = b
        .queues()
        .send(&q, &Message::new(vec![0u8, 159, 255]).with_header("h", "1"))
        .await
        .expect("send");
    assert!(!sent.duplicate);
    let got = b.queues().receive(&q, &take(10)).await.expect("receive");
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!((m.id, m.attempt, m.body.as_slice()), (sent.id, 1, &[0u8, 159, 255][..]));
    assert_eq!(m.headers[0].key, "h");
    assert_eq!(m.receipt.message_id(), m.id);
    assert!(m.enqueued_at > before);
    let lease = m
        .lease_expires_at
        .duration_since(SystemTime::now())
        .expect("lease ahead");
    assert!(
        lease > Duration::from_secs(20) && lease <= Duration::from_secs(31),
        "{lease:?}"
    );
    assert!(
        b.queues().receive(&q, &take(10)).await.expect("receive").is_empty(),
        "leased"
    );
    let stats = b.queues().stats(&q).await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight), (0, 1));
    b.queues().ack(&q, &receipts(&got)).await.expect("ack");
    assert!(is_stale(b.queues().ack(&q, &receipts(&got)).await), "second ack");
    let stats = b.queues().stats(&q).await.expect("stats");
    assert_eq!(
        (stats.ready, stats.in_flight, stats.delayed, stats.dead_lettered),
        (0, 0, 0, 0)
    );
    assert_eq!(stats.oldest_ready_age_ms, None);
}

/// pitfalls.md, Queues: an expired worker kept running and acked. After a
/// lease expired and the message was claimed again, the old receipt is
/// refused for ack, nack and extend, and changes nothing.
#[tokio::test]
async fn expired_lease_redelivers_and_old_receipt_is_refused() {
    let db = TestDb::new().await;
    let q = db.queue("lease", QueueConfig::default()).await;
    let b = &db.broker;
    let id = b.queues().send(&q, &Message::new("m")).await.expect("send").id;
    let short = ReceiveOptions {
        visibility_timeout: Some(Duration::from_millis(300)),
        ..take(1)
    };
    let first = b.queues().receive(&q, &short).await.expect("receive");
    assert_eq!(first[0].attempt, 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stats = b.queues().stats(&q).await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight), (1, 0), "an expired lease is ready");
    let second = b.queues().receive(&q, &take(1)).await.expect("receive again");
    assert_eq!((second[0].id, second[0].attempt), (id, 2));
    assert_ne!(first[0].receipt, second[0].receipt);

    let old = receipts(&first);
    assert!(is_stale(b.queues().ack(&q, &old).await));
    assert!(is_stale(b.queues().nack(&q, &old, &NackOptions::default()).await));
    assert!(is_stale(
        b.queues().extend_lease(&q, &old, Duration::from_secs(60)).await
    ));
    // A batch with one stale receipt changes nothing, and names it.
    let mixed = vec![second[0].receipt.clone(), first[0].receipt.clone()];
    match b.queues().ack(&q, &mixed).await {
        Err(Error::StaleReceipt { receipts }) => assert_eq!(receipts, vec![first[0].receipt.to_string()]),
        other => panic!("expected StaleReceipt, got {other:?}"),
    }
    let stats = b.queues().stats(&q).await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight), (0, 1), "old receipt changed nothing");

    // The current receipt works: extend, then ack.
    let ends = b
        .queues()
        .extend_lease(&q, &receipts(&second), Duration::from_secs(60))
        .await
        .expect("extend");
    assert!(ends[0] > second[0].lease_expires_at + Duration::from_secs(59));
    b.queues().ack(&q, &receipts(&second)).await.expect("ack");
    assert_eq!(b.queues().stats(&q).await.expect("stats").in_flight, 0);
    // A receipt of the right shape for a message that never existed.
    let unknown: Receipt = "999999:00000000-0000-0000-0000-000000000000".parse().expect("shape");
    assert!(is_stale(b.queues().ack(&q, &[unknown]).await));
    assert!(matches!("1:x".parse::<Receipt>(), Err(Error::Invalid { .. })));
}

#[tokio::test]
async fn a_batch_ack_with_one_stale_receipt_deletes_nothing() {
    let db = TestDb::new().await;
    let q = db.queue("batch-ack", QueueConfig::default()).await;
    let b = &db.broker;
    let batch = [Message::new("a").with_priority(1), Message::new("b")];
    b.queues().send_batch(&q, &batch).await.expect("send");
    let short = ReceiveOptions {
        visibility_timeout: Some(Duration::from_millis(300)),
        ..take(1)
    };
    // "a" first (priority) on the default lease, then "b" on a short lease
    // that expires.
    let a = b.queues().receive(&q, &take(1)).await.expect("receive a");
    let old_b = b.queues().receive(&q, &short).await.expect("receive b");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let new_b = b.queues().receive(&q, &take(1)).await.expect("receive b again");
    assert_eq!([bodies(&old_b), bodies(&a), bodies(&new_b)], [["b"], ["a"], ["b"]]);
    let mixed = vec![a[0].receipt.clone(), old_b[0].receipt.clone()];
    match b.queues().ack(&q, &mixed).await {
        Err(Error::StaleReceipt { receipts }) => assert_eq!(receipts, vec![old_b[0].receipt.to_string()]),
        other => panic!("expected StaleReceipt, got {other:?}"),
    }
    let stats = b.queues().stats(&q).await.expect("stats");
    assert_eq!(
        stats.in_flight, 2,
        "the current receipt's message was not deleted either"
    );
    let both = vec![a[0].receipt.clone(), new_b[0].receipt.clone()];
    b.queues().ack(&q, &both).await.expect("ack both current");
    assert_eq!(b.queues().stats(&q).await.expect("stats").in_flight, 0);
}

#[tokio::test]
async fn nack_applies_backoff_unless_a_delay_is_given() {
    let db = TestDb::new().await;
    let q = db
        .queue(
            "retry",
            QueueConfig {
                backoff_base: Duration::from_secs(2),
                backoff_max: Duration::from_secs(10),
                ..QueueConfig::default()
            },
        )
        .await;
    let b = &db.broker;
    b.queues().send(&q, &Message::new("m")).await.expect("send");
    // No delay: the queue's backoff, 2 s * 2^0 with 50-100 % jitter: due in
    // 1 to 2 s, which leaves the checks below time on a busy machine.
    let got = b.queues().receive(&q, &take(1)).await.expect("receive");
    let nacked = Instant::now();
    let error = NackOptions {
        error: Some("boom".into()),
        ..NackOptions::default()
    };
    b.queues().nack(&q, &receipts(&got), &error).await.expect("nack");
    // Due 1 to 2 s after the nack: 2 s * 2^0, not 2^1, with the jitter.
    let due_in: f64 = db
        .raw()
        .await
        .query_one(
            "SELECT extract(epoch FROM visible_at - now())::float8 FROM queue_contents WHERE id = $1",
            &[&got[0].id],
        )
        .await
        .expect("due")
        .get(0);
    let since_nack = nacked.elapsed().as_secs_f64();
    assert!(
        due_in <= 2.0 && due_in >= 1.0 - since_nack - 0.01,
        "due in {due_in} s, {since_nack} s after the nack"
    );
    let stats = b.queues().stats(&q).await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight, stats.delayed), (0, 0, 1));
    assert!(
        b.queues().receive(&q, &take(1)).await.expect("receive").is_empty(),
        "backing off"
    );
    let wait = ReceiveOptions {
        wait: Duration::from_secs(10),
        ..take(1)
    };
    let again = b.queues().receive(&q, &wait).await.expect("receive after backoff");
    let waited = nacked.elapsed();
    assert!(
        waited >= Duration::from_millis(990) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
    assert_eq!((again[0].attempt, again[0].last_error.as_deref()), (2, Some("boom")));
    // An explicit zero delay overrides the backoff: due at once.
    let zero = NackOptions {
        delay: Some(Duration::ZERO),
        ..NackOptions::default()
    };
    b.queues().nack(&q, &receipts(&again), &zero).await.expect("nack");
    let third = b.queues().receive(&q, &take(1)).await.expect("receive");
    assert_eq!(third[0].attempt, 3);
    // An explicit delay: not before it.
    let later = NackOptions {
        delay: Some(Duration::from_millis(400)),
        ..NackOptions::default()
    };
    let t = Instant::now();
    b.queues().nack(&q, &receipts(&third), &later).await.expect("nack");
    let fourth = b.queues().receive(&q, &wait).await.expect("receive");
    assert!(t.elapsed() >= Duration::from_millis(390), "{:?}", t.elapsed());
    assert_eq!(fourth[0].attempt, 4);
}

#[tokio::test]
async fn out_of_attempts_goes_to_the_dead_letter_queue_and_redrive_brings_it_back() {
    let db = TestDb::new().await;
    let dlq = db.queue("jobs.dlq", QueueConfig::default()).await;
    let q = db
        .queue(
            "jobs",
            QueueConfig {
                max_attempts: 3,
                dead_letter: Some(dlq.clone()),
                ..QueueConfig::default()
            },
        )
        .await;
    let b = &db.broker;
    let id = b
        .queues()
        .send(&q, &Message::new("poison").with_dedup_key("k"))
        .await
        .expect("send")
        .id;
    for attempt in 1..=3 {
        let got = b.queues().receive(&q, &take(1)).await.expect("receive");
        assert_eq!(got[0].attempt, attempt);
        let nack = NackOptions {
            delay: Some(Duration::ZERO),
            error: Some(format!("failure {attempt}")),
        };
        b.queues().nack(&q, &receipts(&got), &nack).await.expect("nack");
    }
    assert!(b.queues().receive(&q, &take(1)).await.expect("receive").is_empty());
    let stats = b.queues().stats(&q).await.expect("stats");
    assert_eq!((stats.ready, stats.dead_lettered), (0, 1));
    assert_eq!(b.queues().stats(&dlq).await.expect("stats").ready, 1);
    // Its key is free again in the source queue.
    assert!(
        !b.queues()
            .send(&q, &Message::new("again").with_dedup_key("k"))
            .await
            .expect("send")
            .duplicate
    );
    b.queues().purge(&q).await.expect("purge");

    let dead = b.queues().receive(&dlq, &take(1)).await.expect("receive dead letter");
    let d = &dead[0];
    assert_eq!((d.id, d.attempt, d.dead_letter_attempts), (id, 1, Some(3)));
    assert_eq!(d.last_error.as_deref(), Some("failure 3"));
    assert_eq!(d.dead_letter_source.as_ref(), Some(&q));
    assert_eq!(d.dedup_key.as_deref(), Some("k"));
    // Redrive leaves leased dead letters alone...
    assert_eq!(b.queues().redrive(&dlq, None).await.expect("redrive"), 0);
    b.queues()
        .nack(
            &dlq,
            &receipts(&dead),
            &NackOptions {
                delay: Some(Duration::ZERO),
                ..NackOptions::default()
            },
        )
        .await
        .expect("release");
    // ...and moves the others back where they came from, with fresh attempts.
    assert_eq!(b.queues().redrive(&dlq, None).await.expect("redrive"), 1);
    assert_eq!(b.queues().stats(&q).await.expect("stats").dead_lettered, 0);
    let back = b.queues().receive(&q, &take(1)).await.expect("receive");
    assert_eq!(
        (back[0].id, back[0].attempt, back[0].dead_letter_source.as_ref()),
        (id, 1, None)
    );
    assert_eq!(back[0].last_error.as_deref(), Some("failure 3"), "history kept");
    b.queues().ack(&q, &receipts(&back)).await.expect("ack");
}

#[tokio::test]
async fn expired_leases_count_as_attempts_and_a_queue_without_dlq_keeps_its_dead() {
    let db = TestDb::new().await;
    let q = db
        .queue(
            "fragile",
            QueueConfig {
                max_attempts: 2,
                visibility_timeout: Duration::from_millis(200),
                ..QueueConfig::default()
            },
        )
        .await;
    let b = &db.broker;
    let id = b.queues().send(&q, &Message::new("m")).await.expect("send").id;
    for attempt in 1..=2 {
        let got = b.queues().receive(&q, &take(1)).await.expect("receive");
        assert_eq!(got[0].attempt, attempt);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The third claim finds it out of attempts and buries it instead.
    assert!(b.queues().receive(&q, &take(1)).await.expect("receive").is_empty());
    let stats = b.queues().stats(&q).await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight, stats.dead_lettered), (0, 0, 1));
    let client = db.raw().await;
    let row = client
        .query_one(
            "SELECT state, attempts, last_error FROM queue_contents WHERE id = $1",
            &[&id],
        )
        .await
        .expect("row");
    assert_eq!(row.get::<_, String>(0), "dead");
    assert_eq!(row.get::<_, i32>(1), 2);
    assert_eq!(row.get::<_, String>(2), "visibility timeout expired");
    // Redriving the queue itself brings its dead back to life.
    assert_eq!(b.queues().redrive(&q, None).await.expect("redrive"), 1);
    let got = b.queues().receive(&q, &take(1)).await.expect("receive");
    assert_eq!((got[0].id, got[0].attempt), (id, 1));
}

#[tokio::test]
async fn delays_and_delivery_times() {
    let db = TestDb::new().await;
    let q = db.queue("later", QueueConfig::default()).await;
    let b = &db.broker;
    let sent = Instant::now();
    b.queues()
        .send(&q, &Message::new("delayed").with_delay(Duration::from_secs(2)))
        .await
        .expect("send");
    b.queues()
        .send(
            &q,
            &Message::new("past").with_deliver_at(SystemTime::now() - Duration::from_secs(60)),
        )
        .await
        .expect("send");
    let stats = b.queues().stats(&q).await.expect("stats");
    assert_eq!((stats.ready, stats.delayed), (1, 1));
    assert_eq!(
        bodies(&b.queues().receive(&q, &take(10)).await.expect("receive")),
        ["past"]
    );
    // A long poll sleeps until the delay is over: a receiver that re-reads
    // on its own only every 30 s still gets the message when it is due.
    let wait = ReceiveOptions {
        wait: Duration::from_secs(10),
        ..take(10)
    };
    let slow = db.broker_polling_every(Duration::from_secs(30)).await;
    let got = slow.queues().receive(&q, &wait).await.expect("receive");
    let waited = sent.elapsed();
    assert_eq!(bodies(&got), ["delayed"]);
    assert!(
        waited >= Duration::from_millis(1990) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
    let future = SystemTime::now() + Duration::from_secs(3600);
    b.queues()
        .send(&q, &Message::new("hour").with_deliver_at(future))
        .await
        .expect("send");
    assert!(b.queues().receive(&q, &take(10)).await.expect("receive").is_empty());
}

#[tokio::test]
async fn higher_priority_first_then_oldest() {
    let db = TestDb::new().await;
    let q = db.queue("prio", QueueConfig::default()).await;
    let b = &db.broker;
    let batch: Vec<Message> = [(0, "a"), (5, "b"), (9, "c"), (5, "d"), (0, "e")]
        .into_iter()
        .map(|(p, s)| Message::new(s).with_priority(p))
        .collect();
    b.queues().send_batch(&q, &batch).await.expect("send");
    let got = b.queues().receive(&q, &take(2)).await.expect("receive");
    assert_eq!(bodies(&got), ["c", "b"]);
    // A released message keeps its place by priority and age.
    let zero = NackOptions {
        delay: Some(Duration::ZERO),
        ..NackOptions::default()
    };
    b.queues().nack(&q, &receipts(&got[1..]), &zero).await.expect("nack");
    let got = b.queues().receive(&q, &take(10)).await.expect("receive");
    assert_eq!(bodies(&got), ["b", "d", "a", "e"]);
}

#[tokio::test]
async fn dedup_key_is_a_no_op_until_acknowledged() {
    let db = TestDb::new().await;
    let q = db.queue("dedup", QueueConfig::default()).await;
    let b = &db.broker;
    let first = b
        .queues()
        .send(&q, &Message::new("1").with_dedup_key("order-7"))
        .await
        .expect("send");
    let again = b
        .queues()
        .send(&q, &Message::new("2").with_dedup_key("order-7"))
        .await
        .expect("send");
    assert_eq!((again.id, again.duplicate), (first.id, true));
    let batch = b
        .queues()
        .send_batch(
            &q,
            &[
                Message::new("3").with_dedup_key("x"),
                Message::new("4").with_dedup_key("order-7"),
                Message::new("5").with_dedup_key("x"),
            ],
        )
        .await
        .expect("batch");
    assert_eq!(batch[1].id, first.id);
    assert_eq!(
        (batch[2].id, batch[2].duplicate, batch[0].duplicate),
        (batch[0].id, true, false)
    );
    assert_eq!(b.queues().stats(&q).await.expect("stats").ready, 2);
    // Still a duplicate while in flight; free once acknowledged.
    let got = b.queues().receive(&q, &take(10)).await.expect("receive");
    assert!(
        b.queues()
            .send(&q, &Message::new("6").with_dedup_key("order-7"))
            .await
            .expect("send")
            .duplicate
    );
    b.queues().ack(&q, &receipts(&got)).await.expect("ack");
    let after = b
        .queues()
        .send(&q, &Message::new("7").with_dedup_key("order-7"))
        .await
        .expect("send");
    assert!(!after.duplicate && after.id != first.id);
}

/// One claim leases messages from both partitions of the queue storage
/// (before and after a rotation): each its own receipt and lease, in
/// order, and each acknowledged from where it is.
#[tokio::test]
async fn one_claim_leases_messages_of_both_partitions() {
    let db = TestDb::new().await;
    let q = db.queue("both", QueueConfig::default()).await;
    let b = &db.broker;
    for body in ["old-1", "old-2"] {
        b.queues().send(&q, &Message::new(body)).await.expect("send");
    }
    let pass = b.maintenance().maintain_queues().await.expect("maintain");
    assert!(pass.rotated, "{pass:?}");
    for body in ["new-1", "new-2"] {
        b.queues().send(&q, &Message::new(body)).await.expect("send");
    }
    let c = db.raw().await;
    let slots = format!("SELECT count(DISTINCT slot) FROM {}.queue_messages", db.schema);
    let n: i64 = c.query_one(&slots, &[]).await.expect("slots").get(0);
    assert_eq!(n, 2, "messages in both partitions");

    let got = b.queues().receive(&q, &take(10)).await.expect("receive");
    assert_eq!(bodies(&got), ["old-1", "old-2", "new-1", "new-2"]);
    let leased = format!(
        "SELECT count(*) FROM {}.queue_messages WHERE receipt IS NOT NULL AND timed AND attempts = 1
           AND visible_at > now() + interval '20 seconds'",
        db.schema
    );
    let n: i64 = c.query_one(&leased, &[]).await.expect("leased").get(0);
    assert_eq!(n, 4, "every claimed row holds its lease");
    assert!(b.queues().receive(&q, &take(10)).await.expect("receive").is_empty());
    b.queues().ack(&q, &receipts(&got)).await.expect("ack");
    let stats = b.queues().stats(&q).await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight), (0, 0));
}
