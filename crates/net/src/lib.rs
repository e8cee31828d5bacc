//! Networking: the libp2p host of publisher and provider (TCP, noise, yamux) and the protocols
//! named in `tpod-wire`, behind a small API that hides the swarm.
//!
//! - [`Provider::listen`] answers `/tpod/attest/1`, `/tpod/quote/1`, `/tpod/provision/1` and
//!   `/tpod/profile/1` (request-response),
//!   `/tpod/logs/1` (a request, then a stream of log chunks) and `/tpod/blob/1` (an offer, then a
//!   stream of chunks of an upload) with a [`Handler`], which sees the authenticated peer id of
//!   every request. A request that is malformed, oversized or of another version never reaches
//!   the handler: it is answered with the protocol's error reply (code and reason, see
//!   `tpod_wire::codes`) and the stream closed.
//! - [`Client::connect`] sends requests to a provider by peer id and address, follows its logs
//!   ([`Client::logs`]) and uploads blobs by CID, verified chunk by chunk and resumably
//!   ([`Client::push_blob`]). An error reply from the provider is an error of the call,
//!   [`RequestErrorKind::Refused`] with the provider's code and reason.
//!
//! Every message from the network goes through `tpod-wire`'s bounded framing and validation:
//! [`WireCodec`] for the request-response protocols, the same reader for the streamed ones.

mod blob;
mod client;
mod codec;
mod error;
mod keys;
mod logs;
mod provider;

use std::time::Duration;

pub use blob::{MAX_RECONNECTS, Progress, PushReport};
pub use client::Client;
pub use codec::WireCodec;
pub use error::{NetError, RequestError, RequestErrorKind};
pub use keys::{generate_keypair, load_keypair, load_or_generate_keypair, save_keypair};
pub use libp2p::{Multiaddr, PeerId, identity::Keypair};
pub use provider::{Handler, Provider};

use libp2p::{
    StreamProtocol, Swarm, SwarmBuilder, noise,
    request_response::{self, ProtocolSupport},
    swarm::NetworkBehaviour,
    tcp, yamux,
};
use tpod_wire::pb::{
    AttestRequest, AttestResponse, ProfileRequest, ProfileResponse, ProvisionResponse, QuoteRequest, QuoteResponse,
    SignedRequest,
};

/// Settings shared by [`Provider`] and [`Client`].
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// How long a request may take, from sending it to reading the response (client side), or
    /// from reading it to answering (provider side: the handler is abandoned after this).
    pub request_timeout: Duration,
    /// How long a connection without open requests is kept, so that a publisher's follow-up
    /// request (quote, then provision) reuses the authenticated connection.
    pub idle_connection_timeout: Duration,
    /// How long storing the last chunk of a blob may take, which includes verifying the whole
    /// blob against its CID and syncing it to disk (provider side), and how long a publisher
    /// waits for that answer. Every other step of an upload is bounded by `request_timeout`,
    /// counted from the last progress.
    pub blob_finish_timeout: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            idle_connection_timeout: Duration::from_secs(60),
            blob_finish_timeout: Duration::from_secs(600),
        }
    }
}

/// Codec of the attestation protocol.
type AttestCodec = WireCodec<AttestRequest, AttestResponse>;
/// Codec of the quote protocol.
type QuoteCodec = WireCodec<QuoteRequest, QuoteResponse>;
/// Codec of the provision protocol.
type ProvisionCodec = WireCodec<SignedRequest, ProvisionResponse>;
/// Codec of the profile protocol.
type ProfileCodec = WireCodec<ProfileRequest, ProfileResponse>;

/// The protocols both sides speak; the provider supports them inbound, the client outbound.
/// `stream` carries the logs and blob protocols, which are not request-response: the provider
/// registers them for inbound streams, the client opens streams through a
/// [`libp2p_stream::Control`].
#[derive(NetworkBehaviour)]
struct Behaviour {
    attest: request_response::Behaviour<AttestCodec>,
    quote: request_response::Behaviour<QuoteCodec>,
    provision: request_response::Behaviour<ProvisionCodec>,
    profile: request_response::Behaviour<ProfileCodec>,
    stream: libp2p_stream::Behaviour,
}

/// Builds a TCP + noise + yamux swarm whose behaviour supports the protocols as `support`.
fn build_swarm(keypair: Keypair, support: ProtocolSupport, config: &NetConfig) -> Result<Swarm<Behaviour>, NetError> {
    let rr_config = request_response::Config::default().with_request_timeout(config.request_timeout);
    let behaviour = Behaviour {
        attest: request_response::Behaviour::new(
            [(StreamProtocol::new(tpod_wire::ATTEST_PROTOCOL), support.clone())],
            rr_config.clone(),
        ),
        quote: request_response::Behaviour::new(
            [(StreamProtocol::new(tpod_wire::QUOTE_PROTOCOL), support.clone())],
            rr_config.clone(),
        ),
        provision: request_response::Behaviour::new(
            [(StreamProtocol::new(tpod_wire::PROVISION_PROTOCOL), support.clone())],
            rr_config.clone(),
        ),
        profile: request_response::Behaviour::new(
            [(StreamProtocol::new(tpod_wire::PROFILE_PROTOCOL), support)],
            rr_config,
        ),
        stream: libp2p_stream::Behaviour::new(),
    };
    let idle = config.idle_connection_timeout;
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| NetError::Transport(e.to_string()))?
        .with_behaviour(|_| behaviour)
        .map_err(|e| NetError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    Ok(swarm)
}
