//! Giving the memory of large buffers back to the system once they are gone.
//!
//! glibc maps a block of 128 KiB or more on its own and unmaps it when it is freed, but each
//! such block freed raises that threshold to its size (up to 32 MiB): after the first 16 MiB
//! message, later ones come from the arenas, which keep what is freed. A trial's peers sending
//! large messages whose echo they never read left the server at most of its peak RSS after
//! they had gone (1.15 GB with no connection left). Mapping every large block instead (a fixed
//! threshold) gives it back at once but costs page faults per message: the echo of 2 MB
//! messages ran at 0.62x. So the arenas keep serving, and [`Trimmer`] asks glibc to give back
//! what they hold free (`malloc_trim`) when the process's resident memory has grown well past
//! what the server's buffers explain.

/// Resident memory that buffers do not explain, beyond what it was after the last trim, that
/// makes a trim worth it.
pub const TRIM_SLACK: usize = 64 << 20;

/// Watches resident memory against the server's buffers, once a second (the main thread's
/// tick), and trims the allocator's free memory when the difference has grown by
/// [`TRIM_SLACK`]: a burst of large messages has come and gone, and glibc kept its memory.
#[derive(Debug, Default)]
pub struct Trimmer {
    /// Resident bytes less buffered ones, after the last trim (or at the first look).
    base: Option<usize>,
}

impl Trimmer {
    /// `resident`: the process's resident bytes now; `buffered`: what the server's buffers
    /// hold now (messages being received, bytes queued to send). True when a trim is due; the
    /// caller trims and reports the resident bytes after it with [`Trimmer::trimmed`].
    pub fn due(&mut self, resident: usize, buffered: usize) -> bool {
        let unexplained = resident.saturating_sub(buffered);
        match self.base {
            None => {
                self.base = Some(unexplained);
                false
            }
            Some(base) => unexplained > base.saturating_add(TRIM_SLACK),
        }
    }

    /// After a trim: what is unexplained now is the new base (memory that a trim could not
    /// give back, Lua states that grew, is not trimmed for again).
    pub fn trimmed(&mut self, resident: usize, buffered: usize) {
        self.base = Some(resident.saturating_sub(buffered));
    }
}

/// Gives the allocator's free memory back to the system; true when some was. A no-op
/// (false) with another C library.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only releases free memory of the allocator's arenas, under
        // their locks; it is safe beside threads that allocate.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The process's resident bytes (`/proc/self/statm`), if it can be read.
pub fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * usize::try_from(page).ok().filter(|&p| p > 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: usize = 1 << 20;

    #[test]
    fn memory_buffers_explain_is_never_trimmed_for() {
        let mut t = Trimmer::default();
        assert!(!t.due(20 * MB, 0), "the first look only sets the base");
        // Buffers fill: resident memory follows them.
        assert!(!t.due(520 * MB, 500 * MB));
        assert!(!t.due(20 * MB + 2 * TRIM_SLACK, 2 * TRIM_SLACK));
        // A little more than the buffers, within the slack.
        assert!(!t.due(20 * MB + TRIM_SLACK, 0));
    }

    #[test]
    fn memory_kept_after_the_buffers_are_gone_is_trimmed_for_once() {
        let mut t = Trimmer::default();
        assert!(!t.due(20 * MB, 0));
        assert!(!t.due(1000 * MB, 980 * MB));
        // The burst is over, glibc kept most of it.
        assert!(t.due(700 * MB, 0));
        // The trim gave back all but 100 MB: that rest is the new base.
        t.trimmed(120 * MB, 0);
        assert!(
            !t.due(120 * MB, 0),
            "not again for what a trim cannot give back"
        );
        assert!(!t.due(120 * MB + TRIM_SLACK, 0));
        assert!(t.due(121 * MB + TRIM_SLACK, 0), "another burst kept");
    }

    #[test]
    fn resident_bytes_are_read() {
        let r = resident_bytes().expect("/proc/self/statm");
        assert!(r > MB, "{r}");
    }

    /// What the trimmer relies on: glibc gives back free memory inside its arenas (freed
    /// blocks between blocks still in use, which free() itself never returns).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_trim_gives_back_freed_blocks_between_live_ones() {
        // SAFETY: mallinfo2 only reads the allocator's counters (under its locks).
        let free_in_arenas = || unsafe { libc::mallinfo2() }.fordblks;
        // Blocks below any mmap threshold, every other one freed: 32 MB free in the middle.
        let mut blocks: Vec<Vec<u8>> = (0..1024).map(|i| vec![i as u8; 64 * 1024]).collect();
        let kept: Vec<Vec<u8>> = blocks
            .drain(..)
            .enumerate()
            .filter_map(|(i, b)| (i % 2 == 0).then_some(b))
            .collect();
        let before = free_in_arenas();
        assert!(before >= 32 * MB, "free in the arenas: {before}");
        assert!(trim(), "nothing was given back");
        drop(kept);
    }
}
