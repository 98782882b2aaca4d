//! Topic administration: create, list, describe, add partitions, delete.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::cleanup::Cleanup;
use super::statements::Statements;
use crate::broker::Broker;
use crate::error::{Error, Invalid, Result};
use crate::streams::segments::create_segment;
use crate::types::{to_millis, TopicName};

/// Most partitions a topic may have.
pub const MAX_PARTITIONS: i32 = 1000;
/// Default records per segment (the unit retention drops).
pub const DEFAULT_SEGMENT_RECORDS: i64 = 1 << 20;
/// Default largest record, as Kafka's `max.message.bytes`.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;
/// Largest `max_message_bytes` a topic may set.
pub const MAX_MESSAGE_BYTES_LIMIT: usize = 64 << 20;

/// Settings for a new topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    /// Number of partitions, 1 to [`MAX_PARTITIONS`].
    pub partitions: i32,
    /// Drop segments whose newest record is older than this.
    pub retention: Option<Duration>,
    /// Drop the oldest segments while the partition stays above this size.
    pub retention_bytes: Option<i64>,
    /// Records per segment.
    pub segment_records: i64,
    /// Largest record (key, value and headers) accepted.
    pub max_message_bytes: usize,
    /// Clean-up policy and compaction settings.
    pub cleanup: Cleanup,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            retention: None,
            retention_bytes: None,
            segment_records: DEFAULT_SEGMENT_RECORDS,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            cleanup: Cleanup::default(),
        }
    }
}

impl TopicConfig {
    fn validate(&self) -> Result<()> {
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return Err(Error::invalid(
                Invalid::PartitionCount,
                format!("{} is not between 1 and {MAX_PARTITIONS}", self.partitions),
            ));
        }
        if let Some(b) = self.retention_bytes {
            if b <= 0 {
                return Err(Error::invalid(Invalid::RetentionBytes, format!("{b} must be positive")));
            }
        }
        if let Some(r) = self.retention {
            if r.is_zero() || r.as_millis() > i64::MAX as u128 {
                return Err(Error::invalid(Invalid::Retention, format!("{r:?} is out of range")));
            }
        }
        if !(1..=(1i64 << 40)).contains(&self.segment_records) {
            return Err(Error::invalid(
                Invalid::SegmentRecords,
                format!("{} is not between 1 and 2^40", self.segment_records),
            ));
        }
        if !(1..=MAX_MESSAGE_BYTES_LIMIT).contains(&self.max_message_bytes) {
            return Err(Error::invalid(
                Invalid::MaxMessageBytes,
                format!(
                    "{} is not between 1 and {MAX_MESSAGE_BYTES_LIMIT}",
                    self.max_message_bytes
                ),
            ));
        }
        self.cleanup.validate()
    }
}

/// A topic and its settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicInfo {
    /// Name.
    pub name: TopicName,
    /// Number of partitions.
    pub partitions: i32,
    /// Retention time in milliseconds, if any.
    pub retention_ms: Option<i64>,
    /// Retention size per partition in bytes, if any.
    pub retention_bytes: Option<i64>,
    /// Records per segment.
    pub segment_records: i64,
    /// Largest record accepted.
    pub max_message_bytes: usize,
    /// Creation time, milliseconds since the epoch.
    pub created_at_ms: i64,
    /// Clean-up policy and compaction settings.
    pub cleanup: Cleanup,
    /// The topic's id (a UUID, as Kafka's topic ids), fixed for the life
    /// of the topic.
    #[serde(skip)]
    pub topic_id: [u8; 16],
}

impl TopicInfo {
    /// The topic's settings as a [`TopicConfig`], to change some of them
    /// with [`crate::streams::Topics::alter`].
    pub fn config(&self) -> TopicConfig {
        TopicConfig {
            partitions: self.partitions,
            retention: self
                .retention_ms
                .and_then(|ms| u64::try_from(ms).ok())
                .map(Duration::from_millis),
            retention_bytes: self.retention_bytes,
            segment_records: self.segment_records,
            max_message_bytes: self.max_message_bytes,
            cleanup: self.cleanup,
        }
    }
}

/// The state of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionInfo {
    /// Partition number.
    pub partition: i32,
    /// First offset still stored.
    pub log_start_offset: i64,
    /// One past the last committed offset.
    pub high_watermark: i64,
    /// Records stored (`high_watermark - log_start_offset`).
    pub records: i64,
    /// Bytes on disk, indexes included.
    pub bytes: i64,
}

/// A topic with the state of each partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicDescription {
    /// The topic.
    #[serde(flatten)]
    pub topic: TopicInfo,
    /// Its partitions in order.
    pub partition_states: Vec<PartitionInfo>,
}

