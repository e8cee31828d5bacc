//! The provider side: listens, reads attest, quote, provision, profile, logs and blob requests,
//! and answers them with a [`Handler`] running outside the swarm task so that a slow answer does
//! not stall the others. Requests that fail to decode or validate are answered here, with the
//! protocol's error reply, and never reach the handler.

use std::{future::Future, sync::Arc, time::Duration};

use futures::{StreamExt, stream::BoxStream};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm,
    identity::Keypair,
    request_response::{self, ProtocolSupport, ResponseChannel},
    swarm::SwarmEvent,
};
use libp2p_stream::IncomingStreams;
use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinHandle,
};
use tpod_wire::{
    ErrorReply, codes,
    pb::{
        self, AttestRequest, AttestResponse, BlobChunk, BlobOffer, BlobState, LogChunk, ProfileRequest,
        ProfileResponse, ProvisionResponse, QuoteRequest, QuoteResponse, SignedRequest,
    },
};

use crate::{
    Behaviour, BehaviourEvent, NetConfig, NetError,
    blob::{BlobServer, MAX_BLOB_STREAMS},
    build_swarm,
    logs::{LogServer, MAX_LOG_STREAMS},
};

/// Answers the requests a provider receives. `peer` is the remote's peer id as authenticated
/// by noise, so it can be bound to attestation or payment identities.
///
/// A handler that does not answer within the request timeout is abandoned and the client
/// sees a timeout.
pub trait Handler: Send + Sync + 'static {
    /// Answers an attestation request: evidence bound to `request.nonce`, or an error.
    fn attest(&self, peer: PeerId, request: AttestRequest) -> impl Future<Output = AttestResponse> + Send;
    /// Answers a quote request.
    fn quote(&self, peer: PeerId, request: QuoteRequest) -> impl Future<Output = QuoteResponse> + Send;
    /// Answers a signed provisioning request (its payload is decoded and verified by the handler).
    fn provision(&self, peer: PeerId, request: SignedRequest) -> impl Future<Output = ProvisionResponse> + Send;
    /// Answers a profile request (`/tpod/profile/1`) with the provider's signed profile, or an
    /// error (503 when none is published yet).
    ///
    /// By default, a provider serves no profile: the answer is a 404 error.
    fn profile(&self, peer: PeerId, request: ProfileRequest) -> impl Future<Output = ProfileResponse> + Send {
        let _ = (peer, request);
        std::future::ready(ProfileResponse::refusal(pb::Error {
            code: codes::NOT_FOUND,
            message: "this provider serves no profile".into(),
        }))
    }
    /// Answers a signed logs request (its payload is an encoded `LogsRequest`, decoded and
    /// verified by the handler) with a stream of chunks, or a refusal that reaches the client
    /// with its code and message.
    ///
    /// The stream may be endless (follow mode); it is dropped as soon as the client goes away,
    /// which is how a producer feeding it through a channel learns to stop. Chunks longer than
    /// `tpod_wire::limits::MAX_LOG_CHUNK_BYTES` are split; a chunk with `end` or `error` ends
    /// the stream, as does the stream ending. Only deciding (this future) is bounded by the
    /// request timeout.
    fn logs(
        &self,
        peer: PeerId,
        request: SignedRequest,
    ) -> impl Future<Output = Result<BoxStream<'static, LogChunk>, pb::Error>> + Send;
    /// Answers the offer that opens a blob upload (`/tpod/blob/1`, see `blob.proto`): what is
    /// held of the blob `offer.cid` of `offer.total_size` bytes, or a refusal (wrong CID, too
    /// large, no space...), which ends the stream. A publisher may send only the offer, to ask.
    ///
    /// When the state is not complete, the net crate then reads the upload's chunks and hands
    /// them to [`Handler::blob_chunk`] one at a time, in order, reading the next chunk while one
    /// is stored. Bounded by the request timeout.
    fn blob_offer(&self, peer: PeerId, offer: BlobOffer) -> impl Future<Output = Result<BlobState, pb::Error>> + Send;
    /// Stores one chunk of the upload of blob `cid` of `total_size` bytes (from the accepted
    /// offer), in order, and returns the new state. The chunk's framing and size are validated,
    /// not its content: the handler checks its offset and `chunk.prefix_sha256` (the sha256 of the
    /// blob up to the chunk's end), and verifies the whole blob against `cid` when the last byte
    /// arrives, answering `complete` only then.
    ///
    /// A complete state is sent to the publisher as the final answer, and a refusal as an error
    /// that ends the stream; an incomplete state is not sent (the publisher keeps streaming).
    /// Bounded by the request timeout, or by `NetConfig::blob_finish_timeout` for the chunk
    /// reaching `total_size`.
    fn blob_chunk(
        &self,
        peer: PeerId,
        cid: &str,
        total_size: u64,
        chunk: BlobChunk,
    ) -> impl Future<Output = Result<BlobState, pb::Error>> + Send;
}

