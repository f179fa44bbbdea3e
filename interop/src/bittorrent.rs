//! A minimal BitTorrent peer (BEP 3) over any byte stream, to move real
//! torrents between this project's uTP and libtorrent's.
//!
//! - [`Metainfo`]: a v1 single-file `.torrent` (bencode), its info-hash (the
//!   SHA-1 of the raw bencoded `info` dictionary) and [`Metainfo::create`]
//!   for making one.
//! - The peer wire: [`Handshake`] and [`Message`] (keep-alive, choke,
//!   unchoke, interested, not interested, have, bitfield, request, piece,
//!   cancel; every other id, e.g. the extension protocol's 20, is kept as
//!   [`Message::Other`] and ignored by the peers below).
//! - [`download`]: connect-side leecher. Handshake, wait for the remote's
//!   pieces and unchoke, pipeline 16 KiB block requests, verify each piece's
//!   SHA-1, return the file.
//! - [`seed`]: accept-side seeder. Handshake, bitfield of every piece,
//!   unchoke when interested, serve requests until the remote leaves.
//!
//! Both take an idle timeout (no message for that long fails) and an overall
//! one; errors are [`io::Error`]s whose messages say where it went wrong.
//! Reserved handshake bits are all zero, so a peer does not use extensions
//! with us (no extension protocol, no fast extension, no DHT).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Size of a requested block: 16 KiB, what every client uses.
pub const BLOCK: u32 = 16 * 1024;

/// `pstr` of the handshake.
pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";

/// Longest message we accept (a piece message carrying one block, a
/// bitfield of a large torrent, ...). Anything longer is a protocol error.
pub const MAX_MESSAGE: u32 = 1 << 20;

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ------------------------------------------------------------------ bencode

/// A bencoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bencode {
    /// `i<n>e`
    Int(i64),
    /// `<len>:<bytes>`
    Bytes(Vec<u8>),
    /// `l...e`
    List(Vec<Bencode>),
    /// `d...e` (keys are byte strings)
    Dict(BTreeMap<Vec<u8>, Bencode>),
}

impl Bencode {
    /// Decodes exactly one value filling all of `buf`.
    pub fn decode(buf: &[u8]) -> io::Result<Bencode> {
        let mut d = Decoder { buf, pos: 0, depth: 0 };
        let v = d.value()?;
        if d.pos != buf.len() {
            return Err(invalid(format!("bencode: {} trailing bytes", buf.len() - d.pos)));
        }
        Ok(v)
    }

    /// The value of `key` in a dictionary.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&Bencode> {
        match self {
            Bencode::Dict(d) => d.get(key.as_bytes()),
            _ => None,
        }
    }

    /// The integer, if this is one.
    #[must_use]
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Bencode::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The byte string, if this is one.
    #[must_use]
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Bencode::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// Appends the canonical encoding of `self` to `out` (dictionary keys
    /// sorted, as a `BTreeMap` keeps them).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Bencode::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            Bencode::Bytes(b) => {
                out.extend_from_slice(format!("{}:", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Bencode::List(l) => {
                out.push(b'l');
                for v in l {
                    v.encode_into(out);
                }
                out.push(b'e');
            }
            Bencode::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    Bencode::Bytes(k.clone()).encode_into(out);
                    v.encode_into(out);
                }
                out.push(b'e');
            }
        }
    }

    /// The canonical encoding of `self`.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Decoder<'_> {
    fn err(&self, what: &str) -> io::Error {
        invalid(format!("bencode: {what} at offset {}", self.pos))
    }

    fn peek(&self) -> io::Result<u8> {
        self.buf.get(self.pos).copied().ok_or_else(|| self.err("unexpected end"))
    }

    /// Digits up to `end`, as an integer (with an optional leading `-`).
    fn number(&mut self, end: u8) -> io::Result<i64> {
        let start = self.pos;
        let len = self.buf[start..]
            .iter()
            .position(|&b| b == end)
            .ok_or_else(|| self.err("unterminated number"))?;
        let text = std::str::from_utf8(&self.buf[start..start + len])
            .map_err(|_| self.err("non-ASCII number"))?;
        let ok_form = !text.is_empty()
            && text != "-"
            && text != "-0"
            && !(text.len() > 1 && text.starts_with('0'))
            && !text.starts_with("-0");
        let n =
            text.parse::<i64>().ok().filter(|_| ok_form).ok_or_else(|| self.err("bad number"))?;
        self.pos = start + len + 1;
        Ok(n)
    }

    fn bytes(&mut self) -> io::Result<Vec<u8>> {
        let n = self.number(b':')?;
        let n = usize::try_from(n).map_err(|_| self.err("negative string length"))?;
        if self.buf.len() - self.pos < n {
            return Err(self.err("string runs past the end"));
        }
        let b = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(b)
    }

    fn value(&mut self) -> io::Result<Bencode> {
        self.depth += 1;
        if self.depth > 64 {
            return Err(self.err("nesting too deep"));
        }
        let v = match self.peek()? {
            b'i' => {
                self.pos += 1;
                Bencode::Int(self.number(b'e')?)
            }
            b'0'..=b'9' => Bencode::Bytes(self.bytes()?),
            b'l' => {
                self.pos += 1;
                let mut l = Vec::new();
                while self.peek()? != b'e' {
                    l.push(self.value()?);
                }
                self.pos += 1;
                Bencode::List(l)
            }
            b'd' => {
                self.pos += 1;
                let mut d = BTreeMap::new();
                while self.peek()? != b'e' {
                    if !self.peek()?.is_ascii_digit() {
                        return Err(self.err("dictionary key is not a string"));
                    }
                    let k = self.bytes()?;
                    let v = self.value()?;
                    d.insert(k, v);
                }
                self.pos += 1;
                Bencode::Dict(d)
            }
            c => return Err(self.err(&format!("unexpected byte {c:#04x}"))),
        };
        self.depth -= 1;
        Ok(v)
    }
}

