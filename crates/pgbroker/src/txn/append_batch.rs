//! Concurrent transactional appends of one process to one partition, made
//! together: one SQL transaction, one hold of the partition's lock and one
//! commit (one WAL flush) for all of them.
//!
//! An append holds its partition's lock through its commit's WAL flush,
//! and every other append to the partition waits for it: when several
//! transactional producers spread their transactions over the same
//! partitions, each partition's flushes follow one another. Requests
//! queue per partition; one of them at a time takes the queue and makes
//! its appends (of distinct producers) in one SQL transaction, each
//! checked exactly as [`super::append`] checks an append alone, while the
//! next ones queue behind it. When one of them is refused, or the shared
//! transaction fails, each is made alone instead, so that it gets its own
//! answer and a refusal still writes nothing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::future::{join_all, try_join, try_join_all};
use tokio::sync::oneshot;

use super::append::{after_append, append_alone, check_transaction};
use super::coordinator::finish;
use super::pipelined::Pipelined;
use crate::broker::{Broker, TopicMeta};
use crate::error::{Error, Result};
use crate::headers;
use crate::streams::idempotent::{batches_json, check_sequence, IdempotentAppend, ProducerBatch, Sequenced};
use crate::together::Queues;
use crate::types::Record;

/// Most appends made in one SQL transaction; the rest wait for the next.
const MAX_BATCH: usize = 16;

/// One transactional append.
pub(crate) struct AppendRequest {
    /// The producer's transactional id.
    pub(crate) id: String,
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

/// A process's queues of transactional appends, by partition id.
#[derive(Default)]
pub(crate) struct Appends {
    queues: Queues<Waiting>,
}

impl Appends {
    /// Makes `req` on partition `pid` with whatever other appends to it
    /// are waiting.
    pub(crate) async fn append(
        &self,
        broker: &Broker,
        meta: Arc<TopicMeta>,
        pid: i64,
        req: AppendRequest,
    ) -> Result<IdempotentAppend> {
        let queue = self.queues.get(pid);
        let (reply, answer) = oneshot::channel();
        let broker = broker.clone();
        queue
            .wait_or_run(Waiting { req, reply }, answer, move |batch| async move {
                append_all(&broker, &meta, pid, batch).await;
            })
            .await
    }
}

/// Makes every append of `batch`, each producer once per SQL transaction,
/// at most [`MAX_BATCH`] at a time.
async fn append_all(broker: &Broker, meta: &TopicMeta, pid: i64, mut batch: Vec<Waiting>) {
    while !batch.is_empty() {
        let mut producers = HashSet::new();
        let (now, later): (Vec<Waiting>, Vec<Waiting>) = batch
            .into_iter()
            .partition(|w| producers.len() < MAX_BATCH && producers.insert(w.req.batch.producer_id));
        batch = later;
        let together = if now.len() > 1 {
            let reqs: Vec<&AppendRequest> = now.iter().map(|w| &w.req).collect();
            match append_together(broker, meta, pid, &reqs).await {
                Ok(outcomes) => outcomes,
                Err(e) => {
                    tracing::warn!(partition_id = pid, error = %e, appends = now.len(), "appending together failed; appending each alone");
                    None
                }
            }
        } else {
            None
        };
        match together {
            Some(outcomes) => {
                for (w, out) in now.into_iter().zip(outcomes) {
                    let _ = w.reply.send(out);
                }
            }
            None => {
                let outs = join_all(now.iter().map(|w| {
                    let r = &w.req;
                    append_alone(broker, &r.id, meta, pid, &r.records, r.batch)
                }))
                .await;
                for (w, out) in now.into_iter().zip(outs) {
                    let _ = w.reply.send(out);
                }
            }
        }
    }
}

/// One append's columns, as `append_txn` binds them.
struct Columns<'a> {
    ts: Vec<Option<SystemTime>>,
    keys: Vec<Option<&'a [u8]>>,
    values: Vec<Option<&'a [u8]>>,
    headers: Vec<Option<serde_json::Value>>,
}

fn columns(records: &[Record], now: SystemTime) -> Columns<'_> {
    let mut c = Columns {
        ts: Vec::with_capacity(records.len()),
        keys: Vec::with_capacity(records.len()),
        values: Vec::with_capacity(records.len()),
        headers: Vec::with_capacity(records.len()),
    };
    for r in records {
        c.ts.push(Some(
            r.timestamp.map_or(now, crate::streams::produce::truncate_to_micros),
        ));
        c.keys.push(r.key.as_deref());
        c.values.push(r.value.as_deref());
        c.headers.push(headers::to_json(&r.headers));
    }
    c
}

