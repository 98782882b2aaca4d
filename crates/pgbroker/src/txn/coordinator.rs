//! The transaction coordinator: producer start (InitProducerId), adding
//! partitions and groups, offsets inside a transaction, commit and abort,
//! and the timeout sweep. Every operation locks the transactional id's
//! row first, then (for a decision) the partitions in id order, just
//! before the statement that writes the markers and the commit.
//!
//! Statements are prepared once per connection, and those that do not
//! depend on each other's answers are sent together, BEGIN with the first
//! and COMMIT with the last (see `pipelined`): a request costs a few round
//! trips to Postgres, whatever the number of its partitions.

use std::future::Future;
use std::time::SystemTime;

use futures_util::future::{try_join, try_join3};

use super::decide::decide_locked;
use super::pipelined::Pipelined;
use super::{check_transactional_id, TxnRefusal, MAX_TRANSACTION_TIMEOUT_MS};
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::groups::OffsetCommit;
use crate::streams::produce::{no_segment, still_no_segment};
use crate::types::{GroupId, TopicName};

/// The state of a transactional id's current transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum TxnState {
    /// No transaction since the producer started.
    Empty,
    /// A transaction is open.
    Ongoing,
    /// The last transaction committed.
    CompleteCommit,
    /// The last transaction aborted (by the producer, a new instance of it,
    /// its timeout or an operator).
    CompleteAbort,
}

impl TxnState {
    /// The name stored, as Kafka names the state.
    pub fn as_str(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    fn parse(s: &str) -> TxnState {
        match s {
            "Ongoing" => TxnState::Ongoing,
            "CompleteCommit" => TxnState::CompleteCommit,
            "CompleteAbort" => TxnState::CompleteAbort,
            _ => TxnState::Empty,
        }
    }
}

/// One transactional id as the coordinator holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TxnDescription {
    /// The transactional id.
    pub transactional_id: String,
    /// The producer id it holds.
    pub producer_id: i64,
    /// The current epoch.
    pub epoch: i16,
    /// The current transaction's state.
    pub state: TxnState,
    /// The transaction timeout, in milliseconds.
    pub timeout_ms: i32,
    /// When the open transaction started.
    pub started_at: Option<SystemTime>,
    /// The topic partitions of the open transaction.
    pub partitions: Vec<(TopicName, i32)>,
}

/// What a decision records: the new state, epoch and last epoch.
pub(super) type Finish = (TxnState, i16, i16);

/// The locked row of a transactional id.
pub(super) struct TxnRow {
    pub(super) producer_id: i64,
    pub(super) epoch: i16,
    last_epoch: i16,
    state: TxnState,
    /// How many transactions of the id have ended: the number of the
    /// ongoing one.
    completed: i64,
}

pub(super) fn row_of(r: &tokio_postgres::Row) -> TxnRow {
    TxnRow {
        producer_id: r.get(0),
        epoch: r.get(1),
        last_epoch: r.get(2),
        state: TxnState::parse(r.get(3)),
        completed: r.get(5),
    }
}

fn refuse(id: &str, refusal: TxnRefusal) -> Error {
    Error::Transaction {
        transactional_id: id.to_string(),
        refusal,
    }
}

/// Begins `tx` and locks `id`'s row (`lock`, a statement locking one row
/// of `kafka_transactions` by transactional id): one round trip.
async fn begin_locked(tx: &Pipelined, lock: &str, id: &str) -> Result<Option<TxnRow>> {
    let client = tx.client();
    let stmt = client.prepare_cached(lock).await?;
    let (_, row) = try_join(tx.begin(), async { Ok(client.query_opt(&stmt, &[&id]).await?) }).await?;
    Ok(row.as_ref().map(row_of))
}

/// Ends `tx` after `out`, what ran in it: rolls back what a refusal left
/// open, then returns `out`.
pub(super) async fn finish<T>(tx: Pipelined, out: Result<T>) -> Result<T> {
    tx.rollback().await?;
    out
}

/// Runs a decision (`once`), again when its markers found no segment for
/// a partition; the retry first makes room on every partition it writes
/// to (`once`'s argument).
async fn with_room<T, F, Fut>(mut once: F) -> Result<T>
where
    F: FnMut(bool) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut attempt = 1;
    loop {
        match once(attempt > 1).await {
            Err(e) if no_segment(&e) && attempt < crate::streams::produce::SEGMENT_RETRIES => {
                tracing::warn!(attempt, "no segment for a transaction marker; retrying");
                attempt += 1;
            }
            other => return other.map_err(|e| still_no_segment(e, None)),
        }
    }
}

