//! Kafka transactions: the coordinator, kept entirely in Postgres.
//!
//! A transactional id holds one producer id and epoch
//! (`kafka_transactions`). Starting a producer (`init_producer`) bumps the
//! epoch, which fences every request of an older instance, and aborts the
//! transaction that instance left open. A transaction is `Ongoing` from
//! the first partition or group added to it until `end` (commit or abort)
//! or its timeout; `Empty`, `CompleteCommit` and `CompleteAbort` are the
//! states between transactions.
//!
//! The invariant: what a transaction wrote becomes decided in one SQL
//! transaction. `end` locks the transactional id's row, flips the state,
//! moves its pending offsets into `group_offsets` (commit), forgets the
//! transaction's partitions (which moves each partition's last stable
//! offset), then locks every partition the transaction wrote to in id
//! order and, in one statement, appends a control record (the commit or
//! abort marker) to each and records the aborted ranges (abort), then
//! commits.
//! A transactional produce takes the same row in share mode and checks, in
//! its own append's transaction, that the epoch is current, the
//! transaction ongoing and the partition added to it (KIP-890's
//! server-side check), so no write can land between a decision and its
//! marker. Both hold a partition's lock only for their one appending
//! statement and the commit, as a plain produce does.
//!
//! Joining a partition or a group to a transaction commits without
//! waiting for the WAL flush: only later writes of the same transaction
//! read it, and their commits flush it (the macro `join_txn` in
//! `statements` gives the argument).
//!
//! The last stable offset of a partition is the smallest first offset of
//! the transactions still open on it (`kafka_txn_partitions`), else the
//! high watermark. read_committed fetches stop there and learn the aborted
//! ranges (`kafka_aborted_txns`) overlapping what they read.
//!
//! Modules: `api` (the [`Transactions`] handle), `coordinator` (init, add,
//! offsets, end, timeouts), `decide` (a decision with its markers),
//! `batch` (concurrent EndTxns decided together), `append` (the transactional
//! produce), `append_batch` (concurrent transactional appends to one
//! partition made together), `pipelined` (a transaction whose BEGIN and COMMIT share the
//! round trips of its first and last statements), `producers` (what
//! DescribeProducers shows), `statements`.

mod api;
pub(crate) mod append;
pub(crate) mod append_batch;
mod append_round;
pub(crate) mod batch;
pub(crate) mod coordinator;
mod decide;
mod pipelined;
mod producers;
pub(crate) mod statements;

use std::fmt;

pub use api::Transactions;
pub use coordinator::{GroupMember, TxnDescription, TxnState};
pub use producers::ProducerState;

/// The longest transaction timeout a producer may ask for, as Kafka's
/// `transaction.max.timeout.ms` default.
pub const MAX_TRANSACTION_TIMEOUT_MS: i32 = 900_000;

/// Why the coordinator refused a request. Each maps to one Kafka error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TxnRefusal {
    /// A newer instance of the producer holds the transactional id: the
    /// request's epoch is older (PRODUCER_FENCED).
    Fenced {
        /// The epoch presented.
        presented: i16,
        /// The current epoch.
        current: i16,
    },
    /// The epoch presented is newer than the coordinator's
    /// (INVALID_PRODUCER_EPOCH).
    EpochAhead {
        /// The epoch presented.
        presented: i16,
        /// The current epoch.
        current: i16,
    },
    /// The producer id is not the one the transactional id holds, or no
    /// transactional id holds it (INVALID_PRODUCER_ID_MAPPING).
    UnknownProducerId(i64),
    /// The request does not fit the transaction's state (INVALID_TXN_STATE).
    InvalidState(String),
    /// A transactional write to a partition not added to the current
    /// transaction (INVALID_TXN_STATE, as Kafka since KIP-890).
    PartitionNotAdded,
    /// The transaction timeout asked for is not in `1..=max`
    /// (INVALID_TRANSACTION_TIMEOUT).
    InvalidTimeout {
        /// The timeout asked for, in milliseconds.
        requested: i32,
        /// The broker's maximum.
        max: i32,
    },
    /// Offsets committed for a group not added to the transaction
    /// (INVALID_TXN_STATE).
    GroupNotAdded(String),
    /// A commit or abort sent for an earlier transaction of the producer,
    /// arriving while a later one is open (INVALID_TXN_STATE).
    StaleRequest,
}

impl fmt::Display for TxnRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxnRefusal::Fenced { presented, current } => {
                write!(f, "epoch {presented} is fenced by epoch {current}")
            }
            TxnRefusal::EpochAhead { presented, current } => {
                write!(f, "epoch {presented} is ahead of the current epoch {current}")
            }
            TxnRefusal::UnknownProducerId(id) => write!(f, "producer id {id} does not hold this transactional id"),
            TxnRefusal::InvalidState(why) => write!(f, "{why}"),
            TxnRefusal::PartitionNotAdded => write!(f, "the partition was not added to the transaction"),
            TxnRefusal::InvalidTimeout { requested, max } => {
                write!(f, "transaction timeout {requested} ms is not between 1 and {max} ms")
            }
            TxnRefusal::GroupNotAdded(g) => write!(f, "group {g:?} was not added to the transaction"),
            TxnRefusal::StaleRequest => write!(f, "the request belongs to an earlier transaction"),
        }
    }
}

/// Checks a transactional id: 1 to 255 bytes, no control characters.
pub(crate) fn check_transactional_id(id: &str) -> crate::error::Result<()> {
    if id.is_empty() || id.len() > 255 || id.chars().any(char::is_control) {
        return Err(crate::error::Error::invalid(
            crate::error::Invalid::TransactionalId,
            "must be 1 to 255 bytes without control characters",
        ));
    }
    Ok(())
}

/// The key of a marker: version 0, then 0 for abort, 1 for commit.
pub(crate) fn marker_key(commit: bool) -> Vec<u8> {
    vec![0, 0, 0, u8::from(commit)]
}

/// The value of a marker: version 0, then the coordinator epoch (always 0:
/// there is one coordinator, Postgres).
pub(crate) fn marker_value() -> Vec<u8> {
    vec![0, 0, 0, 0, 0, 0]
}
