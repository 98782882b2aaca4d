//! Recording the first receive of messages whose receive did not report
//! it: the receives hand their message ids to one task, which writes those
//! of all receives since its last statement in one statement, without
//! waiting for the WAL flush. The answer of a receive never waits for it.
//!
//! A time recorded this way is at most one statement later than the
//! receive (the attribute is approximate in SQS too). A receive that
//! reports `ApproximateFirstReceiveTimestamp` records and reads the times
//! itself, before it answers.

use pgbroker::Broker;
use tokio::sync::mpsc;

/// Most message ids one statement records.
const MAX_IDS: usize = 1000;

/// The sending side of the recording task; the task ends when this is
/// dropped.
pub(crate) struct FirstReceives {
    tx: mpsc::UnboundedSender<Vec<i64>>,
}

impl FirstReceives {
    /// Starts the recording task of `broker` (inside a Tokio runtime).
    pub fn start(broker: Broker) -> FirstReceives {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(record(broker, rx));
        FirstReceives { tx }
    }

    /// Hands over the ids of messages just received.
    pub fn received(&self, ids: Vec<i64>) {
        if self.tx.send(ids).is_err() {
            tracing::debug!("first receives not recorded: the listener is stopping");
        }
    }
}

async fn record(broker: Broker, mut rx: mpsc::UnboundedReceiver<Vec<i64>>) {
    while let Some(mut ids) = rx.recv().await {
        while ids.len() < MAX_IDS {
            match rx.try_recv() {
                Ok(more) => ids.extend(more),
                Err(_) => break,
            }
        }
        if let Err(e) = broker.queues().sqs_record_first_receives(&ids).await {
            tracing::debug!(error = %e, "could not record first receives");
        }
    }
}
