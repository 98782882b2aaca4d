//! Every operation on topics and their records, in one place:
//! [`Topics`] (create, info, list, describe, add_partitions, delete) and
//! [`Streams`] (produce, fetch, offsets, producers and consumers). Each
//! method is documented here and delegates to the file that implements it.

use tokio_postgres::GenericClient;

use super::consumer::{Consumer, ConsumerConfig};
use super::fetch::{FetchLimits, FetchResult, Isolation, OffsetSpec};
use super::fetch_many::{ManyLimits, PartitionRead};
use super::idempotent::{IdempotentAppend, ProducerBatch};
use super::producer::{Producer, ProducerConfig};
use super::topics::{TopicConfig, TopicDescription, TopicInfo, TopicTotals};
use crate::broker::Broker;
use crate::error::Result;
use crate::types::{Record, RecordPosition, TopicName};

/// The topic operations of a [`Broker`]; see [`Broker::topics`].
#[derive(Debug, Clone, Copy)]
pub struct Topics<'a> {
    broker: &'a Broker,
}

impl Broker {
    /// Topics: creating, describing, growing and deleting them.
    pub fn topics(&self) -> Topics<'_> {
        Topics { broker: self }
    }
}

impl Topics<'_> {
    /// Creates a topic with its partitions and their first segments.
    pub async fn create(self, name: &TopicName, config: &TopicConfig) -> Result<TopicInfo> {
        super::topics::create_topic(self.broker, name, config).await
    }

    /// Changes a topic's retention, largest record and clean-up settings
    /// (see [`TopicConfig`]; its partitions and segment size must be the
    /// topic's own). A refused change changes nothing.
    pub async fn alter(self, name: &TopicName, config: &TopicConfig) -> Result<TopicInfo> {
        super::topics::alter_topic(self.broker, name, config).await
    }

    /// One topic's settings.
    pub async fn info(self, name: &TopicName) -> Result<TopicInfo> {
        super::topics::topic_info(self.broker, name).await
    }

    /// All topics, by name.
    pub async fn list(self) -> Result<Vec<TopicInfo>> {
        super::topics::list_topics(self.broker).await
    }

    /// A topic with per-partition log start, high watermark, record count
    /// and size.
    pub async fn describe(self, name: &TopicName) -> Result<TopicDescription> {
        super::topics::describe_topic(self.broker, name).await
    }

    /// Every topic's partition count, summed high watermarks and records
    /// stored, by name; one statement, cheap enough to sample often.
    pub async fn totals(self) -> Result<Vec<TopicTotals>> {
        super::topics::topic_totals(self.broker).await
    }

    /// Adds `additional` partitions to a topic. Keys map to partitions by the
    /// partition count, so keyed records may move to a new partition
    /// afterwards, as in Kafka.
    pub async fn add_partitions(self, name: &TopicName, additional: i32) -> Result<TopicInfo> {
        super::topics::add_partitions(self.broker, name, additional).await
    }

    /// Deletes a topic, its records and its groups' committed offsets. The
    /// segment tables are dropped now when possible, else by maintenance.
    pub async fn delete(self, name: &TopicName) -> Result<()> {
        super::topics::delete_topic(self.broker, name).await
    }

    /// Whether the topic has `partition`, as produce sees it: from this
    /// process's metadata cache (a couple of seconds old at most), read
    /// again from Postgres when the partition is not in it.
    /// [`crate::Error::UnknownTopic`] when there is no such topic.
    pub async fn has_partition(self, name: &TopicName, partition: i32) -> Result<bool> {
        super::topics::has_partition(self.broker, name, partition).await
    }
}

/// The record operations of a [`Broker`]; see [`Broker::streams`].
#[derive(Debug, Clone, Copy)]
pub struct Streams<'a> {
    broker: &'a Broker,
}

impl Broker {
    /// Records of topics: producing, fetching, offsets, producers and
    /// consumers.
    pub fn streams(&self) -> Streams<'_> {
        Streams { broker: self }
    }
}

