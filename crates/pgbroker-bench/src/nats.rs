//! `nats`: NATS JetStream with file storage. One stream with a subject per
//! partition; producers publish a batch and await its acknowledgements;
//! each group is a durable pull consumer shared by its consumers, which
//! acknowledge every message explicitly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::measure::{histogram, latency_micros, payload, produce_loop, record, stamped, Measured, Run, Stats};
use crate::procfs::BrokerProcess;
use crate::summary::Summary;
use crate::systems::Endpoints;
use crate::workload::PubsubArgs;
use anyhow::{anyhow, Context, Result};
use async_nats::jetstream::{self, consumer::pull, stream};
use futures_util::future::try_join_all;
use futures_util::StreamExt;

/// Runs the workload on a fresh stream, deleted afterwards.
pub async fn run(env: &Endpoints, args: &PubsubArgs) -> Result<Summary> {
    let url = env.nats_url.as_str();
    let client = async_nats::connect(url).await.context("connecting to NATS")?;
    let js = jetstream::new(client);
    let name = format!("bench_{}", std::process::id());
    let _ = js.delete_stream(&name).await;
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("{name}.*")],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow!("creating the JetStream stream: {e}"))?;
    let outcome = drive(&js, &name, args).await;
    js.delete_stream(&name)
        .await
        .map_err(|e| anyhow!("deleting the stream: {e}"))?;
    outcome
}

async fn drive(js: &jetstream::Context, name: &str, args: &PubsubArgs) -> Result<Summary> {
    let mut run = Run::start();
    let stream = js.get_stream(name).await.map_err(|e| anyhow!("{e}"))?;
    for g in 0..args.groups {
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(format!("g{g}")),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                max_ack_pending: 100_000,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow!("creating a durable consumer: {e}"))?;
        for _ in 0..args.consumers_per_group {
            let batch = usize::try_from(args.read_batch)?;
            run.spawn(|s, st| consume(consumer.clone(), batch, s, st));
        }
    }
    for id in 0..args.producers {
        let (js, a, n) = (js.clone(), args.clone(), name.to_string());
        run.spawn(|s, st| produce(js, n, a, id, s, st));
    }
    let process = BrokerProcess::Named("nats-server".into());
    run.measure(args, "nats", &process).await
}

async fn produce(
    js: jetstream::Context,
    name: String,
    args: PubsubArgs,
    id: u32,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<Measured> {
    let base = payload(args.message_size.max(8));
    let (js, base, name) = (&js, &base, &name);
    produce_loop(&args, id, stats, stop, |partition, now| async move {
        let mut acks = Vec::new();
        for _ in 0..args.write_batch {
            let body = stamped(base, now);
            let ack = js
                .publish(format!("{name}.{partition}"), body.into())
                .await
                .map_err(|e| anyhow!("publishing: {e}"))?;
            acks.push(async move { ack.await.map_err(|e| anyhow!("publish acknowledgement: {e}")) });
        }
        try_join_all(acks).await?;
        Ok(())
    })
    .await
}

async fn consume(
    consumer: jetstream::consumer::Consumer<pull::Config>,
    batch: usize,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<Measured> {
    let mut latency = histogram()?;
    while !stop.load(Ordering::Relaxed) {
        let mut messages = consumer
            .fetch()
            .max_messages(batch)
            .expires(Duration::from_millis(100))
            .messages()
            .await
            .map_err(|e| anyhow!("fetching: {e}"))?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| anyhow!("fetching: {e}"))?;
            record(
                &stats,
                &mut latency,
                latency_micros(&message.payload, SystemTime::now()),
            );
            message.ack().await.map_err(|e| anyhow!("acknowledging: {e}"))?;
            stats.read.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(Measured::EndToEnd(latency))
}
