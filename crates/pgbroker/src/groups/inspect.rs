//! Inspecting and administering groups: committed offsets, listing,
//! describing with lag, resetting offsets and deleting.

use std::time::SystemTime;

use super::{
    is_foreign, parse_assignment, CommittedOffset, GroupDescription, GroupLag, MemberInfo, OffsetCommit, PartitionLag,
};
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::streams::fetch::OffsetSpec;
use crate::types::{to_millis, GroupId, TopicName, TopicPartition};

/// Where `reset_offsets` moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The log start of each partition.
    Earliest,
    /// The high watermark of each partition.
    Latest,
    /// This offset, clamped into each partition's range.
    Offset(i64),
    /// The first offset at or after this time.
    Timestamp(SystemTime),
}

/// The group's committed offsets for one topic, by partition.
pub(crate) async fn committed_offsets(
    broker: &Broker,
    group: &GroupId,
    topic: &TopicName,
) -> Result<Vec<CommittedOffset>> {
    let client = broker.client().await?;
    let rows = client
        .query(
            &broker.inner.sql.groups.committed_offsets,
            &[&group.as_str(), &topic.as_str()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| CommittedOffset {
            partition: r.get(0),
            offset: r.get(1),
            metadata: r.get(2),
        })
        .collect())
}

/// Every group that has members or committed offsets, by name.
pub(crate) async fn list_groups(broker: &Broker) -> Result<Vec<GroupId>> {
    let client = broker.client().await?;
    let rows = client.query(&broker.inner.sql.groups.list_groups, &[]).await?;
    rows.iter().map(|r| GroupId::new(r.get::<_, String>(0))).collect()
}

/// Every group's lag, by group, topic and partition, in one statement:
/// the partitions of every topic a group has committed on or its members
/// subscribe to, with `high watermark - committed` (from the log start
/// when nothing is committed).
pub(crate) async fn lag_of_all_groups(broker: &Broker) -> Result<Vec<GroupLag>> {
    let client = broker.client().await?;
    let rows = client.query(&broker.inner.sql.groups.lag_all, &[]).await?;
    rows.iter()
        .map(|r| {
            Ok(GroupLag {
                group: GroupId::new(r.get::<_, String>(0))?,
                topic: TopicName::new(r.get::<_, String>(1))?,
                partition: r.get(2),
                lag: r.get(3),
            })
        })
        .collect()
}

/// A group's live members and, per partition, committed offset, high
/// watermark, lag and owner.
pub(crate) async fn describe_group(broker: &Broker, group: &GroupId) -> Result<GroupDescription> {
    let client = broker.client().await?;
    let head = client
        .query_opt(&broker.inner.sql.groups.describe_group, &[&group.as_str()])
        .await?;
    let protocol_type: String = head.as_ref().map(|h| h.get(2)).unwrap_or_default();
    // Kafka clients keep their assignment as the consumer protocol's bytes,
    // which the leader chose; the library keeps its own as JSON.
    let consumer_protocol = protocol_type == "consumer";
    let members: Vec<MemberInfo> = client
        .query(&broker.inner.sql.groups.describe_members, &[&group.as_str()])
        .await?
        .iter()
        .map(|r| MemberInfo {
            member_id: r.get(0),
            client_id: r.get(1),
            last_heartbeat_ms: to_millis(r.get(2)),
            assignment: if consumer_protocol {
                crate::groups::classic::assignment::decode(r.get(4)).unwrap_or_default()
            } else {
                parse_assignment(r.get(3))
            },
        })
        .collect();
    let assigned_topics: Vec<&str> = members
        .iter()
        .flat_map(|m| m.assignment.iter().map(|tp| tp.topic.as_str()))
        .collect();
    let rows = client
        .query(
            &broker.inner.sql.groups.describe_partitions,
            &[&group.as_str(), &assigned_topics],
        )
        .await?;
    if head.is_none() && rows.is_empty() {
        return Err(Error::UnknownGroup(group.to_string()));
    }
    let owner = |tp: &TopicPartition| {
        members
            .iter()
            .find(|m| m.assignment.contains(tp))
            .map(|m| m.member_id.clone())
    };
    let mut partitions = Vec::with_capacity(rows.len());
    for r in &rows {
        let topic = TopicName::new(r.get::<_, String>(0))?;
        let partition: i32 = r.get(1);
        let committed: Option<i64> = r.get(2);
        let (hw, start): (i64, i64) = (r.get(3), r.get(4));
        let member = owner(&TopicPartition {
            topic: topic.clone(),
            partition,
        });
        partitions.push(PartitionLag {
            lag: (hw - committed.unwrap_or(start)).max(0),
            topic,
            partition,
            committed,
            high_watermark: hw,
            member,
        });
    }
    let (generation, strategy, stored, chosen) = head
        .map_or((0, String::from("-"), String::new(), None::<String>), |h| {
            (h.get(0), h.get(1), h.get(3), h.get(4))
        });
    // For Kafka clients the strategy is the protocol their leader chose
    // (range, roundrobin, cooperative-sticky, ...), not the library's.
    let strategy = if is_foreign(&protocol_type) {
        chosen.filter(|c| !c.is_empty()).unwrap_or_else(|| "-".to_string())
    } else {
        strategy
    };
    let state = if members.is_empty() {
        "Empty".to_string()
    } else if protocol_type == super::consumer::CONSUMER_PROTOCOL {
        // Members reconcile one by one; ConsumerGroupDescribe tells more.
        "Stable".to_string()
    } else if is_foreign(&protocol_type) {
        stored
    } else {
        "Stable".to_string()
    };
    Ok(GroupDescription {
        group: group.clone(),
        state,
        protocol_type,
        generation,
        strategy,
        members,
        partitions,
    })
}

