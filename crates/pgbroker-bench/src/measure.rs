//! The machinery every system's driver shares: counters, latency
//! histograms, payloads carrying their send time, paced producers, and the
//! measured window that turns them into a [`Summary`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;

use crate::procfs::{self, BrokerProcess};
use crate::summary::{Figures, Summary};
use crate::window::{Probe, Window};
use crate::workload::Workload;

/// Counters shared by all tasks. Latencies go to per-task histograms,
/// merged at the end, so that recording them costs no lock.
#[derive(Default)]
pub struct Stats {
    /// Messages written so far.
    pub written: AtomicU64,
    /// Messages read (or received and acknowledged) so far.
    pub read: AtomicU64,
    /// Set once the warm-up is over.
    pub measuring: AtomicBool,
    /// Set to also record end-to-end latencies in `window` (for samples
    /// over time; costs a lock per record).
    pub windowed: AtomicBool,
    /// Latencies since the last [`Stats::take_window`].
    window: Mutex<Option<Histogram<u64>>>,
    /// Messages read by each consumer group, when the run counts them
    /// apart (see [`Run::with_groups`]); empty otherwise.
    pub by_group: Vec<AtomicU64>,
}

/// The counters of the run in progress, for samplers outside it.
static CURRENT: Mutex<Option<Weak<Stats>>> = Mutex::new(None);

impl Stats {
    /// Fresh counters, registered as the run in progress, with one
    /// counter per consumer group for `groups` of them.
    pub fn start(groups: usize) -> Arc<Stats> {
        let stats = Arc::new(Stats {
            by_group: (0..groups).map(|_| AtomicU64::new(0)).collect(),
            ..Stats::default()
        });
        if let Ok(mut current) = CURRENT.lock() {
            *current = Some(Arc::downgrade(&stats));
        }
        stats
    }

    /// The counters of the run in progress, if any.
    pub fn current() -> Option<Arc<Stats>> {
        CURRENT.lock().ok()?.as_ref()?.upgrade()
    }

    /// The latencies recorded since the last call, and a fresh window.
    pub fn take_window(&self) -> Option<Histogram<u64>> {
        self.window.lock().ok()?.replace(histogram().ok()?)
    }
}

/// Which latency a task measured; `measure` merges them by kind.
pub enum Measured {
    /// Consumer receive time minus producer send time, in microseconds.
    EndToEnd(Histogram<u64>),
    /// Time of one send call, in microseconds.
    Produce(Histogram<u64>),
}

/// An empty histogram of microseconds, 1 µs to 10 minutes, 3 digits.
pub fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).context("histogram")
}

/// Records `micros` in `h` once the warm-up is over.
pub fn record(stats: &Stats, h: &mut Histogram<u64>, micros: u64) {
    if stats.measuring.load(Ordering::Relaxed) {
        let _ = h.record(micros.clamp(1, 600_000_000));
        if stats.windowed.load(Ordering::Relaxed) {
            if let Some(w) = stats.window.lock().ok().as_mut().and_then(|w| w.as_mut()) {
                let _ = w.record(micros.clamp(1, 600_000_000));
            }
        }
    }
}

/// The record value every producer sends: `size` bytes of a fixed pattern.
pub fn payload(size: u32) -> Vec<u8> {
    (0..size)
        .map(|i| u8::try_from((i * 31 + 7) % 251).unwrap_or(0))
        .collect()
}

/// `base` with its first 8 bytes replaced by `sent` as microseconds since
/// the epoch (big-endian): how a message carries its send time.
pub fn stamped(base: &[u8], sent: SystemTime) -> Vec<u8> {
    let mut v = base.to_vec();
    if let Some(head) = v.get_mut(..8) {
        head.copy_from_slice(&epoch_micros(sent).to_be_bytes());
    }
    v
}

/// Microseconds since the epoch.
pub fn epoch_micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Microseconds from the send time carried in `body` to `now`.
pub fn latency_micros(body: &[u8], now: SystemTime) -> u64 {
    let sent = body
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes);
    epoch_micros(now).saturating_sub(sent)
}

