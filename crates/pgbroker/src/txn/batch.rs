//! Concurrent EndTxns of one process, decided together: one SQL
//! transaction and one commit for all of them, every partition they wrote
//! to locked once for all their markers.
//!
//! A decision holds its partitions' locks through its commit's WAL
//! flush, and every producer to those partitions waits for them: when
//! many producers share partitions, deciding k transactions at once takes
//! each lock once instead of k times. Requests queue; one of them at a
//! time takes the whole queue and decides it on a task of its own (a
//! client gone midway leaves no other request unanswered), while the next
//! ones queue behind it. Each transaction is checked and decided exactly
//! as [`super::coordinator::end`] does it alone; when the shared SQL
//! transaction fails, each request is retried alone, so that it gets its
//! own answer.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::SystemTime;

use futures_util::future::{join_all, try_join, try_join_all};
use tokio::sync::oneshot;

use super::coordinator::{after_decision, end, end_verdict, finish, row_of, Finish, TxnRow};
use super::decide::{lock_partitions, make_room, settle, write_markers, DecideStatements, Written};
use super::pipelined::Pipelined;
use crate::broker::Broker;
use crate::error::{Error, Result};

/// Most transactions decided in one SQL transaction; the rest wait for
/// the next.
const MAX_BATCH: usize = 16;

/// One EndTxn request.
#[derive(Debug, Clone)]
pub(crate) struct EndRequest {
    /// The transactional id.
    pub(crate) id: String,
    /// The producer id presented.
    pub(crate) producer_id: i64,
    /// The epoch presented.
    pub(crate) epoch: i16,
    /// Commit (or abort).
    pub(crate) commit: bool,
    /// The transaction's number, when the caller knows it.
    pub(crate) expected: Option<i64>,
}

/// A queued request and where its answer goes.
struct Waiting {
    req: EndRequest,
    reply: oneshot::Sender<Result<()>>,
}

/// The queue of a process's EndTxns.
#[derive(Default)]
pub(crate) struct Decisions {
    pending: Mutex<Vec<Waiting>>,
    turn: tokio::sync::Mutex<()>,
}

impl Decisions {
    fn take(&self) -> Vec<Waiting> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Decides `req` with whatever other EndTxns are waiting.
    pub(crate) async fn end(&self, broker: &Broker, req: EndRequest) -> Result<()> {
        let (reply, mut answer) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Waiting { req, reply });
        let turn = self.turn.lock().await;
        if let Ok(out) = answer.try_recv() {
            return out;
        }
        let batch = self.take();
        if !batch.is_empty() {
            let broker = broker.clone();
            // A panic there drops the answers, which the receivers see.
            let _ = tokio::spawn(async move { decide_all(&broker, batch).await }).await;
        }
        drop(turn);
        answer.await.unwrap_or_else(|_| {
            Err(Error::Busy(
                "the transaction's decision was interrupted; retry".to_string(),
            ))
        })
    }
}

/// Decides every request of `batch`, each transactional id once per SQL
/// transaction, at most [`MAX_BATCH`] at a time.
async fn decide_all(broker: &Broker, mut batch: Vec<Waiting>) {
    while !batch.is_empty() {
        let mut ids = HashSet::new();
        let (now, later): (Vec<Waiting>, Vec<Waiting>) = batch
            .into_iter()
            .partition(|w| ids.len() < MAX_BATCH && ids.insert(w.req.id.clone()));
        batch = later;
        if now.len() == 1 {
            for w in now {
                let r = &w.req;
                let out = end(broker, &r.id, r.producer_id, r.epoch, r.commit, r.expected).await;
                let _ = w.reply.send(out);
            }
            continue;
        }
        let reqs: Vec<&EndRequest> = now.iter().map(|w| &w.req).collect();
        match decide_together(broker, &reqs).await {
            Ok(outcomes) => {
                for (w, out) in now.into_iter().zip(outcomes) {
                    let _ = w.reply.send(out);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, decisions = now.len(), "deciding transactions together failed; deciding each alone");
                let outs = join_all(now.iter().map(|w| {
                    end(
                        broker,
                        &w.req.id,
                        w.req.producer_id,
                        w.req.epoch,
                        w.req.commit,
                        w.req.expected,
                    )
                }))
                .await;
                for (w, out) in now.into_iter().zip(outs) {
                    let _ = w.reply.send(out);
                }
            }
        }
    }
}

