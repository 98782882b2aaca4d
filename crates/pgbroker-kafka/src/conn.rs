//! One client connection: length-prefixed frames in, answers out in the
//! order of the requests. Produce requests to distinct partitions run
//! concurrently (`pipeline`); every other request runs alone.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::watch;

use crate::auth::{Session, PRE_AUTH_MAX_FRAME_BYTES};
use crate::dispatch::{self, Answer};
use crate::pipeline::{ProduceCall, Running};
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
    let mut running = Running::default();
    let end = loop {
        if !writer.buffer().is_empty() && reader.buffer().is_empty() {
            if let Err(e) = writer.flush().await {
                break End::Io(e);
            }
        }
        // Until the next frame starts arriving, running requests are
        // answered as they finish.
        let readable = tokio::select! {
            biased;
            answer = running.next(), if !running.is_empty() => {
                match send(&mut writer, answer).await {
                    Ok(()) => continue,
                    Err(end) => break end,
                }
            }
            r = readable(&mut reader), if running.has_room(ctx.config.max_frame_bytes) => r,
            _ = stop.changed() => {
                break match drain(&mut writer, &mut running).await {
                    Ok(()) => End::Shutdown,
                    Err(end) => end,
                };
            }
        };
        match readable {
            Ok(true) => {}
            Ok(false) => break End::ClientClosed,
            Err(e) => break End::Io(e),
        }
        let mut len = [0u8; 4];
        if let Err(e) = reader.read_exact(&mut len).await {
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
        let frame = frame.freeze();
        if let Some(call) = ProduceCall::decode(&frame, &session) {
            // A partition's requests run one after the other.
            let partitions = call.partitions();
            let mut failed = None;
            while running.overlaps(&partitions) {
                if let Err(end) = send(&mut writer, running.next().await).await {
                    failed = Some(end);
                    break;
                }
            }
            if let Some(end) = failed {
                break end;
            }
            running.start(call, frame.len(), &ctx, peer, session.access.clone());
            continue;
        }
        // Anything else runs alone, once everything before it is answered.
        if let Err(end) = drain(&mut writer, &mut running).await {
            break end;
        }
        match dispatch::handle(&ctx, frame, &peer, &mut session).await {
            Ok(Some(answer)) => {
                if let Err(e) = write_frame(&mut writer, &answer).await {
                    break e;
                }
                if reader.buffer().is_empty() {
                    if let Err(e) = writer.flush().await {
                        break End::Io(e);
                    }
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

/// Waits until the next frame starts arriving: false at the end of the
/// stream. Cancel safe: what arrives stays in the reader's buffer.
async fn readable<R: AsyncRead + Unpin>(reader: &mut BufReader<R>) -> std::io::Result<bool> {
    Ok(!reader.fill_buf().await?.is_empty())
}

/// Writes one answer, with its length, to the connection's buffer.
async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut BufWriter<W>, answer: &[u8]) -> Result<(), End> {
    let len = i32::try_from(answer.len()).map_err(|_| End::Protocol("answer larger than 2 GiB".to_string()))?;
    writer.write_all(&len.to_be_bytes()).await.map_err(End::Io)?;
    writer.write_all(answer).await.map_err(End::Io)
}

/// Writes the answer of a running request (nothing for acks=0); its
/// failure ends the connection.
async fn send<W: AsyncWrite + Unpin>(writer: &mut BufWriter<W>, answer: Option<Answer>) -> Result<(), End> {
    match answer {
        Some(Ok(Some(bytes))) => write_frame(writer, &bytes).await,
        Some(Ok(None)) | None => Ok(()),
        Some(Err(reason)) => Err(End::Protocol(reason)),
    }
}

/// Answers every running request, in order.
async fn drain<W: AsyncWrite + Unpin>(writer: &mut BufWriter<W>, running: &mut Running) -> Result<(), End> {
    while !running.is_empty() {
        send(writer, running.next().await).await?;
    }
    Ok(())
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