/// A listening provider. The swarm runs in a background task, stopped when this is dropped.
#[derive(Debug)]
pub struct Provider {
    peer_id: PeerId,
    listen_addr: Multiaddr,
    task: JoinHandle<()>,
}

impl Provider {
    /// Listens on `addr` (e.g. `/ip4/0.0.0.0/tcp/4001`; port 0 picks one) with default settings.
    pub async fn listen<H: Handler>(keypair: Keypair, addr: Multiaddr, handler: H) -> Result<Self, NetError> {
        Self::listen_with(keypair, addr, handler, NetConfig::default()).await
    }

    /// Like [`Provider::listen`], with explicit settings.
    pub async fn listen_with<H: Handler>(
        keypair: Keypair,
        addr: Multiaddr,
        handler: H,
        config: NetConfig,
    ) -> Result<Self, NetError> {
        let peer_id = keypair.public().to_peer_id();
        let mut swarm = build_swarm(keypair, ProtocolSupport::Inbound, &config)?;
        let mut control = swarm.behaviour().stream.new_control();
        let log_streams = control
            .accept(StreamProtocol::new(tpod_wire::LOGS_PROTOCOL))
            .map_err(|e| NetError::Transport(e.to_string()))?;
        let blob_streams = control
            .accept(StreamProtocol::new(tpod_wire::BLOB_PROTOCOL))
            .map_err(|e| NetError::Transport(e.to_string()))?;
        let listener = swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen { address: addr.clone(), reason: e.to_string() })?;
        // Wait for the bound address, so that the caller learns the port when it asked for 0.
        let listen_addr = loop {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr { listener_id, address } if listener_id == listener => break address,
                SwarmEvent::ListenerClosed { listener_id, reason, .. } if listener_id == listener => {
                    let reason = match reason {
                        Ok(()) => "listener closed".to_owned(),
                        Err(e) => e.to_string(),
                    };
                    return Err(NetError::Listen { address: addr, reason });
                }
                SwarmEvent::ListenerError { listener_id, error } if listener_id == listener => {
                    return Err(NetError::Listen { address: addr, reason: error.to_string() });
                }
                _ => {}
            }
        };
        let task =
            tokio::spawn(run(swarm, Inbound { logs: log_streams, blobs: blob_streams }, Arc::new(handler), config));
        Ok(Self { peer_id, listen_addr, task })
    }

    /// This provider's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The address it listens on (the first one, when listening on all interfaces).
    pub fn listen_addr(&self) -> &Multiaddr {
        &self.listen_addr
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An answer from a handler task, to be sent by the swarm task which owns the behaviours.
enum Answer {
    Attest(ResponseChannel<AttestResponse>, Box<AttestResponse>),
    // Boxed: a quote (pricing table, addresses) and a pod status (with its billing) are large.
    Quote(ResponseChannel<QuoteResponse>, Box<QuoteResponse>),
    Provision(ResponseChannel<ProvisionResponse>, Box<ProvisionResponse>),
    Profile(ResponseChannel<ProfileResponse>, Box<ProfileResponse>),
}

/// Inbound streams of the protocols that are not request-response.
struct Inbound {
    logs: IncomingStreams,
    blobs: IncomingStreams,
}

async fn run<H: Handler>(mut swarm: Swarm<Behaviour>, mut inbound: Inbound, handler: Arc<H>, config: NetConfig) {
    let (answers_tx, mut answers) = mpsc::unbounded_channel();
    let logs = LogServer {
        handler: handler.clone(),
        timeout: config.request_timeout,
        slots: Arc::new(Semaphore::new(MAX_LOG_STREAMS)),
    };
    let blobs = BlobServer {
        handler: handler.clone(),
        idle: config.request_timeout,
        finish: config.blob_finish_timeout,
        slots: Arc::new(Semaphore::new(MAX_BLOB_STREAMS)),
        per_peer: Default::default(),
    };
    loop {
        tokio::select! {
            event = swarm.select_next_some() => on_event(event, &handler, &answers_tx, &config),
            Some((peer, stream)) = inbound.logs.next() => logs.spawn(peer, stream),
            Some((peer, stream)) = inbound.blobs.next() => blobs.spawn(peer, stream),
            Some(answer) = answers.recv() => {
                // An Err means the request already failed (timeout, connection closed): the
                // behaviour reports that as an InboundFailure, nothing more to do here.
                let _ = match answer {
                    Answer::Attest(channel, response) => {
                        swarm.behaviour_mut().attest.send_response(channel, *response).map(drop).map_err(drop)
                    }
                    Answer::Quote(channel, response) => {
                        swarm.behaviour_mut().quote.send_response(channel, *response).map(drop).map_err(drop)
                    }
                    Answer::Provision(channel, response) => {
                        swarm.behaviour_mut().provision.send_response(channel, *response).map(drop).map_err(drop)
                    }
                    Answer::Profile(channel, response) => {
                        swarm.behaviour_mut().profile.send_response(channel, *response).map(drop).map_err(drop)
                    }
                };
            }
        }
    }
}

/// Runs one handler call in its own task, cut off at the request timeout, and queues its answer
/// for the swarm task (which alone may touch the response channel). A timed-out call is dropped;
/// the client then sees its own timeout.
fn answer_in_task<R: Send + 'static>(
    timeout: Duration,
    answers: &mpsc::UnboundedSender<Answer>,
    call: impl Future<Output = R> + Send + 'static,
    into_answer: impl FnOnce(R) -> Answer + Send + 'static,
) {
    let answers = answers.clone();
    tokio::spawn(async move {
        if let Ok(response) = tokio::time::timeout(timeout, call).await {
            let _ = answers.send(into_answer(response));
        }
    });
}

