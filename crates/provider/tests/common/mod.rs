//! A real provider daemon on a throwaway anvil chain, and hand-built signed requests to it, shared
//! by the provider's integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use alloy::primitives::{Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use prost::Message;
use tpod_chain::Chain;
use tpod_chain::client::NewChannel;
use tpod_chain::request::{PodRequest, request_domain};
use tpod_net::{Client, Multiaddr, PeerId};
use tpod_provider::config::Settings;
use tpod_wire::pb;

pub const MIN_FUNDING: u64 = 1_000_000;

fn anvil_bin() -> Option<PathBuf> {
    if tpod_devnet::anvil::locate(None).is_ok() {
        return None;
    }
    Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/bin/anvil"))
}

pub struct Fixture {
    _net: tpod_devnet::Throwaway,
    _dir: tempfile::TempDir,
    /// The provider's config file.
    pub config: PathBuf,
    daemon: Option<tpod_provider::daemon::Daemon>,
    pub data: PathBuf,
    pub publisher: PrivateKeySigner,
    pub chain: Chain,
    pub client: Client,
    pub peer: PeerId,
    pub addr: Multiaddr,
}

pub async fn fixture(bridge: &str, subnet: &str) -> Fixture {
    let net = tpod_devnet::throwaway(anvil_bin().as_deref()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let provider = net.file.account("provider").unwrap().signer().unwrap();
    std::fs::write(dir.path().join("provider.key"), format!("0x{}", alloy::hex::encode(provider.to_bytes()))).unwrap();
    let config = format!(
        r#"
data_dir = "data"
listen = "/ip4/127.0.0.1/tcp/0"
[chain]
rpc_url = "{rpc}"
payment = "{payment}"
registry = "{registry}"
key_file = "provider.key"
register = false
[ingress]
http = "127.0.0.1:0"
domain = "pods.test"
tcp_bind = "127.0.0.1"
[capacity]
cpu = "1"
memory = "1Gi"
storage = "1Gi"
[terms]
min_funding = "{MIN_FUNDING}"
min_unlock_delay_secs = 60
[runtime]
bridge = "{bridge}"
subnet = "{subnet}"
log_cap = "1Mi"
[attestation]
tee = "simulated"
simulated_root_key = "simulated-tee-root.key"
"#,
        rpc = net.file.rpc_url,
        payment = net.file.contracts.payment,
        registry = net.file.contracts.registry,
    );
    let path = dir.path().join("provider.toml");
    std::fs::write(&path, config).unwrap();
    let data = Settings::load(&path).unwrap().config.data_dir;
    let daemon = start(&path).await;
    let info = daemon.info().clone();
    let publisher = net.file.account("publisher").unwrap().signer().unwrap();
    let chain = Chain::connect(&net.file.rpc_url, publisher.clone(), net.file.contracts).await.unwrap();
    let client = Client::connect(tpod_net::generate_keypair()).unwrap();
    Fixture {
        _net: net,
        _dir: dir,
        config: path,
        data,
        publisher,
        chain,
        client,
        peer: info.peer_id.parse().unwrap(),
        addr: info.multiaddr.parse().unwrap(),
        daemon: Some(daemon),
    }
}

async fn start(config: &std::path::Path) -> tpod_provider::daemon::Daemon {
    tpod_provider::daemon::start(Settings::load(config).unwrap()).await.unwrap()
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A provision request for a one-container pod, signed by `key` as `action`.
pub fn signed(
    chain: &Chain,
    key: &PrivateKeySigner,
    pod_id: B256,
    action: pb::provision_request::Action,
    nonce: u64,
    expiry: u64,
) -> pb::SignedRequest {
    let name = match action {
        pb::provision_request::Action::Provision(_) => "provision",
        pb::provision_request::Action::Status(_) => "status",
        _ => "delete",
    };
    let payload = pb::ProvisionRequest {
        version: 1,
        pod_id: pod_id.to_vec(),
        publisher: key.address().to_string(),
        nonce,
        expiry_unix: expiry,
        action: Some(action),
    }
    .encode_to_vec();
    let domain = request_domain(chain.chain_id(), chain.contracts().payment);
    let signature = PodRequest::new(pod_id, name, &payload, nonce, expiry).sign(&domain, key).unwrap();
    pb::SignedRequest { version: 1, payload, signature: signature.as_bytes().to_vec() }
}

pub fn pod() -> pb::provision_request::Action {
    priced(Some(tpod_billing::PriceTable::default().to_proto("", "")))
}

/// [`pod`] agreeing to `pricing` (the fixture's provider is free).
pub fn priced(pricing: Option<pb::PricingTable>) -> pb::provision_request::Action {
    pb::provision_request::Action::Provision(pb::Provision {
        pod: Some(pb::Pod {
            name: "web".into(),
            containers: vec![pb::Container {
                name: "web".into(),
                image: "./image".into(),
                // Admission is refused before anything sealed is opened.
                sealed_image: Some(pb::Sealed { enc: vec![1; 32], ciphertext: vec![2; 64] }),
                resources: Some(pb::Resources {
                    cpu_millis: 100,
                    memory_bytes: 1 << 26,
                    gpu: 0,
                    storage_bytes: 0,
                    pids: 0,
                }),
                ..Default::default()
            }],
            sealed_by: vec![3; 32],
            ..Default::default()
        }),
        pricing,
    })
}

impl Drop for Fixture {
    /// Pods outlive their daemon by design; a test's must not outlive the test, or a rerun on the
    /// same subnet reaches the old pod at the same address. The runtime is asked directly: the
    /// daemon's store stays locked until its aborted tasks run again, after this.
    fn drop(&mut self) {
        use tpod_runtime::Runtime as _;
        let Ok(settings) = Settings::load(&self.config) else { return };
        let config = tpod_runtime::LocalConfig {
            bridge: settings.config.runtime.bridge.clone(),
            subnet: settings.subnet,
            log_cap_bytes: settings.log_cap_bytes,
            rootfs_bytes: settings.rootfs_bytes,
            ..tpod_runtime::LocalConfig::new(&settings.config.data_dir, tpod_runtime::VolumeKey::random())
        };
        // Dropped inside the test's runtime: the clean-up runs on one of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let pods = tpod_runtime::LocalRuntime::new(config).ok()?;
                for id in pods.list().await.ok()? {
                    let _ = pods.delete(&id).await;
                }
                // Nor may its bridge and firewall tables: a later network on the subnet would
                // lose its route.
                pods.remove_network().await.ok()
            })
        })
        .join();
    }
}

