//! Record batches (magic 2) to and from pgbroker records.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pgbroker::{Header, Record, StoredRecord};

use super::compression::decompress;
use super::read::{put_varlong, Reader};

/// Why a record batch was refused. Each maps to the Kafka error a broker
/// would answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Truncated, bad CRC, inconsistent lengths: CORRUPT_MESSAGE.
    Corrupt(String),
    /// Decompressed or counted beyond the configured limit: RECORD_LIST_TOO_LARGE.
    TooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// Magic 0 or 1: UNSUPPORTED_FOR_MESSAGE_FORMAT.
    UnsupportedMagic(i8),
    /// An unknown codec number: UNSUPPORTED_COMPRESSION_TYPE.
    UnsupportedCompression(i16),
    /// A record that is well-formed but not acceptable (a header key that is
    /// not UTF-8): INVALID_RECORD.
    Invalid(String),
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::Corrupt(m) => write!(f, "corrupt record batch: {m}"),
            BatchError::TooLarge { limit } => write!(f, "record batch larger than {limit} bytes"),
            BatchError::UnsupportedMagic(m) => write!(f, "message format v{m} is not supported"),
            BatchError::UnsupportedCompression(c) => write!(f, "unknown compression codec {c}"),
            BatchError::Invalid(m) => write!(f, "invalid record: {m}"),
        }
    }
}

/// Bounds applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most bytes a batch may decompress to.
    pub max_decompressed: usize,
    /// Most records in one produce request's partition data.
    pub max_records: usize,
}

/// One decoded batch with its producer fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBatch {
    /// Producer id, -1 when the producer is not idempotent.
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// Sequence number of the first record.
    pub base_sequence: i32,
    /// Part of a transaction.
    pub transactional: bool,
    /// The records, timestamps resolved.
    pub records: Vec<Record>,
}

/// Bytes of the batch header after the length field.
const HEADER_AFTER_LENGTH: usize = 49;
/// Smallest possible encoded record (length, attributes, deltas, lengths).
const MIN_RECORD_BYTES: usize = 7;

/// Decodes every batch in a produce request's `records` field. The
/// records' keys and values of uncompressed batches share `buf`, not
/// copies of it.
pub fn decode_batches(buf: &Bytes, limits: BatchLimits) -> Result<Vec<DecodedBatch>, BatchError> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    let mut total = 0usize;
    while r.remaining() > 0 {
        let _base_offset = r.i64("base offset")?;
        let len = r.i32("batch length")?;
        let len = usize::try_from(len).map_err(|_| BatchError::Corrupt(format!("batch length {len}")))?;
        if len < HEADER_AFTER_LENGTH {
            return Err(BatchError::Corrupt(format!("batch length {len} below the header size")));
        }
        let batch = r.bytes(len, "record batch")?;
        let decoded = decode_one(buf, batch, limits)?;
        total += decoded.records.len();
        if total > limits.max_records {
            return Err(BatchError::TooLarge {
                limit: limits.max_records,
            });
        }
        out.push(decoded);
    }
    if out.is_empty() {
        return Err(BatchError::Corrupt("no record batch".to_string()));
    }
    Ok(out)
}

