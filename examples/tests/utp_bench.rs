//! The cross-process benchmark runs end to end (debug build, small cases,
//! the host's loopback): every peer's run completes and every byte is
//! accounted for; the table has a row per peer. Timings are not checked.

use std::process::Command;

const BENCH: &str = env!("CARGO_BIN_EXE_utp-bench");

/// libutp (utp-native) is installed by `interop/setup.sh`.
fn libutp_installed() -> bool {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../interop/node_modules");
    let there = dir.join("utp-native/package.json").exists();
    if !there {
        assert!(std::env::var_os("CI").is_none(), "CI: libutp missing (run interop/setup.sh)");
        eprintln!("SKIPPED libutp rows: run bash interop/setup.sh");
    }
    there
}

#[test]
fn utp_bench_runs_every_peer() {
    let libutp = libutp_installed();
    let peers =
        if libutp { "utp,tcp,libutp,utpcat,utpcat-file" } else { "utp,tcp,utpcat,utpcat-file" };
    let out = Command::new(BENCH)
        .args(["--rounds", "1", "--cases", "1x1M,3x256K", "--no-netns", "--timeout", "60"])
        .args(["--peers", peers])
        .output()
        .expect("utp-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    println!("{stdout}");
    let rows = |label: &str| -> Vec<&str> {
        stdout.lines().filter(|l| l.starts_with(&format!("| {label} |"))).collect()
    };
    let mut measured = vec!["uTP", "TCP"];
    if libutp {
        measured.push("libutp");
    }
    for label in measured {
        let r = rows(label);
        assert_eq!(r.len(), 2, "{label}: a row per case\n{stdout}");
        assert!(r.iter().all(|l| l.ends_with("| 1/1 |")), "{label}: {r:?}");
    }
    for label in ["utpcat (netcat)", "utpcat send/recv"] {
        let r = rows(label);
        assert_eq!(r.len(), 2, "{label}\n{stdout}");
        assert!(r[0].ends_with("| 1/1 |"), "{label}: {r:?}");
        assert!(r[1].contains("skipped: one connection only"), "{label}: {r:?}");
    }
}
