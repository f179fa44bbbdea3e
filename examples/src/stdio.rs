//! stdin and stdout in large blocks on threads of their own.
//!
//! tokio's `stdin()` and `stdout()` run every read and write through its
//! blocking pool: a hand-over between threads per call, which profiles of
//! `utpcat` showed as half of all CPU samples. Here one thread reads stdin
//! (and one writes stdout) with plain blocking calls on blocks of
//! [`BLOCK`] bytes, handing the blocks over a bounded channel: one
//! hand-over per block, and the blocks go round between the two sides
//! instead of being allocated afresh. A block keeps its full length and
//! travels with the count of bytes it holds, so that nothing is zeroed
//! again when it is reused.

use std::io::{self, Read, Write};
use std::sync::mpsc as std_mpsc;
use std::thread;

use tokio::sync::{mpsc, oneshot};

/// Bytes per block.
pub const BLOCK: usize = 1 << 20;

/// Blocks in flight between a thread and the async side.
const DEPTH: usize = 4;

/// stdin as a stream of blocks, read by a thread of its own.
#[derive(Debug)]
pub struct StdinBlocks {
    full: mpsc::Receiver<io::Result<(Vec<u8>, usize)>>,
    empty: std_mpsc::Sender<Vec<u8>>,
}

impl StdinBlocks {
    /// Starts the reading thread. It stops at the end of stdin, on an
    /// error, or when this is dropped (after its current read returns).
    pub fn spawn() -> io::Result<StdinBlocks> {
        Self::spawn_from(io::stdin())
    }

    /// The same from any reader (for tests).
    pub fn spawn_from<R: Read + Send + 'static>(mut input: R) -> io::Result<StdinBlocks> {
        let (full_tx, full) = mpsc::channel(DEPTH);
        let (empty, empty_rx) = std_mpsc::channel::<Vec<u8>>();
        thread::Builder::new().name("stdin".into()).spawn(move || loop {
            let mut block = empty_rx.try_recv().unwrap_or_else(|_| vec![0u8; BLOCK]);
            let result = loop {
                match input.read(&mut block) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    other => break other,
                }
            };
            let (done, item) = match result {
                Ok(0) => return,
                Ok(n) => (false, Ok((block, n))),
                Err(e) => (true, Err(e)),
            };
            if full_tx.blocking_send(item).is_err() || done {
                return;
            }
        })?;
        Ok(StdinBlocks { full, empty })
    }

    /// The next block and how many of its bytes were read; `None` at the
    /// end of stdin.
    pub async fn next(&mut self) -> Option<io::Result<(Vec<u8>, usize)>> {
        self.full.recv().await
    }

    /// Gives a block back for reuse (whole, as [`StdinBlocks::next`] gave it).
    pub fn recycle(&self, block: Vec<u8>) {
        let _ = self.empty.send(block);
    }
}

/// stdout fed with blocks, written by a thread of its own.
#[derive(Debug)]
pub struct StdoutBlocks {
    full: mpsc::Sender<(Vec<u8>, usize)>,
    empty: std_mpsc::Receiver<Vec<u8>>,
    done: oneshot::Receiver<io::Result<()>>,
}

impl StdoutBlocks {
    /// Starts the writing thread.
    pub fn spawn() -> io::Result<StdoutBlocks> {
        Self::spawn_to(io::stdout())
    }

    /// The same to any writer (for tests).
    pub fn spawn_to<W: Write + Send + 'static>(mut output: W) -> io::Result<StdoutBlocks> {
        let (full, mut full_rx) = mpsc::channel::<(Vec<u8>, usize)>(DEPTH);
        let (empty_tx, empty) = std_mpsc::channel();
        let (done_tx, done) = oneshot::channel();
        thread::Builder::new().name("stdout".into()).spawn(move || {
            let mut result = Ok(());
            while let Some((block, len)) = full_rx.blocking_recv() {
                if let Err(e) = output.write_all(&block[..len]) {
                    result = Err(e);
                    break;
                }
                let _ = empty_tx.send(block);
            }
            let _ = done_tx.send(result.and_then(|()| output.flush()));
        })?;
        Ok(StdoutBlocks { full, empty, done })
    }

    /// A block of [`BLOCK`] bytes to fill (reused when one came back).
    pub fn block(&self) -> Vec<u8> {
        self.empty.try_recv().unwrap_or_else(|_| vec![0u8; BLOCK])
    }

    /// Queues the first `len` bytes of `block` for writing; waits while
    /// four blocks are queued.
    pub async fn write(&mut self, block: Vec<u8>, len: usize) -> io::Result<()> {
        let len = len.min(block.len());
        if self.full.send((block, len)).await.is_err() {
            // The thread stopped: its error says why.
            return match (&mut self.done).await {
                Ok(Err(e)) => Err(e),
                _ => Err(io::Error::new(io::ErrorKind::BrokenPipe, "stdout closed")),
            };
        }
        Ok(())
    }

    /// Writes what is queued, flushes, and reports the first error.
    pub async fn finish(self) -> io::Result<()> {
        drop(self.full);
        self.done.await.unwrap_or_else(|_| Err(io::Error::other("the stdout thread panicked")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes go through both in order, whatever the block boundaries.
    #[tokio::test]
    async fn blocks_carry_every_byte_in_order() {
        let data: Vec<u8> = (0..3 * BLOCK + 12_345).map(|i| (i * 7 % 251) as u8).collect();
        let mut input = StdinBlocks::spawn_from(io::Cursor::new(data.clone())).unwrap();
        let sink = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut output = StdoutBlocks::spawn_to(Shared(sink.clone())).unwrap();
        let mut blocks = 0;
        while let Some(block) = input.next().await {
            let (block, len) = block.unwrap();
            blocks += 1;
            let mut out = output.block();
            out[..len].copy_from_slice(&block[..len]);
            input.recycle(block);
            output.write(out, len).await.unwrap();
        }
        output.finish().await.unwrap();
        assert_eq!(*sink.lock().unwrap(), data);
        assert_eq!(blocks, 4);
    }
}
