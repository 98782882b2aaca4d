//! One module per family of Kafka APIs. Each handler takes the decoded
//! request and returns the response to encode (`None`: no answer is due).

/// A group response's assignment built from the library's assigned
/// topics. The consumer and share protocols each have their own pair of
/// types (`$assignment` holding `topic_partitions` of `$partitions`) of the
/// same shape; `named` also fills the topic names, as the Describe
/// responses carry them.
macro_rules! assignment {
    ($assignment:ty, $partitions:ty, $topics:expr $(, $named:ident)?) => {{
        let mut out = <$assignment>::default();
        out.topic_partitions = $topics
            .into_iter()
            .map(|t| {
                let mut tp = <$partitions>::default();
                tp.topic_id = uuid::Uuid::from_bytes(t.topic_id);
                $(assignment!(@$named tp, t);)?
                tp.partitions = t.partitions;
                tp
            })
            .collect();
        out
    }};
    (@named $tp:ident, $t:ident) => {
        $tp.topic_name = super::sb($t.topic.to_string()).into();
    };
}

pub(crate) mod configs;
pub(crate) mod consumer_groups;
pub(crate) mod fetch;
pub(crate) mod group_configs;
pub(crate) mod groups;
pub(crate) mod meta;
pub(crate) mod offsets;
pub(crate) mod produce;
pub(crate) mod sasl;
pub(crate) mod share_fetch;
pub(crate) mod share_groups;
pub(crate) mod topics;
pub(crate) mod txn;
pub(crate) mod txn_admin;

use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use pgbroker::auth::Permission;
use pgbroker::cluster::Node;
use pgbroker::{GroupId, TopicName};

use crate::dispatch::ReqInfo;

/// A wire string as an owned `StrBytes`.
pub(crate) fn sb(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// A topic name from the wire, validated by the library's rules.
pub(crate) fn topic_name(s: &StrBytes) -> pgbroker::Result<TopicName> {
    TopicName::new(s.as_str())
}

/// The topic a request names, when the connection holds `permission` on
/// it and the name is valid; else the code to answer its partitions with
/// (authorization is checked first, as in Kafka).
pub(crate) fn named_topic(info: &ReqInfo<'_>, permission: Permission, name: &StrBytes) -> Result<TopicName, i16> {
    if !info.access.topic(permission, name.as_str()) {
        return Err(ResponseError::TopicAuthorizationFailed.code());
    }
    TopicName::new(name.as_str()).map_err(|_| ResponseError::UnknownTopicOrPartition.code())
}

/// A group id from the wire, validated by the library's rules.
pub(crate) fn group_id(s: &StrBytes) -> pgbroker::Result<GroupId> {
    GroupId::new(s.as_str())
}

/// A stable spread of keys over nodes: FNV-1a of the key.
pub(crate) fn pick<'a>(nodes: &'a [Node], key: &str, extra: i32) -> Option<&'a Node> {
    if nodes.is_empty() {
        return None;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = h.wrapping_add(u64::from(extra.unsigned_abs()));
    let i = usize::try_from(h % nodes.len() as u64).unwrap_or(0);
    nodes.get(i)
}
