//! The libp2p `Transport` on its own (no Swarm): addresses, listening
//! (wildcard, IPv4 and IPv6 on one port, removal), port reuse, dial timeout
//! and laziness, hole punching with `role = Listener`.

mod common;

use std::future::poll_fn;
use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::pin::Pin;
use std::time::{Duration, Instant};

use common::{bounded, init_tracing};
use futures::future::{self, Either};
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};
use libp2p::core::transport::{DialOpts, ListenerId, PortUse, TransportError, TransportEvent};
use libp2p::core::{Endpoint, Transport as _};
use libp2p::multiaddr::{Multiaddr, Protocol};
use libp2p_utp::transport::{Config, Error, Transport};
use libp2p_utp::UtpStream;

type Event = TransportEvent<<Transport as libp2p::core::Transport>::ListenerUpgrade, Error>;

const DIAL: DialOpts = DialOpts { role: Endpoint::Dialer, port_use: PortUse::Reuse };
const DIAL_NEW: DialOpts = DialOpts { role: Endpoint::Dialer, port_use: PortUse::New };
const PUNCH: DialOpts = DialOpts { role: Endpoint::Listener, port_use: PortUse::Reuse };

fn config(connect_timeout: Duration) -> Config {
    let mut config = Config::default();
    config.socket.transport_mut().connect_timeout = connect_timeout;
    config
}

fn transport() -> Transport {
    Transport::new(config(Duration::from_secs(5)))
}

fn ma(s: &str) -> Multiaddr {
    s.parse().expect("multiaddr")
}

/// The next event of `t`.
async fn next(t: &mut Transport) -> Event {
    poll_fn(|cx| Pin::new(&mut *t).poll(cx)).await
}

/// The next event of `t` if one comes within `ms` milliseconds.
async fn next_within(t: &mut Transport, ms: u64) -> Option<Event> {
    tokio::time::timeout(Duration::from_millis(ms), next(t)).await.ok()
}

/// Listens on `addr` and returns the announced address.
async fn listen(t: &mut Transport, addr: &str) -> (ListenerId, Multiaddr) {
    let id = ListenerId::next();
    t.listen_on(id, ma(addr)).expect("listen_on");
    match next(t).await {
        TransportEvent::NewAddress { listener_id, listen_addr } => {
            assert_eq!(listener_id, id);
            (id, listen_addr)
        }
        e => panic!("expected NewAddress, got {}", describe(&e)),
    }
}

/// The next event of `t`, which must be an incoming connection: (stream,
/// local address, send-back address).
async fn incoming(t: &mut Transport) -> (UtpStream, Multiaddr, Multiaddr) {
    match next(t).await {
        TransportEvent::Incoming { upgrade, local_addr, send_back_addr, .. } => {
            (upgrade.await.expect("upgrade"), local_addr, send_back_addr)
        }
        e => panic!("expected Incoming, got {}", describe(&e)),
    }
}

fn describe(e: &Event) -> String {
    match e {
        TransportEvent::NewAddress { listen_addr, .. } => format!("NewAddress({listen_addr})"),
        TransportEvent::AddressExpired { listen_addr, .. } => {
            format!("AddressExpired({listen_addr})")
        }
        TransportEvent::Incoming { send_back_addr, .. } => format!("Incoming({send_back_addr})"),
        TransportEvent::ListenerClosed { reason, .. } => format!("ListenerClosed({reason:?})"),
        TransportEvent::ListenerError { error, .. } => format!("ListenerError({error})"),
    }
}

fn socket_addr(addr: &Multiaddr) -> SocketAddr {
    let mut it = addr.iter();
    let ip = match it.next() {
        Some(Protocol::Ip4(ip)) => ip.into(),
        Some(Protocol::Ip6(ip)) => ip.into(),
        p => panic!("no IP in {addr}: {p:?}"),
    };
    let Some(Protocol::Udp(port)) = it.next() else { panic!("no UDP port in {addr}") };
    assert_eq!(it.next(), Some(Protocol::Utp), "{addr}");
    SocketAddr::new(ip, port)
}

/// Sends `msg` on `a`, reads it on `b`, and the reverse.
async fn exchange(a: &mut UtpStream, b: &mut UtpStream, msg: &[u8]) {
    a.write_all(msg).await.expect("write a");
    let mut buf = vec![0; msg.len()];
    b.read_exact(&mut buf).await.expect("read b");
    assert_eq!(buf, msg);
    b.write_all(msg).await.expect("write b");
    a.read_exact(&mut buf).await.expect("read a");
    assert_eq!(buf, msg);
}

