//! utp-interop: tests of this project against uTP peers nobody here wrote.
//!
//! The peers are driven as child processes through small scripts of ours in
//! `interop/peers/` (see its README): libutp through the npm package
//! `utp-native`, libtorrent-rasterbar through its Python bindings.
//! `interop/setup.sh` installs them, pinned. Each script prints one JSON
//! object per line on stdout.
//!
//! When a peer is missing the tests skip with a loud message, except under
//! `CI=true`, where a missing peer fails the run.

pub mod bittorrent;
pub mod relay;
pub mod scenarios;
pub mod tshark;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The `interop/` folder.
#[must_use]
pub fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Checks that a peer is installed; returns `false` (after a loud message)
/// when it is not and we are not in CI. Panics in CI.
#[must_use]
pub fn require(peer: Peer) -> bool {
    let missing = scenarios::missing(peer);
    match missing {
        None => true,
        Some(why) if in_ci() => {
            panic!("interop peer {peer:?} unavailable under CI=true: {why}; run interop/setup.sh")
        }
        Some(why) => {
            eprintln!(
                "\n!!!!!!!! SKIPPED: interop peer {peer:?} unavailable ({why}).\n\
                 !!!!!!!! Run `bash interop/setup.sh` to install it. Under CI=true this fails.\n"
            );
            false
        }
    }
}

/// A real uTP implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// libutp via utp-native (`peers/libutp-peer.js`).
    Libutp,
    /// libtorrent-rasterbar via its Python bindings (`peers/lt_peer.py`).
    Libtorrent,
    /// Wireshark's `tshark`, able to capture on `lo`.
    Tshark,
    /// librqbit-utp (rqbit's uTP stack), in this process: never missing.
    Librqbit,
}

/// A running peer script.
pub struct PeerProcess {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl PeerProcess {
    /// Starts `peers/libutp-peer.js` with `args`.
    pub fn libutp(args: &[&str]) -> std::io::Result<Self> {
        let mut cmd = Command::new("node");
        cmd.arg(interop_dir().join("peers/libutp-peer.js")).args(args);
        Self::spawn(cmd)
    }

    /// Starts `peers/lt_peer.py` with `args` under `interop/.venv`'s Python.
    pub fn libtorrent(args: &[&str]) -> std::io::Result<Self> {
        let mut cmd = Command::new(interop_dir().join(".venv/bin/python"));
        cmd.arg(interop_dir().join("peers/lt_peer.py")).args(args);
        Self::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> std::io::Result<Self> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?;
        Ok(PeerProcess { child, lines: BufReader::new(stdout).lines() })
    }

    /// The next JSON event, or `None` at the end of output.
    pub async fn next_event(&mut self) -> Option<Value> {
        loop {
            let line = self.lines.next_line().await.ok()??;
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                return Some(v);
            }
        }
    }

    /// Waits (at most `limit`) for an event whose `event` field is `name`.
    pub async fn wait_for(&mut self, name: &str, limit: Duration) -> Value {
        let fut = async {
            while let Some(v) = self.next_event().await {
                if v["event"] == name {
                    return v;
                }
            }
            panic!("peer exited before printing a {name:?} event");
        };
        match tokio::time::timeout(limit, fut).await {
            Ok(v) => v,
            Err(_) => panic!("peer printed no {name:?} event within {limit:?}"),
        }
    }

    /// Waits for the process to exit; returns its exit code.
    pub async fn wait(&mut self, limit: Duration) -> Option<i32> {
        tokio::time::timeout(limit, self.child.wait()).await.ok()?.ok()?.code()
    }
}

/// The socket configuration every interop test starts from: the default,
/// with the congestion controller `UTP_INTEROP_CONGESTION` names (unset or
/// `ledbat`: classic LEDBAT, the default; `ledbat++`: LEDBAT++). The wire
/// does not depend on it: the README's test command runs the suite once
/// with each.
///
/// # Panics
/// On any other value of the variable.
#[must_use]
pub fn config() -> libp2p_utp::Config {
    let mut config = libp2p_utp::Config::default();
    match std::env::var("UTP_INTEROP_CONGESTION").as_deref() {
        Err(_) | Ok("ledbat") => {}
        Ok("ledbat++") => {
            config.transport_mut().congestion =
                std::sync::Arc::new(utp_proto::congestion::LedbatPlusPlusConfig::default());
        }
        Ok(other) => panic!("UTP_INTEROP_CONGESTION={other}: expected ledbat or ledbat++"),
    }
    config
}

