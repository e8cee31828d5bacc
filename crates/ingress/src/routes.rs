//! The routing table shared by the provider controller (which writes it when pods start, stop,
//! move or go to sleep) and the HTTP ingress (which reads it on every request), plus the
//! per-pod traffic and activity counters the ingress feeds.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::activity::{Activity, Counters};
use crate::balance::{Backend, Backends};
use crate::host;
use crate::wake::Wake;

/// Body bytes the ingress carried for one pod since the ingress started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes of request bodies (and of upgraded connections, client to pod) sent to the pod.
    pub ingress_bytes: u64,
    /// Bytes of response bodies (and of upgraded connections, pod to client) sent back.
    pub egress_bytes: u64,
}

/// What a request for a known host is forwarded to.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) pod_id: String,
    /// The least busy replica's address, at the route's port.
    pub(crate) backend: SocketAddr,
    /// That replica, to count the request against while it is in flight.
    pub(crate) replica: Option<Backend>,
    pub(crate) counters: Arc<Counters>,
    /// Set while the pod sleeps: the request must wake it first.
    pub(crate) asleep: Option<Wake>,
}

/// One pod's routing.
#[derive(Debug)]
struct PodRoutes {
    hosts: Vec<String>,
    /// The pod's port: the same on every replica.
    port: u16,
    backends: Backends,
    asleep: Option<Wake>,
}

#[derive(Debug, Default)]
struct Table {
    /// Normalized host name → pod id.
    hosts: HashMap<String, String>,
    /// Pod id → its host names, replicas and sleep state, so a pod's routes can be replaced,
    /// removed or put to sleep as a whole.
    pods: HashMap<String, PodRoutes>,
    /// Pod id → counters. Kept when the pod's routes are removed, so metering can still read
    /// the final totals of a pod that stopped.
    counters: HashMap<String, Arc<Counters>>,
}

/// Shared routing table; cheap to clone (clones see the same table).
///
/// "Pod id" here is whatever key the controller routes by (the provider uses one per pod and
/// HTTP port).
#[derive(Debug, Clone, Default)]
pub struct Routes {
    table: Arc<RwLock<Table>>,
}

impl Routes {
    /// Routes each of `hosts` (DNS names such as `<pod-id>.pods.localhost` or `app.example.com`;
    /// normalized to lowercase without trailing dot) to `backend`, for pod `pod_id`, awake.
    /// Replaces the pod's previous routes atomically: no request sees a mix of old and new.
    ///
    /// A host already routed to another pod is taken over by this one (and logged): the
    /// controller decides who owns a name, the table only records the latest decision.
    pub fn set(&self, pod_id: &str, hosts: Vec<String>, backend: SocketAddr) {
        let mut table = self.write();
        let counters = Arc::clone(table.counters.entry(pod_id.to_owned()).or_default());
        // A pod (re)started now counts as active: its idle time starts here.
        counters.touch();
        for old in table.pods.remove(pod_id).map(|p| p.hosts).unwrap_or_default() {
            table.hosts.remove(&old);
        }
        let mut names: Vec<String> = Vec::with_capacity(hosts.len());
        for raw in hosts {
            let name = host::normalize_name(&raw);
            if name.is_empty() || names.contains(&name) {
                continue;
            }
            if let Some(previous) = table.hosts.insert(name.clone(), pod_id.to_owned()) {
                tracing::warn!(host = %name, from = %previous, to = %pod_id, "host moved to another pod");
                if let Some(theirs) = table.pods.get_mut(&previous) {
                    theirs.hosts.retain(|h| h != &name);
                }
            }
            names.push(name);
        }
        tracing::debug!(pod = %pod_id, hosts = ?names, %backend, "routes set");
        let backends = Backends::one(backend.ip());
        table.pods.insert(pod_id.to_owned(), PodRoutes { hosts: names, port: backend.port(), backends, asleep: None });
    }

