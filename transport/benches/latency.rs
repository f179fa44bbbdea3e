//! Connection latency through a path with 25 ms each way (50 ms round
//! trip): how long from a dial to the first useful answer, for uTP with and
//! without early data (the dialer's first flight on the SYN), TCP and QUIC,
//! in the same run. Printed in milliseconds and in round trips.
//!
//! `cargo bench -p libp2p-utp --bench latency`
//!
//! - libp2p: from `Swarm::dial` to the first ping answer (the ping
//!   behaviour pings as soon as the connection is up) and, on another
//!   fresh connection, to a request-response answer. uTP and TCP upgrade
//!   with multistream-select `V1Lazy`, noise and yamux; QUIC brings its own
//!   handshake. Once with substreams negotiated as usual (`V1`), once with
//!   `V1Lazy` substreams (`with_substream_upgrade_protocol_override`).
//! - bare sockets: a 100-byte request and a 100-byte answer over
//!   `UtpSocket` (`connect` then write, or `connect_early`) and over a
//!   plain TCP socket.
//!
//! The delay comes from user-space relays in this process (the kernel here
//! has no netem): a UDP relay for uTP and QUIC, a TCP proxy for TCP. A
//! user-space TCP proxy completes the dialer's handshake at once, so it
//! holds the dialer's first bytes until one and a half round trips after
//! the connection was accepted, when they would reach the server after a
//! real TCP handshake; every later byte takes 25 ms.
//!
//! `LATENCY_BENCH_TRIALS` (default 5) fresh connections per cell; the
//! median is printed.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncWrite, StreamExt};
use libp2p::core::upgrade::Version;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{noise, ping, tcp, yamux, Multiaddr, StreamProtocol, Swarm, Transport as _};
use libp2p_utp::{ExtFlags, UtpSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

const ONE_WAY: Duration = Duration::from_millis(25);
const RTT: Duration = Duration::from_millis(50);
const ECHO: StreamProtocol = StreamProtocol::new("/libp2p-utp-bench/echo/1");

// ---------------------------------------------------------------------
// Delaying relays
// ---------------------------------------------------------------------

/// Sends what comes in on `rx` at its due time, in order.
async fn deliver<T, F, Fut>(mut rx: mpsc::UnboundedReceiver<(Instant, T)>, mut send: F)
where
    F: FnMut(T) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    while let Some((due, item)) = rx.recv().await {
        tokio::time::sleep_until(due.into()).await;
        if !send(item).await {
            return;
        }
    }
}

/// A UDP relay in front of `upstream` that delays every datagram by
/// `ONE_WAY`, both ways, for one client. Returns its address.
async fn udp_relay(upstream: SocketAddr) -> SocketAddr {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    let (to_up, up_rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let (to_client, client_rx) = mpsc::unbounded_channel::<(Instant, (Vec<u8>, SocketAddr))>();
    let client = Arc::new(parking_lot::Mutex::new(None::<SocketAddr>));
    {
        let (front, client) = (front.clone(), client.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock() = Some(from);
                let _ = to_up.send((Instant::now() + ONE_WAY, buf[..n].to_vec()));
            }
        });
    }
    {
        let back = back.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, _)) = back.recv_from(&mut buf).await {
                let Some(to) = *client.lock() else { continue };
                let _ = to_client.send((Instant::now() + ONE_WAY, (buf[..n].to_vec(), to)));
            }
        });
    }
    tokio::spawn(deliver(up_rx, move |d: Vec<u8>| {
        let back = back.clone();
        async move { back.send_to(&d, upstream).await.is_ok() }
    }));
    tokio::spawn(deliver(client_rx, move |(d, to): (Vec<u8>, SocketAddr)| {
        let front = front.clone();
        async move { front.send_to(&d, to).await.is_ok() }
    }));
    addr
}

/// Copies `from` to `to`, each chunk due `ONE_WAY` after it was read and
/// not before `not_before`.
fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    to: tokio::net::tcp::OwnedWriteHalf,
    not_before: Instant,
) {
    let (tx, rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let due = (Instant::now() + ONE_WAY).max(not_before);
            if tx.send((due, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let to = Arc::new(tokio::sync::Mutex::new(to));
        deliver(rx, move |d: Vec<u8>| {
            let to = to.clone();
            async move { to.lock().await.write_all(&d).await.is_ok() }
        })
        .await;
    });
}

/// A TCP proxy in front of `upstream`: every byte takes `ONE_WAY`, and the
/// dialer's first bytes wait until 1.5 round trips after the accept (when
/// they would arrive after a real TCP handshake).
async fn tcp_proxy(upstream: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let accepted = Instant::now();
            let Ok(server) = TcpStream::connect(upstream).await else { continue };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            pump(cr, sw, accepted + RTT + ONE_WAY);
            pump(sr, cw, accepted);
        }
    });
    addr
}

// ---------------------------------------------------------------------
// libp2p
// ---------------------------------------------------------------------

/// Request-response echo of a small request.
#[derive(Debug, Clone, Default)]
struct EchoCodec;

