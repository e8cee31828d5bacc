//! The `market` section: `tpod providers` listing and ranking a large market from the chain.
//!
//! A devnet (anvil and the contracts, no provider: nothing here needs root) gets N providers
//! (10,000 by default), each a real account sending real Registry transactions: it registers
//! its own pricing table, sets a profile URI and subscribes to its table, so the events are
//! exactly what live providers emit. The accounts are anvil-impersonated (no keys to sign
//! with) and funded with `anvil_setBalance`; transactions are sent many at a time with fixed
//! gas into the pool and mined 500 to a block, each phase after the previous one is mined. Then `tpod providers --no-probe --json`
//! lists and ranks the market from the chain: cold (no cache: every event read) and warm (the
//! cache from the cold run: only the last blocks read), each timed as the whole command.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolEvent};
use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt, stream};
use serde_json::{Value, json};
use tpod_chain::contracts::Registry;

/// Requests in flight at once while filling the market.
const CONCURRENCY: usize = 64;
/// Transactions per block while filling the market.
const BLOCK_TXS: usize = 500;
/// Gas each transaction may use (measured well below: a 2-row table is ~250k).
const GAS_TABLE: u64 = 600_000;
const GAS_PROFILE: u64 = 300_000;
const GAS_SUBSCRIBE: u64 = 200_000;

/// Runs the section with `providers` providers; `bin` holds the `tpod` binary.
pub fn run(bin: &Path, anvil: &Path, providers: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let dir = tempfile::tempdir()?;
    let file = runtime.block_on(tpod_devnet::up(&tpod_devnet::UpOptions {
        dir: dir.path().to_owned(),
        anvil: Some(anvil.to_owned()),
        port: 0,
        chain_id: 31337,
        providers: 1,
    }))?;
    let file = match file {
        tpod_devnet::UpOutcome::Started(file) | tpod_devnet::UpOutcome::AlreadyUp(file) => file,
    };
    let result = runtime.block_on(fill(&file, providers)).and_then(|fill_time| {
        println!(
            "market: {providers} providers registered on anvil in {:.1} s (3 transactions each)",
            fill_time.as_secs_f64()
        );
        measure(bin, dir.path(), providers)
    });
    let _ = runtime.block_on(tpod_devnet::down(dir.path()));
    result
}

/// Registers `n` providers, each with its own table, profile and subscription.
async fn fill(file: &tpod_devnet::DevnetFile, n: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let (provider, _) = tpod_chain::client::connect_provider(&file.rpc_url, PrivateKeySigner::random()).await?;
    let registry = file.contracts.registry;
    let accounts: Vec<Address> =
        (0..n).map(|i| Address::from_word(U256::from(0x7e57_0000_0000u64 + i as u64).into())).collect();
    raw(&provider, "anvil_autoImpersonateAccount", json!([true])).await?;
    // Transactions wait in the pool and go into blocks of many, as on a busy chain, instead of
    // one block each.
    raw(&provider, "evm_setAutomine", json!([false])).await?;
    raw(&provider, "evm_setBlockGasLimit", json!(["0x2540be400"])).await?;
    let one_eth = U256::from(10u64).pow(U256::from(18));
    send_all(&provider, accounts.iter().map(|a| ("anvil_setBalance", json!([a, one_eth])))).await?;

    // Phase 1: every provider registers its own table; prices spread so ranking has work to do.
    let tables = accounts.iter().enumerate().map(|(i, from)| {
        let cpu = 1_000 + (i as u64 * 7_919) % 10_000;
        let call = Registry::registerPricingTableCall {
            token: file.contracts.token,
            teeType: if i % 3 == 0 { "sev-snp" } else { "tdx" }.into(),
            cpuModel: String::new(),
            prices: vec![
                Registry::Price { resource: "cpu".into(), reservation: U256::from(cpu), usage: U256::ZERO },
                Registry::Price { resource: "memory".into(), reservation: U256::from(1), usage: U256::ZERO },
            ],
        };
        tx(*from, registry, GAS_TABLE, &call.abi_encode())
    });
    send_and_mine(&provider, tables.collect()).await?;
    // Which id each got: from the events (creator is indexed).
    let logs = provider
        .get_logs(
            &alloy::rpc::types::Filter::new()
                .address(registry)
                .event_signature(Registry::PricingTableRegistered::SIGNATURE_HASH)
                .from_block(0),
        )
        .await?;
    let mut table_of = std::collections::HashMap::new();
    for log in &logs {
        let event = Registry::PricingTableRegistered::decode_log(&log.inner)?;
        table_of.insert(event.creator, event.tableId);
    }
    if table_of.len() != n {
        bail!("{} of {n} tables registered", table_of.len());
    }

    // Phase 2: profiles; phase 3: subscriptions (each needs the profile first).
    let profiles = accounts.iter().enumerate().map(|(i, from)| {
        let uri = format!(
            "tpod-profile:1:{:064x}:12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf:/ip4/127.0.0.1/tcp/{}",
            i + 1,
            10_000 + i % 50_000
        );
        tx(*from, registry, GAS_PROFILE, &Registry::setProfileCall { profileUri: uri }.abi_encode())
    });
    send_and_mine(&provider, profiles.collect()).await?;
    let subscriptions = accounts.iter().map(|from| {
        tx(*from, registry, GAS_SUBSCRIBE, &Registry::subscribeCall { tableId: table_of[from] }.abi_encode())
    });
    send_and_mine(&provider, subscriptions.collect()).await?;
    // Empty blocks on top, so everything is confirmed and a warm run reads only new blocks.
    raw(&provider, "anvil_mine", json!(["0x20"])).await?;
    Ok(started.elapsed())
}