/// The raw bytes of the value of `key` in the top-level dictionary of
/// `buf`, exactly as they appear in the file (the info-hash is computed
/// over these, never over a re-encoding).
pub fn raw_value<'a>(buf: &'a [u8], key: &str) -> io::Result<Option<&'a [u8]>> {
    let mut d = Decoder { buf, pos: 0, depth: 0 };
    if d.peek()? != b'd' {
        return Err(invalid("bencode: the top level is not a dictionary"));
    }
    d.pos = 1;
    while d.peek()? != b'e' {
        let k = d.bytes()?;
        let start = d.pos;
        d.value()?;
        if k == key.as_bytes() {
            return Ok(Some(&buf[start..d.pos]));
        }
    }
    Ok(None)
}

// ----------------------------------------------------------------- metainfo

/// A v1 single-file torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metainfo {
    /// `info.name`: the file's name.
    pub name: String,
    /// `info.length`: the file's size in bytes.
    pub length: u64,
    /// `info.piece length`.
    pub piece_length: u64,
    /// `info.pieces`: the SHA-1 of every piece.
    pub pieces: Vec<[u8; 20]>,
    /// SHA-1 of the raw bencoded `info` dictionary.
    pub info_hash: [u8; 20],
}

impl Metainfo {
    /// Parses a `.torrent` file's bytes.
    pub fn from_torrent(torrent: &[u8]) -> io::Result<Metainfo> {
        let top = Bencode::decode(torrent).map_err(|e| context(e, "torrent"))?;
        let raw_info =
            raw_value(torrent, "info")?.ok_or_else(|| invalid("torrent has no info dictionary"))?;
        let info = top.get("info").ok_or_else(|| invalid("torrent has no info dictionary"))?;
        if !matches!(info, Bencode::Dict(_)) {
            return Err(invalid("torrent: info is not a dictionary"));
        }
        if info.get("files").is_some() {
            return Err(invalid("torrent: multi-file torrents are not supported"));
        }
        let field = |k: &str| info.get(k).ok_or_else(|| invalid(format!("torrent: no info.{k}")));
        let name = String::from_utf8(
            field("name")?.as_bytes().ok_or_else(|| invalid("torrent: info.name"))?.to_vec(),
        )
        .map_err(|_| invalid("torrent: info.name is not UTF-8"))?;
        if name.is_empty() || name.contains('/') || name.contains('\\') || name.starts_with('.') {
            return Err(invalid(format!("torrent: unsafe file name {name:?}")));
        }
        let length = field("length")?
            .as_int()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| invalid("torrent: info.length"))?;
        let piece_length = field("piece length")?
            .as_int()
            .and_then(|n| u64::try_from(n).ok())
            .filter(|&n| n > 0 && n <= 1 << 26)
            .ok_or_else(|| invalid("torrent: info.piece length"))?;
        let pieces_raw = field("pieces")?.as_bytes().ok_or_else(|| invalid("torrent: pieces"))?;
        if pieces_raw.len() % 20 != 0 {
            return Err(invalid("torrent: info.pieces is not a multiple of 20 bytes"));
        }
        let pieces: Vec<[u8; 20]> =
            pieces_raw.chunks_exact(20).map(|c| c.try_into().expect("20 bytes")).collect();
        let expected = length.div_ceil(piece_length);
        if pieces.len() as u64 != expected {
            return Err(invalid(format!(
                "torrent: {} piece hashes for {length} bytes in pieces of {piece_length} \
                 (expected {expected})",
                pieces.len()
            )));
        }
        let info_hash = Sha1::digest(raw_info).into();
        Ok(Metainfo { name, length, piece_length, pieces, info_hash })
    }

    /// Reads and parses a `.torrent` file.
    pub fn from_file(path: &Path) -> io::Result<Metainfo> {
        let bytes = std::fs::read(path).map_err(|e| context(e, &path.display().to_string()))?;
        Metainfo::from_torrent(&bytes)
    }

    /// A torrent for `data` named `name`, and the `.torrent` file's bytes.
    #[must_use]
    pub fn create(name: &str, data: &[u8], piece_length: u64) -> (Metainfo, Vec<u8>) {
        assert!(piece_length > 0);
        let mut pieces = Vec::new();
        for chunk in data.chunks(piece_length as usize) {
            pieces.extend_from_slice(&Sha1::digest(chunk));
        }
        let info = Bencode::Dict(BTreeMap::from([
            (b"length".to_vec(), Bencode::Int(data.len() as i64)),
            (b"name".to_vec(), Bencode::Bytes(name.as_bytes().to_vec())),
            (b"piece length".to_vec(), Bencode::Int(piece_length as i64)),
            (b"pieces".to_vec(), Bencode::Bytes(pieces)),
        ]));
        let top = Bencode::Dict(BTreeMap::from([
            (b"created by".to_vec(), Bencode::Bytes(b"utp-interop".to_vec())),
            (b"info".to_vec(), info),
        ]));
        let bytes = top.encode();
        let meta = Metainfo::from_torrent(&bytes).expect("a torrent we made parses");
        (meta, bytes)
    }

    /// Number of pieces.
    #[must_use]
    pub fn num_pieces(&self) -> usize {
        self.pieces.len()
    }

    /// Size of piece `index` (the last one may be short).
    #[must_use]
    pub fn piece_size(&self, index: usize) -> u64 {
        let start = index as u64 * self.piece_length;
        (self.length - start).min(self.piece_length)
    }

    /// The info-hash in lowercase hex.
    #[must_use]
    pub fn info_hash_hex(&self) -> String {
        hex(&self.info_hash)
    }

    /// Checks `data` against every piece hash; the index of the first bad
    /// piece on failure.
    pub fn verify(&self, data: &[u8]) -> Result<(), usize> {
        if data.len() as u64 != self.length {
            return Err(0);
        }
        for (i, chunk) in data.chunks(self.piece_length as usize).enumerate() {
            if Sha1::digest(chunk).as_slice() != self.pieces[i] {
                return Err(i);
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- peer wire

/// The 68-byte handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    /// Extension bits (we send zeros).
    pub reserved: [u8; 8],
    /// The torrent.
    pub info_hash: [u8; 20],
    /// The sender.
    pub peer_id: [u8; 20],
}

impl Handshake {
    /// Our handshake: reserved bits all zero.
    #[must_use]
    pub fn new(info_hash: [u8; 20], peer_id: [u8; 20]) -> Handshake {
        Handshake { reserved: [0; 8], info_hash, peer_id }
    }

    /// The 68 bytes on the wire.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; 68] {
        let mut b = [0u8; 68];
        b[0] = 19;
        b[1..20].copy_from_slice(PROTOCOL);
        b[20..28].copy_from_slice(&self.reserved);
        b[28..48].copy_from_slice(&self.info_hash);
        b[48..68].copy_from_slice(&self.peer_id);
        b
    }

    /// Parses 68 bytes.
    pub fn from_bytes(b: &[u8; 68]) -> io::Result<Handshake> {
        if b[0] != 19 || &b[1..20] != PROTOCOL {
            return Err(invalid(format!(
                "handshake: not \"BitTorrent protocol\" (first bytes {})",
                hex(&b[..20])
            )));
        }
        Ok(Handshake {
            reserved: b[20..28].try_into().expect("8"),
            info_hash: b[28..48].try_into().expect("20"),
            peer_id: b[48..68].try_into().expect("20"),
        })
    }

    /// Writes the handshake.
    pub async fn write<W: AsyncWrite + Unpin>(&self, w: &mut W) -> io::Result<()> {
        w.write_all(&self.to_bytes()).await?;
        w.flush().await
    }

    /// Reads a handshake.
    pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Handshake> {
        let mut b = [0u8; 68];
        r.read_exact(&mut b).await?;
        Handshake::from_bytes(&b)
    }
}

/// A peer-wire message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Length 0.
    KeepAlive,
    /// id 0
    Choke,
    /// id 1
    Unchoke,
    /// id 2
    Interested,
    /// id 3
    NotInterested,
    /// id 4
    Have(u32),
    /// id 5
    Bitfield(Vec<u8>),
    /// id 6
    Request {
        /// piece
        index: u32,
        /// offset in the piece
        begin: u32,
        /// bytes
        length: u32,
    },
    /// id 7
    Piece {
        /// piece
        index: u32,
        /// offset in the piece
        begin: u32,
        /// the block
        data: Vec<u8>,
    },
    /// id 8
    Cancel {
        /// piece
        index: u32,
        /// offset in the piece
        begin: u32,
        /// bytes
        length: u32,
    },
    /// Any other id (9 port, 13..17 fast extension, 20 extension protocol,
    /// ...), kept raw.
    Other {
        /// message id
        id: u8,
        /// payload after the id
        payload: Vec<u8>,
    },
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().expect("4 bytes"))
}

