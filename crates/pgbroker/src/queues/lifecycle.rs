//! Queue administration: create, update, describe, list, count, purge,
//! delete.

use std::time::SystemTime;

use super::{ms, QueueConfig, QueueInfo, QueueName, QueueStats};
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::types::to_millis;

fn info_from_row(row: &tokio_postgres::Row) -> Result<QueueInfo> {
    let dead_letter: Option<String> = row.get(3);
    let max: i32 = row.get(7);
    let created: SystemTime = row.get(8);
    Ok(QueueInfo {
        name: QueueName::new(row.get::<_, String>(0))?,
        visibility_timeout_ms: row.get(1),
        max_attempts: row.get(2),
        dead_letter: dead_letter.map(QueueName::new).transpose()?,
        backoff_base_ms: row.get(4),
        backoff_max_ms: row.get(5),
        archive_retention_ms: row.get(6),
        max_message_bytes: usize::try_from(max).unwrap_or(0),
        created_at_ms: to_millis(created),
    })
}

/// The id of the config's dead-letter queue, if any, locked so that it
/// cannot be deleted before the caller's transaction ends.
async fn lock_dead_letter(
    sql: &super::statements::Statements,
    tx: &tokio_postgres::Transaction<'_>,
    config: &QueueConfig,
) -> Result<Option<i64>> {
    let Some(d) = &config.dead_letter else {
        return Ok(None);
    };
    let row = tx
        .query_opt(&sql.lock_dead_letter, &[&d.as_str()])
        .await?
        .ok_or_else(|| Error::UnknownQueue(d.to_string()))?;
    Ok(Some(row.get(0)))
}

/// Creates a queue. Its dead-letter queue, if any, must exist.
pub(crate) async fn create_queue(broker: &Broker, name: &QueueName, config: &QueueConfig) -> Result<QueueInfo> {
    write_queue(
        broker,
        name,
        config,
        &broker.inner.queues.sql.create_queue,
        Error::QueueExists(name.to_string()),
    )
    .await
}

/// Replaces a queue's settings. Messages keep their state; new limits
/// apply from their next delivery or settlement (other brokers see them
/// within two seconds).
pub(crate) async fn update_queue(broker: &Broker, name: &QueueName, config: &QueueConfig) -> Result<QueueInfo> {
    write_queue(
        broker,
        name,
        config,
        &broker.inner.queues.sql.update_queue,
        Error::UnknownQueue(name.to_string()),
    )
    .await
}

/// Runs `sql` (create or update, both taking the same parameters) with
/// the settings; `missing` is the error when it touches no row.
async fn write_queue(
    broker: &Broker,
    name: &QueueName,
    config: &QueueConfig,
    sql: &str,
    missing: Error,
) -> Result<QueueInfo> {
    config.validate(name)?;
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    let dead_letter_id = lock_dead_letter(&broker.inner.queues.sql, &tx, config).await?;
    let max = i32::try_from(config.max_message_bytes).unwrap_or(i32::MAX);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
        &name.as_str(),
        &ms(config.visibility_timeout),
        &config.max_attempts,
        &dead_letter_id,
        &ms(config.backoff_base),
        &ms(config.backoff_max),
        &config.archive_retention.map(ms),
        &max,
    ];
    if tx.query_opt(sql, &params).await?.is_none() {
        return Err(missing);
    }
    tx.commit().await?;
    crate::queues::forget_queue(broker, name.as_str());
    broker.queues().info(name).await
}

/// One queue's settings.
pub(crate) async fn queue_info(broker: &Broker, name: &QueueName) -> Result<QueueInfo> {
    let client = broker.client().await?;
    let row = client
        .query_opt(&broker.inner.queues.sql.queue_info, &[&name.as_str()])
        .await?
        .ok_or_else(|| Error::UnknownQueue(name.to_string()))?;
    info_from_row(&row)
}

/// All queues, by name.
pub(crate) async fn list_queues(broker: &Broker) -> Result<Vec<QueueInfo>> {
    let client = broker.client().await?;
    let rows = client.query(&broker.inner.queues.sql.list_queues, &[]).await?;
    rows.iter().map(info_from_row).collect()
}

/// Counts of ready, in-flight, delayed and dead-lettered messages, and
/// the age of the oldest ready one.
pub(crate) async fn queue_stats(broker: &Broker, name: &QueueName) -> Result<QueueStats> {
    let meta = crate::queues::queue_meta(broker, name).await?;
    let client = broker.client().await?;
    let row = client
        .query_one(&broker.inner.queues.sql.queue_stats, &[&meta.id])
        .await?;
    Ok(stats_from_row(&row, 0))
}

/// The counts in the five columns of `row` from `at` on.
fn stats_from_row(row: &tokio_postgres::Row, at: usize) -> QueueStats {
    QueueStats {
        ready: row.get(at),
        in_flight: row.get(at + 1),
        delayed: row.get(at + 2),
        dead_lettered: row.get(at + 3),
        oldest_ready_age_ms: row.get::<_, Option<i64>>(at + 4).map(|ms| ms.max(0)),
    }
}

/// Every queue's counts, by name, read in one statement.
pub(crate) async fn all_queue_stats(broker: &Broker) -> Result<Vec<(QueueName, QueueStats)>> {
    let client = broker.client().await?;
    let rows = client.query(&broker.inner.queues.sql.all_queue_stats, &[]).await?;
    rows.iter()
        .map(|row| Ok((QueueName::new(row.get::<_, String>(0))?, stats_from_row(row, 1))))
        .collect()
}

/// Deletes every message of the queue (ready, delayed, in flight and
/// dead) and returns how many. Its dead letters in other queues stay.
/// Receipts of deleted messages become stale.
pub(crate) async fn purge_queue(broker: &Broker, name: &QueueName) -> Result<u64> {
    let meta = crate::queues::queue_meta(broker, name).await?;
    crate::queues::membership::purge(broker, &meta).await
}

/// Deletes a queue with its messages, groups and archive. Refused while
/// another queue uses it as its dead-letter queue.
pub(crate) async fn delete_queue(broker: &Broker, name: &QueueName) -> Result<()> {
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    let id: i64 = tx
        .query_opt(&broker.inner.queues.sql.lock_queue, &[&name.as_str()])
        .await?
        .ok_or_else(|| Error::UnknownQueue(name.to_string()))?
        .get(0);
    if let Some(row) = tx.query_opt(&broker.inner.queues.sql.dead_letter_user, &[&id]).await? {
        return Err(Error::QueueInUse {
            queue: name.to_string(),
            used_by: row.get(0),
        });
    }
    tx.execute(broker.inner.queues.sql.delete_all.as_str(), &[&id]).await?;
    tx.execute(&broker.inner.queues.sql.delete_queue_groups, &[&id]).await?;
    tx.execute(&broker.inner.queues.sql.delete_queue_dedup, &[&id]).await?;
    tx.execute(&broker.inner.queues.sql.delete_queue_archive, &[&id])
        .await?;
    tx.execute(&broker.inner.queues.sql.delete_queue, &[&id]).await?;
    tx.commit().await?;
    crate::queues::forget_queue(broker, name.as_str());
    Ok(())
}
