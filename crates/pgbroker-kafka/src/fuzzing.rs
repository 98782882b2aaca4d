//! Entry points for the fuzz targets in `fuzz/` and for replaying their
//! corpora in tests: each takes arbitrary bytes, must not panic, and must
//! stay within the server's memory bounds whatever it is given.

use bytes::Bytes;
use pgbroker::auth::ScramCredentials;

use crate::api::sasl::{self, Step};
use crate::auth::{Mechanism, State};
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
    let _ = decode_batches(&Bytes::copy_from_slice(data), LIMITS);
}

/// Compressed data: the first byte picks the codec (1 gzip, 2 snappy,
/// 3 lz4, 4 zstd), the rest is decompressed with the limit.
pub fn decompress(data: &[u8]) {
    if let Some((codec, rest)) = data.split_first() {
        let _ = compression::decompress(i16::from(*codec % 5), rest, LIMITS.max_decompressed);
    }
}

/// The one user the `sasl` target knows.
pub const SASL_USER: &str = "user";
/// Its password.
pub const SASL_PASSWORD: &str = "pencil";
/// Its salt.
pub const SASL_SALT: &[u8] = b"pgbroker-fuzz-salt";
/// Its iteration count: far below what is stored for real users, so that a
/// PLAIN login takes microseconds; the checks are the same.
pub const SASL_ITERATIONS: u32 = 2;
/// The server's part of the SCRAM nonce, fixed so that a client-final can
/// carry the right one: base64 of 24 zero bytes.
pub const SASL_SERVER_NONCE: [u8; 24] = [0; 24];

/// The credentials the `sasl` target looks up: the fixed user's, or the
/// made-up ones the server answers an unknown user with.
fn sasl_lookup(user: &str) -> (ScramCredentials, bool) {
    if user == SASL_USER {
        (
            ScramCredentials::derive(SASL_PASSWORD.as_bytes(), SASL_SALT, SASL_ITERATIONS),
            true,
        )
    } else {
        let mut creds = sasl::dummy_credentials(user);
        creds.iterations = SASL_ITERATIONS;
        (creds, false)
    }
}

/// The server side of a SASL exchange, against one in-memory user
/// ([`SASL_USER`], [`SASL_PASSWORD`]) instead of the database. The first
/// byte picks the mechanism: even SCRAM-SHA-256, odd PLAIN. For PLAIN the
/// rest is the message. For SCRAM the rest is client-first, then, after
/// the first NUL byte (if any), client-final, answered only if client-first
/// was accepted; the server nonce is [`SASL_SERVER_NONCE`].
///
/// Panics if a login succeeds that should not: as anyone but the known
/// user, with PLAIN and a wrong password, or with SCRAM and a nonce other
/// than the one the server sent.
pub fn sasl(data: &[u8]) {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 1 {
        let step = sasl::step_offline(
            State::Handshaken(Mechanism::Plain),
            rest,
            &sasl_lookup,
            &SASL_SERVER_NONCE,
        );
        if let Step::Done(user, _, _) = step {
            let password = rest.rsplit(|b| *b == 0).next();
            assert!(
                user == SASL_USER && password == Some(SASL_PASSWORD.as_bytes()),
                "PLAIN login accepted for {user:?} without its password"
            );
        }
        return;
    }
    let (first, last) = match rest.iter().position(|b| *b == 0) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let step = sasl::step_offline(
        State::Handshaken(Mechanism::ScramSha256),
        first,
        &sasl_lookup,
        &SASL_SERVER_NONCE,
    );
    let Step::Continue(exchange, token) = step else {
        return;
    };
    assert!(
        token.starts_with(format!("r={}", exchange.nonce).as_bytes()),
        "server-first carries the combined nonce"
    );
    let Some(last) = last else {
        return;
    };
    let (user, nonce) = (exchange.user.clone(), format!(",r={},", exchange.nonce));
    if let Step::Done(done, _, _) =
        sasl::step_offline(State::ScramSent(exchange), last, &sasl_lookup, &SASL_SERVER_NONCE)
    {
        assert!(done == SASL_USER && done == user, "SCRAM login accepted for {done:?}");
        let sent = std::str::from_utf8(last).unwrap_or("");
        assert!(
            sent.contains(&nonce),
            "SCRAM login accepted with a nonce other than the server's"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus/sasl")
            .join(name);
        std::fs::read(path).expect("seed")
    }

    /// The valid seeds log in, so the fuzzer starts from the end of each
    /// exchange.
    #[test]
    fn valid_sasl_seeds_log_in() {
        for name in ["scram_valid", "scram_valid_y"] {
            let data = seed(name);
            let rest = &data[1..];
            let i = rest.iter().position(|b| *b == 0).expect("two messages");
            let state = State::Handshaken(Mechanism::ScramSha256);
            let Step::Continue(x, _) = sasl::step_offline(state, &rest[..i], &sasl_lookup, &SASL_SERVER_NONCE) else {
                panic!("{name}: client-first refused");
            };
            let last = &rest[i + 1..];
            let done = sasl::step_offline(State::ScramSent(x), last, &sasl_lookup, &SASL_SERVER_NONCE);
            assert!(matches!(done, Step::Done(..)), "{name}: client-final refused");
        }
        for name in ["plain_valid", "plain_valid_authzid"] {
            let data = seed(name);
            let state = State::Handshaken(Mechanism::Plain);
            let done = sasl::step_offline(state, &data[1..], &sasl_lookup, &SASL_SERVER_NONCE);
            assert!(matches!(done, Step::Done(..)), "{name}: refused");
        }
        for name in [
            "scram_wrong_password",
            "scram_unknown_user",
            "scram_nonce_changed",
            "plain_wrong_password",
        ] {
            sasl(&seed(name));
        }
    }
}