impl Message {
    /// Appends the length-prefixed encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let triple = |out: &mut Vec<u8>, id: u8, a: u32, b: u32, c: u32| {
            out.extend_from_slice(&13u32.to_be_bytes());
            out.push(id);
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&b.to_be_bytes());
            out.extend_from_slice(&c.to_be_bytes());
        };
        let bare = |out: &mut Vec<u8>, id: u8| {
            out.extend_from_slice(&1u32.to_be_bytes());
            out.push(id);
        };
        match self {
            Message::KeepAlive => out.extend_from_slice(&0u32.to_be_bytes()),
            Message::Choke => bare(out, 0),
            Message::Unchoke => bare(out, 1),
            Message::Interested => bare(out, 2),
            Message::NotInterested => bare(out, 3),
            Message::Have(i) => {
                out.extend_from_slice(&5u32.to_be_bytes());
                out.push(4);
                out.extend_from_slice(&i.to_be_bytes());
            }
            Message::Bitfield(b) => {
                out.extend_from_slice(&(1 + b.len() as u32).to_be_bytes());
                out.push(5);
                out.extend_from_slice(b);
            }
            Message::Request { index, begin, length } => triple(out, 6, *index, *begin, *length),
            Message::Piece { index, begin, data } => {
                out.extend_from_slice(&(9 + data.len() as u32).to_be_bytes());
                out.push(7);
                out.extend_from_slice(&index.to_be_bytes());
                out.extend_from_slice(&begin.to_be_bytes());
                out.extend_from_slice(data);
            }
            Message::Cancel { index, begin, length } => triple(out, 8, *index, *begin, *length),
            Message::Other { id, payload } => {
                out.extend_from_slice(&(1 + payload.len() as u32).to_be_bytes());
                out.push(*id);
                out.extend_from_slice(payload);
            }
        }
    }

    /// The length-prefixed encoding.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Parses the body of a message (after the length prefix).
    pub fn parse(body: &[u8]) -> io::Result<Message> {
        let Some((&id, p)) = body.split_first() else { return Ok(Message::KeepAlive) };
        let need = |n: usize| {
            if p.len() == n {
                Ok(())
            } else {
                Err(invalid(format!("message id {id}: payload of {} bytes, expected {n}", p.len())))
            }
        };
        Ok(match id {
            0 => need(0).map(|()| Message::Choke)?,
            1 => need(0).map(|()| Message::Unchoke)?,
            2 => need(0).map(|()| Message::Interested)?,
            3 => need(0).map(|()| Message::NotInterested)?,
            4 => need(4).map(|()| Message::Have(be32(p)))?,
            5 => Message::Bitfield(p.to_vec()),
            6 | 8 => {
                need(12)?;
                let (index, begin, length) = (be32(p), be32(&p[4..]), be32(&p[8..]));
                if id == 6 {
                    Message::Request { index, begin, length }
                } else {
                    Message::Cancel { index, begin, length }
                }
            }
            7 => {
                if p.len() < 8 {
                    return Err(invalid("piece message shorter than its header"));
                }
                Message::Piece { index: be32(p), begin: be32(&p[4..]), data: p[8..].to_vec() }
            }
            _ => Message::Other { id, payload: p.to_vec() },
        })
    }

    /// Reads one message; `Ok(None)` at a clean end of stream before its
    /// first byte.
    pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Message>> {
        let mut len = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            let n = r.read(&mut len[got..]).await?;
            if n == 0 {
                if got == 0 {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended inside a length prefix",
                ));
            }
            got += n;
        }
        let len = u32::from_be_bytes(len);
        if len > MAX_MESSAGE {
            return Err(invalid(format!("message of {len} bytes (limit {MAX_MESSAGE})")));
        }
        let mut body = vec![0u8; len as usize];
        r.read_exact(&mut body).await.map_err(|e| context(e, "reading a message body"))?;
        Message::parse(&body).map(Some)
    }

    /// Short name for logs and reports.
    #[must_use]
    pub fn name(&self) -> String {
        match self {
            Message::KeepAlive => "keep-alive".into(),
            Message::Choke => "choke".into(),
            Message::Unchoke => "unchoke".into(),
            Message::Interested => "interested".into(),
            Message::NotInterested => "not-interested".into(),
            Message::Have(_) => "have".into(),
            Message::Bitfield(_) => "bitfield".into(),
            Message::Request { .. } => "request".into(),
            Message::Piece { .. } => "piece".into(),
            Message::Cancel { .. } => "cancel".into(),
            Message::Other { id, .. } => format!("id{id}"),
        }
    }
}

