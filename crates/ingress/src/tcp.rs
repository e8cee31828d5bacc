//! TCP port forwarding: a host port per exposed pod port, each connection copied in userspace
//! to the pod's address. Used for pod ports that do not speak HTTP (databases, game servers...).
//!
//! A pod's forwards can sleep like its routes: the next connection wakes the pod (one wake
//! for all connections arriving meanwhile) and is forwarded once it answers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::activity::{Activity, Counters};
use crate::balance::Backends;
use crate::wake::Wake;
use crate::{IngressConfig, IngressError};

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Host ports forwarded to pod addresses; cheap to clone (clones share the forwards).
///
/// Dropping the last clone closes every listener and connection.
#[derive(Debug, Clone)]
pub struct TcpForwards {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    bind_ip: IpAddr,
    config: IngressConfig,
    pods: Mutex<HashMap<String, TcpPod>>,
}

/// One pod's forwards and the state they share.
#[derive(Debug, Default)]
struct TcpPod {
    forwards: Vec<Forward>,
    shared: Arc<PodShared>,
}

/// What every connection of one pod reads: where the pod is and whether it sleeps.
#[derive(Debug, Default)]
struct PodShared {
    counters: Arc<Counters>,
    state: Mutex<SleepState>,
}

#[derive(Debug, Default)]
struct SleepState {
    asleep: Option<Wake>,
    /// The pod's replicas since it was woken or scaled, replacing the address each forward was
    /// opened with (which is used while this is empty).
    replicas: Backends,
}

impl PodShared {
    fn lock(&self) -> MutexGuard<'_, SleepState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One listening host port. Its task owns the listener and every connection it accepted, so
/// aborting the task closes them all.
#[derive(Debug)]
struct Forward {
    port: u16,
    task: JoinHandle<()>,
}

impl TcpForwards {
    /// Forwards that listen on `bind_ip` (e.g. `0.0.0.0` for the public interface), with the
    /// default [`IngressConfig`].
    pub fn new(bind_ip: IpAddr) -> Self {
        Self::with_config(bind_ip, IngressConfig::default())
    }

    /// Like [`TcpForwards::new`], with `config`'s connect timeout and per-pod connection limit.
    pub fn with_config(bind_ip: IpAddr, config: IngressConfig) -> Self {
        Self { inner: Arc::new(Inner { bind_ip, config, pods: Mutex::default() }) }
    }

    /// Listens on host port `host_port` (0 picks a free one) and forwards every connection to
    /// `backend`, on behalf of pod `pod_id`. Returns the bound port.
    pub async fn expose(&self, pod_id: &str, host_port: u16, backend: SocketAddr) -> Result<u16, IngressError> {
        let addr = SocketAddr::new(self.inner.bind_ip, host_port);
        let listener = TcpListener::bind(addr).await.map_err(|source| IngressError::Bind { addr, source })?;
        let port = listener.local_addr().map_err(IngressError::LocalAddr)?.port();
        let mut pods = self.inner.lock();
        let pod = pods.entry(pod_id.to_owned()).or_default();
        let task = tokio::spawn(forward_loop(
            listener,
            pod_id.to_owned(),
            backend,
            Arc::clone(&pod.shared),
            self.inner.config.clone(),
        ));
        pod.forwards.push(Forward { port, task });
        drop(pods);
        tracing::info!(pod = %pod_id, port, %backend, "tcp port exposed");
        Ok(port)
    }

    /// Closes all of the pod's listeners and drops their open connections.
    ///
    /// The sockets close as soon as the runtime runs the cancelled tasks (promptly, but after
    /// this returns); use [`TcpForwards::remove_and_wait`] to be sure the ports are free.
    pub fn remove(&self, pod_id: &str) {
        for forward in self.take(pod_id) {
            forward.task.abort();
        }
    }

    /// Like [`TcpForwards::remove`], and returns once the listeners and connections are closed,
    /// so the ports can be bound again right away.
    pub async fn remove_and_wait(&self, pod_id: &str) {
        let forwards = self.take(pod_id);
        for forward in &forwards {
            forward.task.abort();
        }
        for forward in forwards {
            // The task never ends on its own: this only reports the cancellation.
            let _ = forward.task.await;
        }
    }

    /// The host ports currently exposed for pod `pod_id`.
    pub fn ports(&self, pod_id: &str) -> Vec<u16> {
        self.inner.lock().get(pod_id).map(|pod| pod.forwards.iter().map(|f| f.port).collect()).unwrap_or_default()
    }

    /// Puts pod `pod_id`'s forwards to sleep: the ports stay open, and the next connection runs
    /// `wake` (once for all connections arriving meanwhile), then is forwarded to the woken
    /// address at the port it had. Pass the same [`Wake`] as to [`crate::Routes::set_asleep`]
    /// so the pod is woken once. Returns false if the pod has no forwards.
    pub fn set_asleep(&self, pod_id: &str, wake: Wake) -> bool {
        let pods = self.inner.lock();
        let Some(pod) = pods.get(pod_id) else { return false };
        wake.rearm();
        pod.shared.lock().asleep = Some(wake);
        tracing::debug!(pod = %pod_id, "tcp forwards asleep");
        true
    }

