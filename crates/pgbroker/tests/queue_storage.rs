//! Bounded storage under sustained send/receive/ack, with and without
//! transactions held open elsewhere (pitfalls.md, Queues: every deleted or
//! updated row is a dead tuple, and one long transaction stops vacuum).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgbroker::queues::ReceiveOptions;
use pgbroker::{Broker, Message, QueueConfig, QueueName, Receipt};
use pgbroker_testkit::db::TestDb;

/// The stated bound on the queue tables' size (both message partitions
/// with indexes and TOAST) for this churn of 5,000 1 KiB messages a
/// second: about two rotation periods of messages (each costs some 2.6 KB
/// on disk: the row, its claimed version and index entries), with room.
const BOUND: i64 = 64 << 20;
/// How soon after a blocking transaction ends the size is back under it.
const RECOVERY: Duration = Duration::from_secs(15);

async fn queue_bytes(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT pg_total_relation_size('queue_messages_0') + pg_total_relation_size('queue_messages_1')",
            &[],
        )
        .await
        .expect("size")
        .get(0)
}

/// Sends, receives and acknowledges 1 KiB messages until `stop`; counts
/// them in `churned`.
fn churn(
    broker: &Broker,
    q: &QueueName,
    stop: &Arc<AtomicBool>,
    churned: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let (b, queue, stop2) = (broker.clone(), q.clone(), stop.clone());
    tasks.push(tokio::spawn(async move {
        let batch: Vec<Message> = (0..100).map(|_| Message::new(vec![7u8; 1024])).collect();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while !stop2.load(Ordering::SeqCst) {
            tick.tick().await;
            b.queues().send_batch(&queue, &batch).await.expect("send");
        }
    }));
    for _ in 0..4 {
        let (b, queue, stop, churned) = (broker.clone(), q.clone(), stop.clone(), churned.clone());
        tasks.push(tokio::spawn(async move {
            let options = ReceiveOptions {
                max_messages: 100,
                wait: Duration::from_millis(100),
                ..ReceiveOptions::default()
            };
            while !stop.load(Ordering::SeqCst) {
                let got = b.queues().receive(&queue, &options).await.expect("receive");
                let receipts: Vec<Receipt> = got.iter().map(|m| m.receipt.clone()).collect();
                b.queues().ack(&queue, &receipts).await.expect("ack");
                churned.fetch_add(u64::try_from(got.len()).expect("fits"), Ordering::SeqCst);
            }
        }));
    }
    tasks
}