/// A 20-byte peer id in Azureus style: `-UX0001-` and 12 pseudo-random
/// bytes.
#[must_use]
pub fn make_peer_id() -> [u8; 20] {
    let mut id = *b"-UX0001-000000000000";
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    for b in &mut id[8..] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = b'0' + (x % 10) as u8;
    }
    id
}

// ------------------------------------------------------------------ options

/// Limits of a [`download`] or [`seed`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Block requests kept outstanding by the downloader.
    pub pipeline: usize,
    /// Longest wait for the handshake.
    pub handshake_timeout: Duration,
    /// Longest wait for any message once connected.
    pub idle_timeout: Duration,
    /// Longest the whole exchange may take.
    pub total_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pipeline: 48,
            handshake_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(30),
            total_timeout: Duration::from_secs(300),
        }
    }
}

async fn with_timeout<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(|e| context(e, what)),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what}: nothing within {limit:?}"),
        )),
    }
}

/// Writes every buffer sent on `rx` to `w`, then flushes; ends when every
/// sender is gone. A write error ends it at once.
async fn writer_loop<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut rx: mpsc::Receiver<Vec<u8>>,
) -> io::Result<()> {
    while let Some(buf) = rx.recv().await {
        w.write_all(&buf).await.map_err(|e| context(e, "writing to the peer"))?;
    }
    w.flush().await
}

