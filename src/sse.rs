//! The SSE response a subscriber holds: its headers, and the body that drains the subscriber's
//! channel, joining every frame already queued into one chunk so they leave in one write.

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use actix_web::{
    HttpResponse,
    body::{BodySize, MessageBody},
    http::header::{self, ContentEncoding},
};
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use crate::metrics::Metrics;

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

/// The body of one subscriber's stream: `opening` first, then whatever the broadcaster
/// queues; it ends when the broadcaster drops the sender (shutdown, or too slow).
#[derive(Debug)]
pub struct SubscriberBody {
    opening: VecDeque<Bytes>,
    receiver: mpsc::Receiver<Bytes>,
    metrics: Arc<Metrics>,
}

impl SubscriberBody {
    pub fn new(
        opening: Vec<Bytes>,
        receiver: mpsc::Receiver<Bytes>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            opening: opening.into(),
            receiver,
            metrics,
        }
    }

    fn next_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(first) = self.opening.pop_front() {
            let opening = &mut self.opening;
            return Poll::Ready(Some(join(first, || opening.pop_front())));
        }
        let first = match self.receiver.poll_recv(cx) {
            Poll::Ready(Some(frame)) => frame,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        let receiver = &mut self.receiver;
        Poll::Ready(Some(join(first, || receiver.try_recv().ok())))
    }
}

/// Joins `first` with the frames `next` has ready, up to [`MAX_CHUNK_BYTES`]. A frame alone
/// goes out as it is, without a copy.
fn join(first: Bytes, mut next: impl FnMut() -> Option<Bytes>) -> Bytes {
    if first.len() >= MAX_CHUNK_BYTES {
        return first;
    }
    let Some(second) = next() else {
        return first;
    };
    let mut chunk = BytesMut::with_capacity((first.len() + second.len()) * 4);
    chunk.extend_from_slice(&first);
    chunk.extend_from_slice(&second);
    while chunk.len() < MAX_CHUNK_BYTES {
        match next() {
            Some(frame) => chunk.extend_from_slice(&frame),
            None => break,
        }
    }
    chunk.freeze()
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
            self.metrics.add_bytes_written(bytes.len());
        }
        chunk.map(|chunk| chunk.map(Ok))
    }
}
