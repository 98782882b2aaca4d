//! AWS Signature Version 4 verification of SQS requests.
//!
//! Only the `Authorization` header form is accepted (what the SDKs send),
//! not presigned URLs. Verification has two steps, both free of I/O:
//! [`parse`] reads the header, checks its form, the credential scope and
//! the age of `X-Amz-Date`; the caller then looks up the secret of the
//! access key it names and [`verify`] recomputes the signature over the
//! canonical request and compares it in constant time.
//!
//! The canonical request is built as the AWS signing specification says
//! for every service but S3: method, the URI-encoded path as received,
//! the sorted and re-encoded query, the signed headers (lower-case names,
//! values trimmed with inner runs of spaces folded), the signed-header
//! list and the SHA-256 of the body.

use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::SqsAuthError;

/// The only signing algorithm accepted.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The service name a credential scope must carry.
pub const SERVICE: &str = "sqs";
/// How far `X-Amz-Date` may be from the server's clock, either way.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// Longest `Authorization` header read, in bytes.
const MAX_AUTHORIZATION_BYTES: usize = 4096;

/// Characters AWS leaves unencoded: letters, digits, `-`, `.`, `_`, `~`.
const AWS_ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
/// The same, keeping `/` (for paths).
const AWS_ENCODE_PATH: &AsciiSet = &AWS_ENCODE.remove(b'/');

type HmacSha256 = Hmac<Sha256>;

/// The parts of an HTTP request a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The method, e.g. `POST`.
    pub method: &'a str,
    /// The path as received, still percent-encoded, e.g. `/`.
    pub path: &'a str,
    /// The query string as received, without `?` (empty when none).
    pub query: &'a str,
    /// Every header received.
    pub headers: &'a HeaderMap,
    /// The body, exactly as received.
    pub body: &'a [u8],
}

/// A well-formed, fresh `Authorization` header, not yet checked against a
/// secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The access key id the request claims.
    pub access_key_id: String,
    /// The scope's date, `YYYYMMDD`.
    pub scope_date: String,
    /// The scope's region, as given (any region is accepted).
    pub region: String,
    /// The scope's service.
    pub service: String,
    /// The signed header names, lower-case, in the order given.
    pub signed_headers: Vec<String>,
    /// The signature given, as 32 bytes.
    pub signature: [u8; 32],
    /// The `X-Amz-Date` value, `YYYYMMDDTHHMMSSZ`.
    pub amz_date: String,
}

fn incomplete(why: impl Into<String>) -> SqsAuthError {
    SqsAuthError::IncompleteSignature(why.into())
}

/// Reads the `Authorization` header of `req`. `Ok(None)` when there is
/// none; [`SqsAuthError::IncompleteSignature`] when it is malformed or
/// `X-Amz-Date` is missing; [`SqsAuthError::SignatureDoesNotMatch`] when
/// the scope does not fit (another service, another date) or the request
/// was signed more than [`MAX_SKEW`] away from `now`.
pub fn parse(req: &Request<'_>, now: SystemTime) -> Result<Option<Signed>, SqsAuthError> {
    let Some(header) = req.headers.get("authorization") else {
        return Ok(None);
    };
    if header.len() > MAX_AUTHORIZATION_BYTES {
        return Err(incomplete("the Authorization header is too long"));
    }
    let header = header
        .to_str()
        .map_err(|_| incomplete("the Authorization header is not ASCII"))?;
    let rest = header
        .strip_prefix(ALGORITHM)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or_else(|| incomplete(format!("only {ALGORITHM} signatures are accepted")))?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| incomplete(format!("{:?} is not key=value", part.trim())))?;
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            other => return Err(incomplete(format!("unknown Authorization component {other:?}"))),
        };
        if slot.replace(value).is_some() {
            return Err(incomplete(format!("{key} given twice")));
        }
    }
    let credential = credential.ok_or_else(|| incomplete("Credential is missing"))?;
    let signed_headers = signed_headers.ok_or_else(|| incomplete("SignedHeaders is missing"))?;
    let signature = signature.ok_or_else(|| incomplete("Signature is missing"))?;

    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, scope_date, region, service, terminator] = scope[..] else {
        return Err(incomplete(
            "Credential must be ACCESS_KEY/YYYYMMDD/REGION/SERVICE/aws4_request",
        ));
    };
    if key_id.is_empty() || region.is_empty() || terminator != "aws4_request" {
        return Err(incomplete(
            "Credential must be ACCESS_KEY/YYYYMMDD/REGION/SERVICE/aws4_request",
        ));
    }
    let mut signature_bytes = [0u8; 32];
    hex::decode_to_slice(signature, &mut signature_bytes)
        .map_err(|_| incomplete("Signature must be 64 hexadecimal digits"))?;
    let names: Vec<String> = signed_headers.split(';').map(str::to_string).collect();
    if names
        .iter()
        .any(|n| n.is_empty() || n.bytes().any(|b| b.is_ascii_uppercase()))
    {
        return Err(incomplete("SignedHeaders must be lower-case names separated by ';'"));
    }
    if !names.iter().any(|n| n == "host") {
        return Err(incomplete("the host header must be signed"));
    }

    let amz_date = req
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| incomplete("the X-Amz-Date header is missing"))?;
    let signed_at = parse_amz_date(amz_date).ok_or_else(|| incomplete("X-Amz-Date must be YYYYMMDDTHHMMSSZ"))?;
    if service != SERVICE {
        return Err(SqsAuthError::SignatureDoesNotMatch(format!(
            "the credential is scoped to service {service:?}, not {SERVICE:?}"
        )));
    }
    if !amz_date.starts_with(scope_date) || scope_date.len() != 8 {
        return Err(SqsAuthError::SignatureDoesNotMatch(format!(
            "the credential's date {scope_date:?} is not the date of X-Amz-Date {amz_date:?}"
        )));
    }
    let skew = match now.duration_since(signed_at) {
        Ok(behind) => behind,
        Err(ahead) => ahead.duration(),
    };
    if skew > MAX_SKEW {
        return Err(SqsAuthError::SignatureExpired {
            signed: amz_date.to_string(),
            now: format_amz_date(now),
        });
    }
    Ok(Some(Signed {
        access_key_id: key_id.to_string(),
        scope_date: scope_date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers: names,
        signature: signature_bytes,
        amz_date: amz_date.to_string(),
    }))
}

