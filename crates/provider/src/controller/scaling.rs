//! Scaling to zero: a pod whose manifest says `replicas.min: 0` is stopped once it has had no
//! request or connection in flight for its idle timeout, and woken by the next one.
//!
//! - **Down.** Each sample interval, [`Controller::scale_idle`] reads the ingress's activity for
//!   the pod's HTTP routes and TCP ports. An idle pod is billed up to that moment, its routes and
//!   ports are marked asleep (a request now waits for a wake instead of reaching a stopped
//!   container), activity is checked once more (a request that slipped in cancels), and
//!   [`Runtime::stop`] kills its processes and removes their cgroups. Its rootfs stays in memory
//!   (a tmpfs), its volumes and address stay: a wake then only starts processes, at the price of
//!   keeping the unpacked image in memory. From then on only its storage is billed
//!   ([`PodState::ScaledToZero`]); it keeps its capacity, so a wake never finds the provider
//!   full.
//! - **Up.** The ingress calls [`Controller::wake`] once for all the requests and connections
//!   that arrive while the pod sleeps, and holds them. The wake bills the time at zero (storage
//!   only), resumes the pod ([`Runtime::adopt`]), waits until the container's port accepts a
//!   connection (at most `[scaling] wake_timeout_secs`), marks it running and exposes it again;
//!   the held requests then go through. A wake that fails answers them 503 with the reason, which
//!   `tpod status` shows too, and leaves the pod at zero for the next try.
//! - **Asked.** A pod may ask to go down at once: a response carrying `X-Tpod-Scale-To-Zero:
//!   now` ([`tpod_ingress::SCALE_TO_ZERO_HEADER`], removed by the ingress) makes it idle as soon
//!   as nothing is in flight, whatever its timeout.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use alloy::primitives::B256;
use tpod_runtime::Runtime;
use tpod_wire::pb;

use super::{Controller, Refusal, hex, internal, lock, now_unix, route_key};
use crate::pod::PodDefinition;
use crate::store::{PodRecord, PodState};

/// What the controller keeps in memory about a pod that may scale to zero.
#[derive(Clone, Debug, Default)]
pub(super) struct Scaling {
    /// When its containers last started (deploy, wake, adoption): it is not idle before its
    /// timeout has passed since then.
    pub(super) awake_since: Option<Instant>,
    /// Its address, while it runs.
    pub(super) ip: Option<Ipv4Addr>,
    /// Its last wake.
    pub(super) last_wake: Option<pb::Wake>,
    /// The addresses of its replicas beyond the first, in order (see [`super::replicas`]).
    pub(super) extra: Vec<Ipv4Addr>,
    /// Since when fewer replicas would have done.
    pub(super) fewer_since: Option<Instant>,
    /// After a replica failed to start: not before then again.
    pub(super) retry_add_at: Option<Instant>,
}

/// Wakes pods for the ingress. Holds the controller weakly: the controller owns the routes,
/// which own this.
pub(super) struct PodWaker<R> {
    pub(super) controller: Weak<Controller<R>>,
}

impl<R: Runtime> tpod_ingress::Waker for PodWaker<R> {
    fn wake(&self, pod_id: &str) -> tpod_ingress::WakeFuture {
        let controller = self.controller.clone();
        let pod_id = pod_id.to_owned();
        Box::pin(async move {
            let controller = controller.upgrade().ok_or("the provider is shutting down")?;
            let pod: [u8; 32] = alloy::hex::decode(&pod_id)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("no pod {pod_id}"))?;
            controller.wake(pod).await.map(IpAddr::V4)
        })
    }
}

impl<R: Runtime> Controller<R> {
    /// The pod's idle timeout, if it may scale to zero.
    pub(super) fn idle_timeout(&self, def: &PodDefinition) -> Option<Duration> {
        let asked = def.scale_to_zero_after_secs?;
        Some(Duration::from_secs(self.parts.settings.config.scaling.idle_timeout_secs(asked)))
    }

    /// Notes that the pod's containers (re)started at `ip`.
    pub(super) fn note_awake(&self, pod_id: &[u8; 32], ip: Ipv4Addr) {
        let mut scaling = lock(&self.scaling);
        let entry = scaling.entry(*pod_id).or_default();
        entry.awake_since = Some(Instant::now());
        entry.ip = Some(ip);
    }

    /// The pod's last wake, for its status.
    pub(super) fn last_wake(&self, pod_id: &[u8; 32]) -> Option<pb::Wake> {
        lock(&self.scaling).get(pod_id).and_then(|s| s.last_wake.clone())
    }

