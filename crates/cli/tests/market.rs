//! The market end to end: a devnet with three providers at different prices and regions, each
//! registered in the Registry by itself; `tpod providers` ranks them from the chain, `tpod
//! deploy` picks the cheapest that passes every check, and providers that are offline, quote
//! other prices than their table, or publish a profile that does not check out are skipped with
//! the reason. Real anvil, real providers, real containers, the real `tpod` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use common::*;
use tpod_chain::client::{PricingTable, ResourcePrice};
use tpod_chain::{Chain, ContractAddresses};
use tpod_devnet::DevnetFile;

/// `tpod providers` until every listed provider has registered and answered.
fn wait_for_market(net: &Devnet, manifest: &str, providers: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = net.ok(&["providers", manifest]);
        let entries = listed.as_array().unwrap().clone();
        if entries.len() == providers && entries.iter().all(|e| e["status"] == "ok") {
            return entries;
        }
        assert!(Instant::now() < deadline, "the market did not fill up: {listed:#}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn cost(entry: &serde_json::Value) -> U256 {
    entry["cost_per_hour"].as_str().unwrap().parse().unwrap()
}

/// A chain client signing as the devnet account `name`.
fn chain_as(net: &Devnet, name: &str) -> (tokio::runtime::Runtime, Chain) {
    let file = DevnetFile::load(&tpod_devnet::file_path(net.dir.path())).unwrap().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let contracts = ContractAddresses {
        payment: file.contracts.payment,
        registry: file.contracts.registry,
        token: file.contracts.token,
    };
    let chain = rt.block_on(Chain::connect(&file.rpc_url, file.account(name).unwrap().signer().unwrap(), contracts));
    (rt, chain.unwrap())
}

#[test]
fn providers_are_ranked_picked_and_skipped_with_reasons() {
    let net = Devnet::up_providers(15, 3, None);
    let work = tempfile::tempdir().unwrap();
    let manifest = hello(work.path(), "hello from the market\n");
    let manifest = manifest.to_str().unwrap();
    let peers: Vec<String> = (1..=3).map(|i| net.provider_info(i)["peer_id"].as_str().unwrap().to_owned()).collect();

    // Listed from the Registry, cheapest first: the devnet prices its providers ×1, ×1.5, ×2.
    let entries = wait_for_market(&net, manifest, 3);
    let listed: Vec<&str> = entries.iter().map(|e| e["peer_id"].as_str().unwrap()).collect();
    assert_eq!(listed, peers.iter().map(String::as_str).collect::<Vec<_>>(), "{entries:#?}");
    assert!(cost(&entries[0]) < cost(&entries[1]) && cost(&entries[1]) < cost(&entries[2]), "{entries:#?}");
    assert_eq!(cost(&entries[1]) * U256::from(2), cost(&entries[0]) * U256::from(3), "×1.5: {entries:#?}");
    for e in &entries {
        assert!(e["address"].as_str().unwrap().starts_with("0x") && e["latency_ms"].is_u64(), "{e}");
    }

    // Filters.
    let region = net.ok(&["providers", manifest, "--region", "local-b"]);
    assert_eq!(region.as_array().unwrap().len(), 1, "{region:#}");
    assert_eq!(region[0]["peer_id"], peers[1].as_str());
    let max = format!("{}base", cost(&entries[1]));
    let cheap = net.ok(&["providers", manifest, "--max-price", &max]);
    let cheap: Vec<&str> = cheap.as_array().unwrap().iter().map(|e| e["peer_id"].as_str().unwrap()).collect();
    assert_eq!(cheap, [peers[0].as_str(), peers[1].as_str()]);
    assert_eq!(net.ok(&["providers", manifest, "--tee", "simulated"]).as_array().unwrap().len(), 3);
    assert_eq!(net.ok(&["providers", manifest, "--tee", "sev-snp"]).as_array().unwrap().len(), 0);

    // Auto-pick lands on the cheapest.
    let deployed = net.ok(&["deploy", manifest]);
    assert_eq!(deployed["provider"], peers[0].as_str(), "{deployed}");
    wait_for_body(deployed["url"].as_str().unwrap(), "hello from the market\n");
    net.ok(&["delete"]);

    // The cheapest goes offline: the next deploy lands on the second and says why.
    let pid = net.provider_info(1)["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    while tpod::devprovider::is_provider(pid as u32) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = net.tpod(&["--json", "deploy", manifest]);
    assert!(out.status.success(), "{}", text(&out));
    let deployed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(deployed["provider"], peers[1].as_str(), "{deployed}");
    assert_eq!(deployed["skipped"][0]["peer_id"], peers[0].as_str(), "{deployed}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("skipped provider {}", peers[0])), "{stderr}");
    net.ok(&["delete"]);
    net.restart_provider();
    wait_for_market(&net, manifest, 3);

    // Provider 1 subscribes to a cheaper table than the prices it quotes: skipped, not picked.
    let (rt, chain) = chain_as(&net, "provider");
    let own = rt.block_on(chain.subscriptions_of(chain.account())).unwrap();
    let table = rt.block_on(chain.pricing_table(own[0])).unwrap();
    let halved = PricingTable {
        prices: table
            .prices
            .iter()
            .map(|p| ResourcePrice {
                resource: p.resource.clone(),
                reservation: p.reservation / U256::from(2),
                usage: p.usage,
            })
            .collect(),
        ..table
    };
    let cheaper = rt.block_on(chain.register_pricing_table(&halved)).unwrap();
    rt.block_on(chain.subscribe(cheaper)).unwrap();
    rt.block_on(chain.unsubscribe(own[0])).unwrap();
    // Provider 2 publishes a profile URI whose digest does not match what it serves.
    let (rt2, chain2) = chain_as(&net, "provider-2");
    let uri = rt2.block_on(chain2.profile_of(chain2.account())).unwrap().unwrap();
    let digit = uri.split(':').nth(2).unwrap().chars().next().unwrap();
    let flipped = uri.replacen(&format!(":{digit}"), &format!(":{}", if digit == '0' { '1' } else { '0' }), 1);
    rt2.block_on(chain2.set_profile(&flipped)).unwrap();
    // The deployer claims provider 3's profile as its own, on provider 3's table.
    let (rt3, chain3) = chain_as(&net, "provider-3");
    let uri3 = rt3.block_on(chain3.profile_of(chain3.account())).unwrap().unwrap();
    let table3 = rt3.block_on(chain3.subscriptions_of(chain3.account())).unwrap();
    let (rt4, impostor) = chain_as(&net, "deployer");
    rt4.block_on(impostor.set_profile(&uri3)).unwrap();
    rt4.block_on(impostor.subscribe(table3[0])).unwrap();

    let listed = net.ok(&["providers", manifest]);
    let entries = listed.as_array().unwrap();
    let reason = |who: Address| {
        let e = entries.iter().find(|e| e["address"].as_str().unwrap().parse::<Address>().unwrap() == who);
        let e = e.unwrap_or_else(|| panic!("{who} not listed: {listed:#}"));
        assert_eq!(e["status"], "skipped", "{e}");
        e["reason"].as_str().unwrap().to_owned()
    };
    let mismatch = reason(chain.account());
    assert!(mismatch.contains("differ"), "{mismatch}");
    let hash = reason(chain2.account());
    assert!(hash.contains("sha256"), "{hash}");
    let impostor_reason = reason(impostor.account());
    assert!(impostor_reason.contains(&format!("{}", chain3.account())), "{impostor_reason}");
    let honest =
        entries.iter().find(|e| e["address"].as_str().unwrap().parse::<Address>().unwrap() == chain3.account());
    assert_eq!(honest.unwrap()["status"], "ok", "{listed:#}");

    // Auto-pick passes over all three to the only honest provider left.
    let deployed = net.ok(&["deploy", manifest]);
    assert_eq!(deployed["provider"], peers[2].as_str(), "{deployed}");
    assert_eq!(deployed["provider_address"].as_str().unwrap().parse::<Address>().unwrap(), chain3.account());
    net.ok(&["delete"]);
}
