//! `redis`: Redis Streams with consumer groups. One stream per partition;
//! producers XADD a batch in one pipeline; each consumer reads all streams
//! of the topic with XREADGROUP (COUNT read batch, BLOCK 100 ms) and XACKs
//! what it read. The Redis here keeps nothing on disk, so its figures are
//! those of a broker without durability.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use crate::measure::{histogram, latency_micros, payload, produce_loop, record, stamped, Measured, Run, Stats};
use crate::procfs::BrokerProcess;
use crate::summary::Summary;
use crate::systems::Endpoints;
use crate::workload::PubsubArgs;
use anyhow::{Context, Result};
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;

async fn connection(client: &redis::Client) -> Result<MultiplexedConnection> {
    client
        .get_multiplexed_async_connection()
        .await
        .context("connecting to Redis")
}

/// Runs the workload on fresh streams, deleted afterwards.
pub async fn run(env: &Endpoints, args: &PubsubArgs) -> Result<Summary> {
    let url = env.redis_url.as_str();
    let client = redis::Client::open(url).context("Redis URL")?;
    let mut admin = connection(&client).await?;
    let keys: Vec<String> = (0..args.partitions)
        .map(|p| format!("bench:{}:{p}", std::process::id()))
        .collect();
    let _: () = admin.del(&keys).await?;
    for key in &keys {
        for g in 0..args.groups {
            let _: () = admin.xgroup_create_mkstream(key, format!("g{g}"), "0").await?;
        }
    }
    let outcome = drive(&client, &keys, args).await;
    let _: () = admin.del(&keys).await?;
    outcome
}

async fn drive(client: &redis::Client, keys: &[String], args: &PubsubArgs) -> Result<Summary> {
    let mut run = Run::start();
    for g in 0..args.groups {
        for c in 0..args.consumers_per_group {
            let conn = connection(client).await?;
            let options = StreamReadOptions::default()
                .group(format!("g{g}"), format!("c{c}"))
                .count(usize::try_from(args.read_batch)?)
                .block(100);
            let k = keys.to_vec();
            run.spawn(|s, st| consume(conn, k, format!("g{g}"), options, s, st));
        }
    }
    for id in 0..args.producers {
        let conn = connection(client).await?;
        let (k, a) = (keys.to_vec(), args.clone());
        run.spawn(|s, st| produce(conn, k, a, id, s, st));
    }
    let process = BrokerProcess::Named("redis-server".into());
    run.measure(args, "redis", &process).await
}

async fn produce(
    conn: MultiplexedConnection,
    keys: Vec<String>,
    args: PubsubArgs,
    id: u32,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<Measured> {
    let base = payload(args.message_size.max(8));
    let (base, keys) = (&base, &keys);
    produce_loop(&args, id, stats, stop, |partition, now| {
        let mut conn = conn.clone();
        async move {
            let key = &keys[usize::try_from(partition)?];
            let mut pipe = redis::pipe();
            for _ in 0..args.write_batch {
                pipe.xadd(key, "*", &[("v", stamped(base, now))]).ignore();
            }
            let _: () = pipe.query_async(&mut conn).await?;
            Ok(())
        }
    })
    .await
}

async fn consume(
    mut conn: MultiplexedConnection,
    keys: Vec<String>,
    group: String,
    options: StreamReadOptions,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<Measured> {
    let mut latency = histogram()?;
    let ids = vec![">"; keys.len()];
    while !stop.load(Ordering::Relaxed) {
        let reply: StreamReadReply = conn.xread_options(&keys, &ids, &options).await?;
        let now = SystemTime::now();
        for stream in reply.keys {
            let mut seen = Vec::with_capacity(stream.ids.len());
            for entry in &stream.ids {
                if let Some(redis::Value::BulkString(body)) = entry.map.get("v") {
                    record(&stats, &mut latency, latency_micros(body, now));
                }
                seen.push(entry.id.clone());
            }
            if !seen.is_empty() {
                let _: () = conn.xack(&stream.key, &group, &seen).await?;
                stats.read.fetch_add(u64::try_from(seen.len())?, Ordering::Relaxed);
            }
        }
    }
    Ok(Measured::EndToEnd(latency))
}
