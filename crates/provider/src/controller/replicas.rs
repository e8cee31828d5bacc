//! Replicas: a pod whose manifest says `replicas: {min, max}` with `max` > 1 runs between
//! `max(min, 1)` and `max` instances, scaled on the requests and connections the ingress has in
//! flight for it (as KEDA's HTTP add-on and Knative do).
//!
//! - **Instances.** Replica 0 is the pod itself (runtime id = pod id): deployed, updated,
//!   scaled to zero and woken as any pod. Replica `k` ≥ 1 is a runtime pod of its own
//!   ([`replica_id`]), made from the same spec: its own address, rootfs, emptyDir and secret
//!   volumes. A filesystem volume would diverge between replicas, so such a manifest is refused
//!   at admission.
//! - **Up.** Each sample interval, [`Controller::autoscale`] compares the pod's requests in
//!   flight with its target concurrency per replica (`replicas.targetConcurrency`, else
//!   `[scaling] target_concurrency`) and starts the replicas missing, each routed once its ports
//!   answer. The ingress sends each request to the replica with the fewest in flight.
//! - **Down.** When fewer replicas would do, for the pod's whole idle timeout, the extra ones
//!   are taken out of the routes, given a moment to finish what they serve, and deleted. A pod
//!   with `min: 0` then scales to zero as a single pod does.
//! - **Billing.** Each running replica is metered: its CPU and memory reservation, its storage
//!   and the CPU it uses ([`Controller::replica_ids`] are summed by the billing sample). Before
//!   every change the pod is sampled, so each replica is billed for exactly the time it ran.
//! - **Capacity.** Admission reserves room for `max` replicas, so scaling up never finds the
//!   provider full (as a pod at zero keeps its capacity for its wake).
//! - **Restarts.** The count lives in memory: after a provider restart a pod runs its `min`
//!   replicas (the others are removed as orphans) and scales up again as load needs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{B256, keccak256};
use tpod_runtime::Runtime;

use super::{Controller, Refusal, hex, internal, lock, route_key};
use crate::pod::PodDefinition;
use crate::store::{PodRecord, PodState};

/// How long a replica taken out of the routes may finish the requests it serves before it is
/// deleted.
const DRAIN: Duration = Duration::from_secs(2);
/// How long a pod whose replica could not be started waits before another is tried: each try
/// holds the provider's operations for up to the wake timeout.
const RETRY_ADD: Duration = Duration::from_secs(30);

/// The runtime's name for replica `index` of a pod: the pod id for replica 0, a digest of the
/// pod id and index for the others (64 hex digits, like a pod id, so host-side names stay
/// distinct).
pub fn replica_id(pod_id: &[u8; 32], index: u32) -> String {
    if index == 0 {
        return hex(pod_id);
    }
    let mut input = Vec::with_capacity(48);
    input.extend_from_slice(b"tpod replica");
    input.extend_from_slice(pod_id);
    input.extend_from_slice(&index.to_be_bytes());
    alloy::hex::encode(keccak256(input))
}

/// The pod among `pods` whose extra replica the runtime knows as `id`, if any.
pub(super) fn owner(pods: &[PodRecord], id: &str) -> Option<[u8; 32]> {
    pods.iter().find_map(|p| {
        let max = serde_json::from_str::<PodDefinition>(&p.manifest_json).map_or(1, |d| d.max_replicas);
        (1..max).any(|k| replica_id(&p.pod_id, k) == id).then_some(p.pod_id)
    })
}

/// How many replicas a load of `in_flight` needs at `target` per replica, within `min..=max`
/// (at least one: scaling to zero is decided apart, on idleness).
fn wanted(in_flight: u64, target: u32, min: u32, max: u32) -> u32 {
    let needed = in_flight.div_ceil(u64::from(target.max(1)));
    let needed = u32::try_from(needed).unwrap_or(u32::MAX);
    needed.clamp(min.max(1), max.max(1))
}

impl<R: Runtime> Controller<R> {
    /// The runtime ids of the pod's replicas that exist now: the pod itself, then the extra ones.
    pub(super) fn replica_ids(&self, pod_id: &[u8; 32]) -> Vec<String> {
        let extra = lock(&self.scaling).get(pod_id).map_or(0, |s| s.extra.len());
        (0..=u32::try_from(extra).unwrap_or(u32::MAX)).map(|k| replica_id(pod_id, k)).collect()
    }