/// A UUID as `uuid_send` returns it.
pub(crate) fn uuid_bytes(b: &[u8]) -> [u8; 16] {
    let mut id = [0u8; 16];
    if b.len() == 16 {
        id.copy_from_slice(b);
    }
    id
}

fn topic_from_row(row: &tokio_postgres::Row) -> Result<TopicInfo> {
    let max: i32 = row.get(5);
    let created: SystemTime = row.get(6);
    Ok(TopicInfo {
        name: TopicName::new(row.get::<_, String>(0))?,
        partitions: row.get(1),
        retention_ms: row.get(2),
        retention_bytes: row.get(3),
        segment_records: row.get(4),
        max_message_bytes: usize::try_from(max).unwrap_or(0),
        created_at_ms: to_millis(created),
        cleanup: Cleanup {
            policy: row.get::<_, String>(7).parse()?,
            min_compaction_lag_ms: row.get(8),
            max_compaction_lag_ms: row.get(9),
            delete_retention_ms: row.get(10),
            min_cleanable_dirty_ratio: row.get(11),
        },
        topic_id: uuid_bytes(row.get(12)),
    })
}

/// Creates a topic with its partitions and their first segments.
pub(crate) async fn create_topic(broker: &Broker, name: &TopicName, config: &TopicConfig) -> Result<TopicInfo> {
    config.validate()?;
    let retention_ms = config
        .retention
        .map(|r| i64::try_from(r.as_millis()).unwrap_or(i64::MAX));
    let max = i32::try_from(config.max_message_bytes).unwrap_or(i32::MAX);
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            &broker.inner.sql.streams.create_topic,
            &[
                &name.as_str(),
                &retention_ms,
                &config.retention_bytes,
                &config.segment_records,
                &max,
                &config.cleanup.policy.as_str(),
                &config.cleanup.min_compaction_lag_ms,
                &config.cleanup.max_compaction_lag_ms,
                &config.cleanup.delete_retention_ms,
                &config.cleanup.min_cleanable_dirty_ratio,
            ],
        )
        .await?
        .ok_or_else(|| Error::TopicExists(name.to_string()))?;
    let topic_id: i64 = row.get(0);
    add_partitions_tx(
        &broker.inner.sql.streams,
        &tx,
        topic_id,
        0,
        config.partitions,
        config.segment_records,
    )
    .await?;
    tx.commit().await?;
    broker.forget_topic(name.as_str());
    broker.topics().info(name).await
}

/// Changes the settings of a topic that may change after its creation:
/// retention time and size, largest record and the clean-up settings.
/// `config.partitions` and `config.segment_records` must be the topic's
/// own (partitions grow with [`add_partitions`]; the segment size is
/// fixed). Validated first: a refused change changes nothing.
pub(crate) async fn alter_topic(broker: &Broker, name: &TopicName, config: &TopicConfig) -> Result<TopicInfo> {
    config.validate()?;
    let current = broker.topics().info(name).await?;
    if current.segment_records != config.segment_records {
        return Err(Error::invalid(
            Invalid::SegmentRecords,
            format!("the segment size of {name} is fixed at {}", current.segment_records),
        ));
    }
    if current.partitions != config.partitions {
        return Err(Error::invalid(
            Invalid::PartitionCount,
            format!(
                "{name} has {} partitions; add partitions to grow it",
                current.partitions
            ),
        ));
    }
    let retention_ms = config
        .retention
        .map(|r| i64::try_from(r.as_millis()).unwrap_or(i64::MAX));
    let max = i32::try_from(config.max_message_bytes).unwrap_or(i32::MAX);
    let client = broker.client().await?;
    let changed = client
        .execute(
            &broker.inner.sql.streams.alter_topic,
            &[
                &name.as_str(),
                &retention_ms,
                &config.retention_bytes,
                &max,
                &config.cleanup.policy.as_str(),
                &config.cleanup.min_compaction_lag_ms,
                &config.cleanup.max_compaction_lag_ms,
                &config.cleanup.delete_retention_ms,
                &config.cleanup.min_cleanable_dirty_ratio,
            ],
        )
        .await?;
    if changed == 0 {
        return Err(Error::UnknownTopic(name.to_string()));
    }
    broker.forget_topic(name.as_str());
    broker.topics().info(name).await
}

/// One topic's settings.
pub(crate) async fn topic_info(broker: &Broker, name: &TopicName) -> Result<TopicInfo> {
    let client = broker.client().await?;
    let row = client
        .query_opt(&broker.inner.sql.streams.topic_info, &[&name.as_str()])
        .await?
        .ok_or_else(|| Error::UnknownTopic(name.to_string()))?;
    topic_from_row(&row)
}