/// Moves an inactive group's committed offsets for one topic. Returns
/// the new offset of every partition.
pub(crate) async fn reset_offsets(
    broker: &Broker,
    group: &GroupId,
    topic: &TopicName,
    to: ResetTo,
) -> Result<Vec<CommittedOffset>> {
    let meta = broker.topic_meta(topic).await?;
    let mut offsets = Vec::with_capacity(meta.partition_ids.len());
    for p in 0..meta.partition_ids.len() {
        let partition = i32::try_from(p).unwrap_or(i32::MAX);
        let (start, end) = broker.streams().watermarks(topic, partition).await?;
        let offset = match to {
            ResetTo::Earliest => start,
            ResetTo::Latest => end,
            ResetTo::Offset(o) => o.clamp(start, end),
            ResetTo::Timestamp(t) => {
                broker
                    .streams()
                    .resolve_offset(topic, partition, OffsetSpec::Timestamp(t))
                    .await?
            }
        };
        offsets.push(OffsetCommit {
            topic: topic.clone(),
            partition,
            offset,
            metadata: None,
        });
    }
    broker.groups().commit(group, None, &offsets).await?;
    Ok(offsets
        .into_iter()
        .map(|o| CommittedOffset {
            partition: o.partition,
            offset: o.offset,
            metadata: None,
        })
        .collect())
}

/// Deletes an inactive group and its committed offsets; a group with
/// live members (library or Kafka clients) is [`Error::GroupNotEmpty`]
/// (Kafka's `NON_EMPTY_GROUP`).
pub(crate) async fn delete_group(broker: &Broker, group: &GroupId) -> Result<()> {
    let mut client = broker.client().await?;
    let tx = client.transaction().await?;
    tx.execute(&broker.inner.sql.groups.lock_any_group, &[&group.as_str()])
        .await?;
    tx.execute(&broker.inner.sql.groups.expire, &[&group.as_str()]).await?;
    let live = tx
        .query_one(&broker.inner.sql.groups.count_members, &[&group.as_str()])
        .await?;
    if live.get::<_, i64>(0) > 0 {
        return Err(Error::GroupNotEmpty(group.to_string()));
    }
    let a = tx
        .execute(&broker.inner.sql.groups.delete_group, &[&group.as_str()])
        .await?;
    let b = tx
        .execute(&broker.inner.sql.groups.delete_offsets, &[&group.as_str()])
        .await?;
    if a + b == 0 {
        return Err(Error::UnknownGroup(group.to_string()));
    }
    tx.commit().await?;
    Ok(())
}
