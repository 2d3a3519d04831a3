//! A subscriber's bounded frame queue: the broadcaster pushes without ever waiting, and the
//! response body takes everything queued at once, so frames that waited together leave in one
//! write.
//!
//! Hand-written instead of `tokio::sync::mpsc` because an idle subscriber is the common case:
//! this queue allocates nothing until a frame arrives (about 100 bytes per subscriber, against
//! tokio's 1.5 KiB channel with its first 32-slot block), and the body drains it under one
//! lock instead of one `try_recv` per frame.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The subscriber holds `capacity` frames already: it is too slow.
    Full,
    /// The subscriber's stream is gone.
    Closed,
}

#[derive(Debug)]
struct State {
    frames: VecDeque<Bytes>,
    sender_alive: bool,
    receiver_alive: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// The body's task, woken when a frame arrives or the sender goes away.
    waker: AtomicWaker,
    capacity: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves the queue consistent (every critical section
        // is a single push or drain), so a poisoned lock is still safe to use.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Creates a queue holding at most `capacity` frames.
pub fn queue(capacity: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            frames: VecDeque::new(),
            sender_alive: true,
            receiver_alive: true,
        }),
        waker: AtomicWaker::new(),
        capacity,
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver {
            shared,
            on_close: None,
            round: 0,
        },
    )
}

/// The broadcaster's end. Dropping it ends the stream once the queued frames are written.
#[derive(Debug)]
pub struct Sender {
    shared: Arc<Shared>,
}

impl Sender {
    /// Queues `frame` without waiting, and wakes the body if it may be asleep.
    pub fn try_push(&self, frame: Bytes) -> Result<(), PushError> {
        if self.push_quietly(frame)? {
            self.wake();
        }
        Ok(())
    }

    /// Queues `frame` without waiting and without waking the body. Returns whether the queue
    /// was empty: then the body may be asleep, and the caller must [`wake`](Self::wake) it once
    /// it has queued everything it has for this round (one wake for many frames). A push onto
    /// a queue that already held frames needs no wake: whoever made it non-empty owes one.
    pub fn push_quietly(&self, frame: Bytes) -> Result<bool, PushError> {
        let mut state = self.shared.lock();
        if !state.receiver_alive {
            return Err(PushError::Closed);
        }
        if state.frames.len() >= self.shared.capacity {
            return Err(PushError::Full);
        }
        let was_empty = state.frames.is_empty();
        state.frames.push_back(frame);
        Ok(was_empty)
    }

    /// Queues a keep-alive unless frames are already waiting (they keep the connection alive
    /// as well). So keep-alives never pile up behind a body still busy writing a long replay,
    /// and never count against the buffer: only events make a subscriber too slow.
    pub fn push_keep_alive(&self, frame: Bytes) -> Result<(), PushError> {
        let mut state = self.shared.lock();
        if !state.receiver_alive {
            return Err(PushError::Closed);
        }
        if state.frames.is_empty() {
            state.frames.push_back(frame);
            drop(state);
            self.wake();
        }
        Ok(())
    }

    /// Whether the receiver is gone (its stream ended).
    pub fn is_closed(&self) -> bool {
        !self.shared.lock().receiver_alive
    }

    /// Wakes the body so it writes what is queued.
    pub fn wake(&self) {
        self.shared.waker.wake();
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.shared.lock().sender_alive = false;
        self.shared.waker.wake();
    }
}

/// The response body's end.
pub struct Receiver {
    shared: Arc<Shared>,
    /// Called once when the receiver is dropped (the connection closed or the body ended), so
    /// the broadcaster hears of it at once instead of at its next push or heartbeat.
    on_close: Option<Box<dyn FnOnce() + Send>>,
    /// Frames drained since the queue was last found empty: the size of the last round.
    round: usize,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("shared", &self.shared)
            .field("on_close", &self.on_close.is_some())
            .finish()
    }
}

