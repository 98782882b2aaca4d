//! Streams: topics of partitioned, ordered logs. Records are appended in
//! batches (`produce`, `idempotent`, the batching `producer`), stored in
//! segment tables (`segments`), read by offset (`fetch`, `fetch_many`,
//! with recent records served from `cache`) and consumed in groups
//! (`consumer`). `topics` creates and describes them; `delete_records`
//! moves a partition's log start.

mod api;
pub(crate) mod cache;
pub(crate) mod consumer;
pub(crate) mod delete_records;
pub(crate) mod fetch;
pub(crate) mod fetch_many;
pub(crate) mod idempotent;
pub mod partitioner;
pub(crate) mod produce;
pub(crate) mod producer;
pub(crate) mod segments;
pub(crate) mod statements;
pub(crate) mod topics;

pub use api::{Streams, Topics};
pub use consumer::{ConsumedRecord, Consumer, ConsumerConfig, OffsetReset};
pub use fetch::{timestamp_ms, AbortedTxn, FetchLimits, FetchResult, Isolation, OffsetSpec, RecordProducer};
pub use fetch_many::{ManyLimits, PartitionRead};
pub use idempotent::{IdempotentAppend, ProducerBatch};
pub use producer::{Producer, ProducerConfig};
pub use topics::{
    PartitionInfo, TopicConfig, TopicDescription, TopicInfo, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_SEGMENT_RECORDS,
    MAX_PARTITIONS,
};
