//! Partition assignment strategies. Pure functions: members and partitions
//! in, an assignment out; the coordinator stores the result.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Invalid};
use crate::types::{TopicName, TopicPartition};

/// How a group's partitions are spread over its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Per topic, consecutive partition ranges to members in id order
    /// (Kafka's `range`).
    Range,
    /// All partitions dealt out one by one to members in id order (Kafka's
    /// `roundrobin`).
    RoundRobin,
    /// Balanced like round-robin, but a member keeps the partitions it
    /// already had whenever balance allows, so a rebalance moves only what
    /// it must (Kafka's `sticky`). The default.
    #[default]
    Sticky,
}

impl Strategy {
    /// The strategy's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Range => "range",
            Strategy::RoundRobin => "roundrobin",
            Strategy::Sticky => "sticky",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "range" => Ok(Strategy::Range),
            "roundrobin" | "round-robin" => Ok(Strategy::RoundRobin),
            "sticky" => Ok(Strategy::Sticky),
            other => Err(Error::invalid(
                Invalid::AssignmentStrategy,
                format!("{other:?}; use range, roundrobin or sticky"),
            )),
        }
    }
}

/// A member's subscription and what it held before this rebalance.
#[derive(Debug, Clone)]
pub(crate) struct MemberState {
    pub id: String,
    pub topics: BTreeSet<TopicName>,
    pub previous: Vec<TopicPartition>,
}

/// Computes the assignment: member id to its partitions, each list sorted.
/// Every partition of a subscribed topic goes to exactly one member that
/// subscribes to its topic.
pub(crate) fn assign(
    strategy: Strategy,
    members: &[MemberState],
    partitions: &BTreeMap<TopicName, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut members: Vec<&MemberState> = members.iter().collect();
    members.sort_by(|a, b| a.id.cmp(&b.id));
    let mut out: BTreeMap<String, Vec<TopicPartition>> = members.iter().map(|m| (m.id.clone(), Vec::new())).collect();
    match strategy {
        Strategy::Range => range(&members, partitions, &mut out),
        Strategy::RoundRobin => round_robin(&members, partitions, &mut out),
        Strategy::Sticky => sticky(&members, partitions, &mut out),
    }
    out.values_mut().for_each(|v| v.sort());
    out
}

fn all_partitions(partitions: &BTreeMap<TopicName, i32>) -> Vec<TopicPartition> {
    partitions
        .iter()
        .flat_map(|(t, n)| {
            (0..*n).map(move |p| TopicPartition {
                topic: t.clone(),
                partition: p,
            })
        })
        .collect()
}

fn range(
    members: &[&MemberState],
    partitions: &BTreeMap<TopicName, i32>,
    out: &mut BTreeMap<String, Vec<TopicPartition>>,
) {
    for (topic, &count) in partitions {
        let subs: Vec<&&MemberState> = members.iter().filter(|m| m.topics.contains(topic)).collect();
        if subs.is_empty() {
            continue;
        }
        let n = i32::try_from(subs.len()).unwrap_or(i32::MAX);
        let (each, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, m) in subs.iter().enumerate() {
            let i = i32::try_from(i).unwrap_or(i32::MAX);
            let take = each + i32::from(i < extra);
            for p in next..next + take {
                if let Some(list) = out.get_mut(&m.id) {
                    list.push(TopicPartition {
                        topic: topic.clone(),
                        partition: p,
                    });
                }
            }
            next += take;
        }
    }
}

fn round_robin(
    members: &[&MemberState],
    partitions: &BTreeMap<TopicName, i32>,
    out: &mut BTreeMap<String, Vec<TopicPartition>>,
) {
    if members.is_empty() {
        return;
    }
    let mut cursor = 0usize;
    for tp in all_partitions(partitions) {
        for _ in 0..members.len() {
            let m = members[cursor % members.len()];
            cursor += 1;
            if m.topics.contains(&tp.topic) {
                if let Some(list) = out.get_mut(&m.id) {
                    list.push(tp);
                }
                break;
            }
        }
    }
}