/// A uTP socket on 127.0.0.1 (any port) with `config`; panics when binding
/// fails (a test helper).
pub async fn loopback_socket(config: libp2p_utp::Config) -> libp2p_utp::UtpSocket {
    loopback_socket_on(std::net::Ipv4Addr::LOCALHOST.into(), config).await
}

/// A uTP socket on `ip` (a loopback address: `127.0.0.1` or `::1`), any
/// port, with `config`; panics when binding fails (a test helper).
pub async fn loopback_socket_on(
    ip: std::net::IpAddr,
    config: libp2p_utp::Config,
) -> libp2p_utp::UtpSocket {
    assert!(ip.is_loopback(), "tests only bind loopback addresses, not {ip}");
    let addr = std::net::SocketAddr::new(ip, 0);
    libp2p_utp::UtpSocket::bind_with_config(addr, config)
        .await
        .unwrap_or_else(|e| panic!("bind a socket on {addr}: {e}"))
}

/// Sends `len` seeded bytes (seed 7) on `stream`, half-closes, reads what
/// comes back until the end within `limit` and asserts it is the same bytes.
/// `context` describes the setup in the panic message of a timeout.
pub async fn assert_echo(
    stream: libp2p_utp::UtpStream,
    len: usize,
    limit: Duration,
    context: impl FnOnce() -> String,
) {
    if let Err(e) = try_echo(stream, len, limit).await {
        panic!("echo: {e}; {}", context());
    }
}

/// [`assert_echo`] that returns the connection's end instead of panicking:
/// a reset, or `TimedOut` when the echo is not complete within `limit`.
/// Bytes that come back different still panic.
pub async fn try_echo(
    stream: libp2p_utp::UtpStream,
    len: usize,
    limit: Duration,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let data = seeded_bytes(7, len);
    let (mut rd, mut wr) = stream.into_split();
    let sender = {
        let data = data.clone();
        tokio::spawn(async move {
            wr.write_all(&data).await?;
            wr.shutdown().await
        })
    };
    let mut back = Vec::with_capacity(len);
    tokio::time::timeout(limit, rd.read_to_end(&mut back)).await.map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{} of {len} bytes back within {limit:?}", back.len()),
        )
    })??;
    sender.await.map_err(std::io::Error::other)??;
    assert_eq!(back.len(), len);
    assert_eq!(sha256_hex(&back), sha256_hex(&data));
    Ok(())
}

/// Lowercase hex sha256 of `data`.
#[must_use]
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// The peer scripts' seeded byte stream (mulberry32, each `u32`
/// little-endian), so that both sides can check the bytes.
#[must_use]
pub fn seeded_bytes(seed: u32, len: usize) -> Vec<u8> {
    let mut a = seed;
    let mut out = Vec::with_capacity(len + 4);
    while out.len() < len {
        a = a.wrapping_add(0x6D2B_79F5);
        let mut t = (a ^ (a >> 15)).wrapping_mul(a | 1);
        t = t.wrapping_add((t ^ (t >> 7)).wrapping_mul(t | 61)) ^ t;
        out.extend_from_slice(&(t ^ (t >> 14)).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_stream_matches_the_peer_scripts() {
        // Values from peers/README.md (computed by the Node script).
        assert_eq!(
            seeded_bytes(1, 10),
            [0xf3, 0xea, 0x87, 0xa0, 0xc9, 0x49, 0xb3, 0x00, 0xeb, 0xc4]
        );
        assert_eq!(
            sha256_hex(&seeded_bytes(1, 1 << 20)),
            "2846a21521345deecd97f682371c087e3883dadd2252d139040199ac1b3c2188"
        );
    }
}
