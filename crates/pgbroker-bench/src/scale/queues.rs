//! `scale-queues` and `scale-backlog`: pgbroker's work queues through the
//! library, in this process, on a fresh schema per point (dropped after
//! it). `scale-queues` creates N queues and measures on one of them,
//! `bench`, holding a backlog of [`ScaleArgs::queue_backlog`] messages;
//! `scale-backlog` has the one queue `bench` filled with D messages. Each
//! point measures, in this order: the bytes of the queue tables, single
//! claims (a receive of one message, then its ack, each timed; one
//! untimed send before each keeps the depth), two maintenance passes in a
//! row, each timed, with whether it rotated and how many live messages
//! the first moved (the first finds the backlog in the current partition,
//! the second in the older one), then send + receive + ack in batches
//! flat out and the bytes of the queue tables again. Messages are 100
//! bytes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pgbroker::queues::ReceiveOptions;
use pgbroker::{Broker, BrokerConfig, Message, QueueConfig, QueueName};

use super::{drop_schema, schema_name, Emit, ScaleArgs, ScalePoint};
use crate::measure::payload;
use crate::pages::quantile;
use crate::systems::Endpoints;

/// Bytes of each message's body.
const MESSAGE_BYTES: u32 = 100;
/// Messages of each send of the fill.
const FILL_BATCH: usize = 1000;
/// Concurrent senders of the fill.
const FILL_TASKS: u64 = 2;
/// Messages per send, and most per receive, of the throughput run.
const BATCH: usize = 100;
/// Producers and workers of the throughput run, each.
const PAIRS: usize = 2;
/// Most single claims per point, within [`ScaleArgs::duration`].
const CLAIMS: usize = 2000;

/// Sweeps the number of queues of one schema.
pub async fn queues(env: &Endpoints, args: &ScaleArgs, emit: &mut Emit<'_>) -> Result<()> {
    for &n in &args.queues {
        let mut p = ScalePoint::new("scale-queues", "queues", u64::from(n));
        point(env, args, n, args.queue_backlog, &mut p)
            .await
            .with_context(|| format!("scale-queues at {n}"))?;
        emit(p)?;
    }
    Ok(())
}

/// Sweeps the backlog of one queue.
pub async fn backlog(env: &Endpoints, args: &ScaleArgs, emit: &mut Emit<'_>) -> Result<()> {
    for &d in &args.depths {
        let mut p = ScalePoint::new("scale-backlog", "messages", d);
        point(env, args, 1, d, &mut p)
            .await
            .with_context(|| format!("scale-backlog at {d}"))?;
        emit(p)?;
    }
    Ok(())
}

/// One point: a fresh schema with `queues` queues, `bench` holding `depth`
/// messages; the schema is dropped afterwards.
async fn point(env: &Endpoints, args: &ScaleArgs, queues: u32, depth: u64, p: &mut ScalePoint) -> Result<()> {
    let url = env.database_url.as_str();
    let schema = schema_name("queue");
    drop_schema(url, &schema).await?;
    let outcome = async {
        let broker = Broker::connect(BrokerConfig {
            database_url: url.to_string(),
            schema: schema.clone(),
            pool_size: 2 * PAIRS + 2,
            ..BrokerConfig::default()
        })
        .await?;
        measure(&broker, url, &schema, args, queues, depth, p).await
    }
    .await;
    drop_schema(url, &schema).await?;
    outcome
}

async fn measure(
    broker: &Broker,
    url: &str,
    schema: &str,
    args: &ScaleArgs,
    queues: u32,
    depth: u64,
    p: &mut ScalePoint,
) -> Result<()> {
    let bench = QueueName::new("bench")?;
    let created = Instant::now();
    broker.queues().create(&bench, &QueueConfig::default()).await?;
    for i in 1..queues {
        let name = QueueName::new(format!("q{i:05}"))?;
        broker.queues().create(&name, &QueueConfig::default()).await?;
    }
    p.set("queues_create_s", created.elapsed().as_secs_f64());
    let filled = Instant::now();
    fill(broker, &bench, depth).await?;
    p.set("fill_s", filled.elapsed().as_secs_f64());
    p.set("queue_mib", queue_bytes(url, schema).await? / 1_048_576.0);
    let (mut claims, mut acks) = claims(broker, &bench, args.duration).await?;
    claims.sort_by(f64::total_cmp);
    acks.sort_by(f64::total_cmp);
    p.set("claim_p50_ms", quantile(&claims, 0.5));
    p.set("claim_p99_ms", quantile(&claims, 0.99));
    p.set("ack_p99_ms", quantile(&acks, 0.99));
    for (ms, moved, rotated) in [
        ("rotation_ms", "rotation_moved", "rotated"),
        ("rotation2_ms", "", "rotated2"),
    ] {
        let started = Instant::now();
        let pass = broker.maintenance().maintain_queues().await?;
        p.set(ms, started.elapsed().as_secs_f64() * 1e3);
        p.set(rotated, f64::from(u8::from(pass.rotated)));
        if !moved.is_empty() {
            p.set(moved, pass.moved as f64);
        }
    }
    let (sent, acked) = throughput(broker, &bench, args).await?;
    p.set("sent_per_s", sent);
    p.set("acked_per_s", acked);
    p.set("queue_mib_after", queue_bytes(url, schema).await? / 1_048_576.0);
    Ok(())
}

