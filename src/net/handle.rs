//! Connection identity across threads.
//!
//! A `ConnId` packs the worker id, the slab index and the slot's generation. The generation
//! grows each time a slot is reused, so a handle kept after its connection closed never reaches
//! the connection that took the slot next: it is detected as stale.

/// Opaque connection handle: `worker (5 bits) | generation (24 bits) | slab index (24 bits)`.
/// Lua sees it as a number (`handler`); 53 bits in all, so it is exact in a double. A slot's
/// handle repeats only after 16.7 million reuses of that slot.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ConnId(u64);

impl ConnId {
    pub const MAX_WORKERS: usize = 32;
    /// Generations wrap inside 24 bits so that the packed id stays below 2^53 (exact in a Lua number).
    pub const GEN_MASK: u32 = 0xFF_FFFF;
    /// Slab indices fit in 24 bits: at most this many connections per worker.
    pub const MAX_INDEX: u32 = 0xFF_FFFF;

    pub fn new(worker: usize, index: u32, generation: u32) -> ConnId {
        debug_assert!(worker < Self::MAX_WORKERS);
        debug_assert!(index <= Self::MAX_INDEX);
        ConnId(
            ((worker as u64) << 48)
                | (((generation & Self::GEN_MASK) as u64) << 24)
                | (index & Self::MAX_INDEX) as u64,
        )
    }
    pub fn worker(self) -> usize {
        (self.0 >> 48) as usize
    }
    pub fn index(self) -> u32 {
        (self.0 as u32) & Self::MAX_INDEX
    }
    pub fn generation(self) -> u32 {
        ((self.0 >> 24) as u32) & Self::GEN_MASK
    }
    pub fn as_u64(self) -> u64 {
        self.0
    }
    /// Rebuilds a handle from its number form; `None` when the worker part is out of range.
    pub fn from_u64(v: u64) -> Option<ConnId> {
        ((v >> 48) < Self::MAX_WORKERS as u64).then_some(ConnId(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_unpacks() {
        let id = ConnId::new(31, ConnId::MAX_INDEX, ConnId::GEN_MASK);
        assert_eq!(
            (id.worker(), id.index(), id.generation()),
            (31, ConnId::MAX_INDEX, ConnId::GEN_MASK)
        );
        // The generation must not bleed into the index or the worker.
        let a = ConnId::new(0, 7, ConnId::GEN_MASK);
        assert_eq!((a.worker(), a.index()), (0, 7));
        assert!(id.as_u64() < (1u64 << 53));
        assert_eq!(ConnId::from_u64(id.as_u64()), Some(id));
        assert_eq!(ConnId::from_u64(1 << 60), None);
    }
}
