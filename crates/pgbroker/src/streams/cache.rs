//! An in-memory cache of each partition's most recent committed records.
//!
//! Consumers mostly read the tail of a log, and with several groups every
//! record is read several times. The cache serves those reads from memory:
//! it is filled by this process's own committed produce calls and by
//! fetches from Postgres, and holds, per partition, one contiguous run of
//! committed records. A read it cannot serve whole goes to Postgres.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::types::StoredRecord;

/// How long a tail check against Postgres stands, without a notification
/// saying otherwise: the same bound as a waiting fetch's polling fallback.
const TAIL_CHECK_VALID: Duration = Duration::from_millis(500);

/// Batches that completed ahead of an earlier, still missing one.
const MAX_PENDING_BATCHES: usize = 64;

#[derive(Default)]
struct PartitionCache {
    /// Offset of `records[0]`.
    start: i64,
    records: VecDeque<StoredRecord>,
    bytes: usize,
    /// Runs that start past the end, waiting for the gap to fill.
    pending: BTreeMap<i64, Vec<StoredRecord>>,
    /// The newest log start and high watermark seen.
    log_start: i64,
    high_watermark: i64,
    /// When Postgres was last asked about this partition's tail.
    checked_at: Option<Instant>,
    /// Another process has written since (a NOTIFY said so).
    stale: bool,
    /// The last stable offset read with the watermarks, when a
    /// transaction was open on the partition.
    open_txn_at: Option<i64>,
    /// When a read of Postgres that no decision of this process overtook
    /// last confirmed `open_txn_at`.
    stable_at: Option<Instant>,
}

impl PartitionCache {
    fn end(&self) -> i64 {
        self.start + i64::try_from(self.records.len()).unwrap_or(i64::MAX)
    }

    fn push_run(&mut self, run: Vec<StoredRecord>, max_bytes: usize) {
        self.high_watermark = self
            .high_watermark
            .max(self.end() + i64::try_from(run.len()).unwrap_or(0));
        for r in run {
            self.bytes += record_bytes(&r);
            self.records.push_back(r);
        }
        while self.bytes > max_bytes || (self.start < self.log_start && !self.records.is_empty()) {
            match self.records.pop_front() {
                Some(r) => {
                    self.bytes -= record_bytes(&r);
                    self.start += 1;
                }
                None => break,
            }
        }
    }
}

fn record_bytes(r: &StoredRecord) -> usize {
    let headers: usize = r
        .headers
        .iter()
        .map(|h| h.key.len() + h.value.as_ref().map_or(0, Vec::len))
        .sum();
    64 + r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len) + headers
}

/// The per-partition caches of one broker.
pub(crate) struct RecordCache {
    partitions: Mutex<HashMap<i64, Arc<Mutex<PartitionCache>>>>,
    max_bytes: usize,
    /// How many partitions were forgotten: a read of Postgres that began
    /// before a partition was forgotten (a decision of a transaction
    /// moves its last stable offset) must not confirm what it read.
    era: AtomicU64,
}

impl RecordCache {
    /// A cache keeping up to `max_bytes` per partition; 0 disables it.
    pub(crate) fn new(max_bytes: usize) -> Self {
        RecordCache {
            partitions: Mutex::new(HashMap::new()),
            max_bytes,
            era: AtomicU64::new(0),
        }
    }

    fn partition(&self, partition_id: i64) -> Option<Arc<Mutex<PartitionCache>>> {
        if self.max_bytes == 0 {
            return None;
        }
        let mut map = self.partitions.lock().ok()?;
        Some(map.entry(partition_id).or_default().clone())
    }

    /// Adds committed records starting at offset `base`. A run that does not
    /// continue the cached one waits (bounded) for the gap before it, or,
    /// when the cache is empty, starts it.
    pub(crate) fn insert(&self, partition_id: i64, base: i64, run: Vec<StoredRecord>) {
        if run.is_empty() {
            return;
        }
        let Some(part) = self.partition(partition_id) else {
            return;
        };
        let Ok(mut c) = part.lock() else {
            return;
        };
        if c.records.is_empty() && c.pending.is_empty() {
            c.start = base;
        }
        let end = c.end();
        let run_end = base + i64::try_from(run.len()).unwrap_or(i64::MAX);
        if run_end <= end {
            return; // already cached
        }
        if base > end {
            c.pending.insert(base, run);
            if c.pending.len() > MAX_PENDING_BATCHES {
                // The gap is not filling (written elsewhere): start over at
                // the earliest waiting run.
                if let Some((first, run)) = c.pending.pop_first() {
                    c.records.clear();
                    c.bytes = 0;
                    c.start = first;
                    c.push_run(run, self.max_bytes);
                }
            }
        } else {
            let skip = usize::try_from(end - base).unwrap_or(usize::MAX);
            c.push_run(run.into_iter().skip(skip).collect(), self.max_bytes);
        }
        // Splice in waiting runs that now continue the cache.
        while let Some((&first, _)) = c.pending.first_key_value() {
            let end = c.end();
            if first > end {
                break;
            }
            if let Some((first, run)) = c.pending.pop_first() {
                let skip = usize::try_from(end - first).unwrap_or(usize::MAX);
                c.push_run(run.into_iter().skip(skip).collect(), self.max_bytes);
            }
        }
    }

