#!/usr/bin/env node
// libutp peer for the utp-interop tests: libutp (the uTP reference code)
// through the npm package utp-native (pinned in ../package.json).
//
// Usage: node libutp-peer.js MODE [ARGS] [OPTIONS]
//
//   echo-server [PORT]            echo every byte back; end the write side
//                                 when the read side ends
//   sink [PORT]                   read each connection to its end, report
//   source [PORT] BYTES           write BYTES seeded bytes on each connection,
//                                 then end (see "source and utp-native" below)
//   echo-client HOST PORT BYTES   send BYTES seeded bytes, half-close, read
//                                 the echo to its end, compare
//   send HOST PORT BYTES          send BYTES seeded bytes, half-close, wait
//                                 for the peer's end
//   recv HOST PORT                read to the end (sends nothing but a FIN
//                                 unless --hello N)
//   gen BYTES                     no network: print the sha256 of the seeded
//                                 stream (connection 0, or --seed)
//
// PORT 0 (the default) picks a free port. Options:
//   --bind ADDR       local IPv4 address (default 127.0.0.1; utp-native is
//                     IPv4 only)
//   --local-port P    clients: bind the UDP socket to local port P (default
//                     0: any free port); one socket only, so with --conns
//                     K > 1 it needs --shared-socket (a restarted peer
//                     redialling from the same address)
//   --conns K         servers: exit 0 after K connections have finished
//                     (default: serve until SIGTERM/SIGINT);
//                     clients: run K connections concurrently
//   --shared-socket   clients: all K connections on one UDP socket
//                     (default: one UDP socket per connection)
//   --bufsize N       set SO_RCVBUF and SO_SNDBUF of the UDP socket to N bytes
//                     (utp-native setRecvBufferSize/setSendBufferSize; Linux
//                     caps the request at net.core.rmem_max/wmem_max and
//                     reports twice the granted value)
//   --seed S          base seed (default 1); connection i uses seed S+i
//   --same-seed       every connection uses seed S
//   --chunk N         write chunk size (default 65536)
//   --hello N         recv client: send N seeded bytes before half-closing
//   --no-half-close   recv client: do not half-close (only with --hello >= 1)
//   --timeout MS      clients: give up after MS ms (default 300000);
//                     servers: per-connection idle timeout (default none)
//   --exit-grace MS   clients: after the result, wait at most MS ms for the
//                     connection to close before exiting (default 5000)
//   --tail N          echo-server: after the client's end (FIN), write N more
//                     seeded bytes (seed S+i), then end (a peer that keeps
//                     sending after the other side's half-close)
//   --destroy-after N destroy each connection (utp-native destroy(), i.e.
//                     utp_close with no error) once N bytes have been
//                     received plus written on it; prints "destroyed"
//   --crash-after N   exit the process at once (exit code 4; libutp sends
//                     nothing more) once a connection has received plus
//                     written N bytes; prints "crash" first
//   --lifecycle       also print, per connection, "peer-end" (the peer's FIN
//                     arrived), "finish" (our end() flushed to libutp) and
//                     "closed" (the connection closed; "error" is the
//                     utp-native error code or null)
//
// Output: one JSON object per line on stdout, one line per event; nothing
// else goes to stdout. Diagnostics go to stderr. Events (field "event"):
//   listening   {port, address, rcvbuf, sndbuf}          servers, first line
//   socket      {conn, local_port, rcvbuf, sndbuf}       clients
//   connection  {conn, remote}                           servers, on accept
//   connected   {conn, connect_ms}                       clients
//   result      {mode, conn, ok, ...counts, hashes, elapsed_ms, mb_per_s}
//   error       {conn, message, code}
//   destroyed   {conn, received, written}                --destroy-after
//   crash       {conn, received, written}                --crash-after
//   peer-end, finish, closed {conn, ...}                 --lifecycle
//   done        {ok, conns, failed}                      before exiting
//   exit        {signal}                                 on SIGTERM/SIGINT
// Exit code: 0 all connections ok, 1 some connection failed, 2 usage error,
// 3 timeout, 4 --crash-after fired.
//
// Seeded stream (so any test can regenerate the bytes): mulberry32. State
// a = seed (u32). For each 4 output bytes:
//   a = a + 0x6D2B79F5 (wrapping u32)
//   t = imul(a ^ (a >>> 15), a | 1)
//   t = (t + imul(t ^ (t >>> 7), t | 61)) ^ t      (wrapping u32)
//   out = t ^ (t >>> 14)                           written little-endian
// The stream of BYTES bytes is the first BYTES bytes of that sequence.
//
// Source and utp-native: libutp refuses utp_write on an accepted connection
// until the initiator has sent DATA or FIN (state SYN_RECV -> CONNECTED), and
// utp-native's JS layer additionally holds the writes until the first DATA
// arrives (its Connection._onread sets _connected). A source server therefore
// sends nothing until the client speaks. This script handles both cases:
// client DATA (e.g. `recv --hello 1`) starts the stream through utp-native's
// own path; a client FIN without data (plain `recv`, which half-closes at
// once) makes libutp CONNECTED, and the script then releases the held writes
// itself (Connection._onconnect), reporting "released_on_fin": true. A client
// that neither sends data nor a FIN gets nothing, ever.
'use strict'

