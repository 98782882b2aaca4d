//! A short history of the broker's own readings, for the console's charts:
//! every few seconds a background task reads each topic's summed high
//! watermarks (one statement over the partition rows), each group's lag
//! and committed offsets, and each queue's counts, and keeps the last
//! [`HISTORY_SAMPLES`] readings in memory. Rates are differences of two
//! readings. At most [`MAX_SAMPLED`] groups and as many queues are read
//! per sample, so a broker with very many of them costs a bounded amount.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgbroker::queues::QueueStats;
use pgbroker::Broker;

/// Readings kept (15 minutes at the default 5 s interval).
pub const HISTORY_SAMPLES: usize = 180;

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

/// Samples `broker` into `history` every `every`, forever.
pub(crate) async fn sample(broker: Broker, history: Arc<History>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
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
    for q in broker.queues().list().await?.into_iter().take(MAX_SAMPLED) {
        if let Ok(stats) = broker.queues().stats(&q.name).await {
            queues.push(QueueReading {
                name: q.name.to_string(),
                stats,
            });
        }
    }
    Ok(Sample {
        at_ms,
        topics,
        groups,
        queues,
    })
}
