//! The logs protocol (`/tpod/logs/1`), the one protocol that is not request-response: the client
//! sends one `SignedRequest` on a fresh stream and the provider answers with a sequence of
//! `LogChunk`s, for as long as the pod's logs are followed.
//!
//! Frame by frame (see `logs.proto`): the provider first sends an empty chunk once the handler has
//! accepted the request, or a single chunk with `error` and `end` if it refused (or the request
//! was malformed, oversized or of another version, which the handler never sees); then log data in
//! chunks of at most [`MAX_LOG_CHUNK_BYTES`]; then a chunk with `end`. The client sends nothing
//! after its request, so anything it does to its side (close, reset, drop) means it is gone and
//! the provider stops producing.

use std::{sync::Arc, time::Duration};

use futures::{
    AsyncReadExt, AsyncWriteExt, Stream, StreamExt,
    io::{ReadHalf, WriteHalf},
};
use libp2p::PeerId;
use tokio::sync::Semaphore;
use tpod_wire::{
    ErrorReply, LOGS_PROTOCOL, VERSION, Validate, WireError,
    codec::LOGS_MAX_BYTES,
    codes,
    limits::MAX_LOG_CHUNK_BYTES,
    pb::{self, LogChunk, SignedRequest},
    read_message, write_message,
};

use crate::{Handler, NetError, RequestErrorKind};

/// Log streams a provider serves at once; beyond this, requests are refused (code 429) rather
/// than letting one publisher hold unbounded tasks and buffers.
pub(crate) const MAX_LOG_STREAMS: usize = 256;

/// A chunk carrying `error`, ending the stream.
fn error_chunk(code: u32, message: impl Into<String>) -> LogChunk {
    LogChunk::refusal(pb::Error { code, message: message.into() })
}

/// Splits a handler's chunk into pieces of at most [`MAX_LOG_CHUNK_BYTES`] of data, so a handler
/// need not know the limit; `end` and `error` stay on the last piece.
fn split(chunk: LogChunk) -> Vec<LogChunk> {
    if chunk.data.len() <= MAX_LOG_CHUNK_BYTES {
        return vec![LogChunk { version: VERSION, ..chunk }];
    }
    let LogChunk { container, data, timestamp_unix_nanos, end, error, .. } = chunk;
    let pieces = data.chunks(MAX_LOG_CHUNK_BYTES).count();
    data.chunks(MAX_LOG_CHUNK_BYTES)
        .enumerate()
        .map(|(i, piece)| {
            let last = i + 1 == pieces;
            LogChunk {
                version: VERSION,
                container: container.clone(),
                data: piece.to_vec(),
                timestamp_unix_nanos,
                end: end && last,
                error: if last { error.clone() } else { None },
            }
        })
        .collect()
}

/// Provider side of the logs protocol: state shared by the streams of one provider.
pub(crate) struct LogServer<H> {
    pub(crate) handler: Arc<H>,
    pub(crate) timeout: Duration,
    pub(crate) slots: Arc<Semaphore>,
}

impl<H: Handler> LogServer<H> {
    /// Serves one inbound logs stream in its own task.
    pub(crate) fn spawn(&self, peer: PeerId, stream: libp2p::Stream) {
        let (handler, timeout, slots) = (self.handler.clone(), self.timeout, self.slots.clone());
        tokio::spawn(async move {
            let (reader, writer) = stream.split();
            let mut serving = Serving { peer, reader, writer, timeout };
            // Held for the life of the stream.
            let Ok(_slot) = slots.try_acquire_owned() else {
                tracing::debug!(%peer, "too many log streams, refusing one");
                serving.refuse(error_chunk(codes::BUSY, "too many log streams open, try again later")).await;
                return;
            };
            serving.run(&*handler).await;
        });
    }
}

/// One inbound logs stream.
struct Serving {
    peer: PeerId,
    reader: ReadHalf<libp2p::Stream>,
    writer: WriteHalf<libp2p::Stream>,
    timeout: Duration,
}

impl Serving {
    async fn run<H: Handler>(&mut self, handler: &H) {
        let peer = self.peer;
        // A malformed, oversized or invalid request is answered with why (an oversized one
        // without reading its body); a broken or silent stream has no one to answer.
        let request = match tokio::time::timeout(self.timeout, self.read_request()).await {
            Ok(Ok(request)) => request,
            Ok(Err(WireError::Io(error))) => return tracing::debug!(%peer, %error, "logs stream failed"),
            Ok(Err(error)) => return self.refuse(LogChunk::refusal(error.to_error())).await,
            Err(_) => return tracing::debug!(%peer, "logs request not received in time"),
        };
        let mut chunks = match tokio::time::timeout(self.timeout, handler.logs(peer, request)).await {
            Ok(Ok(chunks)) => chunks,
            Ok(Err(error)) => return self.refuse(LogChunk::refusal(error)).await,
            Err(_) => return self.refuse(error_chunk(codes::TIMEOUT, "the provider did not answer in time")).await,
        };
        // The empty acknowledgement tells the client the request was accepted, so that it need
        // not wait for the first log line (which may be far off when following) to know.
        if self.send(LogChunk { version: VERSION, ..Default::default() }).await.is_err() {
            return;
        }
        loop {
            let next = tokio::select! {
                next = chunks.next() => next,
                // The client sends nothing after its request: any read completing means it has
                // closed or reset its side. Returning drops `chunks`, which stops the producer.
                () = client_gone(&mut self.reader) => return tracing::debug!(%peer, "log stream closed by the client"),
            };
            let Some(chunk) = next else {
                let end = LogChunk { version: VERSION, end: true, ..Default::default() };
                if self.send(end).await.is_ok() {
                    let _ = self.writer.close().await;
                }
                return;
            };
            for piece in split(chunk) {
                let last = piece.end || piece.error.is_some();
                let piece = match piece.validate() {
                    Ok(()) => LogChunk { end: last, ..piece },
                    Err(error) => {
                        tracing::warn!(%peer, %error, "handler produced an invalid log chunk");
                        error_chunk(codes::INTERNAL, format!("invalid log chunk: {error}"))
                    }
                };
                let last = piece.end;
                if self.send(piece).await.is_err() {
                    return;
                }
                if last {
                    let _ = self.writer.close().await;
                    return;
                }
            }
        }
    }

