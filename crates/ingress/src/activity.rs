//! Per-pod counters the ingress feeds as traffic flows: body bytes for metering, and requests
//! or connections in flight with the time of the last one, for idle detection and autoscaling.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::balance::{Backend, Outstanding};

/// What a pod is doing right now, as the ingress sees it ([`crate::Routes::activity`],
/// [`crate::TcpForwards::activity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    /// Requests and connections in flight: HTTP requests from the moment they are routed
    /// (including those held while the pod wakes) until their response body is sent, upgraded
    /// connections (WebSocket...) and forwarded TCP connections while they are open.
    pub in_flight: u64,
    /// When a request or connection last started or ended; when the routes were set (or the
    /// forward opened) if none came since. A pod is idle when `in_flight` is 0 and this is
    /// older than its idle timeout.
    pub last_active: Instant,
    /// The pod asked to be scaled to zero now: a response of its carried
    /// [`crate::SCALE_TO_ZERO_HEADER`] since its routes were last set or woken.
    pub sleep_requested: bool,
}

/// The live counters of one pod, shared with the bodies and connections in flight so counting
/// takes no lock.
#[derive(Debug)]
pub(crate) struct Counters {
    /// Request body (and upgraded client-to-pod) bytes.
    pub(crate) ingress: AtomicU64,
    /// Response body (and upgraded pod-to-client) bytes.
    pub(crate) egress: AtomicU64,
    in_flight: AtomicU64,
    /// Nanoseconds since [`epoch`]: an `Instant` does not fit an atomic.
    last_active: AtomicU64,
    sleep_requested: AtomicBool,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            ingress: AtomicU64::new(0),
            egress: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            last_active: AtomicU64::new(now()),
            sleep_requested: AtomicBool::new(false),
        }
    }
}

impl Counters {
    /// Marks the pod active now.
    pub(crate) fn touch(&self) {
        self.last_active.fetch_max(now(), Ordering::Relaxed);
    }

    /// Counts one more request or connection in flight, unless `limit` already are: then `None`
    /// and nothing is counted.
    pub(crate) fn enter(self: &Arc<Self>, limit: u64) -> Option<InFlight> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= limit {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        self.touch();
        Some(InFlight { counters: Arc::clone(self), _replica: None })
    }

    pub(crate) fn activity(&self) -> Activity {
        Activity {
            in_flight: self.in_flight.load(Ordering::Acquire),
            last_active: epoch() + Duration::from_nanos(self.last_active.load(Ordering::Relaxed)),
            sleep_requested: self.sleep_requested.load(Ordering::Acquire),
        }
    }

    /// Records that the pod asked to be scaled to zero, or (false) clears it once it runs anew.
    pub(crate) fn request_sleep(&self, requested: bool) {
        self.sleep_requested.store(requested, Ordering::Release);
    }
}

/// One request or connection in flight: counted until dropped, for the pod and, once it is sent
/// to one, for the replica ([`InFlight::to`]).
#[derive(Debug)]
pub(crate) struct InFlight {
    counters: Arc<Counters>,
    _replica: Option<Outstanding>,
}

impl InFlight {
    /// Counts it against `replica` too, from now until it ends.
    pub(crate) fn to(mut self, replica: Option<&Backend>) -> Self {
        self._replica = replica.map(Backend::enter);
        self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.counters.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.counters.touch();
    }
}

/// A fixed point in the process's past that activity times count from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now() -> u64 {
    // u64 nanoseconds last 584 years of uptime.
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}