fn sticky(
    members: &[&MemberState],
    partitions: &BTreeMap<TopicName, i32>,
    out: &mut BTreeMap<String, Vec<TopicPartition>>,
) {
    let all = all_partitions(partitions);
    let eligible = |m: &MemberState, tp: &TopicPartition| m.topics.contains(&tp.topic);
    let subscribed: Vec<&&MemberState> = members.iter().filter(|m| !m.topics.is_empty()).collect();
    if subscribed.is_empty() {
        return;
    }
    // Upper bound per member: keep at most ceil(total / members).
    let cap = all.len().div_ceil(subscribed.len());
    let exists: BTreeSet<&TopicPartition> = all.iter().collect();
    let mut taken: BTreeSet<TopicPartition> = BTreeSet::new();
    for m in members {
        let list = out.entry(m.id.clone()).or_default();
        for tp in &m.previous {
            if list.len() < cap && exists.contains(tp) && eligible(m, tp) && taken.insert(tp.clone()) {
                list.push(tp.clone());
            }
        }
    }
    // Hand out the rest, each to the least-loaded eligible member.
    for tp in all.iter().filter(|tp| !taken.contains(*tp)) {
        let target = members
            .iter()
            .filter(|m| eligible(m, tp))
            .min_by_key(|m| (out.get(&m.id).map_or(0, Vec::len), m.id.clone()));
        if let Some(m) = target {
            if let Some(list) = out.get_mut(&m.id) {
                list.push(tp.clone());
            }
        }
    }
    // Even out: move from the most to the least loaded while they differ by 2+.
    loop {
        let most = members.iter().max_by_key(|m| out.get(&m.id).map_or(0, Vec::len));
        let least = members
            .iter()
            .filter(|m| !m.topics.is_empty())
            .min_by_key(|m| out.get(&m.id).map_or(0, Vec::len));
        let (Some(most), Some(least)) = (most, least) else {
            break;
        };
        let (hi, lo) = (
            out.get(&most.id).map_or(0, Vec::len),
            out.get(&least.id).map_or(0, Vec::len),
        );
        if hi < lo + 2 {
            break;
        }
        let movable = out
            .get(&most.id)
            .and_then(|l| l.iter().rposition(|tp| eligible(least, tp)));
        let Some(pos) = movable else { break };
        let tp = out.get_mut(&most.id).map(|l| l.remove(pos));
        if let (Some(tp), Some(l)) = (tp, out.get_mut(&least.id)) {
            l.push(tp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> TopicName {
        TopicName::new(name).expect("valid")
    }

    fn member(id: &str, topics: &[&str], previous: &[(&str, i32)]) -> MemberState {
        MemberState {
            id: id.into(),
            topics: topics.iter().map(|x| t(x)).collect(),
            previous: previous
                .iter()
                .map(|(topic, p)| TopicPartition {
                    topic: t(topic),
                    partition: *p,
                })
                .collect(),
        }
    }

    fn check_complete(a: &BTreeMap<String, Vec<TopicPartition>>, total: usize) {
        let all: BTreeSet<_> = a.values().flatten().collect();
        assert_eq!(all.len(), total, "{a:?}");
        assert_eq!(a.values().map(Vec::len).sum::<usize>(), total, "duplicated: {a:?}");
    }

    #[test]
    fn range_splits_per_topic() {
        let parts = BTreeMap::from([(t("a"), 5)]);
        let ms = [member("m1", &["a"], &[]), member("m2", &["a"], &[])];
        let a = assign(Strategy::Range, &ms, &parts);
        assert_eq!(a["m1"].iter().map(|p| p.partition).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(a["m2"].iter().map(|p| p.partition).collect::<Vec<_>>(), vec![3, 4]);
    }

    #[test]
    fn round_robin_deals() {
        let parts = BTreeMap::from([(t("a"), 3), (t("b"), 2)]);
        let ms = [member("x", &["a", "b"], &[]), member("y", &["a", "b"], &[])];
        let a = assign(Strategy::RoundRobin, &ms, &parts);
        check_complete(&a, 5);
        assert_eq!(a["x"].len(), 3);
    }

    #[test]
    fn sticky_keeps_survivors_partitions() {
        let parts = BTreeMap::from([(t("a"), 6)]);
        let ms = [
            member("a", &["a"], &[("a", 0), ("a", 1)]),
            member("b", &["a"], &[("a", 2), ("a", 3)]),
        ];
        let a = assign(Strategy::Sticky, &ms, &parts);
        check_complete(&a, 6);
        assert!(a["a"].iter().any(|p| p.partition == 0) && a["a"].iter().any(|p| p.partition == 1));
        assert!(a["b"].iter().any(|p| p.partition == 2) && a["b"].iter().any(|p| p.partition == 3));
        assert_eq!(a["a"].len(), 3);
    }

    #[test]
    fn respects_subscriptions() {
        let parts = BTreeMap::from([(t("a"), 2), (t("b"), 2)]);
        let ms = [member("m1", &["a"], &[]), member("m2", &["b"], &[])];
        for s in [Strategy::Range, Strategy::RoundRobin, Strategy::Sticky] {
            let a = assign(s, &ms, &parts);
            check_complete(&a, 4);
            assert!(a["m1"].iter().all(|p| p.topic == t("a")), "{s}");
            assert!(a["m2"].iter().all(|p| p.topic == t("b")), "{s}");
        }
    }
}