const crypto = require('crypto')
const os = require('os')
const path = require('path')

let utp
try {
  utp = require(path.join(__dirname, '..', 'node_modules', 'utp-native'))
} catch (err) {
  process.stderr.write('cannot load utp-native (run interop/setup.sh): ' + err.message + '\n')
  process.exit(2)
}

// ---------------------------------------------------------------- output

function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function diag (msg) {
  process.stderr.write('[libutp-peer ' + process.pid + '] ' + msg + '\n')
}

// ---------------------------------------------------------------- seeded bytes

const LE = os.endianness() === 'LE'

class SeededStream {
  constructor (seed) {
    this.a = seed >>> 0
    this.carry = null // leftover bytes of the last u32 when n % 4 != 0
  }

  nextU32 () {
    this.a = (this.a + 0x6D2B79F5) >>> 0
    const a = this.a
    let t = Math.imul(a ^ (a >>> 15), a | 1)
    t = (t + Math.imul(t ^ (t >>> 7), t | 61)) ^ t
    return (t ^ (t >>> 14)) >>> 0
  }

  // Next n bytes of the stream as a Buffer.
  take (n) {
    const out = Buffer.allocUnsafe(n)
    let off = 0
    if (this.carry) {
      const k = Math.min(this.carry.length, n)
      this.carry.copy(out, 0, 0, k)
      this.carry = k < this.carry.length ? this.carry.subarray(k) : null
      off = k
    }
    const words = Math.floor((n - off) / 4)
    if (words > 0) {
      if (LE && (out.byteOffset + off) % 4 === 0) {
        const u32 = new Uint32Array(out.buffer, out.byteOffset + off, words)
        for (let i = 0; i < words; i++) u32[i] = this.nextU32()
      } else {
        for (let i = 0; i < words; i++) out.writeUInt32LE(this.nextU32(), off + 4 * i)
      }
      off += 4 * words
    }
    if (off < n) {
      const w = Buffer.allocUnsafe(4)
      w.writeUInt32LE(this.nextU32(), 0)
      const k = n - off
      w.copy(out, off, 0, k)
      this.carry = w.subarray(k)
    }
    return out
  }
}

// ---------------------------------------------------------------- arguments

function usage (msg) {
  if (msg) process.stderr.write('libutp-peer: ' + msg + '\n')
  process.stderr.write('usage: libutp-peer.js echo-server|sink|source|echo-client|send|recv|gen ... (see the header of this file)\n')
  process.exit(2)
}

