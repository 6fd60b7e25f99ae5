//! A TCP proxy in front of a test server that cuts the connection carrying
//! a transaction's `Committed` append, either right after the statement
//! was sent (the server runs and commits it, the client never hears back:
//! an ambiguous commit) or before it was forwarded (the commit never
//! reaches the server). Armed per commit: for the next one of any
//! transaction, or for one transaction's.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use transaction_manager::TransactionId;

/// The bytes of a `Bind` that appends a transaction-level `Committed`: the
/// step parameter (-1, an `int4`) followed by the kind (7, an `int2`), each
/// after its length, as tokio-postgres sends them (binary).
pub const COMMITTED_BIND: [u8; 14] = [0, 0, 0, 4, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 2, 0, 7];

/// The protocol's `Sync` message: the server commits the statement's
/// implicit transaction when it reads it.
const SYNC: [u8; 5] = [b'S', 0, 0, 0, 4];

/// Where a connection is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// After the statement and its `Sync` were forwarded and the server
    /// closed its side: the commit is known to be in the database.
    AfterSent,
    /// Before the bytes that carry the statement are forwarded: the commit
    /// never reaches the database.
    BeforeSent,
}

struct Armed {
    pattern: Vec<u8>,
    cut: Cut,
    ticket: u64,
}

#[derive(Default)]
struct Shared {
    armed: Mutex<Vec<Armed>>,
    /// Tickets whose connection was cut.
    cut: Mutex<Vec<u64>>,
    cuts: AtomicUsize,
    next: AtomicU64,
}

pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream` on
    /// 127.0.0.1.
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let shared_ = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                forward(client, server, shared_.clone());
            }
        });
        Proxy { port, shared }
    }

    /// Cuts the connection of the next `Committed` of any transaction.
    pub fn arm(&self, cut: Cut) -> u64 {
        self.arm_pattern(COMMITTED_BIND.to_vec(), cut)
    }

    /// Cuts the connection of `tx`'s `Committed`, appended by `owner`
    /// (the statement's first parameters: tx, owner, step, kind).
    pub fn arm_for(&self, tx: TransactionId, owner: &str, cut: Cut) -> u64 {
        let mut pattern = vec![0, 0, 0, 8];
        pattern.extend_from_slice(&(tx.get() as i64).to_be_bytes());
        pattern.extend_from_slice(&(owner.len() as i32).to_be_bytes());
        pattern.extend_from_slice(owner.as_bytes());
        pattern.extend_from_slice(&COMMITTED_BIND);
        self.arm_pattern(pattern, cut)
    }

    fn arm_pattern(&self, pattern: Vec<u8>, cut: Cut) -> u64 {
        let ticket = self.shared.next.fetch_add(1, Ordering::SeqCst);
        self.shared.armed.lock().unwrap().push(Armed { pattern, cut, ticket });
        ticket
    }

    /// Disarms `ticket`; whether its connection was cut.
    pub fn take(&self, ticket: u64) -> bool {
        self.shared.armed.lock().unwrap().retain(|a| a.ticket != ticket);
        let mut cut = self.shared.cut.lock().unwrap();
        let was = cut.iter().position(|t| *t == ticket);
        was.map(|at| cut.swap_remove(at)).is_some()
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }
}

/// The two directions of one connection, each on a thread.
fn forward(client: TcpStream, server: TcpStream, shared: Arc<Shared>) {
    // Set once the commit is on its way (or dropped): the server's answers
    // are no longer passed on; `ended`: the server closed.
    let swallow = Arc::new(AtomicBool::new(false));
    let ended = Arc::new(AtomicBool::new(false));
    let (swallow_, ended_) = (swallow.clone(), ended.clone());
    let (mut from_client, mut to_server) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let (mut from_server, mut to_client) = (server, client);
    std::thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        // Where the armed commit's `Bind` was seen, in this chunk.
        let mut commit_at: Option<usize> = None;
        let mut armed: Option<(Cut, u64)> = None;
        let cut_done = |ticket: u64| {
            shared.cut.lock().unwrap().push(ticket);
            shared.cuts.fetch_add(1, Ordering::SeqCst);
        };
        loop {
            let n = match from_client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if commit_at.is_none() {
                let mut list = shared.armed.lock().unwrap();
                let found = list.iter().enumerate().find_map(|(i, a)| {
                    let at = buf[..n].windows(a.pattern.len()).position(|w| w == a.pattern)?;
                    Some((i, at + a.pattern.len() - COMMITTED_BIND.len()))
                });
                if let Some((i, at)) = found {
                    let a = list.remove(i);
                    commit_at = Some(at);
                    armed = Some((a.cut, a.ticket));
                }
            } else {
                commit_at = Some(0);
            }
            if let Some((Cut::BeforeSent, ticket)) = armed {
                // Nothing of this chunk reaches the server.
                swallow.store(true, Ordering::SeqCst);
                let _ = to_server.shutdown(Shutdown::Both);
                let _ = from_client.shutdown(Shutdown::Both);
                cut_done(ticket);
                return;
            }
            let synced = commit_at.is_some_and(|at| buf[at..n].windows(SYNC.len()).any(|w| w == SYNC));
            if synced {
                swallow.store(true, Ordering::SeqCst);
            }
            if to_server.write_all(&buf[..n]).is_err() {
                break;
            }
            if synced {
                // The server reads the statement, commits it, answers (into
                // the void), reads the end of the stream and closes: only
                // then is the client cut, so the commit is known to have
                // reached the journal when the client sees the error.
                let _ = to_server.shutdown(Shutdown::Write);
                for _ in 0..1000 {
                    if ended.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                let _ = from_client.shutdown(Shutdown::Both);
                cut_done(armed.map_or(u64::MAX, |(_, t)| t));
                return;
            }
        }
        let _ = to_server.shutdown(Shutdown::Both);
        let _ = from_client.shutdown(Shutdown::Both);
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = match from_server.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if !swallow_.load(Ordering::SeqCst) && to_client.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        ended_.store(true, Ordering::SeqCst);
        if !swallow_.load(Ordering::SeqCst) {
            let _ = to_client.shutdown(Shutdown::Both);
        }
        let _ = from_server.shutdown(Shutdown::Both);
    });
}
