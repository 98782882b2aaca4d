//! Produce requests of one connection answered concurrently.
//!
//! A client sends the Produce requests of several partitions to one
//! broker back to back on one connection (librdkafka sends one request per
//! partition, up to `max.in.flight` of them); answering them one after the
//! other would add their appends' commit latencies up. A Produce request
//! therefore runs on a task of its own as soon as it is read, beside the
//! Produce requests before it, unless one of those writes to one of its
//! partitions: the requests of a partition run in the order they came, as
//! their sequence numbers require. Every other request runs alone, once
//! every request before it is answered. Answers leave in the order of
//! the requests, as the protocol requires.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::Decodable;
use tokio::task::JoinHandle;

use crate::auth::Session;
use crate::authz::Access;
use crate::dispatch::{encode, Answer, Api, ReqInfo};
use crate::metrics;
use crate::server::Ctx;

/// Most Produce requests of one connection running at once.
const MAX_RUNNING: usize = 8;

/// A Produce request decoded ahead of running it.
pub(crate) struct ProduceCall {
    header: RequestHeader,
    version: i16,
    req: ProduceRequest,
}

impl ProduceCall {
    /// The request in `frame`, when it is a Produce request of a version
    /// this server implements, the connection may send it now, and it
    /// decodes; anything else is left to [`crate::dispatch::handle`].
    pub(crate) fn decode(frame: &Bytes, session: &Session) -> Option<ProduceCall> {
        if !session.is_open() || session.expects_raw_token() || frame.len() < 8 {
            return None;
        }
        let mut raw = frame.clone();
        let key = raw.get_i16();
        let version = raw.get_i16();
        if key != ApiKey::Produce as i16 || !Api::find(key)?.supports(version) {
            return None;
        }
        let mut body = frame.clone();
        let header = RequestHeader::decode(&mut body, ApiKey::Produce.request_header_version(version)).ok()?;
        let req = ProduceRequest::decode(&mut body, version).ok()?;
        Some(ProduceCall { header, version, req })
    }

    /// The partitions the request writes to.
    pub(crate) fn partitions(&self) -> Vec<(TopicName, i32)> {
        self.req
            .topic_data
            .iter()
            .flat_map(|t| t.partition_data.iter().map(|p| (t.name.clone(), p.index)))
            .collect()
    }

    /// Runs the request and encodes its answer.
    pub(crate) async fn run(self, ctx: Arc<Ctx>, peer: SocketAddr, access: Access) -> Answer {
        let started = Instant::now();
        let info = ReqInfo {
            ctx: &ctx,
            version: self.version,
            header: &self.header,
            peer: &peer,
            access: &access,
        };
        let correlation_id = self.header.correlation_id;
        let answer = match crate::api::produce::produce(&info, self.req).await {
            Some(resp) => encode(
                correlation_id,
                ApiKey::Produce.response_header_version(self.version),
                self.version,
                &resp,
            )
            .map(Some),
            None => Ok(None),
        };
        metrics::request("Produce", answer.is_ok(), started.elapsed().as_secs_f64());
        answer
    }
}

/// A running Produce request.
struct Task {
    /// The partitions it writes to.
    partitions: Vec<(TopicName, i32)>,
    /// The size of its frame.
    size: usize,
    /// Its answer.
    answer: JoinHandle<Answer>,
}

/// The Produce requests of a connection running, oldest first.
#[derive(Default)]
pub(crate) struct Running {
    tasks: VecDeque<Task>,
    /// The sizes of their frames, summed.
    bytes: usize,
}

impl Running {
    /// True when another request may be read and started: fewer than
    /// [`MAX_RUNNING`] run and their frames hold less than `max_bytes`
    /// (a connection then holds at most twice its frame limit).
    pub(crate) fn has_room(&self, max_bytes: usize) -> bool {
        self.tasks.len() < MAX_RUNNING && self.bytes < max_bytes
    }

    /// True when none is.
    pub(crate) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// True when one of them writes to one of `partitions`.
    pub(crate) fn overlaps(&self, partitions: &[(TopicName, i32)]) -> bool {
        self.tasks
            .iter()
            .any(|t| t.partitions.iter().any(|p| partitions.contains(p)))
    }

    /// Starts `call`, read from a frame of `size` bytes, on a task of its
    /// own.
    pub(crate) fn start(&mut self, call: ProduceCall, size: usize, ctx: &Arc<Ctx>, peer: SocketAddr, access: Access) {
        let partitions = call.partitions();
        let answer = tokio::spawn(call.run(ctx.clone(), peer, access));
        self.bytes += size;
        self.tasks.push_back(Task {
            partitions,
            size,
            answer,
        });
    }

    /// The oldest one's answer, once it is ready; `None` when none runs.
    /// Cancel safe: the request leaves the queue only with its answer.
    pub(crate) async fn next(&mut self) -> Option<Answer> {
        let task = self.tasks.front_mut()?;
        let out = (&mut task.answer).await;
        self.bytes -= task.size;
        self.tasks.pop_front();
        Some(out.unwrap_or_else(|e| Err(format!("a Produce request failed: {e}"))))
    }
}
