//! A connection's outbound queue: framed bytes waiting for the socket.
//!
//! Small frames are appended to one owned tail buffer (so a batch of replies leaves in one
//! `send`); shared broadcast frames are queued by reference and written with the rest in one
//! vectored `sendmsg`. An empty queue holds no heap memory: idle connections cost nothing here.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use super::hub::Chunk;
use super::sys;

/// Owned tail buffers are not grown past this; a new chunk starts instead.
const TAIL_LIMIT: usize = 256 * 1024;
/// At most this many iovecs per sendmsg.
const MAX_IOV: usize = 64;

#[derive(Default)]
pub struct OutQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    front_written: usize,
    /// Bytes queued and not yet written.
    bytes: usize,
}

/// What a flush achieved.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything was written.
    All,
    /// The socket is full (EAGAIN); wait for EPOLLOUT.
    Blocked,
    /// Bytes are queued but cannot be written yet (a TLS handshake is still in progress);
    /// the connection's next input brings it back. Never returned for plaintext.
    Waiting,
}

impl OutQueue {
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends bytes produced by `fill` to the owned tail buffer (taking one from `pool` if needed).
    pub fn append_with(&mut self, pool: &mut BufPool, fill: impl FnOnce(&mut Vec<u8>)) {
        let needs_new =
            !matches!(self.chunks.back(), Some(Chunk::Owned(v)) if v.len() < TAIL_LIMIT);
        if needs_new {
            self.chunks.push_back(Chunk::Owned(pool.take()));
        }
        if let Some(Chunk::Owned(v)) = self.chunks.back_mut() {
            let before = v.len();
            fill(v);
            let added = v.len() - before;
            self.bytes += added;
            pool.queued_bytes += added;
        }
    }

    /// Queues a shared frame without copying it.
    pub fn push_shared(&mut self, pool: &mut BufPool, frame: Arc<[u8]>) {
        if frame.is_empty() {
            return;
        }
        self.bytes += frame.len();
        pool.queued_bytes += frame.len();
        self.chunks.push_back(Chunk::Shared(frame));
    }

    /// Queues a chunk (owned chunks are appended to the tail when small).
    pub fn push_chunk(&mut self, pool: &mut BufPool, chunk: Chunk) {
        match chunk {
            Chunk::Shared(a) => self.push_shared(pool, a),
            Chunk::Owned(v) if v.len() <= 4096 => {
                self.append_with(pool, |b| b.extend_from_slice(&v))
            }
            Chunk::Owned(v) => {
                if !v.is_empty() {
                    self.bytes += v.len();
                    pool.queued_bytes += v.len();
                    self.chunks.push_back(Chunk::Owned(v));
                }
            }
        }
    }

    /// Writes as much as the socket takes.
    pub fn flush(&mut self, fd: RawFd, pool: &mut BufPool) -> io::Result<Flushed> {
        while self.bytes > 0 {
            let mut iov: [libc::iovec; MAX_IOV] = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_IOV];
            let mut n = 0;
            for (i, c) in self.chunks.iter().take(MAX_IOV).enumerate() {
                let s = if i == 0 {
                    &c.as_slice()[self.front_written..]
                } else {
                    c.as_slice()
                };
                iov[n] = libc::iovec {
                    iov_base: s.as_ptr() as *mut libc::c_void,
                    iov_len: s.len(),
                };
                n += 1;
            }
            let res = if n == 1 {
                let c = &self.chunks[0].as_slice()[self.front_written..];
                sys::send(fd, c)
            } else {
                sys::sendv(fd, &iov[..n])
            };
            match res {
                Ok(written) => self.consume(written, pool),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(Flushed::All)
    }

    /// The unwritten part of the front chunk (for a writer that copies, such as TLS).
    pub fn front(&self) -> Option<&[u8]> {
        self.chunks
            .front()
            .map(|c| &c.as_slice()[self.front_written..])
            .filter(|s| !s.is_empty())
    }

    /// Marks `n` bytes from the front as written (at most `self.bytes()`).
    pub fn consume_front(&mut self, n: usize, pool: &mut BufPool) {
        self.consume(n.min(self.bytes), pool);
    }

    fn consume(&mut self, mut written: usize, pool: &mut BufPool) {
        self.bytes -= written;
        pool.queued_bytes -= written;
        while written > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let left = front.len() - self.front_written;
            if written >= left {
                written -= left;
                self.front_written = 0;
                if let Some(Chunk::Owned(v)) = self.chunks.pop_front() {
                    pool.give(v);
                }
            } else {
                self.front_written += written;
                written = 0;
            }
        }
        if self.bytes == 0 {
            // Release the deque's own storage too: idle connections hold no heap.
            self.chunks = VecDeque::new();
        }
    }

    /// Drops what was not started yet, keeping the rest of a partly written front chunk (chunks
    /// hold whole frames, so the stream stays well-formed for a Close queued after this).
    pub fn drop_unstarted(&mut self, pool: &mut BufPool) {
        let keep = usize::from(self.front_written > 0);
        while self.chunks.len() > keep {
            if let Some(c) = self.chunks.pop_back() {
                let len = c.len();
                self.bytes -= len;
                pool.queued_bytes -= len;
                if let Chunk::Owned(v) = c {
                    pool.give(v);
                }
            }
        }
        if self.chunks.is_empty() {
            self.chunks = VecDeque::new();
        }
    }

    /// Drops everything queued (the connection is gone).
    pub fn clear(&mut self, pool: &mut BufPool) {
        pool.queued_bytes -= self.bytes;
        for c in self.chunks.drain(..) {
            if let Chunk::Owned(v) = c {
                pool.give(v);
            }
        }
        self.chunks = VecDeque::new();
        self.bytes = 0;
        self.front_written = 0;
    }
}

/// A worker's pool of reusable write buffers, so a reply does not cost a malloc/free pair.
/// It also keeps the worker's total of queued outbound bytes (published for the balancer).
pub struct BufPool {
    free: Vec<Vec<u8>>,
    keep: usize,
    pub queued_bytes: usize,
}

impl BufPool {
    pub fn new(keep: usize) -> BufPool {
        BufPool {
            free: Vec::new(),
            keep,
            queued_bytes: 0,
        }
    }

    pub fn take(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_else(|| Vec::with_capacity(4096))
    }

    pub fn give(&mut self, mut v: Vec<u8>) {
        // Oversized buffers (a 16 MiB echo) go back to the allocator.
        if self.free.len() < self.keep && v.capacity() <= 64 * 1024 {
            v.clear();
            self.free.push(v);
        }
    }
}