/// Checks that the locked row of `id` (if any) holds `(producer_id,
/// epoch)`.
fn check_current(id: &str, found: Option<TxnRow>, producer_id: i64, epoch: i16) -> Result<TxnRow> {
    let row = found.ok_or_else(|| refuse(id, TxnRefusal::UnknownProducerId(producer_id)))?;
    if row.producer_id != producer_id {
        return Err(refuse(id, TxnRefusal::UnknownProducerId(producer_id)));
    }
    if epoch < row.epoch {
        return Err(refuse(
            id,
            TxnRefusal::Fenced {
                presented: epoch,
                current: row.epoch,
            },
        ));
    }
    if epoch > row.epoch {
        return Err(refuse(
            id,
            TxnRefusal::EpochAhead {
                presented: epoch,
                current: row.epoch,
            },
        ));
    }
    Ok(row)
}

/// The next epoch, or `None` when the producer id has used them all.
fn next_epoch(epoch: i16) -> Option<i16> {
    (epoch < i16::MAX - 1).then_some(epoch + 1)
}

/// Tells this process's cache and waiting fetches that the partitions'
/// stable offsets moved.
pub(super) fn after_decision(broker: &Broker, partitions: &[i64]) {
    for &pid in partitions {
        broker.inner.cache.forget(pid);
        broker.inner.wakeups.wake(pid);
    }
}

/// InitProducerId with a transactional id. Creates the id at epoch 0, or
/// bumps its epoch (fencing every older instance), aborting the
/// transaction an older instance left open. `current` is the producer id
/// and epoch a restarting producer presents (KIP-360): it must be the
/// current one, or the one before the broker's own bump after a timeout.
pub(crate) async fn init_producer(
    broker: &Broker,
    id: &str,
    timeout_ms: i32,
    current: Option<(i64, i16)>,
) -> Result<(i64, i16)> {
    check_transactional_id(id)?;
    if !(1..=MAX_TRANSACTION_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(refuse(
            id,
            TxnRefusal::InvalidTimeout {
                requested: timeout_ms,
                max: MAX_TRANSACTION_TIMEOUT_MS,
            },
        ));
    }
    with_room(|make_room| init_once(broker, id, timeout_ms, current, make_room)).await
}

/// One attempt of [`init_producer`].
async fn init_once(
    broker: &Broker,
    id: &str,
    timeout_ms: i32,
    current: Option<(i64, i16)>,
    make_room: bool,
) -> Result<(i64, i16)> {
    let tx = Pipelined::new(broker.client().await?);
    let out = init_in(broker, &tx, id, timeout_ms, current, make_room).await;
    let touched = finish(tx, out).await?;
    after_decision(broker, &touched.1);
    Ok(touched.0)
}

/// [`init_once`] in `tx`: returns the producer id and epoch, and the
/// partitions of the aborted transaction.
async fn init_in(
    broker: &Broker,
    tx: &Pipelined,
    id: &str,
    timeout_ms: i32,
    current: Option<(i64, i16)>,
    make_room: bool,
) -> Result<((i64, i16), Vec<i64>)> {
    let sql = &broker.inner.sql.txn;
    let client = tx.client();
    let (insert, lock) = try_join(
        client.prepare_cached(&sql.insert_txn),
        client.prepare_cached(&sql.lock_txn),
    )
    .await?;
    let (_, created, found) = try_join3(
        tx.begin(),
        async { Ok(client.execute(&insert, &[&id, &timeout_ms]).await? == 1) },
        async { Ok(client.query_opt(&lock, &[&id]).await?) },
    )
    .await?;
    let row = found
        .as_ref()
        .map(row_of)
        .ok_or_else(|| refuse(id, TxnRefusal::InvalidState("transactional id vanished".to_string())))?;
    if created {
        tx.commit().await?;
        return Ok(((row.producer_id, row.epoch), Vec::new()));
    }
    if let Some((pid, epoch)) = current.filter(|(pid, _)| *pid >= 0) {
        if pid != row.producer_id || (epoch != row.epoch && epoch != row.last_epoch) {
            return Err(refuse(
                id,
                TxnRefusal::Fenced {
                    presented: epoch,
                    current: row.epoch,
                },
            ));
        }
    }
    let (pid, epoch) = match next_epoch(row.epoch) {
        Some(e) => (row.producer_id, e),
        None => {
            let r = client.query_one(&sql.next_producer_id, &[]).await?;
            (r.get::<_, i64>(0), 0)
        }
    };
    // The row's new producer before the abort's markers, which carry the
    // old one (`row`) and touch no row of `kafka_transactions`.
    client
        .execute(&sql.init_txn, &[&id, &pid, &epoch, &-1i16, &timeout_ms])
        .await?;
    let touched = if row.state == TxnState::Ongoing {
        decide_locked(broker, tx, id, &row, false, None, make_room).await?
    } else {
        tx.commit().await?;
        Vec::new()
    };
    Ok(((pid, epoch), touched))
}

