//! The matrix against librqbit-utp, which runs in this process.
//!
//! librqbit-utp has no half-close (its FIN ends the connection both ways,
//! see `interop/QUIRKS.md`), so every exchange is framed: the client sends
//! an 8-byte length and that many bytes; a sink answers with the 32-byte
//! sha256 of what it read, an echo server sends the bytes back. The time
//! runs from the dial to the client's check of the answer.
//!
//! Under loss librqbit-utp runs with a 60 s inactivity timeout and 4 MTU
//! probe retransmissions instead of 10 s and 1: with its defaults loss makes
//! it drop healthy connections, or lose the bytes of an MTU probe it gives
//! up on (both in QUIRKS.md).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{dial, our_socket, relay_for, target, within, Case, Dialer, Direction, Outcome};
use crate::seeded_bytes;

type Rqbit = Arc<librqbit_utp::UtpSocketUdp>;

/// librqbit-utp's socket on the case's loopback.
async fn rqbit_socket(case: &Case) -> Result<Rqbit, String> {
    let opts = if case.loss > 0.0 {
        librqbit_utp::SocketOpts {
            remote_inactivity_timeout: Some(Duration::from_secs(60)),
            mtu_probe_max_retransmissions: Some(4),
            ..Default::default()
        }
    } else {
        librqbit_utp::SocketOpts::default()
    };
    librqbit_utp::UtpSocket::new_udp_with_opts(
        SocketAddr::new(case.ip, 0),
        opts,
        Default::default(),
    )
    .await
    .map_err(|e| format!("librqbit-utp bind: {e}"))
}

/// Serves one framed exchange: reads the length and the bytes, and either
/// answers their sha256 (`echo` false) or sends them back as they come.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, echo: bool) -> std::io::Result<()> {
    let len = s.read_u64().await?;
    let mut left = len;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = s.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if echo {
            s.write_all(&buf[..n]).await?;
        } else {
            hash.update(&buf[..n]);
        }
        left -= n as u64;
    }
    if !echo {
        s.write_all(&hash.finalize()).await?;
    }
    s.flush().await?;
    // The client closes once it has the answer.
    let _ = s.read(&mut buf).await;
    Ok(())
}

/// The client side: sends `data` framed and checks the answer.
async fn exchange<S>(s: S, data: Arc<Vec<u8>>, echo: bool) -> std::io::Result<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(s);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        wr.write_u64(sent.len() as u64).await?;
        wr.write_all(&sent).await?;
        wr.flush().await?;
        Ok::<_, std::io::Error>(wr)
    });
    let expected: Vec<u8> = if echo { data.to_vec() } else { Sha256::digest(&*data).to_vec() };
    let mut answer = vec![0u8; expected.len()];
    rd.read_exact(&mut answer).await?;
    if answer != expected {
        return Err(std::io::Error::other(if echo {
            "the echo differs from what was sent"
        } else {
            "the sink's sha256 differs from what was sent"
        }));
    }
    let wr = writer.await.map_err(std::io::Error::other)??;
    Ok(rd.unsplit(wr))
}

/// Accepts connections with `accept` and serves each; the first result
/// goes to the returned receiver.
fn spawn_server<S, F, Fut>(mut accept: F, echo: bool) -> tokio::sync::mpsc::Receiver<String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Option<S>> + Send,
{
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while let Some(stream) = accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Err(e) = serve(stream, echo).await {
                    let _ = tx.try_send(format!("server: {e}"));
                }
            });
        }
    });
    rx
}

/// Runs one librqbit-utp case of the matrix.
pub(super) async fn run(case: &Case, limit: Duration) -> Result<Outcome, String> {
    let echo = case.direction == Direction::Echo;
    let data = Arc::new(seeded_bytes(1, case.size));
    let rqbit = rqbit_socket(case).await?;
    let ours = our_socket(case.ip).await?;
    let (server_errors, elapsed, relay, stats) = match (case.direction, case.dialer) {
        (Direction::OursToPeer | Direction::Echo, Dialer::Ours) => {
            let addr = rqbit.bind_addr();
            let server = rqbit.clone();
            let errors = spawn_server(
                move || {
                    let server = server.clone();
                    async move { server.accept().await.ok() }
                },
                echo,
            );
            let relay = relay_for(case, addr).await?;
            let t0 = Instant::now();
            let stream = dial(&ours, target(relay.as_ref(), addr), limit).await?;
            let mut stream = within(limit, "exchange", exchange(stream, data, echo)).await?;
            let elapsed = t0.elapsed();
            let stats = stream.stats();
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.shutdown()).await;
            (errors, elapsed, relay, Some(stats))
        }
        (Direction::PeerToOurs | Direction::Echo, Dialer::Peer) => {
            let addr = ours.local_addr().map_err(|e| e.to_string())?;
            let server = ours.clone();
            let errors = spawn_server(
                move || {
                    let server = server.clone();
                    async move { server.accept().await.ok() }
                },
                echo,
            );
            let relay = relay_for(case, addr).await?;
            let to = target(relay.as_ref(), addr);
            let t0 = Instant::now();
            let stream = within(limit, "librqbit-utp connect", async {
                rqbit.connect(to).await.map_err(std::io::Error::other)
            })
            .await?;
            let stream = within(limit, "exchange", exchange(stream, data, echo)).await?;
            let elapsed = t0.elapsed();
            // Its shutdown returns only once the connection is closed.
            tokio::spawn(async move {
                let (_rd, mut wr) = stream.split();
                let _ = tokio::time::timeout(Duration::from_secs(30), wr.shutdown()).await;
            });
            (errors, elapsed, relay, None)
        }
        (dir, dialer) => return Err(format!("no such case: {dir} with the {dialer} side dialing")),
    };
    let mut server_errors = server_errors;
    if let Ok(e) = server_errors.try_recv() {
        return Err(e);
    }
    Ok(Outcome { bytes: case.size as u64, elapsed, relay: relay.map(|r| r.stats()), ours: stats })
}
