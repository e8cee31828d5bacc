//! The publisher side: sends quote, provision and blob requests to providers by peer id and
//! address, and opens log streams, through a swarm running in a background task driven by a
//! command channel.

use std::{
    collections::HashMap,
    fs::File,
    io::{self, Read, Seek, SeekFrom},
    path::Path,
    time::Duration,
};

use futures::{Stream, StreamExt};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm,
    identity::Keypair,
    request_response::{self, OutboundFailure, OutboundRequestId, ProtocolSupport},
    swarm::{
        DialError, SwarmEvent,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tpod_wire::{
    BLOB_PROTOCOL, LOGS_PROTOCOL, PROVISION_PROTOCOL, QUOTE_PROTOCOL, VERSION,
    limits::MAX_BLOB_CHUNK_BYTES,
    pb::{
        self, BlobRequest, BlobResponse, LogChunk, ProvisionResponse, QuoteRequest, QuoteResponse, SignedRequest,
        blob_request::Op, blob_response,
    },
};

use crate::{Behaviour, BehaviourEvent, NetConfig, NetError, RequestErrorKind, build_swarm, logs};

type Reply<T> = oneshot::Sender<Result<T, NetError>>;

enum Command {
    Quote {
        peer: PeerId,
        addr: Multiaddr,
        request: QuoteRequest,
        reply: Reply<QuoteResponse>,
    },
    Provision {
        peer: PeerId,
        addr: Multiaddr,
        request: SignedRequest,
        reply: Reply<ProvisionResponse>,
    },
    Blob {
        peer: PeerId,
        addr: Multiaddr,
        request: BlobRequest,
        reply: Reply<BlobResponse>,
    },
    /// Makes sure a connection to the peer is up, for protocols opened as raw streams.
    Connect {
        peer: PeerId,
        addr: Multiaddr,
        reply: Reply<()>,
    },
}

/// A client of providers. The swarm runs in a background task, stopped when this is dropped
/// (which also ends its log streams); connections are reused between requests to the same peer.
pub struct Client {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    streams: libp2p_stream::Control,
    request_timeout: Duration,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("peer_id", &self.peer_id).finish_non_exhaustive()
    }
}

impl Client {
    /// Starts a client with default settings. Must be called within a tokio runtime.
    pub fn connect(keypair: Keypair) -> Result<Self, NetError> {
        Self::connect_with(keypair, NetConfig::default())
    }