/// Runs `reader` and `writer` until the reader is done (or either fails).
/// When the reader ends first, waits for the writer to drain.
async fn run_both<T>(
    reader: impl std::future::Future<Output = io::Result<T>>,
    writer: impl std::future::Future<Output = io::Result<()>>,
) -> io::Result<T> {
    tokio::pin!(reader);
    tokio::pin!(writer);
    tokio::select! {
        r = &mut reader => {
            let out = r?;
            writer.await?;
            Ok(out)
        }
        w = &mut writer => {
            // The writer stopped first: only an error (or every sender
            // dropped, which only the reader does by ending) gets here.
            w?;
            reader.await
        }
    }
}

fn count(map: &mut BTreeMap<String, u64>, m: &Message) {
    *map.entry(m.name()).or_insert(0) += 1;
}

// --------------------------------------------------------------- downloader

/// What a [`download`] did.
#[derive(Debug, Clone)]
pub struct DownloadReport {
    /// The remote's handshake.
    pub remote: Handshake,
    /// Payload bytes received in piece messages (duplicates included).
    pub bytes: u64,
    /// Pieces whose SHA-1 matched.
    pub pieces_verified: usize,
    /// Block requests sent.
    pub requests: u64,
    /// Highest number of requests outstanding at once.
    pub max_outstanding: usize,
    /// Messages received, by name.
    pub received: BTreeMap<String, u64>,
    /// From the first byte of the handshake to the last piece.
    pub elapsed: Duration,
}

