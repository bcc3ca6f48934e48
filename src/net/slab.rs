//! The per-worker slab of connections. The slot index is the epoll token (offset by one,
//! token 0 being the worker's eventfd); each slot counts generations so that a `ConnId`
//! kept after its connection closed is recognised as stale.

use crate::net::handle::ConnId;

pub struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    /// Slots that used their last generation (see [`Slab::remove`]).
    retired: Vec<u32>,
    /// Retired slots taken again because every index was in use ([`Slab::insert`]).
    recycled: u64,
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
            retired: Vec::new(),
            recycled: 0,
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

    /// Stores `value`; returns its index and generation (1 for a new slot, so that no handle
    /// is a small integer). `None` when every index is occupied.
    ///
    /// When every index has been handed out and some slots are retired, a retired slot starts
    /// over at generation 1 (counted by [`Slab::recycled`]): after 2^41 connections through one
    /// worker, a handle kept since its slot's first generation could name a new connection.
    pub fn insert(&mut self, value: T) -> Option<(u32, u32)> {
        let (index, generation) = if let Some(i) = self.free.pop() {
            (i, self.slots.get(i as usize)?.generation + 1)
        } else if self.slots.len() <= ConnId::MAX_INDEX as usize {
            self.slots.push(Slot {
                generation: 0,
                value: None,
            });
            ((self.slots.len() - 1) as u32, 1)
        } else {
            let i = self.retired.pop()?;
            self.recycled += 1;
            (i, 1)
        };
        let slot = self.slots.get_mut(index as usize)?;
        slot.generation = generation;
        slot.value = Some(Box::new(value));
        self.len += 1;
        Some((index, generation))
    }

    /// How many retired slots were taken again (see [`Slab::insert`]).
    pub fn recycled(&self) -> u64 {
        self.recycled
    }

    pub fn get(&self, index: u32) -> Option<&T> {
        self.slots.get(index as usize)?.value.as_deref()
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
        // handle names one connection for as long as possible (an app may keep one for any
        // time). Retiring takes 2^19 connections through one slot; the index space (2^22
        // slots) lasts for 2^41 connections before retired slots are taken again.
        if slot.generation < ConnId::GEN_MASK {
            self.free.push(index);
        } else {
            self.retired.push(index);
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
        let (i, g) = s.insert(1).unwrap();
        assert_eq!(g, 1, "generations start at 1");
        assert!(s.remove(i).is_some());
        let (j, h) = s.insert(2).unwrap();
        assert_eq!((i, h), (j, 2));
        assert!(s.get_gen_mut(i, g).is_none());
        assert_eq!(s.get_gen_mut(j, h).copied(), Some(2));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_slot_at_its_last_generation_is_retired_not_wrapped() {
        let mut s = Slab::default();
        let (i, _) = s.insert(1).unwrap();
        s.slots[i as usize].generation = ConnId::GEN_MASK - 1;
        assert!(s.remove(i).is_some());
        let (j, last) = s.insert(2).unwrap();
        assert_eq!((j, last), (i, ConnId::GEN_MASK));
        assert!(s.remove(j).is_some());
        // Reusing the slot would wrap its generation: a handle of its first connection would
        // name the next one. A new slot is taken instead, and the old handles stay stale.
        let (k, g) = s.insert(3).unwrap();
        assert_ne!(k, i);
        assert_eq!(g, 1);
        assert!(s.get_gen_mut(i, 1).is_none() && s.get_gen_mut(i, last).is_none());
        assert_eq!(s.get_gen_mut(k, 1).copied(), Some(3));
        assert_eq!(s.recycled(), 0);
    }

    #[test]
    fn with_every_index_handed_out_a_retired_slot_starts_over_and_a_full_slab_refuses() {
        let mut s = Slab::default();
        let (i, _) = s.insert(0u8).unwrap();
        // Pretend every other index is in use already (without allocating 4 M slots).
        s.slots
            .resize_with(ConnId::MAX_INDEX as usize + 1, || Slot {
                generation: 1,
                value: Some(Box::new(9)),
            });
        s.slots[i as usize].generation = ConnId::GEN_MASK;
        assert!(s.remove(i).is_some());
        assert_eq!(s.insert(1), Some((i, 1)));
        assert_eq!(s.recycled(), 1);
        assert_eq!(s.insert(2), None, "no free, new or retired index left");
    }
}
