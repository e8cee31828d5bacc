//! The daemon: opens the state, keys, chain, runtime and ingress named in the configuration,
//! re-adopts the pods that ran before, then answers the libp2p protocols until stopped.
//!
//! With `[chain] chain_id` and `token` in the configuration nothing at start needs the chain:
//! the daemon serves while its RPC is down and checks the chain once it answers
//! ([`crate::chaincheck`]). Without them it checks the chain first and does not start if it
//! does not answer.
//!
//! When it is ready it writes `provider.json` in its data directory (peer id, address, ingress,
//! payment and enclave addresses), which `tpod dev up` and scripts read to reach it.

use std::path::PathBuf;
use std::sync::Arc;

use alloy::primitives::Address;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use tpod_chain::Chain;
use tpod_ingress::{HttpIngress, Routes, TcpForwards};
use tpod_net::{Handler, Multiaddr, PeerId, Provider};
use tpod_runtime::{LocalConfig, LocalRuntime, Runtime};
use tpod_wire::{ErrorReply as _, codes, pb};

use crate::blobs::BlobStore;
use crate::config::Settings;
use crate::controller::{Controller, Parts};
use crate::store::Store;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A step of the start-up failed.
    #[error("{step}: {reason}")]
    Start {
        /// What was being done.
        step: &'static str,
        /// Why it failed.
        reason: String,
    },
}

fn step(step: &'static str) -> impl FnOnce(String) -> DaemonError {
    move |reason| DaemonError::Start { step, reason }
}

/// What a running provider publishes about itself in `provider.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProviderInfo {
    /// The libp2p peer id.
    pub peer_id: String,
    /// The libp2p address it listens on.
    pub multiaddr: String,
    /// The HTTP ingress address.
    pub ingress: String,
    /// The ingress domain.
    pub domain: String,
    /// The provider's payment address.
    pub provider_address: Address,
    /// The enclave signer's address.
    pub enclave_signer: Address,
    /// The daemon's process id.
    pub pid: u32,
}

impl ProviderInfo {
    /// Where a provider with data directory `data_dir` writes its info.
    pub fn path(data_dir: &std::path::Path) -> PathBuf {
        data_dir.join("provider.json")
    }
}

