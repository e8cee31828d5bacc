//! A whole deployment on a network that is not the devnet: an anvil started here, an ERC-20
//! deployed by someone else, Payment and Registry deployed by `tpod network deploy` from a
//! keystore account, a `tpod-provider` configured by hand for that chain (it registers itself),
//! and a publisher with its own keystore who finds it in the Registry, deploys, reads the bill
//! and deletes, all through `--network`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use common::{hello, text, wait_for_body};
use tpod_attestation::policy::SimulatedPolicy;
use tpod_attestation::{Digest, Policy, SimulatedRoot, TeeKind};

const PASSWORD: &str = "correct horse battery staple";
/// The provider's bridge, on subnet 10.216.0.0/16, which no other test uses.
const BRIDGE: &str = "tpe16";

const ENVS: &[(&str, &str)] = &[("TPOD_PASSWORD", PASSWORD)];

fn tpod(home: &Path, args: &[&str]) -> Output {
    common::tpod_at(home, args, ENVS)
}

fn ok(home: &Path, args: &[&str]) -> serde_json::Value {
    common::ok_at(home, args, ENVS)
}

fn provider_bin() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_tpod")).with_file_name("tpod-provider")
}

/// The provider process; stopped and its pods purged when dropped.
struct ProviderProcess {
    child: Child,
    config: PathBuf,
}

impl Drop for ProviderProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let purge = Command::new(provider_bin()).arg("--config").arg(&self.config).arg("--purge").output();
        // Panicking in a drop would hide the test's own failure; a failed purge is reported.
        match purge {
            Ok(out) if !out.status.success() => eprintln!("tpod-provider --purge failed: {}", text(&out)),
            Err(e) => eprintln!("cannot run tpod-provider --purge: {e}"),
            Ok(_) => {}
        }
    }
}

