//! Decompression of record batches, stopped at a byte limit so that a small
//! compressed batch cannot expand into gigabytes.

use std::io::Read;

use super::records::BatchError;

/// The header of snappy data framed as the Java client writes it.
const XERIAL_MAGIC: &[u8] = &[0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];

/// Decompresses `data` written with Kafka codec `codec` (1 gzip, 2 snappy,
/// 3 lz4, 4 zstd). More than `limit` bytes of output is
/// [`BatchError::TooLarge`].
pub(crate) fn decompress(codec: i16, data: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    match codec {
        1 => bounded(flate2::read::GzDecoder::new(data), limit, "gzip"),
        2 => snappy(data, limit),
        3 => bounded(lz4_flex::frame::FrameDecoder::new(data), limit, "lz4"),
        4 => {
            let d = zstd::stream::read::Decoder::new(data).map_err(|e| corrupt("zstd", &e))?;
            bounded(d, limit, "zstd")
        }
        other => Err(BatchError::UnsupportedCompression(other)),
    }
}

fn corrupt(codec: &str, e: &dyn std::fmt::Display) -> BatchError {
    BatchError::Corrupt(format!("{codec} data: {e}"))
}

fn bounded(reader: impl Read, limit: usize, codec: &str) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(cap).read_to_end(&mut out).map_err(|e| corrupt(codec, &e))?;
    if out.len() > limit {
        return Err(BatchError::TooLarge { limit });
    }
    Ok(out)
}

/// Raw snappy, or the Java client's framing: a 16-byte header, then blocks
/// each preceded by its compressed length. Every block's stated output
/// length is checked against what is left of the limit before decoding.
fn snappy(data: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    if !data.starts_with(XERIAL_MAGIC) {
        snappy_block(data, &mut out, limit)?;
        return Ok(out);
    }
    let mut rest = data.get(16..).ok_or_else(|| corrupt("snappy", &"short header"))?;
    while !rest.is_empty() {
        let len_bytes: [u8; 4] = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| corrupt("snappy", &"truncated block length"))?;
        let len = usize::try_from(u32::from_be_bytes(len_bytes)).unwrap_or(usize::MAX);
        let block = rest
            .get(4..4usize.saturating_add(len))
            .ok_or_else(|| corrupt("snappy", &"truncated block"))?;
        snappy_block(block, &mut out, limit)?;
        rest = &rest[4 + len..];
    }
    Ok(out)
}

fn snappy_block(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), BatchError> {
    let n = snap::raw::decompress_len(block).map_err(|e| corrupt("snappy", &e))?;
    if out.len().saturating_add(n) > limit {
        return Err(BatchError::TooLarge { limit });
    }
    let start = out.len();
    out.resize(start + n, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| corrupt("snappy", &e))?;
    out.truncate(start + written);
    Ok(())
}

/// Compresses with gzip, for tests and tools that need compressed input.
#[cfg(test)]
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("in-memory write");
    e.finish().expect("in-memory finish")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..10_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect()
    }

    #[test]
    fn every_codec_round_trips() {
        let data = sample();
        let gz = gzip(&data);
        assert_eq!(decompress(1, &gz, 1 << 20).expect("gzip"), data);
        let sn = snap::raw::Encoder::new().compress_vec(&data).expect("snappy");
        assert_eq!(decompress(2, &sn, 1 << 20).expect("snappy"), data);
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        framed.extend_from_slice(&u32::try_from(sn.len()).expect("small").to_be_bytes());
        framed.extend_from_slice(&sn);
        assert_eq!(decompress(2, &framed, 1 << 20).expect("xerial"), data);
        let lz = {
            use std::io::Write;
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(&data).expect("lz4");
            e.finish().expect("lz4")
        };
        assert_eq!(decompress(3, &lz, 1 << 20).expect("lz4"), data);
        let zs = zstd::encode_all(&data[..], 1).expect("zstd");
        assert_eq!(decompress(4, &zs, 1 << 20).expect("zstd"), data);
    }

    #[test]
    fn bombs_stop_at_the_limit() {
        let zeros = vec![0u8; 8 << 20];
        let gz = gzip(&zeros);
        assert!(gz.len() < 64 << 10);
        assert!(matches!(decompress(1, &gz, 1 << 20), Err(BatchError::TooLarge { .. })));
        let sn = snap::raw::Encoder::new().compress_vec(&zeros).expect("snappy");
        assert!(matches!(decompress(2, &sn, 1 << 20), Err(BatchError::TooLarge { .. })));
        let zs = zstd::encode_all(&zeros[..], 1).expect("zstd");
        assert!(matches!(decompress(4, &zs, 1 << 20), Err(BatchError::TooLarge { .. })));
        let lz = {
            use std::io::Write;
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(&zeros).expect("lz4");
            e.finish().expect("lz4")
        };
        assert!(matches!(decompress(3, &lz, 1 << 20), Err(BatchError::TooLarge { .. })));
        assert!(matches!(
            decompress(7, &zs, 1 << 20),
            Err(BatchError::UnsupportedCompression(7))
        ));
        assert!(decompress(1, b"not gzip", 1 << 20).is_err());
    }
}