/// A started daemon. Dropping it stops answering; pods keep running, to be re-adopted.
pub struct Daemon {
    info: ProviderInfo,
    _net: Provider,
    _ingress: HttpIngress,
    /// Billing, the partial-upload sweep, the TDX collateral refresh: stopped with the daemon.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.tasks.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

impl Daemon {
    /// What the daemon published about itself.
    pub fn info(&self) -> &ProviderInfo {
        &self.info
    }
}

/// Starts the daemon with `settings`.
pub async fn start(mut settings: Settings) -> Result<Daemon, DaemonError> {
    let config = settings.config.clone();
    let data = config.data_dir.clone();
    create_private_dir(&data).map_err(|e| step("create the data directory")(format!("{}: {e}", data.display())))?;
    let store = Store::open(data.join("state.redb")).map_err(|e| step("open the state store")(e.to_string()))?;
    // Encrypted blobs only: what they hold is readable inside the enclave alone.
    let blobs = BlobStore::open(data.join("blobs")).map_err(|e| step("open the blob store")(e.to_string()))?;
    let enclave = crate::enclave::load_or_generate(&data.join("enclave.key"))
        .map_err(|e| step("load the enclave key")(e.to_string()))?;
    let sealing = crate::enclave::load_or_generate_sealing(&data.join("enclave-seal.key"))
        .map_err(|e| step("load the enclave encryption key")(e.to_string()))?;
    let keypair = tpod_net::load_or_generate_keypair(&data.join("libp2p.key"))
        .map_err(|e| step("load the libp2p key")(e.to_string()))?;
    let account = crate::enclave::read_key(&config.chain.key_file)
        .map_err(|e| step("load the provider account key")(e.to_string()))?;
    let (chain, unchecked) = connect_chain(&settings, account.clone()).await?;
    let binding = tpod_attestation::Binding {
        libp2p_public_key: keypair.public(),
        enclave_signer: enclave.address().into_array(),
        enclave_encryption_key: *sealing.public().as_bytes(),
        measurement: tpod_attestation::Measurement {
            binary: tpod_attestation::binding::sha256_file(std::path::Path::new("/proc/self/exe"))
                .map_err(|e| step("measure the provider binary")(format!("/proc/self/exe: {e}")))?,
            config: settings.config_sha256,
        },
    };
    let tee = tee(&settings)?;
    // With `tee = "auto"` the kind is known only now; quotes and the Registry entry name it.
    settings.tee_type = crate::config::tee_type(tee.kind()).to_owned();
    let binary_sha256 = binding.measurement.binary;
    let pccs = match (&tee, &config.attestation.tdx_pccs_url) {
        (tpod_attestation::Tee::Tdx { collateral }, Some(url)) => Some((url.clone(), collateral.clone())),
        _ => None,
    };
    let attester = tpod_attestation::Attester::new(tee, binding);

    // Volume keys follow the enclave's sealing key: readable again after a restart, by this
    // enclave only.
    let volume_key = tpod_runtime::VolumeKey::new(sealing.derive_secret(b"tpod volume keys"));
    let runtime = local_runtime(&settings, volume_key)?;
    // Before any pod is adopted: a bridge or subnet that collides with the host's network stops
    // the provider here, with the reason; otherwise the bridge is up with its firewall.
    runtime.prepare_network().await.map_err(|e| step("set up the pod network")(e.to_string()))?;
    let routes = Routes::default();
    let ingress = HttpIngress::bind_with(config.ingress.http, routes.clone(), config.ingress.proxy())
        .await
        .map_err(|e| step("bind the HTTP ingress")(e.to_string()))?;
    let tcp = TcpForwards::with_config(config.ingress.tcp_bind, config.ingress.proxy());

    let sweep_store = blobs.clone();
    let controller = Arc::new(Controller::new(
        Parts {
            settings: settings.clone(),
            store,
            blobs: Arc::new(blobs),
            routes,
            tcp,
            chain,
            enclave,
            sealing,
            ingress_port: ingress.local_addr().port(),
        },
        runtime,
    ));
    controller.recover().await.map_err(|e| step("re-adopt pods")(e.to_string()))?;

    let listen: Multiaddr =
        config.listen.parse().map_err(|e| step("parse `listen`")(format!("{:?}: {e}", config.listen)))?;
    let profile_slot = crate::registration::ProfileSlot::default();
    let handler =
        ProtocolHandler { controller: controller.clone(), attester: Arc::new(attester), profile: profile_slot.clone() };
    let net =
        Provider::listen(keypair, listen, handler).await.map_err(|e| step("listen for publishers")(e.to_string()))?;
    let info = ProviderInfo {
        peer_id: net.peer_id().to_string(),
        multiaddr: net.listen_addr().to_string(),
        ingress: ingress.local_addr().to_string(),
        domain: config.ingress.domain.clone(),
        provider_address: controller.provider_address(),
        enclave_signer: controller.enclave_address(),
        pid: std::process::id(),
    };
    let json = serde_json::to_vec_pretty(&info).map_err(|e| step("write provider.json")(e.to_string()))?;
    let path = ProviderInfo::path(&data);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| step("write provider.json")(format!("{}: {e}", path.display())))?;
    // Started last, so a daemon that fails to start leaves no task behind.
    let mut tasks = vec![
        tokio::spawn(controller.clone().run_billing()),
        tokio::spawn(crate::blobs::sweep_partials_forever(
            sweep_store,
            crate::blobs::PARTIAL_MAX_IDLE,
            std::time::Duration::from_secs(3600),
        )),
    ];
    let gate = unchecked.map(|chain| {
        let (status, gate) = crate::chaincheck::gate();
        let schedule = crate::registration::Schedule::default();
        tasks.push(tokio::spawn(crate::chaincheck::run(chain, schedule, status)));
        gate
    });
    if config.chain.register {
        let (peer, addr) = (net.peer_id(), net.listen_addr());
        let slot = profile_slot.clone();
        tasks.push(crate::registration::spawn(&settings, account, peer, addr, binary_sha256, slot, gate));
    }
    if let Some((url, collateral)) = pccs {
        // The collateral depends on the platform only, so any report data will do.
        let quote = || tpod_attestation::tdx::generate([0; 64]);
        tasks.push(tokio::spawn(tpod_attestation::pccs::keep_fresh(url, collateral, quote)));
    }
    tracing::info!(peer = %info.peer_id, addr = %info.multiaddr, ingress = %info.ingress, "provider ready");
    Ok(Daemon { info, _net: net, _ingress: ingress, tasks })
}

