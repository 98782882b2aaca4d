//! One client connection: length-prefixed frames in, answers out, one
//! request at a time and in order, as a Kafka broker does.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::watch;

use crate::auth::{Session, PRE_AUTH_MAX_FRAME_BYTES};
use crate::dispatch;
use crate::server::Ctx;

/// Why a connection ended, for the log.
#[derive(Debug)]
enum End {
    ClientClosed,
    Shutdown,
    FrameTooLarge(i64),
    Io(std::io::Error),
    Protocol(String),
    /// Authentication failed or was out of order; the answer said why.
    AuthFailed,
}

/// Serves one connection, plain TCP or TLS, until it closes or the server
/// stops.
pub(crate) async fn run<S>(ctx: Arc<Ctx>, stream: S, peer: SocketAddr, mut stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    let (read, write) = tokio::io::split(stream);
    let mut reader = BufReader::with_capacity(64 << 10, read);
    let mut writer = BufWriter::with_capacity(64 << 10, write);
    let mut session = Session::new(&ctx.config.auth);
    let end = loop {
        let mut len = [0u8; 4];
        let read_len = tokio::select! {
            r = reader.read_exact(&mut len) => r,
            _ = stop.changed() => break End::Shutdown,
        };
        if let Err(e) = read_len {
            break if e.kind() == std::io::ErrorKind::UnexpectedEof {
                End::ClientClosed
            } else {
                End::Io(e)
            };
        }
        let n = i32::from_be_bytes(len);
        // Until the connection has authenticated, frames stay small.
        let max = if session.is_open() {
            ctx.config.max_frame_bytes
        } else {
            ctx.config.max_frame_bytes.min(PRE_AUTH_MAX_FRAME_BYTES)
        };
        let size = match usize::try_from(n) {
            Ok(size) if size <= max && (size >= 8 || session.expects_raw_token()) => size,
            _ => break End::FrameTooLarge(i64::from(n)),
        };
        if !session.count_request() {
            break End::Protocol("too many requests before authentication".to_string());
        }
        // Read in steps, so a frame that announces more than it sends holds
        // only what actually arrived.
        let mut frame = BytesMut::with_capacity(size.min(1 << 20));
        while frame.len() < size {
            let want = (size - frame.len()).min(1 << 20);
            let start = frame.len();
            frame.resize(start + want, 0);
            if let Err(e) = reader.read_exact(&mut frame[start..]).await {
                return log_end(&peer, session.user(), End::Io(e));
            }
        }
        match dispatch::handle(&ctx, frame.freeze(), &peer, &mut session).await {
            Ok(Some(answer)) => {
                let len = match i32::try_from(answer.len()) {
                    Ok(l) => l,
                    Err(_) => break End::Protocol("answer larger than 2 GiB".to_string()),
                };
                let wrote = async {
                    writer.write_all(&len.to_be_bytes()).await?;
                    writer.write_all(&answer).await?;
                    if reader.buffer().is_empty() {
                        writer.flush().await?;
                    }
                    Ok::<_, std::io::Error>(())
                };
                if let Err(e) = wrote.await {
                    break End::Io(e);
                }
            }
            Ok(None) => {}
            Err(reason) => break End::Protocol(reason),
        }
        if session.close_after_answer {
            break End::AuthFailed;
        }
        if *stop.borrow() {
            break End::Shutdown;
        }
    };
    let _ = writer.flush().await;
    log_end(&peer, session.user(), end);
}

fn log_end(peer: &SocketAddr, user: Option<&str>, end: End) {
    match end {
        End::ClientClosed | End::Shutdown | End::AuthFailed => {
            tracing::debug!(%peer, user = user.unwrap_or(""), ?end, "connection closed")
        }
        End::FrameTooLarge(n) => tracing::warn!(%peer, size = n, "frame size out of bounds; connection closed"),
        End::Io(e) => tracing::debug!(%peer, error = %e, "connection error"),
        End::Protocol(reason) => tracing::warn!(%peer, %reason, "bad request; connection closed"),
    }
}
