//! Swarms over uTP with noise and yamux: ping, identify and a 1 MiB
//! request-response echo over IPv4 and IPv6; a Swarm with TCP, QUIC and uTP
//! dialing a uTP-only peer; two Swarms dialing each other as in a DCUtR hole
//! punch (one of them with `role = Listener`).

mod common;

use std::io;
use std::time::Duration;

use common::{bounded, init_tracing};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::Version;
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::multiaddr::{Multiaddr, Protocol};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, ping, tcp, yamux, StreamProtocol, Swarm, Transport as _};
use libp2p_utp::ExtFlags;

const ECHO: StreamProtocol = StreamProtocol::new("/libp2p-utp-test/echo/1");
const MAX_MESSAGE: u64 = 4 << 20;

/// Request-response with raw bytes: a request or response is everything the
/// writer sends before closing the stream.
#[derive(Debug, Clone, Default)]
struct BytesCodec;

async fn read_all<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    io.take(MAX_MESSAGE).read_to_end(&mut buf).await?;
    Ok(buf)
}

impl request_response::Codec for BytesCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_all(io).await
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_all(io).await
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
        res: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&res).await
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    ping: ping::Behaviour,
    identify: identify::Behaviour,
    echo: request_response::Behaviour<BytesCodec>,
}

impl Behaviour {
    fn new(key: &libp2p::identity::Keypair) -> Self {
        Behaviour {
            ping: ping::Behaviour::new(
                ping::Config::new().with_interval(Duration::from_millis(200)),
            ),
            identify: identify::Behaviour::new(identify::Config::new(
                "/libp2p-utp-test/1".into(),
                key.public(),
            )),
            echo: request_response::Behaviour::new(
                [(ECHO, ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(30)),
            ),
        }
    }
}

fn utp_transport() -> libp2p_utp::Transport {
    utp_transport_with(libp2p_utp::Config::default().transport().extensions)
}

fn utp_transport_with(extensions: ExtFlags) -> libp2p_utp::Transport {
    let mut config = libp2p_utp::transport::Config::default();
    config.socket.transport_mut().connect_timeout = Duration::from_secs(5);
    config.socket.transport_mut().extensions = extensions;
    libp2p_utp::Transport::new(config)
}

/// A Swarm whose only transport is uTP.
fn utp_swarm() -> Swarm<Behaviour> {
    utp_swarm_with(libp2p_utp::Config::default().transport().extensions, Version::V1)
}

/// A Swarm whose only transport is uTP with `extensions` (with SYN data its
/// dials are early-data dials), upgrading with `version`.
fn utp_swarm_with(extensions: ExtFlags, version: Version) -> Swarm<Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| {
            Ok(utp_transport_with(extensions)
                .upgrade(version)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default()))
        })
        .expect("uTP transport")
        .with_behaviour(Behaviour::new)
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build()
}

/// A Swarm with TCP, QUIC and uTP.
fn tcp_quic_utp_swarm() -> Swarm<Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .expect("tcp")
        .with_quic()
        .with_other_transport(|key| {
            Ok(utp_transport()
                .upgrade(Version::V1)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default()))
        })
        .expect("uTP transport")
        .with_behaviour(Behaviour::new)
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build()
}

/// Listens on `addr` and returns the address it got.
async fn listen(swarm: &mut Swarm<Behaviour>, addr: &str) -> Multiaddr {
    swarm.listen_on(addr.parse().expect("multiaddr")).expect("listen_on");
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return address;
        }
    }
}

fn is_utp(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::Utp)
}

/// What one side saw.
#[derive(Debug, Default)]
struct Seen {
    endpoint: Option<ConnectedPoint>,
    connections: usize,
    incoming: usize,
    pinged: bool,
    identified: Option<identify::Info>,
    echoed: Option<Vec<u8>>,
}

impl Seen {
    /// Handles `event` of `swarm`: answers echo requests, records the rest.
    fn on_event(&mut self, swarm: &mut Swarm<Behaviour>, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished { endpoint, .. } => {
                self.connections += 1;
                self.endpoint = Some(endpoint);
            }
            SwarmEvent::IncomingConnection { .. } => self.incoming += 1,
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event { result, .. })) => {
                result.expect("ping");
                self.pinged = true;
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                info,
                ..
            })) => self.identified = Some(info),
            SwarmEvent::Behaviour(BehaviourEvent::Echo(request_response::Event::Message {
                message,
                ..
            })) => match message {
                request_response::Message::Request { request, channel, .. } => {
                    swarm.behaviour_mut().echo.send_response(channel, request).expect("respond");
                }
                request_response::Message::Response { response, .. } => {
                    self.echoed = Some(response)
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Echo(
                request_response::Event::OutboundFailure { error, .. },
            )) => panic!("echo request failed: {error}"),
            SwarmEvent::Behaviour(BehaviourEvent::Echo(
                request_response::Event::InboundFailure { error, .. },
            )) => panic!("echo request failed on the responder: {error}"),
            SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial failed: {error}"),
            SwarmEvent::IncomingConnectionError { error, .. } => {
                panic!("incoming connection failed: {error}")
            }
            SwarmEvent::ConnectionClosed { cause, .. } => panic!("connection closed: {cause:?}"),
            _ => {}
        }
    }
}

