//! Each connection pgbroker opens must be a server session of its own, for
//! its whole life: tokio-postgres prepares each statement once per
//! connection and runs it again by name in later transactions, and the
//! LISTEN connection of [`crate::broker::notify`] must keep its LISTEN. A
//! connection pooler that hands a client's transactions or statements to
//! whichever server connection is free (PgBouncer's `pool_mode =
//! transaction` or `statement`) breaks both. One that gives each client a
//! server connection until it disconnects (PgBouncer's `pool_mode =
//! session`) is indistinguishable from Postgres itself.
//!
//! [`check`] runs once at start-up, before anything is written, and
//! refuses the first kind with [`Error::SessionPooler`]. It does not ask
//! the pooler what it is (it may not be PgBouncer, and PgBouncer answers
//! `SHOW` only on its admin console); it asks what pgbroker needs:
//!
//! 1. Connection A runs `LISTEN c; SELECT <session id>` in one message, so
//!    that a pooler runs both on one server session (the session id is the
//!    backend's pid and its postmaster's start time).
//! 2. Connection B reads its session id. The same id as A's means B was
//!    handed A's server session: a pooler (the common case with PgBouncer,
//!    which reuses the server connection released last).
//! 3. B runs `NOTIFY c`. Postgres delivers it to every session listening
//!    on `c` as soon as that session is idle.
//! 4. A, running no statement, waits for the notification. Directly on
//!    Postgres or through a session-mode pooler, A's server session is the
//!    one that ran LISTEN, so it arrives within milliseconds ([`WAIT`] only
//!    bounds a stalled server). Through a transaction- or statement-mode
//!    pooler, A holds no server session between statements: the session
//!    that ran LISTEN is in the pooler's pool (PgBouncer closes a pooled
//!    server connection that speaks unasked) or is B's, so the notification
//!    never reaches A, whichever server connections the pooler chose. The
//!    outcome does not depend on the pooler's choices or on timing.
//! 5. A reads its session id again; a different one is a pooler too.
//!
//! The probe leaves nothing behind: a LISTEN ends with its session, and
//! nothing else is set. It runs on plain connections, before the pool's
//! connections set their search_path, so that a refused start-up leaves no
//! setting on a transaction-mode pooler's server connections.

use std::time::Duration;

use futures_util::StreamExt;
use rand::Rng;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls, SimpleQueryMessage};

use crate::error::{Error, Result};

/// How long A waits for the notification B sent; it arrives in
/// milliseconds whenever A has a session of its own.
const WAIT: Duration = Duration::from_secs(10);

/// What identifies a server session: its backend's pid, and when its
/// postmaster started (pids repeat across servers and restarts).
const SESSION_ID: &str = "SELECT pg_backend_pid()::text || '@' || pg_postmaster_start_time()::text";

/// Refuses a database URL whose connections are not sessions of their own;
/// see the module's documentation. Connection failures are
/// [`Error::Connect`], as for any other connection at start-up.
pub(crate) async fn check(config: &tokio_postgres::Config, target: &str) -> Result<()> {
    let connect_error = |e: tokio_postgres::Error| Error::Connect {
        target: target.to_string(),
        reason: super::with_causes(&e),
    };
    let (a, conn_a) = config.connect(NoTls).await.map_err(connect_error)?;
    let (tx, mut notifications) = mpsc::unbounded_channel();
    let driver_a = tokio::spawn(async move {
        let mut conn_a = conn_a;
        let mut messages = futures_util::stream::poll_fn(move |cx| conn_a.poll_message(cx));
        while let Some(Ok(msg)) = messages.next().await {
            if let AsyncMessage::Notification(n) = msg {
                if tx.send(n.payload().to_string()).is_err() {
                    break;
                }
            }
        }
    });
    let outcome = probe(config, &a, &mut notifications, target).await;
    drop(a);
    driver_a.abort();
    outcome
}

async fn probe(
    config: &tokio_postgres::Config,
    a: &Client,
    notifications: &mut mpsc::UnboundedReceiver<String>,
    target: &str,
) -> Result<()> {
    let refuse = |reason: &str| Error::SessionPooler {
        target: target.to_string(),
        reason: reason.to_string(),
    };
    let token = format!("{:016x}", rand::thread_rng().gen::<u64>());
    // Made of fixed text and hex digits only.
    let channel = format!("pgbroker_session_probe_{token}");
    let id_a = session_id(a, &format!("LISTEN {channel}; {SESSION_ID}")).await?;

    let (b, conn_b) = config.connect(NoTls).await.map_err(|e| Error::Connect {
        target: target.to_string(),
        reason: super::with_causes(&e),
    })?;
    let driver_b = tokio::spawn(conn_b);
    let id_b = session_id(&b, SESSION_ID).await;
    let notified = match id_b {
        Ok(id_b) if id_b == id_a => Err(refuse("a second connection was handed the first one's server session")),
        Ok(_) => b
            .simple_query(&format!("NOTIFY {channel}, '{token}'"))
            .await
            .map_err(Error::from),
        Err(e) => Err(e),
    };
    drop(b);
    driver_b.abort();
    notified?;

    let arrived = tokio::time::timeout(WAIT, async {
        while let Some(payload) = notifications.recv().await {
            if payload == token {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    if !arrived {
        return Err(refuse(
            "a NOTIFY did not reach the connection that ran LISTEN, so that connection did not keep its session",
        ));
    }
    if session_id(a, SESSION_ID).await? != id_a {
        return Err(refuse("a connection's statements ran in different server sessions"));
    }
    a.simple_query(&format!("UNLISTEN {channel}")).await?;
    Ok(())
}

/// The one value the last statement of `sql` returns.
async fn session_id(client: &Client, sql: &str) -> Result<String> {
    let messages = client.simple_query(sql).await?;
    messages
        .iter()
        .rev()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .ok_or_else(|| Error::Pool(format!("no session id from {sql:?}")))
}