function parseArgs (argv) {
  const opts = {
    bind: '127.0.0.1',
    localPort: 0,
    conns: 0,
    sharedSocket: false,
    bufsize: 0,
    seed: 1,
    sameSeed: false,
    chunk: 65536,
    hello: 0,
    halfClose: true,
    timeout: null,
    exitGrace: 5000,
    tail: 0,
    destroyAfter: null,
    crashAfter: null,
    lifecycle: false
  }
  const pos = []
  const num = (name, v) => {
    if (v === undefined) usage(name + ' needs a value')
    const n = Number(v)
    if (!Number.isSafeInteger(n) || n < 0) usage(name + ': not a non-negative integer: ' + v)
    return n
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    switch (a) {
      case '--bind': opts.bind = argv[++i]; if (!opts.bind) usage('--bind needs a value'); break
      case '--local-port': opts.localPort = num(a, argv[++i]); break
      case '--conns': opts.conns = num(a, argv[++i]); break
      case '--shared-socket': opts.sharedSocket = true; break
      case '--bufsize': opts.bufsize = num(a, argv[++i]); break
      case '--seed': opts.seed = num(a, argv[++i]); break
      case '--same-seed': opts.sameSeed = true; break
      case '--chunk': opts.chunk = num(a, argv[++i]); break
      case '--hello': opts.hello = num(a, argv[++i]); break
      case '--no-half-close': opts.halfClose = false; break
      case '--timeout': opts.timeout = num(a, argv[++i]); break
      case '--exit-grace': opts.exitGrace = num(a, argv[++i]); break
      case '--tail': opts.tail = num(a, argv[++i]); break
      case '--destroy-after': opts.destroyAfter = num(a, argv[++i]); break
      case '--crash-after': opts.crashAfter = num(a, argv[++i]); break
      case '--lifecycle': opts.lifecycle = true; break
      case '-h': case '--help': usage()
      // falls through (usage exits)
      default:
        if (a.startsWith('--')) usage('unknown option ' + a)
        pos.push(a)
    }
  }
  if (opts.chunk < 1) usage('--chunk must be >= 1')
  if (opts.localPort > 65535) usage('bad --local-port ' + opts.localPort)
  if (opts.localPort && opts.conns > 1 && !opts.sharedSocket) usage('--local-port with --conns > 1 needs --shared-socket')
  return { opts, pos }
}

function seedFor (opts, i) {
  return opts.sameSeed ? opts.seed >>> 0 : (opts.seed + i) >>> 0
}

function portArg (s) {
  if (s === undefined) return 0
  const n = Number(s)
  if (!Number.isInteger(n) || n < 0 || n > 65535) usage('bad port ' + s)
  return n
}

function bytesArg (s) {
  if (s === undefined) usage('BYTES missing')
  const n = Number(s)
  if (!Number.isSafeInteger(n) || n < 0) usage('bad BYTES ' + s)
  return n
}

// ---------------------------------------------------------------- helpers

function applyBufsize (sock, opts) {
  const info = {}
  if (opts.bufsize > 0) {
    try {
      sock.setRecvBufferSize(opts.bufsize)
      sock.setSendBufferSize(opts.bufsize)
    } catch (err) {
      diag('setting buffer sizes failed: ' + err.message)
    }
  }
  try {
    // Linux reports the kernel's (doubled) value.
    info.rcvbuf = sock.getRecvBufferSize()
    info.sndbuf = sock.getSendBufferSize()
  } catch (err) {
    diag('reading buffer sizes failed: ' + err.message)
  }
  return info
}

function rate (bytes, ms) {
  return ms > 0 ? Math.round((bytes / 1e6) / (ms / 1000) * 100) / 100 : null
}

function errInfo (err) {
  return { message: err && err.message ? err.message : String(err), code: err && err.code ? err.code : null }
}