/// Sends `depth` messages to `queue` in batches of [`FILL_BATCH`] from
/// [`FILL_TASKS`] tasks.
async fn fill(broker: &Broker, queue: &QueueName, depth: u64) -> Result<()> {
    let body = payload(MESSAGE_BYTES);
    let tasks = (0..FILL_TASKS).map(|t| {
        let (broker, queue, body) = (broker.clone(), queue.clone(), body.clone());
        let mine = depth / FILL_TASKS + u64::from(t < depth % FILL_TASKS);
        tokio::spawn(async move {
            let mut left = mine;
            while left > 0 {
                let n = usize::try_from(left.min(FILL_BATCH as u64))?;
                let batch: Vec<Message> = (0..n).map(|_| Message::new(body.clone())).collect();
                broker.queues().send_batch(&queue, &batch).await?;
                left -= n as u64;
            }
            anyhow::Ok(())
        })
    });
    for t in futures_util::future::join_all(tasks).await {
        t??;
    }
    Ok(())
}

/// Single claims for at most `limit` (and [`CLAIMS`]): each an untimed send
/// of one message, then a timed receive of one and a timed ack. Returns the
/// receives' and the acks' times in ms.
async fn claims(broker: &Broker, queue: &QueueName, limit: Duration) -> Result<(Vec<f64>, Vec<f64>)> {
    let body = payload(MESSAGE_BYTES);
    let options = ReceiveOptions {
        max_messages: 1,
        wait: Duration::ZERO,
        visibility_timeout: None,
    };
    let (mut claims, mut acks) = (Vec::with_capacity(CLAIMS), Vec::with_capacity(CLAIMS));
    let started = Instant::now();
    while claims.len() < CLAIMS && started.elapsed() < limit {
        broker.queues().send(queue, &Message::new(body.clone())).await?;
        let t0 = Instant::now();
        let got = broker.queues().receive(queue, &options).await?;
        claims.push(t0.elapsed().as_secs_f64() * 1e3);
        let receipts: Vec<_> = got.iter().map(|m| m.receipt.clone()).collect();
        let t1 = Instant::now();
        broker.queues().ack(queue, &receipts).await?;
        acks.push(t1.elapsed().as_secs_f64() * 1e3);
    }
    Ok((claims, acks))
}

/// [`PAIRS`] producers sending batches of [`BATCH`] and as many workers
/// receiving up to [`BATCH`] and acking them, flat out; returns the
/// messages sent and acked per second over the measured time.
async fn throughput(broker: &Broker, queue: &QueueName, args: &ScaleArgs) -> Result<(f64, f64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..PAIRS {
        let (b, q, halt, sent) = (broker.clone(), queue.clone(), stop.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let body = payload(MESSAGE_BYTES);
            while !halt.load(Ordering::Relaxed) {
                let batch: Vec<Message> = (0..BATCH).map(|_| Message::new(body.clone())).collect();
                b.queues().send_batch(&q, &batch).await?;
                sent.fetch_add(BATCH as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
        let (b, q, halt, acked) = (broker.clone(), queue.clone(), stop.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let options = ReceiveOptions {
                max_messages: BATCH,
                wait: Duration::from_millis(100),
                visibility_timeout: None,
            };
            while !halt.load(Ordering::Relaxed) {
                let got = b.queues().receive(&q, &options).await?;
                if got.is_empty() {
                    continue;
                }
                let receipts: Vec<_> = got.iter().map(|m| m.receipt.clone()).collect();
                b.queues().ack(&q, &receipts).await?;
                acked.fetch_add(receipts.len() as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(args.warmup).await;
    let (s0, a0, t0) = (
        sent.load(Ordering::Relaxed),
        acked.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(args.duration).await;
    let (s1, a1, secs) = (
        sent.load(Ordering::Relaxed),
        acked.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
    );
    stop.store(true, Ordering::Relaxed);
    for t in futures_util::future::join_all(tasks).await {
        t??;
    }
    Ok(((s1 - s0) as f64 / secs, (a1 - a0) as f64 / secs))
}

/// Bytes of the queue tables of `schema` (`queue*`, with their indexes
/// and TOAST).
async fn queue_bytes(url: &str, schema: &str) -> Result<f64> {
    let client = crate::db::connect(url).await?;
    let row = client
        .query_one(
            "SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0)::float8 FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind = 'r' AND c.relname LIKE 'queue%'",
            &[&schema],
        )
        .await?;
    Ok(row.get(0))
}