impl Fixture {
    /// Stops the provider daemon (its pods keep running) and starts it again on the same data
    /// directory, at a new address.
    pub async fn restart(&mut self) {
        // The store allows one daemon at a time, and the old daemon's tasks let go of it a moment
        // after they are aborted.
        self.daemon = None;
        let mut tries = 0;
        let daemon = loop {
            match tpod_provider::daemon::start(Settings::load(&self.config).unwrap()).await {
                Ok(daemon) => break daemon,
                Err(e) if tries < 100 => {
                    tries += 1;
                    tracing::debug!(%e, "provider not restarted yet");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("provider restart: {e}"),
            }
        };
        self.addr = daemon.info().multiaddr.parse().unwrap();
        self.daemon = Some(daemon);
    }

    /// What the running daemon published about itself.
    pub fn info(&self) -> tpod_provider::daemon::ProviderInfo {
        self.daemon.as_ref().expect("the daemon runs").info().clone()
    }

    /// The provider's attestation to a fresh nonce, verified as a publisher does: the
    /// fixture's simulated root and this test binary (the daemon runs in it) pinned.
    pub async fn attested(&self) -> tpod_attestation::Attested {
        use tpod_attestation::{Digest, Options, Policy, SimulatedRoot, TeeKind, policy::SimulatedPolicy};
        let root = SimulatedRoot::load_or_generate(&self.config.with_file_name("simulated-tee-root.key")).unwrap();
        let policy = Policy {
            tee: [TeeKind::Simulated].into(),
            provider_binaries: [Digest(tpod_attestation::binding::sha256_file("/proc/self/exe".as_ref()).unwrap())]
                .into(),
            provider_configs: Default::default(),
            snp: Default::default(),
            tdx: Default::default(),
            simulated: Some(SimulatedPolicy { root: root.public_hex() }),
        };
        let nonce = B256::random();
        let request = pb::AttestRequest { version: tpod_wire::VERSION, nonce: nonce.to_vec() };
        let response = self.client.attest(self.peer, self.addr.clone(), request).await.unwrap();
        let Some(pb::attest_response::Result::Evidence(evidence)) = response.result else {
            panic!("no evidence: {response:?}")
        };
        let options = Options { allow_simulated: true, at: SystemTime::now() };
        tpod_attestation::verify(&evidence, &nonce.0, &self.peer, &policy, &options).into_result().unwrap()
    }

    pub async fn send(&self, request: pb::SignedRequest) -> Result<pb::PodStatus, pb::Error> {
        // The client turns the provider's error reply into a refusal.
        match self.client.provision(self.peer, self.addr.clone(), request).await {
            Ok(response) => match response.result.unwrap() {
                pb::provision_response::Result::Status(s) => Ok(s),
                pb::provision_response::Result::Error(e) => Err(e),
            },
            Err(error) => {
                let (code, message) = error.refusal().unwrap_or_else(|| panic!("{error}"));
                Err(pb::Error { code, message: message.to_owned() })
            }
        }
    }

    pub async fn channel(&self, provider: Address, pod_id: B256, amount: u64, enclave: Address) {
        self.chain.approve_payment(self.chain.contracts().token, U256::from(amount)).await.unwrap();
        self.chain
            .create_channel(&NewChannel {
                provider,
                pod_id,
                enclave_signer: enclave,
                amount: U256::from(amount),
                unlock_delay: 60,
                max_rate: 0,
            })
            .await
            .unwrap();
    }

    /// Nothing of any pod is kept: no store record, no runtime directory.
    pub fn assert_nothing_kept(&self) {
        let pods = self.data.join("pods");
        let left: Vec<_> =
            std::fs::read_dir(&pods).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "runtime state left: {left:?}");
    }
}

pub fn refused(result: Result<pb::PodStatus, pb::Error>, code: u32, needle: &str) {
    let err = result.expect_err("should be refused");
    assert_eq!(err.code, code, "{}", err.message);
    assert!(err.message.contains(needle), "{:?} does not contain {needle:?}", err.message);
}
