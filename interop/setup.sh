#!/usr/bin/env bash
# Installs the real uTP peers the interop tests drive, all pinned, all from
# package registries (npm, PyPI, Debian). Idempotent; works from any cwd.
#
#   interop/node_modules   utp-native 2.5.3 (libutp), from package-lock.json
#   interop/.venv          libtorrent==2.1.1 (libtorrent-rasterbar), from
#                          requirements.txt (hash-checked); if that wheel
#                          cannot be installed or imported, the venv is
#                          rebuilt on /usr/bin/python3 with
#                          --system-site-packages and Debian's
#                          python3-libtorrent. Either way run the peer as
#                          interop/.venv/bin/python interop/peers/lt_peer.py
#   tshark                 Debian package, only if missing (for captures)
#
# Options:
#   --skip-tshark    do not install tshark
#   --check          install nothing; exit non-zero if anything is missing
#
# Exit status: 0 when every peer is ready, non-zero otherwise.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
UTP_NATIVE_VERSION="2.5.3"
LIBTORRENT_VERSION="2.1.1"

skip_tshark=0
check_only=0
for arg in "$@"; do
  case "$arg" in
    --skip-tshark) skip_tshark=1 ;;
    --check) check_only=1 ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "setup.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

say() { printf '[interop/setup] %s\n' "$*"; }
die() { printf '[interop/setup] ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
fi

apt_updated=0
apt_install() {
  [ "$check_only" -eq 0 ] || die "missing (apt): $* (run without --check)"
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* by hand"
  if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then die "need root (or sudo) to apt-get install $*"; fi
  if [ "$apt_updated" -eq 0 ]; then
    say "apt-get update"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
    apt_updated=1
  fi
  say "apt-get install $*"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" \
    || die "apt-get install $* failed"
}

summary=()

# ------------------------------------------------------------------ node
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  say "node/npm not found"
  apt_install nodejs npm
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 18 ] || die "node >= 18 needed, found $(node --version)"

utp_ok() {
  (cd "$HERE" && node -e '
    const v = require("./node_modules/utp-native/package.json").version
    if (v !== process.argv[1]) { console.error("utp-native " + v + " != " + process.argv[1]); process.exit(1) }
    const u = require("./node_modules/utp-native")
    if (typeof u.createServer !== "function") process.exit(1)
  ' "$UTP_NATIVE_VERSION") >/dev/null 2>&1
}

lock_sum="$(sha256sum "$HERE/package-lock.json" | cut -d' ' -f1)"
stamp="$HERE/node_modules/.utp-interop-lock.sha256"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$lock_sum" ] && utp_ok; then
  say "utp-native $UTP_NATIVE_VERSION already installed (node_modules matches package-lock.json)"
  summary+=("libutp: utp-native $UTP_NATIVE_VERSION (already there)")
else
  [ "$check_only" -eq 0 ] || die "utp-native $UTP_NATIVE_VERSION not installed (run without --check)"
  say "npm ci in $HERE (utp-native $UTP_NATIVE_VERSION; prebuilt linux-x64 binary, no compiler needed)"
  # --ignore-scripts: utp-native's install script only decides whether to
  # compile; its prebuilds/ are loaded at require() time. A platform without
  # a prebuild fails the check below instead of trying to compile.
  (cd "$HERE" && npm ci --ignore-scripts --no-audit --no-fund) || die "npm ci failed"
  utp_ok || die "utp-native does not load (platform $(node -p 'process.platform + "-" + process.arch') has no prebuild?)"
  echo "$lock_sum" > "$stamp"
  summary+=("libutp: utp-native $UTP_NATIVE_VERSION (installed with npm ci)")
fi

# ---------------------------------------------------------------- python
lt_ok() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import libtorrent, sys; print(libtorrent.__version__)' 2>/dev/null
}

lt_version="$(lt_ok || true)"
if [ -n "$lt_version" ] && [ "${lt_version#"$LIBTORRENT_VERSION"}" != "$lt_version" ]; then
  say "libtorrent $lt_version already importable from $VENV"
  summary+=("libtorrent: $lt_version from PyPI wheel in .venv (already there)")
elif [ -n "$lt_version" ] && [ -f "$VENV/.utp-interop-debian-fallback" ]; then
  say "libtorrent $lt_version (Debian python3-libtorrent fallback) importable from $VENV"
  say "  (delete $VENV to retry the PyPI wheel)"
  summary+=("libtorrent: $lt_version from Debian python3-libtorrent (fallback, already there)")
else
  [ "$check_only" -eq 0 ] || die "libtorrent $LIBTORRENT_VERSION not installed in $VENV (run without --check)"
  PY="$(command -v python3 || true)"
  [ -n "$PY" ] || { apt_install python3 python3-venv; PY="$(command -v python3)"; }
  wheel_ok=0
  if [ -f "$VENV/.utp-interop-debian-fallback" ]; then
    say "removing the broken fallback venv"
    rm -rf "$VENV"
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating venv $VENV with $PY ($("$PY" --version 2>&1))"
    if ! "$PY" -m venv "$VENV" 2>/dev/null; then
      rm -rf "$VENV"
      apt_install python3-venv
      "$PY" -m venv "$VENV" || die "python3 -m venv failed"
    fi
  fi
  say "pip install --require-hashes -r requirements.txt (libtorrent==$LIBTORRENT_VERSION)"
  if "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input --require-hashes \
       -r "$HERE/requirements.txt"; then
    lt_version="$(lt_ok || true)"
    if [ -n "$lt_version" ]; then wheel_ok=1; else say "libtorrent wheel installed but does not import"; fi
  else
    say "pip could not install the libtorrent wheel"
  fi
  if [ "$wheel_ok" -eq 1 ]; then
    summary+=("libtorrent: $lt_version from PyPI wheel in .venv (installed)")
  else
    say "falling back to Debian's python3-libtorrent (importable only from /usr/bin/python3)"
    [ -x /usr/bin/python3 ] || apt_install python3
    apt_install python3-libtorrent python3-venv
    rm -rf "$VENV"
    /usr/bin/python3 -m venv --system-site-packages "$VENV" || die "venv on /usr/bin/python3 failed"
    touch "$VENV/.utp-interop-debian-fallback"
    lt_version="$(lt_ok || true)"
    [ -n "$lt_version" ] || die "libtorrent does not import even from Debian's python3-libtorrent"
    summary+=("libtorrent: $lt_version from Debian python3-libtorrent (fallback; venv on /usr/bin/python3)")
  fi
fi

# ---------------------------------------------------------------- tshark
if [ "$skip_tshark" -eq 1 ]; then
  say "tshark: skipped (--skip-tshark)"
  summary+=("tshark: skipped")
elif command -v tshark >/dev/null 2>&1; then
  say "tshark already installed"
  summary+=("tshark: $(tshark --version 2>/dev/null | head -1) (already there)")
else
  # noninteractive: the "non-root users may capture" question takes its
  # default (no); captures then need root, which the tests have.
  apt_install tshark
  command -v tshark >/dev/null 2>&1 || die "tshark still missing after apt-get install"
  summary+=("tshark: $(tshark --version 2>/dev/null | head -1) (installed)")
fi

say "ready:"
for line in "${summary[@]}"; do say "  $line"; done
say "  run: node $HERE/peers/libutp-peer.js ...   $VENV/bin/python $HERE/peers/lt_peer.py ..."
