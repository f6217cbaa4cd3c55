//! The loop guard: an app that writes into the folder portok watches, each time it starts
//! (a generated file, a log not in .gitignore), would be redeployed forever. Three
//! redeploys in a row for the same paths, each within a moment of the previous
//! generation's start, mean the app writes them itself: they are not watched from then on.

use super::watch::Learned;
use crate::sync::LockExt;
use std::path::PathBuf;
use std::time::Duration;

/// Redeploys in a row that make a loop.
pub const TRIPS: u32 = 3;
/// How soon after a generation's start a change counts as written by it.
pub const WITHIN: Duration = Duration::from_secs(2);

pub struct LoopGuard {
    /// The paths of the redeploys counted so far, sorted.
    last: Vec<PathBuf>,
    count: u32,
    /// Added to `WITHIN`: a change reaches the supervisor only after the quiet period.
    debounce: Duration,
    learned: Learned,
}

impl LoopGuard {
    pub fn new(debounce: Duration, learned: Learned) -> Self {
        LoopGuard {
            last: Vec::new(),
            count: 0,
            debounce,
            learned,
        }
    }

    /// A redeploy for `paths`, `since_start` after the newest generation started (None: no
    /// generation runs). Returns the paths it stops watching when this one makes a loop.
    pub fn redeployed(
        &mut self,
        paths: &[PathBuf],
        since_start: Option<Duration>,
    ) -> Option<Vec<PathBuf>> {
        let mut paths = paths.to_vec();
        paths.sort();
        let soon = since_start.is_some_and(|d| d <= WITHIN + self.debounce);
        if !soon {
            self.count = 0;
            self.last.clear();
            return None;
        }
        if paths == self.last {
            self.count += 1;
        } else {
            self.last = paths;
            self.count = 1;
        }
        if self.count < TRIPS {
            return None;
        }
        self.count = 0;
        self.learned.locked().extend(self.last.iter().cloned());
        Some(std::mem::take(&mut self.last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_redeploys_for_the_same_paths_right_after_each_start_stop_the_loop() {
        let learned = Learned::default();
        let mut g = LoopGuard::new(Duration::from_millis(300), learned.clone());
        let p = vec![PathBuf::from("/app/gen.txt")];
        let soon = Some(Duration::from_millis(500));
        assert_eq!(g.redeployed(&p, soon), None);
        assert_eq!(g.redeployed(&p, soon), None);
        assert_eq!(g.redeployed(&p, soon), Some(p.clone()));
        assert!(learned.lock().unwrap().contains(&p[0]));
    }

    #[test]
    fn edits_a_while_after_a_start_or_of_other_files_are_no_loop() {
        let learned = Learned::default();
        let mut g = LoopGuard::new(Duration::from_millis(300), learned.clone());
        let a = vec![PathBuf::from("/app/a.rs")];
        let b = vec![PathBuf::from("/app/b.rs")];
        let soon = Some(Duration::from_millis(500));
        let late = Some(Duration::from_secs(10));
        for _ in 0..5 {
            assert_eq!(g.redeployed(&a, late), None);
        }
        // Alternating paths never count three in a row.
        for _ in 0..3 {
            assert_eq!(g.redeployed(&a, soon), None);
            assert_eq!(g.redeployed(&b, soon), None);
        }
        // A late one breaks a run.
        assert_eq!(g.redeployed(&a, soon), None);
        assert_eq!(g.redeployed(&a, soon), None);
        assert_eq!(g.redeployed(&a, late), None);
        assert_eq!(g.redeployed(&a, soon), None);
        assert!(learned.lock().unwrap().is_empty());
    }
}
