//! Kafka error codes, and how library errors map onto them.

use pgbroker::Error;

use crate::codec::BatchError;

/// The Kafka error codes this server sends.
pub(crate) mod code {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const RECORD_LIST_TOO_LARGE: i16 = 18;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const INVALID_GROUP_ID: i16 = 24;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
    pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
    pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
    pub const ILLEGAL_SASL_STATE: i16 = 34;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_REQUEST: i16 = 42;
    pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const NON_EMPTY_GROUP: i16 = 68;
    pub const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const FENCED_INSTANCE_ID: i16 = 82;
    pub const INVALID_RECORD: i16 = 87;
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
}

/// The code for a library error on the data path (produce, fetch,
/// offsets): an unreachable database is a retriable storage error.
pub(crate) fn data_code(e: &Error) -> i16 {
    match e {
        Error::UnknownTopic(_) | Error::UnknownPartition { .. } => code::UNKNOWN_TOPIC_OR_PARTITION,
        Error::Invalid { what, .. } if what.contains("topic") => code::INVALID_TOPIC_EXCEPTION,
        Error::Invalid { .. } => code::INVALID_REQUEST,
        Error::TopicExists(_) => code::TOPIC_ALREADY_EXISTS,
        Error::RecordTooLarge { .. } => code::MESSAGE_TOO_LARGE,
        Error::OffsetOutOfRange { .. } => code::OFFSET_OUT_OF_RANGE,
        Error::OutOfOrderSequence { .. } => code::OUT_OF_ORDER_SEQUENCE_NUMBER,
        Error::ProducerFenced { .. } => code::INVALID_PRODUCER_EPOCH,
        e if e.is_retriable() => code::KAFKA_STORAGE_ERROR,
        _ => group_code(e),
    }
}

/// The code for a library error from the group coordinator: an unreachable
/// database makes the coordinator unavailable, which clients retry.
pub(crate) fn group_code(e: &Error) -> i16 {
    match e {
        Error::UnknownGroup(_) => code::GROUP_ID_NOT_FOUND,
        Error::UnknownMember { .. } => code::UNKNOWN_MEMBER_ID,
        Error::RebalanceInProgress { .. } => code::REBALANCE_IN_PROGRESS,
        Error::GroupNotEmpty(_) => code::NON_EMPTY_GROUP,
        Error::NotAssigned { .. } | Error::IllegalGeneration { .. } => code::ILLEGAL_GENERATION,
        Error::InconsistentGroupProtocol(_) => code::INCONSISTENT_GROUP_PROTOCOL,
        Error::MemberIdRequired { .. } => code::MEMBER_ID_REQUIRED,
        Error::FencedInstanceId { .. } => code::FENCED_INSTANCE_ID,
        Error::Invalid { what, .. } if what.contains("group") => code::INVALID_GROUP_ID,
        Error::Invalid { what, .. } if what.contains("session") => code::INVALID_SESSION_TIMEOUT,
        Error::Invalid { .. } => code::INVALID_REQUEST,
        Error::UnknownTopic(_) | Error::UnknownPartition { .. } => code::UNKNOWN_TOPIC_OR_PARTITION,
        e if e.is_retriable() => code::COORDINATOR_NOT_AVAILABLE,
        _ => code::UNKNOWN_SERVER_ERROR,
    }
}

/// The code for a refused record batch.
pub(crate) fn batch_code(e: &BatchError) -> i16 {
    match e {
        BatchError::Corrupt(_) => code::CORRUPT_MESSAGE,
        BatchError::TooLarge { .. } => code::RECORD_LIST_TOO_LARGE,
        BatchError::UnsupportedMagic(_) => code::UNSUPPORTED_FOR_MESSAGE_FORMAT,
        BatchError::UnsupportedCompression(_) => code::UNSUPPORTED_COMPRESSION_TYPE,
        BatchError::Invalid(_) => code::INVALID_RECORD,
    }
}