/// Removes every pod the provider with `settings` has (store records and runtime state), then
/// its bridge and firewall tables, and returns how many pods there were. The daemon must not be
/// running.
pub async fn purge(settings: &Settings) -> Result<usize, DaemonError> {
    let data = &settings.config.data_dir;
    let store = Store::open(data.join("state.redb")).map_err(|e| step("open the state store")(e.to_string()))?;
    // Removing pods needs no volume key.
    let runtime = local_runtime(settings, tpod_runtime::VolumeKey::random())?;
    let pods = store.list_pods().map_err(|e| step("list pods")(e.to_string()))?;
    let mut ids: Vec<String> = pods.iter().map(|p| crate::controller::hex(&p.pod_id)).collect();
    for orphan in runtime.list().await.map_err(|e| step("list runtime pods")(e.to_string()))? {
        if !ids.contains(&orphan) {
            ids.push(orphan);
        }
    }
    for id in &ids {
        runtime.delete(id).await.map_err(|e| step("remove a pod")(format!("{id}: {e}")))?;
    }
    for pod in &pods {
        store.delete_pod(&pod.pod_id).map_err(|e| step("forget a pod")(e.to_string()))?;
    }
    // A provider taken down for good leaves no bridge (its route would break a later network on
    // the subnet) and no firewall tables.
    runtime.remove_network().await.map_err(|e| step("remove the pod network")(e.to_string()))?;
    Ok(ids.len())
}

fn local_runtime(settings: &Settings, volume_key: tpod_runtime::VolumeKey) -> Result<LocalRuntime, DaemonError> {
    LocalRuntime::new(LocalConfig {
        bridge: settings.config.runtime.bridge.clone(),
        subnet: settings.subnet,
        log_cap_bytes: settings.log_cap_bytes,
        rootfs_bytes: settings.rootfs_bytes,
        outbound_internet: settings.config.runtime.outbound_internet,
        pids_limit: settings.config.runtime.pids_limit,
        seccomp_deny: settings.config.runtime.seccomp_deny.clone(),
        ..LocalConfig::new(&settings.config.data_dir, volume_key)
    })
    .map_err(|e| step("start the local runtime")(e.to_string()))
}

/// The chain client: built from the configuration alone when it names the chain id and token
/// (returned a second time, to be checked once the node answers), else connected and checked now.
async fn connect_chain(
    settings: &Settings,
    account: alloy::signers::local::PrivateKeySigner,
) -> Result<(Chain, Option<Chain>), DaemonError> {
    let c = &settings.config.chain;
    if let Some((chain_id, contracts)) = c.known() {
        let chain = Chain::unchecked(&c.rpc_url, account, chain_id, contracts)
            .map_err(|e| step("set up the chain client")(e.to_string()))?;
        tracing::info!(
            rpc = %c.rpc_url,
            chain_id,
            "starting without the chain; it is checked against [chain] once it answers"
        );
        return Ok((chain.clone(), Some(chain)));
    }
    match Chain::connect_to_payment(&c.rpc_url, account, c.payment, c.registry).await {
        Ok(chain) => Ok((chain, None)),
        Err(e @ (tpod_chain::ChainError::Unreachable { .. } | tpod_chain::ChainError::Rpc { .. })) => {
            Err(step("connect to the chain")(format!(
                "{e}. To start without the chain, set [chain] chain_id and token in {}: the daemon then \
                 checks them once the chain answers",
                settings.file.display()
            )))
        }
        Err(e) => Err(step("connect to the chain")(e.to_string())),
    }
}

/// The TEE the configuration names, or the one this machine has.
fn tee(settings: &Settings) -> Result<tpod_attestation::Tee, DaemonError> {
    use crate::config::TeeSetting;
    use tpod_attestation::{Tee, TeeKind, pccs::TdxCollateral};
    let attestation = &settings.config.attestation;
    let kind = match attestation.tee {
        TeeSetting::Snp => TeeKind::Snp,
        TeeSetting::Tdx => TeeKind::Tdx,
        TeeSetting::Simulated => TeeKind::Simulated,
        TeeSetting::Auto => tpod_attestation::attester::detect().ok_or_else(|| {
            step("find a TEE")(
                "no SEV-SNP (/dev/sev-guest) or TDX (configfs-tsm) interface on this machine; for development \
                 set [attestation] tee = \"simulated\""
                    .into(),
            )
        })?,
    };
    Ok(match kind {
        TeeKind::Snp => Tee::Snp,
        TeeKind::Tdx => {
            let collateral = match (&attestation.tdx_collateral, &attestation.tdx_pccs_url) {
                (Some(path), _) => TdxCollateral::fixed(
                    std::fs::read(path)
                        .map_err(|e| step("load the TDX collateral")(format!("{}: {e}", path.display())))?,
                ),
                (None, Some(url)) => TdxCollateral::pending(url),
                (None, None) => {
                    return Err(step("find the TDX collateral")(
                        "set [attestation] tdx_pccs_url (a PCCS) or tdx_collateral (a file)".into(),
                    ));
                }
            };
            Tee::Tdx { collateral }
        }
        TeeKind::Simulated => {
            let path = attestation
                .simulated_root_key
                .as_ref()
                .ok_or_else(|| step("load the simulated TEE root")("set [attestation] simulated_root_key".into()))?;
            let root = tpod_attestation::SimulatedRoot::load_or_generate(path)
                .map_err(|e| step("load the simulated TEE root")(e.to_string()))?;
            tracing::warn!(root = %root.public_hex(), "simulated TEE: this provider proves nothing about its machine");
            Tee::Simulated(Box::new(root))
        }
    })
}