    /// Puts pod `pod_id`'s routes to sleep: its hosts stay routed, and the next request for
    /// them runs `wake` (once for all requests arriving meanwhile), then goes to the woken
    /// address at the same port. Pass the same [`Wake`] (clones) for every route and TCP
    /// forward of one pod so it is woken once. Returns false if the pod has no routes.
    ///
    /// The provider wakes the pod itself with [`Routes::set`] (or [`Routes::set_awake`]).
    pub fn set_asleep(&self, pod_id: &str, wake: Wake) -> bool {
        let mut table = self.write();
        let Some(pod) = table.pods.get_mut(pod_id) else { return false };
        wake.rearm();
        pod.asleep = Some(wake);
        // A pod's request to sleep is answered by this.
        if let Some(counters) = table.counters.get(pod_id) {
            counters.request_sleep(false);
        }
        tracing::debug!(pod = %pod_id, "routes asleep");
        true
    }

    /// Wakes pod `pod_id`'s routes: requests go to `ip` at the port they had. Returns false if
    /// the pod has no routes.
    pub fn set_awake(&self, pod_id: &str, ip: IpAddr) -> bool {
        let mut table = self.write();
        let Some(pod) = table.pods.get_mut(pod_id) else { return false };
        pod.backends.set(&[ip]);
        pod.asleep = None;
        if let Some(counters) = table.counters.get(pod_id) {
            counters.touch();
        }
        tracing::debug!(pod = %pod_id, %ip, "routes awake");
        true
    }

    /// Spreads pod `pod_id`'s requests over its replicas at `ips` (same port each): each request
    /// goes to the one with the fewest in flight. Requests in flight to a replica that stays keep
    /// counting. Returns false if the pod has no routes.
    pub fn set_replicas(&self, pod_id: &str, ips: &[IpAddr]) -> bool {
        let mut table = self.write();
        let Some(pod) = table.pods.get_mut(pod_id) else { return false };
        pod.backends.set(ips);
        tracing::debug!(pod = %pod_id, replicas = ?ips, "routes balanced");
        true
    }

    /// The addresses of pod `pod_id`'s replicas (empty if it has no routes).
    pub fn replicas(&self, pod_id: &str) -> Vec<IpAddr> {
        self.read().pods.get(pod_id).map(|p| p.backends.ips()).unwrap_or_default()
    }

    /// Whether pod `pod_id`'s routes are asleep (false if it has none).
    pub fn is_asleep(&self, pod_id: &str) -> bool {
        self.read().pods.get(pod_id).is_some_and(|p| p.asleep.is_some())
    }

    /// Removes all routes of pod `pod_id`; its hosts answer 404 from now on. Its traffic
    /// counters stay readable.
    pub fn remove(&self, pod_id: &str) {
        let mut table = self.write();
        for name in table.pods.remove(pod_id).map(|p| p.hosts).unwrap_or_default() {
            table.hosts.remove(&name);
        }
        tracing::debug!(pod = %pod_id, "routes removed");
    }

    /// The pod id and the backend address a request for `host` would go to now (normalized
    /// first, so a port or capitals are fine).
    pub fn lookup(&self, host: &str) -> Option<(String, SocketAddr)> {
        let name = host::normalize(host)?;
        self.route_for(&name).map(|r| (r.pod_id, r.backend))
    }

    /// Requests in flight for pod `pod_id` and when it was last active; `None` if the pod never
    /// had routes (or its counters were forgotten).
    pub fn activity(&self, pod_id: &str) -> Option<Activity> {
        self.read().counters.get(pod_id).map(|c| c.activity())
    }

    /// Body bytes in (requests to the pod) and out (responses) counted by the ingress for pod
    /// `pod_id` since start; `None` if the pod never had routes.
    pub fn traffic(&self, pod_id: &str) -> Option<Traffic> {
        let table = self.read();
        let c = table.counters.get(pod_id)?;
        Some(Traffic {
            ingress_bytes: c.ingress.load(Ordering::Relaxed),
            egress_bytes: c.egress.load(Ordering::Relaxed),
        })
    }

