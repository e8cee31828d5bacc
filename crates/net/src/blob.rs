//! The blob protocol (`/tpod/blob/1`): a publisher uploads one encrypted blob, addressed by its
//! CID, on a stream of its own (see `blob.proto`).
//!
//! Frame by frame: the publisher sends a `BlobOffer` (CID and total size); the provider answers
//! with a `BlobReply` carrying what it already holds (`state`) or a refusal (`error`, ending the
//! stream; also the answer to an offer that is malformed, oversized or of another version). Unless the blob is complete, the publisher then sends `BlobChunk`s of at most
//! [`MAX_BLOB_CHUNK_BYTES`] from `state.received` on, each with the sha256 of the blob up to its
//! end, without waiting for acknowledgements; the provider stores them in order and, once the last
//! byte is stored and the blob matches its CID, sends the complete state. A refused chunk ends the
//! stream at once with an error reply. A publisher that only asks ([`Client::blob_state`]) closes
//! the stream after the first reply.
//!
//! Provider side ([`BlobServer`]): at most [`MAX_BLOB_STREAMS`] uploads at once, and
//! [`MAX_BLOB_STREAMS_PER_PEER`] from one peer (more are refused with code 429); reads fail after
//! an idle timeout without a byte, so a stalled publisher cannot hold a slot (while a slow one may
//! take its time over a chunk); two chunks (at most [`BLOB_MAX_BYTES`] each) are in memory per
//! stream: one being stored while the next is read.
//!
//! Publisher side ([`Client::push_blob`]): reads the file in chunks into two frame buffers used in
//! turn (one being written to the stream while the next is read and hashed), whatever the file's
//! size, and reconnects after a cut stream or connection, resuming from what the provider holds.
//! The running sha256 of the blob goes from one read to the next, so each byte is hashed once; a
//! resumed upload first hashes what the provider already holds.
//!
//! [`Client::blob_state`]: crate::Client::blob_state
//! [`Client::push_blob`]: crate::Client::push_blob

use std::{
    collections::HashMap,
    fs::File,
    future::Future,
    io::{self, Read, Seek, SeekFrom},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, io::ReadHalf};
use libp2p::PeerId;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use sha2::{Digest as _, Sha256};
use tokio::sync::{Semaphore, mpsc};
use tpod_wire::{
    BLOB_PROTOCOL, ErrorReply, VERSION, WireError,
    codec::BLOB_MAX_BYTES,
    codes,
    limits::MAX_BLOB_CHUNK_BYTES,
    pb::{self, BlobChunk, BlobOffer, BlobReply, BlobState, blob_reply},
    read_message, write_message,
};

use crate::{Handler, NetError, RequestErrorKind};

/// Blob uploads a provider serves at once; beyond this, offers are refused (code 429). Each holds
/// up to one frame of [`BLOB_MAX_BYTES`] and one blocking write at a time.
pub(crate) const MAX_BLOB_STREAMS: usize = 16;
/// Blob uploads one peer may have at once, so that one publisher cannot take every slot.
/// Publishers upload one blob at a time; this leaves room for a retry while a dead stream times
/// out. (A peer id costs nothing to make, so this only bounds an honest-but-greedy client; the
/// global limit is what bounds memory.)
pub(crate) const MAX_BLOB_STREAMS_PER_PEER: usize = 4;

/// How often [`Client::push_blob`](crate::Client::push_blob) reconnects after a cut stream or
/// connection before giving up.
pub const MAX_RECONNECTS: u32 = 5;
/// Chunk frames are written in pieces of this size, so that the idle timeout bounds the time
/// without progress rather than the time to send a whole chunk.
const WRITE_PIECE_BYTES: usize = 64 * 1024;
/// After a failed write, how long to wait for the refusal the provider may have sent.
const REFUSAL_GRACE: Duration = Duration::from_secs(2);

/// An upload's progress, reported after each chunk written to the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes the provider holds or has been sent: [`PushReport::resumed_from`] plus what this
    /// push sent since.
    pub held: u64,
    /// Size of the blob.
    pub total: u64,
    /// Bytes this push sent (across reconnections), which is what [`Progress::bytes_per_second`]
    /// measures.
    pub sent: u64,
    /// Time since the push started.
    pub elapsed: Duration,
}

