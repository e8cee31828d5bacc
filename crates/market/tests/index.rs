//! The market index against a real anvil: events sent through `tpod_chain::Chain`, the market
//! rebuilt cold and warm from the Registry's logs, and reorganisations of the unconfirmed tail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use tpod_chain::Chain;
use tpod_chain::client::{PricingTable, ResourcePrice};
use tpod_devnet::Throwaway;
use tpod_market::index::{CacheUse, Scanner, cache_path};

fn anvil_bin() -> Option<PathBuf> {
    if tpod_devnet::anvil::locate(None).is_ok() {
        return None;
    }
    Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/bin/anvil"))
}

async fn account(net: &Throwaway) -> Chain {
    let signer = PrivateKeySigner::random();
    tpod_devnet::deploy::set_native_balance(&net.file.rpc_url, signer.address(), tpod_devnet::whole(10)).await.unwrap();
    Chain::connect(&net.file.rpc_url, signer, net.file.contracts).await.unwrap()
}

fn table(token: Address, tee: &str, cpu: u64) -> PricingTable {
    PricingTable {
        token,
        tee_type: tee.into(),
        cpu_model: String::new(),
        prices: vec![
            ResourcePrice { resource: "cpu".into(), reservation: U256::from(cpu), usage: U256::ZERO },
            ResourcePrice { resource: "memory".into(), reservation: U256::from(1), usage: U256::ZERO },
        ],
    }
}

async fn mine(chain: &Chain, blocks: u64) {
    chain.provider().raw_request::<_, serde_json::Value>("anvil_mine".into(), (U256::from(blocks),)).await.unwrap();
}

async fn anvil(chain: &Chain, method: &'static str, arg: serde_json::Value) -> serde_json::Value {
    let params = if arg.is_null() { serde_json::json!([]) } else { serde_json::json!([arg]) };
    chain.provider().raw_request(method.into(), params).await.unwrap()
}

fn ids(ids: &[U256]) -> BTreeSet<u64> {
    ids.iter().map(|id| id.to::<u64>()).collect()
}

#[tokio::test]
async fn cold_and_warm_rebuilds_agree_and_read_only_new_blocks() {
    let net = tpod_devnet::throwaway(anvil_bin().as_deref()).await.expect("anvil (run tools/bootstrap?)");
    let (a, b, c) = (account(&net).await, account(&net).await, account(&net).await);
    let token = net.file.contracts.token;
    let t1 = a.register_pricing_table(&table(token, "simulated", 10)).await.unwrap();
    let t2 = b.register_pricing_table(&table(token, "sev-snp", 20)).await.unwrap();
    a.set_profile("tpod-profile:a").await.unwrap();
    a.subscribe(t1).await.unwrap();
    a.subscribe(t2).await.unwrap();
    b.set_profile("tpod-profile:b").await.unwrap();
    b.subscribe(t1).await.unwrap();
    mine(&a, 20).await;

    let registry = net.file.contracts.registry;
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_path(dir.path(), 31337, registry);
    let scanner = Scanner::new(a.provider().clone(), 31337, registry).cache_file(cache.clone());
    let (first, report) = scanner.sync().await.unwrap();
    assert!(matches!(report.cache, CacheUse::Cold(_)), "{report:?}");
    assert_eq!(report.from_block, 0);
    assert_eq!(report.events, 2 + 2 + 3);
    assert_eq!(first.tables.len(), 2);
    assert_eq!(first.tables[&t2.to::<u64>()], table(token, "sev-snp", 20));
    assert_eq!(first.providers[&a.account()].profile_uri, "tpod-profile:a");
    assert_eq!(first.providers[&a.account()].tables, ids(&[t1, t2]));
    assert_eq!(first.providers[&b.account()].tables, ids(&[t1]));
    assert_eq!(std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777, 0o600);
    let head = report.to_block;

    // More events: an unsubscribe, a removal, a newcomer, a new profile.
    a.unsubscribe(t2).await.unwrap();
    b.remove_provider().await.unwrap();
    c.set_profile("tpod-profile:c").await.unwrap();
    c.subscribe(t2).await.unwrap();
    a.set_profile("tpod-profile:a2").await.unwrap();
    mine(&a, 3).await;

    let (warm, report) = scanner.sync().await.unwrap();
    // Only what follows the cached (confirmed) block was read: the 12 blocks below the old head
    // again, and the new ones.
    assert_eq!(report.cache, CacheUse::Warm { confirmed_block: head - 12 }, "{report:?}");
    assert_eq!(report.from_block, head - 11);
    assert_eq!(report.events, 6);
    let (cold, cold_report) = Scanner::new(a.provider().clone(), 31337, registry).sync().await.unwrap();
    assert_eq!(cold_report.cache, CacheUse::Off);
    assert_eq!(warm, cold);
    assert_eq!(warm.providers[&a.account()].tables, ids(&[t1]));
    assert_eq!(warm.providers[&a.account()].profile_uri, "tpod-profile:a2");
    assert!(!warm.providers.contains_key(&b.account()));
    assert_eq!(warm.providers[&c.account()].tables, ids(&[t2]));
    // What the contract says agrees.
    for (who, entry) in &warm.providers {
        assert_eq!(ids(&a.subscriptions_of(*who).await.unwrap()), entry.tables);
    }

    // A cache of another chain or Registry is not used.
    let other = Scanner::new(a.provider().clone(), 31337, Address::repeat_byte(1)).cache_file(cache.clone());
    let (empty, report) = other.sync().await.unwrap();
    assert!(matches!(&report.cache, CacheUse::Cold(why) if why.contains("not chain 31337")), "{report:?}");
    assert!(empty.providers.is_empty());
}

