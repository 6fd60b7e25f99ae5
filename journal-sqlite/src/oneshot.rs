//! A one-shot reply from the writer thread to an awaiting `append`, on any
//! executor (a `Mutex` and a `Waker`; no runtime dependency).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::SqliteJournalError;

type Reply<T> = Result<T, SqliteJournalError>;

struct Slot<T> {
    reply: Option<Reply<T>>,
    waker: Option<Waker>,
    /// The sender was dropped without replying (the writer thread
    /// panicked): the receiver reads `WriterGone`.
    closed: bool,
}

/// A new reply channel.
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Mutex::new(Slot { reply: None, waker: None, closed: false }));
    (Sender(Some(slot.clone())), Receiver(slot))
}

/// The writer's end: replies once.
pub(crate) struct Sender<T = ()>(Option<Arc<Mutex<Slot<T>>>>);

impl<T> Sender<T> {
    pub(crate) fn send(mut self, reply: Reply<T>) {
        if let Some(slot) = self.0.take() {
            finish(&slot, Some(reply));
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            finish(&slot, None);
        }
    }
}

fn finish<T>(slot: &Mutex<Slot<T>>, reply: Option<Reply<T>>) {
    // A poisoned lock only means a waker panicked while it was held; the
    // slot's data is still whole.
    let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
    match reply {
        Some(reply) => slot.reply = Some(reply),
        None => slot.closed = true,
    }
    let waker = slot.waker.take();
    drop(slot);
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// The awaiting end.
pub(crate) struct Receiver<T = ()>(Arc<Mutex<Slot<T>>>);

impl<T> Future for Receiver<T> {
    type Output = Reply<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply<T>> {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(reply) = slot.reply.take() {
            return Poll::Ready(reply);
        }
        if slot.closed {
            return Poll::Ready(Err(SqliteJournalError::WriterGone));
        }
        match &mut slot.waker {
            Some(waker) => waker.clone_from(cx.waker()),
            None => slot.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}