/// Samples the size every 200 ms into `max` until `stop`.
fn sample(url: String, schema: String, stop: Arc<AtomicBool>, max: Arc<AtomicI64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("SET search_path = {schema}"))
            .await
            .expect("path");
        while !stop.load(Ordering::SeqCst) {
            max.fetch_max(queue_bytes(&client).await, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Runs the churn for at least `min_secs` seconds and then until `done`
/// (given messages churned and the largest size so far) holds, or
/// `max_secs` have passed; returns (messages, largest size). Ending on a
/// count rather than a time keeps the test meaningful on a slow machine.
async fn phase(
    db: &TestDb,
    q: &QueueName,
    min_secs: u64,
    max_secs: u64,
    done: impl Fn(u64, i64) -> bool,
) -> (u64, i64) {
    let stop = Arc::new(AtomicBool::new(false));
    let churned = Arc::new(AtomicU64::new(0));
    let max = Arc::new(AtomicI64::new(0));
    let mut tasks = churn(&db.broker, q, &stop, &churned);
    tasks.push(sample(
        pgbroker_testkit::database_url(),
        db.schema.clone(),
        stop.clone(),
        max.clone(),
    ));
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let elapsed = started.elapsed();
        let finished = done(churned.load(Ordering::SeqCst), max.load(Ordering::SeqCst));
        if elapsed >= Duration::from_secs(max_secs) || (elapsed >= Duration::from_secs(min_secs) && finished) {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.expect("task");
    }
    (churned.load(Ordering::SeqCst), max.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storage_stays_bounded_and_recovers_after_long_transactions() {
    let db = TestDb::new().await;
    let q = db.queue("churn", QueueConfig::default()).await;
    let client = db.raw().await;
    client
        .batch_execute("CREATE TABLE elsewhere (x int); INSERT INTO elsewhere VALUES (1)")
        .await
        .expect("table");

    // 1. Sustained churn: rotations keep the size flat, though the bodies
    // alone of the messages sent add up to well over the bound.
    let enough = u64::try_from(BOUND * 3 / 2 / 1024).expect("fits") + 1;
    let (n1, max1) = phase(&db, &q, 20, 240, |n, _| n >= enough).await;
    eprintln!("steady: {n1} messages, largest size {} MiB", max1 >> 20);
    assert!(max1 <= BOUND, "steady churn grew to {} MiB", max1 >> 20);
    assert!(
        i64::try_from(n1).expect("fits") * 1024 > BOUND * 3 / 2,
        "only {n1} messages went through"
    );

    // 2. A long transaction elsewhere holds back vacuum everywhere; the
    // rotation's TRUNCATE does not care, so the size stays bounded.
    let mut other = db.raw().await;
    let long = other.transaction().await.expect("begin");
    long.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; SELECT * FROM elsewhere")
        .await
        .expect("snapshot");
    let (n2, max2) = phase(&db, &q, 10, 10, |_, _| true).await;
    eprintln!("long snapshot open: {n2} messages, largest size {} MiB", max2 >> 20);
    assert!(max2 <= BOUND, "with a long snapshot: {} MiB", max2 >> 20);
    long.commit().await.expect("end");

    // 3. An application's outbox transaction left open holds a lock on the
    // queue tables: no rotation and no vacuum, so the size grows...
    let mut app = db.raw().await;
    let stuck = app.transaction().await.expect("begin");
    let stuck_id = db
        .broker
        .queues()
        .send_in(&stuck, &q, &[Message::new("stuck in an open transaction")])
        .await
        .expect("send_in")[0]
        .id;
    let (n3, max3) = phase(&db, &q, 12, 180, |_, max| max > BOUND).await;
    eprintln!("outbox left open: {n3} messages, largest size {} MiB", max3 >> 20);
    assert!(
        max3 > BOUND,
        "expected growth while rotation is blocked, got {} MiB",
        max3 >> 20
    );
    // ...and once it ends, the next rotations bring it back under the bound.
    stuck.commit().await.expect("commit");
    let ended = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let churned = Arc::new(AtomicU64::new(0));
    let tasks = churn(&db.broker, &q, &stop, &churned);
    let mut recovered = None;
    while ended.elapsed() < RECOVERY + Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if queue_bytes(&client).await <= BOUND {
            recovered = Some(ended.elapsed());
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.expect("task");
    }
    let recovered = recovered.expect("size came back under the bound");
    eprintln!(
        "back under {} MiB {recovered:?} after the transaction ended",
        BOUND >> 20
    );
    assert!(recovered <= RECOVERY, "took {recovered:?}");
    // The stuck message is delivered like any other: drain what is left.
    let options = ReceiveOptions {
        max_messages: 500,
        ..ReceiveOptions::default()
    };
    loop {
        let got = db.broker.queues().receive(&q, &options).await.expect("receive");
        if got.is_empty() {
            break;
        }
        let receipts: Vec<Receipt> = got.iter().map(|m| m.receipt.clone()).collect();
        db.broker.queues().ack(&q, &receipts).await.expect("ack");
    }
    // Every receiver acknowledges what it gets, so delivered means gone.
    let still: i64 = client
        .query_one("SELECT count(*) FROM queue_messages WHERE id = $1", &[&stuck_id])
        .await
        .expect("lookup")
        .get(0);
    assert_eq!(
        still, 0,
        "the message sent in the long transaction was delivered and acknowledged"
    );
    let left = db.broker.queues().stats(&q).await.expect("stats");
    assert_eq!((left.ready, left.in_flight, left.delayed), (0, 0, 0), "{left:?}");
}