/// Runs both Swarms until `done` holds for what they saw.
async fn run_until(
    a: &mut Swarm<Behaviour>,
    b: &mut Swarm<Behaviour>,
    seen_a: &mut Seen,
    seen_b: &mut Seen,
    mut done: impl FnMut(&Seen, &Seen) -> bool,
) {
    while !done(seen_a, seen_b) {
        tokio::select! {
            e = a.select_next_some() => seen_a.on_event(a, e),
            e = b.select_next_some() => seen_b.on_event(b, e),
        }
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

/// `client` dials `server` at `listen` (a uTP address): ping, identify and
/// a 1 MiB echo.
async fn ping_identify_echo(listen: &str) {
    ping_identify_echo_with(listen, utp_swarm(), utp_swarm()).await;
}

async fn ping_identify_echo_with(
    listen: &str,
    mut server: Swarm<Behaviour>,
    mut client: Swarm<Behaviour>,
) {
    let server_id = *server.local_peer_id();
    let addr = self::listen(&mut server, listen).await;
    assert!(is_utp(&addr), "{addr}");
    client.dial(addr.clone().with(Protocol::P2p(server_id))).expect("dial");

    let (mut seen_s, mut seen_c) = (Seen::default(), Seen::default());
    run_until(&mut server, &mut client, &mut seen_s, &mut seen_c, |s, c| {
        s.pinged && c.pinged && s.identified.is_some() && c.identified.is_some()
    })
    .await;
    // The client sees the address it dialed, the server the client's.
    let Some(ConnectedPoint::Dialer { address, .. }) = &seen_c.endpoint else { panic!() };
    assert!(is_utp(address), "{address}");
    let Some(ConnectedPoint::Listener { send_back_addr, .. }) = &seen_s.endpoint else { panic!() };
    assert!(is_utp(send_back_addr), "{send_back_addr}");
    // Identify carries uTP addresses both ways.
    let info = seen_c.identified.as_ref().unwrap();
    assert!(info.listen_addrs.contains(&addr), "{:?}", info.listen_addrs);
    assert_eq!(&info.observed_addr, send_back_addr);
    assert_eq!(seen_s.identified.as_ref().unwrap().observed_addr, addr);

    let message = pattern(1 << 20);
    client.behaviour_mut().echo.send_request(&server_id, message.clone());
    run_until(&mut server, &mut client, &mut seen_s, &mut seen_c, |_, c| c.echoed.is_some()).await;
    assert!(seen_c.echoed.as_ref() == Some(&message), "the echo differs");
    assert_eq!((seen_s.connections, seen_c.connections), (1, 1));
}

/// Early-data dials (SYN data on): the upgrade's first flight rides on
/// the SYN, with a listener that takes it and with one that does not (an
/// older version of this library, or the extension off), with `V1` and
/// `V1Lazy` upgrades.
#[tokio::test]
async fn early_data_dials_with_and_without_the_listener_taking_them() {
    init_tracing();
    let early = ExtFlags(ExtFlags::SYN_DATA.0 | ExtFlags::LARGE_PACKETS.0);
    for (listener, version) in [
        (early, Version::V1Lazy),
        (early, Version::V1),
        (ExtFlags::LARGE_PACKETS, Version::V1Lazy),
        (ExtFlags::NONE, Version::V1),
    ] {
        let server = utp_swarm_with(listener, version);
        let client = utp_swarm_with(early, version);
        let what = format!("early dial, listener {listener:?}, {version:?}");
        bounded(30, &what, ping_identify_echo_with("/ip4/127.0.0.1/udp/0/utp", server, client))
            .await;
    }
}

#[tokio::test]
async fn ping_identify_and_echo_over_ipv4() {
    init_tracing();
    bounded(30, "IPv4 swarms", ping_identify_echo("/ip4/127.0.0.1/udp/0/utp")).await;
}

#[tokio::test]
async fn ping_identify_and_echo_over_ipv6() {
    init_tracing();
    bounded(30, "IPv6 swarms", ping_identify_echo("/ip6/::1/udp/0/utp")).await;
}

#[tokio::test]
async fn tcp_quic_utp_swarm_dials_a_utp_only_peer_over_utp() {
    init_tracing();
    let test = async {
        let mut utp_only = utp_swarm();
        let mut multi = tcp_quic_utp_swarm();
        let peer = *utp_only.local_peer_id();
        let addr = listen(&mut utp_only, "/ip4/127.0.0.1/udp/0/utp").await;
        // The multi-transport Swarm listens on all three.
        for a in
            ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1", "/ip4/127.0.0.1/udp/0/utp"]
        {
            listen(&mut multi, a).await;
        }
        // Offer TCP and QUIC addresses of the peer too (nothing answers
        // there): the Swarm tries them all and ends up on uTP.
        let port = match addr.iter().nth(1) {
            Some(Protocol::Udp(port)) => port,
            _ => unreachable!("{addr}"),
        };
        let tcp: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
        let quic: Multiaddr = format!("/ip4/127.0.0.1/udp/{port}/quic-v1").parse().unwrap();
        multi
            .dial(DialOpts::peer_id(peer).addresses(vec![tcp, quic, addr.clone()]).build())
            .expect("dial");

        let (mut seen_u, mut seen_m) = (Seen::default(), Seen::default());
        run_until(&mut utp_only, &mut multi, &mut seen_u, &mut seen_m, |u, m| {
            u.pinged && m.pinged && m.identified.is_some()
        })
        .await;
        let Some(ConnectedPoint::Dialer { address, .. }) = &seen_m.endpoint else { panic!() };
        assert_eq!(address, &addr.with(Protocol::P2p(peer)));
        // The peer learns all of the multi-transport Swarm's addresses.
        let listen_addrs = &seen_u.identified.as_ref().expect("identify").listen_addrs;
        for proto in ["/tcp/", "/quic-v1", "/utp"] {
            assert!(listen_addrs.iter().any(|a| a.to_string().contains(proto)), "{listen_addrs:?}");
        }
    };
    bounded(30, "multi-transport swarm", test).await;
}

#[tokio::test]
async fn swarms_dialing_each_other_as_in_dcutr() {
    init_tracing();
    let test = async {
        let mut a = utp_swarm();
        let mut b = utp_swarm();
        let (id_a, id_b) = (*a.local_peer_id(), *b.local_peer_id());
        let addr_a = listen(&mut a, "/ip4/127.0.0.1/udp/0/utp").await;
        let addr_b = listen(&mut b, "/ip4/127.0.0.1/udp/0/utp").await;
        // As DCUtR does it: one side dials with its role overridden to
        // listener, the other dials normally, at the same time.
        a.dial(
            DialOpts::peer_id(id_b)
                .addresses(vec![addr_b.clone()])
                .condition(PeerCondition::Always)
                .override_role()
                .build(),
        )
        .expect("dial as listener");
        b.dial(
            DialOpts::peer_id(id_a)
                .addresses(vec![addr_a.clone()])
                .condition(PeerCondition::Always)
                .build(),
        )
        .expect("dial");

        let (mut seen_a, mut seen_b) = (Seen::default(), Seen::default());
        run_until(&mut a, &mut b, &mut seen_a, &mut seen_b, |a, b| {
            a.pinged && b.pinged && a.identified.is_some() && b.identified.is_some()
        })
        .await;
        // One connection, on which `a` is the listener and `b` the dialer,
        // between the advertised addresses.
        assert_eq!((seen_a.connections, seen_b.connections), (1, 1));
        assert_eq!((seen_a.incoming, seen_b.incoming), (0, 0));
        let Some(ConnectedPoint::Dialer { address, role_override, port_use }) = &seen_a.endpoint
        else {
            panic!("{:?}", seen_a.endpoint)
        };
        assert_eq!(
            (address, *role_override, *port_use),
            (&addr_b.clone().with(Protocol::P2p(id_b)), Endpoint::Listener, PortUse::Reuse)
        );
        let Some(ConnectedPoint::Dialer { address, role_override, .. }) = &seen_b.endpoint else {
            panic!("{:?}", seen_b.endpoint)
        };
        assert_eq!(
            (address, *role_override),
            (&addr_a.clone().with(Protocol::P2p(id_a)), Endpoint::Dialer)
        );
        assert_eq!(seen_a.identified.as_ref().unwrap().observed_addr, addr_a);
        assert_eq!(seen_b.identified.as_ref().unwrap().observed_addr, addr_b);
    };
    bounded(30, "DCUtR-style dials", test).await;
}

/// A dial to an address that never answers, in a `SwarmBuilder` swarm with
/// the default config: our `TimedOut` error, which names the address,
/// surfaces before the builder's own 10 s timeout ("Timeout has been
/// reached").
#[tokio::test]
async fn an_unanswered_dial_fails_with_our_error() {
    init_tracing();
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| {
            Ok(libp2p_utp::Transport::default()
                .upgrade(Version::V1Lazy)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default()))
        })
        .expect("uTP transport")
        .with_behaviour(Behaviour::new)
        .expect("behaviour")
        .build();
    let addr: Multiaddr = format!("/ip4/127.0.0.1/udp/{port}/utp").parse().unwrap();
    swarm.dial(addr).expect("dial");
    let started = std::time::Instant::now();
    let error = bounded(20, "the dial's failure", async {
        loop {
            if let SwarmEvent::OutgoingConnectionError { error, .. } =
                swarm.select_next_some().await
            {
                break error.to_string();
            }
        }
    })
    .await;
    println!("unanswered dial failed after {:?}: {error}", started.elapsed());
    assert!(error.contains("timed out after 8s"), "{error}");
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
}