impl Receiver {
    /// Calls `notify` when this receiver is dropped.
    pub fn on_close(&mut self, notify: impl FnOnce() + Send + 'static) {
        self.on_close = Some(Box::new(notify));
    }

    /// Everything queued, joined into one chunk of at most about `max_bytes` (a single frame
    /// is returned as it is, without a copy); `None` once the sender is gone and the queue is
    /// empty.
    pub fn poll_drain(&mut self, cx: &mut Context<'_>, max_bytes: usize) -> Poll<Option<Bytes>> {
        if let Some(ready) = self.try_drain(max_bytes) {
            return Poll::Ready(ready);
        }
        self.shared.waker.register(cx.waker());
        // A push between the first look and the registration would otherwise go unnoticed.
        match self.try_drain(max_bytes) {
            Some(ready) => Poll::Ready(ready),
            None => Poll::Pending,
        }
    }

    /// `Some(Some(chunk))` when frames are queued, `Some(None)` at the end, `None` when empty.
    fn try_drain(&mut self, max_bytes: usize) -> Option<Option<Bytes>> {
        let mut state = self.shared.lock();
        let queued = state.frames.len();
        let Some(chunk) = take_chunk(&mut state.frames, max_bytes) else {
            return (!state.sender_alive).then_some(None);
        };
        self.round += queued - state.frames.len();
        if state.frames.is_empty() {
            release_burst_room(&mut state.frames, self.round);
            self.round = 0;
        }
        Some(Some(chunk))
    }
}

/// Most frame slots a drained queue keeps (32 bytes each): a subscriber that gets up to this
/// many frames per round reuses its buffer and allocates nothing per event.
///
/// A burst grows the buffer to hold everything queued in one round (up to the subscriber
/// buffer, 1,024 frames by default: 32 KiB); once drained, a buffer above this is shrunk back,
/// so a subscriber that goes quiet after a burst holds what a steady one does. Only room well
/// beyond the last round's ([`SPARE_ROOM_FACTOR`] times it) is given back, down to that round
/// (at least this many frames): a subscriber that gets a hundred frames every round under load
/// keeps its room, and the fan-out does not reallocate it round after round.
pub const RETAINED_FRAMES: usize = 8;

/// How many times its last round a drained queue may keep before it gives room back.
const SPARE_ROOM_FACTOR: usize = 4;

/// Gives back what a burst made the drained queue grow past its last round of `round` frames
/// (the frames drained since it was last empty).
fn release_burst_room(frames: &mut VecDeque<Bytes>, round: usize) {
    let keep = round.max(RETAINED_FRAMES);
    if frames.is_empty() && frames.capacity() > keep.saturating_mul(SPARE_ROOM_FACTOR) {
        frames.shrink_to(keep);
    }
}

/// Takes the frames at the front of `frames`, joined into one chunk of about `max_bytes` at
/// most (sized once: one allocation, one copy per frame). A frame alone is returned as it is.
pub fn take_chunk(frames: &mut VecDeque<Bytes>, max_bytes: usize) -> Option<Bytes> {
    let first = frames.pop_front()?;
    if frames.is_empty() || first.len() >= max_bytes {
        return Some(first);
    }
    let mut size = first.len();
    let mut count = 0;
    for frame in frames.iter() {
        if size >= max_bytes {
            break;
        }
        size += frame.len();
        count += 1;
    }
    let mut chunk = BytesMut::with_capacity(size);
    chunk.extend_from_slice(&first);
    for frame in frames.drain(..count) {
        chunk.extend_from_slice(&frame);
    }
    Some(chunk.freeze())
}