    /// Records the log start and high watermark read from Postgres, and
    /// drops cached records below the log start.
    pub(crate) fn note_watermarks(&self, partition_id: i64, log_start: i64, high_watermark: i64) {
        let Some(part) = self.partition(partition_id) else {
            return;
        };
        let Ok(mut c) = part.lock() else {
            return;
        };
        c.log_start = c.log_start.max(log_start);
        c.high_watermark = c.high_watermark.max(high_watermark);
        c.checked_at = Some(Instant::now());
        c.stale = false;
        c.push_run(Vec::new(), self.max_bytes);
    }

    /// The current era: read before a read of Postgres, and given back
    /// to [`RecordCache::note_stable`] after it.
    pub(crate) fn era(&self) -> u64 {
        self.era.load(Ordering::Acquire)
    }

    /// Records where the oldest open transaction of the partition starts
    /// (`None`: none is open), read from Postgres with the watermarks by a
    /// read that began in `era`: unless a partition was forgotten since,
    /// the read confirms it (see [`RecordCache::committed_tail`]).
    pub(crate) fn note_stable(&self, partition_id: i64, open_txn_at: Option<i64>, era: u64) {
        if let Some(part) = self.partition(partition_id) {
            if let Ok(mut c) = part.lock() {
                c.open_txn_at = open_txn_at;
                c.stable_at = (self.era() == era).then(Instant::now);
            }
        }
    }

    /// Notes a transactional append of this process to the partition,
    /// ending at offset `end`. It never moves the last stable offset (the
    /// transaction's first offset there is at least the old high
    /// watermark), but there is more to read uncommitted: the high
    /// watermark known moves, so that no read takes the old end for the
    /// tail.
    pub(crate) fn note_txn_append(&self, partition_id: i64, end: i64) {
        if let Some(part) = self.partition(partition_id) {
            if let Ok(mut c) = part.lock() {
                c.high_watermark = c.high_watermark.max(end);
            }
        }
    }

    /// The known log start and high watermark, when a read_committed read
    /// at `offset` would find nothing: `offset` is where the oldest open
    /// transaction starts, as Postgres confirmed recently, with no word
    /// since of a write from elsewhere. Decisions of this process forget
    /// the partition.
    pub(crate) fn committed_tail(&self, partition_id: i64, offset: i64) -> Option<(i64, i64)> {
        let part = self.partition(partition_id)?;
        let c = part.lock().ok()?;
        let current = c.open_txn_at == Some(offset)
            && offset >= c.log_start
            && !c.stale
            && c.stable_at.is_some_and(|t| t.elapsed() < TAIL_CHECK_VALID);
        current.then_some((c.log_start, c.high_watermark.max(offset)))
    }

    /// Where a read_committed read of the cache must stop: the last
    /// stable offset as last read (`i64::MAX` when no transaction was
    /// open). `None` when the cache cannot tell: a transaction was open
    /// and another process has written since.
    pub(crate) fn committed_bound(&self, partition_id: i64) -> Option<i64> {
        let part = self.partition(partition_id)?;
        let c = part.lock().ok()?;
        match c.open_txn_at {
            None => Some(i64::MAX),
            Some(_) if c.stale => None,
            Some(at) => Some(at),
        }
    }

    /// Drops cached records below a new log start (retention in this
    /// process).
    pub(crate) fn advance_log_start(&self, partition_id: i64, log_start: i64) {
        if let Some(part) = self.partition(partition_id) {
            if let Ok(mut c) = part.lock() {
                c.log_start = c.log_start.max(log_start);
                c.push_run(Vec::new(), self.max_bytes);
            }
        }
    }

    /// Notes that another process committed to the partition.
    pub(crate) fn mark_stale(&self, partition_id: i64) {
        if let Some(part) = self.partition(partition_id) {
            if let Ok(mut c) = part.lock() {
                c.stale = true;
            }
        }
    }

    /// The known log start, when `offset` is the cached end of the
    /// partition and Postgres confirmed that tail recently, with no word of
    /// writes from elsewhere since: a read there would find nothing new.
    /// This process's own writes reach the cache directly.
    pub(crate) fn current_tail(&self, partition_id: i64, offset: i64) -> Option<i64> {
        let part = self.partition(partition_id)?;
        let c = part.lock().ok()?;
        let current = !c.records.is_empty()
            && offset == c.end()
            && offset >= c.high_watermark
            && !c.stale
            && c.checked_at.is_some_and(|t| t.elapsed() < TAIL_CHECK_VALID);
        current.then_some(c.log_start)
    }