/// Answers one request: an invalid one (`Err`) at once with the protocol's error reply, a valid
/// one with the handler, in a task of its own.
fn serve<Req, Resp, F>(
    protocol: &'static str,
    peer: PeerId,
    request: Result<Req, pb::Error>,
    call: impl FnOnce(Req) -> F,
    answer: impl FnOnce(Resp) -> Answer + Send + 'static,
    answers: &mpsc::UnboundedSender<Answer>,
    timeout: Duration,
) where
    Resp: ErrorReply + Send + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    match request {
        Ok(request) => answer_in_task(timeout, answers, call(request), answer),
        Err(error) => {
            tracing::debug!(%peer, protocol, code = error.code, message = %error.message, "invalid request refused");
            let _ = answers.send(answer(Resp::refusal(error)));
        }
    }
}

fn on_event<H: Handler>(
    event: SwarmEvent<BehaviourEvent>,
    handler: &Arc<H>,
    answers: &mpsc::UnboundedSender<Answer>,
    config: &NetConfig,
) {
    use request_response::{Event, Message};
    let timeout = config.request_timeout;
    let handler = handler.clone();
    match event {
        SwarmEvent::Behaviour(BehaviourEvent::Attest(event)) => match event {
            Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => serve(
                tpod_wire::ATTEST_PROTOCOL,
                peer,
                request,
                |request| async move { handler.attest(peer, request).await },
                |r| Answer::Attest(channel, Box::new(r)),
                answers,
                timeout,
            ),
            other => log_other(tpod_wire::ATTEST_PROTOCOL, other),
        },
        SwarmEvent::Behaviour(BehaviourEvent::Quote(event)) => match event {
            Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => serve(
                tpod_wire::QUOTE_PROTOCOL,
                peer,
                request,
                |request| async move { handler.quote(peer, request).await },
                |r| Answer::Quote(channel, Box::new(r)),
                answers,
                timeout,
            ),
            other => log_other(tpod_wire::QUOTE_PROTOCOL, other),
        },
        SwarmEvent::Behaviour(BehaviourEvent::Provision(event)) => match event {
            Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => serve(
                tpod_wire::PROVISION_PROTOCOL,
                peer,
                request,
                |request| async move { handler.provision(peer, request).await },
                |r| Answer::Provision(channel, Box::new(r)),
                answers,
                timeout,
            ),
            other => log_other(tpod_wire::PROVISION_PROTOCOL, other),
        },
        SwarmEvent::Behaviour(BehaviourEvent::Profile(event)) => match event {
            Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => serve(
                tpod_wire::PROFILE_PROTOCOL,
                peer,
                request,
                |request| async move { handler.profile(peer, request).await },
                |r| Answer::Profile(channel, Box::new(r)),
                answers,
                timeout,
            ),
            other => log_other(tpod_wire::PROFILE_PROTOCOL, other),
        },
        SwarmEvent::IncomingConnectionError { send_back_addr, error, .. } => {
            tracing::debug!(%send_back_addr, %error, "incoming connection failed");
        }
        _ => {}
    }
}

fn log_other<Req, Resp>(protocol: &str, event: request_response::Event<Req, Resp>) {
    match event {
        // Streams that failed or timed out end here, as do answers that came too late.
        request_response::Event::InboundFailure { peer, error, .. } => {
            tracing::debug!(%peer, protocol, %error, "inbound request failed");
        }
        request_response::Event::ResponseSent { peer, .. } => tracing::trace!(%peer, protocol, "response sent"),
        // The provider sends no requests.
        request_response::Event::Message { .. } | request_response::Event::OutboundFailure { .. } => {}
    }
}
