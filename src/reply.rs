//! Replies from the broadcaster, woken on the waiting worker's own thread so a publisher's
//! answer goes ahead of the subscriber writes queued on that worker.
//!
//! A worker runs its tasks from two queues: tasks woken on its own thread (socket readiness
//! among them) and, checked only every 31st task or when the first is empty, tasks woken from
//! other threads. The broadcaster wakes subscriber bodies and publish replies from its thread,
//! so a publish reply used to wait behind every body woken before it: a whole sweep of
//! subscriber writes per publish. That wait bounds how many events a sweep carries to about the
//! number of publishes in flight. Here the broadcaster's wake is handed to a small task on the
//! worker through a socket pair, which the worker notices with its own socket readiness, and
//! that task wakes the reply from the worker's thread.

use std::{
    cell::RefCell,
    future::Future,
    io,
    os::unix::net::UnixDatagram as StdDatagram,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
    thread::{self, ThreadId},
};

use actix::Arbiter;
use tokio::net::UnixDatagram;

/// Wakers waiting to be woken on one worker thread, and the signal that tells its task.
#[derive(Debug)]
struct Relay {
    owner: ThreadId,
    wakers: Mutex<Vec<Waker>>,
    signal: StdDatagram,
    /// Cleared when the task ends with its runtime; wakes are then direct.
    running: AtomicBool,
}

thread_local! {
    /// This thread's relay, started on first use, and again if its runtime was replaced.
    static RELAY: RefCell<Option<Arc<Relay>>> = const { RefCell::new(None) };
}

impl Relay {
    /// The current worker's relay; `None` outside an actix arbiter (replies are then woken
    /// directly).
    fn current() -> Option<Arc<Self>> {
        RELAY.with(|cell| {
            let mut slot = cell.borrow_mut();
            if let Some(relay) = slot.as_ref().filter(|r| r.running.load(Ordering::Acquire)) {
                return Some(relay.clone());
            }
            let arbiter = Arbiter::try_current()?;
            match Self::start(&arbiter) {
                Ok(relay) => {
                    *slot = Some(relay.clone());
                    Some(relay)
                }
                Err(error) => {
                    log::warn!("reply relay not started, replies are woken directly: {error}");
                    None
                }
            }
        })
    }

    fn start(arbiter: &actix::ArbiterHandle) -> io::Result<Arc<Self>> {
        let (signal, listen) = StdDatagram::pair()?;
        signal.set_nonblocking(true)?;
        listen.set_nonblocking(true)?;
        let listen = UnixDatagram::from_std(listen)?;
        let relay = Arc::new(Self {
            owner: thread::current().id(),
            wakers: Mutex::new(Vec::new()),
            signal,
            running: AtomicBool::new(true),
        });
        if !arbiter.spawn(relay.clone().run(listen)) {
            return Err(io::Error::other("the arbiter is stopping"));
        }
        Ok(relay)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Waker>> {
        // Each critical section is one push or one swap: a poisoned lock is still consistent.
        self.wakers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wake(&self, waker: Waker) {
        if thread::current().id() == self.owner || !self.running.load(Ordering::Acquire) {
            waker.wake();
            return;
        }
        let first = {
            let mut wakers = self.lock();
            wakers.push(waker);
            wakers.len() == 1
        };
        if first {
            // A full socket buffer means signals are already pending: nothing is lost.
            let _ = self.signal.send(&[1]);
        }
    }

    /// The relay task: runs for the worker's life.
    async fn run(self: Arc<Self>, listen: UnixDatagram) {
        /// Marks the relay stopped however the task ends, and wakes what it still held.
        struct Stopped<'a>(&'a Relay);
        impl Drop for Stopped<'_> {
            fn drop(&mut self) {
                self.0.running.store(false, Ordering::Release);
                std::mem::take(&mut *self.0.lock())
                    .into_iter()
                    .for_each(Waker::wake);
            }
        }
        let _stopped = Stopped(&self);
        let mut batch = Vec::new();
        let mut scratch = [0u8; 64];
        loop {
            if listen.readable().await.is_err() {
                return;
            }
            while listen.try_recv(&mut scratch).is_ok() {}
            std::mem::swap(&mut *self.lock(), &mut batch);
            batch.drain(..).for_each(Waker::wake);
        }
    }
}

/// The waker handed to the broadcaster's reply channel.
struct Relayed {
    relay: Arc<Relay>,
    waker: Waker,
}

impl Wake for Relayed {
    fn wake(self: Arc<Self>) {
        self.relay.wake(self.waker.clone());
    }
}

/// Awaits `reply` with its wake relayed to this worker's thread.
pub fn on_worker<F: Future + Unpin>(reply: F) -> OnWorker<F> {
    OnWorker {
        reply,
        relay: Relay::current(),
    }
}

/// See [`on_worker`].
pub struct OnWorker<F> {
    reply: F,
    relay: Option<Arc<Relay>>,
}

impl<F> std::fmt::Debug for OnWorker<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnWorker")
            .field("relayed", &self.relay.is_some())
            .finish_non_exhaustive()
    }
}

impl<F: Future + Unpin> Future for OnWorker<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(relay) = self.relay.clone() else {
            return Pin::new(&mut self.reply).poll(cx);
        };
        let waker = Waker::from(Arc::new(Relayed {
            relay,
            waker: cx.waker().clone(),
        }));
        Pin::new(&mut self.reply).poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A reply woken from another thread completes through the relay, and still does in a
    /// second runtime on the same thread, after the first one's relay task died with it.
    #[test]
    fn replies_woken_from_another_thread_complete() {
        for round in 0..2 {
            actix::System::new().block_on(async move {
                let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
                let sender = thread::spawn(move || {
                    thread::sleep(Duration::from_millis(20));
                    tx.send(round).expect("receiver waiting");
                });
                // Generous: the wake-up comes in ~20 ms, but a starved CI machine may not
                // schedule the sender thread for seconds. A lost wake-up still fails, after 30 s.
                let reply = tokio::time::timeout(Duration::from_secs(30), on_worker(rx)).await;
                assert_eq!(reply.expect("woken within 30 s").expect("sent"), round);
                sender.join().expect("sender thread");
                let relayed = RELAY.with(|cell| {
                    cell.borrow()
                        .as_ref()
                        .is_some_and(|relay| relay.running.load(Ordering::Acquire))
                });
                assert!(
                    relayed,
                    "round {round}: the reply went through a running relay"
                );
            });
        }
    }
}