impl Progress {
    /// Upload rate so far, in bytes per second (None before any time passed).
    pub fn bytes_per_second(&self) -> Option<f64> {
        let seconds = self.elapsed.as_secs_f64();
        (seconds > 0.0).then(|| self.sent as f64 / seconds)
    }

    /// Time left at the rate so far (None until something was sent).
    pub fn eta(&self) -> Option<Duration> {
        let rate = self.bytes_per_second().filter(|r| *r > 0.0)?;
        Duration::try_from_secs_f64(self.total.saturating_sub(self.held) as f64 / rate).ok()
    }
}

/// What a [`Client::push_blob`](crate::Client::push_blob) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Size of the blob.
    pub total: u64,
    /// Bytes the provider held when the push started (its first offer), which were not sent.
    pub resumed_from: u64,
    /// Bytes sent, across reconnections: `total - resumed_from` for an uninterrupted push, more
    /// when a cut stream lost chunks in flight.
    pub sent: u64,
    /// The provider already had the whole blob; nothing was sent.
    pub already_complete: bool,
    /// Reconnections after a cut stream or connection (at most [`MAX_RECONNECTS`]).
    pub reconnects: u32,
}

fn reply(result: blob_reply::Result) -> BlobReply {
    BlobReply { version: VERSION, result: Some(result) }
}

/// Provider side of the blob protocol: state shared by the streams of one provider.
pub(crate) struct BlobServer<H> {
    pub(crate) handler: Arc<H>,
    /// Bound on each read from the publisher and on each handler call but the last.
    pub(crate) idle: Duration,
    /// Bound on the handler call that completes a blob (it may verify or sync a large file).
    pub(crate) finish: Duration,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) per_peer: Arc<PeerSlots>,
}

/// How many uploads each peer has open.
#[derive(Debug, Default)]
pub(crate) struct PeerSlots(Mutex<HashMap<PeerId, usize>>);

/// One of a peer's upload slots, given back on drop.
struct PeerSlot {
    slots: Arc<PeerSlots>,
    peer: PeerId,
}

