//! Locks that outlive a panic. A thread that panics while holding a `std::sync::Mutex`
//! poisons it; every lock in portok guards plain data (counters, rings, maps) that stays
//! whole across a panic, so a poisoned lock is taken as it is rather than spread. This is
//! a leaf: it imports nothing of the crate.

use std::sync::{Mutex, MutexGuard};

/// `m.locked()`: the guard of `m`, poisoned or not.
pub(crate) trait LockExt<T: ?Sized> {
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> LockExt<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::LockExt;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_poisoned_lock_is_taken_as_it_is() {
        let m = Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison");
        })
        .join();
        assert!(m.is_poisoned());
        *m.locked() += 1;
        assert_eq!(*m.locked(), 2);
    }
}
