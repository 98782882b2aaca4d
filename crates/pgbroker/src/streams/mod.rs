//! Streams: topics of partitioned, ordered logs. Records are appended in
//! batches (`produce`, `idempotent`, the batching `producer`), stored in
//! segment tables (`segments`), read by offset (`fetch`, `fetch_many`,
//! with recent records served from `cache`) and consumed in groups
//! (`consumer`). `topics` creates and describes them; `delete_records`
//! moves a partition's log start.

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
