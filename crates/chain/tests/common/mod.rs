//! Shared set-up for the chain integration tests: a throwaway anvil with the contracts.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use alloy::primitives::U256;
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use tpod_chain::Chain;
use tpod_devnet::Throwaway;

/// The anvil to use: `$TPOD_ANVIL` or `PATH` if they have one, else the checkout's tools/bin.
pub fn anvil_bin() -> Option<PathBuf> {
    if tpod_devnet::anvil::locate(None).is_ok() {
        return None;
    }
    Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/bin/anvil"))
}

pub async fn devnet() -> Throwaway {
    tpod_devnet::throwaway(anvil_bin().as_deref()).await.expect("start a throwaway devnet (run tools/bootstrap?)")
}

pub async fn connect(net: &Throwaway, name: &str) -> Chain {
    let signer = net.file.account(name).unwrap().signer().unwrap();
    Chain::connect(&net.file.rpc_url, signer, net.file.contracts).await.unwrap()
}

/// A fresh account with gas money but nothing else.
pub async fn fresh_account(net: &Throwaway) -> (PrivateKeySigner, Chain) {
    let signer = PrivateKeySigner::random();
    tpod_devnet::deploy::set_native_balance(&net.file.rpc_url, signer.address(), tpod_devnet::whole(10)).await.unwrap();
    let chain = Chain::connect(&net.file.rpc_url, signer.clone(), net.file.contracts).await.unwrap();
    (signer, chain)
}

/// Moves anvil's clock forward and mines a block.
pub async fn advance_time(chain: &Chain, seconds: u64) {
    let p = chain.provider();
    p.raw_request::<_, serde_json::Value>("evm_increaseTime".into(), (U256::from(seconds),)).await.unwrap();
    p.raw_request::<_, serde_json::Value>("evm_mine".into(), ()).await.unwrap();
}

pub fn tokens(n: u64) -> U256 {
    tpod_devnet::whole(n)
}
