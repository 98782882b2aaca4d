//! Wake-ups for long-poll fetches.
//!
//! A producer in this process wakes this process's waiters directly after
//! its commit. For waiters in other processes, a broker about to wait
//! registers itself in the `waiters` table (renewed every few seconds), and
//! producers send a NOTIFY with the partition id only while some other
//! broker is registered for that partition: a NOTIFY takes a global lock at
//! commit, which would cost a third of the write throughput if paid on
//! every batch. One LISTEN connection per [`crate::Broker`] turns
//! notifications into wake-ups. All of this is only a hint: waiters also
//! re-read on a timer, so a lost notification costs latency, never records.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{mpsc, Notify};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::broker::{Broker, Inner};
use crate::error::Result;
use crate::migrate::quote_ident;
use crate::streams::fetch::Isolation;

/// Default of [`crate::BrokerConfig::poll_interval`]: how often a waiting
/// fetch or receive reads again without a notification.
pub(crate) const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a registration in `waiters` lasts; renewed at half of it.
const REGISTRATION_TTL: Duration = Duration::from_secs(10);

/// Waiters per partition id.
pub(crate) struct Wakeups {
    waiters: Mutex<HashMap<i64, Arc<Notify>>>,
    /// Read_uncommitted fetches waiting on a partition: they are woken by
    /// everything that wakes `waiters`, and also by a transactional
    /// append, which never moves the last stable offset and so never
    /// gives a read_committed fetch anything to read.
    uncommitted: Mutex<HashMap<i64, Arc<Notify>>>,
    listening: AtomicBool,
    listener_id: String,
    /// Partitions registered in `waiters`, and until when (local clock).
    registered: Mutex<HashMap<i64, Instant>>,
}

impl Default for Wakeups {
    fn default() -> Self {
        Wakeups {
            waiters: Mutex::default(),
            uncommitted: Mutex::default(),
            listening: AtomicBool::new(false),
            listener_id: format!("{:016x}", rand::random::<u64>()),
            registered: Mutex::default(),
        }
    }
}

impl Wakeups {
    /// This broker's id in the `waiters` table.
    pub(crate) fn listener_id(&self) -> &str {
        &self.listener_id
    }

    /// The wake-up handle for one partition.
    pub(crate) fn waiter(&self, partition_id: i64) -> Arc<Notify> {
        match self.waiters.lock() {
            Ok(mut m) => m.entry(partition_id).or_default().clone(),
            Err(_) => Arc::new(Notify::new()),
        }
    }

    /// The wake-up handle for a fetch of one partition: a read_committed
    /// one is not woken by transactional appends (see
    /// [`Wakeups::wake_uncommitted`]).
    pub(crate) fn fetch_waiter(&self, partition_id: i64, isolation: Isolation) -> Arc<Notify> {
        match isolation {
            Isolation::ReadCommitted => self.waiter(partition_id),
            Isolation::ReadUncommitted => match self.uncommitted.lock() {
                Ok(mut m) => m.entry(partition_id).or_default().clone(),
                Err(_) => Arc::new(Notify::new()),
            },
        }
    }

    /// Wakes every fetch of this process waiting on the partition.
    pub(crate) fn wake(&self, partition_id: i64) {
        if let Ok(m) = self.waiters.lock() {
            if let Some(n) = m.get(&partition_id) {
                n.notify_waiters();
            }
        }
        self.wake_uncommitted(partition_id);
    }

    /// Wakes the read_uncommitted fetches waiting on the partition only:
    /// after a transactional append, whose records a read_committed fetch
    /// cannot read before their transaction's decision, which wakes it.
    pub(crate) fn wake_uncommitted(&self, partition_id: i64) {
        if let Ok(m) = self.uncommitted.lock() {
            if let Some(n) = m.get(&partition_id) {
                n.notify_waiters();
            }
        }
    }

    fn wake_all(&self) {
        for map in [&self.waiters, &self.uncommitted] {
            if let Ok(m) = map.lock() {
                m.values().for_each(|n| n.notify_waiters());
            }
        }
    }
}

/// Starts the LISTEN task for `inner` unless it runs already. The task
/// holds only a weak reference and ends when the broker is dropped.
pub(crate) fn ensure_listener(inner: &Arc<Inner>) {
    if inner.wakeups.listening.swap(true, Ordering::AcqRel) {
        return;
    }
    let weak = Arc::downgrade(inner);
    let config = inner.pg_config.clone();
    let listen = format!("LISTEN {}", quote_ident(&inner.channel));
    tokio::spawn(listen_loop(weak, config, listen));
}

