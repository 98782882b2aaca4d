//! The producers a partition knows (Kafka's DescribeProducers): every
//! idempotent or transactional producer that wrote there and is still
//! remembered, with its epoch, last sequence and open transaction.

use std::time::SystemTime;

use crate::broker::Broker;
use crate::error::Result;
use crate::types::TopicName;

/// One producer's state on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerState {
    /// The producer id.
    pub producer_id: i64,
    /// The epoch of its last write.
    pub epoch: i16,
    /// The sequence number of the last record it wrote.
    pub last_sequence: i32,
    /// When the broker wrote its last batch.
    pub last_write: SystemTime,
    /// The first offset of its transaction still open on this partition,
    /// if it has one: the partition's last stable offset cannot pass it.
    pub txn_start_offset: Option<i64>,
}

/// The producers of `topic`'s `partition`, by producer id.
pub(crate) async fn producers(broker: &Broker, topic: &TopicName, partition: i32) -> Result<Vec<ProducerState>> {
    let (_, pid) = broker.partition_id(topic, partition).await?;
    let client = broker.client().await?;
    let rows = client.query(&broker.inner.sql.txn.partition_producers, &[&pid]).await?;
    Ok(rows
        .iter()
        .map(|r| ProducerState {
            producer_id: r.get(0),
            epoch: r.get(1),
            last_sequence: r.get(2),
            last_write: r.get(3),
            txn_start_offset: r.get(4),
        })
        .collect())
}
