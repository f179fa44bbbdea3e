//! The `metrics` feature: a socket's counters in a prometheus-client
//! registry, read on every scrape.

mod common;

use common::*;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn scrape(registry: &Registry) -> String {
    let mut text = String::new();
    encode(&mut text, registry).unwrap();
    text
}

/// The value of the sample line starting with `name` (labels included).
fn sample(text: &str, name: &str) -> f64 {
    let line =
        text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}: {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_reads_the_socket_counters() {
    init_tracing();
    let (server, client) = pair().await;
    let addr = server.local_addr().unwrap();
    let mut registry = Registry::default();
    libp2p_utp::metrics::register(&client, registry.sub_registry_with_prefix("utp"));
    let before = scrape(&registry);
    assert_eq!(sample(&before, "utp_bytes_sent_total"), 0.0, "{before}");
    let test = async {
        let mut s = client.connect(addr).await.unwrap();
        s.write_all(&[7u8; 100_000]).await.unwrap();
        let mut peer = server.accept().await.unwrap();
        let mut buf = vec![0u8; 100_000];
        peer.read_exact(&mut buf).await.unwrap();
        let text = scrape(&registry);
        println!("{text}");
        assert!(sample(&text, "utp_bytes_sent_total") >= 100_000.0);
        assert_eq!(sample(&text, "utp_connections{state=\"open\"}"), 1.0);
        assert_eq!(sample(&text, "utp_datagrams_dropped_total{reason=\"malformed\"}"), 0.0);
        drop((s, peer));
    };
    bounded(20, "metrics", test).await;
    // The registry does not keep the socket open: once it is gone the
    // metrics are too.
    drop(client);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}
