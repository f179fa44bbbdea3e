#!/usr/bin/env python3
"""libtorrent-rasterbar peer for the utp-interop tests, uTP only.

Run with interop/.venv/bin/python (pip `libtorrent==2.1.1`, see
../requirements.txt and ../setup.sh). Falls back to nothing: if `import
libtorrent` fails, it says so on stderr and exits 2.

Modes:
  seed --file F [--host H] [--port P] [--torrent-out T] [--piece-size N]
       [--bufsize N] [--resends N] [--seed-mode] [--timeout S]
      Creates a v1 single-file torrent for F (piece size 256 KiB by default),
      writes it to T (default F + ".torrent"), and seeds F over uTP only on
      H:P (H = 127.0.0.1 by default, ::1 for IPv6; P = 0: a free port) until
      SIGTERM/SIGINT (or S seconds).
  download --torrent T --peer HOST:PORT --out DIR [--host H] [--port P]
       [--bufsize N] [--resends N] [--timeout S] [--expect-sha256 HEX]
      Adds T with save path DIR, connects to HOST:PORT over uTP, waits until
      the download is finished (and flushed to disk) and reports. HOST:PORT
      may be [::1]:PORT (then pass --host ::1 too). "ok" means
      finished, every peer had the uTP flag, and (if given) the file's sha256
      matched.
  make-file --out F --bytes N [--seed S]
      Writes N deterministic bytes to F (no network): block i (1 MiB each)
      is SHAKE-128(b"utp-interop:" + str(S) + ":" + str(i)) truncated to the
      block's length. Prints the sha256.

Both session modes: TCP off in both directions, uTP on, DHT/LSD/UPnP/NAT-PMP
off, allow_multiple_connections_per_ip on, plaintext only (no BitTorrent
protocol encryption, so captures stay readable), listen_interfaces
H:P ([H]:P for IPv6). --bufsize N sets libtorrent's recv_socket_buffer_size and
send_socket_buffer_size (0 = OS default). --resends N sets utp_num_resends
(default 3): libtorrent closes a uTP connection, silently, when a packet sent
that many times times out once more; tests through a lossy relay raise it so
that a packet lost three times in a row does not end the run.

Output: one JSON object per line on stdout, one line per event; diagnostics
(libtorrent alerts) on stderr. Events:
  listening {port}                      the uTP (UDP) port is open
  seeding   {info_hash, info_hash_v2, port, torrent, file, bytes, sha256,
             piece_size, num_pieces}     seed is ready
  peer      {ip, port, flags, utp}      a peer connected (seed: on connect;
                                        download: each peer seen)
  result    {mode, ok, elapsed_ms, total_bytes, mb_per_s, all_utp, peers,
             sha256, ...}               download finished (or failed)
  error     {message}
  exit      {signal, uploaded_bytes}    seed on SIGTERM/SIGINT
Exit code: 0 ok, 1 failure, 2 usage/import error, 3 timeout.

The utp flag is bit 17 (0x20000) of peer_info.flags (libtorrent's
peer_info::utp_socket; the 2.1 Python bindings do not export the name).
"""

import argparse
import hashlib
import json
import os
import signal
import sys
import time

UTP_SOCKET_FLAG = 0x20000

try:
    import libtorrent as lt
except Exception as exc:  # noqa: BLE001 - report any import failure
    sys.stderr.write("lt_peer: cannot import libtorrent (run interop/setup.sh): %s\n" % exc)
    sys.exit(2)


def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def diag(msg):
    sys.stderr.write("[lt_peer %d] %s\n" % (os.getpid(), msg))
    sys.stderr.flush()


def sha256_file(path):
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            n += len(b)
            h.update(b)
    return h.hexdigest(), n


def listen_on(host, port):
    """libtorrent's listen_interfaces syntax: brackets around IPv6."""
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)


