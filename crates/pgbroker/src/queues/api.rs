//! Every operation on work queues, in one place: creating and
//! configuring queues, sending, receiving and settling messages, and
//! moving dead letters back. Each method is documented here and delegates
//! to the file that implements it.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use tokio_postgres::GenericClient;

use super::{
    Message, NackOptions, QueueConfig, QueueInfo, QueueName, QueueStats, Receipt, ReceiveOptions, ReceivedMessage,
    Sent, SqsQueueSettings,
};
use crate::broker::Broker;
use crate::error::Result;

/// The queue operations of a [`Broker`]; see [`Broker::queues`].
#[derive(Debug, Clone, Copy)]
pub struct Queues<'a> {
    broker: &'a Broker,
}

impl Broker {
    /// Work queues: their configuration and their messages.
    pub fn queues(&self) -> Queues<'_> {
        Queues { broker: self }
    }
}

impl Queues<'_> {
    /// Creates a queue. Its dead-letter queue, if any, must exist.
    pub async fn create(self, name: &QueueName, config: &QueueConfig) -> Result<QueueInfo> {
        super::lifecycle::create_queue(self.broker, name, config).await
    }

    /// Replaces a queue's settings. Messages keep their state; new limits
    /// apply from their next delivery or settlement (other brokers see them
    /// within two seconds).
    pub async fn update(self, name: &QueueName, config: &QueueConfig) -> Result<QueueInfo> {
        super::lifecycle::update_queue(self.broker, name, config).await
    }

    /// One queue's settings.
    pub async fn info(self, name: &QueueName) -> Result<QueueInfo> {
        super::lifecycle::queue_info(self.broker, name).await
    }

    /// All queues, by name.
    pub async fn list(self) -> Result<Vec<QueueInfo>> {
        super::lifecycle::list_queues(self.broker).await
    }

    /// Counts of ready, in-flight, delayed and dead-lettered messages, and
    /// the age of the oldest ready one.
    pub async fn stats(self, name: &QueueName) -> Result<QueueStats> {
        super::lifecycle::queue_stats(self.broker, name).await
    }

    /// Every queue's counts as [`Self::stats`] gives them, by queue name,
    /// in one statement: what a metrics scrape or a dashboard of many
    /// queues should call rather than `stats` once per queue.
    pub async fn all_stats(self) -> Result<Vec<(QueueName, QueueStats)>> {
        super::lifecycle::all_queue_stats(self.broker).await
    }

    /// Deletes every message of the queue (ready, delayed, in flight and
    /// dead) and returns how many. Its dead letters in other queues stay.
    /// Receipts of deleted messages become stale.
    pub async fn purge(self, name: &QueueName) -> Result<u64> {
        super::lifecycle::purge_queue(self.broker, name).await
    }

    /// Deletes a queue with its messages, groups and archive. Refused while
    /// another queue uses it as its dead-letter queue.
    pub async fn delete(self, name: &QueueName) -> Result<()> {
        super::lifecycle::delete_queue(self.broker, name).await
    }

    /// Sends one message; returns its id, or the id of the message holding
    /// its deduplication key.
    ///
    /// Concurrent sends of this process to one queue share statements (see
    /// `coalesce`); each still returns only once its message is committed.
    pub async fn send(self, queue: &QueueName, message: &Message) -> Result<Sent> {
        let sent = super::send::send(self.broker, queue, message).await?;
        super::counters::sent(queue, usize::from(!sent.duplicate));
        Ok(sent)
    }

    /// Sends messages in one statement and one transaction: all of them or
    /// none. Returns, in input order, each message's id (for a duplicate,
    /// the id of the message holding its key).
    pub async fn send_batch(self, queue: &QueueName, messages: &[Message]) -> Result<Vec<Sent>> {
        let sent = super::send::send_batch(self.broker, queue, messages).await?;
        super::counters::sent(queue, sent.iter().filter(|s| !s.duplicate).count());
        Ok(sent)
    }

    /// Sends inside the caller's open transaction (the transactional
    /// outbox): the messages exist if and only if that transaction commits.
    /// Waiting receivers are woken by NOTIFY at the commit.
    ///
    /// Messages with a FIFO group or a deduplication key hold that group's
    /// or key's row lock until the caller commits; keep such transactions
    /// short. Use the default READ COMMITTED isolation.
    pub async fn send_in(
        self,
        client: &impl GenericClient,
        queue: &QueueName,
        messages: &[Message],
    ) -> Result<Vec<Sent>> {
        super::send::send_in(self.broker, client, queue, messages).await
    }

    /// Claims up to `max_messages` due messages, highest priority first,
    /// then oldest, each with a lease of the visibility timeout and a new
    /// receipt. With a `wait`, a receive that finds nothing waits for a send
    /// (woken by notification within milliseconds, or by a timer when a
    /// delay, backoff or lease comes due; it polls at least every 500 ms)
    /// and returns as soon as it claimed at least one message, or empty
    /// when the wait is over.
    ///
    /// Delivery is at least once: a message whose lease expires is
    /// delivered again, with `attempt` one higher.
    pub async fn receive(self, queue: &QueueName, options: &ReceiveOptions) -> Result<Vec<ReceivedMessage>> {
        let got = super::receive::receive(self.broker, queue, options).await?;
        super::counters::received(queue, got.len());
        Ok(got)
    }

    /// Acknowledges messages: they are deleted (or archived, if the queue
    /// keeps acknowledged messages). All or nothing: if any receipt is not
    /// current, nothing changes and the error names the refused ones.
    pub async fn ack(self, queue: &QueueName, receipts: &[Receipt]) -> Result<()> {
        super::settle::ack_receipts(self.broker, queue, receipts).await?;
        super::counters::acked(queue, receipts.len());
        Ok(())
    }

    /// Acknowledges inside the caller's open transaction: the messages are
    /// gone if and only if it commits. Doing the work's writes and the
    /// acknowledgement in one transaction is what makes processing
    /// effectively exactly once. The messages stay locked until the caller
    /// commits or rolls back. Use the default READ COMMITTED isolation.
    pub async fn ack_in(self, client: &impl GenericClient, queue: &QueueName, receipts: &[Receipt]) -> Result<()> {
        super::settle::ack_in(self.broker, client, queue, receipts).await
    }

    /// Takes up to `max` due messages inside the caller's open
    /// transaction, highest priority first, then oldest: each is deleted
    /// (or archived) and held by its row lock, so it is acknowledged if and
    /// only if the caller commits, and due again at once if it rolls back
    /// or its connection dies. No lease, no receipt and, for a rolled-back
    /// take, no attempt counted: use [`Queues::receive`] where retries with
    /// backoff and dead letters are wanted. Use the default READ COMMITTED
    /// isolation. The SQL function `take` does the same.
    pub async fn take_in(
        self,
        client: &impl GenericClient,
        queue: &QueueName,
        max: usize,
    ) -> Result<Vec<super::TakenMessage>> {
        let got = super::take::take_in(self.broker, client, queue, max).await?;
        super::counters::received(queue, got.len());
        super::counters::acked(queue, got.len());
        Ok(got)
    }

    /// Releases messages (a negative acknowledgement): their leases end and
    /// they come due again after `options.delay`, or after the queue's
    /// retry backoff when no delay is given. A message that has used all
    /// its attempts moves to the dead-letter queue instead. All or nothing,
    /// as [`crate::queues::Queues::ack`].
    pub async fn nack(self, queue: &QueueName, receipts: &[Receipt], options: &NackOptions) -> Result<()> {
        super::settle::nack_receipts(self.broker, queue, receipts, options).await?;
        super::counters::nacked(queue, receipts.len());
        Ok(())
    }

    /// Extends leases: each now ends `by` after its current end (or after
    /// now, if it already passed), but never more than
    /// [`MAX_VISIBILITY_TIMEOUT`](super::MAX_VISIBILITY_TIMEOUT) from now. Returns the new ends, in the
    /// order of `receipts`. All or nothing, as [`crate::queues::Queues::ack`].
    pub async fn extend_lease(self, queue: &QueueName, receipts: &[Receipt], by: Duration) -> Result<Vec<SystemTime>> {
        super::settle::extend_leases(self.broker, queue, receipts, by).await
    }

    /// Moves the dead letters held in `queue` back: each to the queue it
    /// was dead-lettered from (messages dead in `queue` itself come alive
    /// there), or all to `to`. They start over with zero attempts. Messages
    /// under a lease (someone is inspecting them) and those whose source
    /// queue no longer exists stay. Returns how many moved.
    pub async fn redrive(self, queue: &QueueName, to: Option<&QueueName>) -> Result<u64> {
        let moved = super::membership::redrive(self.broker, queue, to, None).await?;
        super::counters::redriven(queue, moved);
        Ok(moved)
    }

    /// [`Queues::redrive`] of at most `limit` messages, the oldest first:
    /// a step of a paced move.
    pub async fn redrive_some(self, queue: &QueueName, to: Option<&QueueName>, limit: u64) -> Result<u64> {
        let moved = super::membership::redrive(self.broker, queue, to, Some(limit)).await?;
        super::counters::redriven(queue, moved);
        Ok(moved)
    }

    /// One page of `queue`'s messages in `state`, in id order, starting
    /// after id `after` (0 for the first page): at most `limit` (1 to
    /// [`MAX_BROWSE_PAGE`](crate::queues::MAX_BROWSE_PAGE)), bodies cut to
    /// `preview` bytes. Reads only: nothing is claimed or locked.
    pub async fn browse(
        self,
        queue: &QueueName,
        state: super::BrowseState,
        after: i64,
        limit: usize,
        preview: usize,
    ) -> Result<Vec<super::BrowsedMessage>> {
        super::browse::browse(self.broker, queue, state, after, limit, preview).await
    }

    /// The SQS settings of a queue (defaults when it has none).
    pub async fn sqs_settings(self, queue: &QueueName) -> Result<SqsQueueSettings> {
        super::sqs_attrs::sqs_settings(self.broker, queue).await
    }

    /// Replaces the SQS settings of a queue.
    pub async fn set_sqs_settings(self, queue: &QueueName, settings: &SqsQueueSettings) -> Result<()> {
        super::sqs_attrs::set_sqs_settings(self.broker, queue, settings).await
    }

    /// Sends messages in one transaction, each with an optional
    /// deduplication id that holds for [`SQS_DEDUP_WINDOW`](super::SQS_DEDUP_WINDOW) after its send
    /// (whether or not the message was received or deleted since). A
    /// message whose id is held is not sent; its result names the message
    /// that holds the id, as a duplicate.
    pub async fn sqs_send(
        self,
        queue: &QueueName,
        messages: &[Message],
        dedup_ids: &[Option<String>],
    ) -> Result<Vec<Sent>> {
        let sent = super::sqs_attrs::sqs_send(self.broker, queue, messages, dedup_ids).await?;
        super::counters::sent(queue, sent.iter().filter(|s| !s.duplicate).count());
        Ok(sent)
    }

    /// Makes current leases end `timeout` from now: of the messages
    /// named by `receipts`, of the other messages in flight in their FIFO
    /// groups, or both ([`LeaseScope`](super::LeaseScope)). Returns, in the
    /// order of `receipts`, whether each named message was changed: false
    /// when its receipt is not the current lease or the message is no
    /// longer in flight.
    pub async fn sqs_set_visibility(
        self,
        queue: &QueueName,
        receipts: &[Receipt],
        timeout: Duration,
        scope: super::LeaseScope,
    ) -> Result<Vec<bool>> {
        super::sqs_attrs::sqs_set_visibility(self.broker, queue, receipts, timeout, scope).await
    }

    /// After a receive from a FIFO queue, leases up to `max` more messages
    /// of the received heads' groups, each group's in order, under the
    /// head's lease (as SQS returns several messages of one group).
    /// Returns them by head, then oldest first.
    pub async fn sqs_claim_followers(
        self,
        queue: &QueueName,
        heads: &[ReceivedMessage],
        max: usize,
    ) -> Result<Vec<ReceivedMessage>> {
        super::sqs_fifo::sqs_claim_followers(self.broker, queue, heads, max).await
    }

    /// Records now as the first receive of each message not yet recorded;
    /// returns every message's first receive time in milliseconds.
    pub async fn sqs_first_receives(self, message_ids: &[i64]) -> Result<HashMap<i64, i64>> {
        super::sqs_attrs::sqs_first_receives(self.broker, message_ids).await
    }

    /// [`Queues::sqs_first_receives`] that returns nothing and does not
    /// wait for the WAL flush (as claims do not): for receives that do not
    /// report the time. A record lost to a Postgres crash makes a later
    /// receive record a later time.
    pub async fn sqs_record_first_receives(self, message_ids: &[i64]) -> Result<()> {
        super::sqs_attrs::sqs_record_first_receives(self.broker, message_ids).await
    }

    /// Deletes messages of queues with SQS settings that are past their
    /// queue's retention period (except those in a current lease), forgets
    /// deduplication ids past their window and first receive times of
    /// messages that are gone. Returns how many rows it removed.
    pub async fn sqs_sweep(self) -> Result<u64> {
        super::sqs_attrs::sqs_sweep(self.broker).await
    }
}
