//! A network namespace made for the run (as root): a loopback of its own
//! with a real MTU, so that the figures are those of a 1500-byte path and
//! nothing else on the machine shares the interface.

use std::process::Command;

/// Set in the environment of the bench once inside its namespace.
const INSIDE: &str = "UTP_BENCH_NETNS";

/// Re-runs this program inside a new network namespace whose loopback has
/// `mtu`, if we are root and not inside one already; returns its exit code
/// then. `None`: go on here (explained on stderr when not root).
pub(crate) fn reexec(mtu: u32) -> Option<i32> {
    if std::env::var_os(INSIDE).is_some() {
        return None;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "utp-bench: not root, so no network namespace: the host's loopback (MTU {}) is \
             used, shared with whatever else runs; as root the run gets a namespace with MTU \
             {mtu}",
            loopback_mtu().map_or_else(|| "unknown".into(), |m| m.to_string())
        );
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let script = format!("ip link set lo up && ip link set lo mtu {mtu} && exec \"$0\" \"$@\"");
    let status = Command::new("unshare")
        .args(["-n", "--", "sh", "-c", &script])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(INSIDE, "1")
        .status();
    match status {
        Ok(status) => Some(status.code().unwrap_or(1)),
        Err(e) => {
            eprintln!("utp-bench: cannot run unshare ({e}); going on without a namespace");
            None
        }
    }
}

/// The loopback interface's MTU in this process's namespace (from `ip`:
/// `/sys/class/net` shows the namespace that mounted it).
pub(crate) fn loopback_mtu() -> Option<u32> {
    let out = Command::new("ip").args(["-o", "link", "show", "lo"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().skip_while(|w| *w != "mtu").nth(1)?.parse().ok()
}

/// Whether this process runs in the namespace made for it.
pub(crate) fn inside() -> bool {
    std::env::var_os(INSIDE).is_some()
}
