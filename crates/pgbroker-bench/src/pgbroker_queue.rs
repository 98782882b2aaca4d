//! `pgbroker` on the queue workload: pgbroker's work queues in this
//! process, producers and workers on one fresh queue, every message
//! received (waiting 100 ms on an empty queue, or the workload's long
//! poll), then acknowledged in the worker's batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use pgbroker::queues::ReceiveOptions;
use pgbroker::{Broker, Message, QueueConfig, QueueName};

use crate::measure::{histogram, latency_micros, payload, produce_loop, record, stamped, Measured, Run, Stats};
use crate::procfs::BrokerProcess;
use crate::summary::Summary;
use crate::systems::{library, Endpoints};
use crate::workload::{QueueArgs, Workload as _};

/// Runs the queue workload on a fresh queue, deleted afterwards.
pub async fn run(env: &Endpoints, args: &QueueArgs) -> Result<Summary> {
    let broker = library(env, args.pool_size()).await?;
    // Start from empty partitions, as the article's design starts from new
    // tables: two rotations truncate both, freeing what earlier runs left.
    for _ in 0..2 {
        broker.maintenance().maintain_queues().await?;
    }
    let queue = QueueName::new(format!("bench-{}", std::process::id()))?;
    broker.queues().create(&queue, &QueueConfig::default()).await?;
    let outcome = drive(&broker, &queue, args).await;
    broker.queues().delete(&queue).await?;
    outcome
}

async fn drive(broker: &Broker, queue: &QueueName, args: &QueueArgs) -> Result<Summary> {
    let mut run = Run::start();
    let options = ReceiveOptions {
        max_messages: usize::try_from(args.receive_batch)?,
        wait: args
            .long_poll_s
            .map_or(Duration::from_millis(100), |s| Duration::from_secs(u64::from(s))),
        visibility_timeout: None,
    };
    for _ in 0..args.workers {
        let (b, q) = (broker.clone(), queue.clone());
        run.spawn(|s, st| work(b, q, options, s, st));
    }
    for p in 0..args.producers {
        let (b, q) = (broker.clone(), queue.clone());
        run.spawn(|s, st| produce(b, q, args.clone(), p, s, st));
    }
    run.measure(args, "pgbroker", &BrokerProcess::InProcess).await
}

async fn produce(
    broker: Broker,
    queue: QueueName,
    args: QueueArgs,
    id: u32,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<Measured> {
    let base = payload(args.message_size);
    let batch = usize::try_from(args.send_batch)?;
    let (broker, queue, base) = (&broker, &queue, &base);
    produce_loop(&args, id, stats, stop, |_, now| async move {
        if batch == 1 {
            broker.queues().send(queue, &Message::new(stamped(base, now))).await?;
        } else {
            let messages: Vec<Message> = (0..batch).map(|_| Message::new(stamped(base, now))).collect();
            broker.queues().send_batch(queue, &messages).await?;
        }
        Ok(())
    })
    .await
}

async fn work(
    broker: Broker,
    queue: QueueName,
    options: ReceiveOptions,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<Measured> {
    let mut latency = histogram()?;
    while !stop.load(Ordering::Relaxed) {
        let got = broker.queues().receive(&queue, &options).await?;
        if got.is_empty() {
            continue;
        }
        let now = SystemTime::now();
        for m in &got {
            record(&stats, &mut latency, latency_micros(&m.body, now));
        }
        let receipts: Vec<_> = got.iter().map(|m| m.receipt.clone()).collect();
        broker.queues().ack(&queue, &receipts).await?;
        stats.read.fetch_add(u64::try_from(got.len())?, Ordering::Relaxed);
    }
    Ok(Measured::EndToEnd(latency))
}