    /// Records from `offset` on, if the cache holds `offset`: at most
    /// `max_records`, and no more than `max_bytes` of keys and values after
    /// the first. Also returns the newest known log start and high
    /// watermark.
    pub(crate) fn read(
        &self,
        partition_id: i64,
        offset: i64,
        max_records: usize,
        max_bytes: usize,
    ) -> Option<(Vec<StoredRecord>, i64, i64)> {
        let part = self.partition(partition_id)?;
        let c = part.lock().ok()?;
        // Retention elsewhere moves the log start; a cache that has not
        // asked Postgres for a while answers nothing rather than serve
        // records that may be gone.
        let checked = c.checked_at.is_some_and(|t| t.elapsed() < TAIL_CHECK_VALID);
        if !checked || offset < c.start || offset >= c.end() || offset < c.log_start {
            return None;
        }
        let skip = usize::try_from(offset - c.start).ok()?;
        let mut out = Vec::new();
        let mut bytes = 0;
        for r in c.records.iter().skip(skip).take(max_records.max(1)) {
            let size = r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len);
            if !out.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            out.push(r.clone());
        }
        Some((out, c.log_start, c.high_watermark))
    }

    /// Forgets a partition, for instance when its topic is deleted.
    pub(crate) fn forget(&self, partition_id: i64) {
        self.era.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut map) = self.partitions.lock() {
            map.remove(&partition_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn recs(base: i64, n: i64) -> Vec<StoredRecord> {
        (base..base + n)
            .map(|o| StoredRecord {
                partition: 0,
                offset: o,
                timestamp: SystemTime::UNIX_EPOCH,
                key: None,
                value: Some(vec![0; 10]),
                headers: Vec::new(),
            })
            .collect()
    }

    fn offsets(v: Option<(Vec<StoredRecord>, i64, i64)>) -> Vec<i64> {
        v.map(|x| x.0).unwrap_or_default().iter().map(|r| r.offset).collect()
    }

    #[test]
    fn contiguous_runs_and_out_of_order_batches() {
        let c = RecordCache::new(1 << 20);
        c.note_watermarks(1, 0, 0);
        c.insert(1, 10, recs(10, 5));
        assert_eq!(offsets(c.read(1, 12, 100, 1 << 20)), vec![12, 13, 14]);
        assert!(c.read(1, 9, 10, 1 << 20).is_none());
        assert!(c.read(1, 15, 10, 1 << 20).is_none());
        c.insert(1, 20, recs(20, 5)); // ahead of a gap: not readable yet
        assert!(c.read(1, 20, 10, 1 << 20).is_none());
        c.insert(1, 15, recs(15, 5)); // fills the gap
        assert_eq!(offsets(c.read(1, 14, 100, 1 << 20)).len(), 11);
        c.insert(1, 12, recs(12, 20)); // overlapping run extends the end
        assert_eq!(offsets(c.read(1, 30, 100, 1 << 20)), vec![30, 31]);
    }

    #[test]
    fn bounded_by_bytes() {
        let c = RecordCache::new(74 * 10);
        c.note_watermarks(7, 0, 0);
        c.insert(7, 0, recs(0, 100));
        assert!(c.read(7, 0, 10, 1 << 20).is_none(), "oldest evicted");
        assert_eq!(offsets(c.read(7, 95, 10, 1 << 20)), vec![95, 96, 97, 98, 99]);
        assert_eq!(offsets(c.read(7, 95, 10, 15)), vec![95], "byte limit after the first");
        c.note_watermarks(7, 98, 100);
        assert!(c.read(7, 97, 10, 1 << 20).is_none(), "below the log start");
        assert_eq!(c.read(7, 98, 10, 1 << 20).map(|x| (x.1, x.2)), Some((98, 100)));
    }

    #[test]
    fn committed_tail_needs_a_confirmation_no_decision_overtook() {
        let c = RecordCache::new(1 << 20);
        let era = c.era();
        c.note_watermarks(5, 0, 40);
        c.note_stable(5, Some(30), era);
        assert_eq!(c.committed_tail(5, 30), Some((0, 40)));
        assert_eq!(c.committed_tail(5, 29), None, "below the last stable offset");
        c.note_txn_append(5, 60);
        assert_eq!(
            c.committed_tail(5, 30),
            Some((0, 60)),
            "an append moves no stable offset"
        );
        c.mark_stale(5);
        assert_eq!(c.committed_tail(5, 30), None, "written elsewhere");
        // A read that began before a decision forgot the partition.
        let era = c.era();
        c.forget(5);
        c.note_watermarks(5, 0, 60);
        c.note_stable(5, Some(30), era);
        assert_eq!(c.committed_tail(5, 30), None);
        c.note_stable(5, None, c.era());
        assert_eq!(c.committed_tail(5, 30), None, "no transaction open");
    }

    #[test]
    fn unchecked_cache_serves_nothing() {
        let c = RecordCache::new(1 << 20);
        c.insert(3, 0, recs(0, 5));
        assert!(c.read(3, 0, 10, 1 << 20).is_none());
        c.note_watermarks(3, 0, 5);
        assert!(c.read(3, 0, 10, 1 << 20).is_some());
        assert_eq!(c.current_tail(3, 5), Some(0));
        c.mark_stale(3);
        assert_eq!(c.current_tail(3, 5), None);
    }
}
