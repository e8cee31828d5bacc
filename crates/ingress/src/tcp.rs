//! TCP port forwarding: a host port per exposed pod port, each connection copied in userspace
//! to the pod's address. Used for pod ports that do not speak HTTP (databases, game servers...).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::{BACKEND_CONNECT_TIMEOUT, IngressError};

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
    pods: Mutex<HashMap<String, Vec<Forward>>>,
}

/// One listening host port. Its task owns the listener and every connection it accepted, so
/// aborting the task closes them all.
#[derive(Debug)]
struct Forward {
    port: u16,
    task: JoinHandle<()>,
}

impl TcpForwards {
    /// Forwards that listen on `bind_ip` (e.g. `0.0.0.0` for the public interface).
    pub fn new(bind_ip: IpAddr) -> Self {
        Self { inner: Arc::new(Inner { bind_ip, pods: Mutex::default() }) }
    }

    /// Listens on host port `host_port` (0 picks a free one) and forwards every connection to
    /// `backend`, on behalf of pod `pod_id`. Returns the bound port.
    pub async fn expose(&self, pod_id: &str, host_port: u16, backend: SocketAddr) -> Result<u16, IngressError> {
        let addr = SocketAddr::new(self.inner.bind_ip, host_port);
        let listener = TcpListener::bind(addr).await.map_err(|source| IngressError::Bind { addr, source })?;
        let port = listener.local_addr().map_err(IngressError::LocalAddr)?.port();
        let task = tokio::spawn(forward_loop(listener, pod_id.to_owned(), backend));
        self.inner.lock().entry(pod_id.to_owned()).or_default().push(Forward { port, task });
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
        self.inner.lock().get(pod_id).map(|forwards| forwards.iter().map(|f| f.port).collect()).unwrap_or_default()
    }

    fn take(&self, pod_id: &str) -> Vec<Forward> {
        let forwards = self.inner.lock().remove(pod_id).unwrap_or_default();
        if !forwards.is_empty() {
            let ports: Vec<u16> = forwards.iter().map(|f| f.port).collect();
            tracing::info!(pod = %pod_id, ?ports, "tcp ports closed");
        }
        forwards
    }
}

impl Inner {
    // A panic while holding the lock leaves at worst a stale entry; keep serving.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<Forward>>> {
        self.pods.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let pods = self.pods.get_mut().unwrap_or_else(PoisonError::into_inner);
        for forward in pods.values().flatten() {
            forward.task.abort();
        }
    }
}

async fn forward_loop(listener: TcpListener, pod: String, backend: SocketAddr) {
    // Owned here so that cancelling this task drops every open connection with it.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    connections.spawn(forward_connection(client, peer, pod.clone(), backend));
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

async fn forward_connection(mut client: TcpStream, peer: SocketAddr, pod: String, backend: SocketAddr) {
    let mut upstream = match tokio::time::timeout(BACKEND_CONNECT_TIMEOUT, TcpStream::connect(backend)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(%pod, %peer, %backend, %error, "tcp forward: pod unreachable");
            return;
        }
        Err(_) => {
            tracing::debug!(%pod, %peer, %backend, "tcp forward: pod connect timed out");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((to_pod, from_pod)) => tracing::debug!(%pod, %peer, to_pod, from_pod, "tcp forward: connection closed"),
        Err(error) => tracing::debug!(%pod, %peer, %error, "tcp forward: connection ended with an error"),
    }
}
