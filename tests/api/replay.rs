//! History and `Last-Event-ID` replay: resuming, the seam under load, the `reset` event.
