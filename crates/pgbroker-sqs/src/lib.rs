//! An Amazon SQS-compatible HTTP front end for pgbroker's work queues.
//!
//! It speaks the AWS JSON 1.0 protocol of current SDKs (`POST /` with
//! `X-Amz-Target: AmazonSQS.<Action>`, a JSON body) and maps each action
//! onto [`pgbroker::Broker`]'s queue operations: queues, sends, receives
//! with long polling, deletes and visibility changes, dead-letter queues
//! and their redrive, FIFO groups and deduplication, tags.
//!
//! ```no_run
//! # async fn demo(broker: pgbroker::Broker) -> anyhow::Result<()> {
//! let config = pgbroker_sqs::SqsConfig { allow_anonymous: true, ..Default::default() };
//! pgbroker_sqs::serve(broker, config, std::future::pending()).await
//! # }
//! ```

mod actions;
mod attributes;
pub mod auth;
mod error;
mod first_receives;
mod metrics;
mod moves;
mod protocol;
mod queue_attrs;
mod queue_cache;
mod server;
pub mod sigv4;

pub use error::{SqsError, SqsResult};
pub use server::{serve, SqsConfig, SqsServer};

/// Entry points for fuzzing the request parser.
pub mod fuzzing {
    use crate::protocol::{self, Input};

    /// Parses a request as the server does before touching the database:
    /// the target header, the body, and the fields every action reads.
    /// Returns the action's name, or the error the client would get.
    pub fn parse_request(target: Option<&str>, body: &[u8]) -> Result<&'static str, crate::SqsError> {
        let action = protocol::action(target)?;
        let map = protocol::body(body)?;
        let input = Input(&map);
        if let Some(url) = input.opt_str("QueueUrl")? {
            protocol::queue_name_of(url)?;
        }
        if let Some(name) = input.opt_str("QueueName")? {
            protocol::check_queue_name(name)?;
        }
        let mut q = crate::queue_attrs::Queue::new(false);
        crate::queue_attrs::apply(&mut q, &input.str_map("Attributes")?, true)?;
        let entries = input.objects("Entries")?;
        if !entries.is_empty() {
            protocol::check_batch(&entries)?;
        }
        for e in entries.iter().copied().chain(std::iter::once(&map)) {
            let e = Input(e);
            if let Some(body) = e.opt_str("MessageBody")? {
                protocol::check_body(body)?;
            }
            let attrs = crate::attributes::parse(e.0.get("MessageAttributes"))?;
            crate::attributes::to_headers(&attrs)?;
            let _ = crate::attributes::md5_of(&attrs);
        }
        Ok(action)
    }

    /// The fuzz target: the bytes up to the first newline are the
    /// `X-Amz-Target` header (none when there is no newline), the rest is
    /// the body. Parsing must answer, never panic; an accepted action is
    /// one the server knows.
    pub fn request(data: &[u8]) {
        let (target, body) = match data.iter().position(|b| *b == b'\n') {
            Some(i) => (std::str::from_utf8(&data[..i]).ok(), &data[i + 1..]),
            None => (None, data),
        };
        if let Ok(action) = parse_request(target, body) {
            assert!(protocol::ACTIONS.contains(&action));
        }
    }
}
