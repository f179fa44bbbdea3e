//! Every connection logs inside its own span, `utp_conn{remote, id, side}`:
//! accepted connections too (they had none).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[test]
fn accepted_and_dialed_connections_log_in_their_own_span() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new("utp_proto=debug"))
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (server, client) = pair().await;
            let addr = server.local_addr().unwrap();
            let mut s = client.connect(addr).await.unwrap();
            s.write_all(b"traced").await.unwrap();
            let mut peer = server.accept().await.unwrap();
            let mut buf = [0u8; 6];
            peer.read_exact(&mut buf).await.unwrap();
        });
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let acceptor = text
        .lines()
        .find(|l| l.contains("utp_conn{") && l.contains("side=Acceptor"))
        .unwrap_or_else(|| panic!("no line in an acceptor's span:\n{text}"));
    let initiator = text
        .lines()
        .find(|l| l.contains("utp_conn{") && l.contains("side=Initiator"))
        .unwrap_or_else(|| panic!("no line in an initiator's span:\n{text}"));
    println!("{acceptor}\n{initiator}");
    assert!(acceptor.contains("remote=127.0.0.1:"), "{acceptor}");
}
