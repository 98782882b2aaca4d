//! The transactional produce: a batch of a transactional producer checked
//! and appended to one partition.
//!
//! The checks (the producer's transactional id, epoch and state, the
//! partition being part of the transaction, the sequence) run before the
//! partition's lock is taken, under the share lock of the transactional
//! id's row and the lock of the producer's own state on the partition;
//! the append itself is one statement, sent with the COMMIT (see
//! `pipelined`), so the partition's lock is held for that statement and
//! the commit only, as a plain produce holds it.

use std::time::SystemTime;

use tokio_postgres::Statement;

use super::pipelined::Pipelined;
use super::TxnRefusal;
use crate::broker::{Broker, TopicMeta};
use crate::error::{Error, Invalid, Result};
use crate::headers;
use crate::streams::idempotent::{batches_json, check_sequence, IdempotentAppend, ProducerBatch, Sequenced};
use crate::types::{Record, TopicName};

/// The statements of a transactional append, prepared on `client`: the
/// check (which also creates the producer's state on the partition if
/// missing), the producer state's lock, and the append.
pub(super) async fn prepare(
    broker: &Broker,
    client: &deadpool_postgres::ClientWrapper,
) -> Result<(Statement, Statement, Statement)> {
    let (sql, streams) = (&broker.inner.sql.txn, &broker.inner.sql.streams);
    Ok(futures_util::future::try_join3(
        client.prepare_cached(&sql.check_append),
        client.prepare_cached(&streams.lock_producer_state),
        client.prepare_cached(&sql.append_txn),
    )
    .await?)
}

/// Appends one batch of a transactional producer to a partition: the
/// producer must hold `transactional_id` at this epoch, its transaction be
/// ongoing and the partition added to it (refused otherwise, with nothing
/// written); then the idempotent sequence check and the append, and the
/// partition's first offset in the transaction noted, in one transaction.
pub(crate) async fn produce_transactional(
    broker: &Broker,
    transactional_id: &str,
    topic: &TopicName,
    partition: i32,
    records: &[Record],
    batch: ProducerBatch,
) -> Result<IdempotentAppend> {
    let (meta, pid) = broker.partition_id(topic, partition).await?;
    crate::streams::produce::check_records(&meta, topic, records)?;
    if records.is_empty() {
        return Err(Error::invalid(
            Invalid::RecordBatch,
            "a batch needs at least one record",
        ));
    }
    let req = super::append_batch::AppendRequest {
        id: transactional_id.to_string(),
        meta,
        pid,
        records: records.to_vec(),
        batch,
    };
    broker.inner.appends.append(broker, req).await
}

/// [`produce_transactional`] of one batch in a transaction of its own,
/// again when its insert found no segment.
pub(super) async fn append_alone(
    broker: &Broker,
    transactional_id: &str,
    meta: &TopicMeta,
    pid: i64,
    records: &[Record],
    batch: ProducerBatch,
) -> Result<IdempotentAppend> {
    let mut attempt = 1;
    loop {
        match append_once(broker, transactional_id, meta, pid, records, batch, attempt > 1).await {
            Err(e) if crate::streams::produce::no_segment(&e) && attempt < crate::streams::produce::SEGMENT_RETRIES => {
                tracing::warn!(
                    partition_id = pid,
                    attempt,
                    "no segment for a transactional produce; retrying"
                );
                attempt += 1;
            }
            other => return other.map_err(|e| crate::streams::produce::still_no_segment(e, Some(pid))),
        }
    }
}

/// One attempt of [`produce_transactional`]. `make_room`: create the
/// segments the batch needs before taking the partition's lock even when
/// the last look said there was room (a retry after an insert found none).
async fn append_once(
    broker: &Broker,
    transactional_id: &str,
    meta: &TopicMeta,
    pid: i64,
    records: &[Record],
    batch: ProducerBatch,
    make_room: bool,
) -> Result<IdempotentAppend> {
    let tx = Pipelined::new(broker.client().await?);
    let out = append_in(&tx, broker, transactional_id, meta, pid, records, batch, make_room).await;
    // A refusal or a duplicate leaves the transaction open; an append
    // committed (or failed with) it.
    tx.rollback().await?;
    let (append, segments_end) = out?;
    drop(tx);
    if append.duplicate {
        return Ok(append);
    }
    let n = i64::try_from(records.len()).unwrap_or(i64::MAX);
    after_append(broker, meta, pid, append.base_offset + n, segments_end);
    Ok(append)
}

/// What follows committed appends to partition `pid` ending at offset
/// `end`, its last segment ending at `segments_end`.
pub(super) fn after_append(broker: &Broker, meta: &TopicMeta, pid: i64, end: i64, segments_end: i64) {
    // Undecided records never enter the cache, and the last stable offset
    // stays where it was; only the high watermark moves.
    broker.inner.cache.note_txn_append(pid, end);
    // A transactional append never moves the last stable offset (the
    // transaction's first offset on the partition is at least the old
    // high watermark): only read_uncommitted fetches have new records.
    broker.inner.wakeups.wake_uncommitted(pid);
    // As after a plain produce: the batch is committed, and room ahead is
    // made in the background.
    if segments_end - end <= meta.segment_records / 2 {
        crate::streams::segments::make_room_ahead(broker, pid, meta.segment_records);
    }
}