fn decode_one(buf: &Bytes, batch: &[u8], limits: BatchLimits) -> Result<DecodedBatch, BatchError> {
    let mut r = Reader::new(batch);
    let _leader_epoch = r.i32("leader epoch")?;
    let magic = r.i8("magic")?;
    if magic != 2 {
        return Err(BatchError::UnsupportedMagic(magic));
    }
    let crc = r.u32("crc")?;
    let checked = &batch[9..];
    if crc32c::crc32c(checked) != crc {
        return Err(BatchError::Corrupt("CRC mismatch".to_string()));
    }
    let attributes = r.i16("attributes")?;
    let _last_offset_delta = r.i32("last offset delta")?;
    let base_ts = r.i64("base timestamp")?;
    let _max_ts = r.i64("max timestamp")?;
    let producer_id = r.i64("producer id")?;
    let producer_epoch = r.i16("producer epoch")?;
    let base_sequence = r.i32("base sequence")?;
    let count = r.i32("record count")?;
    let count = usize::try_from(count).map_err(|_| BatchError::Corrupt(format!("record count {count}")))?;
    if count == 0 {
        return Err(BatchError::Corrupt("empty batch".to_string()));
    }
    if count > limits.max_records {
        return Err(BatchError::TooLarge {
            limit: limits.max_records,
        });
    }
    let log_append = attributes & 0x08 != 0;
    let transactional = attributes & 0x10 != 0;
    if attributes & 0x20 != 0 {
        return Err(BatchError::Invalid("control batches cannot be produced".to_string()));
    }
    let codec = attributes & 0x07;
    let body = r.bytes(r.remaining(), "records")?;
    let inflated;
    let (owner, body): (&Bytes, &[u8]) = if codec == 0 {
        (buf, body)
    } else {
        inflated = Bytes::from(decompress(codec, body, limits.max_decompressed)?);
        (&inflated, &inflated[..])
    };
    // Every record takes a few bytes at least: a count the body cannot
    // hold is refused before anything is reserved for it.
    if count > body.len() / MIN_RECORD_BYTES {
        return Err(BatchError::Corrupt(format!(
            "{count} records cannot fit in {} bytes",
            body.len()
        )));
    }
    let mut records = Vec::with_capacity(count);
    let mut rr = Reader::new(body);
    for _ in 0..count {
        records.push(decode_record(&mut rr, owner, base_ts, log_append)?);
    }
    if rr.remaining() != 0 {
        return Err(BatchError::Corrupt("bytes after the last record".to_string()));
    }
    Ok(DecodedBatch {
        producer_id,
        producer_epoch,
        base_sequence,
        transactional,
        records,
    })
}

/// Decodes one record of `owner`'s bytes (which `r` reads), its key and
/// value slices of `owner`.
fn decode_record(r: &mut Reader<'_>, owner: &Bytes, base_ts: i64, log_append: bool) -> Result<Record, BatchError> {
    let len = r.varint("record length")?;
    let len = usize::try_from(len).map_err(|_| BatchError::Corrupt(format!("record length {len}")))?;
    let mut rec = Reader::new(r.bytes(len, "record")?);
    let _attributes = rec.i8("record attributes")?;
    let ts_delta = rec.varlong("timestamp delta")?;
    let _offset_delta = rec.varint("offset delta")?;
    let key = rec.nullable_bytes("key")?.map(|k| owner.slice_ref(k));
    let value = rec.nullable_bytes("value")?.map(|v| owner.slice_ref(v));
    let n = rec.varint("header count")?;
    let n = usize::try_from(n).map_err(|_| BatchError::Corrupt(format!("header count {n}")))?;
    if n > rec.remaining() / 2 {
        return Err(BatchError::Corrupt(format!("{n} headers cannot fit in the record")));
    }
    let mut headers = Vec::with_capacity(n);
    for _ in 0..n {
        let k = rec
            .nullable_bytes("header key")?
            .ok_or_else(|| BatchError::Invalid("null header key".to_string()))?;
        let key =
            String::from_utf8(k.to_vec()).map_err(|_| BatchError::Invalid("header key is not UTF-8".to_string()))?;
        let value = rec.nullable_bytes("header value")?.map(<[u8]>::to_vec);
        headers.push(Header { key, value });
    }
    if rec.remaining() != 0 {
        return Err(BatchError::Corrupt("bytes after a record's headers".to_string()));
    }
    let ts = base_ts.saturating_add(ts_delta);
    let timestamp = if log_append || ts < 0 { None } else { Some(from_ms(ts)) };
    Ok(Record {
        key,
        value,
        headers,
        timestamp,
    })
}

fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varlong(out, i64::try_from(b.len()).unwrap_or(i64::MAX));
            out.extend_from_slice(b);
        }
        None => put_varlong(out, -1),
    }
}

/// The producer fields of a batch of a transaction, or of a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchProducer {
    /// Producer id.
    pub producer_id: i64,
    /// Producer epoch.
    pub epoch: i16,
    /// A control batch (one commit or abort marker).
    pub control: bool,
}

/// Attribute bits of a batch of a transaction and of a control batch.
const TRANSACTIONAL: i16 = 0x10;
const CONTROL: i16 = 0x20;

/// Appends stored records as one uncompressed batch.
pub fn encode_batch(out: &mut Vec<u8>, records: &[StoredRecord]) {
    encode_batch_of(out, records, None);
}