// utp-native passes end() to utp_shutdown(SHUT_WR), which libutp ignores
// while the connection is still SYN_SENT / SYN_RECV: the FIN would be lost
// and only a later destroy would send one. So end only once connected.
function endWhenConnected (conn) {
  if (conn._connected) conn.end()
  else conn.once('connect', () => conn.end())
}

// Write `total` bytes of a seeded stream to conn with backpressure, then
// (optionally) end. Returns a promise resolving to { sha256, bytes }.
// `onWrite(n)`, if given, is called after each chunk handed to utp-native.
function writeSeeded (conn, seed, total, chunk, end, onWrite) {
  return new Promise((resolve) => {
    const gen = new SeededStream(seed)
    const hash = crypto.createHash('sha256')
    let written = 0
    let stopped = false
    const finish = () => {
      if (stopped) return
      stopped = true
      resolve({ sha256: hash.digest('hex'), bytes: written })
    }
    conn.once('close', finish)
    const pump = () => {
      while (written < total) {
        if (conn.destroyed) return finish()
        const n = Math.min(chunk, total - written)
        const buf = gen.take(n)
        hash.update(buf)
        written += n
        const more = conn.write(buf)
        if (onWrite) onWrite(n)
        if (!more) {
          conn.once('drain', pump)
          return
        }
      }
      if (end) endWhenConnected(conn)
      finish()
    }
    pump()
  })
}

// The --destroy-after / --crash-after / --lifecycle instrumentation of
// connection i. Returns onWrite(n) for writeSeeded (or null when none of
// these options is given: the modes then behave exactly as without them).
function instrument (conn, i, opts, errorOf) {
  if (opts.lifecycle) {
    conn.once('end', () => emit({ event: 'peer-end', conn: i }))
    conn.once('finish', () => emit({ event: 'finish', conn: i }))
    // utp-native emits 'error' just before 'close'.
    conn.once('close', () => {
      const err = errorOf()
      emit({ event: 'closed', conn: i, error: err ? errInfo(err).code : null })
    })
  }
  if (opts.destroyAfter === null && opts.crashAfter === null) return null
  let received = 0
  let written = 0
  let fired = false
  const check = () => {
    if (fired) return
    const total = received + written
    if (opts.crashAfter !== null && total >= opts.crashAfter) {
      fired = true
      emit({ event: 'crash', conn: i, received, written })
      diag('connection ' + i + ': --crash-after ' + opts.crashAfter + ' reached, exiting without closing')
      process.exit(4)
    }
    if (opts.destroyAfter !== null && total >= opts.destroyAfter) {
      fired = true
      emit({ event: 'destroyed', conn: i, received, written })
      conn.destroy()
    }
  }
  conn.on('data', (d) => { received += d.length; check() })
  return (n) => { written += n; check() }
}

function readAll (conn) {
  const hash = crypto.createHash('sha256')
  const state = { bytes: 0, ended: false, sha256: null, firstByteAt: null }
  conn.on('data', (d) => {
    if (state.firstByteAt === null) state.firstByteAt = Date.now()
    state.bytes += d.length
    hash.update(d)
  })
  state.done = new Promise((resolve) => {
    conn.once('end', () => {
      state.ended = true
      state.sha256 = hash.digest('hex')
      resolve(state)
    })
    conn.once('close', () => {
      if (!state.ended) { state.sha256 = hash.digest('hex'); resolve(state) }
    })
  })
  return state
}

// ---------------------------------------------------------------- servers