#[test]
fn deploy_bill_and_delete_on_a_named_network() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let chain = common::anvil_at(home, 4343, &rt);
    let gas = |who: Address| {
        rt.block_on(tpod_devnet::deploy::set_native_balance(&chain.url, who, tpod_devnet::whole(10))).unwrap();
    };

    // Someone else's ERC-20, then our contracts for it, deployed from a keystore.
    let minter = tpod_devnet::DevAccount::generate("minter");
    gas(minter.address);
    let token = rt.block_on(tpod_devnet::deploy::deploy_test_token(&chain.url, minter.signer().unwrap())).unwrap();
    let deployer = ok(home, &["account", "new", "deployer"]);
    gas(deployer["address"].as_str().unwrap().parse().unwrap());
    let deployed = ok(
        home,
        &[
            "--rpc-url",
            &chain.url,
            "--account",
            "deployer",
            "network",
            "deploy",
            "second",
            "--token",
            &token.to_string(),
        ],
    );
    let contracts = tpod_chain::ContractAddresses {
        payment: deployed["payment"].as_str().unwrap().parse().unwrap(),
        registry: deployed["registry"].as_str().unwrap().parse().unwrap(),
        token,
    };

    // A provider for that chain, configured by hand.
    let pdir = home.join("provider");
    std::fs::create_dir_all(&pdir).unwrap();
    let account = tpod_devnet::DevAccount::generate("provider");
    gas(account.address);
    std::fs::write(pdir.join("provider.key"), format!("0x{}\n", alloy::hex::encode(account.private_key))).unwrap();
    let root = SimulatedRoot::load_or_generate(&pdir.join("root.key")).unwrap();
    let config = pdir.join("provider.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "data"
listen = "/ip4/127.0.0.1/tcp/0"
[chain]
rpc_url = "{rpc}"
payment = "{payment}"
registry = "{registry}"
key_file = "provider.key"
[profile]
region = "second-1"
[ingress]
http = "127.0.0.1:0"
domain = "pods.localhost"
tcp_bind = "127.0.0.1"
[capacity]
cpu = "2"
memory = "2Gi"
storage = "4Gi"
[terms]
min_funding = "1000000000000000"
min_unlock_delay_secs = 60
[[pricing]]
resource = "cpu"
reservation = "1000000000"
usage = "2000000000"
[[pricing]]
resource = "memory"
reservation = "100000000"
usage = "0"
[runtime]
bridge = "{BRIDGE}"
subnet = "10.216.0.0/16"
log_cap = "8Mi"
[billing]
claim_interval_secs = 60
[attestation]
tee = "simulated"
simulated_root_key = "root.key"
"#,
            rpc = chain.url,
            payment = contracts.payment,
            registry = contracts.registry,
        ),
    )
    .unwrap();
    let log = std::fs::File::create(pdir.join("provider.log")).unwrap();
    let child = Command::new(provider_bin())
        .arg("--config")
        .arg(&config)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut provider = ProviderProcess { child, config };

    // The publisher trusts this provider build under the simulated root, and holds tokens.
    let binary = tpod_attestation::binding::sha256_file(&provider_bin()).unwrap();
    let policy = Policy {
        tee: [TeeKind::Simulated].into(),
        provider_binaries: [Digest(binary)].into(),
        provider_configs: Default::default(),
        snp: Default::default(),
        tdx: Default::default(),
        simulated: Some(SimulatedPolicy { root: root.public_hex() }),
    };
    let policy_path = home.join("policy.toml");
    std::fs::write(&policy_path, policy.to_toml()).unwrap();
    let publisher = ok(home, &["account", "new", "publisher"]);
    let publisher: Address = publisher["address"].as_str().unwrap().parse().unwrap();
    gas(publisher);
    rt.block_on(tpod_devnet::deploy::mint_test_tokens(
        &chain.url,
        minter.signer().unwrap(),
        contracts,
        publisher,
        tpod_devnet::whole(100),
    ))
    .unwrap();

    let work = tempfile::tempdir().unwrap();
    let manifest = hello(work.path(), "hello from the second chain\n");
    let manifest = manifest.to_str().unwrap();
    let net = [
        "--network",
        "second",
        "--account",
        "publisher",
        "--policy",
        policy_path.to_str().unwrap(),
        "--allow-simulated-tee",
    ];
    fn with<'a>(net: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
        [net, args].concat()
    }

    // The provider registers itself; the publisher finds it in the Registry.
    let deadline = Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let listed = ok(home, &with(&net, &["providers", manifest]));
        if listed.as_array().unwrap().iter().any(|e| e["status"] == "ok") {
            break listed;
        }
        assert!(
            Instant::now() < deadline && provider.child.try_wait().unwrap().is_none(),
            "the provider never registered: {listed:#}\n{}",
            std::fs::read_to_string(pdir.join("provider.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(listed[0]["address"].as_str().unwrap().parse::<Address>().unwrap(), account.address);
    assert_eq!(listed[0]["region"], "second-1");

    let deployed = ok(home, &with(&net, &["deploy", manifest, "--amount", "2.5"]));
    assert_eq!(deployed["provider_address"].as_str().unwrap().parse::<Address>().unwrap(), account.address);
    assert_eq!(deployed["amount"], (tpod_devnet::whole(5) / U256::from(2)).to_string(), "{deployed}");
    wait_for_body(deployed["url"].as_str().unwrap(), "hello from the second chain\n");
    let records = home.join(".tpod/networks/second/deployments.json");
    assert!(records.exists(), "the deployment is not recorded under the network");

    std::thread::sleep(Duration::from_secs(2));
    let bill = ok(home, &with(&net, &["bill"]));
    let metered: U256 = bill["metered"].as_str().unwrap().parse().unwrap();
    assert!(metered > U256::ZERO, "{bill:#}");
    let human = tpod(home, &with(&net, &["bill"]));
    assert!(String::from_utf8_lossy(&human.stdout).contains("TPT"), "{}", text(&human));

    let deleted = ok(home, &with(&net, &["delete"]));
    let refunded: U256 = deleted["refunded"].as_str().unwrap().parse().unwrap();
    assert!(refunded > U256::ZERO && refunded < tpod_devnet::whole(5) / U256::from(2), "{deleted:#}");
    let claimed: U256 = deleted["claimed"].as_str().unwrap().parse().unwrap();
    assert_eq!(claimed + refunded, tpod_devnet::whole(5) / U256::from(2), "{deleted:#}");

    // A provider taken down for good (`--purge`) leaves no bridge behind.
    drop(provider);
    assert!(!Path::new("/sys/class/net").join(BRIDGE).exists(), "bridge {BRIDGE} left behind");
}
