//! An exclusive advisory lock on the cache, so two processes (or two test threads) never fetch
//! or convert at once. The OS releases it if the holder dies, so a crash never leaves the cache
//! locked.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use crate::FetchError;

/// Holds the cache lock until dropped.
#[derive(Debug)]
pub struct StoreLock {
    file: File,
}

fn open(path: &Path) -> Result<File, FetchError> {
    if let Some(parent) = path.parent() {
        // create_dir_all on a path that is a file says only "File exists".
        if parent.exists() && !parent.is_dir() {
            return Err(FetchError::NotADirectory { path: parent.to_owned() });
        }
        std::fs::create_dir_all(parent).map_err(FetchError::at(parent))?;
    }
    OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(FetchError::at(path))
}

impl StoreLock {
    /// Blocks until the lock at `path` is ours.
    pub fn acquire(path: &Path) -> Result<Self, FetchError> {
        let file = open(path)?;
        file.lock().map_err(FetchError::at(path))?;
        Ok(StoreLock { file })
    }

    /// Takes the lock if it is free; `None` when another holder has it.
    pub fn try_acquire(path: &Path) -> Result<Option<Self>, FetchError> {
        let file = open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(StoreLock { file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(FetchError::io(path, e)),
        }
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_cache_that_is_a_file_is_named_as_not_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cache");
        std::fs::write(&file, "x").unwrap();
        match StoreLock::acquire(&file.join(".lock")) {
            Err(e @ FetchError::NotADirectory { .. }) => assert!(e.to_string().contains("is not a directory"), "{e}"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a lock inside a file"),
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
    }

    #[test]
    fn second_holder_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache/.lock");
        let held = StoreLock::acquire(&path).unwrap();
        assert!(StoreLock::try_acquire(&path).unwrap().is_none(), "lock must be exclusive");
        let (tx, rx) = mpsc::channel();
        let p = path.clone();
        let waiter = std::thread::spawn(move || {
            let _l = StoreLock::acquire(&p).unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "waiter got the lock while it was held");
        drop(held);
        rx.recv_timeout(Duration::from_secs(10)).expect("waiter never got the lock after release");
        waiter.join().unwrap();
        assert!(StoreLock::try_acquire(&path).unwrap().is_some());
    }
}
