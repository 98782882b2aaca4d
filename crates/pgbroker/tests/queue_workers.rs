//! Work queues under concurrency: many workers draining one queue while
//! senders fill it, and workers that die holding leases.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgbroker::queues::ReceiveOptions;
use pgbroker::{Broker, Error, Message, QueueConfig, QueueName, Receipt};
use pgbroker_testkit::db::TestDb;

const MESSAGES: usize = 100_000;
const WORKERS: usize = 16;
const SENDERS: usize = 2;

/// pitfalls.md, Queues: a claim that is not one atomic statement delivers
/// twice. 16 workers on two brokers (two connection pools, as two
/// processes would have) drain 100,000 messages while two senders fill the
/// queue; no lease expires, so each message must be received exactly once,
/// and never while another worker holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_workers_receive_each_message_exactly_once() {
    let db = TestDb::new().await;
    let q = db
        .queue(
            "work",
            QueueConfig {
                visibility_timeout: Duration::from_secs(600),
                ..QueueConfig::default()
            },
        )
        .await;
    let other = db.other_broker().await;
    let started = Instant::now();
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let (broker, q) = (db.broker.clone(), q.clone());
        senders.push(tokio::spawn(async move {
            for chunk in (s..MESSAGES / 500).step_by(SENDERS) {
                let batch: Vec<Message> = (chunk * 500..(chunk + 1) * 500)
                    .map(|i| Message::new(i.to_string()))
                    .collect();
                broker.queues().send_batch(&q, &batch).await.expect("send");
            }
        }));
    }
    // id -> receipt of the lease a worker holds right now.
    let held: Arc<Mutex<HashMap<i64, Receipt>>> = Arc::default();
    let seen: Arc<Mutex<Vec<usize>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let broker = if w % 2 == 0 { db.broker.clone() } else { other.clone() };
        let (q, held, seen, done) = (q.clone(), held.clone(), seen.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let options = ReceiveOptions {
                max_messages: 10 + w * 5,
                wait: Duration::from_millis(200),
                ..ReceiveOptions::default()
            };
            while done.load(Ordering::SeqCst) < MESSAGES {
                let got = broker.queues().receive(&q, &options).await.expect("receive");
                {
                    let mut h = held.lock().expect("lock");
                    for m in &got {
                        assert_eq!(m.attempt, 1, "message {} delivered again", m.id);
                        if let Some(other) = h.insert(m.id, m.receipt.clone()) {
                            panic!("message {} leased twice: {other} and {}", m.id, m.receipt);
                        }
                    }
                }
                let receipts: Vec<Receipt> = got.iter().map(|m| m.receipt.clone()).collect();
                broker.queues().ack(&q, &receipts).await.expect("ack");
                // Held from the receive until the acknowledgement committed.
                {
                    let mut h = held.lock().expect("lock");
                    let mut s = seen.lock().expect("lock");
                    for m in &got {
                        h.remove(&m.id);
                        s.push(String::from_utf8_lossy(&m.body).parse().expect("number"));
                    }
                }
                done.fetch_add(got.len(), Ordering::SeqCst);
            }
        }));
    }
    for s in senders {
        s.await.expect("sender");
    }
    for w in workers {
        w.await.expect("worker");
    }
    let elapsed = started.elapsed();
    let mut seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), MESSAGES, "counts add up");
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), MESSAGES, "every message exactly once");
    let stats = db.broker.queues().stats(&q).await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight, stats.delayed), (0, 0, 0));
    eprintln!(
        "{MESSAGES} messages through {WORKERS} workers in {elapsed:?} ({:.0}/s)",
        MESSAGES as f64 / elapsed.as_secs_f64()
    );
}

/// The environment that makes the child test below act as a worker.
const CHILD_SCHEMA: &str = "PGBROKER_QUEUE_CHILD_SCHEMA";

