//! The `msg-service` example runs its demo: a server and a client in one
//! process, requests on the SYN and as framed messages.

use std::process::Command;

#[test]
fn demo_runs() {
    let out = Command::new(env!("CARGO_BIN_EXE_msg-service"))
        .args(["demo", "--requests", "200", "--rounds", "3"])
        .output()
        .expect("run msg-service");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("request on the SYN"), "{stdout}");
    assert!(stdout.contains("200 requests"), "{stdout}");
}
