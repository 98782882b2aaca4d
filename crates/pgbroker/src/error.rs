//! The library's one error type.

use std::fmt;

/// A specialised `Result` for pgbroker operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a pgbroker call.
///
/// Variants are grouped by who can fix them: the caller (bad input, unknown
/// names), the group protocol (rebalance, fencing), or the environment
/// (database down). Use [`Error::is_retriable`] instead of matching on the
/// database cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A name (topic, group, schema) or value failed validation.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid, for example [`Invalid::TopicName`].
        what: Invalid,
        /// Why, in words a person can act on.
        reason: String,
    },
    /// The topic does not exist.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// The topic already exists.
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// The partition is not part of the topic.
    #[error("topic {topic:?} has no partition {partition} (it has {count})")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: i32,
        /// How many partitions the topic has.
        count: usize,
    },
    /// A record is larger than the topic allows.
    #[error("record of {size} bytes exceeds the topic's maximum of {max} bytes")]
    RecordTooLarge {
        /// Size of key, value and headers together.
        size: usize,
        /// The topic's `max_message_bytes`.
        max: usize,
    },
    /// The requested offset lies outside `[log_start, high_watermark]`.
    #[error("offset {offset} is out of range [{log_start}, {high_watermark}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: i64,
        /// The first offset still stored.
        log_start: i64,
        /// One past the last committed offset.
        high_watermark: i64,
    },
    /// The consumer group does not exist.
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
    /// The member is not (or no longer) part of the group: it left, or its
    /// session expired.
    #[error("member {member:?} is not part of group {group:?}")]
    UnknownMember {
        /// The group.
        group: String,
        /// The member id presented.
        member: String,
    },
    /// The member presented an old generation: the group has rebalanced and
    /// the member must rejoin before committing or heartbeating again.
    #[error("group {group:?} has rebalanced to generation {current}; generation {presented} is stale")]
    RebalanceInProgress {
        /// The group.
        group: String,
        /// The generation the member presented.
        presented: i32,
        /// The group's current generation.
        current: i32,
    },
    /// The member presented a generation other than the group's current
    /// one (Kafka's `ILLEGAL_GENERATION`): it missed a rebalance and must
    /// rejoin. Nothing was changed.
    #[error("group {group:?} is at generation {current}; generation {presented} is not valid")]
    IllegalGeneration {
        /// The group.
        group: String,
        /// The generation the member presented.
        presented: i32,
        /// The group's current generation.
        current: i32,
    },
    /// The group is used with another protocol type (a Kafka client joining
    /// a library group, or the other way round) or the member's protocols
    /// share none with the other members' (Kafka's
    /// `INCONSISTENT_GROUP_PROTOCOL`).
    #[error("group {0:?} uses a different or incompatible protocol")]
    InconsistentGroupProtocol(String),
    /// A new member must join again with the member id given here (Kafka's
    /// `MEMBER_ID_REQUIRED`, JoinGroup v4 and later).
    #[error("join again with member id {member_id:?}")]
    MemberIdRequired {
        /// The id to join with.
        member_id: String,
    },
    /// Another member has taken over this static member's
    /// `group.instance.id` (Kafka's `FENCED_INSTANCE_ID`).
    #[error("instance {instance_id:?} of group {group:?} is registered to another member")]
    FencedInstanceId {
        /// The group.
        group: String,
        /// The group instance id presented.
        instance_id: String,
    },
    /// A static member joined with a `group.instance.id` another active
    /// member of the group holds (Kafka's `UNRELEASED_INSTANCE_ID`).
    #[error("instance {instance_id:?} of group {group:?} is held by an active member")]
    UnreleasedInstanceId {
        /// The group.
        group: String,
        /// The group instance id presented.
        instance_id: String,
    },
    /// A consumer-protocol member presented a member epoch the coordinator
    /// cannot accept for a heartbeat, or a newer one than its own on a
    /// commit (Kafka's `FENCED_MEMBER_EPOCH`): it must rejoin with epoch 0.
    #[error("member {member:?} of group {group:?} is at epoch {current}; epoch {presented} is fenced")]
    FencedMemberEpoch {
        /// The group.
        group: String,
        /// The member.
        member: String,
        /// The epoch presented.
        presented: i32,
        /// The member's epoch.
        current: i32,
    },
    /// A consumer-protocol member committed with an older epoch than its
    /// own (Kafka's `STALE_MEMBER_EPOCH`): it should retry with the new
    /// epoch once its heartbeat brought it.
    #[error("member {member:?} of group {group:?} is at epoch {current}; epoch {presented} is stale")]
    StaleMemberEpoch {
        /// The group.
        group: String,
        /// The member.
        member: String,
        /// The epoch presented.
        presented: i32,
        /// The member's epoch.
        current: i32,
    },
    /// The operation needs the group to have no live members.
    #[error("group {0:?} has active members; stop them first")]
    GroupNotEmpty(String),
    /// The member committed an offset for a partition it is not assigned.
    #[error("member {member:?} of group {group:?} is not assigned {topic}/{partition}")]
    NotAssigned {
        /// The group.
        group: String,
        /// The member.
        member: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// A share group acknowledgement named a record the member does not
    /// hold: never delivered to it, already settled, or its lock ran out
    /// (Kafka's `INVALID_RECORD_STATE`). Nothing of the acknowledgement
    /// was applied.
    #[error("member {member:?} of share group {group:?} does not hold offset {offset} of {topic}/{partition}")]
    InvalidRecordState {
        /// The group.
        group: String,
        /// The member.
        member: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The first offset not held.
        offset: i64,
    },
    /// The queue does not exist.
    #[error("unknown queue {0:?}")]
    UnknownQueue(String),
    /// The queue already exists.
    #[error("queue {0:?} already exists")]
    QueueExists(String),
    /// The queue cannot be deleted: it is another queue's dead-letter queue.
    #[error("queue {queue:?} is the dead-letter queue of {used_by:?}; delete or change that queue first")]
    QueueInUse {
        /// The queue asked to be deleted.
        queue: String,
        /// A queue that sends its dead letters there.
        used_by: String,
    },
    /// A message is larger than its queue allows.
    #[error("message of {size} bytes exceeds the queue's maximum of {max} bytes")]
    MessageTooLarge {
        /// Size of body and headers together.
        size: usize,
        /// The queue's `max_message_bytes`.
        max: usize,
    },
    /// A receipt is not the current lease of its message: the lease expired
    /// and the message was received again, or it was acknowledged, released
    /// or never existed. Nothing was changed.
    #[error("receipt no longer valid (lease expired and message received again, or already settled): {}", .receipts.join(", "))]
    StaleReceipt {
        /// The receipts that were refused.
        receipts: Vec<String>,
    },
    /// An idempotent producer's batch does not follow its previous one on
    /// the partition: a batch in between was lost. Nothing was written.
    #[error("producer {producer_id}: sequence {got} does not follow {last} on this partition")]
    OutOfOrderSequence {
        /// The producer id.
        producer_id: i64,
        /// The last sequence number written.
        last: i32,
        /// The first sequence number of the refused batch.
        got: i32,
    },
    /// An idempotent producer wrote with an older epoch than a newer
    /// instance of it already used. Nothing was written.
    #[error("producer {producer_id}: epoch {got} is fenced by epoch {current}")]
    ProducerFenced {
        /// The producer id.
        producer_id: i64,
        /// The epoch presented.
        got: i16,
        /// The newest epoch seen.
        current: i16,
    },
    /// A transaction coordinator refusal (see [`crate::txn::TxnRefusal`]).
    /// Nothing was changed.
    #[error("transaction {transactional_id:?}: {refusal}")]
    Transaction {
        /// The transactional id, or the producer id in words when the
        /// request named none.
        transactional_id: String,
        /// Why.
        refusal: crate::txn::TxnRefusal,
    },
    /// The user does not exist.
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    /// The grant to revoke does not exist.
    #[error("no such ACL: {0}")]
    UnknownAcl(String),
    /// The database was migrated by a newer pgbroker.
    #[error(
        "schema {schema:?} is at version {found}, but this pgbroker knows versions up to {known}; upgrade pgbroker"
    )]
    SchemaTooNew {
        /// The schema.
        schema: String,
        /// Version found in the database.
        found: i32,
        /// Newest version this build knows.
        known: i32,
    },
    /// A broker that does not migrate found no pgbroker tables in its
    /// schema (a misspelled schema name, or a database never migrated).
    #[error(
        "schema {schema:?} has no pgbroker tables; check the schema name, or create them with \
         `pgbroker migrate --schema {schema}` (or a Broker that migrates)"
    )]
    SchemaMissing {
        /// The schema.
        schema: String,
    },
    /// The database could not be reached.
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect {
        /// Host, port and database, never the password.
        target: String,
        /// What the driver said.
        reason: String,
    },
    /// The database URL leads through a connection pooler that does not give
    /// each connection a server session of its own for its whole life
    /// (PgBouncer with `pool_mode = transaction` or `statement`).
    #[error(
        "{target} is reached through a connection pooler that does not keep one server session per connection \
         ({reason}), such as PgBouncer with pool_mode = transaction or statement. pgbroker needs sessions: it \
         prepares each statement once per connection and runs it in later transactions, and it keeps a LISTEN \
         connection for long-poll wake-ups. Give pgbroker's database pool_mode = session in the pooler, or point \
         --database-url at PostgreSQL itself"
    )]
    SessionPooler {
        /// Host, port and database, never the password.
        target: String,
        /// What the start-up check saw.
        reason: String,
    },
    /// A storage unit needed by the write is being created concurrently, or
    /// a lock could not be had in time. Retrying is safe.
    #[error("storage busy: {0}")]
    Busy(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Db(#[source] tokio_postgres::Error),
    /// The connection pool failed to hand out a connection.
    #[error("connection pool: {0}")]
    Pool(String),
    /// The batch this record was sent in failed as a whole.
    #[error("batch failed: {0}")]
    Batch(std::sync::Arc<Error>),
    /// The auto-batching producer has shut down.
    #[error("producer is closed")]
    Closed,
}

impl Error {
    /// True when the same call may succeed if tried again unchanged.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Busy(_) | Error::Connect { .. } | Error::Pool(_) => true,
            Error::Batch(e) => e.is_retriable(),
            Error::Db(e) => e.is_closed() || e.code().is_none_or(transient_sqlstate),
            _ => false,
        }
    }

    /// True when the error comes from the group protocol and the member
    /// should rejoin.
    pub fn needs_rejoin(&self) -> bool {
        matches!(
            self,
            Error::RebalanceInProgress { .. }
                | Error::IllegalGeneration { .. }
                | Error::MemberIdRequired { .. }
                | Error::UnknownMember { .. }
                | Error::NotAssigned { .. }
                | Error::FencedMemberEpoch { .. }
        )
    }

    /// An [`Error::Invalid`] for `what`, with `reason` in words a person
    /// can act on.
    pub fn invalid(what: Invalid, reason: impl fmt::Display) -> Error {
        Error::Invalid {
            what,
            reason: reason.to_string(),
        }
    }
}

