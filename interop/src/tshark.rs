//! Loopback captures with `tshark`, and Wireshark's own uTP dissector
//! (`bt-utp`) as an independent judge of what went over the wire.
//!
//! [`Capture::start`] runs `tshark -i lo -f 'udp port P or ...' -w FILE` and
//! returns once tshark says it is capturing; [`Capture::stop`] ends it with
//! SIGINT after a short grace. [`analyze`] decodes the file with
//! `-d udp.port==P,bt-utp` for each port and counts: every datagram, the
//! ones decoded as uTP (by type), the ones Wireshark flags as malformed and
//! the ones it does not decode as uTP at all, with their first bytes.
//!
//! Run the uTP side of a capture with `Config::batched_io = false`: with
//! UDP GSO a loopback capture shows several uTP packets glued into one
//! large datagram, which no dissector can read.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Why tshark cannot capture on `lo` here, or `None` when it can.
#[must_use]
pub fn unavailable() -> Option<String> {
    match Command::new("tshark").arg("-D").stdin(Stdio::null()).output() {
        Err(e) => Some(format!("tshark is not installed ({e})")),
        Ok(out) if !out.status.success() => {
            Some(format!("`tshark -D` failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
        Ok(out) => {
            let list = String::from_utf8_lossy(&out.stdout);
            if list.lines().any(|l| l.split_whitespace().nth(1) == Some("lo")) {
                None
            } else {
                Some(format!("tshark cannot capture on lo (interfaces: {})", list.trim()))
            }
        }
    }
}

/// A running `tshark` capture on `lo`. Killed on drop if not stopped.
pub struct Capture {
    child: Option<Child>,
    path: PathBuf,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").field("path", &self.path).finish_non_exhaustive()
    }
}

/// What tshark said when it stopped.
#[derive(Debug, Clone)]
pub struct CaptureSummary {
    /// The pcapng file.
    pub path: PathBuf,
    /// Everything tshark wrote on stderr.
    pub stderr: Vec<String>,
    /// "N packets captured", if printed.
    pub captured: Option<u64>,
    /// "N packets dropped ...", summed, if printed.
    pub dropped: Option<u64>,
}

/// The BPF filter `udp port A or udp port B ...`.
#[must_use]
pub fn port_filter(ports: &[u16]) -> String {
    ports.iter().map(|p| format!("udp port {p}")).collect::<Vec<_>>().join(" or ")
}

impl Capture {
    /// Starts capturing UDP datagrams to or from any of `ports` on `lo`
    /// into `path`; returns once tshark reports that it is capturing (and a
    /// short settling pause), or fails after `limit`.
    pub async fn start(ports: &[u16], path: &Path, limit: Duration) -> io::Result<Capture> {
        let mut child = Command::new("tshark")
            .args(["-i", "lo", "-n", "-B", "64", "-f", &port_filter(ports), "-w"])
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("starting tshark: {e}")))?;
        let stderr = child.stderr.take().expect("piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<()>();
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let capturing = line.contains("Capturing on");
                    lines.lock().expect("lock").push(line);
                    if capturing {
                        let _ = tx.send(());
                    }
                }
            });
        }
        let mut cap = Capture { child: Some(child), path: path.to_path_buf(), stderr: lines };
        let deadline = Instant::now() + limit;
        loop {
            match rx.try_recv() {
                Ok(()) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    let said = cap.stderr.lock().expect("lock").join("\n");
                    return Err(io::Error::other(format!("tshark exited early: {said}")));
                }
                Err(mpsc::TryRecvError::Empty) => {}
            }
            if Instant::now() > deadline {
                let said = cap.stderr.lock().expect("lock").join("\n");
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("tshark did not start capturing within {limit:?}: {said}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // "Capturing on" comes from dumpcap once the filter is set; give the
        // file a moment to appear and the ring to settle.
        while !path.exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(status) = cap.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            return Err(io::Error::other(format!("tshark exited while starting: {status}")));
        }
        Ok(cap)
    }

    /// The capture file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits `grace` (for the last packets), sends SIGINT, waits up to 10 s
    /// for tshark to write the file and exit (then kills it).
    pub async fn stop(mut self, grace: Duration) -> io::Result<CaptureSummary> {
        tokio::time::sleep(grace).await;
        let mut child = self.child.take().expect("running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
        // SAFETY: signalling our own child process, which has not been
        // reaped yet (so the pid cannot have been reused).
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Let the stderr thread read the final lines.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stderr = self.stderr.lock().expect("lock").clone();
        if status.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("tshark ignored SIGINT for 10 s: {}", stderr.join("\n")),
            ));
        }
        // "N packets captured", "N packets dropped from ..." (singular
        // for 1).
        let number_before = |what: &str| -> Option<u64> {
            let mut total = None;
            for l in &stderr {
                let words: Vec<&str> = l.split_whitespace().collect();
                for w in words.windows(3) {
                    if (w[1] == "packets" || w[1] == "packet") && w[2].starts_with(what) {
                        if let Ok(n) = w[0].parse::<u64>() {
                            total = Some(total.unwrap_or(0) + n);
                        }
                    }
                }
            }
            total
        };
        Ok(CaptureSummary {
            path: self.path.clone(),
            captured: number_before("captured"),
            dropped: number_before("dropped"),
            stderr,
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One datagram that Wireshark did not decode as uTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecoded {
    /// Frame number in the capture.
    pub frame: u64,
    /// UDP source port.
    pub src_port: u16,
    /// UDP payload length.
    pub len: usize,
    /// The first (up to 20) payload bytes.
    pub head: Vec<u8>,
}

impl Undecoded {
    /// A uTP packet whose first extension is 3 (libtorrent's close reason):
    /// version 1, type 0..=4, byte 1 == 3. tshark 4.0's dissector refuses
    /// those.
    #[must_use]
    pub fn is_close_reason(&self) -> bool {
        self.head.len() >= 2
            && self.len >= 20
            && self.head[0] & 0x0f == 1
            && self.head[0] >> 4 <= 4
            && self.head[1] == 3
    }
}

/// What Wireshark made of a capture.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    /// Every UDP datagram in the file.
    pub frames: u64,
    /// Datagrams decoded as uTP.
    pub utp: u64,
    /// uTP packets by type name (DATA, FIN, STATE, RESET, SYN).
    pub by_type: BTreeMap<String, u64>,
    /// uTP packets whose first extension is 1 (SACK).
    pub sack: u64,
    /// Frames flagged `_ws.malformed`, with tshark's summary line.
    pub malformed: Vec<String>,
    /// Datagrams not decoded as uTP.
    pub undecoded: Vec<Undecoded>,
    /// Largest UDP payload seen, by UDP source port.
    pub max_udp_payload_by_port: BTreeMap<u16, usize>,
    /// Largest advertised window seen, by UDP source port.
    pub max_wnd_by_port: BTreeMap<u16, u64>,
}

impl Analysis {
    /// Undecoded datagrams that are NOT libtorrent close-reason packets.
    #[must_use]
    pub fn unexplained(&self) -> Vec<&Undecoded> {
        self.undecoded.iter().filter(|u| !u.is_close_reason()).collect()
    }

    /// One line of counts for a report.
    #[must_use]
    pub fn summary(&self) -> String {
        format!(
            "{} datagrams: {} decoded as bt-utp {:?} ({} with SACK), {} malformed, \
             {} not decoded ({} of them libtorrent close-reason packets, ext 3 first), \
             largest UDP payload by source port {:?}, largest wnd_size by source port {:?}",
            self.frames,
            self.utp,
            self.by_type,
            self.sack,
            self.malformed.len(),
            self.undecoded.len(),
            self.undecoded.iter().filter(|u| u.is_close_reason()).count(),
            self.max_udp_payload_by_port,
            self.max_wnd_by_port,
        )
    }
}

fn tshark_read(file: &Path, ports: &[u16], extra: &[&str]) -> io::Result<String> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-n").arg("-r").arg(file);
    for p in ports {
        cmd.args(["-d", &format!("udp.port=={p},bt-utp")]);
    }
    cmd.args(extra).stdin(Stdio::null());
    let out = cmd.output().map_err(|e| io::Error::new(e.kind(), format!("running tshark: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "tshark {extra:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn parse_hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(char::is_ascii_hexdigit).collect();
    (0..s.len() / 2).filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()).collect()
}

fn parse_num(s: &str) -> Option<u64> {
    let s = s.trim();
    // Several values (a field repeated in one frame) come comma-separated.
    let s = s.split(',').next()?;
    if let Some(h) = s.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()
    } else {
        s.parse().ok()
    }
}

/// Decodes `file` with `-d udp.port==P,bt-utp` for each of `ports` and
/// counts what Wireshark made of it.
pub fn analyze(file: &Path, ports: &[u16]) -> io::Result<Analysis> {
    let mut a = Analysis::default();
    let fields = tshark_read(
        file,
        ports,
        &[
            "-T",
            "fields",
            "-E",
            "separator=/t",
            "-e",
            "frame.number",
            "-e",
            "udp.srcport",
            "-e",
            "udp.length",
            "-e",
            "bt-utp.type",
            "-e",
            "bt-utp.next_extension_type",
            "-e",
            "bt-utp.wnd_size",
        ],
    )?;
    for line in fields.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 3 || f[0].trim().is_empty() {
            continue;
        }
        a.frames += 1;
        let udp_len = parse_num(f[2]).unwrap_or(0) as usize;
        let src = parse_num(f[1]).unwrap_or(0) as u16;
        let e = a.max_udp_payload_by_port.entry(src).or_insert(0);
        *e = (*e).max(udp_len.saturating_sub(8));
        let Some(ty) = f.get(3).and_then(|t| parse_num(t)) else { continue };
        a.utp += 1;
        let name = match ty {
            0 => "DATA".to_string(),
            1 => "FIN".to_string(),
            2 => "STATE".to_string(),
            3 => "RESET".to_string(),
            4 => "SYN".to_string(),
            t => format!("type{t}"),
        };
        *a.by_type.entry(name).or_insert(0) += 1;
        if f.get(4).and_then(|t| parse_num(t)) == Some(1) {
            a.sack += 1;
        }
        if let Some(wnd) = f.get(5).and_then(|t| parse_num(t)) {
            let e = a.max_wnd_by_port.entry(src).or_insert(0);
            *e = (*e).max(wnd);
        }
    }
    let malformed = tshark_read(file, ports, &["-Y", "_ws.malformed"])?;
    a.malformed = malformed.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect();
    let undecoded = tshark_read(
        file,
        ports,
        &[
            "-Y",
            "udp && !bt-utp",
            "-T",
            "fields",
            "-E",
            "separator=/t",
            "-e",
            "frame.number",
            "-e",
            "udp.srcport",
            "-e",
            "udp.length",
            "-e",
            "udp.payload",
        ],
    )?;
    for line in undecoded.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 4 {
            continue;
        }
        let Some(frame) = parse_num(f[0]) else { continue };
        let mut head = parse_hex(f[3]);
        head.truncate(20);
        a.undecoded.push(Undecoded {
            frame,
            src_port: parse_num(f[1]).unwrap_or(0) as u16,
            len: (parse_num(f[2]).unwrap_or(8) as usize).saturating_sub(8),
            head,
        });
    }
    Ok(a)
}

