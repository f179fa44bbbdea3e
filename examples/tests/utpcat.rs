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
    for word in [
        "listen",
        "connect",
        "send",
        "recv",
        "bench",
        "--verbose",
        "Exit status",
        "-l, --listen",
        "-p, --port",
        "-k, --keep-open",
        "-w, --wait",
        "-q, --quiet",
        "HOST PORT",
        "Ctrl-C",
    ] {
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

/// Reads the child's stderr until a line containing `what`.
fn wait_for_line(err: &mut impl std::io::BufRead, what: &str) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        let n = err.read_line(&mut line).unwrap();
        assert!(n > 0, "stderr ended before {what:?}: {all}");
        all.push_str(&line);
        if line.contains(what) {
            return all;
        }
    }
}

/// netcat's syntax: `-l -p PORT` and `HOST PORT` with a host name; data
/// both ways.
#[test]
fn netcat_syntax_with_a_host_name() {
    let port = free_port().to_string();
    let mut listener = spawn(&["-l", "-p", &port]);
    let listener_err = wait_listening(&mut listener);
    let l = std::thread::spawn(move || {
        let _keep = listener_err;
        finish_no_stderr(listener, b"from the listener".to_vec())
    });
    let connector = spawn(&["localhost", &port]);
    let (code, out, err) = finish(connector, b"from the dialer".to_vec(), Duration::from_secs(30));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, b"from the listener");
    let (code, out) = l.join().unwrap();
    assert_eq!(code, Some(0));
    assert_eq!(out, b"from the dialer");
}

/// `-l -k -q PORT` serves one connection after another and prints no
/// status lines.
#[test]
fn keep_open_serves_one_connection_after_another_quietly() {
    let port = free_port().to_string();
    let mut listener = spawn(&["-l", "-k", "-q", &port]);
    // Its stdin at its end: each connection gets the listener's FIN at once.
    drop(listener.stdin.take());
    // No "listening on" line with -q: wait until the port answers.
    let target = format!("127.0.0.1:{port}");
    for (i, word) in ["first\n", "second\n"].iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let c = spawn(&["-q", "-w", "2", &target]);
            let (code, _, err) = finish(c, word.as_bytes().to_vec(), Duration::from_secs(30));
            if code == Some(0) {
                assert!(err.is_empty(), "-q prints nothing: {err}");
                break;
            }
            assert!(Instant::now() < deadline, "connection {i} failed: {err}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let _ = listener.kill();
    let mut out = String::new();
    listener.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let mut err = String::new();
    listener.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let _ = listener.wait();
    assert_eq!(out, "first\nsecond\n");
    assert!(err.is_empty(), "-q prints nothing: {err}");
}

/// Ctrl-C on the dialing side resets the connection: the listener sees
/// "connection reset" (exit 5) instead of a clean end of stream, and the
/// interrupted side exits 130.
#[test]
fn ctrl_c_resets_the_connection() {
    let port = free_port().to_string();
    let mut listener = spawn(&["-l", &port]);
    let mut listener_err = wait_listening(&mut listener);
    let mut dialer = spawn(&["127.0.0.1", &port]);
    // Keep the dialer's stdin open: it would half-close on its end.
    let dialer_stdin = dialer.stdin.take().unwrap();
    wait_for_line(&mut listener_err, "connection from");
    // SAFETY: kill(2) with the pid of our child and SIGINT.
    let r = unsafe { libc::kill(dialer.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(r, 0);
    let status = dialer.wait().unwrap();
    drop(dialer_stdin);
    let mut err = String::new();
    dialer.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("1 connection(s) reset"), "{err}");
    listener.stderr = None;
    let mut rest = String::new();
    listener_err.read_to_string(&mut rest).unwrap();
    let (code, _) = finish_no_stderr(listener, Vec::new());
    assert_eq!(code, Some(5), "{rest}");
    assert!(rest.contains("reset"), "{rest}");
}