    /// Starts or removes replicas of every running pod that has them, as its load asks.
    pub(super) async fn autoscale(self: &Arc<Self>) {
        let pods = self.parts.store.list_pods().unwrap_or_default();
        for pod in pods.iter().filter(|p| matches!(p.state, PodState::Running)) {
            let Ok(def) = serde_json::from_str::<PodDefinition>(&pod.manifest_json) else { continue };
            if def.max_replicas <= 1 {
                continue;
            }
            let scaling = &self.parts.settings.config.scaling;
            let target = scaling.target_concurrency(def.target_concurrency);
            let in_flight = self.activity(pod, &def).0;
            let want = wanted(in_flight, target, def.min_replicas, def.max_replicas);
            let have = u32::try_from(self.replica_ids(&pod.pod_id).len()).unwrap_or(u32::MAX);
            let result = if want > have {
                self.note_fewer_wanted(&pod.pod_id, false);
                let retry_at = lock(&self.scaling).get(&pod.pod_id).and_then(|s| s.retry_add_at);
                if retry_at.is_some_and(|at| Instant::now() < at) {
                    continue;
                }
                let added = self.add_replicas(&pod.pod_id, want).await;
                lock(&self.scaling).entry(pod.pod_id).or_default().retry_add_at =
                    added.is_err().then(|| Instant::now() + RETRY_ADD);
                added
            } else if want < have {
                // Fewer for the whole idle timeout, not just this instant.
                let idle = Duration::from_secs(scaling.idle_timeout_secs(def.idle_timeout_secs));
                if self.note_fewer_wanted(&pod.pod_id, true).is_some_and(|since| since.elapsed() >= idle) {
                    self.note_fewer_wanted(&pod.pod_id, false);
                    self.shrink(&pod.pod_id, want).await
                } else {
                    Ok(())
                }
            } else {
                self.note_fewer_wanted(&pod.pod_id, false);
                Ok(())
            };
            if let Err(e) = result {
                tracing::warn!(pod = %B256::from(pod.pod_id), error = %e, "could not scale the pod's replicas");
            }
        }
    }

    /// Records whether fewer replicas would do now; returns since when they would.
    fn note_fewer_wanted(&self, pod_id: &[u8; 32], fewer: bool) -> Option<Instant> {
        let mut scaling = lock(&self.scaling);
        let entry = scaling.entry(*pod_id).or_default();
        if fewer {
            Some(*entry.fewer_since.get_or_insert_with(Instant::now))
        } else {
            entry.fewer_since = None;
            None
        }
    }

    /// Starts replicas until the pod has `want`, each routed once its ports answer.
    async fn add_replicas(&self, pod_id: &[u8; 32], want: u32) -> Result<(), Refusal> {
        let _ops = self.ops.lock().await;
        let Some(record) = self.parts.store.get_pod(pod_id).map_err(internal)? else { return Ok(()) };
        if !matches!(record.state, PodState::Running) {
            return Ok(());
        }
        let def: PodDefinition = serde_json::from_str(&record.manifest_json).map_err(internal)?;
        // Billed at the present count up to here.
        self.sample(Some(pod_id)).await?;
        let mut spec = self.runtime_spec(pod_id, &def)?;
        for index in self.replica_ids(pod_id).len()..usize::try_from(want).unwrap_or(usize::MAX) {
            let index = u32::try_from(index).map_err(internal)?;
            spec.id = replica_id(pod_id, index);
            let started = Instant::now();
            let endpoint = match self.runtime.start(spec.clone()).await {
                Ok(endpoint) => endpoint,
                Err(e) => return Err(Refusal::Internal(format!("replica {index} could not start: {e}"))),
            };
            let deadline =
                tokio::time::Instant::now() + Duration::from_secs(self.parts.settings.config.scaling.wake_timeout_secs);
            if let Some(port) = first_silent_port(&def, endpoint.ip, deadline).await {
                let _ = self.runtime.delete(&spec.id).await;
                return Err(Refusal::Internal(format!("replica {index} started but its port {port} did not answer")));
            }
            lock(&self.scaling).entry(*pod_id).or_default().extra.push(endpoint.ip);
            self.route_replicas(&record, &def);
            tracing::info!(pod = %B256::from(*pod_id), replica = index, millis = started.elapsed().as_millis(),
                "replica added");
        }
        Ok(())
    }

