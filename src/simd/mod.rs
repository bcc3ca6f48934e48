//! Unmasking and UTF-8 validation kernels.
//!
//! Public, safe entry points only; the kernels (scalar reference, SSSE3, AVX2) live in
//! submodules and are chosen once (see `variant`).
//! PLACEHOLDER: scalar-only implementation until the SIMD kernels land.

/// XOR `buf` with the 4-byte masking `key`, starting at key position `offset % 4`
/// (RFC 6455 section 5.3: octet i of the payload is XORed with key[(offset + i) % 4]).
pub fn unmask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(offset + i) & 3];
    }
}

/// True when `bytes` is entirely valid UTF-8.
pub fn validate_utf8(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok()
}

/// The kernel level in use at run time: `"scalar"`, `"ssse3"` or `"avx2"`.
pub fn variant() -> &'static str {
    "scalar"
}

/// An invalid UTF-8 sequence was seen (close code 1007).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Error;

/// Streaming UTF-8 validator: a code point may be split across any number of `feed` calls.
/// An invalid prefix fails at once; `finish` fails when the input ends inside a code point.
#[derive(Debug, Default, Clone)]
pub struct Utf8Stream {
    pending: [u8; 4],
    pending_len: u8,
}

impl Utf8Stream {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn reset(&mut self) {
        self.pending_len = 0;
    }

    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), Utf8Error> {
        while self.pending_len > 0 && !chunk.is_empty() {
            self.pending[self.pending_len as usize] = chunk[0];
            self.pending_len += 1;
            chunk = &chunk[1..];
            match std::str::from_utf8(&self.pending[..self.pending_len as usize]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_some() => return Err(Utf8Error),
                Err(_) => {}
            }
        }
        match std::str::from_utf8(chunk) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(Utf8Error),
            Err(e) => {
                let tail = &chunk[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let incomplete = self.pending_len != 0;
        self.pending_len = 0;
        if incomplete {
            Err(Utf8Error)
        } else {
            Ok(())
        }
    }
}
