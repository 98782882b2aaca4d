//! The queue operations that concurrent calls share: single sends, claims
//! and acknowledgements (see [`super::coalesce`]).

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::coalesce::{BatchOp, BoxFuture, Coalescer, Limits};
use super::{Message, NackOptions, QueueMeta, Receipt, ReceivedMessage, Sent, MAX_RECEIVE};
use crate::broker::{Broker, Inner};
use crate::error::{Error, Result};

/// Single sends: they wait for the WAL flush, so several statements
/// overlap; each carries up to 100 messages.
const SENDS: Limits = Limits {
    flushers: 4,
    heavy_flushers: 4,
    heavy: usize::MAX,
    max_weight: 100,
};
/// Acknowledgements do not wait for the flush: two statements at once
/// carry the small calls, up to 64 messages each, while calls for dozens
/// of messages run alone and side by side, as they would uncoalesced.
const SETTLES: Limits = Limits {
    flushers: 2,
    heavy_flushers: 16,
    heavy: 32,
    max_weight: 64,
};

/// Claims: two statements at once per queue and lease carry the small
/// calls; calls for dozens of messages get three, and each statement
/// merges every call queued behind the running ones, up to
/// [`MAX_RECEIVE`] messages. Concurrent claims walk the same front of the
/// ready index, and each passes over the rows the others are locking:
/// fifteen workers each claiming 100 on their own spent most of their time
/// there, and kept up with 32,000 messages/s sent only about 25,000.
/// Merged, they keep up. Small calls, one message per worker, keep the
/// two statements they had before.
const CLAIMS: Limits = Limits {
    flushers: 2,
    heavy_flushers: 3,
    heavy: 32,
    max_weight: MAX_RECEIVE,
};

/// The coalescers of one broker.
pub(crate) struct Batched {
    pub sends: Arc<Coalescer<SendOp>>,
    pub claims: Arc<Coalescer<ClaimOp>>,
    pub acks: Arc<Coalescer<AckOp>>,
}

impl Batched {
    pub(crate) fn new(inner: &Arc<Inner>) -> Batched {
        let weak = Arc::downgrade(inner);
        Batched {
            sends: Coalescer::new(SendOp(weak.clone()), SENDS),
            claims: Coalescer::new(ClaimOp(weak.clone()), CLAIMS),
            acks: Coalescer::new(AckOp(weak), SETTLES),
        }
    }
}

fn broker(inner: &Weak<Inner>) -> Option<Broker> {
    inner.upgrade().map(|inner| Broker { inner })
}

fn shutting_down() -> Error {
    Error::Busy("the broker is shutting down".into())
}

/// Results of calls that could not share a statement: each runs alone, so
/// each gets its own outcome.
async fn one_by_one<R, T, F, Fut>(reqs: Vec<R>, first: Option<Error>, run: F) -> Vec<Result<T>>
where
    F: Fn(R) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut out = Vec::with_capacity(reqs.len());
    let mut first = first;
    for req in reqs {
        match first.take() {
            Some(e) => out.push(Err(e)),
            None => out.push(run(req).await),
        }
    }
    out
}

/// Single sends to one queue, as one multi-row insert.
/// True when a failed statement may still have committed: the connection
/// failed without the server reporting an error for it.
fn outcome_unknown(e: &Error) -> bool {
    matches!(e, Error::Db(d) if d.as_db_error().is_none())
}

pub(crate) struct SendOp(Weak<Inner>);

impl BatchOp for SendOp {
    type Key = i64;
    type Req = (Arc<QueueMeta>, Message);
    type Out = Sent;

    fn run(&self, _queue: i64, reqs: Vec<Self::Req>) -> BoxFuture<Vec<Result<Sent>>> {
        let inner = self.0.clone();
        Box::pin(async move {
            let Some(b) = broker(&inner) else {
                return reqs.iter().map(|_| Err(shutting_down())).collect();
            };
            let meta = reqs[0].0.clone();
            let messages: Vec<Message> = reqs.iter().map(|(_, m)| m.clone()).collect();
            match crate::queues::send::send_now(&b, &meta, &messages).await {
                Ok(sent) => sent.into_iter().map(Ok).collect(),
                Err(e) if reqs.len() == 1 => vec![Err(e)],
                Err(e) if outcome_unknown(&e) => {
                    // The statement may have committed: sending again could
                    // store every message twice.
                    let e = Arc::new(e);
                    reqs.iter().map(|_| Err(Error::Batch(e.clone()))).collect()
                }
                Err(_) => {
                    one_by_one(reqs, None, |(meta, m)| {
                        let b = b.clone();
                        async move {
                            let sent = crate::queues::send::send_now(&b, &meta, std::slice::from_ref(&m)).await?;
                            sent.into_iter()
                                .next()
                                .ok_or_else(|| Error::UnknownQueue(meta.name.to_string()))
                        }
                    })
                    .await
                }
            }
        })
    }
}

