//! ICMP port unreachables: a dial to a closed port fails at once (Linux),
//! and nothing else is touched by them.

mod common;

use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::time::Duration;

use common::*;
use libp2p_utp::UtpSocket;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utp_proto::wire::{PacketType, Repr, SeqNr};

/// A port nobody listens on: bound once, then closed.
fn closed_port(ip: &str) -> SocketAddr {
    let s = StdUdpSocket::bind((ip, 0)).expect("bind");
    s.local_addr().unwrap()
}

/// Sets up tracing; `false` (the test skips) where ICMP errors are not
/// read.
fn linux() -> bool {
    init_tracing();
    if !cfg!(target_os = "linux") {
        eprintln!("SKIPPED: ICMP errors are read on Linux only");
    }
    cfg!(target_os = "linux")
}

/// A dial to a closed port is refused on the first SYN's ICMP port
/// unreachable: one SYN sent, not the connect timeout's retransmissions.
/// IPv4 and IPv6; the connect timeout is 8 s, the test's bound 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_to_a_closed_port_is_refused() {
    if !linux() {
        return;
    }
    for ip in ["127.0.0.1", "::1"] {
        let client = UtpSocket::bind(SocketAddr::new(ip.parse().unwrap(), 0)).await.unwrap();
        let to = closed_port(ip);
        let err = bounded(5, "refusal", client.connect(to)).await.expect_err("closed port");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{ip}: {err}");
        let stats = client.socket_stats();
        assert_eq!(stats.endpoint.dials_refused_by_icmp, 1, "{ip}");
        assert_eq!(stats.traffic.packets_sent, 1, "{ip}: one SYN, no retransmission");
        println!("{ip}: dial to a closed port refused after 1 SYN (before: 8 s of SYNs)");
    }
}

/// A listener made by hand on a std socket: answers the dial's SYN, so
/// that `client` holds an established stream; returns it, the peer's
/// socket, and the SYN (its connection id and sequence number).
async fn hand_made_peer(client: &UtpSocket) -> (libp2p_utp::UtpStream, StdUdpSocket, (u16, u16)) {
    let peer = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let dial = tokio::spawn({
        let client = client.clone();
        async move { client.connect(peer_addr).await }
    });
    let mut buf = [0u8; 2048];
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    let syn = Repr::parse_bytes(&buf[..n]).expect("SYN");
    assert_eq!(syn.packet_type, PacketType::Syn);
    let mut syn_ack = Repr::new(PacketType::State, syn.connection_id, SeqNr(1000), syn.seq_nr);
    syn_ack.wnd_size = 1 << 20;
    let mut out = vec![0u8; syn_ack.buffer_len()];
    let len = syn_ack.emit(&mut out).unwrap();
    peer.send_to(&out[..len], from).unwrap();
    let stream = dial.await.unwrap().expect("connected");
    (stream, peer, (syn.connection_id, syn.seq_nr.0))
}

/// A peer whose port closes after the handshake: our packets draw port
/// unreachables, which the connection ignores (counted), so that nobody
/// can end an established connection with a forged ICMP error. It ends
/// later by its own timers, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn established_connection_ignores_port_unreachables() {
    if !linux() {
        return;
    }
    let client = socket(test_config()).await;
    let test = async move {
        let (mut stream, peer, _) = hand_made_peer(&client).await;
        drop(peer);

        for _ in 0..20 {
            stream.write_all(&[1u8; 1000]).await.expect("write");
            stream.flush().await.expect("flush");
            tokio::time::sleep(Duration::from_millis(50)).await;
            if client.socket_stats().endpoint.icmp_ignored >= 2 {
                break;
            }
        }
        let stats = client.socket_stats();
        assert!(stats.endpoint.icmp_ignored >= 2, "{:?}", stats.endpoint);
        assert_eq!(stats.endpoint.dials_refused_by_icmp, 0);
        assert_eq!(stats.connections.open, 1, "still open: {:?}", stats.connections);
        stream.write_all(b"more").await.expect("still writable");
        println!(
            "established connection: {} port unreachables ignored, still open",
            stats.endpoint.icmp_ignored
        );
    };
    bounded(20, "established connection", test).await;
}

/// The peer sends its FIN and exits at once (its socket closes without
/// acknowledging our FIN): our `close` completes cleanly when our FIN's
/// retransmission draws a port unreachable, instead of timing out after
/// `close_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_completes_when_the_finished_peer_is_gone() {
    if !linux() {
        return;
    }
    let mut config = test_config();
    config.transport_mut().close_timeout = Duration::from_secs(30);
    let client = socket(config).await;
    let test = async move {
        let (mut stream, peer, (id, syn_seq)) = hand_made_peer(&client).await;
        // The peer's FIN (its first packet: the SYN-ACK's seq, 1000),
        // acknowledging our SYN.
        let mut fin = Repr::new(PacketType::Fin, id, SeqNr(1000), SeqNr(syn_seq));
        fin.wnd_size = 1 << 20;
        let mut out = vec![0u8; fin.buffer_len()];
        let len = fin.emit(&mut out).unwrap();
        peer.send_to(&out[..len], stream.local_addr()).unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.expect("the peer's end");
        assert!(rest.is_empty());
        // The peer's program exits: our FIN finds its port closed.
        drop(peer);
        stream.close().await.expect("close completes");
        let stats = client.socket_stats();
        assert_eq!(stats.endpoint.closes_completed_by_icmp, 1, "{:?}", stats.endpoint);
        println!("close completed by the port unreachable answering our FIN");
    };
    bounded(20, "close", test).await;
}

/// The libp2p Transport's dial to a closed port fails with
/// `ConnectionRefused` too (its default connect timeout is 8 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libp2p_dial_to_a_closed_port_is_refused() {
    use libp2p::core::transport::{DialOpts, PortUse};
    use libp2p::core::{Endpoint, Transport as _};
    use libp2p_utp::transport::{Config, Error, Transport};

    if !linux() {
        return;
    }
    let to = closed_port("127.0.0.1");
    let addr = format!("/ip4/127.0.0.1/udp/{}/utp", to.port()).parse().unwrap();
    let mut transport = Transport::new(Config::default());
    let opts = DialOpts { role: Endpoint::Dialer, port_use: PortUse::New };
    let dial = transport.dial(addr, opts).unwrap();
    let err = bounded(5, "refusal", dial).await.expect_err("closed port");
    let Error::Io(e) = err else { panic!("{err}") };
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
}