impl PeerSlots {
    fn try_acquire(self: &Arc<Self>, peer: PeerId) -> Option<PeerSlot> {
        let mut open = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = open.entry(peer).or_default();
        if *count >= MAX_BLOB_STREAMS_PER_PEER {
            return None;
        }
        *count += 1;
        Some(PeerSlot { slots: self.clone(), peer })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.slots.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = open.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

impl<H: Handler> BlobServer<H> {
    /// Serves one inbound blob stream in its own task.
    pub(crate) fn spawn(&self, peer: PeerId, stream: libp2p::Stream) {
        let (handler, idle, finish, slots) = (self.handler.clone(), self.idle, self.finish, self.slots.clone());
        let per_peer = self.per_peer.clone();
        tokio::spawn(async move {
            let mut upload = Upload { peer, stream: IdleStream::new(stream, idle), idle };
            // Both held for the life of the stream.
            let Some(_peer_slot) = per_peer.try_acquire(peer) else {
                tracing::debug!(%peer, "too many blob uploads from one peer, refusing one");
                upload
                    .refuse(pb::Error {
                        code: codes::BUSY,
                        message: format!(
                            "too many uploads from you at once (at most {MAX_BLOB_STREAMS_PER_PEER}), try again later"
                        ),
                    })
                    .await;
                return;
            };
            let Ok(_slot) = slots.try_acquire_owned() else {
                tracing::debug!(%peer, "too many blob uploads, refusing one");
                upload
                    .refuse(pb::Error {
                        code: codes::BUSY,
                        message: "too many uploads at once, try again later".into(),
                    })
                    .await;
                return;
            };
            upload.run(&*handler, finish).await;
        });
    }
}

/// One inbound blob stream.
struct Upload {
    peer: PeerId,
    stream: IdleStream,
    idle: Duration,
}

/// A stream whose reads fail (`TimedOut`) when no byte arrives for `idle`: a publisher on a slow
/// link may take long over a chunk as long as it makes progress, a stalled one is dropped.
struct IdleStream {
    inner: libp2p::Stream,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl IdleStream {
    fn new(inner: libp2p::Stream, idle: Duration) -> Self {
        Self { inner, idle, deadline: Box::pin(tokio::time::sleep(idle)) }
    }

    /// Starts counting from now: called before each message read, since the time spent between
    /// them (storing a chunk) is not the publisher's.
    fn arm(&mut self) {
        let deadline = tokio::time::Instant::now() + self.idle;
        self.deadline.as_mut().reset(deadline);
    }
}

impl AsyncRead for IdleStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                self.arm();
                Poll::Ready(result)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let message = format!("no data from the publisher for {:?}", self.idle);
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, message)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for IdleStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

impl Upload {
    async fn run<H: Handler>(&mut self, handler: &H, finish: Duration) {
        let peer = self.peer;
        // A malformed, oversized or invalid offer is answered with why (an oversized one without
        // reading its body); a stalled or broken stream has no one to answer.
        self.stream.arm();
        let offer: BlobOffer = match read_message(&mut self.stream, BLOB_MAX_BYTES).await {
            Ok(offer) => offer,
            Err(WireError::Io(error)) => return tracing::debug!(%peer, %error, "no blob offer"),
            Err(error) => return self.refuse(error.to_error()).await,
        };
        let total = offer.total_size;
        let state = match tokio::time::timeout(self.idle, handler.blob_offer(peer, offer.clone())).await {
            Ok(Ok(state)) if state.received > total => {
                tracing::warn!(%peer, cid = offer.cid, received = state.received, total, "handler holds more than the blob");
                return self.refuse(internal("the provider holds more bytes than the blob has")).await;
            }
            Ok(Ok(state)) => state,
            Ok(Err(error)) => return self.refuse(error).await,
            Err(_) => return self.refuse(timed_out()).await,
        };
        if self.send(&reply(blob_reply::Result::State(state))).await.is_err() {
            return;
        }
        if state.complete {
            let _ = self.stream.close().await;
            return;
        }
        match self.receive(handler, &offer, finish).await {
            Received::Complete(state) => {
                if self.send(&reply(blob_reply::Result::State(state))).await.is_ok() {
                    let _ = self.stream.close().await;
                }
            }
            Received::Refused(error) => self.refuse(error).await,
            // The publisher closed (it only asked, or gave up), stalled, or the connection broke:
            // nothing to answer, free the slot.
            Received::Gone => tracing::debug!(%peer, cid = offer.cid, "blob stream ended before the blob was complete"),
        }
    }

    /// Receives the chunks of an accepted offer until the handler completes the blob or refuses
    /// a chunk, or the stream fails.
    ///
    /// Reading and storing overlap: while the handler stores one chunk, the next is read, so the
    /// network and the disk work at the same time. At most two chunks are in memory: a chunk is
    /// read only once the previous one was taken to be stored.
    async fn receive<H: Handler>(&mut self, handler: &H, offer: &BlobOffer, finish: Duration) -> Received {
        let (peer, idle, total) = (self.peer, self.idle, offer.total_size);
        let (to_store, mut stored) = mpsc::channel::<BlobChunk>(1);
        let stream = &mut self.stream;
        // Ends with None after the last chunk, or with why it stopped before.
        let read = async move {
            loop {
                let Ok(slot) = to_store.reserve().await else { return None };
                stream.arm();
                let chunk: BlobChunk = match read_message(stream, BLOB_MAX_BYTES).await {
                    Ok(chunk) => chunk,
                    Err(WireError::Truncated | WireError::Io(_)) => return Some(Received::Gone),
                    Err(error) => {
                        let pb::Error { code, message } = error.to_error();
                        let message = format!("invalid chunk: {message}");
                        return Some(Received::Refused(pb::Error { code, message }));
                    }
                };
                // Validation guarantees no overflow here.
                let last = chunk.offset.saturating_add(chunk.data.len() as u64) >= total;
                slot.send(chunk);
                if last {
                    return None;
                }
            }
        };
        // Ends with the handler's final word, or None once the reader stopped and every chunk it
        // read was stored.
        let store = async {
            while let Some(chunk) = stored.recv().await {
                let last = chunk.offset.saturating_add(chunk.data.len() as u64) >= total;
                let timeout = if last { finish.max(idle) } else { idle };
                match tokio::time::timeout(timeout, handler.blob_chunk(peer, &offer.cid, total, chunk)).await {
                    Ok(Ok(state)) if state.complete => return Some(Received::Complete(state)),
                    Ok(Ok(state)) if state.received >= total => {
                        tracing::warn!(%peer, cid = offer.cid, received = state.received, total, "handler holds the whole blob but does not report it complete");
                        let error = internal("the provider holds every byte but did not complete the blob");
                        return Some(Received::Refused(error));
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return Some(Received::Refused(error)),
                    Err(_) => return Some(Received::Refused(timed_out())),
                }
            }
            None
        };
        let (mut read, mut store) = (std::pin::pin!(read), std::pin::pin!(store));
        tokio::select! {
            // The handler's answer ends the upload, whatever the reader is doing.
            stored = &mut store => stored.unwrap_or(Received::Gone),
            // The chunks already read are stored first: a refusal of one of them came first.
            read = &mut read => match (read, store.await) {
                (_, Some(stored)) => stored,
                (Some(stopped), None) => stopped,
                (None, None) => Received::Refused(internal("the provider stored every chunk but did not complete the blob")),
            },
        }
    }

    /// Writes one reply, giving up after the idle timeout on a publisher that does not read.
    async fn send(&mut self, message: &BlobReply) -> Result<(), ()> {
        let peer = self.peer;
        match tokio::time::timeout(self.idle, write_message(&mut self.stream, message, BLOB_MAX_BYTES)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "blob stream write failed");
                Err(())
            }
            Err(_) => {
                tracing::debug!(%peer, "blob stream write timed out");
                Err(())
            }
        }
    }

    /// Sends a refusal and ends the stream.
    async fn refuse(&mut self, error: pb::Error) {
        tracing::debug!(peer = %self.peer, code = error.code, message = %error.message, "blob upload refused");
        if self.send(&BlobReply::refusal(error)).await.is_ok() {
            let _ = self.stream.close().await;
        }
    }
}

fn internal(message: &str) -> pb::Error {
    pb::Error { code: codes::INTERNAL, message: message.into() }
}

fn timed_out() -> pb::Error {
    pb::Error { code: codes::TIMEOUT, message: "the provider did not answer in time".into() }
}

/// How the chunks of an upload ended.
enum Received {
    /// The handler completed the blob: its state is the final answer.
    Complete(BlobState),
    /// A chunk was refused, by the protocol's checks or the handler.
    Refused(pb::Error),
    /// The stream ended or broke first: there is no one to answer.
    Gone,
}

/// Client side: what went wrong in one attempt, and whether another may do better.
pub(crate) enum Failure {
    /// The stream or connection broke (or timed out): reconnect and resume.
    Retry(NetError),
    /// A refusal or a local error: give up.
    Fatal(NetError),
}

impl Failure {
    pub(crate) fn into_error(self) -> NetError {
        match self {
            Self::Retry(error) | Self::Fatal(error) => error,
        }
    }
}

pub(crate) fn failed(peer: PeerId, reason: impl Into<String>) -> NetError {
    NetError::request(peer, BLOB_PROTOCOL, RequestErrorKind::Failed(reason.into()))
}

fn refused(peer: PeerId, error: pb::Error) -> NetError {
    NetError::request(peer, BLOB_PROTOCOL, RequestErrorKind::Refused { code: error.code, message: error.message })
}

/// A wire error on the stream: a broken or cut stream is worth another attempt, a malformed
/// answer is not.
fn wire_failure(peer: PeerId, what: &str, error: WireError) -> Failure {
    let message = format!("{what}: {error}");
    match error {
        WireError::Truncated | WireError::Io(_) => Failure::Retry(failed(peer, message)),
        _ => Failure::Fatal(failed(peer, message)),
    }
}

/// Sends the offer and reads the provider's first answer.
pub(crate) async fn offer(
    peer: PeerId,
    stream: &mut libp2p::Stream,
    cid: &str,
    total_size: u64,
    idle: Duration,
) -> Result<BlobState, Failure> {
    let offer = BlobOffer { version: VERSION, cid: cid.to_owned(), total_size };
    let exchange = async {
        write_message(stream, &offer, BLOB_MAX_BYTES).await.map_err(|e| wire_failure(peer, "sending the offer", e))?;
        read_message::<BlobReply, _>(stream, BLOB_MAX_BYTES)
            .await
            .map_err(|e| wire_failure(peer, "reading the answer", e))
    };
    let answer = match tokio::time::timeout(idle, exchange).await {
        Ok(answer) => answer?,
        Err(_) => return Err(Failure::Retry(NetError::request(peer, BLOB_PROTOCOL, RequestErrorKind::Timeout(idle)))),
    };
    match answer.result {
        Some(blob_reply::Result::State(state)) if state.received > total_size => Err(Failure::Fatal(failed(
            peer,
            format!("the provider holds {} bytes of a {total_size}-byte blob", state.received),
        ))),
        Some(blob_reply::Result::State(state)) => Ok(state),
        Some(blob_reply::Result::Error(error)) => Err(Failure::Fatal(refused(peer, error))),
        None => Err(Failure::Fatal(failed(peer, "empty answer to the offer"))),
    }
}

/// The local side of an upload: the file, its size, and the running totals of a push.
pub(crate) struct Source<'a> {
    /// Locked by each read, so that a read left running by a failed attempt cannot move the
    /// position under the next attempt's.
    pub(crate) file: Arc<Mutex<File>>,
    pub(crate) path: &'a std::path::Path,
    pub(crate) total: u64,
    pub(crate) started: Instant,
    pub(crate) report: PushReport,
}