/// Claims on one queue with one lease length, as one claim of their
/// total, shared out in the order the calls came.
pub(crate) struct ClaimOp(Weak<Inner>);

/// The messages one call got, with their queue, and when the claim got
/// none, how long until something of the queue comes due.
pub(crate) type Claimed = (Arc<QueueMeta>, Vec<ReceivedMessage>, Option<Duration>);

impl BatchOp for ClaimOp {
    type Key = (i64, i64);
    type Req = (Arc<QueueMeta>, usize);
    type Out = Claimed;

    fn run(&self, (_, lease): (i64, i64), reqs: Vec<Self::Req>) -> BoxFuture<Vec<Result<Claimed>>> {
        let inner = self.0.clone();
        Box::pin(async move {
            let Some(b) = broker(&inner) else {
                return reqs.iter().map(|_| Err(shutting_down())).collect();
            };
            let meta = reqs[0].0.clone();
            let total = reqs.iter().map(|(_, n)| *n).sum::<usize>().min(MAX_RECEIVE);
            match crate::queues::receive::claim_now(&b, &meta, lease, total).await {
                Ok((messages, next_due)) => share(messages, next_due, &reqs),
                Err(e) => {
                    one_by_one(reqs, Some(e), |(meta, n)| {
                        let b = b.clone();
                        async move {
                            let (messages, next_due) = crate::queues::receive::claim_now(&b, &meta, lease, n).await?;
                            Ok((meta, messages, next_due))
                        }
                    })
                    .await
                }
            }
        })
    }

    fn weight(&self, (_, n): &Self::Req) -> usize {
        *n
    }

    /// A claim whose receiver went away: released at once, so that it does
    /// not wait out its lease.
    fn orphaned(&self, (meta, messages, _): Claimed) {
        let Some(b) = broker(&self.0) else { return };
        if messages.is_empty() {
            return;
        }
        let receipts: Vec<Receipt> = messages.into_iter().map(|m| m.receipt).collect();
        tokio::spawn(async move {
            let release = NackOptions {
                delay: Some(Duration::ZERO),
                error: None,
            };
            if let Err(e) = b.queues().nack(&meta.name, &receipts, &release).await {
                tracing::debug!(error = %e, "could not release an abandoned claim");
            }
        });
    }
}

/// Hands out claimed messages (best first) to the calls in order, each up
/// to its maximum; the next-due time goes to every call when nothing was
/// claimed.
fn share(
    messages: Vec<ReceivedMessage>,
    next_due: Option<Duration>,
    reqs: &[(Arc<QueueMeta>, usize)],
) -> Vec<Result<Claimed>> {
    let mut rest = messages.into_iter();
    reqs.iter()
        .map(|(meta, n)| Ok((meta.clone(), rest.by_ref().take(*n).collect(), next_due)))
        .collect()
}

/// Acknowledgements on one queue that does not archive, as one fast
/// statement over all their receipts; if it refuses, each runs alone.
pub(crate) struct AckOp(Weak<Inner>);

impl BatchOp for AckOp {
    type Key = i64;
    type Req = (Arc<QueueMeta>, Vec<Receipt>);
    type Out = ();

    fn weight(&self, (_, receipts): &Self::Req) -> usize {
        receipts.len()
    }

    fn run(&self, _queue: i64, reqs: Vec<Self::Req>) -> BoxFuture<Vec<Result<()>>> {
        let inner = self.0.clone();
        Box::pin(async move {
            let Some(b) = broker(&inner) else {
                return reqs.iter().map(|_| Err(shutting_down())).collect();
            };
            let meta = reqs[0].0.clone();
            let all: Vec<Receipt> = reqs.iter().flat_map(|(_, r)| r.iter().cloned()).collect();
            let distinct = all.iter().map(Receipt::message_id).collect::<HashSet<_>>().len() == all.len();
            let first = if reqs.len() > 1 && distinct {
                match crate::queues::settle::try_ack_fast(&b, &meta, &all).await {
                    Ok(true) => return reqs.iter().map(|_| Ok(())).collect(),
                    Ok(false) => None,
                    Err(e) => Some(e),
                }
            } else {
                None
            };
            one_by_one(reqs, first, |(meta, receipts)| {
                let b = b.clone();
                async move { crate::queues::settle::ack_now(&b, &meta, &receipts).await }
            })
            .await
        })
    }
}
