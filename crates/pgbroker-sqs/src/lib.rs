//! An Amazon SQS-compatible HTTP front end for pgbroker's work queues.
//!
//! It speaks the AWS JSON 1.0 protocol of current SDKs (`POST /` with
//! `X-Amz-Target: AmazonSQS.<Action>`) and maps each action onto
//! [`pgbroker::Broker`]'s queue operations.

pub mod auth;
pub mod sigv4;
