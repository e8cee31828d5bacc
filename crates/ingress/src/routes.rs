//! The routing table shared by the provider controller (which writes it when pods start, stop
//! or move) and the HTTP ingress (which reads it on every request), plus the per-pod traffic
//! counters the ingress feeds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::host;

/// Body bytes the ingress carried for one pod since the ingress started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes of request bodies sent to the pod.
    pub ingress_bytes: u64,
    /// Bytes of response bodies sent back by the pod.
    pub egress_bytes: u64,
}

/// Live counters of one pod, shared with the bodies in flight so counting needs no lock.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) ingress: AtomicU64,
    pub(crate) egress: AtomicU64,
}

/// What a request for a known host is forwarded to.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) pod_id: String,
    pub(crate) backend: SocketAddr,
    pub(crate) counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Table {
    /// Normalized host name → route.
    hosts: HashMap<String, Route>,
    /// Pod id → its host names, so a pod's routes can be replaced or removed as a whole.
    pods: HashMap<String, Vec<String>>,
    /// Pod id → counters. Kept when the pod's routes are removed, so metering can still read
    /// the final totals of a pod that stopped.
    counters: HashMap<String, Arc<Counters>>,
}

/// Shared routing table; cheap to clone (clones see the same table).
#[derive(Debug, Clone, Default)]
pub struct Routes {
    table: Arc<RwLock<Table>>,
}

impl Routes {
    /// Routes each of `hosts` (DNS names such as `<pod-id>.pods.localhost` or `app.example.com`;
    /// normalized to lowercase without trailing dot) to `backend`, for pod `pod_id`. Replaces
    /// the pod's previous routes atomically: no request sees a mix of old and new.
    ///
    /// A host already routed to another pod is taken over by this one (and logged): the
    /// controller decides who owns a name, the table only records the latest decision.
    pub fn set(&self, pod_id: &str, hosts: Vec<String>, backend: SocketAddr) {
        let mut table = self.write();
        let counters = Arc::clone(table.counters.entry(pod_id.to_owned()).or_default());
        for old in table.pods.remove(pod_id).unwrap_or_default() {
            table.hosts.remove(&old);
        }
        let mut names: Vec<String> = Vec::with_capacity(hosts.len());
        for raw in hosts {
            let name = host::normalize_name(&raw);
            if name.is_empty() || names.contains(&name) {
                continue;
            }
            let route = Route { pod_id: pod_id.to_owned(), backend, counters: Arc::clone(&counters) };
            if let Some(previous) = table.hosts.insert(name.clone(), route) {
                tracing::warn!(host = %name, from = %previous.pod_id, to = %pod_id, "host moved to another pod");
                if let Some(their_hosts) = table.pods.get_mut(&previous.pod_id) {
                    their_hosts.retain(|h| h != &name);
                }
            }
            names.push(name);
        }
        tracing::debug!(pod = %pod_id, hosts = ?names, %backend, "routes set");
        table.pods.insert(pod_id.to_owned(), names);
    }

    /// Removes all routes of pod `pod_id`; its hosts answer 404 from now on. Its traffic
    /// counters stay readable.
    pub fn remove(&self, pod_id: &str) {
        let mut table = self.write();
        for name in table.pods.remove(pod_id).unwrap_or_default() {
            table.hosts.remove(&name);
        }
        tracing::debug!(pod = %pod_id, "routes removed");
    }

    /// The pod id and backend address serving `host` (normalized first, so a port or capitals
    /// are fine).
    pub fn lookup(&self, host: &str) -> Option<(String, SocketAddr)> {
        let name = host::normalize(host)?;
        self.route_for(&name).map(|r| (r.pod_id, r.backend))
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
        self.read().hosts.get(name).cloned()
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