    /// Takes the pod down to `keep` replicas (at least the pod itself): the last ones leave the
    /// routes, finish what they serve (for at most [`DRAIN`]) and are deleted.
    async fn shrink(&self, pod_id: &[u8; 32], keep: u32) -> Result<(), Refusal> {
        let _ops = self.ops.lock().await;
        let Some(record) = self.parts.store.get_pod(pod_id).map_err(internal)? else { return Ok(()) };
        if !matches!(record.state, PodState::Running) {
            return Ok(());
        }
        let def: PodDefinition = serde_json::from_str(&record.manifest_json).map_err(internal)?;
        let (first, extra) = lock(&self.scaling).get(pod_id).map(|s| (s.ip, s.extra.clone())).unwrap_or_default();
        let staying = usize::try_from(keep.saturating_sub(1)).unwrap_or(usize::MAX).min(extra.len());
        if staying == extra.len() {
            return Ok(());
        }
        let mut gone = self.replica_ids(pod_id);
        let gone = gone.split_off(staying + 1);
        // Out of the routes first: new requests go to the replicas that stay.
        self.set_backends(&record, &def, first, &extra[..staying]);
        let drained = Instant::now();
        while self.activity(&record, &def).0 > 0 && drained.elapsed() < DRAIN {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Billed with them up to here, then without them.
        self.sample(Some(pod_id)).await?;
        self.delete_replicas(pod_id, &gone).await;
        lock(&self.scaling).entry(*pod_id).or_default().extra.truncate(staying);
        tracing::info!(pod = %B256::from(*pod_id), replicas = staying + 1, "replicas removed");
        Ok(())
    }

    /// Deletes extra replicas `ids` from the runtime, keeping the billing baseline in step: the
    /// CPU time they used leaves the pod's summed counter with them.
    pub(super) async fn delete_replicas(&self, pod_id: &[u8; 32], ids: &[String]) {
        for id in ids {
            let used = self.runtime.usage(id).await.ok().flatten().map_or(0, |u| u.cpu_ns);
            if let Err(e) = self.runtime.delete(id).await {
                tracing::error!(pod = %B256::from(*pod_id), replica = %id, error = %e, "could not remove a replica");
            }
            if let Err(e) = self.forget_cpu(pod_id, used) {
                tracing::error!(pod = %B256::from(*pod_id), error = %e, "could not update the CPU baseline");
            }
        }
    }

    /// Removes every extra replica of the pod, leaving the pod itself (replica 0): before it is
    /// stopped, scaled to zero, updated or deleted. Sample the pod first: what they used since
    /// the last sample is not billed.
    pub(super) async fn remove_extra_replicas(&self, record: &PodRecord) {
        let mut ids = self.replica_ids(&record.pod_id);
        if ids.len() <= 1 {
            return;
        }
        let extra = ids.split_off(1);
        let ip = lock(&self.scaling).get(&record.pod_id).and_then(|s| s.ip);
        if let Ok(def) = serde_json::from_str::<PodDefinition>(&record.manifest_json) {
            self.set_backends(record, &def, ip, &[]);
        }
        self.delete_replicas(&record.pod_id, &extra).await;
        if let Some(s) = lock(&self.scaling).get_mut(&record.pod_id) {
            s.extra.clear();
        }
    }

    /// Points the pod's routes and TCP ports at all its replicas.
    fn route_replicas(&self, record: &PodRecord, def: &PodDefinition) {
        let (ip, extra) = lock(&self.scaling).get(&record.pod_id).map(|s| (s.ip, s.extra.clone())).unwrap_or_default();
        self.set_backends(record, def, ip, &extra);
    }

    fn set_backends(&self, record: &PodRecord, def: &PodDefinition, first: Option<Ipv4Addr>, extra: &[Ipv4Addr]) {
        let ips: Vec<IpAddr> = first.into_iter().chain(extra.iter().copied()).map(IpAddr::V4).collect();
        if ips.is_empty() {
            return;
        }
        let key = hex(&record.pod_id);
        for port in def.http_ports() {
            self.parts.routes.set_replicas(&route_key(&key, port.container_port), &ips);
        }
        self.parts.tcp.set_replicas(&key, &ips);
    }
}

/// Whether every port of the pod answers at `ip` before `deadline`: `None` if so, else the
/// first that did not.
pub(super) async fn first_silent_port(
    def: &PodDefinition,
    ip: Ipv4Addr,
    deadline: tokio::time::Instant,
) -> Option<u16> {
    let ports: Vec<u16> = def.http_ports().map(|p| p.container_port).chain(def.tcp_ports()).collect();
    for port in ports {
        if !super::scaling::port_answers(SocketAddr::from((ip, port)), deadline).await {
            return Some(port);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_ids_are_the_pod_then_distinct_digests() {
        let pod = [7u8; 32];
        assert_eq!(replica_id(&pod, 0), hex(&pod));
        let ids: Vec<String> = (0..16).map(|k| replica_id(&pod, k)).collect();
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 16);
        assert!(ids.iter().all(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())));
        // Host-side names come from the first 12 digits: those differ too.
        let mut prefixes: Vec<&str> = ids.iter().map(|id| &id[..12]).collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        assert_eq!(prefixes.len(), 16);
        assert_ne!(replica_id(&[8u8; 32], 1), replica_id(&pod, 1));
    }

    #[test]
    fn load_sets_the_count_within_min_and_max() {
        assert_eq!(wanted(0, 10, 0, 4), 1);
        assert_eq!(wanted(0, 10, 2, 4), 2);
        assert_eq!(wanted(10, 10, 1, 4), 1);
        assert_eq!(wanted(11, 10, 1, 4), 2);
        assert_eq!(wanted(35, 10, 1, 4), 4);
        assert_eq!(wanted(1000, 10, 1, 4), 4);
        assert_eq!(wanted(5, 0, 1, 4), 4);
    }
}
