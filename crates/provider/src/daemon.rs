//! The daemon: opens the state, keys, chain, runtime and ingress named in the configuration,
//! re-adopts the pods that ran before, then answers the libp2p protocols until stopped.
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
use tpod_wire::pb;

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
    billing: tokio::task::JoinHandle<()>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.billing.abort();
    }
}

impl Daemon {
    /// What the daemon published about itself.
    pub fn info(&self) -> &ProviderInfo {
        &self.info
    }
}

/// Starts the daemon with `settings`.
pub async fn start(settings: Settings) -> Result<Daemon, DaemonError> {
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
    let chain = connect_chain(&settings, account).await?;

    let runtime = local_runtime(&settings)?;
    let routes = Routes::default();
    let ingress = HttpIngress::bind(config.ingress.http, routes.clone())
        .await
        .map_err(|e| step("bind the HTTP ingress")(e.to_string()))?;
    let tcp = TcpForwards::new(config.ingress.tcp_bind);

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
    let billing = tokio::spawn(controller.clone().run_billing());

    let listen: Multiaddr =
        config.listen.parse().map_err(|e| step("parse `listen`")(format!("{:?}: {e}", config.listen)))?;
    let net = Provider::listen(keypair, listen, ProtocolHandler { controller: controller.clone() })
        .await
        .map_err(|e| step("listen for publishers")(e.to_string()))?;
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
    tracing::info!(peer = %info.peer_id, addr = %info.multiaddr, ingress = %info.ingress, "provider ready");
    Ok(Daemon { info, _net: net, _ingress: ingress, billing })
}

/// Removes every pod the provider with `settings` has (store records and runtime state) and
/// returns how many there were. The daemon must not be running.
pub async fn purge(settings: &Settings) -> Result<usize, DaemonError> {
    let data = &settings.config.data_dir;
    let store = Store::open(data.join("state.redb")).map_err(|e| step("open the state store")(e.to_string()))?;
    let runtime = local_runtime(settings)?;
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
    Ok(ids.len())
}

fn local_runtime(settings: &Settings) -> Result<LocalRuntime, DaemonError> {
    LocalRuntime::new(LocalConfig {
        bridge: settings.config.runtime.bridge.clone(),
        subnet: settings.subnet,
        log_cap_bytes: settings.log_cap_bytes,
        rootfs_bytes: settings.rootfs_bytes,
        ..LocalConfig::new(&settings.config.data_dir)
    })
    .map_err(|e| step("start the local runtime")(e.to_string()))
}

async fn connect_chain(
    settings: &Settings,
    account: alloy::signers::local::PrivateKeySigner,
) -> Result<Chain, DaemonError> {
    let c = &settings.config.chain;
    Chain::connect_to_payment(&c.rpc_url, account, c.payment, c.registry)
        .await
        .map_err(|e| step("connect to the chain")(e.to_string()))
}

fn create_private_dir(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// Adapts the controller to the libp2p protocols.
struct ProtocolHandler<R> {
    controller: Arc<Controller<R>>,
}

impl<R: Runtime> Handler for ProtocolHandler<R> {
    async fn quote(&self, _peer: PeerId, request: pb::QuoteRequest) -> pb::QuoteResponse {
        self.controller.quote(&request)
    }

    async fn provision(&self, _peer: PeerId, request: pb::SignedRequest) -> pb::ProvisionResponse {
        self.controller.provision_request(&request).await
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