    /// Starts a client with explicit settings. Must be called within a tokio runtime.
    pub fn connect_with(keypair: Keypair, config: NetConfig) -> Result<Self, NetError> {
        // Refuse rather than panic in `tokio::spawn` outside a runtime.
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| NetError::Transport(e.to_string()))?;
        let peer_id = keypair.public().to_peer_id();
        let swarm = build_swarm(keypair, ProtocolSupport::Outbound, &config)?;
        let streams = swarm.behaviour().stream.new_control();
        let (commands, rx) = mpsc::channel(64);
        let task = runtime.spawn(run(swarm, rx, config.request_timeout));
        Ok(Self { peer_id, commands, streams, request_timeout: config.request_timeout, task })
    }

    /// This client's peer id, as providers see it.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Asks `peer`, reachable at `addr`, for a quote.
    pub async fn quote(&self, peer: PeerId, addr: Multiaddr, request: QuoteRequest) -> Result<QuoteResponse, NetError> {
        self.call(peer, QUOTE_PROTOCOL, |reply| Command::Quote { peer, addr, request, reply }).await
    }

    /// Sends a signed provisioning request to `peer`, reachable at `addr`.
    pub async fn provision(
        &self,
        peer: PeerId,
        addr: Multiaddr,
        request: SignedRequest,
    ) -> Result<ProvisionResponse, NetError> {
        self.call(peer, PROVISION_PROTOCOL, |reply| Command::Provision { peer, addr, request, reply }).await
    }

    /// Sends a blob query or put to `peer`, reachable at `addr`. An error answer is returned as
    /// is; [`Client::push_blob`] turns it into [`RequestErrorKind::Refused`].
    pub async fn blob(&self, peer: PeerId, addr: Multiaddr, request: BlobRequest) -> Result<BlobResponse, NetError> {
        self.call(peer, BLOB_PROTOCOL, |reply| Command::Blob { peer, addr, request, reply }).await
    }

    /// Uploads the file at `path` as the blob `digest` (`sha256:<hex>`, which the provider checks
    /// against the content once it has it all). Skips a blob the provider already holds, resumes
    /// an interrupted upload where the provider's copy ends, and sends the rest in chunks of
    /// [`MAX_BLOB_CHUNK_BYTES`] read from the file one at a time, so memory stays bounded.
    /// `progress(sent, total)` is called with the bytes the provider holds after each step.
    pub async fn push_blob(
        &self,
        peer: PeerId,
        addr: Multiaddr,
        digest: &str,
        path: &Path,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<(), NetError> {
        let file_error = |source| NetError::BlobFile { path: path.to_owned(), source };
        let mut file = File::open(path).map_err(file_error)?;
        let total = file.metadata().map_err(file_error)?.len();
        let request = |op| BlobRequest { version: VERSION, digest: digest.to_owned(), op: Some(op) };
        let failed = |reason: String| NetError::request(peer, BLOB_PROTOCOL, RequestErrorKind::Failed(reason));

        let state = self.blob_state(peer, addr.clone(), request(Op::Query(pb::Query {}))).await?;
        if state.complete {
            tracing::debug!(%peer, digest, "blob already on the provider");
            progress(total, total);
            return Ok(());
        }
        if state.received > total {
            return Err(failed(format!("the provider holds {} bytes of a {total}-byte file", state.received)));
        }
        let mut offset = state.received;
        progress(offset, total);
        loop {
            // Blocking file reads run off the async workers; the file travels with the job.
            let (returned, data) = tokio::task::spawn_blocking(move || read_chunk(file, offset))
                .await
                .map_err(|e| failed(format!("reading the file: {e}")))?
                .map_err(file_error)?;
            file = returned;
            let len = data.len() as u64;
            if len == 0 && offset < total {
                return Err(file_error(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while uploading",
                )));
            }
            let put = pb::Put { offset, data, total_size: total };
            let state = self.blob_state(peer, addr.clone(), request(Op::Put(put))).await?;
            if state.complete {
                progress(total, total);
                return Ok(());
            }
            // The provider must have taken the chunk (or be further along); anything else would
            // loop forever.
            if state.received < offset + len || state.received > total {
                return Err(failed(format!(
                    "the provider holds {} bytes after a put of {len} bytes at offset {offset} (of {total})",
                    state.received
                )));
            }
            if state.received == total {
                return Err(failed(format!(
                    "the provider has all {total} bytes but does not report the blob complete"
                )));
            }
            offset = state.received;
            progress(offset, total);
        }
    }

    /// Sends a blob request and unwraps the state, turning an error answer into a refusal.
    async fn blob_state(&self, peer: PeerId, addr: Multiaddr, request: BlobRequest) -> Result<pb::BlobState, NetError> {
        match self.blob(peer, addr, request).await?.result {
            Some(blob_response::Result::State(state)) => Ok(state),
            Some(blob_response::Result::Error(pb::Error { code, message })) => {
                Err(NetError::request(peer, BLOB_PROTOCOL, RequestErrorKind::Refused { code, message }))
            }
            None => Err(NetError::request(peer, BLOB_PROTOCOL, RequestErrorKind::Failed("empty answer".into()))),
        }
    }

    /// Sends a signed logs request to `peer`, reachable at `addr`, and returns the provider's log
    /// chunks as they come: all of them then the end when not following, for as long as the pod
    /// runs (or until the stream is dropped, which tells the provider to stop) when following.
    ///
    /// A refusal (e.g. wrong signer) is an error here, [`RequestErrorKind::Refused`] with the
    /// provider's code and reason. A stream that breaks or ends without its last chunk yields
    /// one error and ends. Connecting and the provider's verdict are bounded by the request
    /// timeout; waiting for log lines is not.
    pub async fn logs(
        &self,
        peer: PeerId,
        addr: Multiaddr,
        request: SignedRequest,
    ) -> Result<impl Stream<Item = Result<LogChunk, NetError>> + Unpin + Send + 'static, NetError> {
        let open = async {
            let (reply, connected) = oneshot::channel();
            self.commands.send(Command::Connect { peer, addr, reply }).await.map_err(|_| NetError::Stopped)?;
            connected.await.map_err(|_| NetError::Stopped)??;
            let stream = self
                .streams
                .clone()
                .open_stream(peer, StreamProtocol::new(LOGS_PROTOCOL))
                .await
                .map_err(|e| NetError::request(peer, LOGS_PROTOCOL, RequestErrorKind::Failed(e.to_string())))?;
            logs::receive(peer, stream, request).await
        };
        match tokio::time::timeout(self.request_timeout, open).await {
            Ok(result) => result,
            Err(_) => Err(NetError::request(peer, LOGS_PROTOCOL, RequestErrorKind::Timeout(self.request_timeout))),
        }
    }

    async fn call<T>(
        &self,
        peer: PeerId,
        protocol: &'static str,
        command: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, NetError> {
        let (reply, response) = oneshot::channel();
        self.commands.send(command(reply)).await.map_err(|_| NetError::Stopped)?;
        // The behaviour times out the request itself; this bound also covers dialing.
        match tokio::time::timeout(self.request_timeout, response).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(NetError::Stopped),
            Err(_) => Err(NetError::request(peer, protocol, RequestErrorKind::Timeout(self.request_timeout))),
        }
    }
}

