//! A body wrapper that adds the bytes of each data frame to a pod's counter as it streams
//! through, so metering sees traffic without the proxy ever buffering a body.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::routes::Counters;

/// Which of a pod's counters a body feeds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Direction {
    /// Request body, towards the pod.
    Ingress,
    /// Response body, from the pod.
    Egress,
}

/// Wraps `B`, counting data bytes into one of a pod's counters.
#[derive(Debug)]
pub(crate) struct CountingBody<B> {
    inner: B,
    counters: Arc<Counters>,
    direction: Direction,
}

impl<B> CountingBody<B> {
    pub(crate) fn new(inner: B, counters: Arc<Counters>, direction: Direction) -> Self {
        Self { inner, counters, direction }
    }

    fn counter(&self) -> &AtomicU64 {
        match self.direction {
            Direction::Ingress => &self.counters.ingress,
            Direction::Egress => &self.counters.egress,
        }
    }
}

impl<B> Body for CountingBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.counter().fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
