//! The harness's own client of the SQS API: the AWS JSON 1.0 protocol
//! (`POST /`, `X-Amz-Target: AmazonSQS.<Action>`, a JSON body) over one
//! keep-alive HTTP/1.1 connection per task, unsigned (the harness starts
//! `pgbroker serve` with `--sqs-allow-anonymous` on loopback). Message
//! bodies carry their send time as text, since SQS bodies are strings.

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// One connection to the SQS listener.
pub struct SqsClient {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl SqsClient {
    /// Opens a connection to `addr` (`host:port`).
    pub async fn connect(addr: &str) -> Result<SqsClient> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to the SQS listener at {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(SqsClient {
            sender,
            host: addr.to_string(),
        })
    }

    /// Calls `action` with `input`; the answer's JSON, or the error the
    /// server returned as an error.
    pub async fn call(&mut self, action: &str, input: &Value) -> Result<Value> {
        let request = Request::post("/")
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::CONTENT_TYPE, "application/x-amz-json-1.0")
            .header("x-amz-target", format!("AmazonSQS.{action}"))
            .body(Full::new(Bytes::from(input.to_string())))?;
        self.sender.ready().await.context("SQS connection")?;
        let response = self.sender.send_request(request).await.context(action.to_string())?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        answer(action, status, &body)
    }
}

/// The JSON of a successful answer, or an error naming the action, the
/// status, and the `__type` and message of the server's error.
pub fn answer(action: &str, status: u16, body: &[u8]) -> Result<Value> {
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body).with_context(|| format!("{action}: HTTP {status} with a body that is not JSON"))?
    };
    if status == 200 {
        return Ok(value);
    }
    let kind = value["__type"].as_str().unwrap_or("no __type");
    let message = value["message"].as_str().or(value["Message"].as_str()).unwrap_or("");
    bail!("{action}: HTTP {status}: {kind}: {message}")
}

/// Fails when a batch answer lists failed entries.
pub fn check_batch(action: &str, answer: &Value) -> Result<()> {
    match answer["Failed"].as_array() {
        Some(failed) if !failed.is_empty() => bail!("{action}: {} entries failed: {}", failed.len(), answer["Failed"]),
        _ => Ok(()),
    }
}

/// A body of `size` characters (at least 16) whose first 16 are `sent_us`
/// (microseconds since the epoch) in hex.
pub fn stamped_text(sent_us: u64, size: u32) -> String {
    let mut body = format!("{sent_us:016x}");
    let size = usize::try_from(size).unwrap_or(16).max(16);
    body.extend(std::iter::repeat_n('x', size - 16));
    body
}

/// The send time carried by a body of [`stamped_text`], if any.
pub fn sent_us(body: &str) -> Option<u64> {
    u64::from_str_radix(body.get(..16)?, 16).ok()
}

/// `(receipt handle, body)` of each message of a ReceiveMessage answer.
pub fn received(answer: &Value) -> Result<Vec<(String, String)>> {
    let Some(messages) = answer.get("Messages") else {
        return Ok(Vec::new());
    };
    let messages = messages.as_array().context("Messages is not a list")?;
    messages
        .iter()
        .map(|m| {
            let receipt = m["ReceiptHandle"].as_str().context("a message without ReceiptHandle")?;
            let body = m["Body"].as_str().context("a message without Body")?;
            Ok((receipt.to_string(), body.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_survives_the_body() {
        let body = stamped_text(1_764_780_000_123_456, 1024);
        assert_eq!(body.len(), 1024);
        assert_eq!(sent_us(&body), Some(1_764_780_000_123_456));
        assert_eq!(stamped_text(7, 8).len(), 16, "never shorter than the stamp");
        assert_eq!(sent_us("short"), None);
        assert_eq!(sent_us("zzzzzzzzzzzzzzzzpadding"), None);
    }

    #[test]
    fn errors_name_the_type_and_message() {
        let body = br#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"no queue bench"}"#;
        let err = answer("SendMessage", 400, body).expect_err("a 400");
        let text = format!("{err:#}");
        assert!(text.contains("SendMessage: HTTP 400"), "{text}");
        assert!(text.contains("QueueDoesNotExist: no queue bench"), "{text}");
        assert!(answer("DeleteMessage", 503, b"<html>").is_err());
        assert_eq!(answer("DeleteMessage", 200, b"").expect("empty is {}"), json!({}));
        assert_eq!(answer("X", 200, br#"{"a":1}"#).expect("json"), json!({"a": 1}));
    }

    #[test]
    fn failed_batch_entries_are_an_error() {
        assert!(check_batch(
            "DeleteMessageBatch",
            &json!({"Successful": [{"Id": "0"}], "Failed": []})
        )
        .is_ok());
        assert!(check_batch("DeleteMessageBatch", &json!({"Successful": []})).is_ok());
        let failed = json!({"Failed": [{"Id": "3", "Code": "ReceiptHandleIsInvalid", "SenderFault": true}]});
        let err = check_batch("DeleteMessageBatch", &failed).expect_err("failed entries");
        assert!(format!("{err}").contains("1 entries failed"), "{err}");
    }

    #[test]
    fn receive_answers_parse() {
        assert!(received(&json!({})).expect("empty answer").is_empty());
        let got = received(&json!({"Messages": [{"ReceiptHandle": "r1", "Body": "b1", "MessageId": "1"}]}))
            .expect("one message");
        assert_eq!(got, vec![("r1".to_string(), "b1".to_string())]);
        assert!(received(&json!({"Messages": [{"Body": "b"}]})).is_err());
        assert!(received(&json!({"Messages": "x"})).is_err());
    }
}
