//! Tests of SigV4 verification against requests signed by botocore
//! (`compat/sigv4_vector.py`, output pasted below) and against the worked
//! example of the AWS documentation.

use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::*;

/// Access key and secret the botocore vectors were signed with.
const KEY_ID: &str = "PGBKEXAMPLE000000001";
const SECRET: &str = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY00";
/// 2024-05-17T12:34:56Z, the clock the vectors were signed at.
const SIGNED_AT: u64 = 1_715_949_296;

struct Vector {
    method: &'static str,
    path: &'static str,
    query: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
}

/// botocore 1.43.11 `send_message` (JSON protocol).
const SEND_MESSAGE: Vector = Vector {
        method: "POST",
        path: "/",
        query: "",
        headers: &[
            ("X-Amz-Target", "AmazonSQS.SendMessage"),
            ("Content-Type", "application/x-amz-json-1.0"),
            ("x-amzn-query-mode", "true"),
            ("X-Amz-Date", "20240517T123456Z"),
            ("Authorization", "AWS4-HMAC-SHA256 Credential=PGBKEXAMPLE000000001/20240517/eu-west-1/sqs/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target;x-amzn-query-mode, Signature=58600ef5233ee2152dd0726bde82a9cc8de83be415fe06401e259de4ea74b87d"),
            ("Content-Length", "164"),
            ("Host", "127.0.0.1:9324"),
        ],
        body: "{\"QueueUrl\": \"http://127.0.0.1:9324/000000000000/jobs\", \"MessageBody\": \"hello \\u00e9 world\", \"MessageAttributes\": {\"k\": {\"DataType\": \"String\", \"StringValue\": \"v\"}}}",
    };

/// botocore 1.43.11 `list_queues`.
const LIST_QUEUES: Vector = Vector {
        method: "POST",
        path: "/",
        query: "",
        headers: &[
            ("X-Amz-Target", "AmazonSQS.ListQueues"),
            ("Content-Type", "application/x-amz-json-1.0"),
            ("x-amzn-query-mode", "true"),
            ("X-Amz-Date", "20240517T123456Z"),
            ("Authorization", "AWS4-HMAC-SHA256 Credential=PGBKEXAMPLE000000001/20240517/eu-west-1/sqs/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target;x-amzn-query-mode, Signature=f0e2b0e0ee4e0b31f9103d9cee6285983d08b58a1b95bc1a019b5019e3922a07"),
            ("Content-Length", "25"),
            ("Host", "127.0.0.1:9324"),
        ],
        body: "{\"QueueNamePrefix\": \"jo\"}",
    };

/// botocore 1.43.11 `SigV4Auth` on a GET with a path and a query that need
/// encoding.
const QUERY_AND_PATH: Vector = Vector {
        method: "GET",
        path: "/000000000000/my%20queue%2Fx",
        query: "b=2&a=1&a=0&Action=Get%20Me&e=",
        headers: &[
            ("Content-Type", "text/plain"),
            ("X-Amz-Date", "20240517T123456Z"),
            ("Authorization", "AWS4-HMAC-SHA256 Credential=PGBKEXAMPLE000000001/20240517/us-east-1/sqs/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=f481869da618101ecb350ad0992024786b0cfeaa02c4e92716b96407a90d930a"),
            ("Host", "127.0.0.1:9324"),
        ],
        body: "",
    };

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    map
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// Parses and verifies `v` with `secret` at `now`.
fn check(v: &Vector, map: &HeaderMap, body: &[u8], secret: &str, now: SystemTime) -> Result<Signed, SqsAuthError> {
    let req = Request {
        method: v.method,
        path: v.path,
        query: v.query,
        headers: map,
        body,
    };
    let signed = parse(&req, now)?.expect("the vector is signed");
    verify(&req, &signed, secret)?;
    Ok(signed)
}