#[tokio::test]
async fn a_reorganised_tail_leaves_nothing_behind_and_a_reset_chain_is_rebuilt() {
    let net = tpod_devnet::throwaway(anvil_bin().as_deref()).await.expect("anvil (run tools/bootstrap?)");
    let a = account(&net).await;
    let t1 = a.register_pricing_table(&table(net.file.contracts.token, "simulated", 10)).await.unwrap();
    a.set_profile("tpod-profile:a").await.unwrap();
    mine(&a, 20).await;
    let registry = net.file.contracts.registry;
    let dir = tempfile::tempdir().unwrap();
    let scanner =
        Scanner::new(a.provider().clone(), 31337, registry).cache_file(cache_path(dir.path(), 31337, registry));
    scanner.sync().await.unwrap();

    // A subscription seen while unconfirmed, then orphaned by a reorganisation of 2 blocks.
    let snapshot = anvil(&a, "evm_snapshot", serde_json::Value::Null).await;
    a.subscribe(t1).await.unwrap();
    mine(&a, 1).await;
    let (seen, _) = scanner.sync().await.unwrap();
    assert_eq!(seen.providers[&a.account()].tables, ids(&[t1]));
    assert_eq!(anvil(&a, "evm_revert", snapshot).await, true);
    mine(&a, 3).await;
    let (after, report) = scanner.sync().await.unwrap();
    assert!(matches!(report.cache, CacheUse::Warm { .. }), "{report:?}");
    assert!(after.providers[&a.account()].tables.is_empty(), "the orphaned subscription stayed: {after:?}");

    // Deeper than the confirmations (here: the whole chain since the first sync): the cached
    // block is gone or different, so the market is rebuilt.
    let deep = anvil(&a, "evm_snapshot", serde_json::Value::Null).await;
    mine(&a, 30).await;
    scanner.sync().await.unwrap();
    assert_eq!(anvil(&a, "evm_revert", deep).await, true);
    a.remove_provider().await.unwrap();
    mine(&a, 40).await;
    let (rebuilt, report) = scanner.sync().await.unwrap();
    assert!(matches!(&report.cache, CacheUse::Cold(why) if why.contains("not the one")), "{report:?}");
    assert!(rebuilt.providers.is_empty());
}