    /// Requests or connections in flight to the pod now, when the last one was, and whether
    /// the pod asked to be scaled to zero (a response with `X-Tpod-Scale-To-Zero: now`).
    pub(super) fn activity(&self, record: &PodRecord, def: &PodDefinition) -> (u64, Option<Instant>, bool) {
        let key = hex(&record.pod_id);
        let http = def.http_ports().filter_map(|p| self.parts.routes.activity(&route_key(&key, p.container_port)));
        let (mut in_flight, mut last, mut asked) = (0, None, false);
        for activity in http.chain(self.parts.tcp.activity(&key)) {
            in_flight += activity.in_flight;
            last = last.max(Some(activity.last_active));
            asked |= activity.sleep_requested;
        }
        (in_flight, last, asked)
    }

    /// Scales down each running pod that may scale to zero and has been idle for its timeout.
    pub(super) async fn scale_idle(self: &Arc<Self>) {
        let pods = self.parts.store.list_pods().unwrap_or_default();
        for pod in pods.iter().filter(|p| matches!(p.state, PodState::Running)) {
            let Ok(def) = serde_json::from_str::<PodDefinition>(&pod.manifest_json) else { continue };
            let Some(timeout) = self.idle_timeout(&def) else { continue };
            let (in_flight, last, asked) = self.activity(pod, &def);
            let awake = lock(&self.scaling).get(&pod.pod_id).and_then(|s| s.awake_since);
            let quiet_since = last.max(awake);
            if in_flight > 0 || (!asked && quiet_since.is_some_and(|t| t.elapsed() < timeout)) {
                continue;
            }
            if let Err(e) = self.scale_down(&pod.pod_id).await {
                tracing::warn!(pod = %B256::from(pod.pod_id), error = %e, "could not scale the pod to zero");
            }
        }
    }

    /// Stops an idle pod, keeping everything but its processes. Returns whether it went to
    /// zero (a request that arrived meanwhile keeps it running).
    async fn scale_down(self: &Arc<Self>, pod_id: &[u8; 32]) -> Result<bool, Refusal> {
        let _ops = self.ops.lock().await;
        let Some(mut record) = self.parts.store.get_pod(pod_id).map_err(internal)? else { return Ok(false) };
        if !matches!(record.state, PodState::Running) {
            return Ok(false);
        }
        let def: PodDefinition = serde_json::from_str(&record.manifest_json).map_err(internal)?;
        // Billed as running up to here.
        self.sample(Some(pod_id)).await?;
        self.sleep_routes(&record, &def);
        if self.activity(&record, &def).0 > 0 {
            // A request got in before the routes slept: the pod stays up.
            let ip = lock(&self.scaling).get(pod_id).and_then(|s| s.ip);
            if let Some(ip) = ip {
                self.wake_routes(&record, &def, ip);
            }
            return Ok(false);
        }
        self.remove_extra_replicas(&record).await;
        self.runtime.stop(&hex(pod_id)).await.map_err(internal)?;
        record.state = PodState::ScaledToZero { since_unix: now_unix() };
        record.updated_at_unix = now_unix();
        self.parts.store.put_pod(&record).map_err(internal)?;
        // The CPU used while stopping, with the pod now counted at zero.
        self.sample(Some(pod_id)).await?;
        tracing::info!(pod = %B256::from(*pod_id), "pod scaled to zero");
        Ok(true)
    }

    /// Routes the pod's host names and TCP ports as asleep, after a provider restart found it at
    /// zero: its address is not known until it wakes.
    pub(super) async fn expose_asleep(
        self: &Arc<Self>,
        record: &PodRecord,
        def: &PodDefinition,
    ) -> Result<(), Refusal> {
        let unknown = tpod_runtime::PodEndpoint { ip: Ipv4Addr::UNSPECIFIED };
        let mut record = record.clone();
        record.tcp_ports = self.expose(&record, def, unknown).await?;
        self.sleep_routes(&record, def);
        self.parts.store.put_pod(&record).map_err(internal)?;
        Ok(())
    }

    /// Points the pod's sleeping routes and TCP ports at `ip` again.
    fn wake_routes(&self, record: &PodRecord, def: &PodDefinition, ip: Ipv4Addr) {
        let key = hex(&record.pod_id);
        for port in def.http_ports() {
            self.parts.routes.set_awake(&route_key(&key, port.container_port), IpAddr::V4(ip));
        }
        self.parts.tcp.set_awake(&key, IpAddr::V4(ip));
    }

