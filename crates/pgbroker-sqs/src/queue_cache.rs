//! A short-lived cache of each queue's settings (its pgbroker config and
//! SQS settings), so that sends, receives, deletes and visibility changes
//! do not read them from Postgres on every request.
//!
//! An entry lives for [`TTL`]. This broker forgets a queue's entry when it
//! creates, deletes, tags or changes the attributes of that queue, so its
//! own changes show at once. A change made through another broker on the
//! same database (or through the CLI or the library) reaches the message
//! actions of this one within [`TTL`]; pgbroker's own queue metadata cache
//! has the same kind of bound (two seconds). Actions that report or change
//! settings (GetQueueAttributes, SetQueueAttributes, CreateQueue,
//! ListQueueTags) always read them fresh.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgbroker::{Broker, QueueName};

use crate::error::SqsResult;
use crate::queue_attrs::Queue;

/// How long an entry is used.
pub const TTL: Duration = Duration::from_secs(1);

/// Most queues kept; past that, the cache is emptied and starts over
/// (a guard against a client naming endless queues, not a working limit).
const MAX_ENTRIES: usize = 10_000;

/// Settings of queues by name, each with the time it was read.
#[derive(Default)]
pub(crate) struct QueueCache {
    entries: Mutex<HashMap<String, (Instant, Arc<Queue>)>>,
    /// Counts [`QueueCache::forget`] calls: a read that started before one
    /// may have seen the settings before the change, and is not kept.
    forgets: AtomicU64,
}

impl QueueCache {
    /// The settings of `name`, from the cache when read less than [`TTL`]
    /// ago, from Postgres otherwise. An unknown queue is not cached.
    pub async fn get(&self, broker: &Broker, name: &QueueName) -> SqsResult<Arc<Queue>> {
        if let Some(q) = self.fresh(name) {
            return Ok(q);
        }
        let read_at = Instant::now();
        let forgets = self.forgets.load(Ordering::Acquire);
        let q = Arc::new(read(broker, name).await?.0);
        if let Ok(mut m) = self.entries.lock() {
            if self.forgets.load(Ordering::Acquire) != forgets {
                return Ok(q);
            }
            if m.len() >= MAX_ENTRIES {
                m.clear();
            }
            m.insert(name.as_str().to_string(), (read_at, q.clone()));
        }
        Ok(q)
    }

    fn fresh(&self, name: &QueueName) -> Option<Arc<Queue>> {
        let m = self.entries.lock().ok()?;
        let (at, q) = m.get(name.as_str())?;
        (at.elapsed() < TTL).then(|| q.clone())
    }

    /// Forgets `name`'s entry: this broker changed the queue. Call it once
    /// the change is committed.
    pub fn forget(&self, name: &QueueName) {
        if let Ok(mut m) = self.entries.lock() {
            self.forgets.fetch_add(1, Ordering::AcqRel);
            m.remove(name.as_str());
        }
    }
}

/// A queue's current settings, read from Postgres.
pub(crate) async fn read(broker: &Broker, name: &QueueName) -> SqsResult<(Queue, pgbroker::queues::QueueInfo)> {
    let info = broker.queues().info(name).await?;
    let sqs = broker.queues().sqs_settings(name).await?;
    Ok((Queue::from_info(&info, sqs), info))
}
