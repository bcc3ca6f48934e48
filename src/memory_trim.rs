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

/// Resident memory that buffers do not explain, beyond the least it has ever been, that makes
/// a trim worth trying at once.
pub const TRIM_SLACK: usize = 64 << 20;

/// What a trim must give back to count as useful: one that gives less (the memory is in use,
/// by Lua states or connections, which are not counted as buffers) holds the next one back
/// longer.
const USEFUL_TRIM: usize = TRIM_SLACK / 4;

/// A quiet server (its memory within [`QUIET_BAND`] for [`QUIET_LOOKS`] looks) trims what it
/// holds beyond its least and this, once per quiet spell: below [`TRIM_SLACK`], what a busy
/// hour left would otherwise stay for good (a soak trial's server idled at 73 MiB, its least
/// 11, with no connection left).
const QUIET_SLACK: usize = USEFUL_TRIM;
const QUIET_BAND: usize = 2 << 20;
const QUIET_LOOKS: u32 = 30;

/// Looks skipped after a trim: 30 (about 30 s) after a useful one or the first useless one,
/// doubling after each further useless one, at most about an hour; after a trim of memory
/// that came straight back (steady load: it was in use again), doubling up to ten minutes.
const FIRST_HOLD: u32 = 30;
const MAX_HOLD: u32 = 3600;
const MAX_CHURN_HOLD: u32 = 600;
/// A trim due within this many looks of its hold's end follows the previous one at once.
const CHURN_GRACE: u32 = 5;

/// Watches resident memory against the server's buffers, once a second (the main thread's
/// tick), and asks for a trim of the allocator's free memory when the difference stands
/// [`TRIM_SLACK`] above the least it has ever been (a burst of large messages has come and
/// gone, and glibc kept their memory), or `QUIET_SLACK` (16 MiB) above it while it stays put.
///
/// The least is never raised, not even by a trim. Memory in use while a trim runs (messages a
/// Lua service has taken, which the buffers do not count; Lua garbage not yet collected) is
/// freed later, and must still be trimmed then: a base taken from what one trim left (the
/// first design) kept an operator trial's server at 103-206 MiB with no connection left,
/// while the idle server took 8. What keeps trims from repeating for memory that stays in use
/// is the hold: after each trim the next waits 30 looks, and after each that gives back less
/// than [`TRIM_SLACK`] / 4 twice as long as before (up to an hour). A trim of memory that came
/// back as soon as the hold ended (the previous trim's memory was in use again: the soak
/// trial's steady load had a 20 MiB trim every 31 s) doubles the hold too, up to ten minutes,
/// and is not worth a line at info. The buffers' count is what the workers last published,
/// and a broadcast frame queued for many connections counts once for each of them: a trim
/// such a count misleads into is one of those held back.
#[derive(Debug, Default)]
pub struct Trimmer {
    /// The least resident memory less buffers seen (from the first look).
    base: Option<usize>,
    /// Looks left to skip, and the hold the next useless trim doubles.
    hold: u32,
    backoff: u32,
    /// Looks since the last trim, and that trim's hold.
    since_trim: u32,
    held_for: u32,
    /// Memory (less buffers) before the last trim when it was useful, and at the trim due now.
    last_before: Option<usize>,
    due_at: usize,
    /// The level the current quiet spell began at, its looks, and whether it had its trim.
    spell_level: usize,
    spell_looks: u32,
    spell_trimmed: bool,
}

impl Trimmer {
    /// Records a look: `resident`, the process's resident bytes now; `buffered`, what the
    /// server's buffers hold now (messages being received, bytes queued to send). True when
    /// a trim is due: the caller trims and reports with [`Trimmer::trimmed`].
    pub fn look(&mut self, resident: usize, buffered: usize) -> bool {
        let unexplained = resident.saturating_sub(buffered);
        let base = self.base.map_or(unexplained, |b| b.min(unexplained));
        self.base = Some(base);
        self.since_trim = self.since_trim.saturating_add(1);
        if unexplained.abs_diff(self.spell_level) > QUIET_BAND {
            (self.spell_level, self.spell_looks, self.spell_trimmed) = (unexplained, 0, false);
        } else {
            self.spell_looks = self.spell_looks.saturating_add(1);
        }
        if self.hold > 0 {
            self.hold -= 1;
            return false;
        }
        let quiet = self.spell_looks >= QUIET_LOOKS && !self.spell_trimmed;
        let due = unexplained > base.saturating_add(TRIM_SLACK)
            || (quiet && unexplained > base.saturating_add(QUIET_SLACK));
        if due {
            self.spell_trimmed = true;
            self.due_at = unexplained;
        }
        due
    }