/// Joins something to `id`'s ongoing transaction, starting it if none is
/// open: `join` (a statement of `join_txn!`, whose fourth parameter is
/// `param`) checks and writes in one statement, committed on its own; a
/// refusal wrote nothing. Returns the transaction's number.
async fn join_transaction(
    broker: &Broker,
    id: &str,
    producer_id: i64,
    epoch: i16,
    join: &str,
    param: &(dyn tokio_postgres::types::ToSql + Sync),
) -> Result<i64> {
    check_transactional_id(id)?;
    let client = broker.client().await?;
    let join = client.prepare_cached(join).await?;
    let found = client.query_opt(&join, &[&id, &producer_id, &epoch, param]).await?;
    let row = check_current(id, found.as_ref().map(row_of), producer_id, epoch)?;
    Ok(row.completed)
}

/// AddPartitionsToTxn: the partitions join the transaction, which starts
/// if none is open. Returns the transaction's number (see [`end`]).
pub(crate) async fn add_partitions(
    broker: &Broker,
    id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: &[(TopicName, i32)],
) -> Result<i64> {
    let mut ids = Vec::with_capacity(partitions.len());
    for (topic, partition) in partitions {
        ids.push(broker.partition_id(topic, *partition).await?.1);
    }
    ids.sort_unstable();
    ids.dedup();
    let join = &broker.inner.sql.txn.join_partitions;
    join_transaction(broker, id, producer_id, epoch, join, &ids).await
}

/// AddOffsetsToTxn: the group joins the transaction, which starts if none
/// is open. Returns the transaction's number (see [`end`]).
pub(crate) async fn add_group(broker: &Broker, id: &str, producer_id: i64, epoch: i16, group: &GroupId) -> Result<i64> {
    let join = &broker.inner.sql.txn.join_group;
    join_transaction(broker, id, producer_id, epoch, join, &group.as_str()).await
}

/// The member and generation a transactional offset commit presents
/// (KIP-447); `None` when it presents neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// The member id.
    pub member_id: String,
    /// The generation.
    pub generation: i32,
}

/// TxnOffsetCommit: offsets of an added group, pending until the
/// transaction commits. With a member, they are fenced like the member's
/// own commits: a zombie of an older generation is refused.
pub(crate) async fn commit_offsets(
    broker: &Broker,
    id: &str,
    producer_id: i64,
    epoch: i16,
    group: &GroupId,
    member: Option<&GroupMember>,
    offsets: &[OffsetCommit],
) -> Result<()> {
    for o in offsets {
        if o.offset < 0 {
            return Err(Error::invalid(
                crate::error::Invalid::Offset,
                format!("{} is negative", o.offset),
            ));
        }
        broker.partition_id(&o.topic, o.partition).await?;
    }
    if let Some(m) = member {
        crate::groups::classic::offsets::fence_member(broker, group, &m.member_id, m.generation).await?;
    }
    check_transactional_id(id)?;
    let topics: Vec<&str> = offsets.iter().map(|o| o.topic.as_str()).collect();
    let parts: Vec<i32> = offsets.iter().map(|o| o.partition).collect();
    let offs: Vec<i64> = offsets.iter().map(|o| o.offset).collect();
    let metas: Vec<Option<&str>> = offsets.iter().map(|o| o.metadata.as_deref()).collect();
    // Checks and writes in one statement, committed on its own: a refusal
    // wrote nothing.
    let client = broker.client().await?;
    let put = client.prepare_cached(&broker.inner.sql.txn.put_offsets).await?;
    let found = client
        .query_opt(
            &put,
            &[
                &id,
                &group.as_str(),
                &producer_id,
                &epoch,
                &topics,
                &parts,
                &offs,
                &metas,
            ],
        )
        .await?;
    let row = check_current(id, found.as_ref().map(row_of), producer_id, epoch)?;
    if row.state != TxnState::Ongoing {
        return Err(refuse(
            id,
            TxnRefusal::InvalidState("no transaction is ongoing".to_string()),
        ));
    }
    if !found.is_some_and(|r| r.get::<_, bool>(6)) {
        return Err(refuse(id, TxnRefusal::GroupNotAdded(group.to_string())));
    }
    Ok(())
}