/// The checks and the append in `tx`: BEGIN and the checks in one round
/// trip, the append and the COMMIT in another. Returns the append and the
/// end of the partition's last segment.
#[allow(clippy::too_many_arguments)]
async fn append_in(
    tx: &Pipelined,
    broker: &Broker,
    transactional_id: &str,
    meta: &TopicMeta,
    pid: i64,
    records: &[Record],
    batch: ProducerBatch,
    make_room: bool,
) -> Result<(IdempotentAppend, i64)> {
    let n = i64::try_from(records.len()).unwrap_or(i64::MAX);
    let client = tx.client();
    let (check, lock_state, append) = prepare(broker, client).await?;
    // Sent together, run in this order, answered in one round trip. When
    // a check fails, the producer state row is rolled back with the rest.
    let (_, (found, state)) = futures_util::future::try_join(tx.begin(), async {
        Ok(futures_util::future::try_join(
            client.query_opt(&check, &[&batch.producer_id, &pid]),
            client.query_one(&lock_state, &[&batch.producer_id, &pid]),
        )
        .await?)
    })
    .await?;
    let (next, segments_end) = check_transaction(transactional_id, batch, found.as_ref())?;
    let (last_seq, kept) = match check_sequence(&state, batch, records.len())? {
        Sequenced::Duplicate(base_offset) => {
            let dup = IdempotentAppend {
                base_offset,
                duplicate: true,
            };
            return Ok((dup, 0));
        }
        Sequenced::Append { last_seq, kept } => (last_seq, kept),
    };
    // On pgbroker's own connection, without the partition's lock.
    if make_room {
        crate::streams::segments::ensure_segments_after_miss(broker, pid, next + n, meta.segment_records).await?;
    } else if segments_end < next + n {
        crate::streams::segments::ensure_segments(broker, pid, next + n, meta.segment_records).await?;
    }
    let now = crate::streams::produce::truncate_to_micros(SystemTime::now());
    let mut ts = Vec::with_capacity(records.len());
    let mut keys = Vec::with_capacity(records.len());
    let mut values = Vec::with_capacity(records.len());
    let mut hdrs = Vec::with_capacity(records.len());
    for r in records {
        ts.push(Some(
            r.timestamp.map_or(now, crate::streams::produce::truncate_to_micros),
        ));
        keys.push(r.key.as_deref());
        values.push(r.value.as_deref());
        hdrs.push(headers::to_json(&r.headers));
    }
    let kept = batches_json(&kept);
    // The only statement holding the partition's lock, with the COMMIT
    // right behind it.
    let row = tx
        .commit_with(async {
            Ok(client
                .query_opt(
                    &append,
                    &[
                        &pid,
                        &n,
                        &ts,
                        &keys,
                        &values,
                        &hdrs,
                        &broker.inner.channel,
                        &broker.inner.wakeups.listener_id(),
                        &batch.producer_id,
                        &batch.epoch,
                        &batch.base_sequence,
                        &last_seq,
                        &kept,
                        &transactional_id,
                    ],
                )
                .await?)
        })
        .await?
        .ok_or_else(|| Error::UnknownTopic(format!("partition id {pid}")))?;
    let (base_offset, segments_end): (i64, i64) = (row.get(0), row.get(1));
    let append = IdempotentAppend {
        base_offset,
        duplicate: false,
    };
    Ok((append, segments_end))
}

/// The coordinator's checks of a transactional append, on
/// `check_append`'s row; returns the partition's next offset and the end
/// of its last segment, as read without a lock.
pub(super) fn check_transaction(
    transactional_id: &str,
    batch: ProducerBatch,
    found: Option<&tokio_postgres::Row>,
) -> Result<(i64, i64)> {
    let refuse = |refusal| Error::Transaction {
        transactional_id: transactional_id.to_string(),
        refusal,
    };
    let row = found.ok_or_else(|| refuse(TxnRefusal::UnknownProducerId(batch.producer_id)))?;
    let (id, epoch, state, added): (&str, i16, &str, bool) = (row.get(0), row.get(1), row.get(2), row.get(3));
    if id != transactional_id {
        return Err(refuse(TxnRefusal::UnknownProducerId(batch.producer_id)));
    }
    if batch.epoch < epoch {
        return Err(refuse(TxnRefusal::Fenced {
            presented: batch.epoch,
            current: epoch,
        }));
    }
    if batch.epoch > epoch {
        return Err(refuse(TxnRefusal::EpochAhead {
            presented: batch.epoch,
            current: epoch,
        }));
    }
    if state != "Ongoing" {
        return Err(refuse(TxnRefusal::InvalidState(
            "no transaction is ongoing".to_string(),
        )));
    }
    if !added {
        return Err(refuse(TxnRefusal::PartitionNotAdded));
    }
    Ok((row.get(4), row.get(5)))
}