/// Drives one producer: paces its batches for the target rate (spread over
/// the interval by producer number, so a rate means evenly spaced batches
/// rather than bursts), rotates over the partitions, times each send with
/// `send(partition, send_time)` and counts the records.
pub async fn produce_loop<F, Fut>(
    args: &impl Workload,
    id: u32,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    mut send: F,
) -> Result<Measured>
where
    F: FnMut(i32, SystemTime) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut latency = histogram()?;
    let pace = args.pace();
    let batch = u64::from(pace.batch);
    let interval = pace
        .rate
        .map(|r| Duration::from_secs_f64(batch as f64 * f64::from(pace.producers) / r.max(1) as f64));
    let mut next_send = Instant::now() + interval.map_or(Duration::ZERO, |iv| iv * id / pace.producers.max(1));
    let mut k = 0i32;
    while !stop.load(Ordering::Relaxed) {
        if let Some(iv) = interval {
            tokio::time::sleep_until(next_send.into()).await;
            next_send += iv;
        }
        let partition = (i32::try_from(id)? + k) % pace.partitions.max(1);
        k = (k + 1) % pace.partitions.max(1);
        let t0 = Instant::now();
        send(partition, SystemTime::now()).await?;
        record(&stats, &mut latency, u64::try_from(t0.elapsed().as_micros())?);
        stats.written.fetch_add(batch, Ordering::Relaxed);
    }
    Ok(Measured::Produce(latency))
}

/// The tasks of one run and the counters and stop flag they share.
pub struct Run {
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Result<Measured>>>,
}

impl Run {
    /// Fresh counters (registered as the run in progress), no tasks yet.
    pub fn start() -> Run {
        Run::with_groups(0)
    }

    /// The same, counting the reads of each of `groups` consumer groups
    /// apart too ([`Stats::by_group`]).
    pub fn with_groups(groups: usize) -> Run {
        Run {
            stats: Stats::start(groups),
            stop: Arc::new(AtomicBool::new(false)),
            tasks: Vec::new(),
        }
    }

    /// Spawns the task that `task` makes from the run's counters and stop flag.
    pub fn spawn<F, Fut>(&mut self, task: F)
    where
        F: FnOnce(Arc<Stats>, Arc<AtomicBool>) -> Fut,
        Fut: std::future::Future<Output = Result<Measured>> + Send + 'static,
    {
        self.tasks
            .push(tokio::spawn(task(self.stats.clone(), self.stop.clone())));
    }

    /// See [`measure`].
    pub async fn measure(self, args: &impl Workload, system: &str, broker: &BrokerProcess) -> Result<Summary> {
        Ok(measure(args, system, broker, self, None).await?.0)
    }

    /// [`Run::measure`], also reading what `probe` says at both ends of
    /// the window, with each group's read rate and lag at the end.
    pub async fn measure_probed(
        self,
        args: &impl Workload,
        system: &str,
        broker: &BrokerProcess,
        probe: &Probe,
    ) -> Result<(Summary, Window)> {
        let (summary, window) = measure(args, system, broker, self, Some(probe)).await?;
        Ok((summary, window.unwrap_or_default()))
    }
}

