//! The per-worker slab of connections. The slot index is the epoll token (offset by one,
//! token 0 being the worker's eventfd); each slot counts generations so that a `ConnId`
//! kept after its connection closed is recognised as stale.

pub struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

struct Slot<T> {
    generation: u32,
    value: Option<Box<T>>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores `value`; returns its index and generation.
    pub fn insert(&mut self, value: T) -> (u32, u32) {
        self.len += 1;
        if let Some(i) = self.free.pop() {
            let slot = &mut self.slots[i as usize];
            slot.generation =
                slot.generation.wrapping_add(1) & crate::net::handle::ConnId::GEN_MASK;
            slot.value = Some(Box::new(value));
            (i, slot.generation)
        } else {
            self.slots.push(Slot {
                generation: 0,
                value: Some(Box::new(value)),
            });
            ((self.slots.len() - 1) as u32, 0)
        }
    }

    pub fn get_mut(&mut self, index: u32) -> Option<&mut T> {
        self.slots.get_mut(index as usize)?.value.as_deref_mut()
    }

    /// The value at `index` only if its generation matches.
    pub fn get_gen(&self, index: u32, generation: u32) -> Option<&T> {
        let slot = self.slots.get(index as usize)?;
        if slot.generation != generation {
            return None;
        }
        slot.value.as_deref()
    }

    /// [`Self::get_gen`], mutable.
    pub fn get_gen_mut(&mut self, index: u32, generation: u32) -> Option<&mut T> {
        let slot = self.slots.get_mut(index as usize)?;
        if slot.generation != generation {
            return None;
        }
        slot.value.as_deref_mut()
    }

    pub fn generation(&self, index: u32) -> Option<u32> {
        self.slots.get(index as usize).map(|s| s.generation)
    }

    pub fn remove(&mut self, index: u32) -> Option<Box<T>> {
        let slot = self.slots.get_mut(index as usize)?;
        let v = slot.value.take()?;
        self.len -= 1;
        // A slot that has used its last generation is retired rather than wrapped, so that a
        // handle names one connection for the life of the process (an app may keep one for
        // any time). Retiring takes 2^24 connections through one slot; the index space (2^24
        // slots) lasts for 2^48 connections.
        if slot.generation < crate::net::handle::ConnId::GEN_MASK {
            self.free.push(index);
        }
        Some(v)
    }

    /// Indices of all occupied slots (for shutdown sweeps).
    pub fn indices(&self) -> Vec<u32> {
        (0..self.slots.len() as u32)
            .filter(|&i| self.slots[i as usize].value.is_some())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reused_slot_gets_a_new_generation() {
        let mut s = Slab::default();
        let (i, g) = s.insert(1);
        assert!(s.remove(i).is_some());
        let (j, h) = s.insert(2);
        assert_eq!(i, j);
        assert_ne!(g, h);
        assert!(s.get_gen_mut(i, g).is_none());
        assert_eq!(s.get_gen_mut(j, h).copied(), Some(2));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_slot_at_its_last_generation_is_retired_not_wrapped() {
        let mut s = Slab::default();
        let (i, _) = s.insert(1);
        s.slots[i as usize].generation = crate::net::handle::ConnId::GEN_MASK - 1;
        assert!(s.remove(i).is_some());
        let (j, last) = s.insert(2);
        assert_eq!((j, last), (i, crate::net::handle::ConnId::GEN_MASK));
        assert!(s.remove(j).is_some());
        // Reusing the slot would wrap its generation to 0: a handle of its first connection
        // would name the next one. A new slot is taken instead, and the old handles stay stale.
        let (k, g) = s.insert(3);
        assert_ne!(k, i);
        assert_eq!(g, 0);
        assert!(s.get_gen_mut(i, 0).is_none() && s.get_gen_mut(i, last).is_none());
        assert_eq!(s.get_gen_mut(k, 0).copied(), Some(3));
    }
}
