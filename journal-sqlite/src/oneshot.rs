//! A one-shot reply from the writer thread to an awaiting `append`, on any
//! executor (a `Mutex` and a `Waker`; no runtime dependency).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::SqliteJournalError;

type Reply = Result<(), SqliteJournalError>;

#[derive(Default)]
struct Slot {
    reply: Option<Reply>,
    waker: Option<Waker>,
    /// The sender was dropped without replying (the writer thread
    /// panicked): the receiver reads `WriterGone`.
    closed: bool,
}

/// A new reply channel.
pub(crate) fn channel() -> (Sender, Receiver) {
    let slot = Arc::new(Mutex::new(Slot::default()));
    (Sender(Some(slot.clone())), Receiver(slot))
}

/// The writer's end: replies once.
pub(crate) struct Sender(Option<Arc<Mutex<Slot>>>);

impl Sender {
    pub(crate) fn send(mut self, reply: Reply) {
        if let Some(slot) = self.0.take() {
            finish(&slot, Some(reply));
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            finish(&slot, None);
        }
    }
}

fn finish(slot: &Mutex<Slot>, reply: Option<Reply>) {
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
pub(crate) struct Receiver(Arc<Mutex<Slot>>);

impl Future for Receiver {
    type Output = Reply;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
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
