//! `tpod dev up | status | down`, driven through the real binary as a user would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn anvil() -> PathBuf {
    tpod_devnet::anvil::locate(None)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/bin/anvil"))
}

fn tpod(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tpod"))
        .arg("--devnet-dir")
        .arg(dir)
        .args(args)
        .env_remove("TPOD_DEVNET_DIR")
        // The provider `dev up` starts: a free ingress port, a bridge of these tests' own.
        .env("TPOD_DEV_INGRESS_PORT", "0")
        .env("TPOD_DEV_BRIDGE", "tpd0")
        .env("TPOD_DEV_SUBNET", "10.219.0.0/16")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

fn pid_alive(pid: u64) -> bool {
    tpod_devnet::anvil::is_running(pid as u32)
}

#[test]
fn up_status_down_lifecycle_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let anvil = anvil();
    let anvil = anvil.to_str().unwrap();

    let up = tpod(dir.path(), &["--json", "dev", "up", "--port", "0", "--anvil", anvil]);
    assert!(up.status.success(), "{}", text(&up));
    let up = json(&up);
    assert_eq!(up["already_up"], false);
    let pid = up["devnet"]["anvil_pid"].as_u64().unwrap();
    assert!(pid_alive(pid));
    // The devnet's provider runs too.
    assert_eq!(up["provider_started"], true);
    let provider_pid = up["provider"]["pid"].as_u64().unwrap() as u32;
    assert!(tpod::devprovider::is_provider(provider_pid));
    let file = std::fs::read(dir.path().join("devnet.json")).unwrap();

    // A second `up` changes nothing and says so.
    let again = tpod(dir.path(), &["dev", "up", "--port", "0", "--anvil", anvil]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("already up"), "{}", text(&again));
    assert_eq!(std::fs::read(dir.path().join("devnet.json")).unwrap(), file);

    let status = tpod(dir.path(), &["--json", "dev", "status"]);
    assert!(status.status.success(), "{}", text(&status));
    let status = json(&status);
    assert_eq!(status["healthy"], true);
    assert!(status["contracts"].as_array().unwrap().iter().all(|c| c["deployed"] == true));
    let publisher = status["balances"].as_array().unwrap().iter().find(|b| b["name"] == "publisher").unwrap();
    assert_eq!(publisher["tokens"], tpod_devnet::whole(tpod_devnet::DEV_TOKEN_FUNDS).to_string());
    // Keys never appear in command output.
    assert!(!String::from_utf8_lossy(&file).is_empty());
    let keys: serde_json::Value = serde_json::from_slice(&file).unwrap();
    let key = keys["accounts"][1]["private_key"].as_str().unwrap().trim_start_matches("0x").to_owned();
    assert!(!status.to_string().contains(&key));

    let down = tpod(dir.path(), &["dev", "down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(!pid_alive(pid), "anvil {pid} still running after dev down");
    assert!(!tpod::devprovider::is_provider(provider_pid), "provider still running after dev down");
    assert!(!dir.path().join("devnet.json").exists());

    let after = tpod(dir.path(), &["dev", "status"]);
    assert!(!after.status.success());
    assert!(text(&after).contains("tpod dev up"), "{}", text(&after));
}

#[test]
fn stale_devnet_is_reported_unhealthy_and_replaced_by_up() {
    let dir = tempfile::tempdir().unwrap();
    let anvil = anvil();
    let anvil = anvil.to_str().unwrap();
    let up = json(&tpod(dir.path(), &["--json", "dev", "up", "--port", "0", "--anvil", anvil]));
    let pid = up["devnet"]["anvil_pid"].as_u64().unwrap();
    Command::new("kill").arg("-9").arg(pid.to_string()).status().unwrap();
    while pid_alive(pid) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let status = tpod(dir.path(), &["dev", "status"]);
    assert!(!status.status.success());
    assert!(text(&status).contains("NOT running"), "{}", text(&status));

    let again = json(&tpod(dir.path(), &["--json", "dev", "up", "--port", "0", "--anvil", anvil]));
    assert_eq!(again["already_up"], false);
    let new_pid = again["devnet"]["anvil_pid"].as_u64().unwrap();
    assert!(pid_alive(new_pid));
    assert!(tpod(dir.path(), &["dev", "down"]).status.success());
}

#[test]
fn missing_anvil_says_to_run_the_bootstrap_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tpod"))
        .args(["--devnet-dir", dir.path().to_str().unwrap(), "dev", "up", "--port", "0"])
        .env("PATH", "/nonexistent")
        .env_remove("TPOD_ANVIL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("tools/bootstrap"), "{}", text(&out));
    assert!(!dir.path().join("devnet.json").exists());
}

#[test]
fn malformed_devnet_file_is_named_with_line_and_remedy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devnet.json");
    std::fs::write(&path, "{\n  \"version\": 1,\n  \"chain_id\": 31337,\n  \"rpc_url\": 5\n}\n").unwrap();
    for args in [&["dev", "status"][..], &["dev", "down"], &["dev", "up", "--port", "0"]] {
        let out = tpod(dir.path(), args);
        assert!(!out.status.success(), "{args:?}");
        let msg = text(&out);
        assert!(msg.contains(path.to_str().unwrap()) && msg.contains("line 4"), "{args:?}: {msg}");
        assert!(msg.contains("Delete it"), "{args:?}: {msg}");
    }
}

#[test]
fn the_bootstrapped_anvil_is_the_pinned_version() {
    let found = tpod_devnet::anvil::version(&anvil()).unwrap();
    assert_eq!(found, tpod_devnet::anvil::pinned_version());
}

/// The prices of the table each of `accounts` offers in the Registry, where each must have a
/// profile and a subscription (`dev up` returns once they do).
fn registry_listings(file: &tpod_devnet::DevnetFile, accounts: &[alloy::primitives::Address]) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let contracts = tpod_chain::ContractAddresses {
            payment: file.contracts.payment,
            registry: file.contracts.registry,
            token: file.contracts.token,
        };
        let signer = alloy::signers::local::PrivateKeySigner::random();
        let chain = tpod_chain::Chain::connect(&file.rpc_url, signer, contracts).await.unwrap();
        let mut tables = Vec::new();
        for &account in accounts {
            assert!(chain.profile_of(account).await.unwrap().is_some(), "{account} has no profile");
            let subscriptions = chain.subscriptions_of(account).await.unwrap();
            let id = subscriptions.first().unwrap_or_else(|| panic!("{account} offers no pricing table"));
            tables.push(format!("{:?}", chain.pricing_table(*id).await.unwrap().prices));
        }
        tables
    })
}

