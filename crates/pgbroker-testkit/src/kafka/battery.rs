//! The bad-input battery for the Kafka port: what a broken or hostile
//! client sends, as raw bytes, and a blocking driver that fires all of it
//! at a server and checks that each input closes (or is refused on) only
//! its own connection.
//!
//! Blocking and self-contained (std and the codec crates only): the
//! in-process tests of `pgbroker-kafka` and the tests of the `pgbroker`
//! binary in `pgbroker-cli` fire the same battery.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// Decompression limit of the server (`KafkaConfig::max_decompressed_bytes`).
pub const MAX_DECOMPRESSED: usize = 64 << 20;
/// Largest Produce frame the server accepts by default.
pub const MAX_FRAME: usize = 16 << 20;
/// What every bomb inflates to: past the decompression limit.
pub const BOMB_BYTES: usize = MAX_DECOMPRESSED + (8 << 20);

/// Kafka error codes the battery expects.
pub mod code {
    /// The record batch is corrupt (bad CRC).
    pub const CORRUPT_MESSAGE: i16 = 2;
    /// The records are larger than the server accepts.
    pub const RECORD_LIST_TOO_LARGE: i16 = 18;
    /// The API or version is not supported.
    pub const UNSUPPORTED_VERSION: i16 = 35;
}

/// `body` with its length prefix.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = i32::try_from(body.len()).expect("small").to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// Inputs that each make the server close their connection: a frame
/// announcing 2 GiB, a negative length, an HTTP request and a TLS
/// ClientHello on the plaintext port, a header cut short, a topic name that
/// is not UTF-8, and a body that does not decode.
pub fn closing_inputs() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("2 GiB length", 0x7fff_ffffi32.to_be_bytes().to_vec()),
        ("negative length", (-5i32).to_be_bytes().to_vec()),
        ("HTTP request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("short header", [&3i32.to_be_bytes()[..], &[0, 18, 0]].concat()),
        (
            "TLS ClientHello",
            [&0x16_03_01_00i32.to_be_bytes()[..], &[1, 0, 0]].concat(),
        ),
        (
            "topic name not UTF-8",
            frame(&[0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0, 0, 0, 1, 0, 2, 0xff, 0xfe]),
        ),
        (
            "undecodable body",
            frame(&[0, 3, 0, 9, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x7f]),
        ),
    ]
}

/// Requests announcing absurd array counts in a few bytes: Metadata v1 (a
/// plain array) and v9 (a compact one) with about two billion topics,
/// JoinGroup v5 with two billion protocols, ListOffsets with a huge
/// partition array inside its first topic. Each closes its connection.
pub fn absurd_array_counts() -> Vec<(&'static str, Vec<u8>)> {
    let mut m1 = vec![0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff];
    m1.extend_from_slice(&0x7fff_ffffi32.to_be_bytes());
    let m9 = vec![0, 3, 0, 9, 0, 0, 0, 2, 0xff, 0xff, 0, 0xff, 0xff, 0xff, 0xff, 0x0f];
    let mut j5 = vec![0, 11, 0, 5, 0, 0, 0, 3, 0xff, 0xff];
    j5.extend_from_slice(&[0, 1, b'g']);
    j5.extend_from_slice(&10_000i32.to_be_bytes());
    j5.extend_from_slice(&10_000i32.to_be_bytes());
    j5.extend_from_slice(&[0, 0, 0xff, 0xff, 0, 8]);
    j5.extend_from_slice(b"consumer");
    j5.extend_from_slice(&0x7fff_fff0i32.to_be_bytes());
    let mut lo = vec![0, 2, 0, 1, 0, 0, 0, 4, 0xff, 0xff];
    lo.extend_from_slice(&(-1i32).to_be_bytes());
    lo.extend_from_slice(&1i32.to_be_bytes());
    lo.extend_from_slice(&[0, 1, b't']);
    lo.extend_from_slice(&0x7fff_ffffi32.to_be_bytes());
    vec![
        ("Metadata v1, 2^31 topics", frame(&m1)),
        ("Metadata v9, 2^31 topics", frame(&m9)),
        ("JoinGroup v5, 2^31 protocols", frame(&j5)),
        ("ListOffsets v1, 2^31 partitions", frame(&lo)),
    ]
}

/// Requests the server answers with `UNSUPPORTED_VERSION` and keeps the
/// connection for: an API key nobody knows and a known API at a version it
/// does not serve (Produce v1). With their correlation ids.
pub fn unsupported_requests() -> Vec<(&'static str, Vec<u8>, i32)> {
    let req = |key: i16, version: i16, id: i32| {
        let mut body = Vec::new();
        body.extend_from_slice(&key.to_be_bytes());
        body.extend_from_slice(&version.to_be_bytes());
        body.extend_from_slice(&id.to_be_bytes());
        frame(&body)
    };
    vec![
        ("unknown API key", req(999, 0, 78), 78),
        ("Produce v1", req(0, 1, 79), 79),
    ]
}