/// Reads up to [`MAX_BLOB_CHUNK_BYTES`] at `offset`; fewer only at the end of the file.
fn read_chunk(mut file: File, offset: u64) -> io::Result<(File, Vec<u8>)> {
    file.seek(SeekFrom::Start(offset))?;
    let mut data = Vec::with_capacity(MAX_BLOB_CHUNK_BYTES);
    (&mut file).take(MAX_BLOB_CHUNK_BYTES as u64).read_to_end(&mut data)?;
    Ok((file, data))
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Requests in flight, per protocol, and the last dial error per peer, kept to explain the
/// behaviour's bare `DialFailure` (the swarm reports the cause first, as a separate event).
/// Connection requests wait in `connecting` for their peer's connection or dial failure.
#[derive(Default)]
struct State {
    quotes: HashMap<OutboundRequestId, Reply<QuoteResponse>>,
    provisions: HashMap<OutboundRequestId, Reply<ProvisionResponse>>,
    blobs: HashMap<OutboundRequestId, Reply<BlobResponse>>,
    connecting: HashMap<PeerId, Vec<Reply<()>>>,
    dial_errors: HashMap<PeerId, DialError>,
    timeout: Duration,
}

async fn run(mut swarm: Swarm<Behaviour>, mut commands: mpsc::Receiver<Command>, timeout: Duration) {
    let mut state = State { timeout, ..Default::default() };
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Quote { peer, addr, request, reply }) => {
                    state.dial_errors.remove(&peer);
                    let id = swarm.behaviour_mut().quote.send_request_with_addresses(&peer, request, vec![addr]);
                    state.quotes.insert(id, reply);
                }
                Some(Command::Provision { peer, addr, request, reply }) => {
                    state.dial_errors.remove(&peer);
                    let id = swarm.behaviour_mut().provision.send_request_with_addresses(&peer, request, vec![addr]);
                    state.provisions.insert(id, reply);
                }
                Some(Command::Blob { peer, addr, request, reply }) => {
                    state.dial_errors.remove(&peer);
                    let id = swarm.behaviour_mut().blob.send_request_with_addresses(&peer, request, vec![addr]);
                    state.blobs.insert(id, reply);
                }
                Some(Command::Connect { peer, addr, reply }) => connect(&mut swarm, &mut state, peer, addr, reply),
                // The client was dropped.
                None => break,
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(BehaviourEvent::Quote(event)) => {
                    let State { quotes, dial_errors, timeout, .. } = &mut state;
                    on_response(QUOTE_PROTOCOL, event, quotes, dial_errors, *timeout);
                }
                SwarmEvent::Behaviour(BehaviourEvent::Provision(event)) => {
                    let State { provisions, dial_errors, timeout, .. } = &mut state;
                    on_response(PROVISION_PROTOCOL, event, provisions, dial_errors, *timeout);
                }
                SwarmEvent::Behaviour(BehaviourEvent::Blob(event)) => {
                    let State { blobs, dial_errors, timeout, .. } = &mut state;
                    on_response(BLOB_PROTOCOL, event, blobs, dial_errors, *timeout);
                }
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    for reply in state.connecting.remove(&peer_id).unwrap_or_default() {
                        let _ = reply.send(Ok(()));
                    }
                }
                SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), error, .. } => {
                    for reply in state.connecting.remove(&peer).unwrap_or_default() {
                        let _ = reply.send(Err(NetError::request(peer, LOGS_PROTOCOL, dial_error_kind(&error))));
                    }
                    state.dial_errors.insert(peer, error);
                }
                _ => {}
            },
        }
    }
}

