//! A bounds-checked reader over a byte slice, with Kafka's zig-zag varints.

use super::records::BatchError;

/// Reads big-endian integers and varints from a slice; every read checks
/// the remaining length first.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

fn short(what: &str) -> BatchError {
    BatchError::Corrupt(format!("truncated {what}"))
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8], BatchError> {
        if n > self.buf.len() {
            return Err(short(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], BatchError> {
        let b = self.bytes(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    pub(crate) fn i8(&mut self, what: &str) -> Result<i8, BatchError> {
        Ok(i8::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn i16(&mut self, what: &str) -> Result<i16, BatchError> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn i32(&mut self, what: &str) -> Result<i32, BatchError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, BatchError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn i64(&mut self, what: &str) -> Result<i64, BatchError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    /// An unsigned LEB128 value of at most `max_bytes` bytes.
    fn uvarint(&mut self, max_bytes: usize, what: &str) -> Result<u64, BatchError> {
        let mut value = 0u64;
        for i in 0..max_bytes {
            let b = self.array::<1>(what)?[0];
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(BatchError::Corrupt(format!("{what}: varint too long")))
    }

    /// A zig-zag varint that must fit an i32.
    pub(crate) fn varint(&mut self, what: &str) -> Result<i32, BatchError> {
        let u = self.uvarint(5, what)?;
        let v = zigzag(u);
        i32::try_from(v).map_err(|_| BatchError::Corrupt(format!("{what}: varint out of range")))
    }

    /// A zig-zag varlong.
    pub(crate) fn varlong(&mut self, what: &str) -> Result<i64, BatchError> {
        Ok(zigzag(self.uvarint(10, what)?))
    }

    /// A varint-length-prefixed byte string; length -1 is null.
    pub(crate) fn nullable_bytes(&mut self, what: &str) -> Result<Option<&'a [u8]>, BatchError> {
        let len = self.varint(what)?;
        match len {
            -1 => Ok(None),
            n if n >= 0 => Ok(Some(self.bytes(usize::try_from(n).unwrap_or(usize::MAX), what)?)),
            n => Err(BatchError::Corrupt(format!("{what}: negative length {n}"))),
        }
    }
}

fn zigzag(u: u64) -> i64 {
    let half = i64::try_from(u >> 1).unwrap_or(i64::MAX);
    if u & 1 == 0 {
        half
    } else {
        -half - 1
    }
}

/// Appends a zig-zag varint.
pub(crate) fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut u = u64::from_ne_bytes(((v << 1) ^ (v >> 63)).to_ne_bytes());
    loop {
        let low = u8::try_from(u & 0x7f).unwrap_or(0);
        u >>= 7;
        if u == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i64::from(i32::MAX),
            i64::from(i32::MIN),
            i64::MAX,
            i64::MIN,
        ] {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            let mut r = Reader::new(&out);
            assert_eq!(r.varlong("v").expect("decodes"), v);
            assert_eq!(r.remaining(), 0);
        }
    }

    #[test]
    fn overlong_and_truncated_varints_are_refused() {
        let mut r = Reader::new(&[0xff; 11]);
        assert!(r.varlong("v").is_err());
        let mut r = Reader::new(&[0x80]);
        assert!(r.varint("v").is_err());
        let mut r = Reader::new(&[0xfe, 0xff, 0xff, 0xff, 0x1f]);
        assert!(r.varint("v").is_err(), "value beyond i32");
    }
}
