//! Waking pods that are scaled to zero: the provider registers a [`Waker`] per pod, wrapped in a
//! [`Wake`] that every route and TCP forward of the pod shares; the first request or
//! connection for the sleeping pod starts one wake, and everything arriving meanwhile waits
//! for its outcome.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

/// What [`Waker::wake`] returns: the pod's address once its ports answer, or why it could not
/// be woken (sent to the waiting clients in a 503, so no secrets).
pub type WakeFuture = Pin<Box<dyn Future<Output = Result<IpAddr, String>> + Send + 'static>>;

/// Starts a pod that is scaled to zero. Implemented by the provider.
pub trait Waker: Send + Sync + 'static {
    /// Starts pod `pod_id` (the id given to [`Wake::new`]) and resolves once its ports accept
    /// connections, with the IP address they are reachable at. Each route or forward keeps its
    /// port and takes this address.
    ///
    /// Called once per wake however many requests are waiting; it runs in its own task, so
    /// clients hanging up do not cancel it.
    fn wake(&self, pod_id: &str) -> WakeFuture;
}

/// A wake's outcome as its waiters see it: `None` until it ends.
type Outcome = watch::Receiver<Option<Result<IpAddr, String>>>;

/// How long a wake may take before the waiting requests get 503, unless
/// [`Wake::with_timeout`] says otherwise.
pub const DEFAULT_WAKE_TIMEOUT: Duration = Duration::from_secs(120);

/// One pod's wake-up, shared by all its routes and forwards (clone it, cheap): however many
/// requests and connections arrive for the pod while it sleeps, the [`Waker`] runs once and
/// they all get its outcome.
///
/// After a successful wake the outcome is kept (late arrivals reuse the address) until the pod
/// is put to sleep again with [`crate::Routes::set_asleep`] or [`crate::TcpForwards::set_asleep`];
/// after a failure the next arrival tries again.
#[derive(Clone)]
pub struct Wake {
    inner: Arc<Inner>,
}

struct Inner {
    pod_id: String,
    waker: Arc<dyn Waker>,
    timeout: Duration,
    /// The wake in progress or done (successfully: failures are forgotten).
    state: Mutex<Option<Outcome>>,
    runs: AtomicU64,
}

impl fmt::Debug for Wake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wake").field("pod_id", &self.inner.pod_id).field("runs", &self.runs()).finish_non_exhaustive()
    }
}

impl Wake {
    /// A wake of pod `pod_id` through `waker`, given up after [`DEFAULT_WAKE_TIMEOUT`].
    pub fn new(pod_id: impl Into<String>, waker: Arc<dyn Waker>) -> Self {
        Self::with_timeout(pod_id, waker, DEFAULT_WAKE_TIMEOUT)
    }

    /// Like [`Wake::new`], giving up after `timeout` (the waiting requests then get 503).
    pub fn with_timeout(pod_id: impl Into<String>, waker: Arc<dyn Waker>, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                pod_id: pod_id.into(),
                waker,
                timeout,
                state: Mutex::new(None),
                runs: AtomicU64::new(0),
            }),
        }
    }

    /// The pod id passed to the waker.
    pub fn pod_id(&self) -> &str {
        &self.inner.pod_id
    }

    /// How many times the waker was called.
    pub fn runs(&self) -> u64 {
        self.inner.runs.load(Ordering::Relaxed)
    }

    /// Whether `self` and `other` are clones of the same wake.
    pub fn same(&self, other: &Wake) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Wakes the pod, or joins the wake in progress, and returns its outcome. The ingress calls
    /// this for requests to a sleeping pod; the provider may call it too.
    pub async fn wake(&self) -> Result<IpAddr, String> {
        let mut outcome = {
            let mut state = self.lock();
            match state.as_ref() {
                Some(receiver) => receiver.clone(),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    *state = Some(receiver.clone());
                    self.inner.runs.fetch_add(1, Ordering::Relaxed);
                    // Its own task: the wake must finish for the others even if the request
                    // that started it goes away.
                    tokio::spawn(run(Arc::clone(&self.inner), sender));
                    receiver
                }
            }
        };
        match outcome.wait_for(Option::is_some).await {
            Ok(done) => done.clone().unwrap_or_else(|| Err("the wake ended without an outcome".into())),
            Err(_) => Err("the wake was abandoned".into()),
        }
    }

    /// Forgets a finished wake, so the next arrival wakes the pod again (it was put back to
    /// sleep). A wake in progress is left alone: its waiters still need its outcome.
    pub(crate) fn rearm(&self) {
        let mut state = self.lock();
        if state.as_ref().is_some_and(|receiver| receiver.borrow().is_some()) {
            *state = None;
        }
    }

    // A panic while holding the lock leaves at worst a stale outcome; keep serving.
    fn lock(&self) -> MutexGuard<'_, Option<Outcome>> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn run(inner: Arc<Inner>, sender: watch::Sender<Option<Result<IpAddr, String>>>) {
    let started = std::time::Instant::now();
    let outcome = match tokio::time::timeout(inner.timeout, inner.waker.wake(&inner.pod_id)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!("the pod did not wake within {} s", inner.timeout.as_secs_f64())),
    };
    match &outcome {
        Ok(ip) => tracing::info!(pod = %inner.pod_id, %ip, elapsed = ?started.elapsed(), "pod woken"),
        Err(reason) => {
            tracing::warn!(pod = %inner.pod_id, %reason, elapsed = ?started.elapsed(), "pod could not be woken")
        }
    }
    let failed = outcome.is_err();
    let _ = sender.send(Some(outcome));
    if failed {
        // The next request tries again rather than failing forever.
        let mut state = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.as_ref().is_some_and(|receiver| receiver.same_channel(&sender.subscribe())) {
            *state = None;
        }
    }
}
