//! The SSE response a subscriber holds: its headers, and the body that drains the subscriber's
//! channel, joining every frame already queued into one chunk so they leave in one write.

use std::{
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
    opening: Option<Bytes>,
    receiver: mpsc::Receiver<Bytes>,
    metrics: Arc<Metrics>,
}

impl SubscriberBody {
    pub fn new(opening: Bytes, receiver: mpsc::Receiver<Bytes>, metrics: Arc<Metrics>) -> Self {
        Self {
            opening: Some(opening).filter(|b| !b.is_empty()),
            receiver,
            metrics,
        }
    }

    fn next_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(opening) = self.opening.take() {
            return Poll::Ready(Some(opening));
        }
        let first = match self.receiver.poll_recv(cx) {
            Poll::Ready(Some(frame)) => frame,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        // One frame alone goes out as it is (no copy); several queued frames are joined.
        let Ok(second) = self.receiver.try_recv() else {
            return Poll::Ready(Some(first));
        };
        let mut chunk = BytesMut::with_capacity((first.len() + second.len()) * 4);
        chunk.extend_from_slice(&first);
        chunk.extend_from_slice(&second);
        while chunk.len() < MAX_CHUNK_BYTES {
            match self.receiver.try_recv() {
                Ok(frame) => chunk.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        Poll::Ready(Some(chunk.freeze()))
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
            self.metrics.add_bytes_written(bytes.len());
        }
        chunk.map(|chunk| chunk.map(Ok))
    }
}
