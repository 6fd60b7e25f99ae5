//! A journal file that cannot be written: opened read-only, every append a
//! typed error.
//!
//! Root ignores file permissions, so as root the file (and directory) is
//! made immutable with `chattr +i` instead; where neither makes the file
//! unwritable, the test says so and passes without checking.

mod common;

use std::fs::{OpenOptions, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Read, TempDir, append, read, unfinished};
use transaction_manager::journal::{EntryKind, Journal};
use transaction_manager_sqlite::{SqliteJournal, SqliteJournalError};

/// Makes paths unwritable until dropped.
struct Locked {
    chmod: Vec<(PathBuf, u32)>,
    chattr: Vec<PathBuf>,
}

impl Locked {
    /// `file` read-only (and `dir` too, if given), or `None` when this
    /// process can write it all the same.
    fn new(file: &Path, dir: Option<&Path>) -> Option<Locked> {
        let paths: Vec<&Path> = std::iter::once(file).chain(dir).collect();
        let mut locked = Locked { chmod: Vec::new(), chattr: Vec::new() };
        for path in &paths {
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            std::fs::set_permissions(path, Permissions::from_mode(if path.is_dir() { 0o555 } else { 0o444 })).unwrap();
            locked.chmod.push((path.to_path_buf(), mode));
        }
        if !writable(file) {
            return Some(locked);
        }
        // Root: permissions do not apply, the immutable flag does.
        for path in &paths {
            let ok = Command::new("chattr").arg("+i").arg(path).status().is_ok_and(|s| s.success());
            if !ok {
                return None;
            }
            locked.chattr.push(path.to_path_buf());
        }
        (!writable(file)).then_some(locked)
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        for path in &self.chattr {
            let _ = Command::new("chattr").arg("-i").arg(path).status();
        }
        for (path, mode) in &self.chmod {
            let _ = std::fs::set_permissions(path, Permissions::from_mode(*mode));
        }
    }
}

fn writable(file: &Path) -> bool {
    OpenOptions::new().append(true).open(file).is_ok()
}

fn check_read_only(lock_dir: bool) {
    let dir = TempDir::new(if lock_dir { "read-only-dir" } else { "read-only-file" });
    let id = {
        let journal = SqliteJournal::open(dir.file()).unwrap();
        let id = journal.next_id();
        append(&journal, id, Some(0), EntryKind::Done, b"undo").unwrap();
        id
    };
    let Some(locked) = Locked::new(&dir.file(), lock_dir.then(|| dir.path())) else {
        eprintln!("skipped: this process can write a read-only file (root without `chattr`)");
        return;
    };
    let journal = SqliteJournal::open(dir.file()).unwrap();
    assert!(journal.is_read_only());
    // What is there can be read, for recovery's listing.
    assert_eq!(read(&journal, id).unwrap(), [Read::new(Some(0), EntryKind::Done, b"undo")]);
    assert_eq!(unfinished(&journal), [id]);
    // Nothing can be written, lazy or durable, and it says why.
    let other = journal.next_id();
    assert_ne!(other.get(), 0);
    for kind in [EntryKind::Begin, EntryKind::Done] {
        match append(&journal, other, Some(1), kind, b"x") {
            Err(error @ SqliteJournalError::ReadOnly { .. }) => {
                assert!(error.to_string().starts_with("the journal is read-only"), "{error}");
            }
            other => panic!("expected ReadOnly, got {other:?}"),
        }
    }
    drop(journal);
    drop(locked);
    // Writable again: appends work, the earlier entries are intact.
    let journal = SqliteJournal::open(dir.file()).unwrap();
    assert!(!journal.is_read_only());
    append(&journal, id, None, EntryKind::RolledBack, &[1]).unwrap();
    assert_eq!(unfinished(&journal), []);
}

#[test]
fn a_read_only_file_refuses_appends_with_a_typed_error() {
    check_read_only(false);
}

#[test]
fn a_read_only_directory_and_file_refuse_appends_with_a_typed_error() {
    check_read_only(true);
}

#[test]
fn a_read_only_journal_lists_only_work_of_owners_that_are_gone() {
    let dir = TempDir::new("read-only-owners");
    let gone = {
        let journal = SqliteJournal::open(dir.file()).unwrap();
        let id = journal.next_id();
        append(&journal, id, Some(0), EntryKind::Done, b"undo").unwrap();
        id
    };
    // Another journal on the file, still open: its work is running.
    let running_journal = SqliteJournal::open(dir.file()).unwrap();
    let running = running_journal.next_id();
    append(&running_journal, running, Some(0), EntryKind::Done, b"undo").unwrap();
    let Some(locked) = Locked::new(&dir.file(), None) else {
        eprintln!("skipped: this process can write a read-only file (root without `chattr`)");
        return;
    };
    let journal = SqliteJournal::open(dir.file()).unwrap();
    assert!(journal.is_read_only());
    assert_eq!(unfinished(&journal), [gone]);
    drop(running_journal);
    assert_eq!(unfinished(&journal), [gone, running]);
    drop(journal);
    drop(locked);
}
