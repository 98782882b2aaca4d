//! Concurrent plain appends of one process to one partition, made
//! together: one produce statement, one hold of the partition's row lock
//! and one commit (one WAL flush) for all of them.
//!
//! An append holds its partition's row lock through its commit, so the
//! appends of one partition follow one another, each paying a WAL flush.
//! When the partition is free an append runs at once, as it would alone.
//! Appends that arrive while one runs queue per partition; when it ends,
//! the next in turn takes the whole queue and writes it as one batch, the
//! calls' records in the order they queued, each call's records
//! consecutive. Each call learns its own base offset; a failure of the
//! batch is every call's failure, and none of its records is written.
//! Checks of the records (size, keys) are made per call before it queues,
//! so a bad call is refused alone and changes nothing.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::produce::append_pooled;
use crate::broker::{Broker, TopicMeta};
use crate::error::{Error, Result};
use crate::together::Queues;
use crate::types::Record;

/// Most records written by one statement; the rest wait for the next.
const MAX_RECORDS: usize = 10_000;
/// Most bytes (keys and values) written by one statement.
const MAX_BYTES: usize = 8 << 20;

/// A queued call and where its base offset goes.
struct Waiting {
    records: Vec<Record>,
    reply: oneshot::Sender<Result<i64>>,
}

/// A process's queues of plain appends, by partition id.
#[derive(Default)]
pub(crate) struct PlainAppends {
    queues: Queues<Waiting>,
}

impl PlainAppends {
    /// Appends the records at `idx` to partition `pid`, with whatever other
    /// appends to it are waiting; returns the base offset of this call's
    /// records.
    pub(crate) async fn append(
        &self,
        broker: &Broker,
        meta: Arc<TopicMeta>,
        pid: i64,
        records: &[Record],
        idx: &[usize],
    ) -> Result<i64> {
        let queue = self.queues.get(pid);
        // The partition is free: append at once, without copying.
        if let Some(turn) = queue.try_turn() {
            if queue.is_empty() {
                let out = append_pooled(broker, &meta, pid, records, idx).await;
                drop(turn);
                return out;
            }
        }
        let (reply, answer) = oneshot::channel();
        let own: Vec<Record> = idx.iter().map(|&i| records[i].clone()).collect();
        let broker = broker.clone();
        queue
            .wait_or_run(Waiting { records: own, reply }, answer, move |batch| async move {
                append_all(&broker, &meta, pid, batch).await;
            })
            .await
    }
}

/// Writes every call of `batch`, in order, as few statements as the
/// bounds allow.
async fn append_all(broker: &Broker, meta: &TopicMeta, pid: i64, batch: Vec<Waiting>) {
    let mut rest = batch.into_iter().peekable();
    while rest.peek().is_some() {
        let (mut records, mut bytes) = (0usize, 0usize);
        let mut now = Vec::new();
        while let Some(w) = rest.peek() {
            let size: usize = w.records.iter().map(Record::size).sum();
            if !now.is_empty() && (records + w.records.len() > MAX_RECORDS || bytes + size > MAX_BYTES) {
                break;
            }
            records += w.records.len();
            bytes += size;
            now.extend(rest.next());
        }
        write(broker, meta, pid, now).await;
    }
}

/// One statement for `calls`; each gets its base offset or the error.
async fn write(broker: &Broker, meta: &TopicMeta, pid: i64, calls: Vec<Waiting>) {
    let lens: Vec<usize> = calls.iter().map(|w| w.records.len()).collect();
    let (records, replies): (Vec<Vec<Record>>, Vec<_>) = calls.into_iter().map(|w| (w.records, w.reply)).unzip();
    let all: Vec<Record> = records.into_iter().flatten().collect();
    let idx: Vec<usize> = (0..all.len()).collect();
    match append_pooled(broker, meta, pid, &all, &idx).await {
        Ok(base) => {
            let mut at = base;
            for (reply, len) in replies.into_iter().zip(lens) {
                let _ = reply.send(Ok(at));
                at += i64::try_from(len).unwrap_or(i64::MAX);
            }
        }
        Err(e) => {
            let e = Arc::new(e);
            for reply in replies {
                let _ = reply.send(Err(Error::Batch(e.clone())));
            }
        }
    }
}