    /// Takes the bytes counted for pod `pod_id` since the last take, resetting its counters to
    /// zero (bytes in flight keep counting into the next take). Metering calls this once per
    /// sample, so counted bytes are billed exactly once. Zero if the pod never had routes.
    pub fn take_traffic(&self, pod_id: &str) -> Traffic {
        let table = self.read();
        table.counters.get(pod_id).map_or_else(Traffic::default, |c| Traffic {
            ingress_bytes: c.ingress.swap(0, Ordering::Relaxed),
            egress_bytes: c.egress.swap(0, Ordering::Relaxed),
        })
    }

    /// Forgets the traffic counters of a pod that has no routes any more (after metering took
    /// its final reading), so the table does not grow forever. Returns the last totals.
    pub fn forget_traffic(&self, pod_id: &str) -> Option<Traffic> {
        let mut table = self.write();
        if table.pods.contains_key(pod_id) {
            // Still routed: requests keep counting into these counters, so keep them.
            return None;
        }
        let c = table.counters.remove(pod_id)?;
        Some(Traffic {
            ingress_bytes: c.ingress.load(Ordering::Relaxed),
            egress_bytes: c.egress.load(Ordering::Relaxed),
        })
    }

    /// The full route for an already normalized host name, with the counters the proxy feeds.
    pub(crate) fn route_for(&self, name: &str) -> Option<Route> {
        let table = self.read();
        let pod_id = table.hosts.get(name)?;
        let pod = table.pods.get(pod_id)?;
        let counters = table.counters.get(pod_id)?;
        let replica = pod.backends.pick().cloned();
        let ip = replica.as_ref().map_or(IpAddr::from([0, 0, 0, 0]), |b| b.ip);
        Some(Route {
            pod_id: pod_id.clone(),
            backend: SocketAddr::new(ip, pod.port),
            replica,
            counters: Arc::clone(counters),
            asleep: pod.asleep.clone(),
        })
    }

    /// Records that `wake` woke pod `pod_id` at `ip`, unless the controller changed the pod's
    /// routes meanwhile (its decision wins).
    pub(crate) fn woke(&self, pod_id: &str, wake: &Wake, ip: IpAddr) {
        let mut table = self.write();
        let Some(pod) = table.pods.get_mut(pod_id) else { return };
        if pod.asleep.as_ref().is_some_and(|w| w.same(wake)) {
            pod.backends.set(&[ip]);
            pod.asleep = None;
            tracing::debug!(pod = %pod_id, %ip, "routes awake");
        }
    }

    // A panic while holding the lock cannot leave the table half-updated in a way that matters
    // more than stopping all routing would, so poisoning is ignored.
    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn set_replaces_and_remove_clears() {
        let routes = Routes::default();
        routes.set("p1", vec!["a.pods.localhost".into(), "App.Example.com.".into()], addr(1));
        assert_eq!(routes.lookup("A.pods.localhost:80"), Some(("p1".into(), addr(1))));
        assert_eq!(routes.lookup("app.example.com"), Some(("p1".into(), addr(1))));
        routes.set("p1", vec!["b.pods.localhost".into()], addr(2));
        assert_eq!(routes.lookup("a.pods.localhost"), None);
        assert_eq!(routes.lookup("app.example.com"), None);
        assert_eq!(routes.lookup("b.pods.localhost"), Some(("p1".into(), addr(2))));
        routes.remove("p1");
        assert_eq!(routes.lookup("b.pods.localhost"), None);
        assert_eq!(routes.traffic("p1"), Some(Traffic::default()));
        assert_eq!(routes.forget_traffic("p1"), Some(Traffic::default()));
        assert_eq!(routes.traffic("p1"), None);
    }

    #[test]
    fn host_taken_over_by_another_pod() {
        let routes = Routes::default();
        routes.set("p1", vec!["shared.example".into(), "one.example".into()], addr(1));
        routes.set("p2", vec!["shared.example".into()], addr(2));
        assert_eq!(routes.lookup("shared.example"), Some(("p2".into(), addr(2))));
        // Removing the previous owner must not drop the name the new owner now holds.
        routes.remove("p1");
        assert_eq!(routes.lookup("shared.example"), Some(("p2".into(), addr(2))));
        assert_eq!(routes.lookup("one.example"), None);
    }
}
