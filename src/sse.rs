//! The SSE response a subscriber holds: its headers, and the body that drains the subscriber's
//! channel, joining every frame already queued into one chunk so they leave in one write, until
//! the channel closes or the subscriber's token expires.

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use crate::{
    client::ClientHold,
    metrics::Metrics,
    queue::{self, Receiver},
};
use actix_web::{
    HttpResponse,
    body::{BodySize, MessageBody},
    http::header::{self, ContentEncoding},
};
use bytes::Bytes;
use tokio::time::{Instant, Sleep};

/// Most bytes joined into one chunk; past this the dispatcher flushes anyway.
const MAX_CHUNK_BYTES: usize = 64 * 1024;

/// Starts a `text/event-stream` response. Compression is off (it would buffer events) and
/// `X-Accel-Buffering: no` asks nginx-style proxies not to buffer either. CORS headers come
/// from the app's middleware.
pub fn response() -> actix_web::HttpResponseBuilder {
    let mut builder = HttpResponse::Ok();
    builder
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .insert_header(ContentEncoding::Identity);
    builder
}

/// The last frame of a stream whose token expired: a comment, ignored by `EventSource` but
/// visible to someone reading the stream with curl.
const EXPIRED: &[u8] = b": token expired\n\n";

/// The body of one subscriber's stream: `opening` first, then whatever the broadcaster
/// queues; it ends when the broadcaster drops the sender (shutdown, or too slow), or at the
/// deadline, when the subscriber's token expires.
#[derive(Debug)]
pub struct SubscriberBody {
    opening: VecDeque<Bytes>,
    /// `None` once the deadline passed: dropping it closes the queue, and the broadcaster
    /// prunes this subscriber at once (the queue tells it on drop).
    receiver: Option<Receiver>,
    /// Boxed so that a stream without a deadline (anonymous, or a token without `exp`) pays
    /// one pointer for it, not a timer.
    deadline: Option<Pin<Box<Sleep>>>,
    metrics: Arc<Metrics>,
    /// The subscriber's share of its client's limits, given back when the body drops.
    client: Option<ClientHold>,
}

impl SubscriberBody {
    /// A stream that ends at `deadline` if there is one. Events still queued then are not
    /// written: they may have been fanned out after the token expired, and the browser's
    /// reconnect (with a fresh token and `Last-Event-ID`) replays them from the history.
    ///
    /// No `retry:` field is sent at the end: it would stay the `EventSource`'s delay for every
    /// later reconnect, overriding the one publishers set, and the browser's own delay (about
    /// 3 s) is what gives the page time to renew its cookie.
    pub fn new(
        opening: Vec<Bytes>,
        receiver: Receiver,
        metrics: Arc<Metrics>,
        deadline: Option<Instant>,
    ) -> Self {
        Self {
            opening: opening.into(),
            receiver: Some(receiver),
            deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))),
            metrics,
            client: None,
        }
    }

    /// The body, holding `hold` until the stream ends.
    pub fn holding(mut self, hold: ClientHold) -> Self {
        self.client = Some(hold);
        self
    }

    fn next_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(deadline) = &mut self.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            self.deadline = None;
            self.receiver = None;
            self.opening = VecDeque::new();
            log::debug!("stream ended: the subscriber's token expired");
            return Poll::Ready(Some(Bytes::from_static(EXPIRED)));
        }
        if let Some(chunk) = queue::take_chunk(&mut self.opening, MAX_CHUNK_BYTES) {
            if self.opening.is_empty() {
                // A replay is written once: its slots (one per event replayed, up to the
                // whole history) are not needed for the rest of the stream.
                self.opening = VecDeque::new();
            }
            return Poll::Ready(Some(chunk));
        }
        match &mut self.receiver {
            Some(receiver) => receiver.poll_drain(cx, MAX_CHUNK_BYTES),
            None => Poll::Ready(None),
        }
    }
}

impl MessageBody for SubscriberBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let chunk = self.next_chunk(cx);
        if let Poll::Ready(Some(bytes)) = &chunk {
            self.metrics.add_stream_chunk(bytes.len());
        }
        chunk.map(|chunk| chunk.map(Ok))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::task::noop_waker;

    use super::*;

    /// Once a long replay is written, the body keeps no room for it.
    #[test]
    fn written_replay_leaves_no_room_behind() {
        let (_sender, receiver) = queue::queue(8);
        let replay = vec![Bytes::from(vec![b'x'; 1024]); 500];
        let mut body = SubscriberBody::new(replay, receiver, Metrics::new(), None);
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut written = 0;
        while let Poll::Ready(Some(Ok(chunk))) = Pin::new(&mut body).poll_next(&mut cx) {
            written += chunk.len();
        }
        assert_eq!(written, 500 * 1024);
        assert_eq!(body.opening.capacity(), 0);
    }
}
