//! `pgbroker-sql`: pgbroker's queue SQL functions called over plain
//! tokio-postgres connections, as an application in any language would.
//! The library migrates its schema (which installs the functions) and
//! creates a fresh queue; producers call `send` (or `send_batch` with a
//! send batch above 1), workers call `receive` with their receive batch
//! and then `ack` the receipts (one, or the array). A worker of one
//! message at a time without a long poll works inside one transaction,
//! one commit per message as the article's worker has: `BEGIN; take;
//! COMMIT` (the message held by its row lock, gone if the commit happens,
//! as in the article's design), or, as `pgbroker-sql-lease`, `BEGIN;
//! receive; ack; COMMIT` (a lease and a receipt, attempts counted). With
//! nothing to receive a worker naps 0.1 to 2 ms, as pgmq's and the
//! article's do, unless the workload long-polls (`wait` of `receive`).
//!
//! Applications that only call the functions rely on a running `pgbroker
//! serve` for queue maintenance (the README says so); the library broker
//! of this process plays that part, with `serve`'s default interval, so
//! the queue's storage is rotated as it would be in that deployment.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use rand::Rng;
use tokio_postgres::Client;

use crate::db;
use crate::measure::{
    histogram, latency_micros, or_stop, payload, produce_loop, record, stamped, Measured, Run, Stats,
};
use crate::procfs::BrokerProcess;
use crate::summary::Summary;
use crate::systems::{library, library_schema, Endpoints};
use crate::workload::QueueArgs;
use pgbroker::{QueueConfig, QueueName};

/// `pgbroker serve`'s default `--maintenance-interval`.
const SERVE_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(10);

/// Runs the workload on a fresh queue, deleted afterwards; single-message
/// workers hold a `lease` (receive and ack) or take.
pub async fn run(env: &Endpoints, args: &QueueArgs, lease: bool) -> Result<Summary> {
    let broker = library(env, 4).await?;
    // Start from empty partitions, as the other systems start from new tables.
    for _ in 0..2 {
        broker.maintenance().maintain_queues().await?;
    }
    let queue = QueueName::new(format!("bench-sql-{}", std::process::id()))?;
    broker.queues().create(&queue, &QueueConfig::default()).await?;
    let maintenance = broker.maintenance().spawn(SERVE_MAINTENANCE_INTERVAL);
    let outcome = drive(env, queue.as_str(), args, lease).await;
    maintenance.abort();
    broker.queues().delete(&queue).await?;
    outcome
}

async fn drive(env: &Endpoints, queue: &str, args: &QueueArgs, lease: bool) -> Result<Summary> {
    let url = env.database_url.as_str();
    let mut run = Run::start();
    for _ in 0..args.workers {
        let client = db::connect(url).await?;
        let (q, a) = (queue.to_string(), args.clone());
        run.spawn(move |s, st| work(client, q, a, lease, s, st));
    }
    for id in 0..args.producers {
        let client = db::connect(url).await?;
        let (q, a) = (queue.to_string(), args.clone());
        run.spawn(|s, st| produce(client, q, a, id, s, st));
    }
    let name = if lease { "pgbroker-sql-lease" } else { "pgbroker-sql" };
    run.measure(args, name, &BrokerProcess::InProcess).await
}

async fn produce(
    client: Client,
    queue: String,
    args: QueueArgs,
    id: u32,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<Measured> {
    // The schema's name is built from a number only: safe in SQL text.
    let s = library_schema();
    let one = client.prepare(&format!("SELECT {s}.send($1::text, $2::bytea)")).await?;
    let many = client
        .prepare(&format!("SELECT count(*) FROM {s}.send_batch($1::text, $2::bytea[])"))
        .await?;
    let base = payload(args.message_size);
    let batch = usize::try_from(args.send_batch)?;
    let (client, one, many, queue, base) = (&client, &one, &many, &queue, &base);
    produce_loop(&args, id, stats, stop, |_, now| async move {
        if batch == 1 {
            client.query_one(one, &[queue, &stamped(base, now)]).await?;
        } else {
            let bodies: Vec<Vec<u8>> = (0..batch).map(|_| stamped(base, now)).collect();
            client.query_one(many, &[queue, &bodies]).await?;
        }
        Ok(())
    })
    .await
}

async fn work(
    client: Client,
    queue: String,
    args: QueueArgs,
    lease: bool,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<Measured> {
    if args.receive_batch == 1 && args.long_poll_s.is_none() {
        return work_in_transactions(client, queue, lease, stats, stop).await;
    }
    let s = library_schema();
    let mut latency = histogram()?;
    let receive = client
        .prepare(&format!(
            "SELECT receipt, body FROM {s}.receive($1::text, $2::int4, NULL::interval,
                                                   $3::int8 * interval '1 millisecond')"
        ))
        .await?;
    let ack_one = client.prepare(&format!("SELECT {s}.ack($1::text, $2::text)")).await?;
    let ack_many = client.prepare(&format!("SELECT {s}.ack($1::text, $2::text[])")).await?;
    let max = i32::try_from(args.receive_batch)?;
    let wait_ms = i64::from(args.long_poll_s.unwrap_or(0)) * 1000;
    while !stop.load(Ordering::Relaxed) {
        let Some(rows) = or_stop(client.query(&receive, &[&queue, &max, &wait_ms]), &stop).await else {
            break;
        };
        let rows = rows?;
        if rows.is_empty() {
            if wait_ms == 0 {
                let nap = rand::thread_rng().gen_range(100..=2000);
                tokio::time::sleep(Duration::from_micros(nap)).await;
            }
            continue;
        }
        let now = SystemTime::now();
        let mut receipts = Vec::with_capacity(rows.len());
        for row in &rows {
            record(&stats, &mut latency, latency_micros(row.get::<_, &[u8]>(1), now));
            receipts.push(row.get::<_, String>(0));
        }
        if let [receipt] = &receipts[..] {
            client.query_one(&ack_one, &[&queue, receipt]).await?;
        } else {
            client.query_one(&ack_many, &[&queue, &receipts]).await?;
        }
        stats.read.fetch_add(u64::try_from(rows.len())?, Ordering::Relaxed);
    }
    Ok(Measured::EndToEnd(latency))
}

/// One message per transaction: taken, or with a `lease` received and
/// acknowledged, then committed, once.
async fn work_in_transactions(
    mut client: Client,
    queue: String,
    lease: bool,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<Measured> {
    let s = library_schema();
    let mut latency = histogram()?;
    let receive = if lease {
        client
            .prepare(&format!("SELECT receipt, body FROM {s}.receive($1::text)"))
            .await?
    } else {
        client
            .prepare(&format!("SELECT NULL::text, body FROM {s}.take($1::text)"))
            .await?
    };
    let ack = client.prepare(&format!("SELECT {s}.ack($1::text, $2::text)")).await?;
    while !stop.load(Ordering::Relaxed) {
        let tx = client.transaction().await?;
        let Some(row) = tx.query_opt(&receive, &[&queue]).await? else {
            tx.commit().await?;
            let nap = rand::thread_rng().gen_range(100..=2000);
            tokio::time::sleep(Duration::from_micros(nap)).await;
            continue;
        };
        record(
            &stats,
            &mut latency,
            latency_micros(row.get::<_, &[u8]>(1), SystemTime::now()),
        );
        if lease {
            tx.query_one(&ack, &[&queue, &row.get::<_, String>(0)]).await?;
        }
        tx.commit().await?;
        stats.read.fetch_add(1, Ordering::Relaxed);
    }
    Ok(Measured::EndToEnd(latency))
}
