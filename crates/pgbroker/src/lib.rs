//! pgbroker: Kafka-style streams and work queues stored in PostgreSQL.
//!
//! A [`Broker`] is a handle to pgbroker's tables in one Postgres schema: it
//! connects, migrates and holds the connection pool. Every operation is
//! reached through a handle of its area, and each handle's file lists all
//! of that area's operations:
//!
//! | handle | area |
//! |---|---|
//! | [`Broker::topics`] | create, describe, grow and delete topics |
//! | [`Broker::streams`] | produce, fetch, offsets, [`Producer`], [`Consumer`] |
//! | [`Broker::groups`] | the library's consumer groups and committed offsets |
//! | [`Broker::classic_groups`] | Kafka's classic group protocol |
//! | [`Broker::queues`] | work queues: send, receive, ack, nack, redrive |
//! | [`Broker::auth`] | users, SCRAM credentials and ACLs |
//! | [`Broker::cluster`] | the Kafka front end's node registry |
//! | [`Broker::maintenance`] | retention and queue upkeep |
//!
//! Topics have partitions; each partition is an ordered, gap-free log of
//! records. Producers append with [`streams::Streams::produce`] (or inside
//! their own transaction with [`streams::Streams::produce_in`], or through
//! the batching [`Producer`]); consumers read with
//! [`streams::Streams::fetch`] or the group-aware [`Consumer`].
//!
//! Work queues deliver each message to one receiver at a time, at least
//! once: [`queues::Queues::send`] (or [`queues::Queues::send_in`] inside
//! your transaction), [`queues::Queues::receive`] with a lease and a
//! receipt, then [`queues::Queues::ack`] (or [`queues::Queues::ack_in`],
//! together with the work's own writes), [`queues::Queues::nack`] or
//! [`queues::Queues::extend_lease`]. Retries with backoff, dead letters,
//! delays, priorities, deduplication keys and FIFO groups come with them.
//!
//! The crate root holds the everyday types; the rest live in their area's
//! module ([`streams`], [`queues`], [`groups`], [`auth`], [`cluster`]).
//!
//! ```no_run
//! use pgbroker::{Broker, BrokerConfig, Record, TopicConfig, TopicName};
//!
//! # async fn demo() -> pgbroker::Result<()> {
//! let broker = Broker::connect(BrokerConfig::default()).await?;
//! let topic = TopicName::new("orders")?;
//! let config = TopicConfig { partitions: 4, ..TopicConfig::default() };
//! broker.topics().create(&topic, &config).await?;
//! let at = broker.streams().produce(&topic, None, &[Record::keyed("user-1", "hello")]).await?;
//! let read = broker
//!     .streams()
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
pub mod sql_api;
pub mod streams;
mod together;
pub mod txn;
mod types;

pub use broker::replicas::describe_metrics as describe_replica_metrics;
pub use broker::{describe_target, Broker, BrokerConfig, DEFAULT_DATABASE_URL, DEFAULT_SCHEMA};
/// The shared byte buffer that records hold their keys and values in.
pub use bytes::Bytes;
pub use error::{Error, Invalid, Result};
pub use migrate::{latest_version, MigrationReport};
pub use queues::{Message, QueueConfig, QueueName, Receipt, ReceivedMessage, TakenMessage};
pub use streams::{partitioner, Consumer, ConsumerConfig, Producer, ProducerConfig, TopicConfig};
pub use types::{
    from_millis, to_millis, validate_schema, GroupId, Header, Record, RecordPosition, StoredRecord, TopicName,
    TopicPartition,
};
