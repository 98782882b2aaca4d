//! Idempotent produce: per producer id and partition, batches carry
//! consecutive sequence numbers. A batch sent again (a retry after a lost
//! answer) is answered with the offset it got the first time; a batch that
//! skips ahead is refused. The check and the append share one transaction.

use std::time::SystemTime;

use serde_json::{json, Value};

use tokio_postgres::Transaction;

use crate::broker::{Broker, TopicMeta};
use crate::error::{Error, Invalid, Result};
use crate::types::{Record, TopicName};

/// Batches remembered per producer and partition, as in Kafka (which is
/// why clients keep at most five requests in flight).
const REMEMBERED_BATCHES: usize = 5;

/// The producer fields of one record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    /// Producer id from [`Streams::init_producer_id`](super::Streams::init_producer_id).
    pub producer_id: i64,
    /// Producer epoch.
    pub epoch: i16,
    /// Sequence number of the batch's first record.
    pub base_sequence: i32,
}

/// What an idempotent append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotentAppend {
    /// Offset of the batch's first record.
    pub base_offset: i64,
    /// True when the batch had been written before and nothing was added.
    pub duplicate: bool,
}

/// The sequence number after `seq + count - 1`, wrapping as Kafka does.
fn last_sequence(base: i32, count: usize) -> i32 {
    let n = i32::try_from(count).unwrap_or(i32::MAX);
    let last = i64::from(base) + i64::from(n) - 1;
    i32::try_from(last % (i64::from(i32::MAX) + 1)).unwrap_or(0)
}

fn next_sequence(last: i32) -> i32 {
    if last == i32::MAX {
        0
    } else {
        last + 1
    }
}

