//! Concurrent transactional appends of one process, made together in
//! rounds: one SQL transaction, one statement for every batch of the
//! round whatever its partition, and one commit (one WAL flush).
//!
//! An append holds its partitions' locks through its commit's WAL flush,
//! and every other append to them waits; and every statement costs
//! Postgres its planning and executor start whatever it writes. A
//! transactional producer's produce request carries one batch for each
//! partition of its transaction, and several producers share partitions:
//! a round takes all of them at once. Requests queue; one of them at a
//! time takes the queue and makes its round (each producer once per
//! partition) on a task of its own, while the next ones queue behind it.
//! Each batch is checked exactly as [`super::append`] checks a batch
//! alone. When one of them is refused, or the shared transaction fails,
//! each is made alone instead, so that it gets its own answer and a
//! refusal still writes nothing.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::join_all;
use tokio::sync::oneshot;

use super::append::append_alone;
use crate::broker::{Broker, TopicMeta};
use crate::error::{Error, Result};
use crate::streams::idempotent::{IdempotentAppend, ProducerBatch};
use crate::types::Record;

/// Most batches appended in one round; the rest wait for the next.
const MAX_ROUND: usize = 64;

/// One transactional append.
pub(crate) struct AppendRequest {
    /// The producer's transactional id.
    pub(crate) id: String,
    /// The partition's topic.
    pub(crate) meta: Arc<TopicMeta>,
    /// The partition, by id.
    pub(crate) pid: i64,
    /// The batch's records.
    pub(crate) records: Vec<Record>,
    /// The batch's producer fields.
    pub(crate) batch: ProducerBatch,
}

/// A queued request and where its answer goes.
struct Waiting {
    req: AppendRequest,
    reply: oneshot::Sender<Result<IdempotentAppend>>,
}

/// A process's queue of transactional appends.
#[derive(Default)]
pub(crate) struct Appends {
    pending: Mutex<Vec<Waiting>>,
    /// Held by the running round's task itself: a caller that goes away
    /// leaves it held until the round is over, so that rounds never
    /// overlap.
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Appends {
    /// Makes `req` with whatever other appends are waiting.
    pub(crate) async fn append(&self, broker: &Broker, req: AppendRequest) -> Result<IdempotentAppend> {
        let (reply, mut answer) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Waiting { req, reply });
        let turn = self.turn.clone().lock_owned().await;
        // The other partitions of the same produce request are queued by
        // the same poll of its handler: let them in before taking the queue.
        tokio::task::yield_now().await;
        if let Ok(out) = answer.try_recv() {
            return out;
        }
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        if batch.is_empty() {
            drop(turn);
        } else {
            let broker = broker.clone();
            // A panic there drops the answers, which the receivers see.
            let _ = tokio::spawn(async move {
                append_all(&broker, batch).await;
                drop(turn);
            })
            .await;
        }
        answer
            .await
            .unwrap_or_else(|_| Err(Error::Busy("the append was interrupted; retry".to_string())))
    }
}

/// Makes every append of `batch` in rounds, each producer once per
/// partition and round, at most [`MAX_ROUND`] at a time.
async fn append_all(broker: &Broker, mut batch: Vec<Waiting>) {
    while !batch.is_empty() {
        let mut pairs = HashSet::new();
        let (now, later): (Vec<Waiting>, Vec<Waiting>) = batch
            .into_iter()
            .partition(|w| pairs.len() < MAX_ROUND && pairs.insert((w.req.batch.producer_id, w.req.pid)));
        batch = later;
        let reqs: Vec<&AppendRequest> = now.iter().map(|w| &w.req).collect();
        let together = match super::append_round::append_round(broker, &reqs).await {
            Ok(outcomes) => outcomes,
            Err(e) => {
                tracing::warn!(error = %e, appends = now.len(), "appending together failed; appending each alone");
                None
            }
        };
        let outcomes = match together {
            Some(outcomes) => outcomes,
            None => {
                join_all(
                    reqs.iter()
                        .map(|r| append_alone(broker, &r.id, &r.meta, r.pid, &r.records, r.batch)),
                )
                .await
            }
        };
        for (w, out) in now.into_iter().zip(outcomes) {
            let _ = w.reply.send(out);
        }
    }
}
