//! Coalescing of concurrent calls into one statement.
//!
//! Many tasks of one process that each send, receive or acknowledge one
//! message at a time pay a statement, a transaction and a round trip per
//! message, and Postgres spends most of its time starting and ending
//! statements. A [`Coalescer`] collects the calls that arrive while
//! earlier ones are running and hands them to one statement: a call never
//! waits for company (an idle lane runs it at once), and under load each
//! statement carries the calls that queued behind the running ones, up to
//! a weight (messages, say).
//!
//! Each lane (a queue, or a queue and a lease length) runs a few
//! statements at a time ([`Limits`]; more for heavy calls, which fill a
//! statement alone), each in a task of its own, so a caller that goes away
//! does not stall the others. A result whose caller went away is handed to
//! [`BatchOp::orphaned`].

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// A boxed future, as batch operations return.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a lane runs: one statement for many calls.
pub(crate) trait BatchOp: Send + Sync + 'static {
    /// The lane: calls with equal keys may share a statement.
    type Key: Hash + Eq + Clone + Send + Sync + 'static;
    /// One call's input.
    type Req: Send + 'static;
    /// One call's result.
    type Out: Send + 'static;

    /// Runs the calls; returns one result per call, in order.
    fn run(&self, key: Self::Key, reqs: Vec<Self::Req>) -> BoxFuture<Vec<Result<Self::Out>>>;

    /// Takes a result whose caller went away.
    fn orphaned(&self, _out: Self::Out) {}

    /// How much of a statement's capacity a call takes (messages, say).
    fn weight(&self, _req: &Self::Req) -> usize {
        1
    }
}

type Waiter<T> = oneshot::Sender<Result<T>>;
/// A waiting call of `Op`.
type Call<Op> = (<Op as BatchOp>::Req, Waiter<<Op as BatchOp>::Out>);
/// The lanes of `Op`, by key.
type Lanes<Op> = HashMap<<Op as BatchOp>::Key, Lane<<Op as BatchOp>::Req, <Op as BatchOp>::Out>>;

struct Lane<Req, Out> {
    pending: VecDeque<(Req, Waiter<Out>)>,
    flushers: usize,
}

/// How many statements a lane runs at once, and how much each carries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Statements per lane at once for light calls: the calls beyond them
    /// wait and share the next statement.
    pub flushers: usize,
    /// Statements per lane at once when a call is heavy: such a call fills
    /// a statement by itself and gains little from waiting for company.
    pub heavy_flushers: usize,
    /// The weight from which a call is heavy.
    pub heavy: usize,
    /// Most weight one statement carries (a lone call may exceed it).
    pub max_weight: usize,
}

/// Lanes of waiting calls for one kind of operation.
pub(crate) struct Coalescer<Op: BatchOp> {
    op: Arc<Op>,
    limits: Limits,
    lanes: Mutex<Lanes<Op>>,
}

impl<Op: BatchOp> Coalescer<Op> {
    /// Runs `op` within `limits`.
    pub(crate) fn new(op: Op, limits: Limits) -> Arc<Self> {
        Arc::new(Coalescer {
            op: Arc::new(op),
            limits,
            lanes: Mutex::new(HashMap::new()),
        })
    }

    /// Queues a call and waits for its result.
    pub(crate) async fn submit(self: &Arc<Self>, key: Op::Key, req: Op::Req) -> Result<Op::Out> {
        let (tx, rx) = oneshot::channel();
        let limit = if self.op.weight(&req) >= self.limits.heavy {
            self.limits.heavy_flushers
        } else {
            self.limits.flushers
        };
        let start = {
            let mut lanes = self.lanes.lock().map_err(|_| poisoned())?;
            let lane = lanes.entry(key.clone()).or_insert_with(|| Lane {
                pending: VecDeque::new(),
                flushers: 0,
            });
            lane.pending.push_back((req, tx));
            let start = lane.flushers < limit.max(1);
            if start {
                lane.flushers += 1;
            }
            start
        };
        if start {
            tokio::spawn(self.clone().flush(key));
        }
        rx.await
            .map_err(|_| Error::Busy("a coalesced statement ended without a result".into()))?
    }

    /// Runs batches of the lane until it has no waiting calls.
    async fn flush(self: Arc<Self>, key: Op::Key) {
        let mut guard = FlusherGuard {
            coalescer: &self,
            key: &key,
            done: false,
        };
        loop {
            let Some(batch) = guard.next_batch() else { return };
            let (reqs, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let mut results = self.op.run(key.clone(), reqs).await.into_iter();
            for waiter in waiters {
                let result = results
                    .next()
                    .unwrap_or_else(|| Err(Error::Busy("a coalesced statement lost a result".into())));
                if let Err(Ok(out)) = waiter.send(result) {
                    self.op.orphaned(out);
                }
            }
        }
    }
}

/// Takes batches for one flusher and gives its slot back when it ends,
/// also by panic.
struct FlusherGuard<'a, Op: BatchOp> {
    coalescer: &'a Coalescer<Op>,
    key: &'a Op::Key,
    done: bool,
}

