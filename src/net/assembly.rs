//! The process-wide cap on memory held by inbound messages still being received
//! (`max_inbound_assembly_bytes` in ws.json).
//!
//! Each connection's decoder is bounded by its service's `max_inbound_message_size`; this bounds
//! the sum over every connection of every worker, so that many peers each sending a large
//! message slowly cannot take the host's memory between them. Owns only the count: the workers
//! charge their decoders' buffers to it (`Worker::process_frames`, `Worker::end`), and the
//! decoder refuses to grow past the allowance it is given (`Decoder::decode_within`: Close 1013).
//!
//! One atomic word shared by all workers, touched only when a buffer grows or is released
//! (complete unfragmented frames need no buffer, so the common path never writes it). Checked
//! per read against what the other buffers held when it began: workers reading at the same
//! moment may each take the room that was left, so together they may pass the cap by up to
//! that room times the workers but one. A buffer's capacity may run ahead of its bytes
//! (doubling), and capacity is what counts. Only the server's client connections count here;
//! each instance's `cws` connections share a budget of their own, the state's memory limit.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct AssemblyBudget {
    /// `usize::MAX`: no cap.
    limit: usize,
    held: AtomicUsize,
}

impl AssemblyBudget {
    /// A budget of `limit` bytes over all connections; 0 means no cap.
    pub fn new(limit: usize) -> AssemblyBudget {
        AssemblyBudget {
            limit: if limit == 0 { usize::MAX } else { limit },
            held: AtomicUsize::new(0),
        }
    }

    /// What a connection whose buffer holds `own` bytes (already counted) may hold now: the
    /// limit less what every other buffer holds.
    pub fn allowance(&self, own: usize) -> usize {
        let others = self.held.load(Ordering::Relaxed).saturating_sub(own);
        self.limit.saturating_sub(others)
    }

    /// A buffer counted as `from` bytes now holds `to`.
    pub fn update(&self, from: usize, to: usize) {
        if to > from {
            self.held.fetch_add(to - from, Ordering::Relaxed);
        } else if from > to {
            self.held.fetch_sub(from - to, Ordering::Relaxed);
        }
    }

    /// Bytes held by all buffers now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The cap (`usize::MAX`: none).
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl Default for AssemblyBudget {
    fn default() -> Self {
        AssemblyBudget::new(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowance_is_the_limit_less_the_others() {
        let b = AssemblyBudget::new(1000);
        assert_eq!(b.allowance(0), 1000);
        b.update(0, 300); // connection A
        b.update(0, 500); // connection B
        assert_eq!(b.held(), 800);
        assert_eq!(b.allowance(300), 500, "A may grow into what B leaves");
        assert_eq!(b.allowance(0), 200, "a new buffer gets the rest");
        b.update(500, 0); // B's message completes
        assert_eq!(b.allowance(0), 700);
        b.update(300, 1200); // A passed the cap by one read (checked per read)
        assert_eq!(b.allowance(0), 0);
        assert_eq!(b.allowance(1200), 1000);
    }

    #[test]
    fn zero_is_no_cap() {
        let b = AssemblyBudget::new(0);
        b.update(0, 1 << 40);
        assert_eq!(b.allowance(0), usize::MAX - (1 << 40));
        assert_eq!(AssemblyBudget::default().allowance(0), usize::MAX);
    }
}
