//! `kafka-transactional`: pgbroker's Kafka front end with librdkafka's
//! transactional producer. Each producer works like one instance of a
//! consume-transform-produce pipeline: every batch is one transaction
//! whose records are spread over all partitions, with the offset of the
//! producer's own input partition sent to the transaction before the
//! commit. Consumers read with `read_committed` (librdkafka's default),
//! so their end-to-end latency includes the commit; the producer's
//! latency is the whole transaction.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::future::join_all;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::measure::{payload, produce_loop, stamped, Measured, Run, Stats};
use crate::workload::PubsubArgs;

/// The topic whose offsets the transactions commit: one partition per
/// producer, as if each producer owned one input partition.
pub const INPUT_TOPIC: &str = "bench-input";
/// The group those offsets belong to.
const PIPELINE_GROUP: &str = "bench-pipeline";
/// How long one transactional call may take before the run fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts producer `id`: its transactional id, its fencing of any earlier
/// instance (InitProducerId), and its loop of transactions.
pub(crate) async fn spawn_producer(run: &mut Run, bootstrap: &str, args: &PubsubArgs, id: u32) -> Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", format!("bench-txn-{id}"))
        .set("linger.ms", "1")
        .set("compression.type", "none")
        .create()
        .context("creating a transactional librdkafka producer")?;
    let input: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", PIPELINE_GROUP)
        .create()
        .context("creating the pipeline's consumer")?;
    let group = input.group_metadata().context("the pipeline group's metadata")?;
    let producer = Arc::new(producer);
    blocking(&producer, |p| p.init_transactions(CALL_TIMEOUT))
        .await
        .context("init_transactions")?;
    let args = args.clone();
    run.spawn(move |s, st| produce(producer, Arc::new(group), args, id, s, st));
    Ok(())
}

/// Runs one of the producer's blocking transactional calls off the
/// runtime's threads.
async fn blocking<F>(producer: &Arc<FutureProducer>, call: F) -> Result<()>
where
    F: FnOnce(&FutureProducer) -> rdkafka::error::KafkaResult<()> + Send + 'static,
{
    let p = producer.clone();
    tokio::task::spawn_blocking(move || call(&p)).await??;
    Ok(())
}

async fn produce(
    producer: Arc<FutureProducer>,
    group: Arc<ConsumerGroupMetadata>,
    args: PubsubArgs,
    id: u32,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<Measured> {
    let base = payload(args.message_size.max(8));
    let committed = AtomicI64::new(0);
    let input = i32::try_from(id)?;
    let (producer, base, committed, group) = (&producer, &base, &committed, &group);
    let partitions = args.partitions.max(1);
    let batch = args.write_batch;
    produce_loop(&args, id, stats, stop, |first, now| async move {
        blocking(producer, |p| p.begin_transaction())
            .await
            .context("begin_transaction")?;
        let values: Vec<Vec<u8>> = (0..batch).map(|_| stamped(base, now)).collect();
        let sends = values.iter().enumerate().map(|(i, v)| {
            let partition = (first + i32::try_from(i).unwrap_or(0)) % partitions;
            let record = FutureRecord::<(), [u8]>::to("bench").partition(partition).payload(v);
            producer.send(record, Duration::from_secs(10))
        });
        for outcome in join_all(sends).await {
            outcome.map_err(|(e, _)| e).context("producing in a transaction")?;
        }
        let next = committed.fetch_add(1, Ordering::Relaxed) + 1;
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset(INPUT_TOPIC, input, Offset::Offset(next))?;
        let group = group.clone();
        blocking(producer, move |p| {
            p.send_offsets_to_transaction(&offsets, &group, CALL_TIMEOUT)
        })
        .await
        .context("send_offsets_to_transaction")?;
        blocking(producer, |p| p.commit_transaction(CALL_TIMEOUT))
            .await
            .context("commit_transaction")?;
        Ok(())
    })
    .await
}