/// Defines [`Invalid`] and the words each kind reads as.
macro_rules! invalid_kinds {
    ($($kind:ident => $words:literal,)*) => {
        /// What an [`Error::Invalid`] found invalid, so that callers can
        /// tell kinds apart without reading the message.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Invalid {
            $(#[doc = concat!("The ", $words, ".")] $kind,)*
        }

        impl Invalid {
            /// The kind in words, as the error message reads it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Invalid::$kind => $words,)*
                }
            }
        }
    };
}

invalid_kinds! {
    TopicName => "topic name",
    GroupId => "group id",
    QueueName => "queue name",
    SchemaName => "schema name",
    UserName => "user name",
    Password => "password",
    IterationCount => "iteration count",
    Permission => "permission",
    TopicPrefix => "topic prefix",
    GroupPrefix => "group prefix",
    QueuePrefix => "queue prefix",
    AccessKeyId => "access key id",
    Acl => "acl",
    DatabaseUrl => "database URL",
    AdvertisedHost => "advertised host",
    PartitionCount => "partition count",
    Retention => "retention",
    RetentionBytes => "retention bytes",
    SegmentRecords => "segment records",
    MaxMessageBytes => "max message bytes",
    CleanupPolicy => "clean-up policy",
    CompactionLag => "compaction lag",
    DeleteRetention => "delete retention",
    DirtyRatio => "cleanable dirty ratio",
    RecordKey => "record key",
    RecordBatch => "record batch",
    Offset => "offset",
    Timestamp => "timestamp",
    Seek => "seek",
    SessionTimeout => "session timeout",
    AssignmentStrategy => "assignment strategy",
    Assignment => "assignment",
    Subscription => "subscription",
    SubscriptionRegex => "subscription regular expression",
    VisibilityTimeout => "visibility timeout",
    MaxAttempts => "max attempts",
    BackoffBase => "backoff base",
    BackoffMax => "backoff max",
    ArchiveRetention => "archive retention",
    DeadLetterQueue => "dead-letter queue",
    Priority => "priority",
    Delay => "delay",
    DeliveryTime => "delivery time",
    HeaderKey => "header key",
    DeduplicationKey => "deduplication key",
    GroupKey => "group key",
    MaxMessages => "max messages",
    Wait => "wait",
    Extension => "extension",
    Receipt => "receipt",
    BrowseState => "browse state",
    TransactionalId => "transactional id",
    GroupConfig => "group setting",
    Acknowledgement => "acknowledgement",
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Db(e)
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e)
            | deadpool_postgres::PoolError::PostCreateHook(deadpool_postgres::HookError::Backend(e)) => Error::Db(e),
            other => Error::Pool(other.to_string()),
        }
    }
}