impl Drop for Receiver {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.receiver_alive = false;
            // Queued frames can never be written now; free them at once.
            state.frames = VecDeque::new();
        }
        if let Some(notify) = self.on_close.take() {
            notify();
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::task::noop_waker;

    use super::*;

    fn drain(receiver: &mut Receiver, max_bytes: usize) -> Poll<Option<Bytes>> {
        let waker = noop_waker();
        receiver.poll_drain(&mut Context::from_waker(&waker), max_bytes)
    }

    /// Keep-alives do not pile up behind undrained frames, so they never fill the buffer;
    /// a closed receiver is still reported.
    #[test]
    fn keep_alives_never_fill_the_buffer() {
        let (sender, mut receiver) = queue(2);
        for _ in 0..10 {
            sender
                .push_keep_alive(Bytes::from_static(b": k\n\n"))
                .expect("never full");
        }
        sender
            .try_push(Bytes::from_static(b"e\n\n"))
            .expect("room for an event");
        assert_eq!(
            drain(&mut receiver, 1024),
            Poll::Ready(Some(Bytes::from_static(b": k\n\ne\n\n")))
        );
        drop(receiver);
        assert_eq!(
            sender.push_keep_alive(Bytes::from_static(b": k\n\n")),
            Err(PushError::Closed)
        );
    }

    /// Frames queued together come out as one chunk, in order; a lone frame as it is.
    #[test]
    fn drain_joins_queued_frames_in_order() {
        let (sender, mut receiver) = queue(8);
        assert_eq!(drain(&mut receiver, 1024), Poll::Pending);
        sender.try_push(Bytes::from_static(b"a")).expect("room");
        assert_eq!(
            drain(&mut receiver, 1024),
            Poll::Ready(Some(Bytes::from_static(b"a")))
        );
        for frame in [&b"b"[..], b"c", b"d"] {
            sender
                .try_push(Bytes::copy_from_slice(frame))
                .expect("room");
        }
        assert_eq!(
            drain(&mut receiver, 1024),
            Poll::Ready(Some(Bytes::from_static(b"bcd")))
        );
    }

    /// A chunk stops growing at the byte limit; the rest comes next.
    #[test]
    fn drain_respects_the_byte_limit() {
        let (sender, mut receiver) = queue(8);
        for _ in 0..4 {
            sender.try_push(Bytes::from_static(b"xxxx")).expect("room");
        }
        assert_eq!(
            drain(&mut receiver, 8),
            Poll::Ready(Some(Bytes::from_static(b"xxxxxxxx")))
        );
        assert_eq!(
            drain(&mut receiver, 8),
            Poll::Ready(Some(Bytes::from_static(b"xxxxxxxx")))
        );
    }

    /// A full queue refuses more; a dropped receiver makes pushes fail as closed.
    #[test]
    fn full_and_closed_are_reported() {
        let (sender, receiver) = queue(2);
        sender.try_push(Bytes::new()).expect("room");
        sender.try_push(Bytes::new()).expect("room");
        assert_eq!(sender.try_push(Bytes::new()), Err(PushError::Full));
        drop(receiver);
        assert_eq!(sender.try_push(Bytes::new()), Err(PushError::Closed));
    }

    /// A quiet push reports whether the queue was empty (the body then needs a wake), and
    /// wakes nobody until asked.
    #[test]
    fn quiet_push_reports_when_a_wake_is_owed() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::{Wake, Waker};

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let (sender, mut receiver) = queue(8);
        let mut cx = Context::from_waker(&waker);
        assert_eq!(receiver.poll_drain(&mut cx, 1024), Poll::Pending);

        assert_eq!(sender.push_quietly(Bytes::from_static(b"a")), Ok(true));
        assert_eq!(sender.push_quietly(Bytes::from_static(b"b")), Ok(false));
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            0,
            "quiet pushes wake nobody"
        );
        sender.wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            receiver.poll_drain(&mut cx, 1024),
            Poll::Ready(Some(Bytes::from_static(b"ab")))
        );
        assert_eq!(receiver.poll_drain(&mut cx, 1024), Poll::Pending);
        assert_eq!(sender.push_quietly(Bytes::from_static(b"c")), Ok(true));
    }

    fn capacity(receiver: &Receiver) -> usize {
        receiver.shared.lock().frames.capacity()
    }

    /// Once a burst is drained and a quiet round follows (a keep-alive), the queue keeps about
    /// the room a steady subscriber uses, whatever the size of the burst (1,000 frames used to
    /// keep 1,024 slots).
    #[test]
    fn drained_queue_gives_back_what_a_burst_grew() {
        for burst in [9, 40, 64, 1000] {
            let (sender, mut receiver) = queue(1024);
            for _ in 0..burst {
                sender
                    .try_push(Bytes::from_static(b"data: x\n\n"))
                    .expect("room");
            }
            assert!(capacity(&receiver) >= burst);
            // Several chunks, as a burst larger than one write leaves; then a quiet round.
            while let Poll::Ready(Some(_)) = drain(&mut receiver, 64) {}
            sender
                .push_keep_alive(Bytes::from_static(b": k\n\n"))
                .expect("open");
            assert!(matches!(drain(&mut receiver, 64), Poll::Ready(Some(_))));
            assert!(
                capacity(&receiver) <= RETAINED_FRAMES * SPARE_ROOM_FACTOR,
                "after a burst of {burst} the queue keeps {} slots",
                capacity(&receiver)
            );
        }
    }

    /// A subscriber that gets up to `RETAINED_FRAMES` frames per round never reallocates its
    /// queue (a `VecDeque` reallocates only when its capacity changes).
    #[test]
    fn steady_rounds_reuse_the_queue() {
        let (sender, mut receiver) = queue(1024);
        for _ in 0..1000 {
            sender
                .try_push(Bytes::from_static(b"data: x\n\n"))
                .expect("room");
        }
        while let Poll::Ready(Some(_)) = drain(&mut receiver, 64 * 1024) {}
        // The first quiet round gives the burst's room back.
        sender
            .push_keep_alive(Bytes::from_static(b": k\n\n"))
            .expect("open");
        assert!(matches!(drain(&mut receiver, 64), Poll::Ready(Some(_))));
        let kept = capacity(&receiver);
        assert!(kept <= RETAINED_FRAMES);
        for round in 0..100 {
            for _ in 0..=round % RETAINED_FRAMES {
                sender
                    .try_push(Bytes::from_static(b"data: x\n\n"))
                    .expect("room");
            }
            assert!(matches!(
                drain(&mut receiver, 64 * 1024),
                Poll::Ready(Some(_))
            ));
            assert_eq!(capacity(&receiver), kept, "round {round} reallocated");
        }
    }

    /// A subscriber that gets a hundred frames every round (fan-out under load) keeps the room
    /// they take: the fan-out does not regrow its queue round after round.
    #[test]
    fn busy_rounds_keep_their_room() {
        let (sender, mut receiver) = queue(1024);
        let round = |sender: &Sender| {
            for _ in 0..100 {
                sender
                    .try_push(Bytes::from_static(b"data: x\n\n"))
                    .expect("room");
            }
        };
        round(&sender);
        while let Poll::Ready(Some(_)) = drain(&mut receiver, 64 * 1024) {}
        let kept = capacity(&receiver);
        for n in 0..50 {
            round(&sender);
            while let Poll::Ready(Some(_)) = drain(&mut receiver, 64 * 1024) {}
            assert_eq!(capacity(&receiver), kept, "round {n} reallocated");
        }
        assert!(kept >= 100);
    }

    /// After the sender is dropped, queued frames are still drained, then the end.
    #[test]
    fn dropped_sender_ends_after_queued_frames() {
        let (sender, mut receiver) = queue(4);
        sender.try_push(Bytes::from_static(b"last")).expect("room");
        drop(sender);
        assert_eq!(
            drain(&mut receiver, 1024),
            Poll::Ready(Some(Bytes::from_static(b"last")))
        );
        assert_eq!(drain(&mut receiver, 1024), Poll::Ready(None));
    }
}