def make_session(host, port, bufsize, resends):
    mask = (lt.alert_category.error | lt.alert_category.status |
            lt.alert_category.connect | lt.alert_category.peer)
    settings = {
        "listen_interfaces": listen_on(host, port),
        "outgoing_interfaces": "",
        "enable_incoming_tcp": False,
        "enable_outgoing_tcp": False,
        "enable_incoming_utp": True,
        "enable_outgoing_utp": True,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        # plaintext BitTorrent on top of uTP
        "out_enc_policy": int(lt.enc_policy.disabled),
        "in_enc_policy": int(lt.enc_policy.enabled),
        "alert_mask": int(mask),
        "user_agent": "utp-interop lt_peer/libtorrent " + lt.__version__,
        "recv_socket_buffer_size": bufsize,
        "send_socket_buffer_size": bufsize,
    }
    if resends:
        settings["utp_num_resends"] = resends
    ses = lt.session(settings)
    return ses


def wait_listening(ses, timeout=10.0):
    """Wait for the UDP (uTP) listen socket; return its port."""
    deadline = time.monotonic() + timeout
    port = None
    while time.monotonic() < deadline:
        ses.wait_for_alert(200)
        for a in ses.pop_alerts():
            if isinstance(a, lt.listen_succeeded_alert):
                diag("alert: " + a.message())
                st = str(getattr(a, "socket_type", ""))
                if "utp" in st.lower() or "udp" in st.lower():
                    port = a.port
            elif isinstance(a, lt.listen_failed_alert):
                diag("alert: " + a.message())
                emit({"event": "error", "message": a.message()})
                return None
            else:
                diag("alert: " + a.message())
        if port is not None:
            return port
    # fall back to the session's idea of the port
    p = ses.listen_port()
    return p if p else None


def peer_record(p):
    ip, port = p.ip
    return {"ip": ip, "port": port, "flags": int(p.flags),
            "utp": bool(int(p.flags) & UTP_SOCKET_FLAG),
            "client": p.client.decode("utf-8", "replace") if isinstance(p.client, bytes) else str(p.client)}


def info_hashes(ti):
    ih = ti.info_hashes()
    v1 = str(ih.v1) if ih.has_v1() else None
    v2 = str(ih.v2) if ih.has_v2() else None
    return v1, v2


# ----------------------------------------------------------------- seed

def cmd_seed(args):
    path = os.path.abspath(args.file)
    if not os.path.isfile(path):
        emit({"event": "error", "message": "no such file: " + path})
        return 2
    torrent_out = os.path.abspath(args.torrent_out or path + ".torrent")
    sha, size = sha256_file(path)

    fs = lt.file_storage()
    lt.add_files(fs, path)
    ct = lt.create_torrent(fs, args.piece_size, lt.create_torrent.v1_only)
    ct.set_creator("utp-interop lt_peer")
    lt.set_piece_hashes(ct, os.path.dirname(path))
    data = lt.bencode(ct.generate())
    with open(torrent_out, "wb") as f:
        f.write(data)
    ti = lt.torrent_info(torrent_out)
    v1, v2 = info_hashes(ti)

    ses = make_session(args.host, args.port, args.bufsize, args.resends)
    port = wait_listening(ses)
    if port is None:
        emit({"event": "error", "message": "could not listen on " + listen_on(args.host, args.port)})
        return 1
    emit({"event": "listening", "port": port})

    atp = lt.add_torrent_params()
    atp.ti = ti
    atp.save_path = os.path.dirname(path)
    flags = atp.flags
    flags &= ~lt.torrent_flags.auto_managed
    flags &= ~lt.torrent_flags.paused
    if args.seed_mode:
        flags |= lt.torrent_flags.seed_mode
    atp.flags = flags
    h = ses.add_torrent(atp)

    stop = {"sig": None}

    def on_signal(signum, _frame):
        stop["sig"] = signal.Signals(signum).name

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    deadline = time.monotonic() + args.timeout if args.timeout else None
    announced = False
    seen = set()
    while stop["sig"] is None:
        if deadline and time.monotonic() > deadline:
            emit({"event": "error", "message": "timeout after %d s" % args.timeout})
            return 3
        ses.wait_for_alert(200)
        for a in ses.pop_alerts():
            diag("alert: " + a.message())
            if isinstance(a, lt.torrent_error_alert):
                emit({"event": "error", "message": a.message()})
        st = h.status()
        if not announced and st.is_seeding:
            announced = True
            emit({"event": "seeding", "info_hash": v1, "info_hash_v2": v2, "port": port,
                  "torrent": torrent_out, "file": path, "bytes": size, "sha256": sha,
                  "piece_size": ti.piece_length(), "num_pieces": ti.num_pieces()})
        if announced:
            for p in h.get_peer_info():
                rec = peer_record(p)
                key = (rec["ip"], rec["port"])
                if key not in seen:
                    seen.add(key)
                    emit(dict({"event": "peer"}, **rec))
    st = h.status()
    emit({"event": "exit", "signal": stop["sig"], "uploaded_bytes": st.total_payload_upload})
    return 0


