//! The provider's ingress: how traffic from the outside world reaches pods.
//!
//! - [`HttpIngress`] is a reverse proxy that picks the pod by the request's host name
//!   (`<pod-id>.pods.<domain>` or a custom domain) from a shared [`Routes`] table and forwards
//!   the request over HTTP/1.1 to the pod's address, streaming bodies both ways.
//! - [`TcpForwards`] exposes raw TCP ports: each host port forwards every connection to one
//!   pod address by copying bytes in userspace.
//!
//! The ingress counts the body bytes it carries for each pod ([`Routes::traffic`]) because
//! ingress and egress bytes are metered resources (see the pricing section of the design).
//! The provider controller owns the routing decisions; this crate only applies them.

mod body;
mod error;
mod host;
mod http;
mod routes;
mod tcp;

use std::time::Duration;

pub use error::IngressError;
pub use http::HttpIngress;
pub use routes::{Routes, Traffic};
pub use tcp::TcpForwards;

/// How long connecting to a pod's backend may take before the ingress gives up (HTTP answers
/// 504, a forwarded TCP connection is closed).
pub const BACKEND_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client may take to send a request's headers (and how long an idle keep-alive
/// connection is kept), so that slow clients cannot hold connections forever.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
