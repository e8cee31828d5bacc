//! Errors of setting up the ingress. Errors while serving a request are answered on the wire
//! (404, 502, 504...) and logged, never returned.

use std::io;
use std::net::SocketAddr;

/// Why the ingress could not start listening.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// Binding the listening socket failed (address in use, no permission for a low port...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The bound socket's address could not be read back.
    #[error("cannot read the address of the listening socket: {0}")]
    LocalAddr(#[source] io::Error),
}
