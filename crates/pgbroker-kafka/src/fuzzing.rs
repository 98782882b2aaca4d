//! Entry points for the fuzz targets in `fuzz/` and for replaying their
//! corpora in tests: each takes arbitrary bytes, must not panic, and must
//! stay within the server's memory bounds whatever it is given.

use bytes::Bytes;

use crate::codec::{compression, decode_batches, BatchLimits};

/// Limits as the server applies them, smaller where that makes fuzzing
/// faster without changing what is checked.
const LIMITS: BatchLimits = BatchLimits {
    max_decompressed: 4 << 20,
    max_records: 100_000,
};

/// A request frame, without its length prefix, decoded as the server does
/// before handling it.
pub fn request(data: &[u8]) {
    let _ = crate::dispatch::decode_request(Bytes::copy_from_slice(data));
}

/// The `records` bytes of a produce request.
pub fn record_batches(data: &[u8]) {
    let _ = decode_batches(data, LIMITS);
}

/// Compressed data: the first byte picks the codec (1 gzip, 2 snappy,
/// 3 lz4, 4 zstd), the rest is decompressed with the limit.
pub fn decompress(data: &[u8]) {
    if let Some((codec, rest)) = data.split_first() {
        let _ = compression::decompress(i16::from(*codec % 5), rest, LIMITS.max_decompressed);
    }
}
