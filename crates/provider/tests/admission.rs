//! Admission by a real provider daemon (real anvil, real libp2p): which signed requests it
//! refuses and why, and that a refused deploy leaves nothing behind. Requests are built by hand
//! here, so that replays, stale expiries, tampering and foreign channels can be sent at all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
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

const MIN_FUNDING: u64 = 1_000_000;

fn anvil_bin() -> Option<PathBuf> {
    if tpod_devnet::anvil::locate(None).is_ok() {
        return None;
    }
    Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/bin/anvil"))
}

struct Fixture {
    _net: tpod_devnet::Throwaway,
    _dir: tempfile::TempDir,
    daemon: tpod_provider::daemon::Daemon,
    data: PathBuf,
    publisher: PrivateKeySigner,
    chain: Chain,
    client: Client,
    peer: PeerId,
    addr: Multiaddr,
}

async fn fixture(bridge: &str, subnet: &str) -> Fixture {
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
"#,
        rpc = net.file.rpc_url,
        payment = net.file.contracts.payment,
        registry = net.file.contracts.registry,
    );
    let path = dir.path().join("provider.toml");
    std::fs::write(&path, config).unwrap();
    let settings = Settings::load(&path).unwrap();
    let data = settings.config.data_dir.clone();
    let daemon = tpod_provider::daemon::start(settings).await.unwrap();
    let info = daemon.info().clone();
    let publisher = net.file.account("publisher").unwrap().signer().unwrap();
    let chain = Chain::connect(&net.file.rpc_url, publisher.clone(), net.file.contracts).await.unwrap();
    let client = Client::connect(tpod_net::generate_keypair()).unwrap();
    Fixture {
        _net: net,
        _dir: dir,
        data,
        publisher,
        chain,
        client,
        peer: info.peer_id.parse().unwrap(),
        addr: info.multiaddr.parse().unwrap(),
        daemon,
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A provision request for a one-container pod, signed by `key` as `action`.
fn signed(
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

fn pod() -> pb::provision_request::Action {
    priced(Some(tpod_billing::PriceTable::default().to_proto("", "")))
}

/// [`pod`] agreeing to `pricing` (the fixture's provider is free).
fn priced(pricing: Option<pb::PricingTable>) -> pb::provision_request::Action {
    pb::provision_request::Action::Provision(pb::Provision {
        pod: Some(pb::Pod {
            name: "web".into(),
            containers: vec![pb::Container {
                name: "web".into(),
                image: "./image".into(),
                image_cid: format!("sha256:{}", "ab".repeat(32)),
                resources: Some(pb::Resources { cpu_millis: 100, memory_bytes: 1 << 26, gpu: 0, storage_bytes: 0 }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        pricing,
    })
}

impl Fixture {
    async fn send(&self, request: pb::SignedRequest) -> Result<pb::PodStatus, pb::Error> {
        match self.client.provision(self.peer, self.addr.clone(), request).await.unwrap().result.unwrap() {
            pb::provision_response::Result::Status(s) => Ok(s),
            pb::provision_response::Result::Error(e) => Err(e),
        }
    }

    async fn channel(&self, provider: Address, pod_id: B256, amount: u64, enclave: Address) {
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
    fn assert_nothing_kept(&self) {
        let pods = self.data.join("pods");
        let left: Vec<_> =
            std::fs::read_dir(&pods).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "runtime state left: {left:?}");
    }
}

fn refused(result: Result<pb::PodStatus, pb::Error>, code: u32, needle: &str) {
    let err = result.expect_err("should be refused");
    assert_eq!(err.code, code, "{}", err.message);
    assert!(err.message.contains(needle), "{:?} does not contain {needle:?}", err.message);
}

#[tokio::test]
async fn unpaid_foreign_and_underfunded_channels_are_refused() {
    let f = fixture("tpa1", "10.231.0.0/16").await;
    let info = f.daemon.info().clone();

    // No channel at all.
    let pod_id = B256::random();
    let r = f.send(signed(&f.chain, &f.publisher, pod_id, pod(), 1, now() + 60)).await;
    refused(r, 402, "no payment channel");

    // A channel to another provider is not this provider's.
    let pod_id = B256::random();
    f.channel(Address::repeat_byte(0x42), pod_id, MIN_FUNDING, info.enclave_signer).await;
    let r = f.send(signed(&f.chain, &f.publisher, pod_id, pod(), 2, now() + 60)).await;
    refused(r, 402, "no payment channel");

    // Below the minimum.
    let pod_id = B256::random();
    f.channel(info.provider_address, pod_id, MIN_FUNDING - 1, info.enclave_signer).await;
    let r = f.send(signed(&f.chain, &f.publisher, pod_id, pod(), 3, now() + 60)).await;
    refused(r, 402, "asks at least 1000000");

    // Without the prices it agrees to, or with other prices than the provider's.
    let pod_id = B256::random();
    f.channel(info.provider_address, pod_id, MIN_FUNDING, info.enclave_signer).await;
    let r = f.send(signed(&f.chain, &f.publisher, pod_id, priced(None), 7, now() + 60)).await;
    refused(r, 400, "must name the prices");
    let dearer = tpod_billing::PriceTable::from_rows([("cpu", "0", "5")]).unwrap().to_proto("", "");
    let r = f.send(signed(&f.chain, &f.publisher, pod_id, priced(Some(dearer)), 8, now() + 60)).await;
    refused(r, 409, "prices changed since the quote");
    f.assert_nothing_kept();

    // Naming another enclave signer.
    let pod_id = B256::random();
    f.channel(info.provider_address, pod_id, MIN_FUNDING, Address::repeat_byte(7)).await;
    let r = f.send(signed(&f.chain, &f.publisher, pod_id, pod(), 4, now() + 60)).await;
    refused(r, 402, "enclave signs as");

    // Paid properly, but the image was never uploaded: refused, nothing kept.
    let pod_id = B256::random();
    f.channel(info.provider_address, pod_id, MIN_FUNDING, info.enclave_signer).await;
    let r = f.send(signed(&f.chain, &f.publisher, pod_id, pod(), 5, now() + 60)).await;
    refused(r, 400, "not (completely) uploaded");
    f.assert_nothing_kept();
    let status = pb::provision_request::Action::Status(pb::Status {});
    refused(f.send(signed(&f.chain, &f.publisher, pod_id, status, 6, now() + 60)).await, 404, "no pod");
}

#[tokio::test]
async fn replays_stale_tampered_and_foreign_requests_are_refused() {
    let f = fixture("tpa2", "10.232.0.0/16").await;
    let pod_id = B256::random();

    // The first request is authenticated (then refused for payment); its replay is refused as such.
    let request = signed(&f.chain, &f.publisher, pod_id, pod(), 77, now() + 60);
    refused(f.send(request.clone()).await, 402, "no payment channel");
    refused(f.send(request).await, 401, "replayed");

    // Expired, or valid for longer than the provider remembers nonces.
    refused(f.send(signed(&f.chain, &f.publisher, pod_id, pod(), 78, now() - 1)).await, 401, "expired");
    refused(f.send(signed(&f.chain, &f.publisher, pod_id, pod(), 79, now() + 3600)).await, 401, "at most 300s");

    // A payload changed after signing no longer matches its signature.
    let mut tampered = signed(&f.chain, &f.publisher, pod_id, pod(), 80, now() + 60);
    let last = tampered.payload.len() - 1;
    tampered.payload[last] ^= 1;
    let err = f.send(tampered).await.expect_err("tampered request accepted");
    assert!(err.code == 401 || err.code == 400, "{err:?}");

    // Signed by someone else than the publisher it names.
    let mut foreign = signed(&f.chain, &PrivateKeySigner::random(), pod_id, pod(), 81, now() + 60);
    let honest = signed(&f.chain, &f.publisher, pod_id, pod(), 81, now() + 60);
    foreign.payload = honest.payload;
    refused(f.send(foreign).await, 401, "signed by");

    // Garbage payloads are refused cleanly; the provider keeps serving.
    let garbage = pb::SignedRequest { version: 1, payload: vec![0xff; 40], signature: vec![1; 65] };
    refused(f.send(garbage).await, 400, "bad request");
    let quote = f.client.quote(f.peer, f.addr.clone(), pb::QuoteRequest { version: 1, resources: None }).await;
    assert!(quote.unwrap().available);
}

#[tokio::test]
async fn quote_reports_terms_and_refuses_what_does_not_fit() {
    let f = fixture("tpa3", "10.233.0.0/16").await;
    let info = f.daemon.info().clone();
    let ask = |cpu_millis, memory_bytes| pb::QuoteRequest {
        version: 1,
        resources: Some(pb::Resources { cpu_millis, memory_bytes, gpu: 0, storage_bytes: 0 }),
    };
    let q = f.client.quote(f.peer, f.addr.clone(), ask(500, 1 << 20)).await.unwrap();
    assert!(q.available, "{}", q.reason);
    assert_eq!(q.enclave_signer.parse::<Address>().unwrap(), info.enclave_signer);
    assert_eq!(q.provider_address.parse::<Address>().unwrap(), info.provider_address);
    assert_eq!(q.min_funding, MIN_FUNDING.to_string());
    assert_eq!(q.domain, "pods.test");
    let q = f.client.quote(f.peer, f.addr.clone(), ask(1500, 1 << 20)).await.unwrap();
    assert!(!q.available);
    assert!(q.reason.contains("only cpu 1000m"), "{}", q.reason);
    assert!(Path::new(&f.data).join("provider.json").exists());
}