    /// Wakes pod `pod_id`'s forwards: connections go to `ip` at the port they had. Returns
    /// false if the pod has no forwards.
    pub fn set_awake(&self, pod_id: &str, ip: IpAddr) -> bool {
        let pods = self.inner.lock();
        let Some(pod) = pods.get(pod_id) else { return false };
        let mut state = pod.shared.lock();
        state.asleep = None;
        state.replicas.set(&[ip]);
        pod.shared.counters.touch();
        true
    }

    /// Spreads pod `pod_id`'s new connections over its replicas at `ips` (same ports each): each
    /// goes to the one with the fewest open. Returns false if the pod has no forwards.
    pub fn set_replicas(&self, pod_id: &str, ips: &[IpAddr]) -> bool {
        let pods = self.inner.lock();
        let Some(pod) = pods.get(pod_id) else { return false };
        pod.shared.lock().replicas.set(ips);
        true
    }

    /// Whether pod `pod_id`'s forwards are asleep (false if it has none).
    pub fn is_asleep(&self, pod_id: &str) -> bool {
        self.inner.lock().get(pod_id).is_some_and(|pod| pod.shared.lock().asleep.is_some())
    }

    /// Connections open through pod `pod_id`'s forwards (including those waiting for a wake)
    /// and when one last opened or closed; `None` if the pod has no forwards.
    pub fn activity(&self, pod_id: &str) -> Option<Activity> {
        self.inner.lock().get(pod_id).map(|pod| pod.shared.counters.activity())
    }

    fn take(&self, pod_id: &str) -> Vec<Forward> {
        let forwards = self.inner.lock().remove(pod_id).map(|pod| pod.forwards).unwrap_or_default();
        if !forwards.is_empty() {
            let ports: Vec<u16> = forwards.iter().map(|f| f.port).collect();
            tracing::info!(pod = %pod_id, ?ports, "tcp ports closed");
        }
        forwards
    }
}

impl Inner {
    // A panic while holding the lock leaves at worst a stale entry; keep serving.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, TcpPod>> {
        self.pods.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let pods = self.pods.get_mut().unwrap_or_else(PoisonError::into_inner);
        for forward in pods.values().flat_map(|pod| &pod.forwards) {
            forward.task.abort();
        }
    }
}

async fn forward_loop(
    listener: TcpListener,
    pod: String,
    backend: SocketAddr,
    shared: Arc<PodShared>,
    config: IngressConfig,
) {
    // Owned here so that cancelling this task drops every open connection with it.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    let span = tracing::debug_span!("tcp", %pod, %peer, port = backend.port());
                    let connection = forward_connection(client, Arc::clone(&shared), backend, config.clone());
                    connections.spawn(tracing::Instrument::instrument(connection, span));
                }
                Err(error) => {
                    tracing::warn!(pod = %pod, %error, "tcp forward cannot accept");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reap finished connections so the set does not grow with the connection count.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn forward_connection(mut client: TcpStream, shared: Arc<PodShared>, backend: SocketAddr, config: IngressConfig) {
    // Counted while open, including while the pod wakes; beyond the limit the connection is
    // closed at once (raw TCP has no way to say why).
    let Some(_in_flight) = shared.counters.enter(config.max_in_flight_per_pod) else {
        tracing::debug!(limit = config.max_in_flight_per_pod, "tcp forward: pod at its connection limit");
        return;
    };
    let (asleep, replica) = {
        let state = shared.lock();
        (state.asleep.clone(), state.replicas.pick().cloned())
    };
    // Counted against the replica while open, so the next connection goes to a less busy one.
    let _outstanding = replica.as_ref().map(crate::balance::Backend::enter);
    let backend = match asleep {
        None => SocketAddr::new(replica.map_or(backend.ip(), |r| r.ip), backend.port()),
        Some(wake) => match wake.wake().await {
            Ok(ip) => {
                let mut state = shared.lock();
                // Unless the provider changed the state meanwhile (its decision wins).
                if state.asleep.as_ref().is_some_and(|w| w.same(&wake)) {
                    state.asleep = None;
                    state.replicas.set(&[ip]);
                }
                SocketAddr::new(ip, backend.port())
            }
            Err(reason) => {
                tracing::debug!(%reason, "tcp forward: pod could not be woken");
                return;
            }
        },
    };
    let connect = TcpStream::connect(backend);
    let mut upstream = match tokio::time::timeout(config.connect_timeout, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(%backend, %error, "tcp forward: pod unreachable");
            return;
        }
        Err(_) => {
            tracing::debug!(%backend, "tcp forward: pod connect timed out");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((to_pod, from_pod)) => tracing::debug!(to_pod, from_pod, "tcp forward: connection closed"),
        Err(error) => tracing::debug!(%error, "tcp forward: connection ended with an error"),
    }
}