/// A worker process: receives ten messages with a 6 s lease, prints their
/// receipts, and waits to be killed. Run only by the test below.
#[tokio::test]
#[ignore = "child process of worker_killed_mid_lease; runs only when it spawns it"]
async fn child_worker_holding_leases() {
    let Ok(schema) = std::env::var(CHILD_SCHEMA) else {
        return;
    };
    let broker = Broker::connect(pgbroker::BrokerConfig {
        database_url: pgbroker_testkit::database_url(),
        schema,
        pool_size: 2,
        ..pgbroker::BrokerConfig::default()
    })
    .await
    .expect("connect");
    let q = QueueName::new("jobs").expect("valid");
    let options = ReceiveOptions {
        max_messages: 10,
        visibility_timeout: Some(Duration::from_secs(6)),
        ..ReceiveOptions::default()
    };
    let got = broker.queues().receive(&q, &options).await.expect("receive");
    for m in &got {
        println!("RECEIPT {}", m.receipt);
    }
    println!("HOLDING");
    tokio::time::sleep(Duration::from_secs(120)).await;
}

/// Workers killed (SIGKILL, a real process) while holding leases: their
/// messages come back after the visibility timeout with attempt 2; the
/// dead worker's receipts are refused afterwards; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_lease() {
    let db = TestDb::new().await;
    let q = db.queue("jobs", QueueConfig::default()).await;
    let b = &db.broker;
    let batch: Vec<Message> = (0..15).map(|i| Message::new(format!("job {i}"))).collect();
    b.queues().send_batch(&q, &batch).await.expect("send");

    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["child_worker_holding_leases", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_SCHEMA, &db.schema)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker");
    let stdout = child.stdout.take().expect("stdout");
    let lines = tokio::task::spawn_blocking(move || {
        let mut receipts = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("line");
            if let Some(r) = line.strip_prefix("RECEIPT ") {
                receipts.push(r.parse::<Receipt>().expect("receipt"));
            }
            if line.contains("HOLDING") {
                break;
            }
        }
        receipts
    });
    let dead_receipts = tokio::time::timeout(Duration::from_secs(30), lines)
        .await
        .expect("worker reported")
        .expect("reader");
    child.kill().expect("kill -9 the worker");
    child.wait().expect("reap");
    let killed = Instant::now();
    assert_eq!(dead_receipts.len(), 10);

    let stats = b.queues().stats(&q).await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight), (5, 10));
    let now = ReceiveOptions {
        max_messages: 100,
        ..ReceiveOptions::default()
    };
    let alive = b.queues().receive(&q, &now).await.expect("receive");
    assert_eq!(alive.len(), 5, "the dead worker's messages are still leased");
    b.queues()
        .ack(&q, &alive.iter().map(|m| m.receipt.clone()).collect::<Vec<_>>())
        .await
        .expect("ack");
    // Once the visibility timeout is over, they return.
    let wait = ReceiveOptions {
        max_messages: 100,
        wait: Duration::from_secs(20),
        ..ReceiveOptions::default()
    };
    let back = b.queues().receive(&q, &wait).await.expect("receive");
    let after = killed.elapsed();
    assert!(after < Duration::from_secs(10), "came back after {after:?}");
    assert_eq!(back.len(), 10);
    assert!(back.iter().all(|m| m.attempt == 2));
    let mut ids: Vec<i64> = back.iter().map(|m| m.id).collect();
    let mut dead_ids: Vec<i64> = dead_receipts.iter().map(Receipt::message_id).collect();
    ids.sort_unstable();
    dead_ids.sort_unstable();
    assert_eq!(ids, dead_ids);
    // The dead worker's late acknowledgement is refused and changes nothing.
    assert!(matches!(
        b.queues().ack(&q, &dead_receipts).await,
        Err(Error::StaleReceipt { .. })
    ));
    assert_eq!(b.queues().stats(&q).await.expect("stats").in_flight, 10);
    b.queues()
        .ack(&q, &back.iter().map(|m| m.receipt.clone()).collect::<Vec<_>>())
        .await
        .expect("ack");
    let stats = b.queues().stats(&q).await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight, stats.delayed), (0, 0, 0));
    let archived_or_left: i64 = db
        .raw()
        .await
        .query_one("SELECT count(*) FROM queue_messages", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(archived_or_left, 0, "all 15 processed, nothing lost or left");
}
