//! The auto-batching producer: many concurrent single sends from one
//! process coalesce into one produce statement per partition, within a
//! linger time and a size bound, and each sender gets its own result.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::types::{Record, RecordPosition, TopicName};

/// Batching bounds of a [`Producer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerConfig {
    /// How long the first record of a batch waits for company.
    pub linger: Duration,
    /// A batch is sent once it holds this many records.
    pub max_batch_records: usize,
    /// A batch is sent once it holds this many bytes.
    pub max_batch_bytes: usize,
    /// Most batches in flight at once.
    pub max_in_flight: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger: Duration::from_millis(2),
            max_batch_records: 1000,
            max_batch_bytes: 1 << 20,
            max_in_flight: 8,
        }
    }
}

struct Pending {
    topic: TopicName,
    partition: Option<i32>,
    record: Record,
    reply: oneshot::Sender<Result<RecordPosition>>,
}

/// A cheap-to-clone handle that batches sends behind the scenes. The
/// background task ends when every handle is dropped, after flushing.
#[derive(Clone, Debug)]
pub struct Producer {
    broker: Broker,
    tx: mpsc::Sender<Pending>,
}

impl Broker {
    /// Starts an auto-batching producer.
    pub fn producer(&self, config: ProducerConfig) -> Producer {
        let (tx, rx) = mpsc::channel(config.max_batch_records.max(1) * 4);
        tokio::spawn(run(self.clone(), config, rx));
        Producer {
            broker: self.clone(),
            tx,
        }
    }
}

impl Producer {
    /// Sends one record and waits until it is committed; returns where it
    /// landed. A record that is invalid on its own (too large, unknown
    /// partition) fails alone, before batching.
    pub async fn send(&self, topic: &TopicName, partition: Option<i32>, record: Record) -> Result<RecordPosition> {
        let meta = self.broker.topic_meta(topic).await?;
        if record.size() > meta.max_message_bytes {
            return Err(Error::RecordTooLarge {
                size: record.size(),
                max: meta.max_message_bytes,
            });
        }
        if let Some(p) = partition {
            self.broker.partition_id(topic, p).await?;
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending {
                topic: topic.clone(),
                partition,
                record,
                reply,
            })
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }
}

async fn run(broker: Broker, config: ProducerConfig, mut rx: mpsc::Receiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    while let Some(first) = rx.recv().await {
        let deadline = Instant::now() + config.linger;
        let mut bytes = first.record.size();
        let mut batch = vec![first];
        while batch.len() < config.max_batch_records && bytes < config.max_batch_bytes {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(p) => {
                        bytes += p.record.size();
                        batch.push(p);
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let broker = broker.clone();
        tokio::spawn(async move {
            flush(&broker, batch).await;
            drop(permit);
        });
    }
}

/// Sends one batch: one produce call per (topic, explicit partition).
async fn flush(broker: &Broker, batch: Vec<Pending>) {
    let mut by_target: BTreeMap<(TopicName, Option<i32>), Vec<Pending>> = BTreeMap::new();
    for p in batch {
        by_target.entry((p.topic.clone(), p.partition)).or_default().push(p);
    }
    let sends = by_target.into_iter().map(|((topic, partition), pending)| async move {
        let (records, replies): (Vec<Record>, Vec<_>) = pending.into_iter().map(|p| (p.record, p.reply)).unzip();
        match broker.produce(&topic, partition, &records).await {
            Ok(positions) => {
                for (reply, pos) in replies.into_iter().zip(positions) {
                    let _ = reply.send(Ok(pos));
                }
            }
            Err(e) => {
                let shared = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(Error::Batch(shared.clone())));
                }
            }
        }
    });
    futures_util::future::join_all(sends).await;
}