fn not_supported<T>(r: Result<T, TransportError<Error>>) -> bool {
    matches!(r, Err(TransportError::MultiaddrNotSupported(_)))
}

#[tokio::test]
async fn other_addresses_are_not_supported() {
    init_tracing();
    let mut t = transport();
    for addr in [
        "/ip4/127.0.0.1/tcp/4001",
        "/ip4/127.0.0.1/udp/4001/quic-v1",
        "/ip4/127.0.0.1/udp/4001",
        "/ip4/127.0.0.1/utp",
        "/ip6/::1/tcp/4001/utp",
        "/dns4/localhost/udp/4001/utp",
        "/ip4/127.0.0.1/udp/4001/utp/p2p-circuit",
    ] {
        assert!(not_supported(t.listen_on(ListenerId::next(), ma(addr))), "listen {addr}");
        assert!(not_supported(t.dial(ma(addr), DIAL)), "dial {addr}");
    }
    // Port 0 and unspecified IPs can be listened on, not dialed.
    for addr in ["/ip4/127.0.0.1/udp/0/utp", "/ip4/0.0.0.0/udp/4001/utp", "/ip6/::/udp/4001/utp"] {
        assert!(not_supported(t.dial(ma(addr), DIAL)), "dial {addr}");
    }
    // A trailing /p2p is fine.
    let with_peer =
        "/ip4/127.0.0.1/udp/4001/utp/p2p/12D3KooWGC6TvWhfapngX6wvJHMYvKpDMXPb3ZnCZ6dMoaMtimQ5";
    assert!(t.dial(ma(with_peer), DIAL).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_and_accept_ipv4_and_ipv6_on_one_port() {
    init_tracing();
    let test = async {
        let mut server = transport();
        let (_, addr4) = listen(&mut server, "/ip4/127.0.0.1/udp/0/utp").await;
        let port = socket_addr(&addr4).port();
        let (_, addr6) = listen(&mut server, &format!("/ip6/::1/udp/{port}/utp")).await;
        assert_eq!(addr6, ma(&format!("/ip6/::1/udp/{port}/utp")));

        let mut client = transport();
        for addr in [addr4, addr6] {
            let mut dialed = client.dial(addr.clone(), DIAL).unwrap().await.expect("dial");
            let (mut accepted, local, send_back) = incoming(&mut server).await;
            assert_eq!(local, addr);
            // The dial bound a socket of its own (no listener to reuse).
            assert_eq!(socket_addr(&send_back).port(), dialed.local_addr().port());
            assert_eq!(accepted.peer_addr(), socket_addr(&send_back));
            exchange(&mut dialed, &mut accepted, b"over utp").await;
        }
    };
    bounded(20, "dial and accept", test).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_listen_reports_interface_addresses() {
    init_tracing();
    let test = async {
        for (wildcard, loopback) in [("/ip4/0.0.0.0", "/ip4/127.0.0.1"), ("/ip6/::", "/ip6/::1")] {
            let mut server = transport();
            let id = ListenerId::next();
            server.listen_on(id, ma(&format!("{wildcard}/udp/0/utp"))).unwrap();
            // Every interface address comes at once; wait a little more for
            // stragglers.
            let mut addrs = Vec::new();
            while let Some(event) = next_within(&mut server, 500).await {
                match event {
                    TransportEvent::NewAddress { listener_id, listen_addr } => {
                        assert_eq!(listener_id, id);
                        addrs.push(socket_addr(&listen_addr));
                    }
                    e => panic!("unexpected {}", describe(&e)),
                }
            }
            let port = addrs.first().expect("no address announced").port();
            assert_ne!(port, 0);
            for a in &addrs {
                assert!(!a.ip().is_unspecified(), "the wildcard was announced: {addrs:?}");
                assert_eq!(a.is_ipv4(), wildcard.starts_with("/ip4"), "{addrs:?}");
                assert_eq!(a.port(), port, "{addrs:?}");
            }
            let local = ma(&format!("{loopback}/udp/{port}/utp"));
            assert!(addrs.contains(&socket_addr(&local)), "{local} not in {addrs:?}");

            // The loopback address works, and is the reported local address.
            let mut client = transport();
            let mut dialed = client.dial(local.clone(), DIAL).unwrap().await.expect("dial");
            let (mut accepted, local_addr, _) = incoming(&mut server).await;
            assert_eq!(local_addr, local);
            exchange(&mut dialed, &mut accepted, b"wildcard").await;
        }
    };
    bounded(20, "wildcard listen", test).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_reuse_dials_from_the_listening_socket() {
    init_tracing();
    let test = async {
        let mut a = transport();
        let mut b = transport();
        let (_, addr_a) = listen(&mut a, "/ip4/127.0.0.1/udp/0/utp").await;
        let (_, addr_b) = listen(&mut b, "/ip4/127.0.0.1/udp/0/utp").await;

        // Reuse: the peer sees the advertised address.
        let reused = a.dial(addr_b.clone(), DIAL).unwrap().await.expect("dial reuse");
        let (_, _, send_back) = incoming(&mut b).await;
        assert_eq!(send_back, addr_a);
        assert_eq!(reused.local_addr(), socket_addr(&addr_a));

        // New: a port of its own.
        let fresh = a.dial(addr_b.clone(), DIAL_NEW).unwrap().await.expect("dial new");
        let (_, _, send_back) = incoming(&mut b).await;
        assert_ne!(send_back, addr_a);
        assert_eq!(socket_addr(&send_back).port(), fresh.local_addr().port());

        // Without a listener of the family, Reuse binds a port too.
        let mut c = transport();
        let dialed = c.dial(addr_b.clone(), DIAL).unwrap().await.expect("dial, no listener");
        let (_, _, send_back) = incoming(&mut b).await;
        assert_eq!(socket_addr(&send_back).port(), dialed.local_addr().port());
        // An IPv6 listener is no use for an IPv4 peer.
        listen(&mut c, "/ip6/::1/udp/0/utp").await;
        let dialed = c.dial(addr_b, DIAL).unwrap().await.expect("dial, IPv6 listener");
        assert!(dialed.local_addr().is_ipv4());
        incoming(&mut b).await;
    };
    bounded(20, "port reuse", test).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_listener_closes_and_frees_its_port() {
    init_tracing();
    let test = async {
        let mut server = transport();
        let (id, addr) = listen(&mut server, "/ip4/127.0.0.1/udp/0/utp").await;
        let (_, other) = listen(&mut server, "/ip4/127.0.0.1/udp/0/utp").await;
        // A connection that outlives its listener.
        let mut client = Transport::new(config(Duration::from_secs(1)));
        let mut kept = client.dial(addr.clone(), DIAL_NEW).unwrap().await.expect("dial");
        let (mut accepted, ..) = incoming(&mut server).await;

        assert!(server.remove_listener(id));
        assert!(!server.remove_listener(id), "removed twice");
        match next(&mut server).await {
            TransportEvent::ListenerClosed { listener_id, reason: Ok(()) } => {
                assert_eq!(listener_id, id)
            }
            e => panic!("expected ListenerClosed, got {}", describe(&e)),
        }
        // The established connection goes on.
        exchange(&mut kept, &mut accepted, b"still here").await;

        // New connections are refused (or time out once the port is gone).
        let started = Instant::now();
        let err = client.dial(addr.clone(), DIAL_NEW).unwrap().await.expect_err("dial removed");
        let Error::Io(e) = err else { panic!("{err}") };
        assert!(
            matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::TimedOut),
            "{e}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        // The other listener still works.
        client.dial(other, DIAL_NEW).unwrap().await.expect("other listener");
        incoming(&mut server).await;

        // Once the last connection is gone, so is the socket.
        drop((kept, accepted));
        let port_free = async {
            loop {
                if StdUdpSocket::bind(socket_addr(&addr)).is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        bounded(15, "the removed listener's port to be free", port_free).await;
    };
    bounded(30, "listener removal", test).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_to_a_silent_address_times_out() {
    init_tracing();
    let silent = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = ma(&format!("/ip4/127.0.0.1/udp/{}/utp", silent.local_addr().unwrap().port()));
    let mut client = Transport::new(config(Duration::from_secs(1)));
    let started = Instant::now();
    let err = bounded(10, "dial", client.dial(addr, DIAL).unwrap()).await.expect_err("dial");
    let elapsed = started.elapsed();
    let Error::Io(e) = err else { panic!("{err}") };
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    // It did try: the silent socket got a SYN.
    silent.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut buf = [0; 2048];
    let (n, _) = silent.recv_from(&mut buf).expect("a SYN");
    assert_eq!(buf[0], 0x41, "SYN v1: {:02x?}", &buf[..n]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_futures_are_lazy_and_safe_to_drop() {
    init_tracing();
    let silent = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    silent.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let addr = ma(&format!("/ip4/127.0.0.1/udp/{}/utp", silent.local_addr().unwrap().port()));
    let mut buf = [0; 2048];
    for opts in [DIAL, DIAL_NEW] {
        let mut client = transport();
        let mut dial = client.dial(addr.clone(), opts).unwrap();
        // Nothing is sent before the future is polled.
        assert!(silent.recv_from(&mut buf).is_err(), "sent before polled");
        assert!((&mut dial).now_or_never().is_none());
        silent.recv_from(&mut buf).expect("SYN once polled");
        assert_eq!(buf[0], 0x41);
        // Dropping the dial abandons it: no SYN is sent again (a dial still
        // in SYN-SENT leaves without a RESET, as libutp's).
        drop(dial);
        tokio::time::sleep(Duration::from_millis(1200)).await; // past the SYN retry
        if let Ok((n, _)) = silent.recv_from(&mut buf) {
            panic!("sent after the dial was dropped: {:02x?}", &buf[..n]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_as_listener_takes_the_peers_connection() {
    init_tracing();
    let test = async {
        // As in DCUtR: both dial at once, `a` with role Listener.
        let mut a = transport();
        let mut b = transport();
        let (_, addr_a) = listen(&mut a, "/ip4/127.0.0.1/udp/0/utp").await;
        let (_, addr_b) = listen(&mut b, "/ip4/127.0.0.1/udp/0/utp").await;
        let punch = a.dial(addr_b.clone(), PUNCH).unwrap();
        let dial = b.dial(addr_a.clone(), DIAL).unwrap();
        // Poll both transports meanwhile: `a` must not hand out the
        // connection as Incoming.
        let dials = future::join(punch, dial);
        let events = async {
            match future::select(Box::pin(next(&mut a)), Box::pin(next(&mut b))).await {
                Either::Left((e, _)) | Either::Right((e, _)) => {
                    panic!("unexpected {}", describe(&e))
                }
            }
        };
        let (mut punched, mut dialed) =
            match future::select(Box::pin(dials), Box::pin(events)).await {
                Either::Left(((p, d), _)) => (p.expect("punch"), d.expect("dial")),
                Either::Right(((), _)) => unreachable!(),
            };
        assert_eq!(punched.peer_addr(), socket_addr(&addr_b));
        assert_eq!(punched.local_addr(), socket_addr(&addr_a));
        assert_eq!(dialed.peer_addr(), socket_addr(&addr_a));
        exchange(&mut punched, &mut dialed, b"hole punched").await;

        // The peer's connection may also arrive before the punching dial
        // is first polled.
        let punch = a.dial(addr_b.clone(), PUNCH).unwrap();
        let mut dialed = b.dial(addr_a.clone(), DIAL).unwrap().await.expect("dial first");
        assert!(next_within(&mut a, 200).await.is_none(), "the listener took it");
        let mut punched = punch.await.expect("punch after");
        exchange(&mut punched, &mut dialed, b"early").await;

        // After the punching dials, connections are the listener's again.
        let _dialed = b.dial(addr_a.clone(), DIAL).unwrap().await.expect("dial");
        let (_, _, send_back) = incoming(&mut a).await;
        assert_eq!(send_back, addr_b);
    };
    bounded(20, "dial as listener", test).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_as_listener_punches_and_times_out() {
    init_tracing();
    let test = async {
        let mut a = Transport::new(config(Duration::from_secs(1)));
        let mut b = transport();
        // Without a listener there is nothing to punch from.
        let (_, addr_b) = listen(&mut b, "/ip4/127.0.0.1/udp/0/utp").await;
        assert!(matches!(
            a.dial(addr_b.clone(), PUNCH),
            Err(TransportError::Other(Error::NoListenerForHolePunch(_)))
        ));
        let (_, addr_a) = listen(&mut a, "/ip4/127.0.0.1/udp/0/utp").await;

        // A silent peer gets punch datagrams (not uTP), and the dial times out.
        let silent = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        silent.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let silent_addr =
            ma(&format!("/ip4/127.0.0.1/udp/{}/utp", silent.local_addr().unwrap().port()));
        let started = Instant::now();
        let err = a.dial(silent_addr, PUNCH).unwrap().await.expect_err("no peer");
        let elapsed = started.elapsed();
        let Error::Io(e) = err else { panic!("{err}") };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(
            elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
            "{elapsed:?}"
        );
        let mut buf = [0; 2048];
        let mut punches = 0;
        while let Ok((n, from)) = silent.recv_from(&mut buf) {
            assert_eq!(from, socket_addr(&addr_a), "punched from the listening socket");
            assert_eq!(buf[0] & 0x0f, 0, "a punch must not look like uTP: {:02x?}", &buf[..n]);
            punches += 1;
        }
        assert!(punches >= 5, "{punches} punches in {elapsed:?}");

        // A punch to `b` that `b` answers too late: the dial times out, and
        // the late connection goes to the listener.
        let err = a.dial(addr_b.clone(), PUNCH).unwrap().await.expect_err("b never dialed");
        assert!(matches!(err, Error::Io(ref e) if e.kind() == io::ErrorKind::TimedOut), "{err}");
        let _late = b.dial(addr_a, DIAL).unwrap().await.expect("late dial");
        let (_, _, send_back) = incoming(&mut a).await;
        assert_eq!(send_back, addr_b);
    };
    bounded(20, "dial as listener timeout", test).await;
}

/// Without a listener, dials share one socket per address family: ten
/// dials to three peers come from one local port (one NAT mapping), and
/// `PortUse::New` uses that socket too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_without_a_listener_share_one_socket_per_family() {
    init_tracing();
    let test = async {
        let mut servers = Vec::new();
        for _ in 0..3 {
            let mut t = transport();
            let (_, addr) = listen(&mut t, "/ip4/127.0.0.1/udp/0/utp").await;
            servers.push((t, addr));
        }
        let mut client = transport();
        let mut ports = std::collections::HashSet::new();
        let mut streams = Vec::new();
        for i in 0..10 {
            let (server, addr) = &mut servers[i % 3];
            let opts = if i % 2 == 0 { DIAL } else { DIAL_NEW };
            let dialed = client.dial(addr.clone(), opts).unwrap().await.expect("dial");
            let (_, _, send_back) = incoming(server).await;
            assert_eq!(socket_addr(&send_back).port(), dialed.local_addr().port());
            ports.insert(dialed.local_addr().port());
            streams.push(dialed);
        }
        assert_eq!(ports.len(), 1, "one dialer socket for IPv4: {ports:?}");
        // IPv6 gets a socket of its own.
        let mut v6 = transport();
        let (_, addr6) = listen(&mut v6, "/ip6/::1/udp/0/utp").await;
        let dialed = client.dial(addr6, DIAL).unwrap().await.expect("dial over IPv6");
        incoming(&mut v6).await;
        assert!(dialed.local_addr().is_ipv6());
    };
    bounded(30, "shared dialer sockets", test).await;
}

/// The Transport's sockets and their counters: the listener's and the
/// dialer socket's, with the traffic of a connection on each side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_stats_cover_listeners_and_dialers() {
    init_tracing();
    let test = async {
        let mut server = transport();
        let (_, addr) = listen(&mut server, "/ip4/127.0.0.1/udp/0/utp").await;
        let mut client = transport();
        let mut dialed = client.dial(addr.clone(), DIAL).unwrap().await.expect("dial");
        let (mut accepted, ..) = incoming(&mut server).await;
        exchange(&mut dialed, &mut accepted, b"counted").await;
        let server_stats = server.socket_stats();
        let client_stats = client.socket_stats();
        assert_eq!(server_stats.len(), 1);
        assert_eq!(server_stats[0].0, socket_addr(&addr));
        assert_eq!(client_stats.len(), 1, "one dialer socket");
        assert_eq!(client_stats[0].1.connections.open, 1);
        assert!(client_stats[0].1.traffic.bytes_sent >= 7);
        assert!(server_stats[0].1.traffic.bytes_received >= 7);
    };
    bounded(20, "transport socket stats", test).await;
}

/// The uTP view of a connection someone else owns (in a swarm, behind
/// noise and yamux), looked up by the peer's address on either side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_stats_by_peer_address() {
    init_tracing();
    let test = async {
        let mut server = transport();
        let (_, addr) = listen(&mut server, "/ip4/127.0.0.1/udp/0/utp").await;
        let mut client = transport();
        let mut dialed = client.dial(addr.clone(), DIAL).unwrap().await.expect("dial");
        let (mut accepted, _, send_back) = incoming(&mut server).await;
        exchange(&mut dialed, &mut accepted, &[9u8; 50_000]).await;
        let on_client = client.connection_stats(&addr);
        let on_server = server.connection_stats(&send_back);
        assert_eq!(on_client.len(), 1, "{on_client:?}");
        assert_eq!(on_server.len(), 1, "{on_server:?}");
        assert!(on_client[0].bytes_sent >= 50_000);
        assert!(on_server[0].bytes_received >= 50_000);
        assert!(on_client[0].rtt.is_some());
        let nobody: libp2p::Multiaddr = "/ip4/127.0.0.1/udp/9/utp".parse().unwrap();
        assert!(client.connection_stats(&nobody).is_empty());
    };
    bounded(20, "connection stats", test).await;
}
