//! The accept filter: a blocklist or connection gating decides from the
//! dialer's address, before any connection state exists.

mod common;

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use libp2p_utp::{AcceptDecision, AcceptFilter, UtpSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_filter_refuses_ignores_and_accepts() {
    init_tracing();
    let refused_ip: IpAddr = Ipv4Addr::new(127, 0, 0, 2).into();
    let ignored_ports = Arc::new(Mutex::new(HashSet::<u16>::new()));
    let seen = Arc::new(Mutex::new(Vec::<SocketAddr>::new()));
    let mut config = test_config();
    {
        let (ignored_ports, seen) = (ignored_ports.clone(), seen.clone());
        config.accept_filter = Some(AcceptFilter::new(move |remote| {
            seen.lock().unwrap().push(remote);
            if remote.ip() == refused_ip {
                AcceptDecision::Refuse
            } else if ignored_ports.lock().unwrap().contains(&remote.port()) {
                AcceptDecision::Ignore
            } else {
                AcceptDecision::Accept
            }
        }));
    }
    let server = socket(config).await;
    let addr = server.local_addr().unwrap();
    let mut short = test_config();
    short.transport_mut().connect_timeout = Duration::from_secs(2);
    let refused = UtpSocket::bind_with_config("127.0.0.2:0", short.clone()).await.unwrap();
    let ignored = socket(short).await;
    ignored_ports.lock().unwrap().insert(ignored.local_addr().unwrap().port());
    let welcome = socket(test_config()).await;

    let test = async move {
        let t0 = Instant::now();
        let err = refused.connect(addr).await.expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        let refused_after = t0.elapsed();

        let t0 = Instant::now();
        let err = ignored.connect(addr).await.expect_err("ignored");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        let ignored_after = t0.elapsed();

        let mut s = welcome.connect(addr).await.expect("accepted");
        s.write_all(b"hello").await.unwrap();
        s.shutdown().await.unwrap();
        let mut peer = server.accept().await.unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");

        let stats = server.endpoint_stats();
        let seen = seen.lock().unwrap().clone();
        println!(
            "accept filter: refused after {refused_after:?}, ignored dial timed out after \
             {ignored_after:?}; the filter saw {} SYNs; refused {}, ignored {}; connections \
             on the server: {}",
            seen.len(),
            stats.syns_refused_by_app,
            stats.syns_ignored_by_app,
            server.connection_count()
        );
        assert!(stats.syns_refused_by_app >= 1);
        assert!(stats.syns_ignored_by_app >= 2, "every SYN of the ignored dial");
        assert_eq!(server.connection_count(), 1, "no state for refused or ignored dialers");
        assert!(seen.iter().any(|a| a.ip() == refused_ip));
    };
    bounded(20, "accept filter", test).await;
}
