//! An in-memory cache of each partition's most recent committed records.
//!
//! Consumers mostly read the tail of a log, and with several groups every
//! record is read several times. The cache serves those reads from memory:
//! it is filled by this process's own committed produce calls and by
//! fetches from Postgres, and holds, per partition, one contiguous run of
//! committed records. A read it cannot serve whole goes to Postgres.

use bytes::Bytes;
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
    /// What `pending` holds, counted as `bytes` is.
    pending_bytes: usize,
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

impl PartitionCache {
    /// Drops the cached run and starts a new one with `run` at `start`.
    fn restart(&mut self, start: i64, run: Vec<StoredRecord>, max_bytes: usize) {
        self.records.clear();
        self.bytes = 0;
        self.start = start;
        self.push_run(run, max_bytes);
    }

    fn pop_pending(&mut self) -> Option<(i64, Vec<StoredRecord>)> {
        let (first, run) = self.pending.pop_first()?;
        self.pending_bytes = self
            .pending_bytes
            .saturating_sub(run.iter().map(record_bytes).sum::<usize>());
        Some((first, run))
    }

    /// Splices in waiting runs that now continue the cache.
    fn splice_pending(&mut self, max_bytes: usize) {
        while let Some((&first, _)) = self.pending.first_key_value() {
            let end = self.end();
            if first > end {
                break;
            }
            if let Some((first, run)) = self.pop_pending() {
                let skip = usize::try_from(end - first).unwrap_or(usize::MAX);
                self.push_run(run.into_iter().skip(skip).collect(), max_bytes);
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
    64 + r.key.as_ref().map_or(0, Bytes::len) + r.value.as_ref().map_or(0, Bytes::len) + headers
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

    /// Runs `f` on the partition's cache under its lock (nothing when the
    /// cache is disabled).
    fn update(&self, partition_id: i64, f: impl FnOnce(&mut PartitionCache)) {
        if let Some(part) = self.partition(partition_id) {
            if let Ok(mut c) = part.lock() {
                f(&mut c);
            }
        }
    }

    /// Adds committed records starting at offset `base`, written by this
    /// process. A run that does not continue the cached one waits (bounded
    /// in batches and in bytes) for the gap before it, or, when the cache
    /// is empty, starts it.
    pub(crate) fn insert(&self, partition_id: i64, base: i64, run: Vec<StoredRecord>) {
        if run.is_empty() {
            return;
        }
        let max_bytes = self.max_bytes;
        self.update(partition_id, |c| {
            if c.records.is_empty() && c.pending.is_empty() {
                c.start = base;
            }
            let end = c.end();
            let run_end = base + i64::try_from(run.len()).unwrap_or(i64::MAX);
            if run_end <= end {
                return; // already cached
            }
            if base > end {
                c.pending_bytes += run.iter().map(record_bytes).sum::<usize>();
                if let Some(replaced) = c.pending.insert(base, run) {
                    c.pending_bytes = c
                        .pending_bytes
                        .saturating_sub(replaced.iter().map(record_bytes).sum::<usize>());
                }
                while c.pending.len() > MAX_PENDING_BATCHES || c.pending_bytes > max_bytes {
                    // The gap is not filling (written elsewhere): start over
                    // at the earliest waiting run.
                    let Some((first, run)) = c.pop_pending() else {
                        break;
                    };
                    c.restart(first, run, max_bytes);
                }
            } else {
                let skip = usize::try_from(end - base).unwrap_or(usize::MAX);
                c.push_run(run.into_iter().skip(skip).collect(), max_bytes);
            }
            c.splice_pending(max_bytes);
        });
    }

    /// Adds records read from Postgres starting at offset `base`, copying
    /// only what the cache keeps: the part that continues the cached run,
    /// or the whole run when the cache is empty or the run reaches the
    /// high watermark (a read at the tail moves the cache there). A run
    /// elsewhere is left out: groups reading a backlog at scattered offsets
    /// would otherwise have every record they read copied in and dropped.
    pub(crate) fn insert_read(&self, partition_id: i64, base: i64, run: &[StoredRecord]) {
        if run.is_empty() {
            return;
        }
        let max_bytes = self.max_bytes;
        self.update(partition_id, |c| {
            let end = c.end();
            let run_end = base + i64::try_from(run.len()).unwrap_or(i64::MAX);
            let empty = c.records.is_empty() && c.pending.is_empty();
            if empty || (base > end && run_end >= c.high_watermark) {
                c.restart(base, run.to_vec(), max_bytes);
            } else if base <= end && run_end > end {
                let skip = usize::try_from(end - base).unwrap_or(usize::MAX);
                c.push_run(run[skip..].to_vec(), max_bytes);
            } else {
                return;
            }
            c.splice_pending(max_bytes);
        });
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
            let size = r.key.as_ref().map_or(0, Bytes::len) + r.value.as_ref().map_or(0, Bytes::len);
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
                value: Some(vec![0; 10].into()),
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
    fn reads_share_the_cached_bytes() {
        let c = RecordCache::new(1 << 20);
        c.note_watermarks(3, 0, 0);
        let run = recs(0, 4);
        let at: Vec<*const u8> = run.iter().map(|r| r.value.as_ref().expect("value").as_ptr()).collect();
        c.insert(3, 0, run);
        let (got, _, _) = c.read(3, 1, 10, 1 << 20).expect("cached");
        let read: Vec<*const u8> = got.iter().map(|r| r.value.as_ref().expect("value").as_ptr()).collect();
        assert_eq!(read, at[1..], "a read hands out the cached buffers, not copies");
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
    fn reads_are_kept_where_they_continue_the_run_or_reach_the_tail() {
        let c = RecordCache::new(1 << 20);
        c.note_watermarks(2, 0, 1000);
        c.insert_read(2, 100, &recs(100, 10)); // an empty cache starts here
        assert_eq!(offsets(c.read(2, 105, 100, 1 << 20)), (105..110).collect::<Vec<_>>());
        c.insert_read(2, 105, &recs(105, 10)); // continues it
        assert_eq!(offsets(c.read(2, 110, 100, 1 << 20)), (110..115).collect::<Vec<_>>());
        c.insert_read(2, 500, &recs(500, 10)); // a backlog read elsewhere: left out
        assert!(c.read(2, 500, 10, 1 << 20).is_none());
        assert_eq!(offsets(c.read(2, 100, 1, 1 << 20)), vec![100], "the run stays");
        c.insert(2, 120, recs(120, 5)); // a write of this process ahead of a gap waits
        c.insert_read(2, 995, &recs(995, 5)); // a read at the tail moves the cache there
        assert_eq!(offsets(c.read(2, 995, 100, 1 << 20)), vec![995, 996, 997, 998, 999]);
        assert!(c.read(2, 110, 10, 1 << 20).is_none());
    }

    #[test]
    fn waiting_runs_are_bounded_by_bytes() {
        let c = RecordCache::new(74 * 10);
        c.note_watermarks(4, 0, 0);
        c.insert(4, 0, recs(0, 1));
        c.insert(4, 10, recs(10, 5)); // 370 bytes wait
        c.insert(4, 10, recs(10, 5)); // the same run again: still 370
        c.insert(4, 20, recs(20, 5)); // 740 bytes wait
        assert!(c.read(4, 10, 10, 1 << 20).is_none());
        c.insert(4, 30, recs(30, 5)); // more than the cache holds: start over
        assert!(c.read(4, 0, 10, 1 << 20).is_none());
        assert_eq!(offsets(c.read(4, 10, 100, 1 << 20)), (10..15).collect::<Vec<_>>());
        c.insert(4, 15, recs(15, 5)); // the gap fills: the waiting run follows
        assert_eq!(offsets(c.read(4, 15, 100, 1 << 20)), (15..25).collect::<Vec<_>>());
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