/// A zigzag varint.
fn varint(out: &mut Vec<u8>, v: i64) {
    varint_u(out, u64::from_ne_bytes(((v << 1) ^ (v >> 63)).to_ne_bytes()));
}

/// An unsigned varint.
fn varint_u(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(u8::try_from(v & 0x7f).expect("7 bits") | 0x80);
        v >>= 7;
    }
    out.push(u8::try_from(v).expect("7 bits"));
}

/// A record batch (magic 2) header for `count` records with the given
/// codec, followed by `records`, with length and CRC-32C filled in.
fn batch_with(codec: i16, count: i32, records: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(61 + records.len());
    b.extend_from_slice(&0i64.to_be_bytes()); // base offset
    b.extend_from_slice(&0i32.to_be_bytes()); // batch length, below
    b.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    b.push(2); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // CRC, below
    b.extend_from_slice(&codec.to_be_bytes()); // attributes
    b.extend_from_slice(&(count - 1).to_be_bytes()); // last offset delta
    b.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    b.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(records);
    let len = i32::try_from(b.len() - 12).expect("fits");
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// An uncompressed batch of one record with this value.
pub fn batch(value: &[u8]) -> Vec<u8> {
    let mut body = vec![0u8]; // attributes
    varint(&mut body, 0); // timestamp delta
    varint(&mut body, 0); // offset delta
    varint(&mut body, -1); // no key
    varint(&mut body, i64::try_from(value.len()).expect("small"));
    body.extend_from_slice(value);
    varint(&mut body, 0); // no headers
    let mut record = Vec::new();
    varint(&mut record, i64::try_from(body.len()).expect("small"));
    record.extend_from_slice(&body);
    batch_with(0, 1, &record)
}

/// A batch whose CRC does not match its bytes.
pub fn bad_crc_batch() -> Vec<u8> {
    let mut b = batch(b"x");
    let last = b.len() - 1;
    b[last] ^= 0x55;
    b
}

/// Gzip of `n` zero bytes.
pub fn gzip_zeros(n: usize) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let chunk = vec![0u8; 1 << 20];
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len());
        e.write_all(&chunk[..k]).expect("gzip");
        left -= k;
    }
    e.finish().expect("gzip")
}

/// Record batches announcing one record whose data inflate to
/// [`BOMB_BYTES`], past the server's limit: gzip, raw snappy (whose header
/// states the size), snappy in the Java client's framing (many blocks),
/// lz4 and zstd. Each must be refused with `RECORD_LIST_TOO_LARGE`.
pub fn bombs() -> Vec<(&'static str, Vec<u8>)> {
    let zeros = vec![0u8; BOMB_BYTES];
    let mut raw_snappy = Vec::new();
    varint_u(&mut raw_snappy, u64::try_from(BOMB_BYTES).expect("fits"));
    raw_snappy.extend_from_slice(&[0; 16]);
    let mut xerial = vec![0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1];
    let block = snap::raw::Encoder::new()
        .compress_vec(&zeros[..1 << 20])
        .expect("snappy");
    for _ in 0..BOMB_BYTES >> 20 {
        xerial.extend_from_slice(&u32::try_from(block.len()).expect("small").to_be_bytes());
        xerial.extend_from_slice(&block);
    }
    let lz4 = {
        let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
        e.write_all(&zeros).expect("lz4");
        e.finish().expect("lz4")
    };
    let zstd = zstd::bulk::compress(&zeros, 1).expect("zstd");
    vec![
        ("gzip bomb", batch_with(1, 1, &gzip_zeros(BOMB_BYTES))),
        ("raw snappy bomb", batch_with(2, 1, &raw_snappy)),
        ("framed snappy bomb", batch_with(2, 1, &xerial)),
        ("lz4 bomb", batch_with(3, 1, &lz4)),
        ("zstd bomb", batch_with(4, 1, &zstd)),
    ]
}

/// A Produce v3 request frame (acks -1) of `records` to one partition.
pub fn produce_frame(topic: &str, partition: i32, records: &[u8], id: i32) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + records.len());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&3i16.to_be_bytes());
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&7i16.to_be_bytes());
    b.extend_from_slice(b"battery");
    b.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id
    b.extend_from_slice(&(-1i16).to_be_bytes()); // acks
    b.extend_from_slice(&5000i32.to_be_bytes());
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&i16::try_from(topic.len()).expect("short").to_be_bytes());
    b.extend_from_slice(topic.as_bytes());
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&partition.to_be_bytes());
    b.extend_from_slice(&i32::try_from(records.len()).expect("fits").to_be_bytes());
    b.extend_from_slice(records);
    frame(&b)
}

/// A blocking connection to the Kafka port.
pub struct Client {
    stream: TcpStream,
}

