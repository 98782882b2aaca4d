//! `pgbroker bench queue`: the source article's work-queue workload.
//! Producers send fixed-size messages (one per call, or batches) at a target
//! rate or flat out; workers receive (up to a batch), and acknowledge them.
//! Each message carries its send time (microseconds since the epoch, 8 bytes
//! at the start of the payload), the same for every system, so end-to-end
//! latency is the worker's receive time minus that, on this process's clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::pgbroker::queues::ReceiveOptions;
use ::pgbroker::{Broker, Message, QueueConfig, QueueName};
use anyhow::Result;
use serde_json::json;

use super::{
    histogram, measure, payload, produce_loop, queue_article, record, Measured, Pace, RunArgs, Stats, Workload,
};

/// Flags of `bench queue`.
#[derive(Debug, Clone, clap::Args)]
pub struct QueueArgs {
    /// The design to drive (set by the command, not a flag of the workload).
    #[arg(skip = QueueSystem::Pgbroker)]
    pub system: QueueSystem,
    /// Message size in bytes (at least 8: the send time is carried in it).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(8..=1_048_576))]
    pub message_size: u32,
    /// Concurrent producers.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub producers: u32,
    /// Concurrent workers.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub workers: u32,
    /// Messages per send call.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub send_batch: u32,
    /// Most messages per receive (and per acknowledgement).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub receive_batch: u32,
    /// Target send rate in messages/s, all producers together; flat out
    /// when not given.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Timing and output.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Flags of `bench queue`: the design and the workload.
#[derive(Debug, Clone, clap::Args)]
pub struct QueueCommand {
    /// The design to drive.
    #[arg(long, value_enum, default_value = "pgbroker")]
    pub system: QueueSystem,
    /// The workload.
    #[command(flatten)]
    pub workload: QueueArgs,
}

/// Which queue design the benchmark drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueSystem {
    /// pgbroker's queues: leases, receipts, batch receive and ack.
    Pgbroker,
    /// The source article's SKIP LOCKED queue: delete and archive per
    /// message in one transaction, workers polling.
    Article,
}

impl QueueArgs {
    /// Connections a broker running this workload in process needs: every
    /// producer and worker at once, 8 to 64.
    pub fn pool_size(&self) -> usize {
        usize::try_from(self.producers + self.workers)
            .unwrap_or(64)
            .clamp(8, 64)
    }
}

impl QueueSystem {
    /// The name used in summaries (`system`).
    pub fn name(self) -> &'static str {
        match self {
            QueueSystem::Pgbroker => "pgbroker",
            QueueSystem::Article => "article",
        }
    }
}

impl Workload for QueueArgs {
    fn run(&self) -> &RunArgs {
        &self.run
    }
    fn message_size(&self) -> u32 {
        self.message_size
    }
    fn pace(&self) -> Pace {
        Pace {
            batch: self.send_batch,
            producers: self.producers,
            rate: self.rate,
            partitions: 1,
        }
    }
    fn head(&self) -> serde_json::Value {
        json!({
            "system": self.system.name(),
            "workload": "queue",
            "message_size": self.message_size,
            "producers": self.producers,
            "workers": self.workers,
            "send_batch": self.send_batch,
            "receive_batch": self.receive_batch,
            "target_rate": self.rate,
        })
    }
}

/// `size` bytes of the usual pattern, starting with `sent` as microseconds
/// since the epoch (8 bytes, big-endian).
pub fn stamped(base: &[u8], sent: SystemTime) -> Vec<u8> {
    let micros = sent
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let mut v = base.to_vec();
    if let Some(head) = v.get_mut(..8) {
        head.copy_from_slice(&micros.to_be_bytes());
    }
    v
}

/// Microseconds from the send time carried in `body` to `now`.
pub fn latency_micros(body: &[u8], now: SystemTime) -> u64 {
    let sent = body
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes);
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    now.saturating_sub(sent)
}

/// Runs the queue benchmark against `args.system`, on a fresh queue (or
/// fresh tables) removed afterwards, and prints (and with `--json`, writes)
/// the summary.
pub async fn queue(broker: Broker, database_url: &str, command: QueueCommand) -> Result<()> {
    let args = QueueArgs {
        system: command.system,
        ..command.workload
    };
    let summary = run_queue_once(&broker, database_url, &args).await?;
    args.run.report(&summary)
}

/// One run of the queue workload against `args.system`; returns its summary.
pub async fn run_queue_once(broker: &Broker, database_url: &str, args: &QueueArgs) -> Result<serde_json::Value> {
    match args.system {
        QueueSystem::Pgbroker => run(broker.clone(), args).await,
        QueueSystem::Article => queue_article::run(database_url, args).await,
    }
}

async fn run(broker: Broker, args: &QueueArgs) -> Result<serde_json::Value> {
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

async fn drive(broker: &Broker, queue: &QueueName, args: &QueueArgs) -> Result<serde_json::Value> {
    let stats = Stats::start();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let options = ReceiveOptions {
        max_messages: usize::try_from(args.receive_batch)?,
        wait: Duration::from_millis(100),
        visibility_timeout: None,
    };
    for _ in 0..args.workers {
        let (b, q, s, st) = (broker.clone(), queue.clone(), stats.clone(), stop.clone());
        tasks.push(tokio::spawn(work(b, q, options, s, st)));
    }
    for p in 0..args.producers {
        let (b, q, s, st) = (broker.clone(), queue.clone(), stats.clone(), stop.clone());
        tasks.push(tokio::spawn(produce(b, q, args.clone(), p, s, st)));
    }
    measure(args, stats, stop, tasks).await
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