/// Checks `signed` against the secret of its access key:
/// [`SqsAuthError::SignatureDoesNotMatch`] unless the signature is the one
/// `secret` makes for `req`. Compared in constant time.
pub fn verify(req: &Request<'_>, signed: &Signed, secret: &str) -> Result<(), SqsAuthError> {
    let expected = signature(req, signed, secret);
    if bool::from(expected.ct_eq(&signed.signature)) {
        Ok(())
    } else {
        Err(SqsAuthError::SignatureDoesNotMatch(
            "the signature does not match; check the secret access key and the signing method".to_string(),
        ))
    }
}

/// The signature `secret` makes for `req` under the scope, headers and
/// date of `signed` (whose own signature is ignored).
pub fn signature(req: &Request<'_>, signed: &Signed, secret: &str) -> [u8; 32] {
    let canonical = canonical_request(req, &signed.signed_headers);
    let scope = format!(
        "{}/{}/{}/aws4_request",
        signed.scope_date, signed.region, signed.service
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{}\n{scope}\n{}",
        signed.amz_date,
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), signed.scope_date.as_bytes());
    for part in [signed.region.as_str(), signed.service.as_str(), "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    hmac(&key, string_to_sign.as_bytes())
}

/// The canonical request over the given signed headers.
pub fn canonical_request(req: &Request<'_>, signed_headers: &[String]) -> String {
    let path = if req.path.is_empty() { "/" } else { req.path };
    let mut out = String::new();
    out.push_str(req.method);
    out.push('\n');
    out.extend(utf8_percent_encode(path, AWS_ENCODE_PATH));
    out.push('\n');
    out.push_str(&canonical_query(req.query));
    out.push('\n');
    for name in signed_headers {
        out.push_str(name);
        out.push(':');
        let values: Vec<String> = req
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| fold_spaces(&String::from_utf8_lossy(v.as_bytes())))
            .collect();
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(&hex::encode(Sha256::digest(req.body)));
    out
}

/// Decodes each name and value, encodes them the AWS way, sorts by name
/// then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (aws_encode(k), aws_encode(v))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn aws_encode(raw: &str) -> String {
    let decoded = percent_decode_str(raw).decode_utf8_lossy();
    utf8_percent_encode(&decoded, AWS_ENCODE).to_string()
}

/// Trims and folds each run of spaces to one.
fn fold_spaces(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length; the error cannot happen.
    let Ok(mut mac) = <HmacSha256 as KeyInit>::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// `YYYYMMDDTHHMMSSZ` as a time, or `None` when it is not one.
pub fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if b.len() != 16 || !digits(0..8) || b[8] != b'T' || !digits(9..15) || b[15] != b'Z' {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15]
    );
    humantime::parse_rfc3339(&rfc3339).ok()
}

/// A time as `YYYYMMDDTHHMMSSZ`.
pub fn format_amz_date(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect()
}

#[cfg(test)]
#[path = "sigv4_tests.rs"]
mod tests;
