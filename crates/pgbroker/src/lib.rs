//! pgbroker: Kafka-style streams and work queues stored in PostgreSQL.
//!
//! A [`Broker`] is a handle to pgbroker's tables in one Postgres schema.
//! Topics have partitions; each partition is an ordered, gap-free log of
//! records. Producers append with [`Broker::produce`] (or inside their own
//! transaction with [`Broker::produce_in`], or through the batching
//! [`Producer`]); consumers read with [`Broker::fetch`] or the
//! group-aware [`Consumer`].
//!
//! Work queues deliver each message to one receiver at a time, at least
//! once: [`Broker::send`] (or [`Broker::send_in`] inside your transaction),
//! [`Broker::receive`] with a lease and a receipt, then [`Broker::ack`] (or
//! [`Broker::ack_in`], together with the work's own writes),
//! [`Broker::nack`] or [`Broker::extend`]. Retries with backoff, dead
//! letters, delays, priorities, deduplication keys and FIFO groups come
//! with them.
//!
//! ```no_run
//! use pgbroker::{Broker, BrokerConfig, Record, TopicConfig, TopicName};
//!
//! # async fn demo() -> pgbroker::Result<()> {
//! let broker = Broker::connect(BrokerConfig::default()).await?;
//! let topic = TopicName::new("orders")?;
//! broker
//!     .topics().create(&topic, &TopicConfig { partitions: 4, ..TopicConfig::default() })
//!     .await?;
//! let at = broker.streams().produce(&topic, None, &[Record::keyed("user-1", "hello")]).await?;
//! let read = broker
//!     .fetch(&topic, at[0].partition, at[0].offset, Default::default())
//!     .await?;
//! assert_eq!(read.records[0].value.as_deref(), Some(&b"hello"[..]));
//! # Ok(())
//! # }
//! ```

pub mod auth;
mod broker;
pub mod cluster;
mod error;
pub mod groups;
mod headers;
pub mod maintenance;
mod migrate;
pub mod queues;
mod sql;
pub mod streams;
mod types;

pub use broker::{describe_target, Broker, BrokerConfig, DEFAULT_DATABASE_URL, DEFAULT_SCHEMA};
pub use error::{Error, Result};
pub use migrate::{latest_version, MigrationReport};
pub use queues::{Message, QueueConfig, QueueName, Receipt, ReceivedMessage};
pub use streams::{partitioner, Consumer, ConsumerConfig, Producer, ProducerConfig, TopicConfig};
pub use types::{
    from_millis, to_millis, validate_schema, GroupId, Header, Record, RecordPosition, StoredRecord, TopicName,
    TopicPartition,
};