fn bridge_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

#[test]
fn three_providers_each_with_their_own_network_prices_and_listing() {
    let net = common::Devnet::up_providers(18, 3, None);
    let status = net.ok(&["dev", "status"]);
    assert_eq!(status["healthy"], true, "{status}");
    let providers = status["providers"].as_array().unwrap().clone();
    assert_eq!(providers.len(), 3, "{status}");
    for key in ["peer_id", "ingress", "bridge", "subnet", "region", "provider_address", "pid", "dir"] {
        let distinct: std::collections::HashSet<String> = providers.iter().map(|p| p[key].to_string()).collect();
        assert_eq!(distinct.len(), 3, "{key} is not distinct: {status}");
    }
    let field = |key: &str| providers.iter().map(|p| p[key].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(field("bridge"), ["tpe18", "tpe18-2", "tpe18-3"]);
    assert_eq!(field("subnet"), ["10.218.0.0/19", "10.218.32.0/19", "10.218.64.0/19"]);
    assert_eq!(field("region"), ["local-a", "local-b", "local-c"]);
    // The first provider is where one-provider tools look for it.
    assert_eq!(status["provider"]["peer_id"], providers[0]["peer_id"]);
    assert_eq!(net.provider_info(1)["peer_id"], providers[0]["peer_id"]);

    // Each runs with its own funded account, listed in the Registry with its own prices.
    let file = tpod_devnet::DevnetFile::load(&net.dir.path().join("devnet.json")).unwrap().unwrap();
    let accounts: Vec<_> =
        (1..=3).map(|i| file.account(&tpod_devnet::provider_account_name(i)).unwrap().address).collect();
    for (account, p) in accounts.iter().zip(&providers) {
        assert_eq!(p["provider_address"].as_str().unwrap().parse::<alloy::primitives::Address>().unwrap(), *account);
    }
    let tables = registry_listings(&file, &accounts);
    assert_eq!(tables.iter().collect::<std::collections::HashSet<_>>().len(), 3, "{tables:?}");

    // The count is fixed while the devnet runs.
    let err = net.fails(&["dev", "up", "--providers", "2"]);
    assert!(err.contains("runs 3 providers"), "{err}");

    // A pod on the third provider.
    let work = tempfile::tempdir().unwrap();
    let manifest = common::hello(work.path(), "hello from the third\n");
    let third =
        format!("{}@{}", providers[2]["peer_id"].as_str().unwrap(), providers[2]["multiaddr"].as_str().unwrap());
    let deployed = net.ok(&["--provider", &third, "deploy", manifest.to_str().unwrap()]);
    let url = deployed["url"].as_str().unwrap().to_owned();
    let pod_id = deployed["pod_id"].as_str().unwrap().trim_start_matches("0x").to_owned();
    assert!(url.ends_with(providers[2]["ingress"].as_str().unwrap().rsplit(':').next().unwrap()), "{url}");
    common::wait_for_body(&url, "hello from the third\n");
    assert!(bridge_exists("tpe18-3"));

    // It dies; `dev up` restarts it alone, on another libp2p port, and commands still find it.
    let pid = providers[2]["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    while tpod::devprovider::is_provider(pid as u32) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let up = net.dev_up();
    assert!(up.status.success(), "{}", common::text(&up));
    let up: serde_json::Value = serde_json::from_slice(&up.stdout).unwrap();
    let started: Vec<bool> = up["providers"].as_array().unwrap().iter().map(|p| p["started"] == true).collect();
    assert_eq!(started, [false, false, true], "{up}");
    assert_eq!(up["providers"][0]["pid"], providers[0]["pid"]);
    let status = net.ok(&["status"]);
    assert_eq!(status["state"], "running", "{status}");

    // Down: no provider, bridge or namespace is left.
    net.ok(&["dev", "down"]);
    let pids: Vec<u32> =
        up["providers"].as_array().unwrap().iter().map(|p| p["pid"].as_u64().unwrap() as u32).collect();
    for pid in pids {
        assert!(!tpod::devprovider::is_provider(pid), "provider {pid} still runs");
    }
    for bridge in ["tpe18", "tpe18-2", "tpe18-3"] {
        assert!(!bridge_exists(bridge), "bridge {bridge} left behind");
    }
    assert!(!Path::new("/var/run/netns").join(format!("tpod-{}", &pod_id[..12])).exists(), "netns left behind");
}

/// Deletes a test's dummy interface however the test ends.
struct Link(&'static str);

impl Drop for Link {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", self.0]).status();
    }
}

#[test]
fn a_subnet_another_interface_routes_is_refused() {
    let link = Link("tpdx");
    let ip = |args: &[&str]| assert!(Command::new("ip").args(args).status().unwrap().success(), "ip {args:?}");
    ip(&["link", "add", link.0, "type", "bridge"]);
    ip(&["addr", "add", "10.217.0.1/16", "dev", link.0]);
    ip(&["link", "set", link.0, "up"]);

    let dir = tempfile::tempdir().unwrap();
    let anvil = anvil();
    let args = ["dev", "up", "--port", "0", "--anvil", anvil.to_str().unwrap(), "--subnet", "10.217.0.0/16"];
    let out = tpod(dir.path(), &args);
    assert!(!out.status.success());
    assert!(text(&out).contains("overlaps the route 10.217.0.0/16 on tpdx"), "{}", text(&out));
    assert!(tpod(dir.path(), &["dev", "down"]).status.success());
}