impl Source<'_> {
    fn file_error(&self, source: io::Error) -> Failure {
        Failure::Fatal(NetError::BlobFile { path: self.path.to_owned(), source })
    }
}

/// Sends the chunks of `source` from `from` on a stream whose offer was accepted, then reads the
/// provider's final answer. A refusal that comes early (a chunk refused) stops the sending.
pub(crate) async fn send_chunks(
    peer: PeerId,
    stream: libp2p::Stream,
    source: &mut Source<'_>,
    from: u64,
    idle: Duration,
    finish: Duration,
    progress: &mut impl FnMut(Progress),
) -> Result<(), Failure> {
    let (mut reader, mut writer) = stream.split();
    let answer = read_answer(&mut reader);
    let mut answer = std::pin::pin!(answer);
    let total = source.total;
    // Two frame buffers in turn: `reading` is filled off the async workers while the other is
    // written. At least one chunk is sent, even empty: it is what completes an empty blob (or a
    // blob whose every byte the provider holds but has not verified yet).
    let mut spare = Vec::with_capacity(frame_capacity());
    let mut offset = from;
    let first = read_frame(source.file.clone(), Vec::with_capacity(frame_capacity()), offset, total, None);
    let mut reading = Some(first);
    while let Some(job) = reading.take() {
        let (frame, len, prefix) = match job.await {
            Ok(Ok(read)) => read,
            Ok(Err(error)) => return Err(source.file_error(error)),
            Err(error) => return Err(source.file_error(io::Error::other(error))),
        };
        let next = offset + len;
        if next < total {
            reading = Some(read_frame(source.file.clone(), std::mem::take(&mut spare), next, total, Some(prefix)));
        }
        // In pieces, each bounded by the idle timeout: a slow link is fine as long as it moves.
        let write = async {
            for piece in frame.chunks(WRITE_PIECE_BYTES) {
                match tokio::time::timeout(idle, writer.write_all(piece)).await {
                    Ok(written) => written?,
                    Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no progress for {idle:?}"))),
                }
            }
            match tokio::time::timeout(idle, writer.flush()).await {
                Ok(flushed) => flushed,
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("no progress for {idle:?}"))),
            }
        };
        tokio::select! {
            biased;
            answer = &mut answer => return early_answer(peer, answer, offset),
            written = write => if let Err(error) = written {
                // The provider may have refused a chunk and closed: its answer says why.
                if let Ok(answer) = tokio::time::timeout(REFUSAL_GRACE, &mut answer).await {
                    return early_answer(peer, answer, offset);
                }
                return Err(Failure::Retry(failed(peer, format!("sending the chunk at offset {offset}: {error}"))));
            },
        }
        spare = frame;
        offset = next;
        source.report.sent += len;
        progress(Progress { held: offset, total, sent: source.report.sent, elapsed: source.started.elapsed() });
    }
    let answer = match tokio::time::timeout(finish.max(idle), &mut answer).await {
        Ok(answer) => answer,
        Err(_) => {
            return Err(Failure::Retry(NetError::request(peer, BLOB_PROTOCOL, RequestErrorKind::Timeout(finish))));
        }
    };
    match answer {
        Ok(BlobReply { result: Some(blob_reply::Result::State(state)), .. }) if state.complete => {
            let _ = writer.close().await;
            Ok(())
        }
        Ok(BlobReply { result: Some(blob_reply::Result::State(state)), .. }) => Err(Failure::Fatal(failed(
            peer,
            format!("the provider holds {} of {total} bytes after the last chunk, without completing", state.received),
        ))),
        Ok(BlobReply { result: Some(blob_reply::Result::Error(error)), .. }) => Err(refusal(peer, error)),
        Ok(BlobReply { result: None, .. }) => Err(Failure::Fatal(failed(peer, "empty answer after the last chunk"))),
        Err(error) => Err(wire_failure(peer, "reading the answer after the last chunk", error)),
    }
}

