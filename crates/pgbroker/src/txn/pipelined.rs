//! A transaction on a pooled connection whose BEGIN travels with its first
//! statements and whose COMMIT travels with its last one, so that neither
//! costs a round trip of its own. The coordinator's decisions and the
//! transactional append use it: the partition locks their last statement
//! takes are then held for that statement, the commit and its WAL flush,
//! with no round trip to pgbroker in between, as a plain produce holds
//! them.
//!
//! A transaction left open by a future dropped midway (a client gone)
//! never returns to the pool: its connection is closed, which rolls it
//! back.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use deadpool_postgres::{ClientWrapper, Object};

use crate::error::Result;

/// An open (or about to be opened) transaction on its own connection.
pub(crate) struct Pipelined {
    client: Option<Object>,
    /// True from the moment BEGIN may have been sent until the
    /// transaction is known to be over.
    open: AtomicBool,
    /// The connection failed while ending the transaction.
    broken: AtomicBool,
}

impl Pipelined {
    /// A connection of the pool, no transaction open yet.
    pub(crate) fn new(client: Object) -> Pipelined {
        Pipelined {
            client: Some(client),
            open: AtomicBool::new(false),
            broken: AtomicBool::new(false),
        }
    }

    /// The connection, for preparing and running statements.
    pub(crate) fn client(&self) -> &ClientWrapper {
        // Only `Drop` takes it out.
        self.client
            .as_deref()
            .unwrap_or_else(|| unreachable!("the connection is held until the end"))
    }

    /// Sends BEGIN: to be joined with the transaction's first statements,
    /// which are then sent right after it on the same connection.
    pub(crate) async fn begin(&self) -> Result<()> {
        self.open.store(true, Relaxed);
        self.client().batch_execute("BEGIN").await?;
        Ok(())
    }

    /// Runs `last` (the transaction's last statements, not polled before
    /// this call polls them) with a COMMIT sent right behind them: one
    /// round trip for both. When `last` fails, Postgres turns that COMMIT
    /// into a rollback; either way the transaction is over, and `last`'s
    /// result is returned.
    pub(crate) async fn commit_with<T, F>(&self, last: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let (out, commit) = futures_util::future::join(last, self.client().batch_execute("COMMIT")).await;
        match commit {
            Ok(()) => {
                self.open.store(false, Relaxed);
                out
            }
            Err(e) => {
                // The outcome is unknown and the connection suspect.
                self.broken.store(true, Relaxed);
                out.and(Err(e.into()))
            }
        }
    }

    /// Commits: one round trip.
    pub(crate) async fn commit(&self) -> Result<()> {
        self.commit_with(async { Ok(()) }).await
    }

    /// Rolls back the transaction, when it may be open.
    pub(crate) async fn rollback(&self) -> Result<()> {
        if self.open.load(Relaxed) && !self.broken.load(Relaxed) {
            if let Err(e) = self.client().batch_execute("ROLLBACK").await {
                self.broken.store(true, Relaxed);
                return Err(e.into());
            }
            self.open.store(false, Relaxed);
        }
        Ok(())
    }
}

impl Drop for Pipelined {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if self.open.load(Relaxed) || self.broken.load(Relaxed) {
                // Closing the connection rolls any transaction back.
                drop(Object::take(client));
            }
        }
    }
}