/// EndTxn. Commits or aborts the ongoing transaction in one SQL
/// transaction. A retried commit (or abort) of a transaction that already
/// ended that way succeeds without doing anything; so does an abort when
/// no transaction is open (an abort that overtook the request opening the
/// transaction must not be a fatal error).
///
/// `expected` is the number of the transaction the request belongs to,
/// when the caller knows it (the Kafka front end remembers, per
/// connection, the number its AddPartitionsToTxn or AddOffsetsToTxn
/// returned). A request for an earlier transaction, delayed until a later
/// one is open, is refused instead of deciding the later one: the epoch
/// alone cannot tell them apart, since one epoch spans many transactions.
pub(crate) async fn end(
    broker: &Broker,
    id: &str,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    expected: Option<i64>,
) -> Result<()> {
    with_room(|make_room| end_once(broker, id, producer_id, epoch, commit, expected, make_room)).await
}

/// One attempt of [`end`].
async fn end_once(
    broker: &Broker,
    id: &str,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    expected: Option<i64>,
    make_room: bool,
) -> Result<()> {
    check_transactional_id(id)?;
    let tx = Pipelined::new(broker.client().await?);
    let out = async {
        let tx = &tx;
        let found = begin_locked(tx, &broker.inner.sql.txn.lock_txn, id).await?;
        match end_verdict(id, found, producer_id, epoch, commit, expected)? {
            Some((row, finish)) => decide_locked(broker, tx, id, &row, commit, Some(finish), make_room).await,
            // Nothing to do: the row lock is released by the rollback.
            None => Ok(Vec::new()),
        }
    }
    .await;
    let touched = finish(tx, out).await?;
    after_decision(broker, &touched);
    Ok(())
}

/// What EndTxn does with the locked row of `id` (`found`): decide its
/// ongoing transaction (the row, and the state, epoch and last epoch to
/// record), nothing (`None`: a retried commit of a committed transaction,
/// or an abort with none ongoing), or refuse.
pub(super) fn end_verdict(
    id: &str,
    found: Option<TxnRow>,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    expected: Option<i64>,
) -> Result<Option<(TxnRow, Finish)>> {
    let row = check_current(id, found, producer_id, epoch)?;
    if row.state == TxnState::Ongoing && expected.is_some_and(|n| n != row.completed) {
        return Err(refuse(id, TxnRefusal::StaleRequest));
    }
    match (row.state, commit) {
        (TxnState::Ongoing, _) => {
            let state = if commit {
                TxnState::CompleteCommit
            } else {
                TxnState::CompleteAbort
            };
            let finish = (state, row.epoch, row.last_epoch);
            Ok(Some((row, finish)))
        }
        (TxnState::CompleteCommit, true) | (_, false) => Ok(None),
        (_, true) => Err(refuse(
            id,
            TxnRefusal::InvalidState("no transaction is ongoing to commit".to_string()),
        )),
    }
}

/// Aborts one transaction past its timeout and bumps its epoch, so that
/// the producer's further requests are fenced; it may recover with
/// InitProducerId presenting its old epoch. False when another broker
/// holds it or it is no longer due.
async fn abort_expired_one(broker: &Broker, id: &str) -> Result<bool> {
    with_room(|make_room| abort_expired_once(broker, id, make_room)).await
}

/// One attempt of [`abort_expired_one`].
async fn abort_expired_once(broker: &Broker, id: &str, make_room: bool) -> Result<bool> {
    let tx = Pipelined::new(broker.client().await?);
    let out = async {
        let tx = &tx;
        let Some(row) = begin_locked(tx, &broker.inner.sql.txn.lock_expired, id).await? else {
            return Ok(None);
        };
        let finish = (TxnState::CompleteAbort, bumped(&row).0, bumped(&row).1);
        decide_locked(broker, tx, id, &row, false, Some(finish), make_room)
            .await
            .map(Some)
    }
    .await;
    let touched = finish(tx, out).await?;
    let Some(touched) = touched else {
        return Ok(false);
    };
    after_decision(broker, &touched);
    tracing::info!(transactional_id = id, "transaction timed out and was aborted");
    Ok(true)
}

