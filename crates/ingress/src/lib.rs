//! The provider's ingress: how traffic from the outside world reaches pods.
//!
//! - [`HttpIngress`] is a reverse proxy that picks the pod by the request's host name
//!   (`<pod-id>.pods.<domain>` or a custom domain) from a shared [`Routes`] table and forwards
//!   the request over HTTP/1.1 to the pod's address, streaming bodies both ways. Connections to
//!   pods are kept alive and reused (a bounded pool per pod backend), `Upgrade` requests
//!   (WebSocket...) are spliced through after the pod's 101, the pod's response headers are
//!   awaited at most [`IngressConfig::response_header_timeout`] (504 beyond), and each pod has
//!   at most [`IngressConfig::max_in_flight_per_pod`] requests in flight (503 beyond). The pod
//!   learns the client from `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`,
//!   `Forwarded` and `X-Real-IP`, always set from the connection: copies sent by the client are
//!   dropped.
//! - [`TcpForwards`] exposes raw TCP ports: each host port forwards every connection to one
//!   pod address by copying bytes in userspace.
//!
//! Scale to zero: a pod's routes and forwards can be put to sleep with a [`Wake`] (the
//! provider's [`Waker`], shared by all of them). The first request or connection for a sleeping
//! pod runs the waker once; everything arriving meanwhile is held and forwarded when it
//! returns the pod's address, or answered 503 with its reason. [`Routes::activity`] and
//! [`TcpForwards::activity`] tell the provider how busy each pod is and since when it is idle.
//!
//! The ingress counts the body bytes it carries for each pod ([`Routes::traffic`]) because
//! ingress and egress bytes are metered resources (see the pricing section of the design).
//! The provider controller owns the routing decisions; this crate only applies them.

mod activity;
mod balance;
mod body;
mod config;
mod error;
mod host;
mod http;
mod routes;
mod tcp;
mod wake;

use std::time::Duration;

pub use activity::Activity;

/// A response header by which a pod asks to be scaled to zero as soon as its requests in
/// flight are done (value `now`, any case), instead of after its idle timeout. The ingress
/// removes it from the response.
pub const SCALE_TO_ZERO_HEADER: &str = "x-tpod-scale-to-zero";
pub use config::{
    IngressConfig, MAX_IN_FLIGHT_PER_POD, POOL_IDLE_TIMEOUT, POOL_MAX_IDLE_PER_POD, RESPONSE_HEADER_TIMEOUT,
};
pub use error::IngressError;
pub use http::HttpIngress;
pub use routes::{Routes, Traffic};
pub use tcp::TcpForwards;
pub use wake::{DEFAULT_WAKE_TIMEOUT, Wake, WakeFuture, Waker};

/// How long connecting to a pod's backend may take before the ingress gives up (HTTP answers
/// 504, a forwarded TCP connection is closed).
pub const BACKEND_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client may take to send a request's headers (and how long an idle keep-alive
/// connection is kept), so that slow clients cannot hold connections forever.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
