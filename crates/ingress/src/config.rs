//! Tunables of the ingress, with defaults fit for a provider; tests shorten the timeouts.

use std::time::Duration;

use crate::{BACKEND_CONNECT_TIMEOUT, HEADER_READ_TIMEOUT};

/// How long a pod may take to send its response headers once the request is sent (after the
/// request body, for uploads) before the client gets 504.
pub const RESPONSE_HEADER_TIMEOUT: Duration = Duration::from_secs(60);

/// Requests (HTTP, including upgraded connections) or connections (TCP forwards) one pod may
/// have in flight before new ones get 503 (HTTP) or are closed (TCP).
pub const MAX_IN_FLIGHT_PER_POD: u64 = 1024;

/// How long an idle keep-alive connection to a pod is kept. Below the shortest keep-alive
/// timeout common servers use (Node.js closes idle connections after 5 s), so the ingress
/// rarely sends a request on a connection the pod is closing at that moment.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Idle keep-alive connections kept per pod backend; more are closed when they become idle.
pub const POOL_MAX_IDLE_PER_POD: usize = 64;

/// Settings of [`crate::HttpIngress::bind_with`] and [`crate::TcpForwards::with_config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressConfig {
    /// How long connecting to a pod may take (HTTP answers 504, a TCP forward closes).
    pub connect_timeout: Duration,
    /// How long a pod may take to answer with its response headers (504 beyond).
    pub response_header_timeout: Duration,
    /// How long a client may take to send a request's headers, and how long its idle
    /// keep-alive connection is kept.
    pub client_header_timeout: Duration,
    /// Most requests or connections in flight per pod (per route for HTTP, per pod for TCP
    /// forwards); 503 or a closed connection beyond.
    pub max_in_flight_per_pod: u64,
    /// How long an idle connection to a pod stays in the pool.
    pub pool_idle_timeout: Duration,
    /// Most idle connections kept per pod backend.
    pub pool_max_idle_per_pod: usize,
}

impl Default for IngressConfig {
    fn default() -> Self {
        Self {
            connect_timeout: BACKEND_CONNECT_TIMEOUT,
            response_header_timeout: RESPONSE_HEADER_TIMEOUT,
            client_header_timeout: HEADER_READ_TIMEOUT,
            max_in_flight_per_pod: MAX_IN_FLIGHT_PER_POD,
            pool_idle_timeout: POOL_IDLE_TIMEOUT,
            pool_max_idle_per_pod: POOL_MAX_IDLE_PER_POD,
        }
    }
}