# ------------------------------------------------------------- download

def cmd_download(args):
    host, _, port_s = args.peer.rpartition(":")
    host = host.strip("[]")
    try:
        peer = (host, int(port_s))
    except ValueError:
        emit({"event": "error", "message": "bad --peer " + args.peer})
        return 2
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    ti = lt.torrent_info(os.path.abspath(args.torrent))
    v1, v2 = info_hashes(ti)

    ses = make_session(args.host, args.port, args.bufsize, args.resends)
    port = wait_listening(ses)
    if port is None:
        emit({"event": "error", "message": "could not listen on " + listen_on(args.host, args.port)})
        return 1
    emit({"event": "listening", "port": port})

    atp = lt.add_torrent_params()
    atp.ti = ti
    atp.save_path = out
    flags = atp.flags
    flags &= ~lt.torrent_flags.auto_managed
    flags &= ~lt.torrent_flags.paused
    atp.flags = flags
    t_add = time.monotonic()
    h = ses.add_torrent(atp)

    stop = {"sig": None}

    def on_signal(signum, _frame):
        stop["sig"] = signal.Signals(signum).name

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    peers = {}
    t_connect = None
    last_connect = 0.0
    finished = False
    deadline = time.monotonic() + args.timeout
    code = 0
    while True:
        now = time.monotonic()
        if stop["sig"] is not None:
            emit({"event": "exit", "signal": stop["sig"]})
            code = 1
            break
        if now > deadline:
            emit({"event": "error", "message": "timeout after %d s" % args.timeout})
            code = 3
            break
        st = h.status()
        if st.state in (lt.torrent_status.downloading, lt.torrent_status.finished,
                        lt.torrent_status.seeding) and st.num_peers == 0 and now - last_connect > 2.0:
            # (re)connect: the first attempt can race the torrent's start
            h.connect_peer(peer)
            last_connect = now
            if t_connect is None:
                t_connect = now
                diag("connect_peer %s:%d" % peer)
        for p in h.get_peer_info():
            rec = peer_record(p)
            key = (rec["ip"], rec["port"])
            if key not in peers:
                peers[key] = rec
                emit(dict({"event": "peer"}, **rec))
            else:
                peers[key]["flags"] |= rec["flags"]
                peers[key]["utp"] = peers[key]["utp"] or rec["utp"]
        if st.is_finished or st.is_seeding:
            finished = True
            break
        ses.wait_for_alert(100)
        for a in ses.pop_alerts():
            diag("alert: " + a.message())
            if isinstance(a, lt.torrent_error_alert):
                emit({"event": "error", "message": a.message()})

    t_end = time.monotonic()
    flushed = False
    if finished:
        # libtorrent 2.x hashes pieces from its store buffer: "finished" can
        # come before the last blocks reach the file. Flush before hashing it.
        h.flush_cache()
        flush_deadline = time.monotonic() + 30.0
        while not flushed and time.monotonic() < flush_deadline:
            ses.wait_for_alert(200)
            for a in ses.pop_alerts():
                diag("alert: " + a.message())
                if isinstance(a, lt.cache_flushed_alert):
                    flushed = True
        if not flushed:
            diag("no cache_flushed_alert within 30 s; the sha256 may be of a partial file")
    st = h.status()
    files = ti.layout() if hasattr(ti, "layout") else ti.files()
    sha = None
    if finished and files.num_files() == 1:
        sha, _ = sha256_file(os.path.join(out, files.file_path(0)))
    start = t_connect if t_connect is not None else t_add
    elapsed_ms = int(round((t_end - start) * 1000))
    total = st.total_wanted_done
    all_utp = bool(peers) and all(p["utp"] for p in peers.values())
    sha_ok = args.expect_sha256 is None or (sha is not None and sha == args.expect_sha256.lower())
    ok = finished and all_utp and sha_ok
    emit({"event": "result", "mode": "download", "ok": ok,
          "finished": finished, "info_hash": v1, "elapsed_ms": elapsed_ms,
          "elapsed_since_add_ms": int(round((t_end - t_add) * 1000)),
          "total_bytes": total, "payload_downloaded": st.total_payload_download,
          "mb_per_s": round(total / 1e6 / (elapsed_ms / 1000.0), 2) if elapsed_ms > 0 else None,
          "all_utp": all_utp, "peers": list(peers.values()), "sha256": sha, "flushed": flushed})
    if code:
        return code
    return 0 if ok else 1


