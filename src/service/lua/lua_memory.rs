//! What each instance's Lua state takes, for the status report (SIGUSR1): an operator sees
//! how near a service is to its `memory_limit` before a callback fails with "not enough
//! memory".
//!
//! Owns one atomic per instance. The instance writes its state's figure when it is ready, after
//! each batch of messages (a network service) and at each polling point of its `run()` (a
//! standalone one: `must_stop()`, `cws:eventLoop`, the start and the end of a wait in `nap` or
//! `mqr`); the report reads the figures.
//! No lock, and only a load and a store on the instance's path.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub(crate) struct LuaMemory {
    /// Bytes by instance index; 0 until the instance has its first figure.
    bytes: Box<[AtomicUsize]>,
}

impl LuaMemory {
    pub fn new(instances: usize) -> LuaMemory {
        LuaMemory {
            bytes: (0..instances).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// The instance's state takes `bytes` now.
    pub fn note(&self, instance: usize, bytes: usize) {
        if let Some(b) = self.bytes.get(instance) {
            b.store(bytes, Ordering::Relaxed);
        }
    }

    /// The report's words: `Lua memory 3.1 MiB, at most 1.6 MiB in one instance (memory_limit
    /// 64.0 MiB)`, the total and the largest of the instances with a figure; `limit` 0 is no
    /// limit. None before any instance has a figure.
    pub fn summary(&self, limit: usize) -> Option<String> {
        let known: Vec<usize> = self
            .bytes
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .filter(|&b| b > 0)
            .collect();
        let most = *known.iter().max()?;
        let total = known.iter().fold(0usize, |t, &b| t.saturating_add(b));
        let limit = match limit {
            0 => "no memory_limit".to_string(),
            l => format!("memory_limit {}", mib(l)),
        };
        Some(if self.bytes.len() == 1 {
            format!("Lua memory {} ({limit})", mib(most))
        } else {
            format!(
                "Lua memory {}, at most {} in one instance ({limit})",
                mib(total),
                mib(most)
            )
        })
    }
}

/// `bytes` in MiB with one decimal.
fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_gives_the_total_and_the_largest_against_the_limit() {
        let m = LuaMemory::new(3);
        assert_eq!(m.summary(64 << 20), None, "no figure yet");
        m.note(0, 1 << 20);
        m.note(2, 3 << 19);
        // Out of range: ignored, not a panic.
        m.note(3, 1 << 30);
        assert_eq!(
            m.summary(64 << 20).as_deref(),
            Some("Lua memory 2.5 MiB, at most 1.5 MiB in one instance (memory_limit 64.0 MiB)")
        );
        assert_eq!(
            m.summary(0).as_deref(),
            Some("Lua memory 2.5 MiB, at most 1.5 MiB in one instance (no memory_limit)")
        );
        let one = LuaMemory::new(1);
        one.note(0, 1_153_434);
        assert_eq!(
            one.summary(8 << 20).as_deref(),
            Some("Lua memory 1.1 MiB (memory_limit 8.0 MiB)")
        );
    }
}