#[test]
fn botocore_requests_verify() {
    for v in [&SEND_MESSAGE, &LIST_QUEUES, &QUERY_AND_PATH] {
        let map = headers(v.headers);
        let signed = check(v, &map, v.body.as_bytes(), SECRET, at(SIGNED_AT)).expect("valid signature");
        assert_eq!(signed.access_key_id, KEY_ID);
        assert_eq!(signed.service, "sqs");
        // Up to 15 minutes either way is accepted.
        for skew in [-899_i64, 899] {
            let now = at(SIGNED_AT.saturating_add_signed(skew));
            assert!(check(v, &map, v.body.as_bytes(), SECRET, now).is_ok(), "skew {skew}");
        }
    }
    assert_eq!(
        check(
            &LIST_QUEUES,
            &headers(LIST_QUEUES.headers),
            LIST_QUEUES.body.as_bytes(),
            SECRET,
            at(SIGNED_AT)
        )
        .expect("valid")
        .region,
        "eu-west-1"
    );
}

#[test]
fn stale_or_future_dates_are_refused() {
    let v = &SEND_MESSAGE;
    let map = headers(v.headers);
    for skew in [-901_i64, 901, 86_400] {
        let now = at(SIGNED_AT.saturating_add_signed(skew));
        let err = check(v, &map, v.body.as_bytes(), SECRET, now).expect_err("stale");
        assert!(matches!(err, SqsAuthError::SignatureExpired { .. }), "{err}");
        assert_eq!((err.code(), err.status()), ("SignatureDoesNotMatch", 403));
        assert!(err.to_string().starts_with("Signature expired"), "{err}");
    }
}

#[test]
fn any_change_breaks_the_signature() {
    let v = &SEND_MESSAGE;
    let map = headers(v.headers);
    let mismatch = |r: Result<Signed, SqsAuthError>| matches!(r, Err(SqsAuthError::SignatureDoesNotMatch(_)));
    assert!(mismatch(check(
        v,
        &map,
        v.body.as_bytes(),
        "another secret",
        at(SIGNED_AT)
    )));
    let tampered = v.body.replace("hello", "hellO");
    assert!(mismatch(check(v, &map, tampered.as_bytes(), SECRET, at(SIGNED_AT))));
    let mut retargeted = map.clone();
    retargeted.insert("x-amz-target", HeaderValue::from_static("AmazonSQS.PurgeQueue"));
    assert!(mismatch(check(
        v,
        &retargeted,
        v.body.as_bytes(),
        SECRET,
        at(SIGNED_AT)
    )));
    let mut other_host = map.clone();
    other_host.insert("host", HeaderValue::from_static("127.0.0.1:9325"));
    assert!(mismatch(check(
        v,
        &other_host,
        v.body.as_bytes(),
        SECRET,
        at(SIGNED_AT)
    )));
    let other_path = Vector {
        path: "/000000000000/jobs",
        ..SEND_MESSAGE
    };
    assert!(mismatch(check(
        &other_path,
        &map,
        v.body.as_bytes(),
        SECRET,
        at(SIGNED_AT)
    )));
    // A header outside SignedHeaders may change.
    let mut extra = map.clone();
    extra.insert("user-agent", HeaderValue::from_static("something else"));
    assert!(check(v, &extra, v.body.as_bytes(), SECRET, at(SIGNED_AT)).is_ok());
    // A reordered query is the same canonical query.
    let reordered = Vector {
        query: "e=&Action=Get%20Me&a=0&b=2&a=1",
        ..QUERY_AND_PATH
    };
    let qmap = headers(QUERY_AND_PATH.headers);
    assert!(check(&reordered, &qmap, b"", SECRET, at(SIGNED_AT)).is_ok());
    let changed = Vector {
        query: "b=2&a=1&a=0&Action=Get%20Me&e=x",
        ..QUERY_AND_PATH
    };
    assert!(mismatch(check(&changed, &qmap, b"", SECRET, at(SIGNED_AT))));
}

fn with_authorization(value: &str) -> HeaderMap {
    let mut map = headers(SEND_MESSAGE.headers);
    map.insert("authorization", HeaderValue::from_str(value).expect("value"));
    map
}

fn parse_only(map: &HeaderMap) -> Result<Option<Signed>, SqsAuthError> {
    let req = Request {
        method: "POST",
        path: "/",
        query: "",
        headers: map,
        body: b"",
    };
    parse(&req, at(SIGNED_AT))
}

