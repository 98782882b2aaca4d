//! Key-to-partition mapping, identical to Kafka's default partitioner so a
//! keyed record lands in the same partition here and on a Kafka cluster.

/// Kafka's 32-bit murmur2 hash (seed `0x9747b28c`) of `data`.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    // Kafka mixes the length in as a Java int, i.e. its low 32 bits.
    let mut h: u32 = 0x9747_b28c ^ u32::try_from(len & 0xffff_ffff).unwrap_or(0);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    i32::from_ne_bytes(h.to_ne_bytes())
}

/// The partition Kafka's default partitioner picks for `key` among
/// `partitions` partitions. `partitions` must be positive.
pub fn partition_for_key(key: &[u8], partitions: usize) -> i32 {
    let positive = u64::from(u32::from_ne_bytes(murmur2(key).to_ne_bytes()) & 0x7fff_ffff);
    let n = u64::try_from(partitions.max(1)).unwrap_or(u64::MAX);
    i32::try_from(positive % n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values of Kafka's `Utils.murmur2`.
    #[test]
    fn matches_kafka() {
        let cases: &[(&str, i32)] = &[
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            ("abc", 479_470_107),
        ];
        for (key, want) in cases {
            assert_eq!(murmur2(key.as_bytes()), *want, "key {key}");
        }
    }

    #[test]
    fn partitions_in_range() {
        for i in 0..1000 {
            let p = partition_for_key(format!("k{i}").as_bytes(), 7);
            assert!((0..7).contains(&p));
        }
    }
}