/// Server errors that only say Postgres is restarting, recovering or
/// shutting down, that the connection broke ("the database system is
/// starting up" refuses every connection during crash recovery), or that
/// the transaction lost a race (a deadlock, a serialization failure, a
/// lock timeout) and was rolled back.
fn transient_sqlstate(code: &tokio_postgres::error::SqlState) -> bool {
    use tokio_postgres::error::SqlState;
    code.code().starts_with("08")
        || [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            // The transaction was rolled back and may simply run again.
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::LOCK_NOT_AVAILABLE,
        ]
        .contains(code)
}

#[cfg(test)]
mod transient_tests {
    use super::transient_sqlstate;
    use tokio_postgres::error::SqlState;

    #[test]
    fn restarts_and_broken_connections_are_transient() {
        assert!(transient_sqlstate(&SqlState::CANNOT_CONNECT_NOW));
        assert!(transient_sqlstate(&SqlState::ADMIN_SHUTDOWN));
        assert!(transient_sqlstate(&SqlState::CRASH_SHUTDOWN));
        assert!(transient_sqlstate(&SqlState::CONNECTION_FAILURE));
        assert!(transient_sqlstate(&SqlState::T_R_DEADLOCK_DETECTED));
        assert!(transient_sqlstate(&SqlState::T_R_SERIALIZATION_FAILURE));
        assert!(transient_sqlstate(&SqlState::LOCK_NOT_AVAILABLE));
        assert!(!transient_sqlstate(&SqlState::UNIQUE_VIOLATION));
        assert!(!transient_sqlstate(&SqlState::UNDEFINED_TABLE));
    }
}
