//! The controller: decides whether a pod may run (authenticated publisher, paid channel, free
//! capacity, images present, host names free), then drives a runtime backend and the ingress,
//! keeping the store the single source of truth. It does not know which backend it drives.
//!
//! Billing (metering, claims, the funds lifecycle) lives in [`billing`].
//!
//! A change to pods runs one at a time (a provisioning lock), so capacity and host-name checks
//! cannot race. A deploy is admitted under that lock (its record then reserves capacity and host
//! names) and completed in a task of its own, so a big image unpacks without holding up other
//! requests and without depending on the request that asked for it: that request waits a few
//! seconds (`[runtime] provision_wait_secs`) for the outcome and otherwise answers
//! "provisioning", with progress in the status.
//! Billing starts once the images are unpacked, right before the containers start. A deploy
//! that fails at any step removes what it created (the runtime's containers, volumes and
//! network, the routes, the account and the host names) and leaves a `Failed` record that says
//! why, which a new deploy of the same pod id (on the same, still funded channel) replaces.
//!
//! A pod whose containers have all ended for good under its restart policy (`OnFailure` or
//! `Never`: a job) is finished: the billing loop notices, bills it to that moment, stops it,
//! makes its final claim and releases its channel, and keeps its record (`Finished`) with the
//! exit codes, its status and logs, until the publisher deletes it or the retention passes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::primitives::{Address, B256, Signature, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::Eip712Domain;
use futures::StreamExt;
use futures::stream::BoxStream;
use tpod_chain::Chain;
use tpod_chain::request::PodRequest;
use tpod_ingress::{Routes, TcpForwards};
use tpod_runtime::{
    ContainerSpec, ContainerState, LogOptions, PodEndpoint, PodSpec, Runtime, VolumeKind, VolumeMount, VolumeSpec,
};
use tpod_wire::pb;

use crate::blobs::BlobStore;
use crate::config::Settings;
use crate::pod::{PodDefinition, Reservation, pod_label};
use crate::store::{PodRecord, PodState, Store};

mod billing;
mod replicas;
mod scaling;

pub use billing::ClaimOutcome;

/// How far ahead a request's expiry may be; nonces are remembered this long.
pub const MAX_REQUEST_VALIDITY_SECS: u64 = 300;

/// Why a request was refused; becomes the `Error` a publisher reads.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Refusal {
    /// The request is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The signer may not act on this pod, or the request is stale or replayed.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// No such pod.
    #[error("no pod {0} on this provider")]
    NotFound(String),
    /// The pod or a host name it wants exists already.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The payment channel does not meet the provider's terms.
    #[error("payment: {0}")]
    Payment(String),
    /// Not enough free capacity.
    #[error("capacity: {0}")]
    Capacity(String),
    /// The provider failed.
    #[error("provider error: {0}")]
    Internal(String),
}

impl Refusal {
    /// The protocol error for this refusal.
    pub fn to_error(&self) -> pb::Error {
        use tpod_wire::codes;
        let code = match self {
            Self::BadRequest(_) => codes::BAD_REQUEST,
            Self::Unauthorized(_) => codes::UNAUTHORIZED,
            Self::Payment(_) => codes::PAYMENT_REQUIRED,
            Self::NotFound(_) => codes::NOT_FOUND,
            Self::Conflict(_) => codes::CONFLICT,
            Self::Capacity(_) => codes::INSUFFICIENT_STORAGE,
            Self::Internal(_) => codes::INTERNAL,
        };
        pb::Error { code, message: self.to_string() }
    }
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    Refusal::Internal(e.to_string())
}

/// What the controller needs besides the runtime.
pub struct Parts {
    /// Parsed configuration.
    pub settings: Settings,
    /// The state store.
    pub store: Store,
    /// Uploaded encrypted blobs.
    pub blobs: Arc<BlobStore>,
    /// Ingress routes.
    pub routes: Routes,
    /// TCP host ports.
    pub tcp: TcpForwards,
    /// The chain, as the provider's account.
    pub chain: Chain,
    /// The enclave's signing key.
    pub enclave: PrivateKeySigner,
    /// The enclave's encryption key: publishers seal image keys and secrets to it.
    pub sealing: tpod_crypto::SecretKey,
    /// The port publishers reach the HTTP ingress on.
    pub ingress_port: u16,
}

/// Runs pods for publishers.
pub struct Controller<R> {
    parts: Parts,
    runtime: R,
    request_domain: Eip712Domain,
    ops: tokio::sync::Mutex<()>,
    /// Claims run one at a time, so two never race for the same cumulative amount.
    claims: tokio::sync::Mutex<()>,
    live: std::sync::Mutex<HashMap<[u8; 32], billing::Live>>,
    /// Deploys completing in the background, by pod id.
    in_flight: std::sync::Mutex<HashMap<[u8; 32], InFlight>>,
    /// Pods' addresses, start times and wakes (see [`scaling`]).
    scaling: std::sync::Mutex<HashMap<[u8; 32], scaling::Scaling>>,
}

