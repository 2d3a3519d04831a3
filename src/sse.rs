//! The SSE response a subscriber holds: its headers, and the body that drains the subscriber's
//! channel, joining every frame already queued into one chunk so they leave in one write.

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use crate::{
    metrics::Metrics,
    queue::{self, Receiver},
};
use actix_web::{
    HttpResponse,
    body::{BodySize, MessageBody},
    http::header::{self, ContentEncoding},
};
use bytes::Bytes;

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
    receiver: Receiver,
    metrics: Arc<Metrics>,
}

impl SubscriberBody {
    pub fn new(opening: Vec<Bytes>, receiver: Receiver, metrics: Arc<Metrics>) -> Self {
        Self {
            opening: opening.into(),
            receiver,
            metrics,
        }
    }

    fn next_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(chunk) = queue::take_chunk(&mut self.opening, MAX_CHUNK_BYTES) {
            return Poll::Ready(Some(chunk));
        }
        self.receiver.poll_drain(cx, MAX_CHUNK_BYTES)
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