/// Aborts every transaction past its timeout; returns how many.
pub(crate) async fn abort_expired(broker: &Broker) -> Result<usize> {
    let ids: Vec<String> = {
        let client = broker.client().await?;
        client
            .query(&broker.inner.sql.txn.expired, &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let mut n = 0;
    for id in ids {
        if abort_expired_one(broker, &id).await? {
            n += 1;
        }
    }
    Ok(n)
}

/// Aborts the open transaction of a transactional id as an operator asks,
/// bumping the epoch as a timeout does. False when none was open.
pub(crate) async fn abort_by_operator(broker: &Broker, id: &str) -> Result<bool> {
    check_transactional_id(id)?;
    with_room(|make_room| abort_by_operator_once(broker, id, make_room)).await
}

/// The epoch and last epoch after the broker aborts a transaction on its
/// own: the next epoch, so that the producer's further requests are
/// fenced, unless the producer id has used them all.
fn bumped(row: &TxnRow) -> (i16, i16) {
    match next_epoch(row.epoch) {
        Some(e) => (e, row.epoch),
        None => (row.epoch, row.last_epoch),
    }
}

/// One attempt of [`abort_by_operator`].
async fn abort_by_operator_once(broker: &Broker, id: &str, make_room: bool) -> Result<bool> {
    let tx = Pipelined::new(broker.client().await?);
    let out = async {
        let tx = &tx;
        let Some(row) = begin_locked(tx, &broker.inner.sql.txn.lock_txn, id).await? else {
            return Err(refuse(
                id,
                TxnRefusal::InvalidState("unknown transactional id".to_string()),
            ));
        };
        if row.state != TxnState::Ongoing {
            return Ok(None);
        }
        let (epoch, last) = bumped(&row);
        let finish = (TxnState::CompleteAbort, epoch, last);
        decide_locked(broker, tx, id, &row, false, Some(finish), make_room)
            .await
            .map(Some)
    }
    .await;
    let touched = finish(tx, out).await?;
    let Some(touched) = touched else {
        return Ok(false);
    };
    after_decision(broker, &touched);
    Ok(true)
}

/// Partitions of `group` with an offset pending in an open transaction.
pub(crate) async fn pending_offsets(broker: &Broker, group: &GroupId) -> Result<Vec<(TopicName, i32)>> {
    let client = broker.client().await?;
    let rows = client
        .query(&broker.inner.sql.txn.pending_offsets, &[&group.as_str()])
        .await?;
    rows.iter()
        .map(|r| Ok((TopicName::new(r.get::<_, String>(0))?, r.get(1))))
        .collect()
}

/// A partition's last stable offset: the first offset of the oldest
/// transaction still open on it, else the high watermark.
pub(crate) async fn last_stable_offset(broker: &Broker, topic: &TopicName, partition: i32) -> Result<i64> {
    let (_, pid) = broker.partition_id(topic, partition).await?;
    let hw =
        crate::streams::fetch::resolve_offset(broker, topic, partition, crate::streams::OffsetSpec::Latest).await?;
    let client = broker.client().await?;
    let row = client.query_one(&broker.inner.sql.txn.last_stable, &[&pid]).await?;
    Ok(row.get::<_, Option<i64>>(0).map_or(hw, |lso| lso.min(hw)))
}

async fn describe_row(
    broker: &Broker,
    client: &tokio_postgres::Client,
    r: &tokio_postgres::Row,
) -> Result<TxnDescription> {
    let id: String = r.get(0);
    let open: i32 = r.get(6);
    let mut partitions = Vec::new();
    if open > 0 {
        for p in client.query(&broker.inner.sql.txn.txn_topic_partitions, &[&id]).await? {
            partitions.push((TopicName::new(p.get::<_, String>(0))?, p.get(1)));
        }
    }
    Ok(TxnDescription {
        transactional_id: id,
        producer_id: r.get(1),
        epoch: r.get(2),
        state: TxnState::parse(r.get(3)),
        timeout_ms: r.get(4),
        started_at: r.get(5),
        partitions,
    })
}

/// Every transactional id.
pub(crate) async fn list(broker: &Broker) -> Result<Vec<TxnDescription>> {
    let client = broker.client().await?;
    let rows = client.query(&broker.inner.sql.txn.list_txns, &[]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(describe_row(broker, &client, r).await?);
    }
    Ok(out)
}

/// One transactional id, if known.
pub(crate) async fn describe(broker: &Broker, id: &str) -> Result<Option<TxnDescription>> {
    check_transactional_id(id)?;
    let client = broker.client().await?;
    match client.query_opt(&broker.inner.sql.txn.describe_txn, &[&id]).await? {
        Some(r) => Ok(Some(describe_row(broker, &client, &r).await?)),
        None => Ok(None),
    }
}
