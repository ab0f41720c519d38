//! Ceilings on what one local user can cause (SPEC 14): so many requests
//! and so many audit lines per second per non-root uid. What goes over is
//! dropped and counted, and the count is logged once per second as one
//! summary line, so that a flood can neither starve other users nor push
//! real decisions out of syslog. Root (PAM stacks) is never limited here.

use std::collections::HashMap;
use std::sync::Mutex;

/// What a uid used in the current second, and what it had dropped.
#[derive(Debug, Default, Clone, Copy)]
struct Window {
    second: u64,
    used: u32,
    dropped: u64,
}

/// A fixed per-second allowance per uid.
#[derive(Debug)]
pub struct Ceiling {
    per_second: u32,
    windows: Mutex<HashMap<u32, Window>>,
}

/// Uids remembered at most; past that, old windows are forgotten first.
const MAX_TRACKED: usize = 4096;

impl Ceiling {
    pub fn new(per_second: u32) -> Self {
        Ceiling { per_second, windows: Mutex::new(HashMap::new()) }
    }

    /// Whether `uid` may do one more thing at `now`; `false` counts a drop.
    pub fn admit(&self, uid: u32, now: u64) -> bool {
        if uid == 0 {
            return true;
        }
        let mut windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if windows.len() >= MAX_TRACKED && !windows.contains_key(&uid) {
            windows.retain(|_, w| w.second >= now && w.dropped > 0);
        }
        let window = windows.entry(uid).or_default();
        if window.second != now {
            // Drops of an earlier second wait for `take_summaries`.
            if window.dropped == 0 {
                *window = Window { second: now, used: 0, dropped: 0 };
            } else {
                window.second = now;
                window.used = 0;
            }
        }
        if window.used < self.per_second {
            window.used += 1;
            true
        } else {
            window.dropped += 1;
            false
        }
    }

    /// `(uid, dropped)` for every uid that had something dropped since the
    /// last call; the counts start again.
    pub fn take_summaries(&self) -> Vec<(u32, u64)> {
        let mut windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut summaries: Vec<(u32, u64)> = windows
            .iter_mut()
            .filter(|(_, w)| w.dropped > 0)
            .map(|(&uid, w)| (uid, std::mem::take(&mut w.dropped)))
            .collect();
        summaries.sort_unstable();
        summaries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_gets_its_allowance_per_second_and_drops_are_counted() {
        let ceiling = Ceiling::new(3);
        let admitted = (0..10).filter(|_| ceiling.admit(1000, 50)).count();
        assert_eq!(admitted, 3);
        assert!(ceiling.admit(1001, 50), "another uid has its own allowance");
        assert!((0..100).all(|_| ceiling.admit(0, 50)), "root is never limited");
        assert!(ceiling.admit(1000, 51), "a new second, a new allowance");
        assert_eq!(ceiling.take_summaries(), vec![(1000, 7)]);
        assert!(ceiling.take_summaries().is_empty(), "each drop is summarised once");
    }
}