async fn listen_loop(weak: Weak<Inner>, config: tokio_postgres::Config, listen: String) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if weak.strong_count() == 0 {
            return;
        }
        match config.connect(NoTls).await {
            Ok((client, mut conn)) => {
                let (tx, mut rx) = mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
                    while let Some(Ok(msg)) = messages.next().await {
                        if let AsyncMessage::Notification(n) = msg {
                            if tx.send(n.payload().to_string()).is_err() {
                                break;
                            }
                        }
                    }
                });
                if let Err(e) = client.batch_execute(&listen).await {
                    tracing::warn!(error = %e, "LISTEN failed");
                } else {
                    backoff = Duration::from_millis(100);
                    // Anything committed while we were not listening.
                    if let Some(inner) = weak.upgrade() {
                        inner.wakeups.wake_all();
                    }
                    loop {
                        tokio::select! {
                            msg = rx.recv() => match msg {
                                Some(payload) => {
                                    let Some(inner) = weak.upgrade() else { return };
                                    if let Ok(pid) = payload.parse::<i64>() {
                                        inner.cache.mark_stale(pid);
                                        inner.wakeups.wake(pid);
                                    }
                                }
                                None => break,
                            },
                            _ = tokio::time::sleep(MAX_BACKOFF) => {
                                if weak.strong_count() == 0 {
                                    driver.abort();
                                    return;
                                }
                            }
                        }
                    }
                }
                driver.abort();
                tracing::warn!("notification connection lost; fetches fall back to polling");
            }
            Err(e) => tracing::warn!(error = %e, "cannot open notification connection"),
        }
        if let Some(inner) = weak.upgrade() {
            inner.wakeups.wake_all();
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Registers this broker as waiting on the partitions, unless a
/// registration is still valid for a while. Returns true when it wrote
/// one: the caller must then read again before sleeping, since a commit
/// that came before the registration sent no NOTIFY.
pub(crate) async fn register_waiter(broker: &Broker, partition_ids: &[i64]) -> Result<bool> {
    let wakeups = &broker.inner.wakeups;
    let now = Instant::now();
    let due: Vec<i64> = match wakeups.registered.lock() {
        Ok(m) => partition_ids
            .iter()
            .copied()
            .filter(|p| m.get(p).is_none_or(|until| *until < now + REGISTRATION_TTL / 2))
            .collect(),
        Err(_) => partition_ids.to_vec(),
    };
    if due.is_empty() {
        return Ok(false);
    }
    let ttl_ms = i64::try_from(REGISTRATION_TTL.as_millis()).unwrap_or(i64::MAX);
    let client = broker.client().await?;
    client
        .execute(
            &broker.inner.sql.broker.register_waiter,
            &[&due, &wakeups.listener_id, &ttl_ms],
        )
        .await?;
    if let Ok(mut m) = wakeups.registered.lock() {
        for p in due {
            m.insert(p, now + REGISTRATION_TTL);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    /// Whether `n` was notified since it was enabled.
    fn woken(n: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>) -> bool {
        let waker = futures_util::task::noop_waker();
        n.poll(&mut std::task::Context::from_waker(&waker)).is_ready()
    }

    #[test]
    fn transactional_appends_wake_only_uncommitted_reads() {
        let w = Wakeups::default();
        let (rc, ru) = (
            w.fetch_waiter(7, Isolation::ReadCommitted),
            w.fetch_waiter(7, Isolation::ReadUncommitted),
        );
        let (rc_n, ru_n) = (rc.notified(), ru.notified());
        tokio::pin!(rc_n, ru_n);
        rc_n.as_mut().enable();
        ru_n.as_mut().enable();
        w.wake_uncommitted(7);
        assert!(!woken(rc_n.as_mut()), "read_committed stays asleep");
        assert!(woken(ru_n.as_mut()), "read_uncommitted wakes");
        // Everything else wakes both.
        let (rc_n, ru_n) = (rc.notified(), ru.notified());
        tokio::pin!(rc_n, ru_n);
        rc_n.as_mut().enable();
        ru_n.as_mut().enable();
        w.wake(7);
        assert!(woken(rc_n.as_mut()) && woken(ru_n.as_mut()));
    }
}