    /// After a trim that took resident memory from `before` to `after`: true when it gave
    /// back enough to be useful, and memory that had not come straight back since the
    /// previous trim (worth a line at info). Either way the next trim waits.
    pub fn trimmed(&mut self, before: usize, after: usize) -> bool {
        let useful = before.saturating_sub(after) >= USEFUL_TRIM;
        let came_back = self.since_trim <= self.held_for.saturating_add(CHURN_GRACE)
            && self
                .last_before
                .is_some_and(|b| self.due_at.saturating_add(USEFUL_TRIM) >= b);
        self.backoff = match (useful, came_back) {
            (true, false) => 0,
            (true, true) => (self.backoff.saturating_mul(2)).clamp(FIRST_HOLD, MAX_CHURN_HOLD),
            (false, _) => (self.backoff.saturating_mul(2)).clamp(FIRST_HOLD, MAX_HOLD),
        };
        self.hold = self.backoff.max(FIRST_HOLD);
        self.held_for = self.hold;
        self.since_trim = 0;
        // Only memory a trim gave back can come back.
        self.last_before = useful.then_some(self.due_at);
        useful && !came_back
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
        assert!(!t.look(20 * MB, 0), "the first look only sets the base");
        // Buffers fill: resident memory follows them.
        assert!(!t.look(520 * MB, 500 * MB));
        assert!(!t.look(20 * MB + 2 * TRIM_SLACK, 2 * TRIM_SLACK));
        // A little more than the buffers, within the slack.
        assert!(!t.look(20 * MB + TRIM_SLACK, 0));
    }

    #[test]
    fn memory_kept_after_the_buffers_are_gone_is_trimmed_for() {
        let mut t = Trimmer::default();
        assert!(!t.look(20 * MB, 0));
        assert!(!t.look(1000 * MB, 980 * MB));
        // The burst is over, glibc kept most of it.
        assert!(t.look(700 * MB, 0));
        assert!(t.trimmed(700 * MB, 120 * MB));
        // Not again at once for what one trim could not give back...
        let due = (1..100).find(|_| t.look(120 * MB, 0));
        // ...but after the hold: the rest may have been in use, and be free now.
        assert_eq!(due, Some(FIRST_HOLD as usize + 1));
    }

    /// The base is the least seen: a base taken high (a reconnect storm when the first look
    /// came) does not keep later bursts from being trimmed.
    #[test]
    fn the_base_follows_memory_down() {
        let mut t = Trimmer::default();
        assert!(!t.look(900 * MB, 0));
        assert!(!t.look(100 * MB, 0));
        assert!(t.look(101 * MB + TRIM_SLACK, 0));
    }

    /// Trims that give little back (the memory is in use, or a broadcast's frames counted
    /// once per recipient made the buffers look larger than they are) are held back, ever
    /// longer, until one is useful again.
    #[test]
    fn useless_trims_are_held_back_ever_longer() {
        let mut t = Trimmer::default();
        assert!(!t.look(20 * MB, 0));
        let looks_until_due = |t: &mut Trimmer| (1..10_000).find(|_| t.look(200 * MB, 0));
        assert_eq!(looks_until_due(&mut t), Some(1));
        assert!(!t.trimmed(200 * MB, 199 * MB));
        assert_eq!(looks_until_due(&mut t), Some(FIRST_HOLD as usize + 1));
        assert!(!t.trimmed(200 * MB, 199 * MB));
        assert_eq!(looks_until_due(&mut t), Some(2 * FIRST_HOLD as usize + 1));
        // A useful trim ends the doubling: the next waits the first hold again.
        assert!(t.trimmed(200 * MB, 20 * MB));
        assert_eq!(looks_until_due(&mut t), Some(FIRST_HOLD as usize + 1));
    }

