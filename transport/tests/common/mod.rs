//! Helpers shared by the integration tests: deterministic data, sha256
//! checks, bounded waits.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::io;
use std::time::Duration;

use libp2p_utp::{Config, UtpSocket};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Logs to stderr when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Fails the test if `fut` takes longer than `secs` seconds.
pub async fn bounded<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {secs} s"),
    }
}

/// Fills `buf` with the bytes at `offset..` of the deterministic stream
/// number `seed`.
pub fn pattern(seed: u64, offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let x = (offset + i as u64).wrapping_add(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let x = (x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        *b = (x >> 32) as u8;
    }
}

/// sha256 of the first `len` bytes of stream `seed`.
pub fn expected_sha(seed: u64, len: u64) -> [u8; 32] {
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        pattern(seed, off, &mut buf[..n]);
        sha.update(&buf[..n]);
        off += n as u64;
    }
    sha.finalize().into()
}

/// Writes `len` bytes of stream `seed` in chunks of up to `chunk` bytes.
pub async fn write_pattern<W: AsyncWrite + Unpin>(
    w: &mut W,
    seed: u64,
    len: u64,
    chunk: usize,
) -> io::Result<()> {
    let mut buf = vec![0u8; chunk];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(chunk as u64) as usize;
        pattern(seed, off, &mut buf[..n]);
        w.write_all(&buf[..n]).await?;
        off += n as u64;
    }
    Ok(())
}

/// Reads to the end; returns the byte count and sha256.
pub async fn read_sha<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<(u64, [u8; 32])> {
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((total, sha.finalize().into()));
        }
        sha.update(&buf[..n]);
        total += n as u64;
    }
}

/// A config with short timeouts for tests.
pub fn test_config() -> Config {
    let mut config = Config::default();
    let t = config.transport_mut();
    t.connect_timeout = Duration::from_secs(5);
    t.close_timeout = Duration::from_secs(10);
    config
}

/// A socket on 127.0.0.1 with `config`.
pub async fn socket(config: Config) -> UtpSocket {
    UtpSocket::bind_with_config("127.0.0.1:0", config).await.expect("bind")
}

/// Two sockets on 127.0.0.1: (server, client).
pub async fn pair() -> (UtpSocket, UtpSocket) {
    (socket(test_config()).await, socket(test_config()).await)
}
