//! Queues of calls made together, one per partition: a call queues its
//! work, and whoever holds the partition's turn takes everything queued
//! and does it at once while the next calls queue behind it. Used by the
//! plain and the transactional appends.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{oneshot, MutexGuard};

use crate::error::{Error, Result};

/// The calls waiting on one partition, and its turn.
pub(crate) struct Queue<W> {
    pending: Mutex<Vec<W>>,
    turn: tokio::sync::Mutex<()>,
}

impl<W> Queue<W> {
    /// Queues a call's work.
    fn push(&self, work: W) {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).push(work);
    }

    /// Everything queued, in the order it came.
    fn take(&self) -> Vec<W> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// True when nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).is_empty()
    }

    /// The turn, if nobody holds it or waits for it.
    pub(crate) fn try_turn(&self) -> Option<MutexGuard<'_, ()>> {
        self.turn.try_lock().ok()
    }

    /// Queues `work` and waits for its `answer`: from whoever holds the
    /// turn when it is taken, or, once this call has the turn, from `run`
    /// doing everything queued. `run` goes on a task of its own, so that a
    /// caller that goes away does not stop the others' work; a panic there
    /// drops the answers, which the receivers see.
    pub(crate) async fn wait_or_run<R, F, Fut>(
        &self,
        work: W,
        mut answer: oneshot::Receiver<Result<R>>,
        run: F,
    ) -> Result<R>
    where
        F: FnOnce(Vec<W>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.push(work);
        let turn = self.turn.lock().await;
        if let Ok(out) = answer.try_recv() {
            return out;
        }
        let batch = self.take();
        if !batch.is_empty() {
            let _ = tokio::spawn(run(batch)).await;
        }
        drop(turn);
        answer
            .await
            .unwrap_or_else(|_| Err(Error::Busy("the append was interrupted; retry".to_string())))
    }
}

/// A process's queues, by partition id.
pub(crate) struct Queues<W> {
    queues: Mutex<HashMap<i64, Arc<Queue<W>>>>,
}

impl<W> Default for Queues<W> {
    fn default() -> Self {
        Queues {
            queues: Mutex::new(HashMap::new()),
        }
    }
}

impl<W> Queues<W> {
    /// Partition `pid`'s queue.
    pub(crate) fn get(&self, pid: i64) -> Arc<Queue<W>> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        queues
            .entry(pid)
            .or_insert_with(|| {
                Arc::new(Queue {
                    pending: Mutex::new(Vec::new()),
                    turn: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }
}
