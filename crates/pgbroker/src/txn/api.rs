//! Every operation of the transaction coordinator, in one place: the
//! [`Transactions`] handle. Each method delegates to the file that
//! implements it.

use std::time::Duration;

use super::coordinator::{self, GroupMember, TxnDescription};
use super::producers::{self, ProducerState};
use crate::broker::Broker;
use crate::error::Result;
use crate::groups::OffsetCommit;
use crate::streams::{IdempotentAppend, ProducerBatch};
use crate::types::{GroupId, Record, TopicName};

/// The transaction operations of a [`Broker`]; see [`Broker::transactions`].
#[derive(Debug, Clone, Copy)]
pub struct Transactions<'a> {
    broker: &'a Broker,
}

impl Broker {
    /// Kafka transactions: transactional producers, their offsets, commit
    /// and abort, timeouts, and the last stable offset.
    pub fn transactions(&self) -> Transactions<'_> {
        Transactions { broker: self }
    }
}

impl Transactions<'_> {
    /// Starts (or restarts) the producer of a transactional id: a new
    /// producer id at epoch 0 the first time, else the next epoch, which
    /// fences every older instance; a transaction an older instance left
    /// open is aborted. `timeout_ms` must be between 1 and
    /// [`super::MAX_TRANSACTION_TIMEOUT_MS`]. A restarting producer may
    /// present its producer id and epoch (`current`).
    pub async fn init_producer(
        self,
        transactional_id: &str,
        timeout_ms: i32,
        current: Option<(i64, i16)>,
    ) -> Result<(i64, i16)> {
        coordinator::init_producer(self.broker, transactional_id, timeout_ms, current).await
    }

    /// Adds partitions to the transaction, starting it if none is open.
    /// Returns the transaction's number, which [`Transactions::end`] may
    /// be given to make sure it decides this transaction and no later one.
    pub async fn add_partitions(
        self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(TopicName, i32)],
    ) -> Result<i64> {
        coordinator::add_partitions(self.broker, transactional_id, producer_id, epoch, partitions).await
    }

    /// Adds a consumer group to the transaction, so that offsets of it may
    /// be committed inside it. Returns the transaction's number, as
    /// [`Transactions::add_partitions`] does.
    pub async fn add_group(self, transactional_id: &str, producer_id: i64, epoch: i16, group: &GroupId) -> Result<i64> {
        coordinator::add_group(self.broker, transactional_id, producer_id, epoch, group).await
    }

    /// Commits offsets of an added group inside the transaction: they
    /// become the group's committed offsets if and when it commits. With a
    /// `member`, a member of an older generation is refused (KIP-447).
    #[allow(clippy::too_many_arguments)]
    pub async fn commit_offsets(
        self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &GroupId,
        member: Option<&GroupMember>,
        offsets: &[OffsetCommit],
    ) -> Result<()> {
        coordinator::commit_offsets(
            self.broker,
            transactional_id,
            producer_id,
            epoch,
            group,
            member,
            offsets,
        )
        .await
    }

    /// Appends a batch of the transaction to a partition added to it.
    pub async fn produce(
        self,
        transactional_id: &str,
        topic: &TopicName,
        partition: i32,
        records: &[Record],
        batch: ProducerBatch,
    ) -> Result<IdempotentAppend> {
        super::append::produce_transactional(self.broker, transactional_id, topic, partition, records, batch).await
    }

    /// Commits (`commit`) or aborts the transaction: markers, offsets and
    /// state in one SQL transaction (shared with the EndTxns of this
    /// process that queued behind a running one). With `expected` (a number from
    /// [`Transactions::add_partitions`]), a request of an earlier
    /// transaction is refused when a later one is open.
    pub async fn end(
        self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        expected: Option<i64>,
    ) -> Result<()> {
        let req = super::batch::EndRequest {
            id: transactional_id.to_string(),
            producer_id,
            epoch,
            commit,
            expected,
        };
        self.broker.inner.decisions.end(self.broker, req).await
    }

    /// Aborts every transaction past its timeout, bumping its epoch;
    /// returns how many. Any broker process may run it.
    pub async fn abort_expired(self) -> Result<usize> {
        coordinator::abort_expired(self.broker).await
    }

    /// Aborts a transactional id's open transaction (an operator's abort of
    /// a hanging transaction); false when none was open.
    pub async fn abort(self, transactional_id: &str) -> Result<bool> {
        coordinator::abort_by_operator(self.broker, transactional_id).await
    }

    /// Runs [`Transactions::abort_expired`] every `interval` until the
    /// task is aborted.
    pub fn spawn_timeouts(self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let broker = self.broker.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = coordinator::abort_expired(&broker).await {
                    tracing::warn!(error = %e, "transaction timeout sweep failed");
                }
            }
        })
    }

    /// A partition's last stable offset: where read_committed consumers
    /// stop.
    pub async fn last_stable_offset(self, topic: &TopicName, partition: i32) -> Result<i64> {
        coordinator::last_stable_offset(self.broker, topic, partition).await
    }

    /// Partitions of a group with an offset pending in an open
    /// transaction.
    pub async fn pending_offsets(self, group: &GroupId) -> Result<Vec<(TopicName, i32)>> {
        coordinator::pending_offsets(self.broker, group).await
    }

    /// Every transactional id, with its open transaction's partitions.
    pub async fn list(self) -> Result<Vec<TxnDescription>> {
        coordinator::list(self.broker).await
    }

    /// One transactional id, if known.
    pub async fn describe(self, transactional_id: &str) -> Result<Option<TxnDescription>> {
        coordinator::describe(self.broker, transactional_id).await
    }

    /// The idempotent and transactional producers a partition remembers,
    /// with their epochs, last sequences and open transactions.
    pub async fn producers(self, topic: &TopicName, partition: i32) -> Result<Vec<ProducerState>> {
        producers::producers(self.broker, topic, partition).await
    }
}
