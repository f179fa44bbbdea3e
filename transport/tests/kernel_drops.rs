//! The kernel's drops before our socket reads (its receive buffer full)
//! are counted in `SocketStats::kernel_receive_drops`: the first thing to
//! look at when many connections receive at once and retransmit a lot.

mod common;

use std::net::UdpSocket as StdUdpSocket;

use common::*;

/// A receive buffer at the kernel's minimum and a burst of 20,000
/// datagrams sent faster than the socket's task reads: the kernel drops
/// some, and the socket says how many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_drops_are_counted() {
    init_tracing();
    let mut config = test_config();
    config.socket_recv_buffer_size = Some(1);
    let server = socket(config).await;
    let addr = server.local_addr().unwrap();
    let before = server.socket_stats().kernel_receive_drops;
    let sender = std::thread::spawn(move || {
        let udp = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        let mut sent = 0u32;
        for _ in 0..20_000 {
            if udp.send_to(b"not uTP, 22 bytes long", addr).is_ok() {
                sent += 1;
            }
        }
        sent
    });
    let sent = tokio::task::spawn_blocking(move || sender.join().unwrap()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let stats = server.socket_stats();
    let drops = stats.kernel_receive_drops - before;
    println!(
        "{sent} datagrams sent into a minimal receive buffer: {drops} dropped by the kernel, \
         {} not-uTP datagrams dropped by us",
        stats.non_utp_dropped
    );
    if cfg!(target_os = "linux") {
        assert!(drops > 0, "{stats:?}");
        assert!(drops <= u64::from(sent));
    } else {
        assert_eq!(drops, 0, "counted on Linux only");
    }
}
