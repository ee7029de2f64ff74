//! A three-stage pipeline for the container codec: one thread reads chunks, the calling thread
//! seals or opens them, one thread writes. Reading, cryptography and writing overlap across
//! cores; memory stays bounded (a fixed pool of chunk buffers), whatever the input size.
//!
//! Nothing reaches the writer before the worker has finished with it, so for decryption no
//! plaintext of a chunk is written before its tag verified.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use zeroize::Zeroizing;

use crate::error::Error;

/// Chunk buffers hold plaintext on one side: wiped when dropped.
type Buf = Zeroizing<Vec<u8>>;

/// Buffers in flight per direction.
const DEPTH: usize = 8;

/// One chunk read from the input: its index, whether it is the last one, its bytes.
struct Piece {
    index: u64,
    last: bool,
    buf: Buf,
}

/// Reads `input` in pieces of `piece` bytes (the last may be shorter, or empty when the input
/// is empty), marking the last one by reading one piece ahead.
fn reader<R: Read>(mut input: R, piece: usize, tx: SyncSender<io::Result<Piece>>, pool: Receiver<Buf>) {
    let take = |pool: &Receiver<Buf>| pool.try_recv().unwrap_or_else(|_| Zeroizing::new(vec![0u8; piece]));
    let mut cur = take(&pool);
    cur.resize(piece, 0);
    let mut n = match read_full(&mut input, &mut cur) {
        Ok(n) => n,
        Err(e) => {
            let _ = tx.send(Err(e));
            return;
        }
    };
    for index in 0u64.. {
        if n < piece {
            cur.truncate(n);
            let _ = tx.send(Ok(Piece { index, last: true, buf: cur }));
            return;
        }
        let mut next = take(&pool);
        next.resize(piece, 0);
        let m = match read_full(&mut input, &mut next) {
            Ok(m) => m,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let last = m == 0;
        if tx.send(Ok(Piece { index, last, buf: cur })).is_err() || last {
            return;
        }
        cur = next;
        n = m;
    }
}

/// Runs the pipeline: `work(index, last, input_piece, output)` fills `output` (cleared before
/// each call) from one input piece. Returns the total of `work`'s return values.
///
/// # Errors
/// The first error of any stage; nothing after a failed piece is written.
pub(crate) fn run<R, W, F>(input: R, mut output: W, piece: usize, mut work: F) -> Result<u64, Error>
where
    R: Read + Send,
    W: Write + Send,
    F: FnMut(u64, bool, &[u8], &mut Vec<u8>) -> Result<u64, Error>,
{
    let (in_tx, in_rx) = sync_channel::<io::Result<Piece>>(DEPTH);
    let (in_pool_tx, in_pool_rx) = sync_channel::<Buf>(DEPTH + 2);
    let (out_tx, out_rx) = sync_channel::<Buf>(DEPTH);
    let (out_pool_tx, out_pool_rx) = sync_channel::<Buf>(DEPTH + 2);
    std::thread::scope(|s| {
        s.spawn(move || reader(input, piece, in_tx, in_pool_rx));
        let writer = s.spawn(move || -> io::Result<()> {
            for buf in out_rx {
                output.write_all(&buf)?;
                let _ = out_pool_tx.try_send(buf);
            }
            output.flush()
        });
        let mut total = 0u64;
        let mut result = Ok(());
        for piece in in_rx {
            let piece = match piece {
                Ok(p) => p,
                Err(e) => {
                    result = Err(Error::from(e));
                    break;
                }
            };
            let mut out = out_pool_rx.try_recv().unwrap_or_default();
            out.clear();
            match work(piece.index, piece.last, &piece.buf, &mut out) {
                Ok(n) => total += n,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            let _ = in_pool_tx.try_send(piece.buf);
            if out_tx.send(out).is_err() {
                break; // the writer failed; its error is collected below
            }
            if piece.last {
                break;
            }
        }
        drop(out_tx);
        // Dropping the input receiver stops the reader at its next send.
        let written = writer.join().unwrap_or_else(|_| Err(io::Error::other("writer thread panicked")));
        result?;
        written?;
        Ok(total)
    })
}

/// Reads until `buf` is full or EOF; returns the count.
pub(crate) fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
