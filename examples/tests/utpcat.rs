//! Runs the `utpcat` binary end to end: `listen` and `connect` through
//! pipes, both directions, and the exit codes of failures.

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const UTPCAT: &str = env!("CARGO_BIN_EXE_utpcat");

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn spawn(args: &[&str]) -> Child {
    Command::new(UTPCAT)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("utpcat runs")
}

/// Feeds `input` to the child's stdin (then closes it) and collects its
/// stdout, with a deadline; returns (exit code, stdout, stderr).
fn finish(mut child: Child, input: Vec<u8>, limit: Duration) -> (Option<i32>, Vec<u8>, String) {
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("utpcat did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    writer.join().unwrap();
    (status.code(), reader.join().unwrap(), err_reader.join().unwrap())
}

fn wait_listening(child: &mut Child) -> std::io::BufReader<std::process::ChildStderr> {
    // The listener prints "listening on ..." to stderr once bound.
    let stderr = child.stderr.take().unwrap();
    let mut reader = std::io::BufReader::new(stderr);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    assert!(line.contains("listening on"), "{line}");
    reader
}

#[test]
fn listen_and_connect_through_pipes_both_ways() {
    let port = free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    let mut listener = spawn(&["listen", &addr]);
    let listener_err = wait_listening(&mut listener);
    let to_listener = bytes(3 << 20, 1);
    let to_connector = bytes(2 << 20, 2);

    let listener_input = to_connector.clone();
    let l = std::thread::spawn(move || {
        listener.stderr = None;
        let _keep = listener_err;
        finish_no_stderr(listener, listener_input)
    });
    let connector = spawn(&["connect", &addr]);
    let (code, out, err) = finish(connector, to_listener.clone(), Duration::from_secs(60));
    assert_eq!(code, Some(0), "connect failed: {err}");
    assert!(out == to_connector, "connect's stdout differs ({} bytes)", out.len());
    let (code, out) = l.join().unwrap();
    assert_eq!(code, Some(0), "listen failed");
    assert!(out == to_listener, "listen's stdout differs ({} bytes)", out.len());
}

fn finish_no_stderr(mut child: Child, input: Vec<u8>) -> (Option<i32>, Vec<u8>) {
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let status = child.wait().unwrap();
    writer.join().unwrap();
    (status.code(), out)
}

#[test]
fn send_and_recv_a_file() {
    let dir = std::env::temp_dir().join(format!("utpcat-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("in.bin");
    let dst = dir.join("out.bin");
    let data = bytes(5 << 20, 3);
    std::fs::write(&src, &data).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut recv = spawn(&["recv", &addr, "-o", dst.to_str().unwrap()]);
    let mut recv_err = wait_listening(&mut recv);
    let send = spawn(&["send", src.to_str().unwrap(), &addr]);
    let (code, _, err) = finish(send, Vec::new(), Duration::from_secs(60));
    assert_eq!(code, Some(0), "send failed: {err}");
    assert!(err.contains("sha256"), "send prints a summary: {err}");
    let status = recv.wait().unwrap();
    let mut rest = String::new();
    recv_err.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "recv failed: {rest}");
    assert!(std::fs::read(&dst).unwrap() == data, "the received file differs");
    // Both sides print the same sha256.
    let hash = |s: &str| s.split("sha256 ").nth(1).map(|h| h.trim().to_string());
    assert_eq!(hash(&err), hash(&rest));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn connect_to_a_silent_port_times_out_with_exit_4() {
    // A UDP socket that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let child = spawn(&["--connect-timeout", "1", "connect", &addr]);
    let (code, _, err) = finish(child, Vec::new(), Duration::from_secs(20));
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("timed out") || err.contains("no answer"), "{err}");
}

#[test]
fn refused_connection_exits_3() {
    // A uTP listener that refuses: utpcat recv is gone after its transfer,
    // so use a closed uTP socket: the port answers SYNs with RESET.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let socket = rt.block_on(libp2p_utp::UtpSocket::bind("127.0.0.1:0")).unwrap();
    socket.close();
    let addr = socket.local_addr().unwrap().to_string();
    let child = spawn(&["connect", &addr]);
    let (code, _, err) = finish(child, Vec::new(), Duration::from_secs(20));
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("refused"), "{err}");
    drop(socket);
}

#[test]
fn help_explains_every_command() {
    let out = Command::new(UTPCAT).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["listen", "connect", "send", "recv", "bench", "--verbose", "Exit status"] {
        assert!(text.contains(word), "--help lacks {word}: {text}");
    }
    let out = Command::new(UTPCAT).args(["bench", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["--size", "--connections", "--tcp"] {
        assert!(text.contains(word), "bench --help lacks {word}");
    }
    let bad = Command::new(UTPCAT).args(["bench", "--size", "12Q"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("suffix"));
}

#[test]
fn bench_runs_a_small_transfer() {
    let out = Command::new(UTPCAT)
        .args(["bench", "--size", "8M", "--connections", "2"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("uTP") && text.contains("MB/s"), "{text}");
}
