//! Writing a transaction's records and its markers: appends that carry the
//! producer's id and epoch (and, for markers, the control flag), and the
//! transactional produce with its checks.

use std::time::SystemTime;

use tokio_postgres::GenericClient;

use super::{ProducerTag, TxnRefusal};
use crate::broker::Broker;
use crate::error::{Error, Invalid, Result};
use crate::headers;
use crate::streams::idempotent::{append_in, IdempotentAppend, ProducerBatch};
use crate::types::{Record, TopicName};

/// Appends the records at `idx` with `tag`, inside the caller's open
/// transaction: the partition's row lock first (which tells the offsets),
/// then any missing segment (on pgbroker's own connection), then the
/// insert. Returns the base offset.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn append_tagged(
    broker: &Broker,
    client: &impl GenericClient,
    now: SystemTime,
    segment_records: i64,
    pid: i64,
    records: &[Record],
    idx: &[usize],
    tag: ProducerTag,
) -> Result<i64> {
    let n = i64::try_from(idx.len()).unwrap_or(i64::MAX);
    let row = client.query_one(broker.inner.outbox_lock_sql.as_str(), &[&pid]).await?;
    let (next, segments_end): (i64, i64) = (row.get(0), row.get(1));
    if segments_end < next + n {
        crate::streams::segments::ensure_segments(broker, pid, next + n, segment_records).await?;
    }
    let mut ts = Vec::with_capacity(idx.len());
    let mut keys = Vec::with_capacity(idx.len());
    let mut values = Vec::with_capacity(idx.len());
    let mut hdrs = Vec::with_capacity(idx.len());
    for &i in idx {
        let r = &records[i];
        ts.push(Some(
            r.timestamp.map_or(now, crate::streams::produce::truncate_to_micros),
        ));
        keys.push(r.key.as_deref());
        values.push(r.value.as_deref());
        hdrs.push(headers::to_json(&r.headers));
    }
    let control = tag.control.then_some(true);
    let row = client
        .query_opt(
            broker.inner.sql.txn.append_tagged.as_str(),
            &[
                &pid,
                &n,
                &ts,
                &keys,
                &values,
                &hdrs,
                &broker.inner.channel,
                &broker.inner.wakeups.listener_id(),
                &tag.producer_id,
                &tag.epoch,
                &control,
            ],
        )
        .await?;
    row.map(|r| r.get(0))
        .ok_or_else(|| Error::UnknownTopic(format!("partition id {pid}")))
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
    let refuse = |refusal| Error::Transaction {
        transactional_id: transactional_id.to_string(),
        refusal,
    };
    let sql = &broker.inner.sql.txn;
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(&sql.share_txn, &[&batch.producer_id])
        .await?
        .ok_or_else(|| refuse(TxnRefusal::UnknownProducerId(batch.producer_id)))?;
    let (id, epoch, state): (String, i16, String) = (row.get(0), row.get(1), row.get(2));
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
    if tx.query_opt(&sql.has_partition, &[&id, &pid]).await?.is_none() {
        return Err(refuse(TxnRefusal::PartitionNotAdded));
    }
    let tag = ProducerTag {
        producer_id: batch.producer_id,
        epoch,
        control: false,
    };
    let now = crate::streams::produce::truncate_to_micros(SystemTime::now());
    let appended = append_in(broker, &tx, now, &meta, pid, records, batch, Some(tag)).await?;
    if !appended.duplicate {
        tx.execute(&sql.set_first_offset, &[&id, &pid, &appended.base_offset])
            .await?;
    }
    tx.commit().await?;
    if !appended.duplicate {
        // Undecided records never enter the cache; what it held may now
        // sit past the last stable offset.
        broker.inner.cache.forget(pid);
        broker.inner.wakeups.wake(pid);
    }
    Ok(appended)
}
