//! The publisher side: sends attestation, quote, provision and profile requests to providers by
//! peer id and address, and opens log and blob streams, through a swarm running in a background
//! task driven by a command channel. A provider's error reply comes back as
//! [`RequestErrorKind::Refused`], never as a response to inspect.

use std::{
    collections::HashMap,
    fs::File,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{AsyncWriteExt, Stream, StreamExt};
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
use tpod_crypto::ContentId;
use tpod_wire::{
    ATTEST_PROTOCOL, BLOB_PROTOCOL, ErrorReply, LOGS_PROTOCOL, PROFILE_PROTOCOL, PROVISION_PROTOCOL, QUOTE_PROTOCOL,
    pb::{
        self, AttestRequest, AttestResponse, LogChunk, ProfileRequest, ProfileResponse, ProvisionResponse,
        QuoteRequest, QuoteResponse, SignedRequest,
    },
};

use crate::{
    Behaviour, BehaviourEvent, MAX_RECONNECTS, NetConfig, NetError, Progress, PushReport, RequestErrorKind,
    blob::{self, Source},
    build_swarm, logs,
};

/// Wait before the first reconnection of an interrupted blob upload; doubled for each one after.
const BLOB_BACKOFF: Duration = Duration::from_millis(200);

type Reply<T> = oneshot::Sender<Result<T, NetError>>;

enum Command {
    Attest {
        peer: PeerId,
        addr: Multiaddr,
        request: AttestRequest,
        reply: Reply<AttestResponse>,
    },
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
    Profile {
        peer: PeerId,
        addr: Multiaddr,
        request: ProfileRequest,
        reply: Reply<ProfileResponse>,
    },
    /// Makes sure a connection to the peer is up, for `protocol`, opened as a raw stream.
    Connect {
        peer: PeerId,
        addr: Multiaddr,
        protocol: &'static str,
        reply: Reply<()>,
    },
}

/// A client of providers. The swarm runs in a background task, stopped when the client and all
/// its clones are dropped (which also ends its log streams); connections are reused between
/// requests to the same peer, and clones share them, so uploads can run in tasks of their own.
#[derive(Clone)]
pub struct Client {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    streams: libp2p_stream::Control,
    request_timeout: Duration,
    blob_finish_timeout: Duration,
    _task: Arc<Task>,
}

/// The swarm task, aborted when the last clone of its client goes.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
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
        Ok(Self {
            peer_id,
            commands,
            streams,
            request_timeout: config.request_timeout,
            blob_finish_timeout: config.blob_finish_timeout,
            _task: Arc::new(Task(task)),
        })
    }

    /// This client's peer id, as providers see it.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Asks `peer`, reachable at `addr`, for attestation evidence bound to the request's nonce.
    /// The connection is authenticated as `peer`: the evidence must bind that peer's key.
    ///
    /// Like every request here, a response carrying an error (the provider cannot attest, or
    /// refused the request as malformed) is [`RequestErrorKind::Refused`] with its code and
    /// reason: an `Ok` response is never an error reply.
    pub async fn attest(
        &self,
        peer: PeerId,
        addr: Multiaddr,
        request: AttestRequest,
    ) -> Result<AttestResponse, NetError> {
        self.call(peer, ATTEST_PROTOCOL, |reply| Command::Attest { peer, addr, request, reply }).await
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

    /// Asks `peer`, reachable at `addr`, for its signed profile (`/tpod/profile/1`). The bytes
    /// are returned as received: checking them against a profile URI's digest and the Registry
    /// is the caller's business. A provider without a profile answers 503, which is
    /// [`RequestErrorKind::Refused`].
    pub async fn profile(
        &self,
        peer: PeerId,
        addr: Multiaddr,
        request: ProfileRequest,
    ) -> Result<ProfileResponse, NetError> {
        self.call(peer, PROFILE_PROTOCOL, |reply| Command::Profile { peer, addr, request, reply }).await
    }

    /// Asks `peer`, reachable at `addr`, what it holds of the blob `cid` of `total_size` bytes,
    /// without uploading anything: offers it and closes the stream after the answer. A refusal
    /// (e.g. a blob too large) is [`RequestErrorKind::Refused`].
    pub async fn blob_state(
        &self,
        peer: PeerId,
        addr: Multiaddr,
        cid: &ContentId,
        total_size: u64,
    ) -> Result<pb::BlobState, NetError> {
        let mut stream = self.open_stream(peer, addr, BLOB_PROTOCOL).await?;
        let state = blob::offer(peer, &mut stream, &cid.to_string(), total_size, self.request_timeout)
            .await
            .map_err(blob::Failure::into_error)?;
        let _ = stream.close().await;
        Ok(state)
    }

    /// Uploads the file at `path` as the blob `cid` (the CID of its bytes, which the provider
    /// checks chunk by chunk and then as a whole), on a `/tpod/blob/1` stream of its own.
    ///
    /// Skips a blob the provider already holds and resumes a partial upload where the provider's
    /// copy ends: bytes the provider holds are never sent again. The rest goes in chunks of
    /// [`MAX_BLOB_CHUNK_BYTES`](tpod_wire::limits::MAX_BLOB_CHUNK_BYTES), each with the sha256 of
    /// the blob up to its end, read from the file one at a time into two buffers used in turn, so
    /// memory stays bounded whatever the size. When the stream or the
    /// connection breaks mid-upload, it reconnects and resumes, up to [`MAX_RECONNECTS`] times
    /// with a short growing backoff.
    ///
    /// `progress` is called after each chunk sent. A refusal (a chunk or the whole blob not
    /// matching its checksum or CID: 422; no space: 507; too many uploads: 503...) is
    /// [`RequestErrorKind::Refused`] with the provider's code and message.
    pub async fn push_blob(
        &self,
        peer: PeerId,
        addr: Multiaddr,
        cid: &ContentId,
        path: &Path,
        mut progress: impl FnMut(Progress),
    ) -> Result<PushReport, NetError> {
        let started = Instant::now();
        let file_error = |source| NetError::BlobFile { path: path.to_owned(), source };
        let file = File::open(path).map_err(file_error)?;
        let total = file.metadata().map_err(file_error)?.len();
        let mut source = Source {
            file: Arc::new(Mutex::new(file)),
            path,
            total,
            started,
            report: PushReport { total, ..Default::default() },
        };
        let cid = cid.to_string();
        let mut offered = false;
        loop {
            let failure = match self.push_attempt(peer, &addr, &cid, &mut source, &mut offered, &mut progress).await {
                Ok(()) => return Ok(source.report),
                Err(failure) => failure,
            };
            match failure {
                blob::Failure::Retry(error) if source.report.reconnects < MAX_RECONNECTS => {
                    let backoff = BLOB_BACKOFF * 2u32.pow(source.report.reconnects);
                    source.report.reconnects += 1;
                    tracing::info!(%peer, cid, %error, ?backoff, attempt = source.report.reconnects, "blob upload interrupted, resuming");
                    tokio::time::sleep(backoff).await;
                }
                failure => return Err(failure.into_error()),
            }
        }
    }

    /// One stream of a push: connect, offer, send what the provider lacks. `offered` records
    /// whether an offer was ever answered, since only a provider that was reached is re-dialed.
    async fn push_attempt(
        &self,
        peer: PeerId,
        addr: &Multiaddr,
        cid: &str,
        source: &mut Source<'_>,
        offered: &mut bool,
        progress: &mut impl FnMut(Progress),
    ) -> Result<(), blob::Failure> {
        let mut stream = match self.open_stream(peer, addr.clone(), BLOB_PROTOCOL).await {
            Ok(stream) => stream,
            Err(error) => {
                let transient = matches!(
                    error.as_request().map(|e| &e.kind),
                    Some(RequestErrorKind::Failed(_) | RequestErrorKind::Timeout(_) | RequestErrorKind::Dial(_))
                );
                return Err(if *offered && transient {
                    blob::Failure::Retry(error)
                } else {
                    blob::Failure::Fatal(error)
                });
            }
        };
        let state = blob::offer(peer, &mut stream, cid, source.total, self.request_timeout).await?;
        let first = !*offered;
        *offered = true;
        if first {
            source.report.resumed_from = state.received;
        }
        if state.complete {
            source.report.already_complete = first;
            let _ = stream.close().await;
            let total = source.total;
            progress(Progress { held: total, total, sent: source.report.sent, elapsed: source.started.elapsed() });
            return Ok(());
        }
        if first {
            let (held, total) = (state.received, source.total);
            progress(Progress { held, total, sent: 0, elapsed: source.started.elapsed() });
        }
        blob::send_chunks(
            peer,
            stream,
            source,
            state.received,
            self.request_timeout,
            self.blob_finish_timeout,
            progress,
        )
        .await
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
            let stream = self.open_stream(peer, addr, LOGS_PROTOCOL).await?;
            logs::receive(peer, stream, request).await
        };
        match tokio::time::timeout(self.request_timeout, open).await {
            Ok(result) => result,
            Err(_) => Err(NetError::request(peer, LOGS_PROTOCOL, RequestErrorKind::Timeout(self.request_timeout))),
        }
    }

    /// Connects to `peer` (unless connected) and opens a `protocol` stream, within the request
    /// timeout.
    async fn open_stream(
        &self,
        peer: PeerId,
        addr: Multiaddr,
        protocol: &'static str,
    ) -> Result<libp2p::Stream, NetError> {
        let open = async {
            let (reply, connected) = oneshot::channel();
            self.commands
                .send(Command::Connect { peer, addr, protocol, reply })
                .await
                .map_err(|_| NetError::Stopped)?;
            connected.await.map_err(|_| NetError::Stopped)??;
            self.streams
                .clone()
                .open_stream(peer, StreamProtocol::new(protocol))
                .await
                .map_err(|e| NetError::request(peer, protocol, RequestErrorKind::Failed(e.to_string())))
        };
        match tokio::time::timeout(self.request_timeout, open).await {
            Ok(result) => result,
            Err(_) => Err(NetError::request(peer, protocol, RequestErrorKind::Timeout(self.request_timeout))),
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

/// Requests in flight, per protocol, and the last dial error per peer, kept to explain the
/// behaviour's bare `DialFailure` (the swarm reports the cause first, as a separate event).
/// Connection requests wait in `connecting` for their peer's connection or dial failure.
#[derive(Default)]
struct State {
    attests: HashMap<OutboundRequestId, Reply<AttestResponse>>,
    quotes: HashMap<OutboundRequestId, Reply<QuoteResponse>>,
    provisions: HashMap<OutboundRequestId, Reply<ProvisionResponse>>,
    profiles: HashMap<OutboundRequestId, Reply<ProfileResponse>>,
    connecting: HashMap<PeerId, Vec<(&'static str, Reply<()>)>>,
    dial_errors: HashMap<PeerId, DialError>,
    timeout: Duration,
}

async fn run(mut swarm: Swarm<Behaviour>, mut commands: mpsc::Receiver<Command>, timeout: Duration) {
    let mut state = State { timeout, ..Default::default() };
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Attest { peer, addr, request, reply }) => {
                    state.dial_errors.remove(&peer);
                    let id = swarm.behaviour_mut().attest.send_request_with_addresses(&peer, Ok(request), vec![addr]);
                    state.attests.insert(id, reply);
                }
                Some(Command::Quote { peer, addr, request, reply }) => {
                    state.dial_errors.remove(&peer);
                    let id = swarm.behaviour_mut().quote.send_request_with_addresses(&peer, Ok(request), vec![addr]);
                    state.quotes.insert(id, reply);
                }
                Some(Command::Provision { peer, addr, request, reply }) => {
                    state.dial_errors.remove(&peer);
                    let id = swarm.behaviour_mut().provision.send_request_with_addresses(&peer, Ok(request), vec![addr]);
                    state.provisions.insert(id, reply);
                }
                Some(Command::Profile { peer, addr, request, reply }) => {
                    state.dial_errors.remove(&peer);
                    let id = swarm.behaviour_mut().profile.send_request_with_addresses(&peer, Ok(request), vec![addr]);
                    state.profiles.insert(id, reply);
                }
                Some(Command::Connect { peer, addr, protocol, reply }) => {
                    connect(&mut swarm, &mut state, peer, addr, protocol, reply);
                }
                // The client was dropped.
                None => break,
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(BehaviourEvent::Attest(event)) => {
                    let State { attests, dial_errors, timeout, .. } = &mut state;
                    on_response(ATTEST_PROTOCOL, event, attests, dial_errors, *timeout);
                }
                SwarmEvent::Behaviour(BehaviourEvent::Quote(event)) => {
                    let State { quotes, dial_errors, timeout, .. } = &mut state;
                    on_response(QUOTE_PROTOCOL, event, quotes, dial_errors, *timeout);
                }
                SwarmEvent::Behaviour(BehaviourEvent::Provision(event)) => {
                    let State { provisions, dial_errors, timeout, .. } = &mut state;
                    on_response(PROVISION_PROTOCOL, event, provisions, dial_errors, *timeout);
                }
                SwarmEvent::Behaviour(BehaviourEvent::Profile(event)) => {
                    let State { profiles, dial_errors, timeout, .. } = &mut state;
                    on_response(PROFILE_PROTOCOL, event, profiles, dial_errors, *timeout);
                }
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    for (_, reply) in state.connecting.remove(&peer_id).unwrap_or_default() {
                        let _ = reply.send(Ok(()));
                    }
                }
                SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), error, .. } => {
                    for (protocol, reply) in state.connecting.remove(&peer).unwrap_or_default() {
                        let _ = reply.send(Err(NetError::request(peer, protocol, dial_error_kind(&error))));
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
fn connect(
    swarm: &mut Swarm<Behaviour>,
    state: &mut State,
    peer: PeerId,
    addr: Multiaddr,
    protocol: &'static str,
    reply: Reply<()>,
) {
    if swarm.is_connected(&peer) {
        let _ = reply.send(Ok(()));
        return;
    }
    let opts =
        DialOpts::peer_id(peer).addresses(vec![addr]).condition(PeerCondition::DisconnectedAndNotDialing).build();
    match swarm.dial(opts) {
        // A dial already under way answers us too, through the same events.
        Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {
            state.connecting.entry(peer).or_default().push((protocol, reply));
        }
        Err(error) => {
            let _ = reply.send(Err(NetError::request(peer, protocol, dial_error_kind(&error))));
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

/// Hands a response (or why there is none) to its caller; an error reply becomes
/// [`RequestErrorKind::Refused`].
fn on_response<Req, Resp: ErrorReply>(
    protocol: &'static str,
    event: request_response::Event<Req, Resp>,
    pending: &mut HashMap<OutboundRequestId, Reply<Resp>>,
    dial_errors: &mut HashMap<PeerId, DialError>,
    timeout: Duration,
) {
    match event {
        request_response::Event::Message {
            peer,
            message: request_response::Message::Response { request_id, response },
            ..
        } => {
            let result = match response.as_refusal() {
                Some(error) => {
                    let kind = RequestErrorKind::Refused { code: error.code, message: error.message.clone() };
                    Err(NetError::request(peer, protocol, kind))
                }
                None => Ok(response),
            };
            if let Some(reply) = pending.remove(&request_id) {
                let _ = reply.send(result);
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
