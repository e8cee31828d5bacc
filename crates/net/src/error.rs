//! Errors of the network host.

use std::{path::PathBuf, time::Duration};

use libp2p::{Multiaddr, PeerId};

/// Why a network operation failed. Request errors name the peer and the protocol, since a
/// publisher talks to many providers.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A request to a peer failed; boxed because peer ids are large and errors should stay small.
    #[error(transparent)]
    Request(Box<RequestError>),
    /// Listening on an address failed.
    #[error("cannot listen on {address}: {reason}")]
    Listen {
        /// Address asked for.
        address: Multiaddr,
        /// What went wrong.
        reason: String,
    },
    /// The transport or behaviour could not be set up.
    #[error("network setup failed: {0}")]
    Transport(String),
    /// The background network task is gone (it panicked or was shut down).
    #[error("the network task has stopped")]
    Stopped,
    /// Reading a local file to upload failed.
    #[error("blob file {path}: {source}")]
    BlobFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Reading or writing a keypair file failed.
    #[error("keypair file {path}: {source}")]
    KeyIo {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A keypair file does not hold a valid protobuf-encoded keypair.
    #[error("keypair file {path}: {reason}")]
    KeyDecode {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// A failed request: to whom, on which protocol, and why.
#[derive(Debug, thiserror::Error)]
#[error("{protocol} request to {peer}: {kind}")]
pub struct RequestError {
    /// Peer the request was for.
    pub peer: PeerId,
    /// Protocol id of the request.
    pub protocol: &'static str,
    /// What went wrong.
    pub kind: RequestErrorKind,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestErrorKind {
    /// No response within the request timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The remote at the address authenticated (noise) as another peer than the one asked for.
    #[error("the remote at {address} is {obtained} (wrong peer id)")]
    WrongPeer {
        /// Address dialed.
        address: Multiaddr,
        /// Peer id the remote proved.
        obtained: PeerId,
    },
    /// No connection to the peer could be established.
    #[error("could not connect: {0}")]
    Dial(String),
    /// The request failed after connecting: stream error, malformed or oversized response,
    /// connection closed, or the peer does not speak the protocol.
    #[error("failed: {0}")]
    Failed(String),
    /// The provider answered with an error: it refused the request or could not carry it out.
    #[error("refused by the provider: {message} (code {code})")]
    Refused {
        /// Error code set by the provider (HTTP-like, e.g. 403, 409).
        code: u32,
        /// The provider's explanation.
        message: String,
    },
}

impl NetError {
    /// A [`NetError::Request`].
    pub(crate) fn request(peer: PeerId, protocol: &'static str, kind: RequestErrorKind) -> Self {
        Self::Request(Box::new(RequestError { peer, protocol, kind }))
    }

    /// The provider's refusal `(code, message)`, if this is one.
    pub fn refusal(&self) -> Option<(u32, &str)> {
        match self.as_request().map(|e| &e.kind) {
            Some(RequestErrorKind::Refused { code, message }) => Some((*code, message)),
            _ => None,
        }
    }

    /// The request failure, if this is one.
    pub fn as_request(&self) -> Option<&RequestError> {
        match self {
            Self::Request(error) => Some(error),
            _ => None,
        }
    }
}
