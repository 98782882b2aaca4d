//! Counters of the queue operations this process ran, per queue, through
//! the `metrics` facade: `pgbroker serve` renders them on `/metrics`;
//! without a recorder installed they cost nothing.
//!
//! They count calls of this process's library (the CLI, the SQS API,
//! applications); operations run through the SQL functions in other
//! sessions are not seen here, while the depths `/metrics` reads from
//! Postgres at scrape time include everything.

use crate::queues::QueueName;

const SENT: &str = "pgbroker_queue_sent_messages_total";
const RECEIVED: &str = "pgbroker_queue_received_messages_total";
const ACKED: &str = "pgbroker_queue_acked_messages_total";
const NACKED: &str = "pgbroker_queue_nacked_messages_total";
const REDRIVEN: &str = "pgbroker_queue_redriven_messages_total";
const DEAD_LETTERED: &str = "pgbroker_queue_dead_letters_total";

/// Describes the counters to the installed recorder (their `# HELP`
/// lines); call once a recorder is installed.
pub fn describe_metrics() {
    metrics::describe_counter!(
        SENT,
        "Messages sent to a queue by this process (duplicates not counted)"
    );
    metrics::describe_counter!(
        RECEIVED,
        "Messages received (claimed under a lease) from a queue by this process"
    );
    metrics::describe_counter!(ACKED, "Messages acknowledged in a queue by this process");
    metrics::describe_counter!(
        NACKED,
        "Messages released for another attempt (negative acknowledgements) by this process"
    );
    metrics::describe_counter!(
        REDRIVEN,
        "Dead letters moved out of a queue (the label) by a redrive of this process"
    );
    metrics::describe_counter!(
        DEAD_LETTERED,
        "Messages of a queue (the label) that ran out of attempts in this process, on a negative \
         acknowledgement or when a receive found their last lease expired, and moved to its \
         dead-letter queue or were marked dead in place"
    );
}

fn add(name: &'static str, queue: &QueueName, n: usize) {
    if n > 0 {
        metrics::counter!(name, "queue" => queue.as_str().to_string()).increment(u64::try_from(n).unwrap_or(0));
    }
}

pub(crate) fn sent(queue: &QueueName, n: usize) {
    add(SENT, queue, n);
}

pub(crate) fn received(queue: &QueueName, n: usize) {
    add(RECEIVED, queue, n);
}

pub(crate) fn acked(queue: &QueueName, n: usize) {
    add(ACKED, queue, n);
}

pub(crate) fn nacked(queue: &QueueName, n: usize) {
    add(NACKED, queue, n);
}

pub(crate) fn redriven(queue: &QueueName, n: u64) {
    add(REDRIVEN, queue, usize::try_from(n).unwrap_or(usize::MAX));
}

pub(crate) fn dead_lettered(queue: &QueueName, n: usize) {
    add(DEAD_LETTERED, queue, n);
}
