//! Reading the assignment a Kafka consumer group's leader handed each
//! member, for `describe`: the classic consumer protocol's
//! `ConsumerProtocolAssignment` (versions 0 to 3 share one layout:
//! a version, then topics with their partitions, then user data).
//!
//! The bytes come from clients, so every length is checked against what
//! is left; anything that does not parse is reported as no assignment.

use crate::types::{TopicName, TopicPartition};

/// The partitions a consumer-protocol assignment gives, or `None` when
/// the bytes are empty or not such an assignment.
pub(crate) fn decode(bytes: &[u8]) -> Option<Vec<TopicPartition>> {
    let mut r = Reader(bytes);
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return None;
    }
    let topics = r.count()?;
    let mut out = Vec::new();
    for _ in 0..topics {
        let len = usize::try_from(r.i16()?).ok()?;
        let topic = TopicName::new(std::str::from_utf8(r.take(len)?).ok()?).ok()?;
        let partitions = r.count()?;
        for _ in 0..partitions {
            let partition = r.i32()?;
            if partition < 0 {
                return None;
            }
            out.push(TopicPartition {
                topic: topic.clone(),
                partition,
            });
        }
    }
    // User data (nullable bytes) follows; its content is the strategy's.
    out.sort();
    out.dedup();
    Some(out)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    /// An array length: never more entries than bytes left (each entry
    /// takes at least two), so a hostile count cannot make us loop long.
    fn count(&mut self) -> Option<usize> {
        let n = usize::try_from(self.i32()?).ok()?;
        (n <= self.0.len() / 2).then_some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(version: i16, topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut b = version.to_be_bytes().to_vec();
        b.extend(i32::try_from(topics.len()).expect("count").to_be_bytes());
        for (t, ps) in topics {
            b.extend(i16::try_from(t.len()).expect("len").to_be_bytes());
            b.extend(t.as_bytes());
            b.extend(i32::try_from(ps.len()).expect("count").to_be_bytes());
            for p in *ps {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((-1_i32).to_be_bytes()); // no user data
        b
    }

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: TopicName::new(topic).expect("topic"),
            partition,
        }
    }

    #[test]
    fn decodes_topics_and_partitions() {
        let b = assignment(1, &[("orders", &[2, 0]), ("audit", &[1])]);
        assert_eq!(decode(&b), Some(vec![tp("audit", 1), tp("orders", 0), tp("orders", 2)]));
        assert_eq!(decode(&assignment(0, &[])), Some(vec![]));
    }

    #[test]
    fn refuses_what_is_not_an_assignment() {
        assert_eq!(decode(b""), None);
        assert_eq!(decode(&assignment(9, &[("t", &[0])])), None);
        let mut huge = 0_i16.to_be_bytes().to_vec();
        huge.extend(i32::MAX.to_be_bytes());
        assert_eq!(decode(&huge), None);
        let b = assignment(0, &[("orders", &[0, 1])]);
        for cut in 0..b.len() - 4 {
            assert_eq!(decode(&b[..cut]), None, "cut at {cut}");
        }
        assert_eq!(decode(&assignment(0, &[("orders", &[-1])])), None);
        assert_eq!(decode(&assignment(0, &[("bad name!", &[0])])), None);
    }
}