    /// Marks the pod's routes and TCP ports asleep: what arrives next wakes it (once for all).
    pub(super) fn sleep_routes(self: &Arc<Self>, record: &PodRecord, def: &PodDefinition) {
        let key = hex(&record.pod_id);
        let waker: Arc<dyn tpod_ingress::Waker> = Arc::new(PodWaker { controller: Arc::downgrade(self) });
        // The controller's own deadline comes first, with its reason.
        let timeout = Duration::from_secs(self.parts.settings.config.scaling.wake_timeout_secs + 10);
        let wake = tpod_ingress::Wake::with_timeout(key.clone(), waker, timeout);
        for port in def.http_ports() {
            self.parts.routes.set_asleep(&route_key(&key, port.container_port), wake.clone());
        }
        self.parts.tcp.set_asleep(&key, wake);
    }

    /// Wakes a pod at zero; returns its address once its ports answer. A running pod answers
    /// at once.
    pub(super) async fn wake(self: &Arc<Self>, pod_id: [u8; 32]) -> Result<Ipv4Addr, String> {
        let started = Instant::now();
        let _ops = self.ops.lock().await;
        let record = self
            .parts
            .store
            .get_pod(&pod_id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("pod {} is gone", B256::from(pod_id)))?;
        let def: PodDefinition = serde_json::from_str(&record.manifest_json).map_err(|e| e.to_string())?;
        match record.state {
            PodState::Running => {
                let ip = lock(&self.scaling).get(&pod_id).and_then(|s| s.ip);
                return ip.ok_or_else(|| "the pod has no address".to_owned());
            }
            PodState::ScaledToZero { .. } => {}
            ref other => return Err(format!("the pod is not running ({other:?})")),
        }
        let result = self.wake_inner(record, &def).await;
        let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let wake = pb::Wake { at_unix: now_unix(), millis, error: result.as_ref().err().cloned().unwrap_or_default() };
        lock(&self.scaling).entry(pod_id).or_default().last_wake = Some(wake);
        match &result {
            Ok(_) => tracing::info!(pod = %B256::from(pod_id), millis, "pod woken"),
            Err(e) => tracing::warn!(pod = %B256::from(pod_id), error = %e, "wake failed"),
        }
        result
    }

    async fn wake_inner(&self, record: PodRecord, def: &PodDefinition) -> Result<Ipv4Addr, String> {
        let pod_id = record.pod_id;
        // The time at zero is billed as such (storage only) before the state changes.
        self.sample(Some(&pod_id)).await.map_err(|e| e.to_string())?;
        let spec = self.runtime_spec(&pod_id, def).map_err(|e| e.to_string())?;
        let resuming = Instant::now();
        let endpoint = match self.runtime.adopt(spec).await {
            Ok(endpoint) => endpoint,
            Err(e) => {
                let _ = self.runtime.stop(&hex(&pod_id)).await;
                return Err(format!("the pod could not start: {e}"));
            }
        };
        let resumed = resuming.elapsed();
        let timeout = Duration::from_secs(self.parts.settings.config.scaling.wake_timeout_secs);
        let deadline = tokio::time::Instant::now() + timeout;
        if let Some(port) = super::replicas::first_silent_port(def, endpoint.ip, deadline).await {
            // Back to zero: a pod that does not answer is not billed as running.
            let _ = self.runtime.stop(&hex(&pod_id)).await;
            return Err(format!("the pod started but its port {port} did not answer within {}s", timeout.as_secs()));
        }
        let mut record = record;
        record.state = PodState::Running;
        record.updated_at_unix = now_unix();
        self.parts.store.put_pod(&record).map_err(|e| e.to_string())?;
        self.wake_routes(&record, def, endpoint.ip);
        self.note_awake(&pod_id, endpoint.ip);
        // Where a wake's time goes: starting the processes, then the program opening its ports.
        tracing::debug!(pod = %B256::from(pod_id), resume_ms = resumed.as_millis(),
            ports_ms = (resuming.elapsed() - resumed).as_millis(), "wake steps");
        Ok(endpoint.ip)
    }
}

/// Whether `addr` accepts a TCP connection before `deadline`, tried every 10 ms.
pub(super) async fn port_answers(addr: SocketAddr, deadline: tokio::time::Instant) -> bool {
    loop {
        let attempt = tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(addr)).await;
        if matches!(attempt, Ok(Ok(_))) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
