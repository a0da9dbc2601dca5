//! Who uses a store: one process at a time writes to a data directory. It holds an
//! exclusive lock on `<data dir>/lock` and writes there who it is (a `serve` daemon with
//! its HTTP address, or a one-shot `sync`), so another `grasp-sync` command can hand its
//! work to the daemon or say clearly why it cannot run.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "lock";

/// What the process holding the lock wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Its process id.
    pub pid: u32,
    /// `serve` or `sync`.
    pub command: String,
    /// Where a daemon answers HTTP (`serve` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<SocketAddr>,
}

impl Owner {
    /// The daemon's base URL, for a client on this machine (an unspecified listen
    /// address is reached on loopback).
    pub fn base_url(&self) -> Option<String> {
        let mut addr = self.http?;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        Some(format!("http://{addr}"))
    }
}

/// The lock held for as long as this lives.
#[derive(Debug)]
pub struct StoreLock {
    file: File,
    path: PathBuf,
}

/// Why the lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it (and says who it is, when it could be read).
    Held(Option<Owner>),
    /// The file could not be created or locked.
    Io(String),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Held(Some(owner)) => write!(
                f,
                "the store is in use by `grasp-sync {}` (pid {})",
                owner.command, owner.pid
            ),
            Self::Held(None) => f.write_str("the store is in use by another process"),
            Self::Io(e) => f.write_str(e),
        }
    }
}

impl StoreLock {
    /// Takes the lock of `data_dir` (creating the directory) and records `owner`.
    pub fn acquire(data_dir: &Path, owner: &Owner) -> Result<Self, LockError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| LockError::Io(format!("{}: {e}", data_dir.display())))?;
        let path = data_dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| LockError::Io(format!("{}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(LockError::Held(read_owner(&path))),
            Err(TryLockError::Error(e)) => {
                return Err(LockError::Io(format!("{}: {e}", path.display())))
            }
        }
        let mut lock = Self { file, path };
        lock.record(owner)
            .map_err(|e| LockError::Io(format!("{}: {e}", lock.path.display())))?;
        Ok(lock)
    }

    /// Rewrites who holds the lock (a daemon adds its address once it listens).
    pub fn record(&mut self, owner: &Owner) -> std::io::Result<()> {
        let text = serde_json::to_string(owner).map_err(std::io::Error::other)?;
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(text.as_bytes())?;
        self.file.sync_data()
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        // Leave the file (another process may have opened it); empty it and unlock.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// Who holds the lock of `data_dir` now, if anyone.
pub fn current_owner(data_dir: &Path) -> Result<Option<Owner>, LockError> {
    let path = data_dir.join(LOCK_FILE);
    let file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LockError::Io(format!("{}: {e}", path.display()))),
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            Ok(None)
        }
        Err(TryLockError::WouldBlock) => match read_owner(&path) {
            Some(owner) => Ok(Some(owner)),
            None => Err(LockError::Held(None)),
        },
        Err(TryLockError::Error(e)) => Err(LockError::Io(format!("{}: {e}", path.display()))),
    }
}

fn read_owner(path: &Path) -> Option<Owner> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_others_see_who() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(current_owner(dir.path()).unwrap(), None);
        let owner = Owner {
            pid: 42,
            command: "serve".into(),
            http: Some("0.0.0.0:7400".parse().unwrap()),
        };
        let lock = StoreLock::acquire(dir.path(), &owner).unwrap();
        let seen = current_owner(dir.path()).unwrap().unwrap();
        assert_eq!(seen, owner);
        assert_eq!(seen.base_url().as_deref(), Some("http://127.0.0.1:7400"));
        match StoreLock::acquire(dir.path(), &owner) {
            Err(LockError::Held(Some(o))) => assert_eq!(o.pid, 42),
            other => panic!("expected the lock to be held, got {other:?}"),
        }
        drop(lock);
        assert_eq!(current_owner(dir.path()).unwrap(), None);
        assert!(StoreLock::acquire(dir.path(), &owner).is_ok());
    }
}
