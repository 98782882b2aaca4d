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
//!     .create_topic(&topic, &TopicConfig { partitions: 4, ..TopicConfig::default() })
//!     .await?;
//! let at = broker.produce(&topic, None, &[Record::keyed("user-1", "hello")]).await?;
//! let read = broker
//!     .fetch(&topic, at[0].partition, at[0].offset, Default::default())
//!     .await?;
//! assert_eq!(read.records[0].value.as_deref(), Some(&b"hello"[..]));
//! # Ok(())
//! # }
//! ```

mod auth;
mod broker;
mod cluster;
mod error;
mod groups;
mod headers;
mod migrate;
mod queues;
mod sql;
pub mod sql_api;
mod streams;
mod types;

pub use streams::partitioner;

pub use auth::access_keys::{
    validate_access_key_id, AccessKey, AccessKeyInfo, AccessKeySecret, MAX_ACCESS_KEY_ID_BYTES,
};
pub use auth::acl::{Acl, AclResource, Permission, UserAcls};
pub use auth::users::{
    validate_user_name, ScramCredentials, UserInfo, DEFAULT_SCRAM_ITERATIONS, MAX_SCRAM_ITERATIONS,
    MIN_SCRAM_ITERATIONS,
};
pub use broker::{describe_target, Broker, BrokerConfig, DEFAULT_DATABASE_URL, DEFAULT_SCHEMA};
pub use cluster::Node;
pub use error::{Error, Invalid, Result};
pub use groups::{
    ClassicGroupDescription, ClassicJoinMember, ClassicJoinRequest, ClassicJoinResponse, ClassicMemberDescription,
    CommittedOffset, GroupDescription, GroupListing, JoinOptions, MemberInfo, Membership, OffsetCommit, PartitionLag,
    ResetTo, Strategy, DEFAULT_GROUP_INITIAL_REBALANCE_DELAY,
};
pub use migrate::{latest_version, MigrationReport};
pub use queues::{
    Message, NackOptions, QueueConfig, QueueInfo, QueueMaintenance, QueueName, QueueStats, Receipt, ReceiveOptions,
    ReceivedMessage, Sent, SqsQueueSettings, DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE_MAX_MESSAGE_BYTES,
    DEFAULT_VISIBILITY_TIMEOUT, MAX_ATTEMPTS_LIMIT, MAX_DELAY, MAX_KEY_BYTES, MAX_PRIORITY, MAX_RECEIVE,
    MAX_VISIBILITY_TIMEOUT, QUEUE_MAX_MESSAGE_BYTES_LIMIT, SQS_DEDUP_WINDOW,
};
pub use streams::consumer::{ConsumedRecord, Consumer, ConsumerConfig, OffsetReset};
pub use streams::fetch::{timestamp_ms, FetchLimits, FetchResult, OffsetSpec};
pub use streams::fetch_many::{ManyLimits, PartitionRead};
pub use streams::idempotent::{IdempotentAppend, ProducerBatch};
pub use streams::producer::{Producer, ProducerConfig};
pub use streams::topics::{
    PartitionInfo, TopicConfig, TopicDescription, TopicInfo, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_SEGMENT_RECORDS,
    MAX_PARTITIONS,
};
pub use types::{
    from_millis, to_millis, validate_schema, GroupId, Header, Record, RecordPosition, StoredRecord, TopicName,
    TopicPartition,
};