impl request_response::Codec for EchoCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 100];
        futures::AsyncReadExt::read_exact(io, &mut buf).await?;
        Ok(buf)
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        p: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        self.read_request(p, io).await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        futures::AsyncWriteExt::write_all(io, &req).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        p: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()> {
        self.write_request(p, io, res).await
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    ping: ping::Behaviour,
    echo: request_response::Behaviour<EchoCodec>,
}

fn behaviour() -> Behaviour {
    Behaviour {
        ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(60))),
        echo: request_response::Behaviour::new(
            [(ECHO, ProtocolSupport::Full)],
            request_response::Config::default(),
        ),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    UtpEarly,
    Utp,
    Tcp,
    Quic,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::UtpEarly, Kind::Utp, Kind::Tcp, Kind::Quic];

    fn name(self) -> &'static str {
        match self {
            Kind::UtpEarly => "utp, early data",
            Kind::Utp => "utp",
            Kind::Tcp => "tcp",
            Kind::Quic => "quic",
        }
    }

    fn swarm(self, lazy_substreams: bool) -> Swarm<Behaviour> {
        let cfg = move |c: libp2p::swarm::Config| {
            let c = c.with_idle_connection_timeout(Duration::from_secs(60));
            if lazy_substreams {
                c.with_substream_upgrade_protocol_override(Version::V1Lazy)
            } else {
                c
            }
        };
        let builder = libp2p::SwarmBuilder::with_new_identity().with_tokio();
        let utp = |early: bool| {
            let mut config = libp2p_utp::transport::Config::default();
            if early {
                let t = config.socket.transport_mut();
                t.extensions = ExtFlags(t.extensions.0 | ExtFlags::SYN_DATA.0);
            }
            config
        };
        match self {
            Kind::UtpEarly | Kind::Utp => {
                let config = utp(self == Kind::UtpEarly);
                libp2p::SwarmBuilder::with_new_identity()
                    .with_tokio()
                    .with_other_transport(move |key| {
                        Ok(libp2p_utp::Transport::new(config)
                            .upgrade(Version::V1Lazy)
                            .authenticate(noise::Config::new(key)?)
                            .multiplex(yamux::Config::default()))
                    })
                    .expect("utp")
                    .with_behaviour(|_| behaviour())
                    .expect("behaviour")
                    .with_swarm_config(cfg)
                    .build()
            }
            Kind::Tcp => builder
                .with_tcp(
                    tcp::Config::default().nodelay(true),
                    noise::Config::new,
                    yamux::Config::default,
                )
                .expect("tcp")
                .with_behaviour(|_| behaviour())
                .expect("behaviour")
                .with_swarm_config(cfg)
                .build(),
            Kind::Quic => builder
                .with_quic()
                .with_behaviour(|_| behaviour())
                .expect("behaviour")
                .with_swarm_config(cfg)
                .build(),
        }
    }

    fn listen_addr(self) -> Multiaddr {
        let s = match self {
            Kind::UtpEarly | Kind::Utp => "/ip4/127.0.0.1/udp/0/utp",
            Kind::Tcp => "/ip4/127.0.0.1/tcp/0",
            Kind::Quic => "/ip4/127.0.0.1/udp/0/quic-v1",
        };
        s.parse().expect("multiaddr")
    }
}

/// The relayed address of a listen address.
async fn through_delay(kind: Kind, addr: &Multiaddr) -> Multiaddr {
    use libp2p::multiaddr::Protocol;
    let mut port = 0;
    for p in addr.iter() {
        if let Protocol::Udp(p) | Protocol::Tcp(p) = p {
            port = p;
        }
    }
    let upstream = SocketAddr::from(([127, 0, 0, 1], port));
    let relay = match kind {
        Kind::Tcp => tcp_proxy(upstream).await,
        _ => udp_relay(upstream).await,
    };
    addr.replace(1, |p| match p {
        Protocol::Udp(_) => Some(Protocol::Udp(relay.port())),
        Protocol::Tcp(_) => Some(Protocol::Tcp(relay.port())),
        _ => None,
    })
    .expect("port")
}

/// What one fresh libp2p connection measures.
#[derive(Clone, Copy)]
enum Goal {
    Ping,
    Request,
}