/// Appends stored records as one uncompressed batch, with the producer
/// fields and attribute bits of a transaction's batch when `producer` is
/// given.
pub fn encode_batch_of(out: &mut Vec<u8>, records: &[StoredRecord], producer: Option<BatchProducer>) {
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return;
    };
    encode_spanning(out, records, first.offset, last.offset + 1, producer);
}

/// Appends stored records, in offset order and all within `[base, end)`,
/// as one uncompressed batch covering exactly that range: its base offset
/// is `base` and its last offset `end - 1`, whether or not records are
/// there. A compacted log has holes; a batch that spans the removed
/// records after its last one moves the client's position past them, as
/// Kafka's cleaner keeps each batch's first and last offsets. With no
/// records, the batch is empty and only moves the position.
pub fn encode_batch_spanning(out: &mut Vec<u8>, records: &[StoredRecord], base: i64, end: i64) {
    encode_spanning(out, records, base, end, None);
}

fn encode_spanning(out: &mut Vec<u8>, records: &[StoredRecord], base: i64, end: i64, producer: Option<BatchProducer>) {
    if end <= base {
        return;
    }
    // Every record is written once, straight into `out`: its length is
    // known before it is written, and the batch's length and CRC are
    // filled in at the end.
    let stamps: Vec<i64> = records.iter().map(|r| to_ms(r.timestamp)).collect();
    let base_ts = stamps.first().copied().unwrap_or(-1);
    let max_ts = stamps.iter().copied().max().unwrap_or(base_ts);
    let payload: usize = records
        .iter()
        .map(|r| r.key.as_ref().map_or(0, Bytes::len) + r.value.as_ref().map_or(0, Bytes::len))
        .sum();
    out.reserve(BATCH_HEADER + payload + records.len() * 24);
    let start = out.len();
    out.extend_from_slice(&base.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes()); // the batch length, below
    out.extend_from_slice(&0i32.to_be_bytes()); // the partition leader epoch
    out.push(2);
    out.extend_from_slice(&0u32.to_be_bytes()); // the CRC, below
    let checked_from = out.len();
    let attributes = match producer {
        None => 0,
        Some(p) if p.control => TRANSACTIONAL | CONTROL,
        Some(_) => TRANSACTIONAL,
    };
    out.extend_from_slice(&attributes.to_be_bytes());
    let last_delta = i32::try_from(end - 1 - base).unwrap_or(i32::MAX);
    out.extend_from_slice(&last_delta.to_be_bytes());
    out.extend_from_slice(&base_ts.to_be_bytes());
    out.extend_from_slice(&max_ts.to_be_bytes());
    out.extend_from_slice(&producer.map_or(-1, |p| p.producer_id).to_be_bytes());
    out.extend_from_slice(&producer.map_or(-1, |p| p.epoch).to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes());
    out.extend_from_slice(&i32::try_from(records.len()).unwrap_or(i32::MAX).to_be_bytes());
    for (r, ts) in records.iter().zip(stamps) {
        let ts_delta = ts - base_ts;
        let offset_delta = r.offset - base;
        let headers = i64::try_from(r.headers.len()).unwrap_or(0);
        let len = 1
            + varlong_len(ts_delta)
            + varlong_len(offset_delta)
            + bytes_len(r.key.as_deref())
            + bytes_len(r.value.as_deref())
            + varlong_len(headers)
            + r.headers
                .iter()
                .map(|h| bytes_len(Some(h.key.as_bytes())) + bytes_len(h.value.as_deref()))
                .sum::<usize>();
        put_varlong(out, i64::try_from(len).unwrap_or(i64::MAX));
        out.push(0);
        put_varlong(out, ts_delta);
        put_varlong(out, offset_delta);
        put_bytes(out, r.key.as_deref());
        put_bytes(out, r.value.as_deref());
        put_varlong(out, headers);
        for h in &r.headers {
            put_bytes(out, Some(h.key.as_bytes()));
            put_bytes(out, h.value.as_deref());
        }
    }
    let batch_len = i32::try_from(out.len() - start - 12).unwrap_or(i32::MAX);
    out[start + 8..start + 12].copy_from_slice(&batch_len.to_be_bytes());
    let crc = crc32c::crc32c(&out[checked_from..]);
    out[checked_from - 4..checked_from].copy_from_slice(&crc.to_be_bytes());
}

/// Bytes of a batch's header, from its base offset through its record count.
const BATCH_HEADER: usize = 61;