function runServer (mode, pos, opts) {
  const port = portArg(pos[0])
  let bytes = 0
  if (mode === 'source') bytes = bytesArg(pos[1])

  const server = utp.createServer({ allowHalfOpen: true })
  let accepted = 0
  let finished = 0
  let failed = 0
  const live = new Set()

  const connDone = (ok) => {
    finished++
    if (!ok) failed++
    if (opts.conns && finished >= opts.conns) {
      emit({ event: 'done', ok: failed === 0, conns: finished, failed })
      shutdown(failed === 0 ? 0 : 1)
    }
  }

  server.on('error', (err) => {
    emit(Object.assign({ event: 'error', conn: null }, errInfo(err)))
    diag('server error: ' + (err.stack || err))
    process.exit(1)
  })

  server.on('connection', (conn) => {
    const i = accepted++
    const remote = conn.remoteAddress + ':' + conn.remotePort
    live.add(conn)
    emit({ event: 'connection', conn: i, remote })
    const t0 = Date.now()
    const closed = new Promise((resolve) => conn.once('close', resolve))
    let errored = null
    let reported = false
    conn.on('error', (err) => {
      errored = err
      emit(Object.assign({ event: 'error', conn: i, remote }, errInfo(err)))
    })
    const onWrite = instrument(conn, i, opts, () => errored)
    if (opts.timeout) {
      conn.setTimeout(opts.timeout, () => {
        diag('connection ' + i + ' idle for ' + opts.timeout + ' ms, destroying')
        conn.destroy(Object.assign(new Error('idle timeout'), { code: 'TIMEOUT' }))
      })
    }
    const report = (obj) => {
      if (reported) return
      reported = true
      const ok = obj.ok && !errored
      emit(Object.assign({ event: 'result', mode, conn: i, remote }, obj, { ok }))
      connDone(ok)
    }

    if (mode === 'echo-server') {
      const hash = crypto.createHash('sha256')
      let n = 0
      let ended = false
      let elapsed = null
      let tail = null
      conn.on('data', (d) => {
        n += d.length
        hash.update(d)
        if (conn.destroyed) return // --destroy-after fired on this chunk
        conn.write(d)
        if (onWrite) onWrite(d.length)
      })
      conn.once('end', () => {
        ended = true
        elapsed = Date.now() - t0
        if (opts.tail > 0) {
          // Keep sending after the client's half-close, then end.
          tail = writeSeeded(conn, seedFor(opts, i), opts.tail, opts.chunk, true, onWrite)
        } else {
          conn.end()
        }
      })
      closed.then(() => (tail || Promise.resolve(null))).then((t) => {
        if (elapsed === null) elapsed = Date.now() - t0
        const res = { ok: ended, bytes: n, sha256: hash.digest('hex'), elapsed_ms: elapsed, mb_per_s: rate(n, elapsed), closed_before_end: !ended }
        if (opts.tail > 0) {
          Object.assign(res, { ok: ended && t !== null && t.bytes === opts.tail, tail_seed: seedFor(opts, i), tail_bytes: t ? t.bytes : 0, tail_sha256: t ? t.sha256 : null, elapsed_ms: Date.now() - t0 })
        }
        report(res)
      })
    } else if (mode === 'sink') {
      const st = readAll(conn)
      st.done.then(() => {
        const elapsed = Date.now() - t0
        if (st.ended) conn.end()
        report({ ok: st.ended, bytes: st.bytes, sha256: st.sha256, elapsed_ms: elapsed, mb_per_s: rate(st.bytes, elapsed) })
      })
    } else if (mode === 'source') {
      // Whatever the client sends is read, counted and discarded.
      const st = readAll(conn)
      let releasedOnFin = false
      conn.once('end', () => {
        // Client FIN before any DATA: libutp is CONNECTED now, but
        // utp-native still holds the writes (see the header).
        if (!conn._connected && !conn.destroyed) {
          releasedOnFin = true
          diag('connection ' + i + ': client sent FIN before any data; releasing held writes')
          conn._onconnect()
        }
      })
      const seed = seedFor(opts, i)
      let firstWriteAt = null
      conn.once('connect', () => { firstWriteAt = Date.now() })
      writeSeeded(conn, seed, bytes, opts.chunk, true, onWrite).then((w) => {
        closed.then(() => {
          const elapsed = Date.now() - t0
          report({
            ok: w.bytes === bytes && !errored,
            seed,
            bytes: w.bytes,
            sha256: w.sha256,
            client_bytes: st.bytes,
            client_sha256: st.sha256,
            released_on_fin: releasedOnFin,
            held_ms: firstWriteAt === null ? null : firstWriteAt - t0,
            elapsed_ms: elapsed,
            mb_per_s: rate(w.bytes, elapsed)
          })
        })
      })
    }
    conn.once('close', () => { live.delete(conn) })
  })

  let shuttingDown = false
  function shutdown (code) {
    if (shuttingDown) return
    shuttingDown = true
    for (const c of live) c.destroy()
    const t = setTimeout(() => process.exit(code), 500)
    try { server.close(() => { clearTimeout(t); process.exit(code) }) } catch (_) { process.exit(code) }
  }
  onSignals(() => shutdown(0))

  server.listen(port, opts.bind, () => {
    const info = applyBufsize(server, opts)
    emit(Object.assign({ event: 'listening', port: server.address().port, address: opts.bind }, info))
  })
}

