//! `scale-retained`: a topic holding more and more data, through the
//! library in this process. One fresh schema for the whole curve, with
//! one topic of [`PARTITIONS`] partitions in segments of the default
//! size, filled up to each point's size in turn (records of 1 KiB,
//! batches of [`FILL_BATCH`], one task per partition). Each point then
//! times single fetches of up to [`FETCH_RECORDS`] records at random
//! offsets in the oldest tenth of each partition, through a second
//! broker whose record cache starts empty (so they are read from
//! Postgres, as old records are), and at the tail (a batch just produced,
//! read through the producing broker, as a consumer that keeps up reads
//! it), and measures the
//! schema's bytes. After the last point, a retention pass with a size
//! limit of half of what each partition holds is timed: it cuts the log
//! and drops the whole segments below the limit.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::future::try_join_all;
use pgbroker::streams::FetchLimits;
use pgbroker::{Broker, BrokerConfig, Record, TopicConfig, TopicName};
use rand::Rng;

use super::{catalogue, drop_schema, schema_name, Emit, ScaleArgs, ScalePoint};
use crate::measure::payload;
use crate::pages::quantile;
use crate::systems::Endpoints;

/// Partitions of the topic.
const PARTITIONS: i32 = 4;
/// Bytes of each record's value.
const RECORD_BYTES: u32 = 1024;
/// Records of each produce call of the fill.
const FILL_BATCH: usize = 1000;
/// Most records of each timed fetch.
const FETCH_RECORDS: usize = 100;
/// Timed fetches of each kind per point.
const FETCHES: usize = 200;
/// Records of each batch produced and then read at the tail.
const TAIL_BATCH: usize = 10;

