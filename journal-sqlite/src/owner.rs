//! Owners: which journals on one file are alive.
//!
//! Each writable [`SqliteJournal`](crate::SqliteJournal) is an *owner*,
//! named by the epoch its `open` took (unique in the file, never handed
//! out again). It holds an exclusive `flock` on its own lock file,
//! `<journal>.owners/<epoch>.lock`, from before it writes its first row
//! until it is dropped; the kernel drops the lock when the process dies,
//! however it dies (`kill -9` too). So an owner is alive exactly while its
//! lock cannot be taken: no lease, no clock, no heartbeat.
//!
//! `flock` locks belong to an open file description, not to a process, so
//! two journals of one process are two owners. A lock file whose owner is
//! gone is removed by whoever finds it so (holding its lock); a missing
//! lock file means its owner is gone (an owner writes no row before its
//! lock is held, and checks after locking that its file is still the one
//! at its path).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::SqliteJournalError;

/// The owner of rows written before owners existed (schema 1), or by
/// nobody: always gone.
pub(crate) const NOBODY: i64 = 0;

/// Where the lock files of a journal's owners live.
#[derive(Debug)]
pub(crate) struct Owners {
    dir: PathBuf,
}

/// A live owner's lock: held until dropped, then its file is removed.
#[derive(Debug)]
pub(crate) struct OwnerLock {
    #[cfg(unix)]
    _file: std::fs::File,
    path: PathBuf,
}

impl Drop for OwnerLock {
    fn drop(&mut self) {
        // Removed while still locked: nobody can take a lock on it
        // meanwhile and think it is ours. (A crash leaves it; the next
        // journal that finds it unlocked removes it.)
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Owners {
    /// The owners of the journal at `path`, or `None` where owners cannot
    /// be told apart: not on Unix (no `flock`), or a path that is not a
    /// plain file (`:memory:`, a `file:` URI).
    pub(crate) fn of(path: &Path) -> Option<Owners> {
        if !cfg!(unix) {
            return None;
        }
        let name = path.file_name()?;
        if path.as_os_str() == ":memory:" || path.to_string_lossy().starts_with("file:") {
            return None;
        }
        let mut dir_name = name.to_owned();
        dir_name.push(".owners");
        Some(Owners { dir: path.with_file_name(dir_name) })
    }

    fn lock_path(&self, owner: i64) -> PathBuf {
        self.dir.join(format!("{owner}.lock"))
    }

    fn error(&self, path: &Path, cause: std::io::Error) -> SqliteJournalError {
        SqliteJournalError::Owner { path: path.to_owned(), cause: Arc::new(cause) }
    }
}

#[cfg(unix)]
impl Owners {
    /// Registers `owner` (this journal's epoch): creates its lock file and
    /// holds an exclusive lock on it. Call before any row names `owner`.
    pub(crate) fn register(&self, owner: i64) -> Result<OwnerLock, SqliteJournalError> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
        match std::fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(self.error(&self.dir, error)),
        }
        let path = self.lock_path(owner);
        // A journal sweeping gone owners may lock and remove the file
        // between our create and our lock: then we hold a lock on a file
        // nobody else can see, and try again.
        for _ in 0..1000 {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(|error| self.error(&path, error))?;
            // Blocking: another journal holds it only while it checks.
            rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
                .map_err(|error| self.error(&path, error.into()))?;
            let held = file.metadata().map_err(|error| self.error(&path, error))?;
            match std::fs::metadata(&path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(OwnerLock { _file: file, path });
                }
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(self.error(&path, error)),
            }
        }
        Err(self.error(&path, std::io::Error::other("the lock file kept being removed")))
    }

    /// Whether `owner` is alive (its lock is held). A gone owner's lock
    /// file is removed. An owner whose lock file cannot be read (no
    /// permission) is an error: never guessed at.
    pub(crate) fn is_alive(&self, owner: i64) -> Result<bool, SqliteJournalError> {
        if owner == NOBODY {
            return Ok(false);
        }
        let path = self.lock_path(owner);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(error) => return Err(self.error(&path, error)),
        };
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                // Gone: remove its file while holding its lock.
                let _ = std::fs::remove_file(&path);
                Ok(false)
            }
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(true),
            Err(error) => Err(self.error(&path, error.into())),
        }
    }

    /// Removes the lock files of gone owners (left by crashes), except
    /// `own`'s. Best effort.
    pub(crate) fn sweep(&self, own: i64) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let owner = name.to_str().and_then(|n| n.strip_suffix(".lock")).and_then(|n| n.parse::<i64>().ok());
            if let Some(owner) = owner.filter(|&o| o != own && o != NOBODY) {
                let _ = self.is_alive(owner);
            }
        }
    }
}

#[cfg(not(unix))]
impl Owners {
    pub(crate) fn register(&self, _: i64) -> Result<OwnerLock, SqliteJournalError> {
        unreachable!("`Owners::of` is `None` off Unix")
    }

    pub(crate) fn is_alive(&self, _: i64) -> Result<bool, SqliteJournalError> {
        unreachable!("`Owners::of` is `None` off Unix")
    }

    pub(crate) fn sweep(&self, _: i64) {}
}