#[test]
fn malformed_headers_are_refused() {
    let mut unsigned = headers(SEND_MESSAGE.headers);
    unsigned.remove("authorization");
    assert_eq!(parse_only(&unsigned).expect("no error"), None);

    let sig = "0".repeat(64);
    let cred = "PGBKEXAMPLE000000001/20240517/eu-west-1/sqs/aws4_request";
    let incomplete = [
        "AWS PGBKEXAMPLE000000001:c2lnbmF0dXJl".to_string(),
        format!("AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders=host;x-amz-date"),
        format!("AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date, Signature={sig}"),
        format!("AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders=host, Signature=xyz"),
        format!("AWS4-HMAC-SHA256 Credential=PGBK/20240517/sqs/aws4_request, SignedHeaders=host, Signature={sig}"),
        format!("AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders=content-type;x-amz-date, Signature={sig}"),
        format!("AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders=Host, Signature={sig}"),
        format!("AWS4-HMAC-SHA256 Credential={cred}, Credential={cred}, SignedHeaders=host, Signature={sig}"),
        format!("AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders=host, Signature={sig}, Extra=1"),
        format!(
            "AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders=host, Signature={sig}{}",
            " ".repeat(5000)
        ),
    ];
    for value in &incomplete {
        let err = parse_only(&with_authorization(value)).expect_err(value);
        assert!(matches!(err, SqsAuthError::IncompleteSignature(_)), "{value}: {err}");
        assert_eq!((err.code(), err.status()), ("IncompleteSignature", 400));
    }

    let good = format!("AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders=host;x-amz-date, Signature={sig}");
    let mut no_date = with_authorization(&good);
    no_date.remove("x-amz-date");
    assert!(matches!(
        parse_only(&no_date),
        Err(SqsAuthError::IncompleteSignature(_))
    ));
    let mut bad_date = with_authorization(&good);
    bad_date.insert("x-amz-date", HeaderValue::from_static("2024-05-17T12:34:56Z"));
    assert!(matches!(
        parse_only(&bad_date),
        Err(SqsAuthError::IncompleteSignature(_))
    ));

    let wrong_scope = [
        "PGBKEXAMPLE000000001/20240517/eu-west-1/s3/aws4_request",
        "PGBKEXAMPLE000000001/20240516/eu-west-1/sqs/aws4_request",
    ];
    for cred in wrong_scope {
        let value = format!("AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders=host;x-amz-date, Signature={sig}");
        let err = parse_only(&with_authorization(&value)).expect_err(cred);
        assert!(matches!(err, SqsAuthError::SignatureDoesNotMatch(_)), "{cred}: {err}");
    }
    assert!(parse_only(&with_authorization(&good)).expect("well formed").is_some());
}

/// The GET Object example of the AWS documentation ("Signature Calculations
/// for the Authorization Header", Amazon S3 API reference): the documented
/// canonical request and signature. S3 is the service in its scope, so the
/// signature is computed with [`signature`] directly.
#[test]
fn aws_documented_example() {
    let map = headers(&[
        ("host", "examplebucket.s3.amazonaws.com"),
        ("range", "bytes=0-9"),
        (
            "x-amz-content-sha256",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        ("x-amz-date", "20130524T000000Z"),
    ]);
    let req = Request {
        method: "GET",
        path: "/test.txt",
        query: "",
        headers: &map,
        body: b"",
    };
    let names: Vec<String> = ["host", "range", "x-amz-content-sha256", "x-amz-date"]
        .map(str::to_string)
        .to_vec();
    assert_eq!(
        canonical_request(&req, &names),
        "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n\
         x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
         x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n\
         e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let signed = Signed {
        access_key_id: "AKIAIOSFODNN7EXAMPLE".to_string(),
        scope_date: "20130524".to_string(),
        region: "us-east-1".to_string(),
        service: "s3".to_string(),
        signed_headers: names,
        signature: [0; 32],
        amz_date: "20130524T000000Z".to_string(),
    };
    assert_eq!(
        hex::encode(signature(&req, &signed, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")),
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    );
}

#[test]
fn amz_dates() {
    assert_eq!(parse_amz_date("20240517T123456Z"), Some(at(SIGNED_AT)));
    assert_eq!(format_amz_date(at(SIGNED_AT)), "20240517T123456Z");
    for bad in [
        "",
        "20240517T123456",
        "2024051XT123456Z",
        "20241317T123456Z",
        "20240517 123456Z",
        "２0240517T123456Z",
    ] {
        assert_eq!(parse_amz_date(bad), None, "{bad:?}");
    }
}
