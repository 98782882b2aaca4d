//! One client connection: length-prefixed frames in, answers out, one
//! request at a time and in order, as a Kafka broker does.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::dispatch;
use crate::server::{ConnGuard, Ctx};

/// Why a connection ended, for the log.
#[derive(Debug)]
enum End {
    ClientClosed,
    Shutdown,
    FrameTooLarge(i64),
    Io(std::io::Error),
    Protocol(String),
}

pub(crate) async fn run(ctx: Arc<Ctx>, stream: TcpStream, peer: SocketAddr, mut stop: watch::Receiver<bool>) {
    let _guard = ConnGuard::new(ctx.clone());
    let (read, write) = stream.into_split();
    let mut reader = BufReader::with_capacity(64 << 10, read);
    let mut writer = BufWriter::with_capacity(64 << 10, write);
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
        let size = match usize::try_from(n) {
            Ok(size) if size <= ctx.config.max_frame_bytes && size >= 8 => size,
            _ => break End::FrameTooLarge(i64::from(n)),
        };
        // Read in steps, so a frame that announces more than it sends holds
        // only what actually arrived.
        let mut frame = BytesMut::with_capacity(size.min(1 << 20));
        while frame.len() < size {
            let want = (size - frame.len()).min(1 << 20);
            let start = frame.len();
            frame.resize(start + want, 0);
            if let Err(e) = reader.read_exact(&mut frame[start..]).await {
                return log_end(&peer, End::Io(e));
            }
        }
        match dispatch::handle(&ctx, frame.freeze(), &peer).await {
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
        if *stop.borrow() {
            break End::Shutdown;
        }
    };
    let _ = writer.flush().await;
    log_end(&peer, end);
}

fn log_end(peer: &SocketAddr, end: End) {
    match end {
        End::ClientClosed | End::Shutdown => tracing::debug!(%peer, ?end, "connection closed"),
        End::FrameTooLarge(n) => tracing::warn!(%peer, size = n, "frame size out of bounds; connection closed"),
        End::Io(e) => tracing::debug!(%peer, error = %e, "connection error"),
        End::Protocol(reason) => tracing::warn!(%peer, %reason, "bad request; connection closed"),
    }
}
