//! A short history of the broker's own readings, for the console's charts:
//! every few seconds a background task reads each topic's summed high
//! watermarks (one statement over the partition rows), each group's lag
//! and committed offsets, and each queue's counts, and keeps the last
//! [`HISTORY_SAMPLES`] readings in memory. Rates are differences of two
//! readings. At most [`MAX_SAMPLED`] groups and as many queues are read
//! per sample, so a broker with very many of them costs a bounded amount.
//!
//! Sampling runs only while the console is in use: it pauses when no API
//! request came for [`IDLE_AFTER`], and the next request wakes it. A page
//! that finds the newest reading stale takes one at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgbroker::queues::QueueStats;
use pgbroker::Broker;
use tokio::sync::Notify;

/// Readings kept (15 minutes at the default 5 s interval).
pub const HISTORY_SAMPLES: usize = 180;

/// No sampling after this long without an API request.
pub(crate) const IDLE_AFTER: Duration = Duration::from_secs(600);

/// Most groups, and most queues, read per sample.
pub(crate) const MAX_SAMPLED: usize = 200;

/// One topic at one reading.
#[derive(Debug, Clone)]
pub(crate) struct TopicReading {
    pub name: String,
    pub partitions: i32,
    pub high_watermarks: i64,
    pub records: i64,
}

/// One group at one reading.
#[derive(Debug, Clone)]
pub(crate) struct GroupReading {
    pub name: String,
    pub lag: i64,
    pub committed: i64,
    pub members: usize,
    pub state: String,
}

/// One queue at one reading.
#[derive(Debug, Clone)]
pub(crate) struct QueueReading {
    pub name: String,
    pub stats: QueueStats,
}

/// Everything read at one moment.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sample {
    pub at_ms: i64,
    pub topics: Vec<TopicReading>,
    pub groups: Vec<GroupReading>,
    pub queues: Vec<QueueReading>,
}

/// The readings kept, oldest first.
#[derive(Debug, Default)]
pub(crate) struct History {
    samples: Mutex<VecDeque<Arc<Sample>>>,
    /// When the console was last used, ms since the epoch.
    last_used_ms: AtomicI64,
    /// Wakes a paused sampler.
    wake: Notify,
}

impl History {
    /// The readings, oldest first.
    pub fn samples(&self) -> Vec<Arc<Sample>> {
        self.lock().iter().cloned().collect()
    }

    /// The newest reading, if any.
    pub fn latest(&self) -> Option<Arc<Sample>> {
        self.lock().back().cloned()
    }

    /// Marks the console as in use, waking the sampler if it paused.
    pub fn touch(&self) {
        let now = now_ms();
        let before = self.last_used_ms.swap(now, Ordering::Relaxed);
        if idle(before, now) {
            self.wake.notify_one();
        }
    }

    /// The newest reading if it is younger than `max_age`, else a new one
    /// taken now.
    pub async fn fresh(&self, broker: &Broker, max_age: Duration) -> Arc<Sample> {
        let max_age = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        match self.latest() {
            Some(s) if now_ms() - s.at_ms <= max_age => s,
            stale => match read(broker).await {
                Ok(s) => {
                    self.push(s);
                    self.latest().unwrap_or_default()
                }
                Err(e) => {
                    tracing::debug!(error = %e, "console sample failed");
                    stale.unwrap_or_default()
                }
            },
        }
    }

    fn push(&self, sample: Sample) {
        let mut s = self.lock();
        if s.len() >= HISTORY_SAMPLES {
            s.pop_front();
        }
        s.push_back(Arc::new(sample));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Sample>>> {
        self.samples.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn idle(last_used_ms: i64, now_ms: i64) -> bool {
    now_ms - last_used_ms > i64::try_from(IDLE_AFTER.as_millis()).unwrap_or(i64::MAX)
}

/// Samples `broker` into `history` every `every` while the console is in
/// use, forever.
pub(crate) async fn sample(broker: Broker, history: Arc<History>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if idle(history.last_used_ms.load(Ordering::Relaxed), now_ms()) {
            history.wake.notified().await;
        }
        match read(&broker).await {
            Ok(s) => history.push(s),
            Err(e) => tracing::debug!(error = %e, "console sample failed"),
        }
    }
}

/// One reading of everything.
pub(crate) async fn read(broker: &Broker) -> pgbroker::Result<Sample> {
    let at_ms = now_ms();
    let topics = broker
        .topics()
        .totals()
        .await?
        .into_iter()
        .map(|t| TopicReading {
            name: t.name.to_string(),
            partitions: t.partitions,
            high_watermarks: t.high_watermarks,
            records: t.records,
        })
        .collect();
    let mut groups = Vec::new();
    for g in broker.groups().list().await?.into_iter().take(MAX_SAMPLED) {
        // A group deleted between the listing and its description is
        // simply left out of this reading.
        if let Ok(d) = broker.groups().describe(&g).await {
            groups.push(GroupReading {
                name: g.to_string(),
                lag: d.partitions.iter().map(|p| p.lag).sum(),
                committed: d.partitions.iter().filter_map(|p| p.committed).sum(),
                members: d.members.len(),
                state: d.state,
            });
        }
    }
    let mut queues = Vec::new();
    for (name, stats) in broker.queues().all_stats().await?.into_iter().take(MAX_SAMPLED) {
        queues.push(QueueReading {
            name: name.to_string(),
            stats,
        });
    }
    Ok(Sample {
        at_ms,
        topics,
        groups,
        queues,
    })
}