// ---------------------------------------------------------------- clients

function runClients (mode, pos, opts) {
  const host = pos[0]
  const port = portArg(pos[1])
  if (!host || !port) usage(mode + ' needs HOST PORT')
  let bytes = 0
  if (mode !== 'recv') bytes = bytesArg(pos[2])
  const k = Math.max(1, opts.conns)
  const timeoutMs = opts.timeout === null ? 300000 : opts.timeout

  const sockets = []
  let shared = null
  const newSocket = () => {
    const s = utp({ allowHalfOpen: true })
    s.on('error', (err) => { emit(Object.assign({ event: 'error', conn: null }, errInfo(err))) })
    s.bind(opts.localPort, opts.bind)
    sockets.push(s)
    return s
  }
  if (opts.sharedSocket) {
    shared = newSocket()
    emit(Object.assign({ event: 'socket', conn: null, local_port: shared.address().port }, applyBufsize(shared, opts)))
  }

  const conns = []
  const runs = []
  for (let i = 0; i < k; i++) {
    const sock = shared || newSocket()
    if (!shared) emit(Object.assign({ event: 'socket', conn: i, local_port: sock.address().port }, applyBufsize(sock, opts)))
    const seed = seedFor(opts, i)
    const t0 = Date.now()
    const conn = sock.connect(port, host)
    conns.push(conn)
    let errored = null
    conn.on('error', (err) => {
      errored = err
      emit(Object.assign({ event: 'error', conn: i }, errInfo(err)))
    })
    const onWrite = instrument(conn, i, opts, () => errored)
    conn.once('connect', () => emit({ event: 'connected', conn: i, connect_ms: Date.now() - t0 }))
    const closed = new Promise((resolve) => conn.once('close', resolve))

    let run
    if (mode === 'echo-client') {
      const st = readAll(conn)
      run = Promise.all([writeSeeded(conn, seed, bytes, opts.chunk, true, onWrite), st.done]).then(([w, r]) => {
        const elapsed = Date.now() - t0
        const ok = !errored && r.ended && w.bytes === bytes && r.bytes === bytes && w.sha256 === r.sha256
        return { mode, conn: i, ok, seed, sent_bytes: w.bytes, sent_sha256: w.sha256, recv_bytes: r.bytes, recv_sha256: r.sha256, elapsed_ms: elapsed, mb_per_s: rate(w.bytes, elapsed) }
      })
    } else if (mode === 'send') {
      const st = readAll(conn)
      let sentAt = null
      run = writeSeeded(conn, seed, bytes, opts.chunk, true, onWrite).then((w) => {
        sentAt = Date.now()
        return st.done.then((r) => {
          const elapsed = Date.now() - t0
          const ok = !errored && r.ended && w.bytes === bytes
          return { mode, conn: i, ok, seed, bytes: w.bytes, sha256: w.sha256, peer_bytes: r.bytes, peer_sha256: r.sha256, written_ms: sentAt - t0, elapsed_ms: elapsed, mb_per_s: rate(w.bytes, elapsed) }
        })
      })
    } else { // recv
      const st = readAll(conn)
      let hello = Promise.resolve(null)
      if (opts.hello > 0) hello = writeSeeded(conn, seed, opts.hello, opts.chunk, opts.halfClose, onWrite)
      else if (opts.halfClose) endWhenConnected(conn)
      else diag('recv without --hello and with --no-half-close: a libutp source will never send')
      run = Promise.all([hello, st.done]).then(([h, r]) => {
        const elapsed = Date.now() - t0
        const ttfb = r.firstByteAt === null ? null : r.firstByteAt - t0
        return { mode, conn: i, ok: !errored && r.ended, hello_bytes: h ? h.bytes : 0, bytes: r.bytes, sha256: r.sha256, first_byte_ms: ttfb, elapsed_ms: elapsed, mb_per_s: rate(r.bytes, elapsed) }
      })
    }
    runs.push(run.then((res) => {
      if (errored) Object.assign(res, { ok: false, error: errInfo(errored).message })
      emit(Object.assign({ event: 'result' }, res))
      // Let libutp ack the peer's FIN and finish its own close.
      return Promise.race([closed, new Promise((resolve) => setTimeout(resolve, opts.exitGrace))]).then(() => res.ok)
    }))
  }

  let timer = null
  if (timeoutMs > 0) {
    timer = setTimeout(() => {
      emit({ event: 'error', conn: null, message: 'timeout after ' + timeoutMs + ' ms', code: 'TIMEOUT' })
      finish(3)
    }, timeoutMs)
  }

  let finished = false
  function finish (code) {
    if (finished) return
    finished = true
    if (timer) clearTimeout(timer)
    for (const c of conns) if (!c.destroyed) c.destroy()
    const t = setTimeout(() => process.exit(code), 500)
    let open = sockets.length
    if (!open) process.exit(code)
    for (const s of sockets) {
      s.close(() => { if (--open === 0) { clearTimeout(t); process.exit(code) } })
    }
  }

  onSignals(() => finish(0))

  Promise.all(runs).then((oks) => {
    const failed = oks.filter((x) => !x).length
    emit({ event: 'done', ok: failed === 0, conns: k, failed })
    finish(failed === 0 ? 0 : 1)
  })
}

