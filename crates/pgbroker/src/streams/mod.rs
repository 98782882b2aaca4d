//! Streams: topics of partitioned, ordered logs. Records are appended in
//! batches (`produce`, `idempotent`, the batching `producer`), stored in
//! segment tables (`segments`), read by offset (`fetch`, `fetch_many`,
//! with recent records served from `cache`) and consumed in groups
//! (`consumer`). `topics` creates, alters and describes them; `delete_records`
//! moves a partition's log start; `cleanup` holds a topic's clean-up
//! policy and `compact` the cleaner of compacted topics.

mod api;
pub(crate) mod append_batch;
pub(crate) mod bucket_maps;
pub(crate) mod cache;
pub(crate) mod cleanup;
pub(crate) mod compact;
pub(crate) mod consumer;
pub(crate) mod delete_records;
pub(crate) mod fetch;
pub(crate) mod fetch_many;
mod fetch_replica;
pub(crate) mod idempotent;
pub mod partitioner;
pub(crate) mod produce;
pub(crate) mod producer;
pub(crate) mod segments;
pub(crate) mod statements;
pub(crate) mod topics;

pub use api::{Streams, Topics};
pub use cleanup::{Cleanup, CleanupPolicy, DEFAULT_DELETE_RETENTION_MS, DEFAULT_MIN_CLEANABLE_DIRTY_RATIO};
pub use compact::{CleanerStatus, CompactionReport};
pub use consumer::{ConsumedRecord, Consumer, ConsumerConfig, OffsetReset};
pub use fetch::{timestamp_ms, AbortedTxn, FetchLimits, FetchResult, Isolation, OffsetSpec, RecordProducer};
pub use fetch_many::{ManyLimits, PartitionRead};
pub use idempotent::{IdempotentAppend, ProducerBatch};
pub use producer::{Producer, ProducerConfig};
pub use topics::{
    PartitionInfo, TopicConfig, TopicDescription, TopicInfo, TopicTotals, DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_SEGMENT_RECORDS, MAX_PARTITIONS,
};
