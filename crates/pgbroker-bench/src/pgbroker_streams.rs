//! `pgbroker` on the pub/sub workload: pgbroker's library in this process,
//! producers and consumer groups on one fresh topic.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use pgbroker::groups::JoinOptions;
use pgbroker::streams::OffsetReset;
use pgbroker::{Broker, Consumer, ConsumerConfig, GroupId, Record, TopicConfig, TopicName};

use crate::measure::{histogram, payload, produce_loop, record, Measured, Run, Stats};
use crate::procfs::BrokerProcess;
use crate::summary::Summary;
use crate::systems::{library, Endpoints};
use crate::workload::{PubsubArgs, Workload as _};

/// Runs the pub/sub benchmark on a fresh topic, deleted afterwards.
pub async fn run(env: &Endpoints, args: &PubsubArgs) -> Result<Summary> {
    let config = TopicConfig {
        partitions: args.partitions,
        ..TopicConfig::default()
    };
    run_with(env, args, &config).await
}

/// The topic of this process's runs.
pub fn topic_name() -> Result<TopicName> {
    Ok(TopicName::new(format!("bench-{}", std::process::id()))?)
}

/// [`run`] on a fresh topic of `config`.
pub async fn run_with(env: &Endpoints, args: &PubsubArgs, config: &TopicConfig) -> Result<Summary> {
    let broker = library(env, args.pool_size()).await?;
    let topic = topic_name()?;
    broker.topics().create(&topic, config).await?;
    let outcome = drive(&broker, &topic, args).await;
    broker.topics().delete(&topic).await?;
    for g in 0..args.groups {
        let _ = broker.groups().delete(&GroupId::new(format!("{topic}-g{g}"))?).await;
    }
    outcome
}

async fn drive(broker: &Broker, topic: &TopicName, args: &PubsubArgs) -> Result<Summary> {
    let mut run = Run::start();
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
            run.spawn(|s, st| consume(consumer, s, st));
        }
    }
    for p in 0..args.producers {
        let b = broker.clone();
        let t = topic.clone();
        run.spawn(|s, st| produce(b, t, args.clone(), p, s, st));
    }
    run.measure(args, "pgbroker", &BrokerProcess::InProcess).await
}

async fn produce(
    broker: Broker,
    topic: TopicName,
    args: PubsubArgs,
    id: u32,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<Measured> {
    let value = pgbroker::Bytes::from(payload(args.message_size));
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
