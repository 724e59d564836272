//! Taking std locks, with one decision about poisoning instead of one per call site.
//!
//! A lock is poisoned when a thread panicked while holding it. Every lock in Bakend guards data
//! that stays valid at every await-free step a holder takes (maps, counters, queues, handles),
//! so a panic elsewhere — already caught and reported as a 500 or a failed function — must not
//! switch a feature off for good. Each helper therefore takes the guard whether or not the lock
//! is poisoned. (Silently treating a poisoned lock as "absent", as `if let Ok(..)` did, made a
//! collection registry look empty after one panic.)

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m`, recovering the guard if a panicking holder poisoned it.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-locks `l`, recovering the guard if a panicking holder poisoned it.
pub fn read<T: ?Sized>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-locks `l`, recovering the guard if a panicking holder poisoned it.
pub fn write<T: ?Sized>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_holder_does_not_hide_the_data() {
        let m = std::sync::Arc::new(Mutex::new(vec![1]));
        let l = std::sync::Arc::new(RwLock::new(7));
        let (m2, l2) = (m.clone(), l.clone());
        let _ = std::thread::spawn(move || {
            let _g = m2.lock();
            let _w = l2.write();
            panic!("holder panics");
        })
        .join();
        assert!(m.is_poisoned() && l.is_poisoned());
        lock(&m).push(2);
        assert_eq!(*lock(&m), vec![1, 2]);
        *write(&l) += 1;
        assert_eq!(*read(&l), 8);
    }
}