/// Whether a topic has a partition, from the metadata cache unless the
/// cache says no.
pub(crate) async fn has_partition(broker: &Broker, name: &TopicName, partition: i32) -> Result<bool> {
    let within = |count: usize| usize::try_from(partition).is_ok_and(|p| p < count);
    if within(broker.topic_meta(name).await?.partition_ids.len()) {
        return Ok(true);
    }
    broker.forget_topic(name.as_str());
    Ok(within(broker.topic_meta(name).await?.partition_ids.len()))
}

/// All topics, by name.
pub(crate) async fn list_topics(broker: &Broker) -> Result<Vec<TopicInfo>> {
    let client = broker.client().await?;
    let rows = client.query(&broker.inner.sql.streams.list_topics, &[]).await?;
    rows.iter().map(topic_from_row).collect()
}

/// One topic's offsets summed over its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicTotals {
    /// The topic.
    pub name: TopicName,
    /// Its partition count.
    pub partitions: i32,
    /// The sum of its partitions' high watermarks: every record ever
    /// written to it, so the difference of two readings is what was
    /// produced between them.
    pub high_watermarks: i64,
    /// Records stored (`high_watermark - log_start` summed).
    pub records: i64,
}

/// Every topic's offsets summed over its partitions, by name: one cheap
/// statement over the partition rows, for dashboards that sample rates.
pub(crate) async fn topic_totals(broker: &Broker) -> Result<Vec<TopicTotals>> {
    let client = broker.client().await?;
    let rows = client.query(&broker.inner.sql.streams.topic_totals, &[]).await?;
    rows.iter()
        .map(|r| {
            Ok(TopicTotals {
                name: TopicName::new(r.get::<_, String>(0))?,
                partitions: r.get(1),
                high_watermarks: r.get(2),
                records: r.get(3),
            })
        })
        .collect()
}

/// A topic with per-partition log start, high watermark, record count
/// and size.
pub(crate) async fn describe_topic(broker: &Broker, name: &TopicName) -> Result<TopicDescription> {
    let topic = broker.topics().info(name).await?;
    let client = broker.client().await?;
    let rows = client
        .query(&broker.inner.sql.streams.describe_topic, &[&name.as_str()])
        .await?;
    let partition_states = rows
        .iter()
        .map(|r| {
            let (start, hw): (i64, i64) = (r.get(1), r.get(2));
            PartitionInfo {
                partition: r.get(0),
                log_start_offset: start,
                high_watermark: hw,
                records: hw - start,
                bytes: r.get(3),
            }
        })
        .collect();
    Ok(TopicDescription {
        topic,
        partition_states,
    })
}

/// Adds `additional` partitions to a topic. Keys map to partitions by the
/// partition count, so keyed records may move to a new partition
/// afterwards, as in Kafka.
pub(crate) async fn add_partitions(broker: &Broker, name: &TopicName, additional: i32) -> Result<TopicInfo> {
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(&broker.inner.sql.streams.lock_topic, &[&name.as_str()])
        .await?
        .ok_or_else(|| Error::UnknownTopic(name.to_string()))?;
    let (topic_id, segment_records, current): (i64, i64, i32) = (row.get(0), row.get(1), row.get(2));
    if additional < 1 || current.saturating_add(additional) > MAX_PARTITIONS {
        return Err(Error::invalid(
            Invalid::PartitionCount,
            format!("cannot add {additional} to {current} partitions (1 to {MAX_PARTITIONS} in all)"),
        ));
    }
    add_partitions_tx(
        &broker.inner.sql.streams,
        &tx,
        topic_id,
        current,
        current + additional,
        segment_records,
    )
    .await?;
    tx.commit().await?;
    broker.forget_topic(name.as_str());
    broker.topics().info(name).await
}

/// Deletes a topic, its records and its groups' committed offsets. The
/// segment tables are dropped now when possible, else by maintenance.
pub(crate) async fn delete_topic(broker: &Broker, name: &TopicName) -> Result<()> {
    if let Ok(meta) = broker.topic_meta(name).await {
        meta.partition_ids
            .iter()
            .for_each(|pid| broker.inner.cache.forget(*pid));
    }
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    let deleted = tx
        .query_opt(&broker.inner.sql.streams.delete_topic, &[&name.as_str()])
        .await?;
    if deleted.is_none() {
        return Err(Error::UnknownTopic(name.to_string()));
    }
    tx.commit().await?;
    broker.forget_topic(name.as_str());
    crate::streams::segments::drop_pending_segments(broker).await?;
    Ok(())
}

async fn add_partitions_tx(
    sql: &Statements,
    tx: &tokio_postgres::Transaction<'_>,
    topic_id: i64,
    from: i32,
    to: i32,
    segment_records: i64,
) -> Result<()> {
    for partition in from..to {
        let row = tx.query_one(&sql.insert_partition, &[&topic_id, &partition]).await?;
        let pid: i64 = row.get(0);
        create_segment(tx, sql, pid, 0, segment_records).await?;
    }
    Ok(())
}