/// Sweeps the data one topic retains.
pub async fn retained(env: &Endpoints, args: &ScaleArgs, emit: &mut Emit<'_>) -> Result<()> {
    let url = env.database_url.as_str();
    let schema = schema_name("retained");
    drop_schema(url, &schema).await?;
    let outcome = async {
        let connect = |pool_size| {
            Broker::connect(BrokerConfig {
                database_url: url.to_string(),
                schema: schema.clone(),
                pool_size,
                ..BrokerConfig::default()
            })
        };
        let broker = connect(8).await?;
        // Old records are read through a broker of their own, whose cache
        // holds none of them.
        let reader = connect(2).await?;
        let topic = TopicName::new("retained")?;
        let config = TopicConfig {
            partitions: PARTITIONS,
            ..TopicConfig::default()
        };
        broker.topics().create(&topic, &config).await?;
        let mut sizes = args.retained_mib.clone();
        sizes.sort_unstable();
        let mut written: u64 = 0;
        let last = sizes.len();
        for (i, mib) in sizes.into_iter().enumerate() {
            let mut p = ScalePoint::new("scale-retained", "retained_mib", mib);
            let target = mib * (1 << 20) / u64::from(RECORD_BYTES);
            let started = Instant::now();
            fill(&broker, &topic, target.saturating_sub(written)).await?;
            p.set("fill_s", started.elapsed().as_secs_f64());
            written = written.max(target);
            measure(&broker, &reader, &topic, url, &schema, &mut p)
                .await
                .with_context(|| format!("scale-retained at {mib} MiB"))?;
            written += (FETCHES * TAIL_BATCH) as u64;
            if i + 1 == last {
                retention(&broker, &topic, &config, written, url, &schema, &mut p).await?;
            }
            emit(p)?;
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    drop_schema(url, &schema).await?;
    outcome
}

/// Produces about `records` records, spread evenly over the partitions.
async fn fill(broker: &Broker, topic: &TopicName, records: u64) -> Result<()> {
    let value = pgbroker::Bytes::from(payload(RECORD_BYTES));
    let per_partition = records.div_ceil(PARTITIONS as u64);
    let batch = FILL_BATCH as u64;
    try_join_all((0..PARTITIONS).map(|partition| {
        let value = value.clone();
        async move {
            let mut left = per_partition;
            while left > 0 {
                let n = left.min(batch);
                let records: Vec<Record> = (0..n)
                    .map(|_| Record {
                        value: Some(value.clone()),
                        ..Record::default()
                    })
                    .collect();
                broker.streams().produce(topic, Some(partition), &records).await?;
                left -= n;
            }
            Ok::<_, anyhow::Error>(())
        }
    }))
    .await?;
    Ok(())
}

fn limits() -> FetchLimits {
    FetchLimits {
        max_records: FETCH_RECORDS,
        max_bytes: 1 << 20,
        max_wait: Duration::ZERO,
    }
}

/// Times fetches of old records (through `reader`) and of the tail
/// (through `broker`, which produced it); the schema's bytes.
async fn measure(
    broker: &Broker,
    reader: &Broker,
    topic: &TopicName,
    url: &str,
    schema: &str,
    p: &mut ScalePoint,
) -> Result<()> {
    let mut old = Vec::with_capacity(FETCHES);
    let mut tail = Vec::with_capacity(FETCHES);
    let value = pgbroker::Bytes::from(payload(RECORD_BYTES));
    for i in 0..FETCHES {
        let partition = i32::try_from(i % PARTITIONS as usize)?;
        let (start, end) = broker.streams().watermarks(topic, partition).await?;
        let oldest_tenth = start + ((end - start) / 10).max(1);
        let offset = rand::thread_rng().gen_range(start..oldest_tenth);
        let t0 = Instant::now();
        let got = reader.streams().fetch(topic, partition, offset, limits()).await?;
        old.push(t0.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(!got.records.is_empty(), "no records at offset {offset}");
        // A batch just produced, read as a consumer at the tail reads it.
        let records: Vec<Record> = (0..TAIL_BATCH)
            .map(|_| Record {
                value: Some(value.clone()),
                ..Record::default()
            })
            .collect();
        let at = broker.streams().produce(topic, Some(partition), &records).await?;
        let first = at.first().map_or(0, |r| r.offset);
        let t0 = Instant::now();
        let got = broker.streams().fetch(topic, partition, first, limits()).await?;
        tail.push(t0.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(!got.records.is_empty(), "no records at the tail offset {first}");
    }
    old.sort_by(f64::total_cmp);
    tail.sort_by(f64::total_cmp);
    p.set("old_fetch_p50_ms", quantile(&old, 0.5));
    p.set("old_fetch_p99_ms", quantile(&old, 0.99));
    p.set("tail_fetch_p50_ms", quantile(&tail, 0.5));
    p.set("tail_fetch_p99_ms", quantile(&tail, 0.99));
    let (rows, bytes) = catalogue(url, schema).await?;
    p.set("pg_class_rows", rows);
    p.set("catalogue_mib", bytes / f64::from(1 << 20));
    Ok(())
}

/// Times a retention pass that keeps about half of each partition, which
/// holds about `written` / [`PARTITIONS`] records.
async fn retention(
    broker: &Broker,
    topic: &TopicName,
    config: &TopicConfig,
    written: u64,
    url: &str,
    schema: &str,
    p: &mut ScalePoint,
) -> Result<()> {
    let per_partition = written / PARTITIONS as u64 * u64::from(RECORD_BYTES);
    let limit = i64::try_from(per_partition / 2)?;
    let halved = TopicConfig {
        retention_bytes: Some(limit),
        ..config.clone()
    };
    broker.topics().alter(topic, &halved).await?;
    let t0 = Instant::now();
    let dropped = broker.maintenance().enforce_retention().await?;
    p.set("retention_ms", t0.elapsed().as_secs_f64() * 1e3);
    p.set("retention_dropped", dropped as f64);
    let (_, after) = catalogue(url, schema).await?;
    p.set("catalogue_mib_after_retention", after / f64::from(1 << 20));
    Ok(())
}
