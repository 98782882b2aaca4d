//! Kafka's record batch format (magic 2), read and written here rather than
//! by the protocol crate, so that every size is checked before anything is
//! allocated, decompression stops at a limit, and repeated header keys
//! survive.

pub(crate) mod compression;
mod read;
mod records;

pub use records::{
    decode_batches, encode_batch, encode_batch_of, encode_batch_spanning, BatchError, BatchLimits, BatchProducer,
    DecodedBatch,
};
