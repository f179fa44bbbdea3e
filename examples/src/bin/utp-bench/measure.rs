//! Running one pair of processes and measuring it: wall time from the
//! sender's start to the receiver's report that it read everything (or its
//! exit, for a receiver that reports nothing: utpcat), and the CPU time of
//! each process (with its children) from `wait4`. (The libutp peer waits
//! 500 ms between its report and its exit.)

use std::io::{self, BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// What one run measured.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Measured {
    pub(crate) bytes: u64,
    pub(crate) wall: Duration,
    /// CPU (user + system) of the sender and of the receiver.
    pub(crate) cpu: [Duration; 2],
}

impl Measured {
    pub(crate) fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.wall.as_secs_f64() / 1e6
    }

    /// CPU seconds of both processes per GB moved.
    pub(crate) fn cpu_per_gb(&self) -> f64 {
        (self.cpu[0] + self.cpu[1]).as_secs_f64() / (self.bytes as f64 / 1e9)
    }
}

/// How the receiver tells that it listens: the first line (of stdout or
/// stderr) from which this extracts a port.
pub(crate) type ReadyLine = fn(&str) -> Option<u16>;

/// Whether a line of the receiver's says that it received everything.
pub(crate) type DoneCheck = Box<dyn Fn(&str) -> bool>;

/// A receiver to start, then a sender made for the port it listens on.
pub(crate) struct Pair {
    pub(crate) receiver: Command,
    /// Where the receiver announces its port.
    pub(crate) ready_on_stderr: bool,
    pub(crate) ready: ReadyLine,
    pub(crate) sender: Box<dyn FnOnce(u16) -> Command>,
    pub(crate) bytes: u64,
    /// What the receiver must print once done (one line), if it reports
    /// what it received: proof that every byte arrived.
    pub(crate) done_line: Option<DoneCheck>,
}

impl Pair {
    /// A receiver that names its port on stdout and reports nothing else.
    pub(crate) fn new(
        receiver: Command,
        ready: ReadyLine,
        bytes: u64,
        sender: impl FnOnce(u16) -> Command + 'static,
    ) -> Pair {
        Pair {
            receiver,
            ready_on_stderr: false,
            ready,
            sender: Box::new(sender),
            bytes,
            done_line: None,
        }
    }

    /// The receiver names its port on stderr.
    pub(crate) fn ready_on_stderr(mut self) -> Pair {
        self.ready_on_stderr = true;
        self
    }

    /// The receiver reports success with a line that `done` recognises.
    pub(crate) fn done_when(mut self, done: impl Fn(&str) -> bool + 'static) -> Pair {
        self.done_line = Some(Box::new(done));
        self
    }
}

/// Runs `pair`, giving up after `timeout`.
pub(crate) fn run(pair: Pair, timeout: Duration) -> io::Result<Measured> {
    let Pair { mut receiver, ready_on_stderr, ready, sender, bytes, done_line } = pair;
    receiver.stdin(Stdio::null());
    if ready_on_stderr {
        receiver.stdout(Stdio::null()).stderr(Stdio::piped());
    } else {
        receiver.stdout(Stdio::piped()).stderr(Stdio::inherit());
    }
    let mut rx = Reaped::spawn(&mut receiver)?;
    let pipe: Box<dyn Read + Send> = match ready_on_stderr {
        true => Box::new(rx.child.stderr.take().expect("piped")),
        false => Box::new(rx.child.stdout.take().expect("piped")),
    };
    // The receiver's output is read to its end on a thread of its own (a
    // full pipe would stall it); the first port it names is the signal.
    let (port_tx, port_rx) = mpsc::channel();
    let output = thread::spawn(move || {
        let mut port_tx = Some(port_tx);
        let mut lines = Vec::new();
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let at = Instant::now();
            if let Some(port) = ready(&line) {
                if let Some(tx) = port_tx.take() {
                    let _ = tx.send(port);
                }
            }
            lines.push((line, at));
        }
        lines
    });
    let port = match port_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(port) => port,
        Err(_) => {
            rx.kill();
            return Err(io::Error::other("the receiver did not report its port"));
        }
    };
    let mut send = sender(port);
    send.stdout(Stdio::null()).stderr(Stdio::inherit());
    let start = Instant::now();
    let mut tx = Reaped::spawn(&mut send)?;
    let deadline = start + timeout;
    let (mut tx_done, mut rx_done) = (None, None);
    let mut wall = None;
    while tx_done.is_none() || rx_done.is_none() {
        if Instant::now() > deadline {
            // Only the children not reaped yet: a reaped one's pid may
            // belong to another process by now.
            if tx_done.is_none() {
                tx.kill();
            }
            if rx_done.is_none() {
                rx.kill();
            }
            return Err(io::Error::new(io::ErrorKind::TimedOut, "run timed out"));
        }
        if tx_done.is_none() {
            tx_done = tx.try_wait()?;
        }
        if rx_done.is_none() {
            rx_done = rx.try_wait()?;
            if rx_done.is_some() {
                wall = Some(start.elapsed());
            }
        }
        thread::sleep(Duration::from_micros(500));
    }
    let (tx_status, tx_cpu) = tx_done.expect("done");
    let (rx_status, rx_cpu) = rx_done.expect("done");
    if tx_status != 0 || rx_status != 0 {
        return Err(io::Error::other(format!(
            "exit status: sender {tx_status}, receiver {rx_status}"
        )));
    }
    let mut wall = wall.expect("receiver exited");
    if let Some(done) = done_line {
        let lines = output.join().unwrap_or_default();
        let Some((_, at)) = lines.iter().find(|(l, _)| done(l)) else {
            return Err(io::Error::other(format!(
                "the receiver did not report success: {:?}",
                lines.last().map(|(l, _)| l)
            )));
        };
        wall = wall.min(at.saturating_duration_since(start));
    }
    Ok(Measured { bytes, wall, cpu: [tx_cpu, rx_cpu] })
}

/// A child whose exit status and CPU time `wait4` collects.
struct Reaped {
    child: Child,
}

impl Reaped {
    fn spawn(cmd: &mut Command) -> io::Result<Reaped> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {program}: {e}")))?;
        Ok(Reaped { child })
    }

    /// Exit status and CPU time (its own and its children's) once it has
    /// exited.
    fn try_wait(&mut self) -> io::Result<Option<(i32, Duration)>> {
        let pid = self.child.id() as libc::pid_t;
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our child, not reaped yet (std never waits for
        // it: we never call its wait); the pointers are valid.
        let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        match rc {
            0 => Ok(None),
            rc if rc == pid => {
                let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
                let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
                Ok(Some((code, tv(usage.ru_utime) + tv(usage.ru_stime))))
            }
            _ => Err(io::Error::last_os_error()),
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.try_wait();
    }
}
