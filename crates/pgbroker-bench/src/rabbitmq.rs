//! `rabbitmq`: a durable queue, persistent messages, publisher confirms and
//! manual acknowledgements. Each producer has a channel in confirm mode and
//! awaits the confirms of its batch; each worker consumes with a prefetch
//! of its receive batch and acknowledges every receive batch at once
//! (`multiple`), or every message with a receive batch of 1.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::measure::{histogram, latency_micros, payload, produce_loop, record, stamped, Measured, Run, Stats};
use crate::procfs::BrokerProcess;
use crate::summary::Summary;
use crate::systems::Endpoints;
use crate::workload::QueueArgs;
use anyhow::{Context, Result};
use futures_util::future::try_join_all;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

/// Runs the workload on a fresh durable queue, deleted afterwards.
pub async fn run(env: &Endpoints, args: &QueueArgs) -> Result<Summary> {
    let url = env.amqp_url.as_str();
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .context("connecting to RabbitMQ")?;
    let name = format!("bench-{}", std::process::id());
    let admin = conn.create_channel().await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    admin
        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await?;
    admin
        .queue_declare(name.as_str().into(), durable, FieldTable::default())
        .await?;
    let outcome = drive(&conn, &name, args).await;
    admin
        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await?;
    outcome
}

async fn drive(conn: &Connection, name: &str, args: &QueueArgs) -> Result<Summary> {
    let mut run = Run::start();
    for w in 0..args.workers {
        let channel = conn.create_channel().await?;
        let prefetch = u16::try_from(args.receive_batch).unwrap_or(u16::MAX);
        channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let consumer = channel
            .basic_consume(
                name.into(),
                format!("w{w}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let batch = usize::try_from(args.receive_batch)?;
        run.spawn(|s, st| work(channel, consumer, batch, s, st));
    }
    for id in 0..args.producers {
        let channel = conn.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        let (a, n) = (args.clone(), name.to_string());
        run.spawn(|s, st| produce(channel, n, a, id, s, st));
    }
    let process = BrokerProcess::Named("beam.smp".into());
    run.measure(args, "rabbitmq", &process).await
}

async fn produce(
    channel: Channel,
    name: String,
    args: QueueArgs,
    id: u32,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<Measured> {
    let base = payload(args.message_size);
    let (channel, base, name) = (&channel, &base, &name);
    produce_loop(&args, id, stats, stop, |_, now| async move {
        let mut confirms = Vec::new();
        for _ in 0..args.send_batch {
            let properties = BasicProperties::default().with_delivery_mode(2);
            let body = stamped(base, now);
            let confirm = channel
                .basic_publish(
                    "".into(),
                    name.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties,
                )
                .await?;
            confirms.push(confirm);
        }
        for confirmation in try_join_all(confirms).await? {
            anyhow::ensure!(confirmation.is_ack(), "RabbitMQ refused a message");
        }
        Ok(())
    })
    .await
}

async fn work(
    _channel: Channel,
    mut consumer: lapin::Consumer,
    batch: usize,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<Measured> {
    let mut latency = histogram()?;
    let mut unacked = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let Ok(next) = tokio::time::timeout(Duration::from_millis(100), consumer.next()).await else {
            continue;
        };
        let Some(delivery) = next else { break };
        let delivery = delivery?;
        record(&stats, &mut latency, latency_micros(&delivery.data, SystemTime::now()));
        unacked += 1;
        if unacked >= batch {
            delivery.acker.ack(BasicAckOptions { multiple: batch > 1 }).await?;
            stats.read.fetch_add(u64::try_from(unacked)?, Ordering::Relaxed);
            unacked = 0;
        }
    }
    Ok(Measured::EndToEnd(latency))
}