    async fn read_request(&mut self) -> Result<SignedRequest, WireError> {
        read_message(&mut self.reader, LOGS_MAX_BYTES).await
    }

    /// Writes one chunk, giving up after the timeout on a client that does not read.
    async fn send(&mut self, chunk: LogChunk) -> Result<(), ()> {
        let peer = self.peer;
        match tokio::time::timeout(self.timeout, write_message(&mut self.writer, &chunk, LOGS_MAX_BYTES)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "log stream write failed");
                Err(())
            }
            Err(_) => {
                tracing::debug!(%peer, "log stream write timed out");
                Err(())
            }
        }
    }

    async fn refuse(&mut self, chunk: LogChunk) {
        if let Some(error) = &chunk.error {
            tracing::debug!(peer = %self.peer, code = error.code, message = %error.message, "logs request refused");
        }
        if self.send(chunk).await.is_ok() {
            let _ = self.writer.close().await;
        }
    }
}

/// Completes when the client's side of the stream is closed, reset, or (against the protocol)
/// sends more bytes; pending while it stays quiet.
async fn client_gone(reader: &mut ReadHalf<libp2p::Stream>) {
    let mut byte = [0u8; 1];
    let _ = reader.read(&mut byte).await;
}

/// Client side: reads the provider's verdict (the first chunk) and returns the stream of log
/// chunks that follows. Protocol frames (the acknowledgement, an `end` without data) are consumed.
pub(crate) async fn receive(
    peer: PeerId,
    mut stream: libp2p::Stream,
    request: SignedRequest,
) -> Result<impl Stream<Item = Result<LogChunk, NetError>> + Unpin + Send + 'static, NetError> {
    let failed =
        move |error: WireError| NetError::request(peer, LOGS_PROTOCOL, RequestErrorKind::Failed(error.to_string()));
    write_message(&mut stream, &request, LOGS_MAX_BYTES).await.map_err(failed)?;
    let mut first: LogChunk = read_message(&mut stream, LOGS_MAX_BYTES).await.map_err(failed)?;
    if let Some(error) = first.error.take() {
        return Err(refused(peer, error));
    }
    // A chunk not yet handed out, then the stream to read more from (None once ended).
    let more = (!first.end).then_some(stream);
    let pending = (!first.data.is_empty()).then_some(first);
    let state = (pending, more);
    Ok(futures::stream::unfold(state, move |(pending, stream)| async move {
        if let Some(chunk) = pending {
            return Some((Ok(chunk), (None, stream)));
        }
        let mut stream = stream?;
        loop {
            let chunk: LogChunk = match read_message(&mut stream, LOGS_MAX_BYTES).await {
                Ok(chunk) => chunk,
                Err(WireError::Truncated) => {
                    let kind = RequestErrorKind::Failed("the log stream ended without its last chunk".into());
                    return Some((Err(NetError::request(peer, LOGS_PROTOCOL, kind)), (None, None)));
                }
                Err(error) => return Some((Err(failed(error)), (None, None))),
            };
            if let Some(error) = chunk.error {
                return Some((Err(refused(peer, error)), (None, None)));
            }
            match (chunk.end, chunk.data.is_empty()) {
                (true, true) => return None,
                (true, false) => return Some((Ok(chunk), (None, None))),
                (false, true) => continue,
                (false, false) => return Some((Ok(chunk), (None, Some(stream)))),
            }
        }
    })
    // Boxed so that callers can poll it with `next()` without pinning it themselves.
    .boxed())
}

fn refused(peer: PeerId, error: pb::Error) -> NetError {
    NetError::request(peer, LOGS_PROTOCOL, RequestErrorKind::Refused { code: error.code, message: error.message })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn large_chunks_are_split_keeping_end_and_error_on_the_last_piece() {
        let chunk = LogChunk {
            version: 0,
            container: "app".into(),
            data: vec![b'x'; 2 * MAX_LOG_CHUNK_BYTES + 10],
            timestamp_unix_nanos: 5,
            end: true,
            error: None,
        };
        let pieces = split(chunk);
        assert_eq!(
            pieces.iter().map(|p| p.data.len()).collect::<Vec<_>>(),
            [MAX_LOG_CHUNK_BYTES, MAX_LOG_CHUNK_BYTES, 10]
        );
        assert_eq!(pieces.iter().map(|p| p.end).collect::<Vec<_>>(), [false, false, true]);
        assert!(pieces.iter().all(|p| p.version == VERSION && p.container == "app" && p.timestamp_unix_nanos == 5));
        pieces.iter().for_each(|p| p.validate().unwrap());
        assert_eq!(split(LogChunk::default()).len(), 1);
    }
}