fn tx(from: Address, to: Address, gas: u64, input: &[u8]) -> (&'static str, Value) {
    let input = format!("0x{}", alloy::hex::encode(input));
    ("eth_sendTransaction", json!([{ "from": from, "to": to, "gas": format!("{gas:#x}"), "input": input }]))
}

async fn raw(provider: &DynProvider, method: &'static str, params: Value) -> anyhow::Result<Value> {
    provider.raw_request(method.into(), params).await.with_context(|| format!("{method} failed"))
}

/// Sends every request, `CONCURRENCY` at a time; returns the answers (transaction hashes).
async fn send_all(
    provider: &DynProvider,
    requests: impl Iterator<Item = (&'static str, Value)>,
) -> anyhow::Result<Vec<Value>> {
    stream::iter(requests.map(|(method, params)| raw(provider, method, params)))
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await
}

/// Sends transactions a block's worth at a time, each block mined before the next is sent (a
/// pool of thousands slows anvil down).
async fn send_and_mine(provider: &DynProvider, txs: Vec<(&'static str, Value)>) -> anyhow::Result<()> {
    for block in txs.chunks(BLOCK_TXS) {
        mined(provider, send_all(provider, block.iter().cloned()).await?).await?;
    }
    Ok(())
}

/// Mines blocks until every transaction has a receipt, and checks that none reverted.
async fn mined(provider: &DynProvider, hashes: Vec<Value>) -> anyhow::Result<()> {
    let mut pending = hashes;
    for _ in 0..1000 {
        if pending.is_empty() {
            return Ok(());
        }
        raw(provider, "evm_mine", json!([])).await?;
        let receipts: Vec<(Value, Value)> = stream::iter(pending.into_iter().map(|h| async move {
            let receipt = raw(provider, "eth_getTransactionReceipt", json!([h])).await?;
            anyhow::Ok((h, receipt))
        }))
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
        if let Some((_, failed)) = receipts.iter().find(|(_, r)| !r.is_null() && r["status"] != "0x1") {
            bail!("a transaction reverted: {failed}");
        }
        pending = receipts.into_iter().filter(|(_, r)| r.is_null()).map(|(h, _)| h).collect();
    }
    bail!("{} transactions were not mined after 1000 blocks", pending.len())
}

/// `tpod providers --no-probe --json`, cold then warm, timed.
fn measure(bin: &Path, devnet_dir: &Path, providers: usize) -> anyhow::Result<()> {
    let list = || -> anyhow::Result<(Duration, Vec<Value>)> {
        let started = Instant::now();
        let out = Command::new(bin.join("tpod"))
            .arg("--devnet-dir")
            .arg(devnet_dir)
            .args(["--network", "devnet", "--json", "providers", "--no-probe", "--limit", "10"])
            .env("TPOD_LOG", "tpod_market=debug,tpod=info")
            .output()
            .context("running tpod providers")?;
        let elapsed = started.elapsed();
        if !out.status.success() {
            bail!("tpod providers failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).context("tpod providers printed no JSON array")?;
        Ok((elapsed, rows))
    };
    let (cold, cold_rows) = list()?;
    let (warm, warm_rows) = list()?;
    if cold_rows != warm_rows || cold_rows.len() != 10.min(providers) {
        bail!("cold and warm listings differ or are short: {cold_rows:?} vs {warm_rows:?}");
    }
    let costs: Vec<U256> =
        cold_rows.iter().map(|r| r["cost_per_hour"].as_str().unwrap_or_default().parse()).collect::<Result<_, _>>()?;
    if costs.windows(2).any(|w| w[0] > w[1]) {
        bail!("the listing is not cheapest first: {costs:?}");
    }
    println!("tpod providers (list + rank from the chain, {providers} providers, whole command):");
    println!(
        "  cold (no cache) {:.3} s (target < 10 s)   warm (cache) {:.3} s (target < 1 s)   ratio {:.1}x",
        cold.as_secs_f64(),
        warm.as_secs_f64(),
        cold.as_secs_f64() / warm.as_secs_f64()
    );
    println!("  cheapest: {} at {} base units/h for 1 CPU + 1 GiB", cold_rows[0]["address"], costs[0]);
    Ok(())
}

/// Rounds of each live measurement.
const LIVE_ROUNDS: usize = 5;

/// The probing half of `tpod providers`, against live providers: a devnet with three providers
/// (root: they run containers), then `tpod providers MANIFEST` with probing (each provider's
/// signed profile fetched and verified, a quote asked and compared with its table) and with
/// `--no-probe` (chain only), alternated, `LIVE_ROUNDS` each; the medians side by side and each
/// provider's quote round trip.
pub fn live(bin: &Path, anvil: &Path, manifest: &Path) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let tpod = |args: &[&str]| super::tpod_json(bin, dir.path(), args);
    let anvil = anvil.to_str().context("anvil path")?;
    let up = [
        "dev",
        "up",
        "--providers",
        "3",
        "--port",
        "0",
        "--anvil",
        anvil,
        "--ingress-port",
        "0",
        "--bridge",
        LIVE_BRIDGE,
        "--subnet",
        "10.241.0.0/16",
    ];
    let result = tpod(&up).and_then(|_| {
        let manifest = manifest.to_str().context("manifest path")?;
        let (mut probed, mut listed) = (Vec::new(), Vec::new());
        let mut latencies: Vec<Vec<u64>> = Vec::new();
        for _ in 0..LIVE_ROUNDS {
            let (elapsed, rows) = tpod(&["providers", manifest])?;
            let rows = rows.as_array().cloned().unwrap_or_default();
            if rows.len() != 3 || rows.iter().any(|r| r["status"] != "ok") {
                bail!("the live market is not three answering providers: {rows:?}");
            }
            latencies.push(rows.iter().filter_map(|r| r["latency_ms"].as_u64()).collect());
            probed.push(elapsed);
            listed.push(tpod(&["providers", manifest, "--no-probe"])?.0);
        }
        let (probed, listed) = (median(&mut probed), median(&mut listed));
        println!(
            "market, live: tpod providers for 3 devnet providers, median of {LIVE_ROUNDS}: {:.3} s with profiles and \
             quotes vs {:.3} s from the chain only (probing adds {:.3} s); quote round trips (ms) per round, cheapest \
             first: {latencies:?}",
            probed.as_secs_f64(),
            listed.as_secs_f64(),
            probed.saturating_sub(listed).as_secs_f64(),
        );
        Ok(())
    });
    let _ = tpod(&["dev", "down"]);
    result
}

/// The bridge of the live measurement's providers (`-2`, `-3` appended for the others).
const LIVE_BRIDGE: &str = "tpbm";

fn median(values: &mut [Duration]) -> Duration {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or_default()
}
