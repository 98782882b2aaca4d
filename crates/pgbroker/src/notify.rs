//! Wake-ups for long-poll fetches. Producers NOTIFY once per committed batch
//! with the partition id; one LISTEN connection per [`crate::Broker`] turns
//! that into an in-process wake-up of every fetch waiting on that
//! partition. A notification is only a hint: waiters also poll, so a lost
//! notification (a reconnect, a full queue) costs latency, never records.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, Notify};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::broker::Inner;
use crate::migrate::quote_ident;

/// How often a waiting fetch re-reads even without a notification.
pub(crate) const POLL_FALLBACK: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Waiters per partition id.
#[derive(Default)]
pub(crate) struct Wakeups {
    waiters: Mutex<HashMap<i64, Arc<Notify>>>,
    listening: AtomicBool,
}

impl Wakeups {
    /// The wake-up handle for one partition.
    pub(crate) fn waiter(&self, partition_id: i64) -> Arc<Notify> {
        match self.waiters.lock() {
            Ok(mut m) => m.entry(partition_id).or_default().clone(),
            Err(_) => Arc::new(Notify::new()),
        }
    }

    fn wake(&self, partition_id: i64) {
        if let Ok(m) = self.waiters.lock() {
            if let Some(n) = m.get(&partition_id) {
                n.notify_waiters();
            }
        }
    }

    fn wake_all(&self) {
        if let Ok(m) = self.waiters.lock() {
            m.values().for_each(|n| n.notify_waiters());
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
