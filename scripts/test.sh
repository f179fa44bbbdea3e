#!/usr/bin/env bash
# Runs every check and test of the workspace. This is the README's test
# command, and .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "installing the interop peers (libutp, libtorrent, tshark; pinned)"
bash interop/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (workspace)"
cargo test --workspace --locked

step "interop again with LEDBAT++ (the wire must not depend on the controller)"
UTP_INTEROP_CONGESTION=ledbat++ cargo test -p utp-interop --locked

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "cargo package (the publishable crates package; utp-proto builds from its package)"
# libp2p-utp and utp-ext are checked without the verify build: cargo would
# verify them against utp-proto 0.1.0 from its temporary registry, and it
# treats registry packages as immutable, so a build of an earlier 0.1.0
# left in the target directory would be used instead of the new one.
cargo package -p utp-proto --locked --allow-dirty
cargo package -p utp-proto -p libp2p-utp -p utp-ext --locked --allow-dirty --no-verify

step "all checks passed"