/// Remembered batches as `(base_seq, last_seq, base_offset)`.
fn parse_batches(v: &Value) -> Vec<(i32, i32, i64)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| {
                    let b = b.as_array()?;
                    Some((
                        i32::try_from(b.first()?.as_i64()?).ok()?,
                        i32::try_from(b.get(1)?.as_i64()?).ok()?,
                        b.get(2)?.as_i64()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Hands out a new producer id, with epoch 0.
pub(crate) async fn init_producer_id(broker: &Broker) -> Result<(i64, i16)> {
    let client = broker.client().await?;
    let row = client
        .query_one(&broker.inner.sql.streams.init_producer_id, &[])
        .await?;
    Ok((row.get(0), 0))
}

/// Appends `records` to one partition as the batch `batch` of an
/// idempotent producer. See the module documentation for the rules;
/// refusals are [`Error::OutOfOrderSequence`] and
/// [`Error::ProducerFenced`], and write nothing.
pub(crate) async fn produce_idempotent(
    broker: &Broker,
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
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    let now = crate::streams::produce::truncate_to_micros(SystemTime::now());
    let appended = append_in(broker, &tx, now, &meta, pid, records, batch).await?;
    if appended.duplicate {
        return Ok(appended);
    }
    tx.commit().await?;
    let idx: Vec<usize> = (0..records.len()).collect();
    crate::streams::produce::after_commit(broker, pid, appended.base_offset, now, records, &idx);
    Ok(appended)
}

/// What the sequence check decided about a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sequenced {
    /// The batch was written before, at this base offset.
    Duplicate(i64),
    /// The batch is next: its last sequence number, and the remembered
    /// batches `(base_seq, last_seq, base_offset)` to keep beside it.
    Append {
        /// The sequence number of the batch's last record.
        last_seq: i32,
        /// At most [`REMEMBERED_BATCHES`] - 1 earlier batches.
        kept: Vec<(i32, i32, i64)>,
    },
}

/// The sequence check of `batch` (of `count` records) against the
/// producer's locked state on a partition (`lock_producer_state`'s row).
/// Refusals are [`Error::ProducerFenced`] and [`Error::OutOfOrderSequence`].
pub(crate) fn check_sequence(state: &tokio_postgres::Row, batch: ProducerBatch, count: usize) -> Result<Sequenced> {
    sequence_verdict(state.get(0), state.get(1), &state.get(2), batch, count)
}

/// [`check_sequence`] on the state's columns: the producer's epoch on the
/// partition, its last sequence and its remembered batches.
fn sequence_verdict(
    epoch: i16,
    last: i32,
    remembered: &Value,
    batch: ProducerBatch,
    count: usize,
) -> Result<Sequenced> {
    let last_seq = last_sequence(batch.base_sequence, count);
    let mut batches = parse_batches(remembered);
    if epoch > batch.epoch {
        return Err(Error::ProducerFenced {
            producer_id: batch.producer_id,
            got: batch.epoch,
            current: epoch,
        });
    }
    if epoch == batch.epoch {
        if let Some(&(_, _, base_offset)) = batches
            .iter()
            .find(|(b, l, _)| *b == batch.base_sequence && *l == last_seq)
        {
            return Ok(Sequenced::Duplicate(base_offset));
        }
        if batch.base_sequence != next_sequence(last) {
            return Err(Error::OutOfOrderSequence {
                producer_id: batch.producer_id,
                last,
                got: batch.base_sequence,
            });
        }
    } else {
        // A new epoch (or a producer this partition has not seen) starts
        // afresh.
        if epoch >= 0 && batch.base_sequence != 0 {
            return Err(Error::OutOfOrderSequence {
                producer_id: batch.producer_id,
                last: -1,
                got: batch.base_sequence,
            });
        }
        batches.clear();
    }
    let drop = (batches.len() + 1).saturating_sub(REMEMBERED_BATCHES);
    batches.drain(..drop);
    Ok(Sequenced::Append {
        last_seq,
        kept: batches,
    })
}

/// Remembered batches as stored.
pub(crate) fn batches_json(batches: &[(i32, i32, i64)]) -> Value {
    Value::Array(batches.iter().map(|(b, l, o)| json!([b, l, o])).collect())
}

/// The sequence check and the append of one batch, inside the caller's
/// transaction (which commits it).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn append_in(
    broker: &Broker,
    tx: &Transaction<'_>,
    now: SystemTime,
    meta: &TopicMeta,
    pid: i64,
    records: &[Record],
    batch: ProducerBatch,
) -> Result<IdempotentAppend> {
    tx.execute(
        &broker.inner.sql.streams.insert_producer_state,
        &[&batch.producer_id, &pid],
    )
    .await?;
    let row = tx
        .query_one(
            &broker.inner.sql.streams.lock_producer_state,
            &[&batch.producer_id, &pid],
        )
        .await?;
    let (last_seq, mut batches) = match check_sequence(&row, batch, records.len())? {
        Sequenced::Duplicate(base_offset) => {
            return Ok(IdempotentAppend {
                base_offset,
                duplicate: true,
            })
        }
        Sequenced::Append { last_seq, kept } => (last_seq, kept),
    };
    let idx: Vec<usize> = (0..records.len()).collect();
    let base_offset = crate::streams::produce::append_locked(broker, tx, false, now, meta, pid, records, &idx).await?;
    batches.push((batch.base_sequence, last_seq, base_offset));
    let json = batches_json(&batches);
    tx.execute(
        &broker.inner.sql.streams.update_producer_state,
        &[&batch.producer_id, &pid, &batch.epoch, &last_seq, &json],
    )
    .await?;
    Ok(IdempotentAppend {
        base_offset,
        duplicate: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(last_sequence(0, 1), 0);
        assert_eq!(last_sequence(5, 10), 14);
        assert_eq!(last_sequence(i32::MAX, 1), i32::MAX);
        assert_eq!(last_sequence(i32::MAX, 2), 0);
        assert_eq!(next_sequence(i32::MAX), 0);
    }

    #[test]
    fn the_check_keeps_room_for_the_new_batch_and_finds_duplicates() {
        let b = |seq| ProducerBatch {
            producer_id: 7,
            epoch: 1,
            base_sequence: seq,
        };
        let five = json!([[0, 9, 0], [10, 19, 10], [20, 29, 20], [30, 39, 30], [40, 49, 40]]);
        match sequence_verdict(1, 49, &five, b(50), 10).expect("next") {
            Sequenced::Append { last_seq, kept } => {
                assert_eq!(last_seq, 59);
                assert_eq!(kept.first(), Some(&(10, 19, 10)), "the oldest is forgotten");
                assert_eq!(kept.len(), REMEMBERED_BATCHES - 1);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            sequence_verdict(1, 49, &five, b(20), 10).expect("dup"),
            Sequenced::Duplicate(20)
        );
        assert!(matches!(
            sequence_verdict(1, 49, &five, b(70), 10),
            Err(Error::OutOfOrderSequence { .. })
        ));
        assert!(matches!(
            sequence_verdict(2, 49, &five, b(50), 10),
            Err(Error::ProducerFenced { .. })
        ));
        // A new epoch starts from sequence 0 and forgets the old batches.
        match sequence_verdict(0, 49, &five, b(0), 10).expect("new epoch") {
            Sequenced::Append { kept, .. } => assert!(kept.is_empty()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn batches_round_trip_through_json() {
        let v = json!([[0, 9, 100], [10, 19, 110]]);
        assert_eq!(parse_batches(&v), vec![(0, 9, 100), (10, 19, 110)]);
        assert_eq!(batches_json(&parse_batches(&v)), v);
        assert!(parse_batches(&json!("junk")).is_empty());
    }
}
