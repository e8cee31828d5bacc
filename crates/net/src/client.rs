//! The publisher side: sends quote and provision requests to providers by peer id and address,
//! through a swarm running in a background task driven by a command channel.

use std::{collections::HashMap, time::Duration};

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm,
    identity::Keypair,
    request_response::{self, OutboundFailure, OutboundRequestId, ProtocolSupport},
    swarm::{DialError, SwarmEvent},
};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tpod_wire::{
    PROVISION_PROTOCOL, QUOTE_PROTOCOL,
    pb::{ProvisionResponse, QuoteRequest, QuoteResponse, SignedRequest},
};

use crate::{Behaviour, BehaviourEvent, NetConfig, NetError, RequestErrorKind, build_swarm};

type Reply<T> = oneshot::Sender<Result<T, NetError>>;

enum Command {
    Quote { peer: PeerId, addr: Multiaddr, request: QuoteRequest, reply: Reply<QuoteResponse> },
    Provision { peer: PeerId, addr: Multiaddr, request: SignedRequest, reply: Reply<ProvisionResponse> },
}

/// A client of providers. The swarm runs in a background task, stopped when this is dropped;
/// connections are reused between requests to the same peer.
#[derive(Debug)]
pub struct Client {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    request_timeout: Duration,
    task: JoinHandle<()>,
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
        let (commands, rx) = mpsc::channel(64);
        let task = runtime.spawn(run(swarm, rx, config.request_timeout));
        Ok(Self { peer_id, commands, request_timeout: config.request_timeout, task })
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

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Requests in flight, per protocol, and the last dial error per peer, kept to explain the
/// behaviour's bare `DialFailure` (the swarm reports the cause first, as a separate event).
struct State {
    quotes: HashMap<OutboundRequestId, Reply<QuoteResponse>>,
    provisions: HashMap<OutboundRequestId, Reply<ProvisionResponse>>,
    dial_errors: HashMap<PeerId, DialError>,
    timeout: Duration,
}

async fn run(mut swarm: Swarm<Behaviour>, mut commands: mpsc::Receiver<Command>, timeout: Duration) {
    let mut state = State { quotes: HashMap::new(), provisions: HashMap::new(), dial_errors: HashMap::new(), timeout };
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
                SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), error, .. } => {
                    state.dial_errors.insert(peer, error);
                }
                _ => {}
            },
        }
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
                    Some(DialError::WrongPeerId { obtained, address }) => {
                        RequestErrorKind::WrongPeer { address: address.clone(), obtained: *obtained }
                    }
                    Some(error) => RequestErrorKind::Dial(error.to_string()),
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