// ---------------------------------------------------------------- main

function onSignals (fn) {
  for (const sig of ['SIGTERM', 'SIGINT']) {
    process.once(sig, () => {
      emit({ event: 'exit', signal: sig })
      fn()
    })
  }
}

function main () {
  const { opts, pos } = parseArgs(process.argv.slice(2))
  const mode = pos.shift()
  switch (mode) {
    case 'echo-server':
    case 'sink':
    case 'source':
      return runServer(mode, pos, opts)
    case 'echo-client':
    case 'send':
    case 'recv':
      return runClients(mode, pos, opts)
    case 'gen': {
      const n = bytesArg(pos[0])
      const gen = new SeededStream(opts.seed >>> 0)
      const hash = crypto.createHash('sha256')
      for (let left = n; left > 0;) {
        const c = Math.min(left, 1 << 20)
        hash.update(gen.take(c))
        left -= c
      }
      emit({ event: 'result', mode: 'gen', ok: true, seed: opts.seed >>> 0, bytes: n, sha256: hash.digest('hex') })
      return
    }
    default:
      usage(mode ? 'unknown mode ' + mode : 'MODE missing')
  }
}

process.on('uncaughtException', (err) => {
  diag('uncaught: ' + (err && err.stack ? err.stack : err))
  emit(Object.assign({ event: 'error', conn: null }, errInfo(err)))
  process.exit(1)
})

main()
