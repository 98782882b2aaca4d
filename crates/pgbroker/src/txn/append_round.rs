//! One round of transactional appends (see [`super::append_batch`]):
//! BEGIN, every batch's checks and its producer's state in one round
//! trip; then the partitions' locks, one append of every batch and the
//! COMMIT in another.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use futures_util::future::try_join;
use tokio_postgres::Row;

use super::append::{after_append, check_transaction};
use super::append_batch::AppendRequest;
use super::coordinator::finish;
use super::pipelined::Pipelined;
use crate::broker::{Broker, TopicMeta};
use crate::error::{Error, Result};
use crate::headers;
use crate::streams::idempotent::{batches_json, check_sequence, IdempotentAppend, Sequenced};

/// The answers of a round, one per request, or `None` when one of them
/// was refused (nothing was written; each is to be made alone).
type Outcomes = Option<Vec<Result<IdempotentAppend>>>;

/// A checked batch to append: its request, its sequences and the
/// batches its producer keeps.
struct Appending {
    i: usize,
    last_seq: i32,
    kept: serde_json::Value,
}

/// What a round knows of one of its partitions.
struct Partition<'a> {
    meta: &'a TopicMeta,
    /// The next offset and the end of the last segment, as read without
    /// the partition's lock.
    next: i64,
    segments_end: i64,
    /// Records this round appends.
    count: i64,
}

/// The bound columns of `append_round`.
#[derive(Default)]
struct Columns<'a> {
    pids: Vec<i64>,
    counts: Vec<i64>,
    rec_pid: Vec<i64>,
    rec_rel: Vec<i64>,
    ts: Vec<Option<SystemTime>>,
    keys: Vec<Option<&'a [u8]>>,
    values: Vec<Option<&'a [u8]>>,
    headers: Vec<Option<serde_json::Value>>,
    rec_producer: Vec<i64>,
    rec_epoch: Vec<i16>,
    producers: Vec<i64>,
    batch_pid: Vec<i64>,
    epochs: Vec<i16>,
    base_seqs: Vec<i32>,
    last_seqs: Vec<i32>,
    kept: Vec<serde_json::Value>,
    ids: Vec<&'a str>,
    starts: Vec<i64>,
}

/// Makes `reqs` (each producer once per partition) in one SQL
/// transaction. An error when the SQL transaction failed (nothing was
/// written).
pub(super) async fn append_round(broker: &Broker, reqs: &[&AppendRequest]) -> Result<Outcomes> {
    let tx = Pipelined::new(broker.client().await?);
    let out = round_in(&tx, broker, reqs).await;
    let Some((outcomes, written)) = finish(tx, out).await? else {
        return Ok(None);
    };
    for (pid, meta, end, segments_end) in written {
        after_append(broker, meta, pid, end, segments_end);
    }
    Ok(Some(outcomes))
}

/// Each request's answer, and each written partition with its topic, the
/// end of what the round wrote there and the end of its last segment.
type Written<'a> = (Vec<Result<IdempotentAppend>>, Vec<(i64, &'a TopicMeta, i64, i64)>);