/// One transaction of a batch, locked and found ongoing.
struct Deciding<'a> {
    req: &'a EndRequest,
    row: TxnRow,
    finish: Finish,
}

/// Decides `reqs` (distinct transactional ids) in one SQL transaction:
/// their rows locked in id order, each checked as EndTxn alone checks
/// it, then the decisions' first parts sent together, the segments their
/// markers need, and the partitions locked in id order with every marker
/// and the COMMIT. Returns each request's answer; an error when the SQL
/// transaction failed (nothing was decided).
async fn decide_together(broker: &Broker, reqs: &[&EndRequest]) -> Result<Vec<Result<()>>> {
    for r in reqs {
        super::check_transactional_id(&r.id)?;
    }
    let mut order: Vec<usize> = (0..reqs.len()).collect();
    order.sort_by(|&a, &b| reqs[a].id.cmp(&reqs[b].id));
    let tx = Pipelined::new(broker.client().await?);
    let out = async {
        let client = tx.client();
        let st = DecideStatements::prepare(broker, client).await?;
        let lock = &client.prepare_cached(&broker.inner.sql.txn.lock_txn).await?;
        let locks = order
            .iter()
            .map(|&i| async move { client.query_opt(lock, &[&reqs[i].id]).await });
        let (_, found) = try_join(tx.begin(), async { Ok(try_join_all(locks).await?) }).await?;
        let mut outcomes: Vec<Result<()>> = reqs.iter().map(|_| Ok(())).collect();
        let mut deciding = Vec::new();
        for (&i, found) in order.iter().zip(found) {
            let r = reqs[i];
            match end_verdict(
                &r.id,
                found.as_ref().map(row_of),
                r.producer_id,
                r.epoch,
                r.commit,
                r.expected,
            ) {
                Ok(Some((row, finish))) => deciding.push(Deciding { req: r, row, finish }),
                Ok(None) => {}
                Err(e) => outcomes[i] = Err(e),
            }
        }
        let written: Vec<Vec<Written>> = try_join_all(
            deciding
                .iter()
                .map(|d| settle(&st, client, &d.req.id, d.req.commit, Some(d.finish))),
        )
        .await?;
        // Each partition once, with the number of markers it takes.
        let mut partitions: BTreeMap<i64, (&Written, i64)> = BTreeMap::new();
        for w in written.iter().flatten() {
            partitions.entry(w.pid).or_insert((w, 0)).1 += 1;
        }
        for (w, markers) in partitions.values() {
            make_room(broker, w, *markers, false).await?;
        }
        let pids: Vec<i64> = partitions.keys().copied().collect();
        if pids.is_empty() {
            tx.commit().await?;
            return Ok((outcomes, pids));
        }
        let now = crate::streams::produce::truncate_to_micros(SystemTime::now());
        // The locks in id order by one statement, the markers of each
        // transaction by one more, and the COMMIT, sent together.
        tx.commit_with(try_join(
            lock_partitions(&st, client, &pids),
            try_join_all(
                deciding
                    .iter()
                    .zip(&written)
                    .filter(|(_, w)| !w.is_empty())
                    .map(|(d, w)| write_markers(broker, &st, client, &d.row, d.req.commit, w, now)),
            ),
        ))
        .await?;
        Ok((outcomes, pids))
    }
    .await;
    let (outcomes, pids) = finish(tx, out).await?;
    after_decision(broker, &pids);
    Ok(outcomes)
}
