//! The pub/sub benchmark driving pgbroker's library.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use pgbroker::groups::JoinOptions;
use pgbroker::streams::OffsetReset;
use pgbroker::{Broker, Consumer, ConsumerConfig, GroupId, Record, TopicConfig, TopicName};

use super::{histogram, measure, payload, produce_loop, record, Measured, PubsubArgs, Stats};

/// Runs the pub/sub benchmark on a fresh topic, deleted afterwards.
pub(super) async fn run(broker: Broker, args: PubsubArgs) -> Result<serde_json::Value> {
    let topic = TopicName::new(format!("bench-{}", std::process::id()))?;
    broker
        .topics()
        .create(
            &topic,
            &TopicConfig {
                partitions: args.partitions,
                ..TopicConfig::default()
            },
        )
        .await?;
    let outcome = drive(&broker, &topic, &args).await;
    broker.topics().delete(&topic).await?;
    for g in 0..args.groups {
        let _ = broker.groups().delete(&GroupId::new(format!("{topic}-g{g}"))?).await;
    }
    outcome
}

async fn drive(broker: &Broker, topic: &TopicName, args: &PubsubArgs) -> Result<serde_json::Value> {
    let stats = Stats::start();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for g in 0..args.groups {
        let group = GroupId::new(format!("{topic}-g{g}"))?;
        for _ in 0..args.consumers_per_group {
            let config = ConsumerConfig {
                join: JoinOptions {
                    client_id: "bench".into(),
                    ..JoinOptions::default()
                },
                reset: OffsetReset::Earliest,
                max_records: usize::try_from(args.read_batch)?,
                max_bytes: 64 << 20,
                ..ConsumerConfig::new(vec![topic.clone()], Some(group.clone()))
            };
            let consumer = Consumer::new(broker.clone(), config).await?;
            tasks.push(tokio::spawn(consume(consumer, stats.clone(), stop.clone())));
        }
    }
    for p in 0..args.producers {
        let b = broker.clone();
        let (t, s, st) = (topic.clone(), stats.clone(), stop.clone());
        tasks.push(tokio::spawn(produce(b, t, args.clone(), p, s, st)));
    }
    measure(args, stats, stop, tasks).await
}

async fn produce(
    broker: Broker,
    topic: TopicName,
    args: PubsubArgs,
    id: u32,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<Measured> {
    let value = payload(args.message_size);
    let batch = usize::try_from(args.write_batch)?;
    produce_loop(&args, id, stats, stop, |partition, now| {
        let records: Vec<Record> = (0..batch)
            .map(|_| Record {
                value: Some(value.clone()),
                timestamp: Some(now),
                ..Record::default()
            })
            .collect();
        let (broker, topic) = (broker.clone(), topic.clone());
        async move {
            broker.streams().produce(&topic, Some(partition), &records).await?;
            Ok(())
        }
    })
    .await
}

async fn consume(mut consumer: Consumer, stats: Arc<Stats>, stop: Arc<AtomicBool>) -> Result<Measured> {
    let mut latency = histogram()?;
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let got = consumer.poll(Duration::from_millis(100)).await?;
        let now = SystemTime::now();
        for r in &got {
            let lat = now.duration_since(r.record.timestamp).unwrap_or_default();
            record(&stats, &mut latency, u64::try_from(lat.as_micros())?);
        }
        stats.read.fetch_add(u64::try_from(got.len())?, Ordering::Relaxed);
        if last_commit.elapsed() > Duration::from_secs(1) {
            // A rebalance under way refuses the commit; the next poll
            // rejoins, and the records are committed after it.
            if let Err(e) = consumer.commit().await {
                if !e.needs_rejoin() {
                    return Err(e.into());
                }
            }
            last_commit = Instant::now();
        }
    }
    consumer.close().await?;
    Ok(Measured::EndToEnd(latency))
}