impl DownloadReport {
    /// Payload rate in MB/s (10^6 bytes).
    #[must_use]
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

struct Block {
    index: u32,
    begin: u32,
    length: u32,
}

/// Downloads the whole torrent from the peer at the other end of `stream`
/// (we are the connecting side: we send our handshake first). Returns the
/// file, every piece verified. Pass `&mut stream` to keep the stream (to
/// close it gracefully); a stream passed by value is dropped at the end.
pub async fn download<S: AsyncRead + AsyncWrite>(
    stream: S,
    meta: &Metainfo,
    peer_id: [u8; 20],
    opts: &Options,
) -> io::Result<(Vec<u8>, DownloadReport)> {
    let start = Instant::now();
    let (mut rd, mut wr) = tokio::io::split(stream);
    with_timeout(opts.handshake_timeout, "sending our handshake", async {
        Handshake::new(meta.info_hash, peer_id).write(&mut wr).await
    })
    .await?;
    let remote = with_timeout(
        opts.handshake_timeout,
        "reading the peer's handshake",
        Handshake::read(&mut rd),
    )
    .await?;
    if remote.info_hash != meta.info_hash {
        return Err(invalid(format!(
            "handshake: peer answered for info-hash {}, we asked for {}",
            hex(&remote.info_hash),
            meta.info_hash_hex()
        )));
    }

    let (tx, rx) = mpsc::channel::<Vec<u8>>(64);
    let reader = download_loop(&mut rd, tx, meta, opts, start, remote);
    let writer = writer_loop(&mut wr, rx);
    with_timeout(opts.total_timeout, "download", run_both(reader, writer)).await
}

async fn download_loop<R: AsyncRead + Unpin>(
    rd: &mut R,
    tx: mpsc::Sender<Vec<u8>>,
    meta: &Metainfo,
    opts: &Options,
    start: Instant,
    remote: Handshake,
) -> io::Result<(Vec<u8>, DownloadReport)> {
    let n = meta.num_pieces();
    let send = |buf: Vec<u8>| {
        let tx = tx.clone();
        async move {
            tx.send(buf)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the writer stopped"))
        }
    };
    let mut data = vec![0u8; meta.length as usize];
    let mut has = vec![false; n];
    let mut done = vec![false; n];
    let mut blocks_left: Vec<u32> =
        (0..n).map(|i| meta.piece_size(i).div_ceil(u64::from(BLOCK)) as u32).collect();
    let mut pending: VecDeque<Block> = VecDeque::new();
    for i in 0..n {
        let size = meta.piece_size(i);
        let mut begin = 0u64;
        while begin < size {
            let length = (size - begin).min(u64::from(BLOCK)) as u32;
            pending.push_back(Block { index: i as u32, begin: begin as u32, length });
            begin += u64::from(length);
        }
    }
    let mut outstanding: HashSet<(u32, u32, u32)> = HashSet::new();
    let mut choked = true;
    let mut interested_sent = false;
    let mut report = DownloadReport {
        remote,
        bytes: 0,
        pieces_verified: 0,
        requests: 0,
        max_outstanding: 0,
        received: BTreeMap::new(),
        elapsed: Duration::ZERO,
    };

    while report.pieces_verified < n {
        // Interested as soon as the peer has something; requests while
        // unchoked, up to the pipeline depth.
        let mut out = Vec::new();
        if !interested_sent && has.iter().any(|&h| h) {
            Message::Interested.encode_into(&mut out);
            interested_sent = true;
        }
        if !choked {
            let mut skipped = VecDeque::new();
            while outstanding.len() < opts.pipeline {
                let Some(b) = pending.pop_front() else { break };
                if !has[b.index as usize] {
                    skipped.push_back(b);
                    continue;
                }
                Message::Request { index: b.index, begin: b.begin, length: b.length }
                    .encode_into(&mut out);
                outstanding.insert((b.index, b.begin, b.length));
                report.requests += 1;
            }
            report.max_outstanding = report.max_outstanding.max(outstanding.len());
            skipped.append(&mut pending);
            pending = skipped;
        }
        if !out.is_empty() {
            send(out).await?;
        }

        let msg = with_timeout(opts.idle_timeout, "waiting for a message", Message::read(rd))
            .await?
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the peer closed the connection with {} of {n} pieces verified",
                        report.pieces_verified
                    ),
                )
            })?;
        count(&mut report.received, &msg);
        match msg {
            Message::Bitfield(bits) => {
                if bits.len() != n.div_ceil(8) {
                    return Err(invalid(format!(
                        "bitfield of {} bytes for {n} pieces",
                        bits.len()
                    )));
                }
                for (i, h) in has.iter_mut().enumerate() {
                    *h |= bits[i / 8] & (0x80 >> (i % 8)) != 0;
                }
                if n % 8 != 0 && bits[n / 8] & (0xff >> (n % 8)) != 0 {
                    return Err(invalid("bitfield has spare bits set"));
                }
            }
            Message::Have(i) => {
                let i = i as usize;
                if i >= n {
                    return Err(invalid(format!("have {i}, but the torrent has {n} pieces")));
                }
                has[i] = true;
            }
            Message::Unchoke => choked = false,
            Message::Choke => {
                // Without the fast extension a choke drops every request.
                choked = true;
                let mut back: Vec<_> = outstanding.drain().collect();
                back.sort_unstable();
                for (index, begin, length) in back.into_iter().rev() {
                    pending.push_front(Block { index, begin, length });
                }
            }
            Message::Piece { index, begin, data: block } => {
                let key = (index, begin, block.len() as u32);
                if !outstanding.remove(&key) {
                    // A block we did not ask for (or no longer wait for).
                    continue;
                }
                let i = index as usize;
                report.bytes += block.len() as u64;
                let off = (i as u64 * meta.piece_length + u64::from(begin)) as usize;
                data[off..off + block.len()].copy_from_slice(&block);
                blocks_left[i] -= 1;
                if blocks_left[i] == 0 {
                    let start = i * meta.piece_length as usize;
                    let piece = &data[start..start + meta.piece_size(i) as usize];
                    let got: [u8; 20] = Sha1::digest(piece).into();
                    if got != meta.pieces[i] {
                        return Err(invalid(format!(
                            "piece {i}: SHA-1 {} does not match the torrent's {}",
                            hex(&got),
                            hex(&meta.pieces[i])
                        )));
                    }
                    done[i] = true;
                    report.pieces_verified += 1;
                }
            }
            Message::Request { .. }
            | Message::Cancel { .. }
            | Message::Interested
            | Message::NotInterested
            | Message::KeepAlive
            | Message::Other { .. } => {}
        }
    }
    report.elapsed = start.elapsed();
    debug_assert!(done.iter().all(|&d| d));
    send(Message::NotInterested.encode()).await?;
    Ok((data, report))
}