fn create_private_dir(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// Adapts the controller to the libp2p protocols.
struct ProtocolHandler<R> {
    controller: Arc<Controller<R>>,
    attester: Arc<tpod_attestation::Attester>,
    /// What `/tpod/profile/1` serves: the registration task puts the signed profile here.
    profile: crate::registration::ProfileSlot,
}

impl<R: Runtime> Handler for ProtocolHandler<R> {
    async fn attest(&self, peer: PeerId, request: pb::AttestRequest) -> pb::AttestResponse {
        use pb::attest_response::Result as Outcome;
        let attester = self.attester.clone();
        // Validation guarantees 32 bytes.
        let nonce: [u8; 32] = request.nonce.as_slice().try_into().unwrap_or_default();
        // A hardware report is an ioctl or a file exchange with the kernel: off the async workers.
        let evidence = tokio::task::spawn_blocking(move || attester.attest(&nonce)).await;
        let result = match evidence {
            Ok(Ok(evidence)) => Outcome::Evidence(evidence),
            Ok(Err(error)) => {
                tracing::error!(%peer, %error, "attestation failed");
                Outcome::Error(pb::Error { code: codes::INTERNAL, message: format!("attestation failed: {error}") })
            }
            Err(error) => {
                tracing::error!(%peer, %error, "attestation task failed");
                Outcome::Error(pb::Error { code: codes::INTERNAL, message: "internal error".into() })
            }
        };
        pb::AttestResponse { version: tpod_wire::VERSION, result: Some(result) }
    }

    async fn quote(&self, _peer: PeerId, request: pb::QuoteRequest) -> pb::QuoteResponse {
        self.controller.quote(&request)
    }

    async fn provision(&self, _peer: PeerId, request: pb::SignedRequest) -> pb::ProvisionResponse {
        // In a task of its own: a change the request started finishes (or rolls back) even if the
        // request times out and its answer is dropped.
        let controller = self.controller.clone();
        match tokio::spawn(async move { controller.provision_request(&request).await }).await {
            Ok(response) => response,
            Err(e) => pb::ProvisionResponse::refusal(pb::Error {
                code: codes::INTERNAL,
                message: format!("the request's task failed: {e}"),
            }),
        }
    }

    async fn profile(&self, _peer: PeerId, _request: pb::ProfileRequest) -> pb::ProfileResponse {
        // A poisoned lock still holds the last profile written whole: serving it is right.
        let profile = self.profile.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        match profile {
            Some(signed) => pb::ProfileResponse {
                version: tpod_wire::VERSION,
                result: Some(pb::profile_response::Result::Profile(signed)),
            },
            None => pb::ProfileResponse::refusal(pb::Error {
                code: codes::UNAVAILABLE,
                message: "this provider has not published a profile yet".into(),
            }),
        }
    }

    async fn logs(
        &self,
        _peer: PeerId,
        request: pb::SignedRequest,
    ) -> Result<BoxStream<'static, pb::LogChunk>, pb::Error> {
        self.controller.logs_request(&request).await
    }

    async fn blob_offer(&self, _peer: PeerId, offer: pb::BlobOffer) -> Result<pb::BlobState, pb::Error> {
        crate::blobs::offer(self.controller.blobs(), offer).await
    }

    async fn blob_chunk(
        &self,
        _peer: PeerId,
        cid: &str,
        total_size: u64,
        chunk: pb::BlobChunk,
    ) -> Result<pb::BlobState, pb::Error> {
        crate::blobs::chunk(self.controller.blobs(), cid, total_size, chunk).await
    }
}