impl Streams<'_> {
    /// Produces records to a topic and returns where each landed, in input
    /// order. With `partition` the records all go there; otherwise a keyed
    /// record goes where Kafka's default partitioner would put it, and
    /// records without a key go together to one partition chosen round-robin.
    ///
    /// Records for one partition are written by one statement in one
    /// transaction: all of them or none.
    pub async fn produce(
        self,
        topic: &TopicName,
        partition: Option<i32>,
        records: &[Record],
    ) -> Result<Vec<RecordPosition>> {
        super::produce::produce(self.broker, topic, partition, records).await
    }

    /// Produces inside the caller's open transaction (the transactional
    /// outbox): the records become visible if and only if that transaction
    /// commits. Partition choice is as in [`crate::streams::Streams::produce`].
    ///
    /// The partition's row lock is held until the caller commits, so other
    /// producers to the same partitions wait for it: keep such transactions
    /// short. Fetches through this broker see the records once the caller
    /// commits; one that read the partition's end while the transaction was
    /// still open may keep answering from its cache for up to half a
    /// second (other brokers learn of them by NOTIFY, as of any write).
    pub async fn produce_in(
        self,
        client: &impl GenericClient,
        topic: &TopicName,
        partition: Option<i32>,
        records: &[Record],
    ) -> Result<Vec<RecordPosition>> {
        super::produce::produce_in(self.broker, client, topic, partition, records).await
    }

    /// Starts an auto-batching producer.
    pub fn producer(self, config: ProducerConfig) -> Producer {
        super::producer::producer(self.broker, config)
    }

    /// Appends `records` to one partition as the batch `batch` of an
    /// idempotent producer. See the module documentation for the rules;
    /// refusals are [`Error::OutOfOrderSequence`](crate::Error::OutOfOrderSequence) and
    /// [`Error::ProducerFenced`](crate::Error::ProducerFenced), and write nothing.
    pub async fn produce_idempotent(
        self,
        topic: &TopicName,
        partition: i32,
        records: &[Record],
        batch: ProducerBatch,
    ) -> Result<IdempotentAppend> {
        super::idempotent::produce_idempotent(self.broker, topic, partition, records, batch).await
    }

    /// Hands out a new producer id, with epoch 0.
    pub async fn init_producer_id(self) -> Result<(i64, i16)> {
        super::idempotent::init_producer_id(self.broker).await
    }

    /// Reads records of one partition from `offset`. When there are none
    /// yet, waits up to `limits.max_wait` for a producer's commit. An offset
    /// below the log start or above the high watermark is
    /// [`Error::OffsetOutOfRange`](crate::Error::OffsetOutOfRange).
    pub async fn fetch(
        self,
        topic: &TopicName,
        partition: i32,
        offset: i64,
        limits: FetchLimits,
    ) -> Result<FetchResult> {
        super::fetch::fetch(
            self.broker,
            topic,
            partition,
            offset,
            limits,
            Isolation::ReadUncommitted,
        )
        .await
    }

    /// Reads what a consumer of committed data sees of one partition from
    /// `offset`, as Kafka's read_committed: up to the last stable offset,
    /// without the records of aborted transactions and without commit and
    /// abort markers. Offsets then have gaps; continue from the result's
    /// `next_offset`.
    pub async fn fetch_committed(
        self,
        topic: &TopicName,
        partition: i32,
        offset: i64,
        limits: FetchLimits,
    ) -> Result<FetchResult> {
        let mut r =
            super::fetch::fetch(self.broker, topic, partition, offset, limits, Isolation::ReadCommitted).await?;
        r.keep_committed();
        Ok(r)
    }

    /// Reads each partition from its offset, returning one result per read
    /// in input order (an error for one partition, such as
    /// [`crate::Error::OffsetOutOfRange`], does not fail the others). When
    /// fewer than `limits.min_bytes` are available and no partition failed,
    /// waits up to `limits.max_wait`, woken within milliseconds by a commit
    /// to any of the partitions.
    pub async fn fetch_many(self, reads: &[PartitionRead], limits: ManyLimits) -> Vec<Result<FetchResult>> {
        super::fetch_many::fetch_many(self.broker, reads, limits).await
    }

    /// Resolves earliest, latest or a timestamp to an offset of a partition.
    pub async fn resolve_offset(self, topic: &TopicName, partition: i32, spec: OffsetSpec) -> Result<i64> {
        super::fetch::resolve_offset(self.broker, topic, partition, spec).await
    }

    /// Log start and high watermark of a partition.
    pub async fn watermarks(self, topic: &TopicName, partition: i32) -> Result<(i64, i64)> {
        super::fetch::watermarks(self.broker, topic, partition).await
    }

    /// Makes every record before `before` unreadable and returns the new log
    /// start. `None` means the high watermark (delete everything). An
    /// offset beyond the high watermark is [`Error::OffsetOutOfRange`](crate::Error::OffsetOutOfRange); the
    /// log start never moves back.
    pub async fn delete_records(self, topic: &TopicName, partition: i32, before: Option<i64>) -> Result<i64> {
        super::delete_records::delete_records(self.broker, topic, partition, before).await
    }

    /// Starts a consumer: with a group, it joins it and reads the
    /// partitions assigned to it; without, it reads every partition of its
    /// topics.
    pub async fn consumer(self, config: ConsumerConfig) -> Result<Consumer> {
        Consumer::new(self.broker.clone(), config).await
    }
}
