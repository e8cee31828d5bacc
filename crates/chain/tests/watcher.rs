//! The event watcher keeps its place across an RPC restart: nothing skipped, nothing twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use alloy::primitives::{B256, U256};
use alloy::rpc::types::Filter;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEvent;
use tpod_chain::Chain;
use tpod_chain::client::connect_provider;
use tpod_chain::contracts::TestToken;
use tpod_chain::watcher::EventWatcher;
use tpod_devnet::anvil::{AnvilOptions, AnvilProcess, locate};

async fn start(port: u16, dir: &std::path::Path, run: u32) -> AnvilProcess {
    AnvilProcess::spawn(&AnvilOptions {
        bin: locate(common::anvil_bin().as_deref()).unwrap(),
        port,
        chain_id: 31337,
        state: Some(dir.join("state.json")),
        log: dir.join(format!("anvil-{run}.log")),
        detach: false,
    })
    .await
    .unwrap()
}

async fn mint(chain: &Chain, n: usize) -> Vec<B256> {
    let mut hashes = Vec::new();
    for _ in 0..n {
        hashes.push(chain.faucet(chain.account(), U256::from(1)).await.unwrap().transaction_hash);
    }
    hashes
}

#[tokio::test]
async fn watcher_resumes_after_rpc_restart_without_gaps_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let node = start(port, dir.path(), 1).await;

    let deployer = PrivateKeySigner::random();
    tpod_devnet::deploy::set_native_balance(&node.url, deployer.address(), common::tokens(10)).await.unwrap();
    let contracts = tpod_devnet::deploy::deploy_contracts(&node.url, deployer.clone()).await.unwrap();
    let chain = Chain::connect(&node.url, deployer.clone(), contracts).await.unwrap();

    let (provider, _) = connect_provider(&node.url, PrivateKeySigner::random()).await.unwrap();
    let filter = Filter::new().address(contracts.token).event_signature(TestToken::Transfer::SIGNATURE_HASH);
    let mut watcher = EventWatcher::new(provider, filter, 0).with_poll_interval(Duration::from_millis(50));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            for log in watcher.next_logs().await.logs {
                if tx.send(log).is_err() {
                    return;
                }
            }
        }
    });

    let mut sent = mint(&chain, 3).await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.unwrap().unwrap());
    }

    // The node goes away (anvil dumps its state on SIGTERM) and comes back on the same URL.
    node.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let node = start(port, dir.path(), 2).await;
    let chain = Chain::connect(&node.url, deployer, contracts).await.unwrap();
    sent.extend(mint(&chain, 2).await);
    while seen.len() < 5 {
        seen.push(tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.unwrap().unwrap());
    }
    // Nothing more arrives: no duplicates.
    assert!(tokio::time::timeout(Duration::from_millis(500), rx.recv()).await.is_err());
    task.abort();

    let got: Vec<B256> = seen.iter().map(|l| l.transaction_hash.unwrap()).collect();
    assert_eq!(got, sent);
    let blocks: Vec<u64> = seen.iter().map(|l| l.block_number.unwrap()).collect();
    assert!(blocks.windows(2).all(|w| w[0] < w[1]), "blocks not increasing: {blocks:?}");
}