/// Makes `reqs` (distinct producers) in one SQL transaction: BEGIN and
/// every append's checks in one round trip, then every append and the
/// COMMIT in another. Returns each request's answer; `None` when one of
/// them was refused (nothing was written; each is to be made alone); an
/// error when the SQL transaction failed (nothing was written).
async fn append_together(
    broker: &Broker,
    meta: &TopicMeta,
    pid: i64,
    reqs: &[&AppendRequest],
) -> Result<Option<Vec<Result<IdempotentAppend>>>> {
    // Rows locked in transactional id order, as a decision locks them.
    let mut order: Vec<usize> = (0..reqs.len()).collect();
    order.sort_by(|&a, &b| reqs[a].id.cmp(&reqs[b].id));
    let tx = Pipelined::new(broker.client().await?);
    let out = async {
        let client = tx.client();
        let (check, lock_state, append) = super::append::prepare(broker, client).await?;
        let (check, lock_state) = (&check, &lock_state);
        let checks = order.iter().map(|&i| async move {
            let producer = &reqs[i].batch.producer_id;
            try_join(
                client.query_opt(check, &[producer, &pid]),
                client.query_one(lock_state, &[producer, &pid]),
            )
            .await
        });
        let (_, found) = try_join(tx.begin(), async { Ok(try_join_all(checks).await?) }).await?;
        let mut outcomes: Vec<Option<Result<IdempotentAppend>>> = reqs.iter().map(|_| None).collect();
        let mut appending = Vec::new();
        let (mut next, mut segments_end) = (0, i64::MAX);
        for (&i, (found, state)) in order.iter().zip(found) {
            let r = reqs[i];
            let Ok((n, end)) = check_transaction(&r.id, r.batch, found.as_ref()) else {
                return Ok(None);
            };
            (next, segments_end) = (next.max(n), segments_end.min(end));
            match check_sequence(&state, r.batch, r.records.len()) {
                Err(_) => return Ok(None),
                Ok(Sequenced::Duplicate(base_offset)) => {
                    outcomes[i] = Some(Ok(IdempotentAppend {
                        base_offset,
                        duplicate: true,
                    }));
                }
                Ok(Sequenced::Append { last_seq, kept }) => appending.push((i, last_seq, batches_json(&kept))),
            }
        }
        if appending.is_empty() {
            return Ok(Some((outcomes, None)));
        }
        let total: i64 = appending
            .iter()
            .map(|&(i, _, _)| i64::try_from(reqs[i].records.len()).unwrap_or(i64::MAX))
            .sum();
        if segments_end < next + total {
            // On pgbroker's own connection, without the partition's lock.
            crate::streams::segments::ensure_segments(broker, pid, next + total, meta.segment_records).await?;
        }
        let now = crate::streams::produce::truncate_to_micros(SystemTime::now());
        let cols: Vec<(i64, Columns<'_>)> = appending
            .iter()
            .map(|&(i, _, _)| {
                let records = &reqs[i].records;
                (i64::try_from(records.len()).unwrap_or(i64::MAX), columns(records, now))
            })
            .collect();
        let append = &append;
        let statements = appending.iter().zip(&cols).map(|((i, last_seq, kept), (n, c))| {
            let r = reqs[*i];
            async move {
                client
                    .query_opt(
                        append,
                        &[
                            &pid,
                            n,
                            &c.ts,
                            &c.keys,
                            &c.values,
                            &c.headers,
                            &broker.inner.channel,
                            &broker.inner.wakeups.listener_id(),
                            &r.batch.producer_id,
                            &r.batch.epoch,
                            &r.batch.base_sequence,
                            last_seq,
                            kept,
                            &r.id,
                        ],
                    )
                    .await
            }
        });
        // The first statement takes the partition's lock; the COMMIT right
        // behind the last releases it.
        let rows = tx.commit_with(async { Ok(try_join_all(statements).await?) }).await?;
        // The end of the last batch, and of the partition's last segment.
        let mut ends = (0, 0);
        for (((i, _, _), (n, _)), row) in appending.iter().zip(&cols).zip(rows) {
            let row = row.ok_or_else(|| Error::UnknownTopic(format!("partition id {pid}")))?;
            let base_offset: i64 = row.get(0);
            ends = (ends.0.max(base_offset + n), ends.1.max(row.get::<_, i64>(1)));
            outcomes[*i] = Some(Ok(IdempotentAppend {
                base_offset,
                duplicate: false,
            }));
        }
        Ok(Some((outcomes, Some(ends))))
    }
    .await;
    let Some((outcomes, end)) = finish(tx, out).await? else {
        return Ok(None);
    };
    if let Some((last_end, segments_end)) = end {
        after_append(broker, meta, pid, last_end, segments_end);
    }
    Ok(Some(
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(Error::Busy("the append was not made; retry".to_string()))))
            .collect(),
    ))
}
