//! How library errors map onto Kafka error codes. Codes come from
//! kafka-protocol's [`ResponseError`]; this module only decides which.

use kafka_protocol::ResponseError;
use pgbroker::{Error, Invalid};

use crate::codec::BatchError;

/// The code of a successful answer.
pub(crate) const NONE: i16 = 0;

/// The error for a value the library refused, by what was invalid.
pub(crate) fn invalid_error(what: Invalid) -> ResponseError {
    match what {
        Invalid::TopicName => ResponseError::InvalidTopicException,
        Invalid::GroupId => ResponseError::InvalidGroupId,
        Invalid::SessionTimeout => ResponseError::InvalidSessionTimeout,
        _ => ResponseError::InvalidRequest,
    }
}

/// The error for a library error on the data path (produce, fetch,
/// offsets): an unreachable database is a retriable storage error.
pub(crate) fn data_error(e: &Error) -> ResponseError {
    match e {
        Error::UnknownTopic(_) | Error::UnknownPartition { .. } => ResponseError::UnknownTopicOrPartition,
        Error::TopicExists(_) => ResponseError::TopicAlreadyExists,
        Error::RecordTooLarge { .. } => ResponseError::MessageTooLarge,
        Error::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        Error::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        Error::ProducerFenced { .. } => ResponseError::InvalidProducerEpoch,
        e if e.is_retriable() => ResponseError::KafkaStorageError,
        _ => group_error(e),
    }
}

/// The error for a library error from the group coordinator: an
/// unreachable database makes the coordinator unavailable, which clients
/// retry.
pub(crate) fn group_error(e: &Error) -> ResponseError {
    match e {
        Error::Invalid { what, .. } => invalid_error(*what),
        Error::UnknownGroup(_) => ResponseError::GroupIdNotFound,
        Error::UnknownMember { .. } => ResponseError::UnknownMemberId,
        Error::RebalanceInProgress { .. } => ResponseError::RebalanceInProgress,
        Error::GroupNotEmpty(_) => ResponseError::NonEmptyGroup,
        Error::NotAssigned { .. } | Error::IllegalGeneration { .. } => ResponseError::IllegalGeneration,
        Error::InconsistentGroupProtocol(_) => ResponseError::InconsistentGroupProtocol,
        Error::MemberIdRequired { .. } => ResponseError::MemberIdRequired,
        Error::FencedInstanceId { .. } => ResponseError::FencedInstanceId,
        Error::UnknownTopic(_) | Error::UnknownPartition { .. } => ResponseError::UnknownTopicOrPartition,
        e if e.is_retriable() => ResponseError::CoordinatorNotAvailable,
        _ => ResponseError::UnknownServerError,
    }
}

/// The code for a library error on the data path; see [`data_error`].
pub(crate) fn data_code(e: &Error) -> i16 {
    data_error(e).code()
}

/// The code for a library error from the coordinator; see [`group_error`].
pub(crate) fn group_code(e: &Error) -> i16 {
    group_error(e).code()
}

/// The code for a refused record batch.
pub(crate) fn batch_code(e: &BatchError) -> i16 {
    match e {
        BatchError::Corrupt(_) => ResponseError::CorruptMessage,
        BatchError::TooLarge { .. } => ResponseError::RecordListTooLarge,
        BatchError::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat,
        BatchError::UnsupportedCompression(_) => ResponseError::UnsupportedCompressionType,
        BatchError::Invalid(_) => ResponseError::InvalidRecord,
    }
    .code()
}