async fn read_answer(reader: &mut ReadHalf<libp2p::Stream>) -> Result<BlobReply, WireError> {
    read_message(reader, BLOB_MAX_BYTES).await
}

/// A refusal during the upload. A wrong offset is retried: after a reconnection, a chunk of the
/// cut stream may have been stored in the meantime, and the next offer tells where to resume.
fn refusal(peer: PeerId, error: pb::Error) -> Failure {
    let retry = error.code == codes::CONFLICT;
    let error = refused(peer, error);
    if retry { Failure::Retry(error) } else { Failure::Fatal(error) }
}

/// An answer read while chunks were still being sent.
fn early_answer(peer: PeerId, answer: Result<BlobReply, WireError>, offset: u64) -> Result<(), Failure> {
    match answer {
        Ok(BlobReply { result: Some(blob_reply::Result::Error(error)), .. }) => Err(refusal(peer, error)),
        // Someone else completed the blob meanwhile: nothing more to send.
        Ok(BlobReply { result: Some(blob_reply::Result::State(state)), .. }) if state.complete => Ok(()),
        Ok(_) => {
            Err(Failure::Fatal(failed(peer, format!("unexpected answer while sending the chunk at offset {offset}"))))
        }
        Err(error) => Err(wire_failure(peer, &format!("sending the chunk at offset {offset}"), error)),
    }
}