/// Answers `reply` once `peer` is connected, dialing `addr` unless a connection or a dial is
/// already there.
fn connect(swarm: &mut Swarm<Behaviour>, state: &mut State, peer: PeerId, addr: Multiaddr, reply: Reply<()>) {
    if swarm.is_connected(&peer) {
        let _ = reply.send(Ok(()));
        return;
    }
    let opts =
        DialOpts::peer_id(peer).addresses(vec![addr]).condition(PeerCondition::DisconnectedAndNotDialing).build();
    match swarm.dial(opts) {
        // A dial already under way answers us too, through the same events.
        Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => state.connecting.entry(peer).or_default().push(reply),
        Err(error) => {
            let _ = reply.send(Err(NetError::request(peer, LOGS_PROTOCOL, dial_error_kind(&error))));
        }
    }
}

/// Why a dial failed, naming the peer actually reached when it was the wrong one.
fn dial_error_kind(error: &DialError) -> RequestErrorKind {
    match error {
        DialError::WrongPeerId { obtained, address } => {
            RequestErrorKind::WrongPeer { address: address.clone(), obtained: *obtained }
        }
        error => RequestErrorKind::Dial(error.to_string()),
    }
}

fn on_response<Req, Resp>(
    protocol: &'static str,
    event: request_response::Event<Req, Resp>,
    pending: &mut HashMap<OutboundRequestId, Reply<Resp>>,
    dial_errors: &mut HashMap<PeerId, DialError>,
    timeout: Duration,
) {
    match event {
        request_response::Event::Message {
            message: request_response::Message::Response { request_id, response },
            ..
        } => {
            if let Some(reply) = pending.remove(&request_id) {
                let _ = reply.send(Ok(response));
            }
        }
        request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
            let error = match error {
                OutboundFailure::Timeout => RequestErrorKind::Timeout(timeout),
                OutboundFailure::DialFailure => match dial_errors.get(&peer) {
                    Some(error) => dial_error_kind(error),
                    None => RequestErrorKind::Dial("dial failed".into()),
                },
                other => RequestErrorKind::Failed(other.to_string()),
            };
            if let Some(reply) = pending.remove(&request_id) {
                let _ = reply.send(Err(NetError::request(peer, protocol, error)));
            }
        }
        // The client answers no requests.
        request_response::Event::Message { .. }
        | request_response::Event::InboundFailure { .. }
        | request_response::Event::ResponseSent { .. } => {}
    }
}