# ------------------------------------------------------------ make-file

def cmd_make_file(args):
    block = 1 << 20
    h = hashlib.sha256()
    with open(args.out, "wb") as f:
        left = args.bytes
        i = 0
        while left > 0:
            n = min(block, left)
            b = hashlib.shake_128(("utp-interop:%d:%d" % (args.seed, i)).encode()).digest(n)
            f.write(b)
            h.update(b)
            left -= n
            i += 1
    emit({"event": "result", "mode": "make-file", "ok": True, "file": os.path.abspath(args.out),
          "bytes": args.bytes, "seed": args.seed, "sha256": h.hexdigest()})
    return 0


def main(argv):
    ap = argparse.ArgumentParser(prog="lt_peer.py", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)

    s = sub.add_parser("seed")
    s.add_argument("--file", required=True)
    s.add_argument("--host", default="127.0.0.1", help="listen address (::1 for IPv6)")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--torrent-out")
    s.add_argument("--piece-size", type=int, default=256 * 1024)
    s.add_argument("--bufsize", type=int, default=0)
    s.add_argument("--resends", type=int, default=0, help="utp_num_resends (0 = libtorrent's 3)")
    s.add_argument("--seed-mode", action="store_true",
                   help="trust the file (libtorrent seed_mode) instead of hashing it on start")
    s.add_argument("--timeout", type=int, default=0, help="exit 3 after S seconds (0 = never)")

    d = sub.add_parser("download")
    d.add_argument("--torrent", required=True)
    d.add_argument("--peer", required=True, help="HOST:PORT of the seed")
    d.add_argument("--out", required=True)
    d.add_argument("--host", default="127.0.0.1", help="listen address (::1 for IPv6)")
    d.add_argument("--port", type=int, default=0)
    d.add_argument("--bufsize", type=int, default=0)
    d.add_argument("--resends", type=int, default=0, help="utp_num_resends (0 = libtorrent's 3)")
    d.add_argument("--timeout", type=int, default=300)
    d.add_argument("--expect-sha256", help="fail unless the downloaded file has this sha256")

    m = sub.add_parser("make-file")
    m.add_argument("--out", required=True)
    m.add_argument("--bytes", type=int, required=True)
    m.add_argument("--seed", type=int, default=1)

    args = ap.parse_args(argv)
    if args.mode == "seed":
        return cmd_seed(args)
    if args.mode == "download":
        return cmd_download(args)
    return cmd_make_file(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
