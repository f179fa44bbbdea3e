//! libp2p over uTP against TCP and QUIC on loopback: ping round trips and
//! one large request over a stream, printed side by side.
//!
//! `cargo bench -p libp2p-utp --bench libp2p`. For each transport two
//! Swarms connect (uTP and TCP upgraded with noise and yamux, QUIC with its
//! own TLS and streams), then:
//! - ping: `LIBP2P_BENCH_PINGS` (default 50) libp2p pings 50 ms apart on
//!   the idle connection; median, 90th percentile and maximum round trip;
//! - transfer: a request of `LIBP2P_BENCH_MIB` MiB (default 64) on one
//!   request-response stream (a yamux stream over uTP and TCP), answered
//!   with its length, `LIBP2P_BENCH_RUNS` times (default 3); the best and
//!   the median time and the goodput.
//!
//! `LIBP2P_BENCH_ONLY=utp` (or `tcp`, `quic`, comma-separated) runs a
//! subset.

use std::io;
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::core::upgrade::Version;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{noise, ping, tcp, yamux, Multiaddr, StreamProtocol, Swarm, Transport as _};

const BULK: StreamProtocol = StreamProtocol::new("/libp2p-utp-bench/bulk/1");

/// Request-response: the request is every byte before the stream's end, the
/// response its length (8 bytes).
#[derive(Debug, Clone, Default)]
struct BulkCodec;

impl request_response::Codec for BulkCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = u64;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        io.take(1 << 30).read_to_end(&mut buf).await?;
        Ok(buf)
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<u64> {
        let mut buf = [0; 8];
        io.read_exact(&mut buf).await?;
        Ok(u64::from_be_bytes(buf))
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&req).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        len: u64,
    ) -> io::Result<()> {
        io.write_all(&len.to_be_bytes()).await
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    ping: ping::Behaviour,
    bulk: request_response::Behaviour<BulkCodec>,
}

fn behaviour() -> Behaviour {
    Behaviour {
        ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_millis(50))),
        bulk: request_response::Behaviour::new(
            [(BULK, ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(300)),
        ),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Utp,
    Tcp,
    Quic,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Utp => "utp",
            Kind::Tcp => "tcp",
            Kind::Quic => "quic",
        }
    }

    fn listen_addr(self) -> Multiaddr {
        let s = match self {
            Kind::Utp => "/ip4/127.0.0.1/udp/0/utp",
            Kind::Tcp => "/ip4/127.0.0.1/tcp/0",
            Kind::Quic => "/ip4/127.0.0.1/udp/0/quic-v1",
        };
        s.parse().expect("multiaddr")
    }

    fn swarm(self) -> Swarm<Behaviour> {
        let idle =
            |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(600));
        let builder = libp2p::SwarmBuilder::with_new_identity().with_tokio();
        match self {
            Kind::Utp => builder
                .with_other_transport(|key| {
                    Ok(libp2p_utp::Transport::default()
                        .upgrade(Version::V1)
                        .authenticate(noise::Config::new(key)?)
                        .multiplex(yamux::Config::default()))
                })
                .expect("utp")
                .with_behaviour(|_| behaviour())
                .expect("behaviour")
                .with_swarm_config(idle)
                .build(),
            Kind::Tcp => builder
                .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
                .expect("tcp")
                .with_behaviour(|_| behaviour())
                .expect("behaviour")
                .with_swarm_config(idle)
                .build(),
            Kind::Quic => builder
                .with_quic()
                .with_behaviour(|_| behaviour())
                .expect("behaviour")
                .with_swarm_config(idle)
                .build(),
        }
    }
}

