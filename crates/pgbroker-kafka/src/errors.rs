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
        // A record without a key on a compacted topic.
        Invalid::RecordKey => ResponseError::InvalidRecord,
        Invalid::SubscriptionRegex => ResponseError::InvalidRegularExpression,
        _ => ResponseError::InvalidRequest,
    }
}

/// The error for a library error on the data path (produce, fetch,
/// offsets): an unreachable database is a retriable storage error.
pub(crate) fn data_error(e: &Error) -> ResponseError {
    match e {
        // A failure shared by appends made together is each one's own.
        Error::Batch(inner) => data_error(inner),
        Error::UnknownTopic(_) | Error::UnknownPartition { .. } => ResponseError::UnknownTopicOrPartition,
        Error::TopicExists(_) => ResponseError::TopicAlreadyExists,
        Error::RecordTooLarge { .. } => ResponseError::MessageTooLarge,
        Error::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        Error::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        Error::ProducerFenced { .. } => ResponseError::InvalidProducerEpoch,
        Error::Transaction { refusal, .. } => crate::api::txn::refusal_error(refusal),
        e if e.is_retriable() => ResponseError::KafkaStorageError,
        _ => group_error(e),
    }
}

/// The error for a library error from the group coordinator: an
/// unreachable database makes the coordinator unavailable, which clients
/// retry.
pub(crate) fn group_error(e: &Error) -> ResponseError {
    match e {
        Error::Invalid {
            what: Invalid::AssignmentStrategy,
            ..
        } => ResponseError::UnsupportedAssignor,
        Error::Invalid { what, .. } => invalid_error(*what),
        Error::UnknownGroup(_) => ResponseError::GroupIdNotFound,
        Error::UnknownMember { .. } => ResponseError::UnknownMemberId,
        Error::RebalanceInProgress { .. } => ResponseError::RebalanceInProgress,
        Error::GroupNotEmpty(_) => ResponseError::NonEmptyGroup,
        Error::NotAssigned { .. } | Error::IllegalGeneration { .. } => ResponseError::IllegalGeneration,
        Error::InconsistentGroupProtocol(_) => ResponseError::InconsistentGroupProtocol,
        Error::MemberIdRequired { .. } => ResponseError::MemberIdRequired,
        Error::FencedInstanceId { .. } => ResponseError::FencedInstanceId,
        Error::FencedMemberEpoch { .. } => ResponseError::FencedMemberEpoch,
        Error::StaleMemberEpoch { .. } => ResponseError::StaleMemberEpoch,
        Error::UnreleasedInstanceId { .. } => ResponseError::UnreleasedInstanceId,
        Error::UnknownTopic(_) | Error::UnknownPartition { .. } => ResponseError::UnknownTopicOrPartition,
        e if e.is_retriable() => ResponseError::CoordinatorNotAvailable,
        e => {
            // The client learns nothing from this code: the cause goes to
            // the log.
            tracing::warn!(error = %e, "answering UNKNOWN_SERVER_ERROR");
            ResponseError::UnknownServerError
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(what: Invalid) -> Error {
        Error::invalid(what, "refused")
    }

    #[test]
    fn invalid_values_map_by_what_was_invalid() {
        assert_eq!(data_code(&invalid(Invalid::TopicName)), 17);
        assert_eq!(group_code(&invalid(Invalid::GroupId)), 24);
        assert_eq!(group_code(&invalid(Invalid::SessionTimeout)), 26);
        for other in [
            Invalid::PartitionCount,
            Invalid::Offset,
            Invalid::Timestamp,
            Invalid::TopicPrefix,
        ] {
            assert_eq!(data_code(&invalid(other)), 42, "{other}");
            assert_eq!(group_code(&invalid(other)), 42, "{other}");
        }
    }

    #[test]
    fn library_errors_map_onto_their_kafka_codes() {
        let group = || "g".to_string();
        let data = [
            (Error::UnknownTopic("t".into()), 3),
            (
                Error::UnknownPartition {
                    topic: "t".into(),
                    partition: 9,
                    count: 1,
                },
                3,
            ),
            (Error::TopicExists("t".into()), 36),
            (Error::RecordTooLarge { size: 2, max: 1 }, 10),
            (
                Error::OffsetOutOfRange {
                    offset: 9,
                    log_start: 0,
                    high_watermark: 1,
                },
                1,
            ),
            (
                Error::OutOfOrderSequence {
                    producer_id: 1,
                    last: 1,
                    got: 3,
                },
                45,
            ),
            (
                Error::ProducerFenced {
                    producer_id: 1,
                    got: 0,
                    current: 1,
                },
                47,
            ),
            (Error::Busy("creating".into()), 56),
            (Error::UnknownGroup(group()), 69),
        ];
        for (e, code) in &data {
            assert_eq!(data_code(e), *code, "{e}");
        }
        let coordinator = [
            (Error::UnknownGroup(group()), 69),
            (
                Error::UnknownMember {
                    group: group(),
                    member: "m".into(),
                },
                25,
            ),
            (
                Error::RebalanceInProgress {
                    group: group(),
                    presented: 1,
                    current: 2,
                },
                27,
            ),
            (
                Error::IllegalGeneration {
                    group: group(),
                    presented: 1,
                    current: 2,
                },
                22,
            ),
            (
                Error::NotAssigned {
                    group: group(),
                    member: "m".into(),
                    topic: "t".into(),
                    partition: 0,
                },
                22,
            ),
            (Error::GroupNotEmpty(group()), 68),
            (Error::InconsistentGroupProtocol(group()), 23),
            (Error::MemberIdRequired { member_id: "m".into() }, 79),
            (
                Error::FencedInstanceId {
                    group: group(),
                    instance_id: "i".into(),
                },
                82,
            ),
            (Error::UnknownTopic("t".into()), 3),
            (Error::Busy("creating".into()), 15),
            (Error::Closed, -1),
        ];
        for (e, code) in &coordinator {
            assert_eq!(group_code(e), *code, "{e}");
        }
    }

    #[test]
    fn refused_batches_map_onto_their_kafka_codes() {
        let cases = [
            (BatchError::Corrupt("crc".into()), 2),
            (BatchError::TooLarge { limit: 1 }, 18),
            (BatchError::UnsupportedMagic(1), 43),
            (BatchError::UnsupportedCompression(9), 76),
            (BatchError::Invalid("null header key".into()), 87),
        ];
        for (e, code) in &cases {
            assert_eq!(batch_code(e), *code, "{e}");
        }
    }
}
