//! Batches of an idempotent producer that skip ahead of the partition's
//! last sequence number, answered as "not written, try again" for a
//! while before they are refused.
//!
//! A producer keeps several batches in flight. When the first fails
//! without being written (Postgres unreachable for a moment) and the
//! second arrives once Postgres answers again, the second skips ahead.
//! Kafka answers OUT_OF_ORDER_SEQUENCE_NUMBER, and librdkafka answers
//! that by bumping its epoch and numbering every batch it has not yet
//! seen acknowledged afresh, on every partition: a batch that was written
//! but whose answer was lost in the same outage is then sent again under
//! the new epoch, which no sequence check can recognise, and is written
//! twice. The first failed batch's retry is on its way; answering the
//! batch behind it NOT_ENOUGH_REPLICAS (retriable, nothing written) lets
//! the client send both again in order. A gap that is still there after
//! the grace period is a real one (records lost behind an acknowledged
//! batch) and is refused as Kafka refuses it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default of [`crate::KafkaConfig::sequence_gap_grace`].
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// Entries kept before old ones are swept.
const SWEEP_ABOVE: usize = 1024;

/// A producer's batch on a partition: producer id, topic, partition, the
/// batch's first sequence number.
type Key = (i64, String, i32, i32);

/// When each skipping batch was first answered.
#[derive(Debug, Default)]
pub(crate) struct SequenceGaps {
    first_seen: Mutex<HashMap<Key, Instant>>,
}

impl SequenceGaps {
    /// Whether the batch starting at `got` of `producer_id` on `partition`
    /// of `topic`, refused because the partition's last sequence number is
    /// `last`, should be answered as retriable: it skips ahead, and was
    /// first refused less than `grace` ago.
    pub(crate) fn in_grace(
        &self,
        producer_id: i64,
        (topic, partition): (&str, i32),
        last: i32,
        got: i32,
        grace: Duration,
    ) -> bool {
        if i64::from(got) <= i64::from(last) + 1 {
            return false; // behind the last batch, not a gap
        }
        let Ok(mut seen) = self.first_seen.lock() else {
            return false;
        };
        let now = Instant::now();
        if seen.len() > SWEEP_ABOVE {
            seen.retain(|_, at| now.duration_since(*at) < grace);
        }
        let key = (producer_id, topic.to_string(), partition, got);
        let at = *seen.entry(key.clone()).or_insert(now);
        if now.duration_since(at) < grace {
            return true;
        }
        seen.remove(&key);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_is_retriable_for_the_grace_then_refused() {
        let gaps = SequenceGaps::default();
        let grace = Duration::from_millis(50);
        assert!(gaps.in_grace(1, ("t", 7), 4, 9, grace));
        assert!(gaps.in_grace(1, ("t", 7), 4, 9, grace), "still within the grace");
        // Other producers, partitions and batches have their own clocks.
        std::thread::sleep(Duration::from_millis(30));
        assert!(gaps.in_grace(2, ("t", 7), 4, 9, grace));
        assert!(gaps.in_grace(1, ("t", 8), 4, 9, grace));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!gaps.in_grace(1, ("t", 7), 4, 9, grace), "past the grace: refused");
        assert!(gaps.in_grace(1, ("t", 7), 4, 9, grace), "a new gap starts a new grace");
        assert!(gaps.in_grace(2, ("t", 7), 4, 9, grace));
    }

    #[test]
    fn batches_behind_the_last_are_never_in_grace() {
        let gaps = SequenceGaps::default();
        let grace = Duration::from_secs(10);
        assert!(!gaps.in_grace(1, ("t", 1), 4, 5, grace), "the next batch is no gap");
        assert!(!gaps.in_grace(1, ("t", 1), 4, 2, grace));
        assert!(!gaps.in_grace(1, ("t", 1), i32::MAX, 0, grace));
        assert!(
            gaps.in_grace(1, ("t", 1), -1, 3, grace),
            "a new epoch that does not start at 0"
        );
        assert!(!gaps.in_grace(1, ("t", 1), -1, 0, grace));
    }
}