struct Figures {
    ping: Vec<Duration>,
    transfer: Vec<Duration>,
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs `server` in the background (answering bulk requests) and returns
/// the client connected to it.
async fn connect(kind: Kind) -> (Swarm<Behaviour>, libp2p::PeerId, tokio::task::JoinHandle<()>) {
    let mut server = kind.swarm();
    let mut client = kind.swarm();
    let server_id = *server.local_peer_id();
    server.listen_on(kind.listen_addr()).expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
            break address;
        }
    };
    let server_task = tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(BehaviourEvent::Bulk(request_response::Event::Message {
                message: request_response::Message::Request { request, channel, .. },
                ..
            })) = server.select_next_some().await
            {
                let len = request.len() as u64;
                drop(request);
                let _ = server.behaviour_mut().bulk.send_response(channel, len);
            }
        }
    });
    client.dial(addr).expect("dial");
    loop {
        match client.select_next_some().await {
            SwarmEvent::ConnectionEstablished { .. } => break,
            SwarmEvent::OutgoingConnectionError { error, .. } => panic!("{}: {error}", kind.name()),
            _ => {}
        }
    }
    (client, server_id, server_task)
}

async fn run(kind: Kind, pings: usize, bytes: usize, runs: usize) -> Figures {
    let (mut client, server_id, server_task) = connect(kind).await;
    // Ping: let the connection settle, then take `pings` samples.
    let mut ping = Vec::new();
    let mut skipped = 0;
    while ping.len() < pings {
        if let SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event { result, .. })) =
            client.select_next_some().await
        {
            let rtt = result.unwrap_or_else(|e| panic!("{} ping: {e}", kind.name()));
            if skipped < 3 {
                skipped += 1;
            } else {
                ping.push(rtt);
            }
        }
    }
    // Transfer: one request of `bytes` per run; pings go on meanwhile.
    let payload = vec![0x5a_u8; bytes];
    let mut transfer = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        client.behaviour_mut().bulk.send_request(&server_id, payload.clone());
        loop {
            match client.select_next_some().await {
                SwarmEvent::Behaviour(BehaviourEvent::Bulk(request_response::Event::Message {
                    message: request_response::Message::Response { response, .. },
                    ..
                })) => {
                    assert_eq!(response, bytes as u64);
                    transfer.push(started.elapsed());
                    break;
                }
                SwarmEvent::Behaviour(BehaviourEvent::Bulk(
                    request_response::Event::OutboundFailure { error, .. },
                )) => panic!("{} transfer: {error}", kind.name()),
                _ => {}
            }
        }
    }
    server_task.abort();
    Figures { ping, transfer }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn us(d: Duration) -> String {
    format!("{:.0} us", d.as_secs_f64() * 1e6)
}

fn main() {
    let pings = env("LIBP2P_BENCH_PINGS", 50).max(1);
    let mib = env("LIBP2P_BENCH_MIB", 64).max(1);
    let runs = env("LIBP2P_BENCH_RUNS", 3).max(1);
    let only = std::env::var("LIBP2P_BENCH_ONLY").unwrap_or_default();
    let kinds: Vec<Kind> = [Kind::Utp, Kind::Tcp, Kind::Quic]
        .into_iter()
        .filter(|k| only.is_empty() || only.split(',').any(|o| o.trim() == k.name()))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let bytes = mib << 20;
    println!(
        "libp2p on loopback: {pings} pings (50 ms apart), {runs} x {mib} MiB on one stream \
         (utp, tcp: noise + yamux; quic: TLS + QUIC streams)"
    );
    println!(
        "{:<6} {:>10} {:>10} {:>10}   {:>10} {:>10} {:>9}",
        "", "ping p50", "p90", "max", "best", "median", "MB/s"
    );
    for kind in kinds {
        let f = runtime.block_on(run(kind, pings, bytes, runs));
        let mut ping = f.ping;
        ping.sort();
        let mut transfer = f.transfer;
        transfer.sort();
        let best = transfer[0];
        let median = transfer[transfer.len() / 2];
        println!(
            "{:<6} {:>10} {:>10} {:>10}   {:>9.0?} {:>9.0?} {:>9.1}",
            kind.name(),
            us(percentile(&ping, 0.5)),
            us(percentile(&ping, 0.9)),
            us(*ping.last().unwrap()),
            best,
            median,
            bytes as f64 / 1e6 / median.as_secs_f64(),
        );
    }
}