/// Lets the tasks run through the warm-up and the measured time, then stops
/// them and returns the summary of `system`: the workload's parameters,
/// rates, latency percentiles, and CPU seconds per million messages of
/// `broker`, of this process and of Postgres, with the broker's largest
/// resident memory seen and, for systems on Postgres, the WAL and
/// database bytes written per message; with a `probe`, also the
/// [`Window`] it reads.
async fn measure(
    args: &impl Workload,
    system: &str,
    broker: &BrokerProcess,
    run: Run,
    probe: Option<&Probe>,
) -> Result<(Summary, Option<Window>)> {
    let Run { stats, stop, tasks } = run;
    tokio::time::sleep(args.run().warmup).await;
    stats.measuring.store(true, Ordering::Relaxed);
    let (w0, r0) = (
        stats.written.load(Ordering::Relaxed),
        stats.read.load(Ordering::Relaxed),
    );
    let storage = match crate::systems::on_postgres(system) {
        true => crate::db::StorageProbe::start().await,
        false => None,
    };
    let groups_before: Vec<u64> = stats.by_group.iter().map(|g| g.load(Ordering::Relaxed)).collect();
    let probed_before = match probe {
        Some(p) => Some(p.read().await?),
        None => None,
    };
    let before = procfs::Cpu::now(broker);
    let mut rss_max = procfs::rss_bytes(broker);
    let started = Instant::now();
    while started.elapsed() < args.run().duration {
        let left = args.run().duration.saturating_sub(started.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        rss_max = rss_max.max(procfs::rss_bytes(broker));
        let secs = started.elapsed().as_secs_f64();
        eprint!(
            "\r{:>4.0}s  written {:>10.0}/s  read {:>10.0}/s   ",
            secs,
            (stats.written.load(Ordering::Relaxed) - w0) as f64 / secs,
            (stats.read.load(Ordering::Relaxed) - r0) as f64 / secs
        );
    }
    let secs = started.elapsed().as_secs_f64();
    let used = procfs::Cpu::now(broker).since(&before, broker);
    let written_total = stats.written.load(Ordering::Relaxed);
    let groups_after: Vec<u64> = stats.by_group.iter().map(|g| g.load(Ordering::Relaxed)).collect();
    let written = written_total - w0;
    let read = stats.read.load(Ordering::Relaxed) - r0;
    let window = match (probe, probed_before) {
        (Some(p), Some(b)) => {
            let mut w = p.between(&b, &p.read().await?);
            w.group_read_msgs_per_s = groups_after
                .iter()
                .zip(&groups_before)
                .map(|(a, b)| (a - b) as f64 / secs)
                .collect();
            w.group_behind_at_end = groups_after
                .iter()
                .map(|g| i64::try_from(written_total).unwrap_or(i64::MAX) - i64::try_from(*g).unwrap_or(i64::MAX))
                .collect();
            Some(w)
        }
        _ => None,
    };
    let storage = match &storage {
        Some(probe) => probe.since(written).await,
        None => None,
    };
    stop.store(true, Ordering::Relaxed);
    let (mut e2e, mut prod) = (histogram()?, histogram()?);
    for t in tasks {
        match t.await.context("benchmark task")?? {
            Measured::EndToEnd(h) => e2e.add(h).context("merging histograms")?,
            Measured::Produce(h) => prod.add(h).context("merging histograms")?,
        }
    }
    eprintln!();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let mib = f64::from(args.message_size()) / (1024.0 * 1024.0);
    let million = (written.max(1)) as f64 / 1e6;
    let figures = Figures {
        duration_s: secs,
        write_msgs_per_s: written as f64 / secs,
        read_msgs_per_s: read as f64 / secs,
        write_mib_per_s: written as f64 * mib / secs,
        read_mib_per_s: read as f64 * mib / secs,
        e2e_p50_ms: ms(&e2e, 0.5),
        e2e_p95_ms: ms(&e2e, 0.95),
        e2e_p99_ms: ms(&e2e, 0.99),
        e2e_p999_ms: ms(&e2e, 0.999),
        e2e_max_ms: e2e.max() as f64 / 1000.0,
        produce_p50_ms: ms(&prod, 0.5),
        produce_p99_ms: ms(&prod, 0.99),
        broker_cpu_s_per_million: used.broker / million,
        client_cpu_s_per_million: used.own / million,
        postgres_cpu_s_per_million: used.postgres / million,
        // In process, the resident size is the whole harness's, with what
        // earlier runs left in the allocator: not the broker's.
        broker_rss_max_mib: match broker {
            BrokerProcess::InProcess => None,
            _ => Some(rss_max as f64 / (1024.0 * 1024.0)),
        },
        wal_bytes_per_msg: storage.as_ref().map(|s| s.wal_bytes_per_msg),
        db_bytes_per_msg: storage.as_ref().map(|s| s.db_bytes_per_msg),
    };
    let summary = Summary {
        system: system.to_string(),
        shape: args.shape(),
        figures,
        scenario: None,
        round: None,
    };
    Ok((summary, window))
}

/// Awaits `work`, giving up (`None`) once `stop` is set, checked every
/// 100 ms: for receives that long-poll an empty queue when the run ends.
/// Only for work whose abandonment harms nothing but the run's own state.
pub async fn or_stop<T>(work: impl std::future::Future<Output = T>, stop: &AtomicBool) -> Option<T> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return Some(done),
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
            }
        }
    }
}
