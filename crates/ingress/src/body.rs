//! Wrappers that add the bytes streaming through to a pod's counters, so metering sees traffic
//! without the proxy ever buffering: [`CountingBody`] for HTTP bodies, [`CountingIo`] for
//! upgraded connections.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::activity::{Counters, InFlight};

/// Which of a pod's counters a body feeds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Direction {
    /// Request body, towards the pod.
    Ingress,
    /// Response body, from the pod.
    Egress,
}

fn counter(counters: &Counters, direction: Direction) -> &AtomicU64 {
    match direction {
        Direction::Ingress => &counters.ingress,
        Direction::Egress => &counters.egress,
    }
}

/// Wraps `B`, counting data bytes into one of a pod's counters.
#[derive(Debug)]
pub(crate) struct CountingBody<B> {
    inner: B,
    counters: Arc<Counters>,
    direction: Direction,
    /// The request stays in flight until its response body is sent (or dropped).
    _in_flight: Option<InFlight>,
}

impl<B> CountingBody<B> {
    pub(crate) fn new(inner: B, counters: Arc<Counters>, direction: Direction) -> Self {
        Self { inner, counters, direction, _in_flight: None }
    }

    /// Keeps `in_flight` counted until this body is done with.
    pub(crate) fn holding(mut self, in_flight: InFlight) -> Self {
        self._in_flight = Some(in_flight);
        self
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
            counter(&self.counters, self.direction).fetch_add(data.len() as u64, Ordering::Relaxed);
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

/// Wraps one side of a spliced connection, counting the bytes read from it as they pass (not
/// at close: a WebSocket may stay open for days across many billing samples).
#[derive(Debug)]
pub(crate) struct CountingIo<T> {
    inner: T,
    counters: Arc<Counters>,
    direction: Direction,
}

impl<T> CountingIo<T> {
    /// `direction` is where the bytes read from `inner` go: `Ingress` for the client's side.
    pub(crate) fn new(inner: T, counters: Arc<Counters>, direction: Direction) -> Self {
        Self { inner, counters, direction }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CountingIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let read = buf.filled().len().saturating_sub(before);
            counter(&self.counters, self.direction).fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CountingIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