async fn round_in<'a>(tx: &Pipelined, broker: &Broker, reqs: &[&'a AppendRequest]) -> Result<Option<Written<'a>>> {
    let client = tx.client();
    let sql = &broker.inner.sql.txn;
    let (check, lock_states, lock_partitions, append) = futures_util::future::try_join4(
        client.prepare_cached(&sql.check_appends),
        client.prepare_cached(&sql.lock_states),
        client.prepare_cached(&sql.lock_partitions),
        client.prepare_cached(&sql.append_round),
    )
    .await?;
    let producers: Vec<i64> = reqs.iter().map(|r| r.batch.producer_id).collect();
    let pids: Vec<i64> = reqs.iter().map(|r| r.pid).collect();
    let (_, (checks, states)) = try_join(tx.begin(), async {
        Ok(try_join(
            client.query(&check, &[&producers, &pids]),
            client.query(&lock_states, &[&producers, &pids]),
        )
        .await?)
    })
    .await?;
    let checks = by_pair(checks, 6);
    let states = by_pair(states, 3);
    let mut outcomes: Vec<Option<Result<IdempotentAppend>>> = reqs.iter().map(|_| None).collect();
    let mut appending = Vec::new();
    let mut partitions: BTreeMap<i64, Partition<'_>> = BTreeMap::new();
    for (i, r) in reqs.iter().enumerate() {
        let Ok((next, segments_end)) = check_transaction(&r.id, r.batch, checks.get(&i)) else {
            return Ok(None);
        };
        let Some(state) = states.get(&i) else {
            return Ok(None);
        };
        match check_sequence(state, r.batch, r.records.len()) {
            Err(_) => return Ok(None),
            Ok(Sequenced::Duplicate(base_offset)) => {
                outcomes[i] = Some(Ok(IdempotentAppend {
                    base_offset,
                    duplicate: true,
                }));
            }
            Ok(Sequenced::Append { last_seq, kept }) => {
                let p = partitions.entry(r.pid).or_insert(Partition {
                    meta: &r.meta,
                    next,
                    segments_end,
                    count: 0,
                });
                p.count += i64::try_from(r.records.len()).unwrap_or(i64::MAX);
                appending.push(Appending {
                    i,
                    last_seq,
                    kept: batches_json(&kept),
                });
            }
        }
    }
    let mut written = Vec::new();
    if !appending.is_empty() {
        for (&pid, p) in &partitions {
            if p.segments_end < p.next + p.count {
                // On pgbroker's own connection, without the partition's lock.
                crate::streams::segments::ensure_segments(broker, pid, p.next + p.count, p.meta.segment_records)
                    .await?;
            }
        }
        let c = columns(reqs, &appending, &partitions);
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 20] = [
            &c.pids,
            &c.counts,
            &c.rec_pid,
            &c.rec_rel,
            &c.ts,
            &c.keys,
            &c.values,
            &c.headers,
            &c.rec_producer,
            &c.rec_epoch,
            &c.producers,
            &c.batch_pid,
            &c.epochs,
            &c.base_seqs,
            &c.last_seqs,
            &c.kept,
            &c.ids,
            &c.starts,
            &broker.inner.channel,
            &broker.inner.wakeups.listener_id(),
        ];
        // One partition is locked by the append's own update; several are
        // locked first, in id order, as a decision locks them.
        let rows = tx
            .commit_with(async {
                if c.pids.len() > 1 {
                    let (_, rows) = try_join(
                        client.query(&lock_partitions, &[&c.pids]),
                        client.query(&append, &params),
                    )
                    .await?;
                    Ok(rows)
                } else {
                    Ok(client.query(&append, &params).await?)
                }
            })
            .await?;
        let bases: HashMap<i64, (i64, i64)> = rows
            .iter()
            .map(|row| (row.get::<_, i64>(0), (row.get::<_, i64>(1), row.get::<_, i64>(2))))
            .collect();
        for (a, start) in appending.iter().zip(&c.starts) {
            let r = reqs[a.i];
            outcomes[a.i] = Some(match bases.get(&r.pid) {
                Some((base, _)) => Ok(IdempotentAppend {
                    base_offset: base + start,
                    duplicate: false,
                }),
                None => Err(Error::UnknownTopic(format!("partition id {}", r.pid))),
            });
        }
        for (pid, p) in &partitions {
            if let Some((base, segments_end)) = bases.get(pid) {
                written.push((*pid, p.meta, base + p.count, *segments_end));
            }
        }
    } else {
        tx.commit().await?;
    }
    let outcomes = outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(Error::Busy("the append was not made; retry".to_string()))))
        .collect();
    Ok(Some((outcomes, written)))
}

/// Rows by the pair number in column `ord` (from 1), as request indexes.
fn by_pair(rows: Vec<Row>, ord: usize) -> HashMap<usize, Row> {
    rows.into_iter()
        .filter_map(|row| {
            let n: i64 = row.get(ord);
            Some((usize::try_from(n - 1).ok()?, row))
        })
        .collect()
}

/// The columns of `append_round` for the batches of `appending`,
/// partitions in id order.
fn columns<'a>(
    reqs: &[&'a AppendRequest],
    appending: &[Appending],
    partitions: &BTreeMap<i64, Partition<'_>>,
) -> Columns<'a> {
    let now = crate::streams::produce::truncate_to_micros(SystemTime::now());
    let mut c = Columns::default();
    for (pid, p) in partitions {
        c.pids.push(*pid);
        c.counts.push(p.count);
    }
    let mut placed: HashMap<i64, i64> = HashMap::new();
    for a in appending {
        let r = reqs[a.i];
        let start = placed.entry(r.pid).or_insert(0);
        c.producers.push(r.batch.producer_id);
        c.batch_pid.push(r.pid);
        c.epochs.push(r.batch.epoch);
        c.base_seqs.push(r.batch.base_sequence);
        c.last_seqs.push(a.last_seq);
        c.kept.push(a.kept.clone());
        c.ids.push(&r.id);
        c.starts.push(*start);
        for rec in &r.records {
            c.rec_pid.push(r.pid);
            c.rec_rel.push(*start);
            *start += 1;
            c.ts.push(Some(
                rec.timestamp.map_or(now, crate::streams::produce::truncate_to_micros),
            ));
            c.keys.push(rec.key.as_deref());
            c.values.push(rec.value.as_deref());
            c.headers.push(headers::to_json(&rec.headers));
            c.rec_producer.push(r.batch.producer_id);
            c.rec_epoch.push(r.batch.epoch);
        }
    }
    c
}