/// Room for the largest chunk frame.
fn frame_capacity() -> usize {
    MAX_BLOB_CHUNK_BYTES + 64
}

/// Reads the chunk at `offset` (of a `total`-byte file) into a `BlobChunk` frame on a blocking
/// thread, continuing `prefix`, the sha256 state of the file's first `offset` bytes (hashed from
/// the file when None); returns the frame, the chunk's length and the state after it.
fn read_frame(
    file: Arc<Mutex<File>>,
    mut frame: Vec<u8>,
    offset: u64,
    total: u64,
    prefix: Option<Sha256>,
) -> tokio::task::JoinHandle<io::Result<(Vec<u8>, u64, Sha256)>> {
    tokio::task::spawn_blocking(move || {
        // Less than a chunk left fits in usize.
        let len = usize::try_from((total - offset).min(MAX_BLOB_CHUNK_BYTES as u64)).unwrap_or(MAX_BLOB_CHUNK_BYTES);
        let mut file = file.lock().map_err(|_| io::Error::other("a read of the file panicked"))?;
        let mut prefix = match prefix {
            Some(prefix) => prefix,
            None => hash_prefix(&mut file, offset)?,
        };
        file.seek(SeekFrom::Start(offset))?;
        encode_chunk_frame(&mut frame, offset, len, &mut prefix, |data| file.read_exact(data).map_err(shrank))?;
        Ok((frame, len as u64, prefix))
    })
}

