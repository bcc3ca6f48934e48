//! Connection identity across threads.
//!
//! A `ConnId` packs the worker id, the slab index and the slot's generation. The generation
//! grows each time a slot is reused, so a handle kept after its connection closed never reaches
//! the connection that took the slot next: it is detected as stale.

/// Opaque connection handle: `worker (5 bits) | generation (19 bits) | slab index (22 bits)`.
/// Lua sees it as a number (`handler`). 46 bits in all: below 10^14, so a handle survives
/// every way Lua turns a number into text (`tostring`, `..`, `%.14g`, a string key, `mqr:post`)
/// and back, digit for digit; with 53 bits, `tostring` of a second worker's handle rounded it
/// to a neighbouring slot's. Generations start at 1, so a small integer (a misplaced argument)
/// never names a connection.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ConnId(u64);

impl ConnId {
    pub const MAX_WORKERS: usize = 32;
    /// Generations live in 19 bits (a slot is retired at the last one, see `Slab::remove`).
    pub const GEN_MASK: u32 = 0x7_FFFF;
    /// Slab indices fit in 22 bits: live, refused and retired slots of one worker together.
    pub const MAX_INDEX: u32 = 0x3F_FFFF;
    const GEN_SHIFT: u32 = 22;
    const WORKER_SHIFT: u32 = 41;

    pub fn new(worker: usize, index: u32, generation: u32) -> ConnId {
        debug_assert!(worker < Self::MAX_WORKERS);
        debug_assert!(index <= Self::MAX_INDEX);
        ConnId(
            ((worker as u64) << Self::WORKER_SHIFT)
                | (((generation & Self::GEN_MASK) as u64) << Self::GEN_SHIFT)
                | (index & Self::MAX_INDEX) as u64,
        )
    }
    pub fn worker(self) -> usize {
        (self.0 >> Self::WORKER_SHIFT) as usize
    }
    pub fn index(self) -> u32 {
        (self.0 as u32) & Self::MAX_INDEX
    }
    pub fn generation(self) -> u32 {
        ((self.0 >> Self::GEN_SHIFT) as u32) & Self::GEN_MASK
    }
    pub fn as_u64(self) -> u64 {
        self.0
    }
    /// Rebuilds a handle from its number form; `None` when the worker part is out of range.
    pub fn from_u64(v: u64) -> Option<ConnId> {
        ((v >> Self::WORKER_SHIFT) < Self::MAX_WORKERS as u64).then_some(ConnId(v))
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
        assert!(
            id.as_u64() < 100_000_000_000_000,
            "14 digits: exact in %.14g"
        );
        assert_eq!(ConnId::from_u64(id.as_u64()), Some(id));
        assert_eq!(ConnId::from_u64(1 << 46), None);
        assert!(
            ConnId::new(0, 0, 1).as_u64() > ConnId::MAX_INDEX as u64,
            "a first generation is never a small integer"
        );
    }
}