/// [`download`], then writes the file as `dir/<name>` and returns its path.
pub async fn download_to_dir<S: AsyncRead + AsyncWrite>(
    stream: S,
    meta: &Metainfo,
    dir: &Path,
    opts: &Options,
) -> io::Result<(PathBuf, DownloadReport)> {
    let (data, report) = download(stream, meta, make_peer_id(), opts).await?;
    let path = dir.join(&meta.name);
    std::fs::write(&path, &data).map_err(|e| context(e, &path.display().to_string()))?;
    Ok((path, report))
}

// ------------------------------------------------------------------- seeder

/// What a [`seed`] did.
#[derive(Debug, Clone)]
pub struct SeedReport {
    /// The remote's handshake.
    pub remote: Handshake,
    /// Blocks served.
    pub blocks: u64,
    /// Payload bytes served.
    pub bytes: u64,
    /// Messages received, by name.
    pub received: BTreeMap<String, u64>,
    /// Why it ended: `"eof"` (the peer closed), or the error that ended a
    /// connection after it was up (reset by the peer, ...).
    pub end: String,
    /// From the handshake to the end.
    pub elapsed: Duration,
}

/// Serves the whole torrent (`data` is the file) to the peer at the other
/// end of `stream` (we are the accepting side: we read its handshake first)
/// until it closes the connection. A reset by the peer after the exchange
/// started also ends it normally (`end` says so): BitTorrent clients often
/// drop connections between seeds that way.
pub async fn seed<S: AsyncRead + AsyncWrite>(
    stream: S,
    meta: &Metainfo,
    data: &[u8],
    peer_id: [u8; 20],
    opts: &Options,
) -> io::Result<SeedReport> {
    if data.len() as u64 != meta.length {
        return Err(invalid("seed: the data is not the torrent's length"));
    }
    let start = Instant::now();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let remote = with_timeout(
        opts.handshake_timeout,
        "reading the peer's handshake",
        Handshake::read(&mut rd),
    )
    .await?;
    if remote.info_hash != meta.info_hash {
        return Err(invalid(format!(
            "handshake: peer asked for info-hash {}, we seed {}",
            hex(&remote.info_hash),
            meta.info_hash_hex()
        )));
    }
    let n = meta.num_pieces();
    let mut bits = vec![0u8; n.div_ceil(8)];
    for i in 0..n {
        bits[i / 8] |= 0x80 >> (i % 8);
    }
    let mut hello = Handshake::new(meta.info_hash, peer_id).to_bytes().to_vec();
    Message::Bitfield(bits).encode_into(&mut hello);
    with_timeout(opts.handshake_timeout, "sending our handshake", wr.write_all(&hello)).await?;

    let (tx, rx) = mpsc::channel::<Vec<u8>>(64);
    let reader = seed_loop(&mut rd, tx, meta, data, opts, start, remote);
    let writer = writer_loop(&mut wr, rx);
    with_timeout(opts.total_timeout, "seeding", run_both(reader, writer)).await
}