    /// A trim during a burst finds the memory in use (even one that gives some back); once the
    /// burst is over, what it left is trimmed at the first look after the hold. The re-trials:
    /// 103 and then 206 MiB kept with no connection left.
    #[test]
    fn memory_in_use_at_a_trim_is_trimmed_once_it_is_freed() {
        for gave_back in [0, 61 * MB] {
            let mut t = Trimmer::default();
            assert!(!t.look(8 * MB, 0));
            assert!(
                t.look(451 * MB, 8 * MB),
                "the burst: a Lua service holds what buffers do not"
            );
            t.trimmed(451 * MB, 451 * MB - gave_back);
            // The clients are gone; 206 MB stays.
            let due = (1..100).find(|_| t.look(206 * MB, 0));
            assert_eq!(due, Some(FIRST_HOLD as usize + 1), "gave back {gave_back}");
        }
    }

    /// Below the slack, a quiet server gives back what it holds beyond its least and a little:
    /// once per quiet spell, not while its memory moves, and not again while it stays put. The
    /// soak trial: 73 MiB at idle, its least 11, and no trim.
    #[test]
    fn a_quiet_server_trims_once_per_spell() {
        let mut t = Trimmer::default();
        assert!(!t.look(11 * MB, 0));
        // Busy: memory moves by more than the band every look.
        for i in 0..100 {
            assert!(!t.look((60 + (i % 2) * 6) * MB, 0), "look {i}");
        }
        // Quiet at 73 MiB: due once the spell is QUIET_LOOKS long.
        let due = (1..100).find(|_| t.look(73 * MB, 0));
        assert_eq!(due, Some(QUIET_LOOKS as usize + 1));
        assert!(t.trimmed(73 * MB, 30 * MB));
        // Quiet again, at 30: 19 above the least, a trim that may give back little.
        let due = (1..100).find(|_| t.look(30 * MB, 0));
        assert_eq!(due, Some(QUIET_LOOKS as usize + 1));
        assert!(!t.trimmed(30 * MB, 29 * MB));
        // It gave nothing: the spell goes on, with no further trim however long.
        assert_eq!((1..10_000).find(|_| t.look(29 * MB, 0)), None);
        // A quiet level within the slack of the least is left alone.
        let mut t = Trimmer::default();
        assert!(!t.look(11 * MB, 0));
        assert_eq!((1..1000).find(|_| t.look(11 * MB + QUIET_SLACK, 0)), None);
    }

    /// Steady load: the memory a trim gives back is in use again as soon as the hold ends. Each
    /// such trim doubles the hold (up to ten minutes) and is not reported at info; a trim
    /// whose memory stays given back, or a burst long after, is again.
    #[test]
    fn memory_that_comes_straight_back_holds_trims_back_longer() {
        let mut t = Trimmer::default();
        assert!(!t.look(10 * MB, 0));
        let mut waits = Vec::new();
        let mut reported = Vec::new();
        for _ in 0..8 {
            let due = (1..10_000).find(|_| t.look(95 * MB, 0)).unwrap();
            waits.push(due);
            reported.push(t.trimmed(95 * MB, 72 * MB));
        }
        assert_eq!(waits, [1, 31, 31, 61, 121, 241, 481, 601]);
        assert_eq!(
            reported,
            [true, false, false, false, false, false, false, false]
        );
        // The load ends: the next trim gives back what it kept, and stays down.
        let due = (1..10_000).find(|_| t.look(95 * MB, 0)).unwrap();
        assert_eq!(due, 601);
        assert!(!t.trimmed(95 * MB, 20 * MB), "came back before this one");
        assert_eq!((1..100).find(|_| t.look(20 * MB, 0)), None);
        // A burst long after is no churn.
        for _ in 0..1000 {
            t.look(20 * MB, 0);
        }
        assert!(t.look(200 * MB, 0));
        assert!(t.trimmed(200 * MB, 20 * MB));
    }

    #[test]
    fn resident_bytes_are_read() {
        let r = resident_bytes().expect("/proc/self/statm");
        assert!(r > MB, "{r}");
    }
}