/// The sha256 state of the first `len` bytes of `file`.
fn hash_prefix(file: &mut File, len: u64) -> io::Result<Sha256> {
    let mut prefix = Sha256::new();
    file.seek(SeekFrom::Start(0))?;
    if io::copy(&mut Read::by_ref(file).take(len), &mut prefix)? < len {
        return Err(shrank(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(prefix)
}

fn shrank(error: io::Error) -> io::Error {
    if error.kind() == io::ErrorKind::UnexpectedEof {
        io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while uploading")
    } else {
        error
    }
}

/// Encodes a length-delimited `BlobChunk` frame of `len` data bytes at `offset` into `frame`
/// (cleared first), letting `fill` write the data in place, then feeds the data to `prefix` and
/// appends its digest. The same bytes as prost's encoding, without copying the data through a
/// `BlobChunk`.
pub(crate) fn encode_chunk_frame(
    frame: &mut Vec<u8>,
    offset: u64,
    len: usize,
    prefix: &mut Sha256,
    fill: impl FnOnce(&mut [u8]) -> io::Result<()>,
) -> io::Result<()> {
    const SHA256_LEN: usize = 32;
    // Keys of fields 1 to 15 take one byte; like prost, fields at their default are left out.
    const KEY_LEN: usize = 1;
    let body = KEY_LEN
        + encoded_len_varint(u64::from(VERSION))
        + if offset == 0 { 0 } else { KEY_LEN + encoded_len_varint(offset) }
        + if len == 0 { 0 } else { KEY_LEN + encoded_len_varint(len as u64) + len }
        + KEY_LEN
        + 1
        + SHA256_LEN;
    frame.clear();
    encode_varint(body as u64, frame);
    encode_key(1, WireType::Varint, frame);
    encode_varint(u64::from(VERSION), frame);
    if offset != 0 {
        encode_key(2, WireType::Varint, frame);
        encode_varint(offset, frame);
    }
    let start = if len == 0 {
        frame.len()
    } else {
        encode_key(3, WireType::LengthDelimited, frame);
        encode_varint(len as u64, frame);
        frame.len()
    };
    frame.resize(start + len, 0);
    fill(&mut frame[start..])?;
    prefix.update(&frame[start..]);
    let digest = prefix.clone().finalize();
    encode_key(4, WireType::LengthDelimited, frame);
    encode_varint(SHA256_LEN as u64, frame);
    frame.extend_from_slice(&digest);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use prost::Message;

    use super::*;

    #[tokio::test]
    async fn chunk_frames_match_prost() {
        let before = b"the bytes before the chunk";
        for (offset, len) in [(0, 0), (0, 5), (7, 0), (1 << 40, 300), (3, MAX_BLOB_CHUNK_BYTES)] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let mut frame = vec![9; 3];
            let mut prefix = Sha256::new_with_prefix(before);
            encode_chunk_frame(&mut frame, offset, len, &mut prefix, |buf| {
                buf.copy_from_slice(&data);
                Ok(())
            })
            .unwrap();
            let whole = [&before[..], &data].concat();
            assert_eq!(prefix.clone().finalize(), Sha256::digest(&whole));
            let expected = BlobChunk {
                version: VERSION,
                offset,
                data: data.clone().into(),
                prefix_sha256: Sha256::digest(&whole).to_vec(),
            };
            assert_eq!(frame, expected.encode_length_delimited_to_vec(), "offset {offset}, len {len}");
            let decoded: BlobChunk = read_message(&mut &frame[..], BLOB_MAX_BYTES).await.unwrap();
            assert_eq!(decoded, expected);
        }
    }

    #[test]
    fn progress_rate_and_eta() {
        let progress = Progress { held: 600, total: 1000, sent: 500, elapsed: Duration::from_secs(5) };
        assert_eq!(progress.bytes_per_second(), Some(100.0));
        assert_eq!(progress.eta(), Some(Duration::from_secs(4)));
        let start = Progress { held: 0, total: 1000, sent: 0, elapsed: Duration::ZERO };
        assert_eq!((start.bytes_per_second(), start.eta()), (None, None));
    }
}