/// Bytes `put_varlong` writes for `v`.
fn varlong_len(v: i64) -> usize {
    let zigzag = u64::from_ne_bytes(((v << 1) ^ (v >> 63)).to_ne_bytes());
    let bits = 64 - usize::try_from(zigzag.leading_zeros()).unwrap_or(64);
    bits.div_ceil(7).max(1)
}

/// Bytes `put_bytes` writes for `b`.
fn bytes_len(b: Option<&[u8]>) -> usize {
    b.map_or(1, |b| varlong_len(i64::try_from(b.len()).unwrap_or(i64::MAX)) + b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BatchLimits = BatchLimits {
        max_decompressed: 1 << 20,
        max_records: 10_000,
    };

    fn decode(buf: &[u8], limits: BatchLimits) -> Result<Vec<DecodedBatch>, BatchError> {
        decode_batches(&Bytes::copy_from_slice(buf), limits)
    }

    fn stored(offset: i64, key: &str, value: &str) -> StoredRecord {
        StoredRecord {
            partition: 0,
            offset,
            timestamp: from_ms(1_700_000_000_000 + offset),
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: vec![
                Header {
                    key: "h".into(),
                    value: Some(b"1".to_vec()),
                },
                Header {
                    key: "h".into(),
                    value: None,
                },
            ],
        }
    }

    #[test]
    fn varlong_lengths_match_what_is_written() {
        for v in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            -65,
            8191,
            8192,
            -8193,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ] {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            assert_eq!(varlong_len(v), buf.len(), "{v}");
        }
    }

    #[test]
    fn batches_round_trip_with_repeated_headers() {
        let records = vec![stored(10, "a", "one"), stored(11, "b", "two")];
        let mut buf = Vec::new();
        encode_batch(&mut buf, &records);
        let batches = decode(&buf, LIMITS).expect("decodes");
        assert_eq!(batches.len(), 1);
        let got = &batches[0].records;
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].key.as_deref(), Some(&b"b"[..]));
        assert_eq!(got[1].headers, records[1].headers);
        assert_eq!(got[1].timestamp, Some(records[1].timestamp));
        assert_eq!(batches[0].producer_id, -1);
    }

    #[test]
    fn records_of_every_size_round_trip() {
        let mut records = Vec::new();
        for (i, size) in [0usize, 1, 63, 64, 127, 128, 8191, 8192, 20_000, 2_000_000]
            .into_iter()
            .enumerate()
        {
            let offset = 100 + 3 * i64::try_from(i).expect("small");
            let mut r = stored(offset, "k", "v");
            r.value = Some(vec![u8::try_from(i).expect("small"); size].into());
            r.key = if i % 2 == 0 {
                None
            } else {
                Some(vec![7; size / 3].into())
            };
            r.headers.truncate(i % 3);
            r.timestamp = from_ms(1_700_000_000_000 - 5_000 * offset);
            records.push(r);
        }
        records[4].value = None;
        let mut buf = vec![9, 9, 9];
        encode_batch(&mut buf, &records);
        let batches = decode(&buf[3..], LIMITS).expect("decodes");
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].records.len(), records.len());
        for (got, want) in batches[0].records.iter().zip(&records) {
            assert_eq!(
                (&got.key, &got.value, &got.headers),
                (&want.key, &want.value, &want.headers)
            );
            assert_eq!(got.timestamp, Some(want.timestamp));
        }
        let last_delta = i32::from_be_bytes(buf[26..30].try_into().expect("4 bytes"));
        assert_eq!(last_delta, 27);
    }

    #[test]
    fn plain_batches_decode_into_slices_of_the_request() {
        let mut buf = Vec::new();
        encode_batch(&mut buf, &[stored(0, "key", "first"), stored(1, "key", "second")]);
        let raw = Bytes::from(buf);
        let got = decode_batches(&raw, LIMITS).expect("decodes");
        let within = raw.as_ptr_range();
        for r in &got[0].records {
            for part in [&r.key, &r.value] {
                let part = part.as_ref().expect("present");
                assert!(within.contains(&part.as_ptr()), "not copied out of the request");
            }
        }
        assert_eq!(got[0].records[1].value.as_deref(), Some(&b"second"[..]));
    }

    #[test]
    fn batches_span_the_holes_after_their_last_record() {
        let header = |buf: &[u8]| {
            let base = i64::from_be_bytes(buf[0..8].try_into().expect("8 bytes"));
            let last_delta = i32::from_be_bytes(buf[23..27].try_into().expect("4 bytes"));
            let count = i32::from_be_bytes(buf[57..61].try_into().expect("4 bytes"));
            (base, last_delta, count)
        };
        let mut buf = Vec::new();
        encode_batch_spanning(&mut buf, &[stored(10, "a", "one"), stored(13, "b", "two")], 10, 20);
        assert_eq!(header(&buf), (10, 9, 2));
        assert_eq!(decode(&buf, LIMITS).expect("decodes")[0].records.len(), 2);
        let mut empty = Vec::new();
        encode_batch_spanning(&mut empty, &[], 5, 8);
        assert_eq!(header(&empty), (5, 2, 0));
        let crc = u32::from_be_bytes(empty[17..21].try_into().expect("4 bytes"));
        assert_eq!(crc, crc32c::crc32c(&empty[21..]), "an empty batch is well formed");
        assert_eq!(empty.len(), 61);
        let mut none = Vec::new();
        encode_batch_spanning(&mut none, &[], 5, 5);
        assert!(none.is_empty());
    }

    #[test]
    fn transactional_and_control_batches_carry_their_producer_and_bits() {
        let data = BatchProducer {
            producer_id: 42,
            epoch: 3,
            control: false,
        };
        let mut buf = Vec::new();
        encode_batch_of(&mut buf, &[stored(5, "k", "v")], Some(data));
        let batches = decode(&buf, LIMITS).expect("decodes");
        assert!(batches[0].transactional);
        assert_eq!((batches[0].producer_id, batches[0].producer_epoch), (42, 3));
        // Attributes at byte 21: transactional (0x10), and control (0x20)
        // for a marker, which a produce may not send.
        assert_eq!(i16::from_be_bytes([buf[21], buf[22]]), 0x10);
        let mut marker = Vec::new();
        encode_batch_of(
            &mut marker,
            &[stored(6, "k", "v")],
            Some(BatchProducer { control: true, ..data }),
        );
        assert_eq!(i16::from_be_bytes([marker[21], marker[22]]), 0x30);
        assert!(matches!(decode(&marker, LIMITS), Err(BatchError::Invalid(_))));
    }

    #[test]
    fn bad_input_is_refused() {
        let mut buf = Vec::new();
        encode_batch(&mut buf, &[stored(0, "k", "v")]);
        let mut bad_crc = buf.clone();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 0xff;
        assert!(matches!(decode(&bad_crc, LIMITS), Err(BatchError::Corrupt(_))));
        assert!(matches!(
            decode(&buf[..buf.len() - 3], LIMITS),
            Err(BatchError::Corrupt(_))
        ));
        let mut magic1 = buf.clone();
        magic1[16] = 1;
        assert!(matches!(decode(&magic1, LIMITS), Err(BatchError::UnsupportedMagic(1))));
        assert!(decode(&[], LIMITS).is_err());
        // A record count far beyond what the bytes can hold.
        let mut huge = buf.clone();
        huge[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&huge[21..]);
        huge[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(decode(&huge, LIMITS).is_err());
    }

    #[test]
    fn compressed_batches_decode_and_bombs_do_not() {
        let mut plain = Vec::new();
        encode_batch(&mut plain, &[stored(0, "k", "v"), stored(1, "k2", "v2")]);
        let body = plain[61..].to_vec();
        let rebuild = |codec_body: Vec<u8>, codec: i16| {
            let mut b = plain[..61].to_vec();
            b[21..23].copy_from_slice(&codec.to_be_bytes());
            b.truncate(61);
            b.extend_from_slice(&codec_body);
            let len = i32::try_from(b.len() - 12).expect("small");
            b[8..12].copy_from_slice(&len.to_be_bytes());
            let crc = crc32c::crc32c(&b[21..]);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
            b
        };
        let gz = rebuild(super::super::compression::gzip(&body), 1);
        let got = decode(&gz, LIMITS).expect("gzip batch");
        assert_eq!(got[0].records[1].value.as_deref(), Some(&b"v2"[..]));
        let bomb = rebuild(super::super::compression::gzip(&vec![0u8; 4 << 20]), 1);
        assert!(matches!(decode(&bomb, LIMITS), Err(BatchError::TooLarge { .. })));
    }
}