impl Client {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        Client { stream }
    }

    /// Writes bytes; a write the server refuses (it closed) is ignored.
    pub fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Reads one frame; `None` when the server closed the connection.
    pub fn read_frame(&mut self) -> Option<Vec<u8>> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).ok()?;
        let n = usize::try_from(i32::from_be_bytes(len)).ok()?;
        let mut buf = vec![0u8; n];
        self.stream.read_exact(&mut buf).ok()?;
        Some(buf)
    }

    /// True when the server closed the connection within ten seconds.
    pub fn closed_by_server(&mut self) -> bool {
        let _ = self.stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }

    /// Sends a produce request and returns the partition's error code.
    pub fn produce(&mut self, topic: &str, records: &[u8]) -> i16 {
        self.send(&produce_frame(topic, 0, records, 1));
        let resp = self.read_frame().expect("a Produce answer");
        // correlation id, topic count, topic name, partition count, index
        let at = 4 + 4 + 2 + topic.len() + 4 + 4;
        i16::from_be_bytes([resp[at], resp[at + 1]])
    }

    /// ApiVersions v0; true when answered without error.
    pub fn api_versions_ok(&mut self) -> bool {
        let mut body = Vec::new();
        body.extend_from_slice(&18i16.to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&5i32.to_be_bytes());
        body.extend_from_slice(&(-1i16).to_be_bytes());
        self.send(&frame(&body));
        match self.read_frame() {
            Some(resp) => resp.len() >= 6 && resp[..4] == 5i32.to_be_bytes() && resp[4..6] == [0, 0],
            None => false,
        }
    }
}

/// Opens `n` connections that each announce a Produce frame of the largest
/// size the server accepts, send a first part of it and then nothing: the
/// server holds what arrived, not what was announced. Keep the returned
/// connections open for as long as they should weigh on the server.
pub fn hold_huge_frames(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let size = i32::try_from(MAX_FRAME).expect("fits");
    (0..n)
        .map(|_| {
            let mut c = TcpStream::connect(addr).expect("connect");
            let mut head = size.to_be_bytes().to_vec();
            head.extend_from_slice(&[0, 0, 0, 3, 0, 0, 0, 1]); // Produce v3, correlation id 1
            head.extend_from_slice(&[0u8; 64 << 10]);
            c.write_all(&head).expect("write");
            c
        })
        .collect()
}

/// Fires the whole battery at the server at `addr`, whose topic `topic`
/// (one partition or more) exists: every malformed input on a connection
/// of its own (each must be closed), `n_huge` connections at once each
/// announcing a frame of 2 GiB, `n_huge` each starting a largest-size
/// frame and stopping, bad and bomb batches on one connection (each
/// refused), while a well-behaved connection opened first keeps being
/// served. Returns once every input is answered or closed.
pub fn fire(addr: SocketAddr, topic: &str, n_huge: usize) {
    let mut keep = Client::connect(addr);
    assert!(keep.api_versions_ok(), "served before the battery");
    for (name, bytes) in closing_inputs().into_iter().chain(absurd_array_counts()) {
        let mut bad = Client::connect(addr);
        bad.send(&bytes);
        assert!(bad.closed_by_server(), "{name}: connection closed");
    }
    // A body announced but never sent.
    let mut truncated = Client::connect(addr);
    truncated.send(&100i32.to_be_bytes());
    truncated.send(&[0, 18, 0, 3]);
    drop(truncated);
    let mut asking = Client::connect(addr);
    for (name, bytes, id) in unsupported_requests() {
        asking.send(&bytes);
        let resp = asking.read_frame().unwrap_or_else(|| panic!("{name}: answered"));
        assert_eq!(resp[..4], id.to_be_bytes(), "{name}: correlation id");
        assert_eq!(
            i16::from_be_bytes([resp[4], resp[5]]),
            code::UNSUPPORTED_VERSION,
            "{name}"
        );
    }
    assert!(asking.api_versions_ok(), "the asking connection stays usable");

    // Many connections at once, each with a huge frame: 2 GiB announced
    // (closed at once), or the largest size started and left hanging.
    let announced: Vec<TcpStream> = (0..n_huge)
        .map(|_| {
            let mut c = TcpStream::connect(addr).expect("connect");
            let _ = c.write_all(&0x7fff_ffffi32.to_be_bytes());
            c
        })
        .collect();
    let hanging = hold_huge_frames(addr, n_huge);

    let mut producer = Client::connect(addr);
    assert_eq!(
        producer.produce(topic, &bad_crc_batch()),
        code::CORRUPT_MESSAGE,
        "bad CRC"
    );
    for (name, bomb) in bombs() {
        assert_eq!(
            producer.produce(topic, &bomb),
            code::RECORD_LIST_TOO_LARGE,
            "{name} stops at the limit"
        );
    }
    for mut c in announced {
        let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
        let mut b = [0u8; 1];
        assert!(matches!(c.read(&mut b), Ok(0) | Err(_)), "2 GiB frame closed");
    }
    for c in hanging {
        let _ = c.shutdown(Shutdown::Both);
    }
    assert!(keep.api_versions_ok(), "served after the battery");
    assert_eq!(keep.produce(topic, &batch(b"after")), 0, "a good batch is written");
}