impl<Op: BatchOp> FlusherGuard<'_, Op> {
    /// The next batch, or `None` (and the slot given back) when the lane is
    /// empty.
    fn next_batch(&mut self) -> Option<Vec<Call<Op>>> {
        let mut lanes = self.coalescer.lanes.lock().ok()?;
        let lane = lanes.get_mut(self.key)?;
        if lane.pending.is_empty() {
            self.done = true;
            lane.flushers = lane.flushers.saturating_sub(1);
            if lane.flushers == 0 {
                lanes.remove(self.key);
            }
            return None;
        }
        let mut n = 0;
        let mut weight = 0;
        for (req, _) in &lane.pending {
            weight += self.coalescer.op.weight(req);
            if n > 0 && weight > self.coalescer.limits.max_weight {
                break;
            }
            n += 1;
        }
        Some(lane.pending.drain(..n).collect())
    }
}

impl<Op: BatchOp> Drop for FlusherGuard<'_, Op> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Ok(mut lanes) = self.coalescer.lanes.lock() {
            if let Some(lane) = lanes.get_mut(self.key) {
                lane.flushers = lane.flushers.saturating_sub(1);
                // Calls still waiting fail rather than wait for a flusher
                // that will not come.
                if lane.flushers == 0 {
                    lanes.remove(self.key);
                }
            }
        }
    }
}

fn poisoned() -> Error {
    Error::Busy("coalescer state poisoned".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Doubles numbers; records the size of every batch.
    struct Double {
        batches: Arc<Mutex<Vec<usize>>>,
        orphans: Arc<AtomicUsize>,
        running: Arc<AtomicUsize>,
        most_running: Arc<AtomicUsize>,
    }

    impl BatchOp for Double {
        type Key = u8;
        type Req = u32;
        type Out = u32;

        fn run(&self, _key: u8, reqs: Vec<u32>) -> BoxFuture<Vec<Result<u32>>> {
            if let Ok(mut b) = self.batches.lock() {
                b.push(reqs.len());
            }
            let (running, most) = (self.running.clone(), self.most_running.clone());
            Box::pin(async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                reqs.into_iter().map(|r| Ok(r * 2)).collect()
            })
        }

        fn orphaned(&self, _out: u32) {
            self.orphans.fetch_add(1, Ordering::SeqCst);
        }

        /// Numbers from 100 weigh what they say; smaller ones weigh 1.
        fn weight(&self, req: &u32) -> usize {
            if *req >= 100 {
                usize::try_from(*req).unwrap_or(usize::MAX)
            } else {
                1
            }
        }
    }

    type Doubler = (
        Arc<Coalescer<Double>>,
        Arc<Mutex<Vec<usize>>>,
        Arc<AtomicUsize>,
        Arc<AtomicUsize>,
    );

    /// The coalescer, its batch sizes, its orphans and the most statements
    /// it ran at once.
    fn double() -> Doubler {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let orphans = Arc::new(AtomicUsize::new(0));
        let most_running = Arc::new(AtomicUsize::new(0));
        let op = Double {
            batches: batches.clone(),
            orphans: orphans.clone(),
            running: Arc::new(AtomicUsize::new(0)),
            most_running: most_running.clone(),
        };
        let limits = Limits {
            flushers: 1,
            heavy_flushers: 4,
            heavy: 100,
            max_weight: 8,
        };
        (Coalescer::new(op, limits), batches, orphans, most_running)
    }

    #[tokio::test]
    async fn concurrent_calls_share_statements_and_get_their_own_results() {
        let (c, batches, _, most) = double();
        let calls: Vec<_> = (0..20u32)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(async move { (i, c.submit(0, i).await) })
            })
            .collect();
        for call in calls {
            let (i, out) = call.await.expect("task");
            assert_eq!(out.expect("result"), i * 2);
        }
        let batches = batches.lock().expect("lock").clone();
        assert_eq!(batches.iter().sum::<usize>(), 20);
        assert!(batches.len() < 20, "some calls shared a statement: {batches:?}");
        assert!(batches.iter().all(|&n| n <= 8), "batches are capped: {batches:?}");
        assert_eq!(
            most.load(Ordering::SeqCst),
            1,
            "light calls run one statement at a time"
        );
        assert!(c.lanes.lock().expect("lock").is_empty(), "idle lanes are removed");
    }

    #[tokio::test]
    async fn heavy_calls_run_side_by_side_each_in_its_own_statement() {
        let (c, batches, _, most) = double();
        let calls: Vec<_> = (0..6u32)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(async move { c.submit(0, 100 + i).await })
            })
            .collect();
        for call in calls {
            assert!(call.await.expect("task").expect("result") >= 200);
        }
        assert_eq!(
            batches.lock().expect("lock").clone(),
            vec![1; 6],
            "over the weight cap: alone"
        );
        let most = most.load(Ordering::SeqCst);
        assert!(most > 1 && most <= 4, "up to the heavy limit at once: {most}");
    }

    #[tokio::test]
    async fn a_lone_call_runs_at_once_and_an_abandoned_result_is_orphaned() {
        let (c, batches, orphans, _) = double();
        assert_eq!(c.submit(1, 21).await.expect("result"), 42);
        assert_eq!(batches.lock().expect("lock").clone(), vec![1]);
        let abandoned = tokio::time::timeout(Duration::from_millis(5), c.submit(1, 1)).await;
        assert!(abandoned.is_err(), "timed out before the statement ended");
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        while orphans.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(orphans.load(Ordering::SeqCst), 1);
    }
}