async fn libp2p_trial(kind: Kind, lazy_substreams: bool, goal: Goal) -> Duration {
    let mut server = kind.swarm(lazy_substreams);
    let mut client = kind.swarm(lazy_substreams);
    let server_id = *server.local_peer_id();
    server.listen_on(kind.listen_addr()).expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
            break address;
        }
    };
    let addr = through_delay(kind, &addr).await;
    let server_task = tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(BehaviourEvent::Echo(request_response::Event::Message {
                message: request_response::Message::Request { request, channel, .. },
                ..
            })) = server.select_next_some().await
            {
                let _ = server.behaviour_mut().echo.send_response(channel, request);
            }
        }
    });
    let t0 = Instant::now();
    let dial = libp2p::swarm::dial_opts::DialOpts::peer_id(server_id).addresses(vec![addr]).build();
    client.dial(dial).expect("dial");
    if let Goal::Request = goal {
        client.behaviour_mut().echo.send_request(&server_id, vec![7u8; 100]);
    }
    let took = loop {
        match (goal, client.select_next_some().await) {
            (
                Goal::Ping,
                SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event { result, .. })),
            ) => {
                result.unwrap_or_else(|e| panic!("{}: ping: {e}", kind.name()));
                break t0.elapsed();
            }
            (
                Goal::Request,
                SwarmEvent::Behaviour(BehaviourEvent::Echo(request_response::Event::Message {
                    message: request_response::Message::Response { .. },
                    ..
                })),
            ) => break t0.elapsed(),
            (_, SwarmEvent::OutgoingConnectionError { error, .. }) => {
                panic!("{}: {error}", kind.name())
            }
            _ => {}
        }
    };
    server_task.abort();
    took
}

// ---------------------------------------------------------------------
// Bare sockets
// ---------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Bare {
    UtpEarly,
    Utp,
    Tcp,
}

async fn bare_trial(kind: Bare) -> Duration {
    let request = [1u8; 100];
    match kind {
        Bare::UtpEarly | Bare::Utp => {
            let mut config = libp2p_utp::Config::default();
            let t = config.transport_mut();
            t.extensions = ExtFlags(t.extensions.0 | ExtFlags::SYN_DATA.0);
            let server = UtpSocket::bind_with_config("127.0.0.1:0", config.clone()).await.unwrap();
            let client = UtpSocket::bind_with_config("127.0.0.1:0", config).await.unwrap();
            let relay = udp_relay(server.local_addr().unwrap()).await;
            tokio::spawn(async move {
                let mut s = server.accept().await.unwrap();
                let mut buf = [0u8; 100];
                s.read_exact(&mut buf).await.unwrap();
                s.write_all(&buf).await.unwrap();
                let _ = s.read(&mut buf).await;
            });
            let t0 = Instant::now();
            let mut s = if kind == Bare::UtpEarly {
                client.connect_early(relay).unwrap()
            } else {
                client.connect(relay).await.unwrap()
            };
            s.write_all(&request).await.unwrap();
            s.flush().await.unwrap();
            let mut answer = [0u8; 100];
            s.read_exact(&mut answer).await.unwrap();
            let took = t0.elapsed();
            assert_eq!(answer, request);
            took
        }
        Bare::Tcp => {
            let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let proxy = tcp_proxy(server.local_addr().unwrap()).await;
            tokio::spawn(async move {
                let (mut s, _) = server.accept().await.unwrap();
                let mut buf = [0u8; 100];
                s.read_exact(&mut buf).await.unwrap();
                s.write_all(&buf).await.unwrap();
                let _ = s.read(&mut buf).await;
            });
            let t0 = Instant::now();
            let mut s = TcpStream::connect(proxy).await.unwrap();
            s.set_nodelay(true).unwrap();
            s.write_all(&request).await.unwrap();
            let mut answer = [0u8; 100];
            s.read_exact(&mut answer).await.unwrap();
            let took = t0.elapsed();
            assert_eq!(answer, request);
            took
        }
    }
}

// ---------------------------------------------------------------------

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn cell(d: Duration) -> String {
    format!("{:>4.0} ms {:>4.1} RTT", d.as_secs_f64() * 1e3, d.as_secs_f64() / RTT.as_secs_f64())
}

fn main() {
    let trials: usize =
        std::env::var("LATENCY_BENCH_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let trials = trials.max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "latency through {} ms each way ({} ms round trip), median of {trials} fresh connections",
        ONE_WAY.as_millis(),
        RTT.as_millis()
    );
    println!(
        "\nlibp2p, Swarm::dial to ...      {:>18} {:>18} {:>18} {:>18}",
        "first ping", "ping, lazy subst.", "request-response", "req-resp, lazy"
    );
    for kind in Kind::ALL {
        let mut cells = Vec::new();
        for (goal, lazy) in
            [(Goal::Ping, false), (Goal::Ping, true), (Goal::Request, false), (Goal::Request, true)]
        {
            let samples: Vec<Duration> =
                (0..trials).map(|_| runtime.block_on(libp2p_trial(kind, lazy, goal))).collect();
            cells.push(cell(median(samples)));
        }
        println!(
            "{:<32} {:>18} {:>18} {:>18} {:>18}",
            kind.name(),
            cells[0],
            cells[1],
            cells[2],
            cells[3]
        );
    }
    println!("\nbare sockets, connect to a 100-byte answer");
    for (kind, name) in [
        (Bare::UtpEarly, "UtpSocket::connect_early"),
        (Bare::Utp, "UtpSocket::connect"),
        (Bare::Tcp, "TcpStream::connect"),
    ] {
        let samples: Vec<Duration> =
            (0..trials).map(|_| runtime.block_on(bare_trial(kind))).collect();
        println!("{name:<32} {:>18}", cell(median(samples)));
    }
}