/// A deploy completing in the background.
#[derive(Clone)]
struct InFlight {
    /// What it is doing, for status requests.
    progress: Arc<std::sync::Mutex<pb::Progress>>,
    /// Its outcome, once it has one.
    done: tokio::sync::watch::Receiver<Option<Result<(), Refusal>>>,
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An authenticated request about one pod.
struct Authorized {
    pod_id: [u8; 32],
    publisher: Address,
}

impl<R: Runtime> Controller<R> {
    /// A controller over `runtime`.
    pub fn new(parts: Parts, runtime: R) -> Self {
        let request_domain =
            tpod_chain::request::request_domain(parts.chain.chain_id(), parts.chain.contracts().payment);
        Self {
            parts,
            runtime,
            request_domain,
            ops: tokio::sync::Mutex::new(()),
            claims: tokio::sync::Mutex::new(()),
            live: std::sync::Mutex::default(),
            in_flight: std::sync::Mutex::default(),
            scaling: std::sync::Mutex::default(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.parts.store
    }

    /// The uploaded blobs.
    pub fn blobs(&self) -> &BlobStore {
        &self.parts.blobs
    }

    /// The enclave signer's address.
    pub fn enclave_address(&self) -> Address {
        self.parts.enclave.address()
    }

    /// The provider's payment address.
    pub fn provider_address(&self) -> Address {
        self.parts.chain.account()
    }

    // --- quotes ------------------------------------------------------------------------------

    /// What is free now: capacity minus what the pods in the store reserve, not counting the
    /// pod `except` (which is being replaced).
    pub fn free(&self, except: Option<&[u8; 32]>) -> Result<Reservation, Refusal> {
        let mut used = Reservation::default();
        for p in self.parts.store.list_pods().map_err(internal)? {
            if except == Some(&p.pod_id) {
                continue;
            }
            if holds_resources(&p) {
                let def: PodDefinition = serde_json::from_str(&p.manifest_json).map_err(internal)?;
                used = used.plus(def.capacity());
            } else if matches!(p.state, PodState::Finished { .. }) {
                // Nothing of it runs, but its volumes are still on the disk.
                let def: PodDefinition = serde_json::from_str(&p.manifest_json).map_err(internal)?;
                used =
                    used.plus(Reservation { storage_bytes: def.reservation().storage_bytes, ..Reservation::default() });
            }
        }
        let s = &self.parts.settings;
        let capacity =
            Reservation { cpu_millis: s.cpu_millis, memory_bytes: s.memory_bytes, storage_bytes: s.storage_bytes };
        Ok(capacity.minus(used))
    }

    /// Answers a quote: the terms, and whether the asked resources fit.
    pub fn quote(&self, request: &pb::QuoteRequest) -> pb::QuoteResponse {
        let s = &self.parts.settings;
        let contracts = self.parts.chain.contracts();
        let asked = request.resources.unwrap_or_default();
        let asked_gpu = asked.gpu;
        let asked = Reservation {
            cpu_millis: asked.cpu_millis,
            memory_bytes: asked.memory_bytes,
            storage_bytes: asked.storage_bytes,
        };
        let (mut available, mut reason, free) = match self.free(None) {
            Ok(free) if asked_gpu > 0 => (false, "this provider offers no GPUs".to_owned(), free),
            Ok(free) if asked.fits_in(free) => (true, String::new(), free),
            Ok(free) => (false, capacity_message(asked, free), free),
            Err(e) => (false, e.to_string(), Reservation::default()),
        };
        // Host names another pod holds: a deploy asking for them would be refused after payment.
        let mut taken_hostnames = Vec::new();
        for host in &request.hostnames {
            // Compared as the store keys them: lowercase.
            match self.parts.store.hostname_holder(host) {
                Ok(Some(_)) => taken_hostnames.push(host.clone()),
                Ok(None) => {}
                Err(e) => {
                    available = false;
                    reason = e.to_string();
                }
            }
        }
        if !taken_hostnames.is_empty() {
            let message = format!("conflict: host name {} is held by another pod", taken_hostnames.join(", "));
            reason = if available { message } else { format!("{reason}; {message}") };
            available = false;
        }
        pb::QuoteResponse {
            version: tpod_wire::VERSION,
            available,
            reason,
            free: Some(pb::Resources {
                cpu_millis: free.cpu_millis,
                memory_bytes: free.memory_bytes,
                gpu: 0,
                storage_bytes: free.storage_bytes,
                pids: 0,
            }),
            pricing: Some(s.table_proto(&s.pricing, &contracts.token.to_string())),
            payment_contract: contracts.payment.to_string(),
            chain_id: self.parts.chain.chain_id(),
            token: contracts.token.to_vec(),
            min_funding: s.min_funding.to_string(),
            min_unlock_delay_secs: s.config.terms.min_unlock_delay_secs,
            provider_address: self.provider_address().to_string(),
            domain: s.config.ingress.domain.clone(),
            error: None,
            taken_hostnames,
        }
    }

    // --- authentication ----------------------------------------------------------------------

    /// Checks the envelope's signature against `owner` (the pod's publisher), then the expiry and
    /// the nonce. The signature comes first so that nobody but the owner can burn its nonces.
    fn authenticate(
        &self,
        signed: &pb::SignedRequest,
        action: &str,
        pod_id: [u8; 32],
        nonce: u64,
        expiry: u64,
        owner: Address,
    ) -> Result<(), Refusal> {
        let signature = Signature::from_raw(&signed.signature)
            .map_err(|e| Refusal::Unauthorized(format!("malformed signature: {e}")))?;
        PodRequest::new(B256::from(pod_id), action, &signed.payload, nonce, expiry)
            .verify(&self.request_domain, &signed.payload, &signature, owner)
            .map_err(|e| Refusal::Unauthorized(e.to_string()))?;
        let now = now_unix();
        if expiry <= now {
            return Err(Refusal::Unauthorized(format!("request expired at {expiry} (provider time {now})")));
        }
        if expiry - now > MAX_REQUEST_VALIDITY_SECS {
            return Err(Refusal::Unauthorized(format!(
                "request expiry is {}s ahead; at most {MAX_REQUEST_VALIDITY_SECS}s is accepted",
                expiry - now
            )));
        }
        let fresh = self.parts.store.remember_nonce(&owner.to_string(), nonce, expiry, now).map_err(internal)?;
        if !fresh {
            return Err(Refusal::Unauthorized(format!("nonce {nonce} was already used (replayed request)")));
        }
        Ok(())
    }

    /// Decodes and authenticates a provisioning request; the pod's owner is the claimed
    /// publisher for a new pod, and the recorded one otherwise.
    async fn authorize(
        &self,
        signed: &pb::SignedRequest,
        action: &str,
        pod_id: &[u8],
        publisher: &str,
        nonce: u64,
        expiry: u64,
    ) -> Result<(Authorized, Option<PodRecord>), Refusal> {
        let pod_id: [u8; 32] = pod_id.try_into().map_err(|_| Refusal::BadRequest("pod_id must be 32 bytes".into()))?;
        let claimed: Address =
            publisher.parse().map_err(|_| Refusal::BadRequest(format!("publisher {publisher:?} is not an address")))?;
        let record = self.parts.store.get_pod(&pod_id).map_err(internal)?;
        let owner = match &record {
            Some(r) => r.publisher.parse::<Address>().map_err(internal)?,
            None if action == "provision" => claimed,
            None => return Err(Refusal::NotFound(B256::from(pod_id).to_string())),
        };
        self.authenticate(signed, action, pod_id, nonce, expiry, owner)?;
        Ok((Authorized { pod_id, publisher: owner }, record))
    }

    // --- provisioning ------------------------------------------------------------------------

    /// Answers a signed provisioning request.
    pub async fn provision_request(self: &Arc<Self>, signed: &pb::SignedRequest) -> pb::ProvisionResponse {
        let result = self.provision_inner(signed).await;
        let result = match result {
            Ok(status) => pb::provision_response::Result::Status(status),
            Err(refusal) => {
                tracing::info!(%refusal, "request refused");
                pb::provision_response::Result::Error(refusal.to_error())
            }
        };
        pb::ProvisionResponse { version: tpod_wire::VERSION, result: Some(result) }
    }

    async fn provision_inner(self: &Arc<Self>, signed: &pb::SignedRequest) -> Result<pb::PodStatus, Refusal> {
        let request: pb::ProvisionRequest =
            tpod_wire::decode(&signed.payload).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        use pb::provision_request::Action;
        let action = request.action.as_ref().ok_or_else(|| Refusal::BadRequest("no action".into()))?;
        let name = match action {
            Action::Provision(_) => "provision",
            Action::Update(_) => "update",
            Action::Delete(_) => "delete",
            Action::Status(_) => "status",
            Action::AcceptPricing(_) => "accept_pricing",
        };
        let (who, record) = self
            .authorize(signed, name, &request.pod_id, &request.publisher, request.nonce, request.expiry_unix)
            .await?;
        match action {
            Action::Provision(p) => {
                let pod = p.pod.as_ref().ok_or_else(|| Refusal::BadRequest("provision without a pod".into()))?;
                let pricing = p.pricing.as_ref().ok_or_else(|| {
                    Refusal::BadRequest("provision must name the prices it agrees to (from the quote)".into())
                })?;
                self.provision(&who, record, pod, pricing).await
            }
            Action::Update(u) => {
                let pod = u.pod.as_ref().ok_or_else(|| Refusal::BadRequest("update without a pod".into()))?;
                self.update(&who, pod).await
            }
            Action::Delete(_) => self.delete(&who).await,
            Action::Status(_) => self.status(&who.pod_id).await,
            Action::AcceptPricing(a) => {
                let pricing = a.pricing.as_ref().ok_or_else(|| Refusal::BadRequest("no pricing to accept".into()))?;
                self.accept_pricing(&who.pod_id, pricing).await?;
                self.status(&who.pod_id).await
            }
        }
    }

    async fn provision(
        self: &Arc<Self>,
        who: &Authorized,
        existing: Option<PodRecord>,
        pod: &pb::Pod,
        pricing: &pb::PricingTable,
    ) -> Result<pb::PodStatus, Refusal> {
        // A deploy that failed before anything was metered may be tried again under its pod id,
        // on the channel that paid for it.
        let retry = match &existing {
            None => false,
            Some(r) => {
                matches!(r.state, PodState::Failed { .. })
                    && self.parts.store.get_usage(&who.pod_id).map_err(internal)?.is_none()
            }
        };
        if existing.is_some() && !retry {
            return Err(Refusal::Conflict(format!(
                "pod {} exists already; use update to replace it",
                B256::from(who.pod_id)
            )));
        }
        let def = PodDefinition::from_proto(pod)
            .map_err(Refusal::BadRequest)?
            .with_empty_dir_default(self.parts.settings.empty_dir_bytes);
        let agreed =
            tpod_billing::PriceTable::from_proto(pricing).map_err(|e| Refusal::BadRequest(format!("pricing: {e}")))?;
        if agreed != self.parts.settings.pricing {
            return Err(Refusal::Conflict(format!(
                "prices changed since the quote: this provider now charges {}; quote again",
                self.parts.settings.pricing
            )));
        }
        let ops = self.ops.lock().await;
        self.check_capacity(&def, None)?;
        let channel_id = self.check_channel(who).await?;
        let spec = self.runtime_spec(&who.pod_id, &def)?;
        if retry {
            self.parts.store.delete_pod(&who.pod_id).map_err(internal)?;
        }
        let now = now_unix();
        let record = PodRecord {
            pod_id: who.pod_id,
            publisher: who.publisher.to_string(),
            channel_id: channel_id.0,
            manifest_json: serde_json::to_string(&def).map_err(internal)?,
            state: PodState::Provisioning,
            created_at_unix: now,
            updated_at_unix: now,
            hostnames: self.hostnames(&who.pod_id, &def),
            tcp_ports: Vec::new(),
        };
        self.parts.store.put_pod(&record).map_err(|e| match e {
            crate::store::StoreError::HostnameTaken { .. } => Refusal::Conflict(e.to_string()),
            e => internal(e),
        })?;
        let progress =
            Arc::new(std::sync::Mutex::new(pb::Progress { phase: "preparing".into(), ..Default::default() }));
        let (outcome, done) = tokio::sync::watch::channel(None);
        lock(&self.in_flight).insert(who.pod_id, InFlight { progress: progress.clone(), done: done.clone() });
        drop(ops);
        // The deploy completes in a task of its own, whatever happens to this request.
        let controller = self.clone();
        let pod_id = who.pod_id;
        tokio::spawn(async move {
            let result = controller.complete(record, &def, spec, agreed, progress).await;
            lock(&controller.in_flight).remove(&pod_id);
            outcome.send_replace(Some(result));
        });
        let mut done = done;
        let wait = Duration::from_secs(self.parts.settings.config.runtime.provision_wait_secs);
        let finished = tokio::time::timeout(wait, done.wait_for(Option::is_some)).await;
        match finished.ok().and_then(|r| r.ok().and_then(|outcome| outcome.clone())) {
            // Failed at once: nothing stays, as if it had been refused.
            Some(Err(refusal)) => {
                let gone = self.parts.store.get_pod(&pod_id).map_err(internal)?;
                if gone.is_some_and(|r| matches!(r.state, PodState::Failed { .. })) {
                    self.parts.store.delete_pod(&pod_id).map_err(internal)?;
                }
                Err(refusal)
            }
            // Done, or still unpacking: the status says which.
            _ => self.status(&pod_id).await,
        }
    }

    /// Completes an admitted deploy: unpacks its images, then (under the operations lock) opens
    /// its account and starts its containers. On failure, removes everything of it but a
    /// `Failed` record.
    async fn complete(
        &self,
        record: PodRecord,
        def: &PodDefinition,
        spec: PodSpec,
        agreed: tpod_billing::PriceTable,
        progress: Arc<std::sync::Mutex<pb::Progress>>,
    ) -> Result<(), Refusal> {
        let pod_id = record.pod_id;
        let report = progress.clone();
        let report: tpod_runtime::Progress = Arc::new(move |p: tpod_runtime::UnpackProgress| {
            *lock(&report) = pb::Progress {
                phase: "unpacking".into(),
                container: p.container,
                done_bytes: p.done_bytes,
                total_bytes: p.total_bytes,
            };
        });
        let prepared = self
            .runtime
            .prepare(spec.clone(), report)
            .await
            .map_err(|e| Refusal::Internal(format!("could not prepare the pod: {e}")));
        let started = match prepared {
            Ok(()) => {
                *lock(&progress) = pb::Progress { phase: "starting".into(), ..Default::default() };
                let _ops = self.ops.lock().await;
                // Billing starts before the containers do: their first CPU cycle is metered.
                match self.open_account(&pod_id, tpod_billing::Ledger::new(agreed, now_unix())) {
                    Ok(()) => self.start(record.clone(), def, spec, false).await,
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match started {
            Ok(_) => {
                tracing::info!(pod = %B256::from(pod_id), publisher = %record.publisher, "pod deployed");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(pod = %B256::from(pod_id), error = %e, "deploy failed; removing it");
                let _ops = self.ops.lock().await;
                self.fail(record, &e.to_string()).await;
                Err(e)
            }
        }
    }

    /// Removes everything of a pod (routes, ports, runtime state, account, host names) but its
    /// record, which becomes `Failed` with `reason` and reserves nothing.
    async fn fail(&self, mut record: PodRecord, reason: &str) {
        self.remove(&record.pod_id).await;
        record.state = PodState::Failed { reason: reason.to_owned() };
        record.hostnames.clear();
        record.tcp_ports.clear();
        record.updated_at_unix = now_unix();
        if let Err(e) = self.parts.store.put_pod(&record) {
            tracing::error!(pod = %B256::from(record.pod_id), error = %e, "could not record the failed deploy");
        }
    }

    /// Waits until the pod's deploy, if one is completing in the background, has ended.
    async fn settled(&self, pod_id: &[u8; 32]) {
        let pending = lock(&self.in_flight).get(pod_id).map(|f| f.done.clone());
        if let Some(mut done) = pending {
            let _ = done.wait_for(Option::is_some).await;
        }
    }

    async fn update(&self, who: &Authorized, pod: &pb::Pod) -> Result<pb::PodStatus, Refusal> {
        let def = PodDefinition::from_proto(pod)
            .map_err(Refusal::BadRequest)?
            .with_empty_dir_default(self.parts.settings.empty_dir_bytes);
        let _ops = self.ops.lock().await;
        let previous = self
            .parts
            .store
            .get_pod(&who.pod_id)
            .map_err(internal)?
            .ok_or_else(|| Refusal::NotFound(B256::from(who.pod_id).to_string()))?;
        if matches!(previous.state, PodState::Finished { .. }) {
            return Err(Refusal::Conflict(format!(
                "pod {} has finished and its channel is released; delete it and deploy again",
                B256::from(who.pod_id)
            )));
        }
        if !matches!(previous.state, PodState::Running) {
            return Err(Refusal::Conflict(format!(
                "pod {} is not running; it cannot be updated",
                B256::from(who.pod_id)
            )));
        }
        self.check_capacity(&def, Some(&who.pod_id))?;
        let spec = self.runtime_spec(&who.pod_id, &def)?;
        // Usage so far is billed at the old reservation.
        self.sample(Some(&who.pod_id)).await?;
        let old: PodDefinition = serde_json::from_str(&previous.manifest_json).map_err(internal)?;
        let mut record = previous.clone();
        // Host names are claimed before the old version stops, so a taken name changes nothing.
        record.hostnames = self.hostnames(&who.pod_id, &def);
        record.manifest_json = serde_json::to_string(&def).map_err(internal)?;
        record.updated_at_unix = now_unix();
        self.parts.store.put_pod(&record).map_err(|e| match e {
            crate::store::StoreError::HostnameTaken { .. } => Refusal::Conflict(e.to_string()),
            e => internal(e),
        })?;
        self.unexpose(&previous).await;
        match self.replace(record, &def, spec).await {
            Ok(record) => self.status_of(&record).await,
            Err(e) => {
                // Put the previous version back, so a bad update does not take the pod down.
                let restored = match self.runtime_spec(&who.pod_id, &old) {
                    Ok(old_spec) => {
                        self.parts.store.put_pod(&previous).map_err(internal)?;
                        self.replace(previous, &old, old_spec).await.map(|_| ())
                    }
                    Err(again) => Err(again),
                };
                if let Err(again) = restored {
                    tracing::error!(error = %again, "could not restore the previous version after a failed update");
                }
                Err(e)
            }
        }
    }

    /// Replaces the running pod's containers in place (same network, kept volumes), then
    /// exposes the new version.
    async fn replace(&self, mut record: PodRecord, def: &PodDefinition, spec: PodSpec) -> Result<PodRecord, Refusal> {
        // The new version starts as one replica; autoscaling adds the others it needs.
        self.remove_extra_replicas(&record).await;
        let endpoint = self
            .runtime
            .update(spec)
            .await
            .map_err(|e| Refusal::Internal(format!("could not start the new version: {e}")))?;
        record.tcp_ports = self.expose(&record, def, endpoint).await?;
        record.state = PodState::Running;
        self.parts.store.put_pod(&record).map_err(internal)?;
        Ok(record)
    }

    /// Stops and removes the pod, bills it to the end and makes the final claim, then releases
    /// the channel so the publisher can close it at once. If the chain cannot be reached, the
    /// pod is gone but its account stays until the billing loop has made the final claim.
    async fn delete(&self, who: &Authorized) -> Result<pb::PodStatus, Refusal> {
        // A deploy still unpacking ends first (it holds no lock meanwhile).
        self.settled(&who.pod_id).await;
        let _ops = self.ops.lock().await;
        let (state, billing) = match self.delete_and_settle(&who.pod_id).await {
            Ok(billing) => ("deleted".to_owned(), billing),
            Err(e) => {
                let billing = match self.parts.store.get_pod(&who.pod_id).map_err(internal)? {
                    Some(r) => self.billing_of(&r)?,
                    None => None,
                };
                let state = format!("deleted; final claim pending ({e})");
                self.note_attempt(&who.pod_id, Err(e));
                (state, billing)
            }
        };
        tracing::info!(pod = %B256::from(who.pod_id), %state, "pod deleted");
        Ok(pb::PodStatus { state, billing, ..Default::default() })
    }

    async fn status(&self, pod_id: &[u8; 32]) -> Result<pb::PodStatus, Refusal> {
        let record = self
            .parts
            .store
            .get_pod(pod_id)
            .map_err(internal)?
            .ok_or_else(|| Refusal::NotFound(B256::from(*pod_id).to_string()))?;
        self.status_of(&record).await
    }

    // --- logs --------------------------------------------------------------------------------

    /// Answers a signed logs request with the container's log stream.
    pub async fn logs_request(
        &self,
        signed: &pb::SignedRequest,
    ) -> Result<BoxStream<'static, pb::LogChunk>, pb::Error> {
        self.logs_inner(signed).await.map_err(|r| {
            tracing::info!(refusal = %r, "logs request refused");
            r.to_error()
        })
    }

    async fn logs_inner(&self, signed: &pb::SignedRequest) -> Result<BoxStream<'static, pb::LogChunk>, Refusal> {
        let request: pb::LogsRequest =
            tpod_wire::decode(&signed.payload).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        let (who, record) = self
            .authorize(signed, "logs", &request.pod_id, &request.publisher, request.nonce, request.expiry_unix)
            .await?;
        let record = record.ok_or_else(|| Refusal::NotFound(B256::from(who.pod_id).to_string()))?;
        let def: PodDefinition = serde_json::from_str(&record.manifest_json).map_err(internal)?;
        let container = match request.container.as_str() {
            "" => def.containers.first().map(|c| c.name.clone()).unwrap_or_default(),
            name if def.containers.iter().any(|c| c.name == name) => name.to_owned(),
            name => return Err(Refusal::BadRequest(format!("pod has no container {name:?}"))),
        };
        let replicas = self.replica_ids(&who.pod_id);
        let replica = usize::try_from(request.replica).ok().and_then(|k| replicas.get(k)).ok_or_else(|| {
            Refusal::BadRequest(format!("replica {}: the pod runs {} replica(s) now", request.replica, replicas.len()))
        })?;
        let options = LogOptions { follow: request.follow, tail_lines: request.tail_lines };
        let stream = self.runtime.logs(replica, &container, options).await.map_err(internal)?;
        let name = container.clone();
        let chunks = stream.map(move |item| match item {
            Ok(data) => pb::LogChunk {
                version: tpod_wire::VERSION,
                container: name.clone(),
                data,
                timestamp_unix_nanos: now_nanos(),
                ..Default::default()
            },
            Err(e) => pb::LogChunk {
                version: tpod_wire::VERSION,
                container: name.clone(),
                end: true,
                error: Some(internal(e).to_error()),
                ..Default::default()
            },
        });
        let end = futures::stream::once(async move {
            pb::LogChunk { version: tpod_wire::VERSION, container, end: true, ..Default::default() }
        });
        Ok(chunks.chain(end).boxed())
    }

    // --- recovery ------------------------------------------------------------------------------

    /// After a start (or a restart after `kill -9`): re-adopts the pods the store says run,
    /// finishes off deploys that were cut short, and removes runtime state nobody owns.
    pub async fn recover(self: &Arc<Self>) -> Result<(), Refusal> {
        let _ops = self.ops.lock().await;
        let pods = self.parts.store.list_pods().map_err(internal)?;
        for record in &pods {
            let id = B256::from(record.pod_id);
            match record.state {
                // Still stopped in the runtime; the next request wakes it.
                PodState::ScaledToZero { .. } => {
                    let def: PodDefinition = serde_json::from_str(&record.manifest_json).map_err(internal)?;
                    if let Err(e) = self.expose_asleep(record, &def).await {
                        tracing::error!(pod = %id, error = %e, "could not route the pod at zero");
                    }
                }
                PodState::Running => {
                    let def: PodDefinition = serde_json::from_str(&record.manifest_json).map_err(internal)?;
                    let adopted = match self.runtime_spec(&record.pod_id, &def) {
                        Ok(spec) => self.start(record.clone(), &def, spec, true).await,
                        Err(e) => Err(e),
                    };
                    match adopted {
                        Ok(_) => tracing::info!(pod = %id, "pod re-adopted"),
                        Err(e) => {
                            tracing::error!(pod = %id, error = %e, "pod could not be re-adopted");
                            let mut failed = record.clone();
                            failed.state = PodState::Failed { reason: e.to_string() };
                            self.parts.store.put_pod(&failed).map_err(internal)?;
                        }
                    }
                }
                PodState::Provisioning => {
                    tracing::warn!(pod = %id, "removing a deploy that was cut short");
                    self.fail(record.clone(), "the provider restarted while the pod was being provisioned").await;
                }
                _ => {}
            }
        }
        let known: Vec<String> = pods.iter().map(|p| hex(&p.pod_id)).collect();
        for orphan in self.runtime.list().await.map_err(internal)? {
            if known.contains(&orphan) {
                continue;
            }
            // A pod's extra replicas start again as load asks; their CPU time leaves the count.
            if let Some(pod_id) = replicas::owner(&pods, &orphan) {
                self.delete_replicas(&pod_id, std::slice::from_ref(&orphan)).await;
                continue;
            }
            tracing::warn!(pod = %orphan, "removing runtime state of an unknown pod");
            self.runtime.delete(&orphan).await.map_err(internal)?;
        }
        Ok(())
    }

    // --- helpers -------------------------------------------------------------------------------

    fn check_capacity(&self, def: &PodDefinition, replacing: Option<&[u8; 32]>) -> Result<(), Refusal> {
        let free = self.free(replacing)?;
        let asked = def.capacity();
        if !asked.fits_in(free) {
            return Err(Refusal::Capacity(capacity_message(asked, free)));
        }
        Ok(())
    }

    /// Checks on chain that the channel (publisher → this provider, pod) pays for the pod.
    async fn check_channel(&self, who: &Authorized) -> Result<B256, Refusal> {
        let me = self.provider_address();
        let id = tpod_chain::claim::channel_id(who.publisher, me, B256::from(who.pod_id));
        let channel = self
            .parts
            .chain
            .channel(id)
            .await
            .map_err(|e| Refusal::Internal(format!("cannot read the payment channel: {e}")))?
            .ok_or_else(|| {
                Refusal::Payment(format!(
                    "no payment channel from {} to this provider ({me}) for pod {}; create and fund one first",
                    who.publisher,
                    B256::from(who.pod_id)
                ))
            })?;
        let terms = &self.parts.settings;
        if channel.closed {
            return Err(Refusal::Payment(format!("payment channel {id} is closed")));
        }
        if channel.enclave_signer != self.enclave_address() {
            return Err(Refusal::Payment(format!(
                "payment channel {id} names enclave signer {}, but this provider's enclave signs as {}",
                channel.enclave_signer,
                self.enclave_address()
            )));
        }
        if channel.unlock_at.is_some() {
            return Err(Refusal::Payment(format!("payment channel {id} is being unlocked")));
        }
        if channel.unlock_delay < terms.config.terms.min_unlock_delay_secs {
            return Err(Refusal::Payment(format!(
                "payment channel {id} has an unlock delay of {}s; this provider asks at least {}s",
                channel.unlock_delay, terms.config.terms.min_unlock_delay_secs
            )));
        }
        let unclaimed: U256 = channel.unclaimed();
        if unclaimed < terms.min_funding {
            return Err(Refusal::Payment(format!(
                "payment channel {id} holds {unclaimed} unclaimed; this provider asks at least {}",
                terms.min_funding
            )));
        }
        Ok(id)
    }

    /// The runtime's view of a pod: its images and secrets opened with the enclave's key, the
    /// images' blobs found in the blob store and their configs verified.
    fn runtime_spec(&self, pod_id: &[u8; 32], def: &PodDefinition) -> Result<PodSpec, Refusal> {
        let sender = def
            .sealed_by
            .and_then(|key| tpod_crypto::PublicKey::from_bytes(&key).ok())
            .ok_or_else(|| Refusal::BadRequest("the pod names no key its images are sealed by".into()))?;
        let opener = crate::sealed::Opener { enclave: &self.parts.sealing, sender, pod_id };
        let containers = def
            .containers
            .iter()
            .map(|c| {
                let sealed = c.sealed_image.as_ref().ok_or_else(|| {
                    Refusal::BadRequest(format!(
                        "container {:?}: its image was delivered unsealed (by an older version); redeploy the pod",
                        c.name
                    ))
                })?;
                if c.stored_in_clear() {
                    return Err(Refusal::BadRequest(format!(
                        "container {:?}: its command, args or env were stored in clear (by an older version); \
                         redeploy the pod",
                        c.name
                    )));
                }
                let image = opener
                    .image(&c.name, sealed, &self.parts.blobs)
                    .map_err(|e| Refusal::BadRequest(format!("image of container {:?}: {e}", c.name)))?;
                // Opened into memory only: the runtime writes the container's spec into its tmpfs.
                let process = match &c.sealed_process {
                    Some(sealed) => opener
                        .process(&c.name, sealed)
                        .map_err(|e| Refusal::BadRequest(format!("process of container {:?}: {e}", c.name)))?,
                    None => crate::sealed::Process::default(),
                };
                Ok(ContainerSpec {
                    name: c.name.clone(),
                    image,
                    command: process.command,
                    args: process.args,
                    env: process.env,
                    working_dir: c.working_dir.clone(),
                    cpu_millis: c.cpu_millis,
                    memory_bytes: c.memory_bytes,
                    // 0: the provider's default; the runtime never allows more than it.
                    pids_limit: c.pids.map_or(0, u64::from),
                    mounts: c
                        .mounts
                        .iter()
                        .map(|m| VolumeMount { volume: m.volume.clone(), path: m.path.clone(), read_only: m.read_only })
                        .collect(),
                })
            })
            .collect::<Result<Vec<_>, Refusal>>()?;
        let volumes = def
            .volumes
            .iter()
            .map(|v| {
                let kind = match (&v.secret, v.size_bytes) {
                    (Some(sealed), _) => VolumeKind::Secret {
                        files: opener
                            .secret(&v.name, sealed)
                            .map_err(|e| Refusal::BadRequest(format!("secret volume {:?}: {e}", v.name)))?,
                    },
                    (None, Some(size_bytes)) if v.empty_dir => VolumeKind::EmptyDir { size_bytes },
                    (None, Some(size_bytes)) => VolumeKind::Filesystem { size_bytes },
                    // A record from before emptyDirs had a size: the default (not reserved).
                    (None, None) => VolumeKind::EmptyDir { size_bytes: self.parts.settings.empty_dir_bytes },
                };
                Ok(VolumeSpec { name: v.name.clone(), kind })
            })
            .collect::<Result<Vec<_>, Refusal>>()?;
        Ok(PodSpec { id: hex(pod_id), containers, volumes, restart_policy: def.restart_policy })
    }

    fn hostnames(&self, pod_id: &[u8; 32], def: &PodDefinition) -> Vec<String> {
        let mut hosts = vec![format!("{}.{}", pod_label(pod_id), self.parts.settings.config.ingress.domain)];
        hosts.extend(def.http_ports().filter_map(|p| p.hostname.clone()));
        hosts
    }

    /// Starts (or, with `adopt`, re-attaches to) the pod's containers, then exposes it and marks
    /// it running. Returns the updated record.
    async fn start(
        &self,
        mut record: PodRecord,
        def: &PodDefinition,
        spec: PodSpec,
        adopt: bool,
    ) -> Result<PodRecord, Refusal> {
        let endpoint = if adopt { self.runtime.adopt(spec).await } else { self.runtime.start(spec).await }
            .map_err(|e| Refusal::Internal(format!("could not start the pod: {e}")))?;
        record.tcp_ports = self.expose(&record, def, endpoint).await?;
        record.state = PodState::Running;
        record.updated_at_unix = now_unix();
        self.parts.store.put_pod(&record).map_err(internal)?;
        self.note_awake(&record.pod_id, endpoint.ip);
        Ok(record)
    }

    /// The host names of each of the pod's HTTP ports: its own `hostname`s, and the pod's name
    /// for its first HTTP port.
    fn route_hosts(&self, record: &PodRecord, def: &PodDefinition) -> Vec<(u16, Vec<String>)> {
        let default_host = format!("{}.{}", pod_label(&record.pod_id), self.parts.settings.config.ingress.domain);
        let mut first = true;
        def.http_ports()
            .map(|port| {
                let mut hosts: Vec<String> = port.hostname.iter().cloned().collect();
                if std::mem::take(&mut first) {
                    hosts.push(default_host.clone());
                }
                (port.container_port, hosts)
            })
            .collect()
    }

    /// Routes the pod's host names and opens its TCP host ports (the same ones as before when
    /// re-adopting, if they are still free).
    async fn expose(
        &self,
        record: &PodRecord,
        def: &PodDefinition,
        endpoint: PodEndpoint,
    ) -> Result<Vec<(u16, u16)>, Refusal> {
        let key = hex(&record.pod_id);
        for (port, hosts) in self.route_hosts(record, def) {
            let backend = SocketAddr::from((endpoint.ip, port));
            self.parts.routes.set(&route_key(&key, port), hosts, backend);
        }
        let mut tcp_ports = Vec::new();
        for port in def.tcp_ports() {
            let backend = SocketAddr::from((endpoint.ip, port));
            let previous = record.tcp_ports.iter().find(|(c, _)| *c == port).map_or(0, |(_, h)| *h);
            let host_port = match self.parts.tcp.expose(&key, previous, backend).await {
                Ok(p) => p,
                Err(_) if previous != 0 => self.parts.tcp.expose(&key, 0, backend).await.map_err(internal)?,
                Err(e) => return Err(internal(e)),
            };
            tcp_ports.push((port, host_port));
        }
        Ok(tcp_ports)
    }

    async fn unexpose(&self, record: &PodRecord) {
        let key = hex(&record.pod_id);
        if let Ok(def) = serde_json::from_str::<PodDefinition>(&record.manifest_json) {
            for port in def.http_ports() {
                self.parts.routes.remove(&route_key(&key, port.container_port));
            }
        }
        // Waits for the ports to close, so a new version can take the same ones.
        self.parts.tcp.remove_and_wait(&key).await;
    }

    /// Removes everything of a pod: routes, ports, containers, the record and its host names.
    async fn remove(&self, pod_id: &[u8; 32]) {
        if let Ok(Some(record)) = self.parts.store.get_pod(pod_id) {
            self.unexpose(&record).await;
            self.remove_extra_replicas(&record).await;
        }
        if let Err(e) = self.runtime.delete(&hex(pod_id)).await {
            tracing::error!(pod = %B256::from(*pod_id), error = %e, "runtime could not remove the pod");
        }
        if let Err(e) = self.parts.store.delete_pod(pod_id) {
            tracing::error!(pod = %B256::from(*pod_id), error = %e, "store could not forget the pod");
        }
    }

    async fn status_of(&self, record: &PodRecord) -> Result<pb::PodStatus, Refusal> {
        let def: PodDefinition = serde_json::from_str(&record.manifest_json).map_err(internal)?;
        let url = def
            .http_ports()
            .next()
            .map(|_| {
                self.url_for(&format!("{}.{}", pod_label(&record.pod_id), self.parts.settings.config.ingress.domain))
            })
            .unwrap_or_default();
        let runtime = self.runtime.status(&hex(&record.pod_id)).await.map_err(internal)?;
        let mut containers = Vec::new();
        let replica_ids = self.replica_ids(&record.pod_id);
        for (replica, id) in (0u32..).zip(&replica_ids) {
            let status = match replica {
                0 => runtime.clone(),
                _ => self.runtime.status(id).await.map_err(internal)?,
            };
            containers.extend(status.into_iter().flat_map(|s| s.containers).map(|c| pb::ContainerStatus {
                name: c.name,
                state: container_state(c.state).into(),
                exit_code: c.last_exit_code.unwrap_or_default(),
                has_exit_code: c.last_exit_code.is_some(),
                restarts: c.restarts,
                replica,
            }));
        }
        // Ended for good, every one of them: finished, even before the billing loop records it.
        let ended = runtime_ended(runtime.as_ref());
        let state = match &record.state {
            PodState::Running if ended.is_some() => finished_state(ended.as_deref().unwrap_or_default()),
            PodState::Running if containers.iter().any(|c| c.state == "restarting") => "crash-looping".to_owned(),
            PodState::Running
                if containers.iter().any(|c| !matches!(c.state.as_str(), "running" | "succeeded" | "failed")) =>
            {
                "starting".to_owned()
            }
            PodState::Running => "running".to_owned(),
            PodState::Finished { exit_codes, .. } => finished_state(exit_codes),
            PodState::Provisioning => "provisioning".to_owned(),
            PodState::Paused { reason, .. } => format!("paused: {reason}"),
            PodState::ScaledToZero { .. } => "scaled-to-zero".to_owned(),
            PodState::Stopped => "deleted; final claim pending".to_owned(),
            PodState::Failed { reason } => format!("failed: {reason}"),
        };
        let billing = self.billing_of(record)?;
        let progress = match record.state {
            PodState::Provisioning => lock(&self.in_flight).get(&record.pod_id).map(|f| lock(&f.progress).clone()),
            _ => None,
        };
        let last_wake = self.last_wake(&record.pod_id);
        let replicas = match record.state {
            PodState::Running => u32::try_from(replica_ids.len()).unwrap_or(u32::MAX),
            _ => 0,
        };
        Ok(pb::PodStatus {
            replicas,
            state,
            url,
            containers,
            tcp_ports: tcp_port_map(&record.tcp_ports),
            billing,
            progress,
            last_wake,
        })
    }

    fn url_for(&self, host: &str) -> String {
        match &self.parts.settings.config.ingress.public_url {
            Some(template) => template.replace("{host}", host),
            None => format!("http://{host}:{}", self.parts.ingress_port),
        }
    }
}

fn tcp_port_map(ports: &[(u16, u16)]) -> std::collections::BTreeMap<u32, u32> {
    ports.iter().map(|(c, h)| (u32::from(*c), u32::from(*h))).collect()
}

fn container_state(state: ContainerState) -> &'static str {
    match state {
        ContainerState::Starting => "starting",
        ContainerState::Running => "running",
        ContainerState::Restarting => "restarting",
        ContainerState::Exited => "exited",
        ContainerState::Succeeded => "succeeded",
        ContainerState::Failed => "failed",
    }
}

/// Each container's name and the exit code it ended with, if the pod has containers and every
/// one has ended for good; `None` otherwise.
fn runtime_ended(status: Option<&tpod_runtime::PodStatus>) -> Option<Vec<(String, Option<i32>)>> {
    let status = status?;
    let all_ended = !status.containers.is_empty() && status.containers.iter().all(|c| c.state.is_ended());
    all_ended.then(|| status.containers.iter().map(|c| (c.name.clone(), c.last_exit_code)).collect())
}

/// A finished pod's state: `succeeded` when every container exited 0, else `failed: ` and the
/// first container that did not.
fn finished_state(exit_codes: &[(String, Option<i32>)]) -> String {
    match exit_codes.iter().find(|(_, code)| *code != Some(0)) {
        None => "succeeded".to_owned(),
        Some((name, Some(code))) => format!("failed: container {name} exited with code {code}"),
        Some((name, None)) => format!("failed: container {name} ended with its exit code unknown"),
    }
}

/// Whether a pod's reservation counts against capacity.
fn holds_resources(p: &PodRecord) -> bool {
    // A pod at zero keeps its capacity, so that waking it never finds the provider full.
    matches!(
        p.state,
        PodState::Provisioning | PodState::Running | PodState::Paused { .. } | PodState::ScaledToZero { .. }
    )
}

fn capacity_message(asked: Reservation, free: Reservation) -> String {
    format!("asked for {asked}, but only {free} are free")
}

/// Routes are keyed per pod and HTTP port.
fn route_key(pod: &str, port: u16) -> String {
    format!("{pod}:{port}")
}

/// Lowercase hex of a pod id: the runtime's name for the pod.
pub fn hex(pod_id: &[u8; 32]) -> String {
    alloy::hex::encode(pod_id)
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