async fn seed_loop<R: AsyncRead + Unpin>(
    rd: &mut R,
    tx: mpsc::Sender<Vec<u8>>,
    meta: &Metainfo,
    data: &[u8],
    opts: &Options,
    start: Instant,
    remote: Handshake,
) -> io::Result<SeedReport> {
    let mut report = SeedReport {
        remote,
        blocks: 0,
        bytes: 0,
        received: BTreeMap::new(),
        end: String::new(),
        elapsed: Duration::ZERO,
    };
    let mut unchoked = false;
    let send = |buf: Vec<u8>| {
        let tx = tx.clone();
        async move {
            tx.send(buf)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the writer stopped"))
        }
    };
    loop {
        let msg = match with_timeout(opts.idle_timeout, "waiting for a message", Message::read(rd))
            .await
        {
            Ok(Some(m)) => m,
            Ok(None) => {
                report.end = "eof".into();
                break;
            }
            Err(e)
                if report.blocks > 0
                    && matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
                    ) =>
            {
                report.end = e.to_string();
                break;
            }
            Err(e) => return Err(e),
        };
        count(&mut report.received, &msg);
        match msg {
            Message::Interested if !unchoked => {
                unchoked = true;
                send(Message::Unchoke.encode()).await?;
            }
            Message::Request { index, begin, length } => {
                if !unchoked {
                    continue; // a request while choked is dropped
                }
                let i = index as usize;
                if i >= meta.num_pieces()
                    || length == 0
                    || length > 2 * BLOCK
                    || u64::from(begin) + u64::from(length) > meta.piece_size(i)
                {
                    return Err(invalid(format!(
                        "request out of range: piece {index} begin {begin} length {length}"
                    )));
                }
                let off = (i as u64 * meta.piece_length + u64::from(begin)) as usize;
                let block = data[off..off + length as usize].to_vec();
                report.blocks += 1;
                report.bytes += u64::from(length);
                send(Message::Piece { index, begin, data: block }.encode()).await?;
            }
            _ => {}
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

// -------------------------------------------------------------------- misc

/// A directory under the system's temporary directory, removed (with its
/// contents) on drop.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates `<tmp>/utp-interop-<tag>-<pid>-<nanos>`.
    pub fn new(tag: &str) -> io::Result<ScratchDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p =
            std::env::temp_dir().join(format!("utp-interop-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(ScratchDir(p))
    }

    /// Its path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bencode_round_trip_and_info_hash_over_raw_bytes() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let (meta, bytes) = Metainfo::create("f.bin", &data, 32 * 1024);
        assert_eq!(meta.num_pieces(), 4);
        assert_eq!(meta.piece_size(3), 100_000 - 3 * 32 * 1024);
        assert!(meta.verify(&data).is_ok());
        let top = Bencode::decode(&bytes).unwrap();
        assert_eq!(top.encode(), bytes);
        let raw = raw_value(&bytes, "info").unwrap().unwrap();
        assert_eq!(<[u8; 20]>::from(Sha1::digest(raw)), meta.info_hash);
        // A non-canonical file (unsorted keys outside info) keeps the hash
        // of the raw info bytes.
        let mut odd = b"d4:info".to_vec();
        odd.extend_from_slice(raw);
        odd.extend_from_slice(b"1:ai1ee");
        assert_eq!(Metainfo::from_torrent(&odd).unwrap().info_hash, meta.info_hash);
    }

    #[test]
    fn bencode_rejects_garbage() {
        for bad in [&b"i01e"[..], b"i-0e", b"ie", b"5:abc", b"d1:ai1e", b"x", b"li1e", b"i1ei2e"] {
            assert!(Bencode::decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "l".repeat(100) + &"e".repeat(100);
        assert!(Bencode::decode(deep.as_bytes()).is_err());
    }

    #[test]
    fn messages_round_trip() {
        let msgs = [
            Message::KeepAlive,
            Message::Choke,
            Message::Unchoke,
            Message::Interested,
            Message::NotInterested,
            Message::Have(7),
            Message::Bitfield(vec![0xff, 0x80]),
            Message::Request { index: 1, begin: 16384, length: 16384 },
            Message::Piece { index: 2, begin: 0, data: vec![1, 2, 3] },
            Message::Cancel { index: 1, begin: 0, length: 5 },
            Message::Other { id: 20, payload: b"d1:md6:ut_pexi1eee".to_vec() },
        ];
        for m in msgs {
            let enc = m.encode();
            assert_eq!(u32::from_be_bytes(enc[..4].try_into().unwrap()) as usize, enc.len() - 4);
            assert_eq!(Message::parse(&enc[4..]).unwrap(), m);
        }
        let hs = Handshake::new([1; 20], make_peer_id());
        assert_eq!(Handshake::from_bytes(&hs.to_bytes()).unwrap(), hs);
    }

    #[tokio::test]
    async fn our_seeder_and_downloader_agree_in_memory() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i ^ (i >> 9)) as u8).collect();
        let (meta, _) = Metainfo::create("m.bin", &data, 64 * 1024);
        let (a, b) = tokio::io::duplex(64 * 1024);
        let opts = Options { pipeline: 8, ..Options::default() };
        let seeder = seed(a, &meta, &data, make_peer_id(), &opts);
        // download() drops its stream at the end: the seeder sees EOF.
        let leecher = download(b, &meta, make_peer_id(), &opts);
        let (s, d) = tokio::join!(seeder, leecher);
        let (got, rep) = d.unwrap();
        assert_eq!(got, data);
        assert_eq!(rep.pieces_verified, meta.num_pieces());
        let s = s.unwrap();
        assert_eq!(s.bytes, data.len() as u64);
        assert_eq!(s.end, "eof");
    }
}
