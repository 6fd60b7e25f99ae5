//! On Unix the journal file and its `-wal` / `-shm` files are created
//! readable and writable by their owner only, whatever the umask; a file
//! that already exists with wider permissions is used as it is, with a
//! warning through the `log` crate.
#![cfg(unix)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;

use common::{TempDir, block_on};
use transaction_manager::journal::{Entry, EntryKind, Journal};
use transaction_manager_sqlite::SqliteJournal;

/// Every warning logged by this test binary, as text.
static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.level() <= log::Level::Warn {
            WARNINGS.lock().unwrap().push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static CAPTURE: Capture = Capture;
    // Once per binary; the other test may have set it already.
    let _ = log::set_logger(&CAPTURE);
    log::set_max_level(log::LevelFilter::Trace);
}

fn warnings_about(file: &Path) -> Vec<String> {
    let name = file.display().to_string();
    WARNINGS.lock().unwrap().iter().filter(|w| w.contains(&name)).cloned().collect()
}

fn mode(file: &Path) -> u32 {
    std::fs::metadata(file).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_new_journal_and_its_wal_and_shm_files_are_private_whatever_the_umask() {
    capture_logs();
    let dir = TempDir::new("private");
    let file = dir.file();
    // The umask is the process's: this test binary runs its tests on
    // threads, so it is set once, wide open, for the whole binary (the
    // other test does not create files through it).
    // `umask` has no memory-safety preconditions.
    let old = unsafe { libc::umask(0o000) };
    let journal = SqliteJournal::open(&file).unwrap();
    unsafe { libc::umask(old) };
    // A durable append, so the -wal file has content and -shm is in use.
    let id = journal.next_id();
    block_on(journal.append(&Entry::new_raw(id, None, EntryKind::Begin, b""))).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let path = Path::new(&format!("{}{suffix}", file.display())).to_owned();
        assert!(path.exists(), "{} exists while the journal is open", path.display());
        assert_eq!(mode(&path), 0o600, "{} is private", path.display());
    }
    assert_eq!(warnings_about(&file), Vec::<String>::new(), "no warning for a file the journal made");
}

#[test]
fn an_existing_file_with_wider_permissions_is_used_as_it_is_with_a_warning() {
    capture_logs();
    let dir = TempDir::new("shared");
    let file = dir.file();
    drop(SqliteJournal::open(&file).unwrap());
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let journal = SqliteJournal::open(&file).unwrap();
    assert!(!journal.is_read_only());
    assert_eq!(mode(&file), 0o644, "the permissions are left as they are");
    let warnings = warnings_about(&file);
    assert_eq!(warnings.len(), 1, "one warning: {warnings:?}");
    assert!(warnings[0].contains("644"), "the warning gives the mode: {}", warnings[0]);
}