/// The full `-O bt-utp` decode of some frames (for a report).
pub fn decode_frames(file: &Path, ports: &[u16], frames: &[u64]) -> io::Result<String> {
    if frames.is_empty() {
        return Ok(String::new());
    }
    let filter =
        frames.iter().map(|f| format!("frame.number == {f}")).collect::<Vec<_>>().join(" || ");
    tshark_read(file, ports, &["-Y", &filter, "-O", "bt-utp", "-x"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reason_packets_are_recognised() {
        let u = |head: &[u8], len| Undecoded { frame: 1, src_port: 1, len, head: head.to_vec() };
        assert!(u(&[0x11, 3, 0, 1], 26).is_close_reason()); // FIN + ext 3
        assert!(u(&[0x31, 3, 0, 1], 26).is_close_reason()); // RESET + ext 3
        assert!(!u(&[0x11, 0, 0, 1], 26).is_close_reason());
        assert!(!u(&[0x12, 3, 0, 1], 26).is_close_reason()); // version 2
        assert!(!u(&[0x11, 3], 2).is_close_reason()); // too short
        assert_eq!(parse_hex("0a:ff 10"), vec![0x0a, 0xff, 0x10]);
        assert_eq!(parse_num("0x00000004"), Some(4));
        assert_eq!(parse_num("7,8"), Some(7));
    }
}
