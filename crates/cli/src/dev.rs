//! `tpod dev up | status | down`: the local development network.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use alloy::primitives::U256;
use alloy::primitives::utils::format_ether;
use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::json;
use tpod_devnet::{DevnetFile, UpOptions, UpOutcome};

/// `tpod dev` subcommands.
#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Start anvil on loopback, deploy the contracts, fund dev accounts, write the devnet file,
    /// start the providers. On a running devnet, only restarts the providers that died.
    Up {
        /// RPC port on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 8545)]
        port: u16,
        /// Chain id.
        #[arg(long, default_value_t = 31337)]
        chain_id: u64,
        /// The anvil binary (default: $TPOD_ANVIL, else `anvil` on PATH).
        #[arg(long, value_name = "PATH")]
        anvil: Option<PathBuf>,
        /// How the local providers are set up.
        #[command(flatten)]
        provider: crate::devprovider::ProviderOptions,
    },
    /// Check the devnet against the live chain: anvil, RPC, contracts, balances, each provider.
    Status,
    /// Stop the providers, remove their pods and bridges, stop anvil, remove the devnet file.
    Down,
}

/// Runs a `tpod dev` subcommand.
pub async fn run(command: DevCommand, dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    match command {
        DevCommand::Up { port, chain_id, anvil, provider } => up(dir, port, chain_id, anvil, &provider, json).await,
        DevCommand::Status => status(dir, json).await,
        DevCommand::Down => {
            crate::devprovider::stop_all(dir).await.context("stopping the devnet's providers")?;
            crate::devprovider::purge_all(dir, None, None).context("removing the devnet's pods")?;
            let _ = std::fs::remove_file(crate::deployments::Deployments::path(dir));
            let was_running = tpod_devnet::down(dir).await.context("tpod dev down")?;
            if json {
                say!("{}", json!({ "stopped": was_running }));
            } else if was_running {
                say!("devnet stopped");
            } else {
                say!("devnet was not running; removed its file");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// How many providers the devnet in `file` runs: one per provider account.
fn provider_count(file: &DevnetFile) -> u8 {
    u8::try_from(file.provider_accounts().len()).unwrap_or(u8::MAX).max(1)
}

async fn up(
    dir: &Path,
    port: u16,
    chain_id: u64,
    anvil: Option<PathBuf>,
    provider: &crate::devprovider::ProviderOptions,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let wanted = provider.providers.unwrap_or(1);
    // Checked before anvil starts, so bad options leave nothing behind.
    crate::devprovider::plan(provider, wanted)?;
    let opts = UpOptions { dir: dir.to_owned(), anvil, port, chain_id, providers: wanted };
    let outcome = tpod_devnet::up(&opts).await.context("tpod dev up")?;
    let (already, file) = match &outcome {
        UpOutcome::AlreadyUp(f) => (true, f),
        UpOutcome::Started(f) => (false, f),
    };
    let count = provider_count(file);
    if already {
        if let Some(asked) = provider.providers
            && asked != count
        {
            bail!(
                "the devnet runs {count} provider{}; run `tpod dev down` first to start one with {asked}",
                if count == 1 { "" } else { "s" }
            );
        }
    } else {
        // A new chain: pods and deployments of an earlier devnet belong to channels that no
        // longer exist, and providers it had beyond this one's count are gone for good.
        crate::devprovider::stop_all(dir).await.context("stopping the previous devnet's providers")?;
        crate::devprovider::purge_all(dir, provider.provider_bin.as_deref(), Some(count))
            .context("removing the previous devnet's pods")?;
        let _ = std::fs::remove_file(crate::deployments::Deployments::path(dir));
    }
    let members =
        crate::devprovider::ensure_all(dir, file, provider, count).await.context("starting the devnet's providers")?;
    let first = crate::devprovider::info(dir)?;
    if json {
        let providers: Vec<serde_json::Value> = members
            .iter()
            .map(|(m, started)| {
                let mut v = json!(m);
                v["started"] = json!(started);
                v
            })
            .collect();
        say!(
            "{}",
            json!({
                "already_up": already, "devnet_file": tpod_devnet::file_path(dir), "devnet": summary(file),
                "provider": first, "provider_started": members.first().is_some_and(|(_, s)| *s),
                "providers": providers,
            })
        );
    } else {
        if already {
            say!("devnet already up at {} (chain {}); nothing changed", file.rpc_url, file.chain_id);
        } else {
            say!("devnet up: anvil at {} (chain {}, pid {})", file.rpc_url, file.chain_id, file.anvil_pid);
        }
        print_file(file, dir);
        for (m, started) in &members {
            let verb = if *started { "started" } else { "already running" };
            say!("{}", describe(m, verb));
        }
        if count > 1 {
            say!("list them with: tpod providers examples/hello/tpod.yaml");
        }
        say!("deploy a pod with: tpod deploy examples/hello/tpod.yaml");
    }
    Ok(ExitCode::SUCCESS)
}

/// One line about a provider: its state, where it is, what it charges.
fn describe(m: &crate::devprovider::Member, state: &str) -> String {
    let place = format!(
        "region {}, bridge {} {}",
        m.region.as_deref().unwrap_or("?"),
        m.bridge.as_deref().unwrap_or("?"),
        m.subnet.as_deref().unwrap_or("?")
    );
    match &m.info {
        Some(info) => format!(
            "provider {} {state} (pid {}, {place}): {}@{}, ingress http://*.{}:{}",
            m.index,
            info.pid,
            info.peer_id,
            info.multiaddr,
            info.domain,
            info.ingress.rsplit(':').next().unwrap_or_default()
        ),
        None => format!("provider {} {state} ({place})", m.index),
    }
}

async fn status(dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let status = tpod_devnet::status(dir).await.context("tpod dev status")?;
    let members = crate::devprovider::members(dir, provider_count(&status.file));
    let provider = crate::devprovider::running(dir);
    let healthy = status.healthy() && members.iter().all(|m| m.running);
    if json {
        say!(
            "{}",
            json!({
                "healthy": healthy,
                "provider": provider,
                "providers": members,
                "anvil_running": status.anvil_running,
                "block": status.block,
                "rpc_error": status.rpc_error,
                "contracts": status.contracts.iter().map(|(n, a, ok)| json!({"name": n, "address": a, "deployed": ok})).collect::<Vec<_>>(),
                "balances": status.balances.iter().map(|(n, a, native, tokens)| json!({"name": n, "address": a, "native": native.to_string(), "tokens": tokens.to_string()})).collect::<Vec<_>>(),
                "devnet": summary(&status.file),
            })
        );
    } else {
        let f = &status.file;
        let anvil = if status.anvil_running { "running" } else { "NOT running" };
        say!("anvil pid {} {anvil}; RPC {} chain {}", f.anvil_pid, f.rpc_url, f.chain_id);
        match (&status.block, &status.rpc_error) {
            (Some(block), _) => say!("latest block {block}"),
            (None, Some(e)) => say!("RPC does not answer: {e}"),
            (None, None) => {}
        }
        for (name, address, ok) in &status.contracts {
            say!("  {name:<10} {address}  {}", if *ok { "deployed" } else { "NO CODE" });
        }
        for (name, address, native, tokens) in &status.balances {
            say!("  {name:<10} {address}  {} ETH  {} TPT", ether(*native), ether(*tokens));
        }
        for m in &members {
            if m.running {
                say!("{}", describe(m, "running"));
            } else {
                say!("provider {} NOT running (`tpod dev up` restarts it; its pods are re-adopted)", m.index);
            }
        }
        say!("{}", if healthy { "healthy" } else { "UNHEALTHY: run `tpod dev down` then `tpod dev up`" });
    }
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The devnet file without private keys, for printing.
fn summary(f: &DevnetFile) -> serde_json::Value {
    json!({
        "chain_id": f.chain_id,
        "rpc_url": f.rpc_url,
        "anvil_pid": f.anvil_pid,
        "contracts": f.contracts,
        "accounts": f.accounts.iter().map(|a| json!({"name": a.name, "address": a.address})).collect::<Vec<_>>(),
    })
}

fn print_file(f: &DevnetFile, dir: &Path) {
    say!("  Payment    {}", f.contracts.payment);
    say!("  Registry   {}", f.contracts.registry);
    say!("  TestToken  {}", f.contracts.token);
    for a in &f.accounts {
        say!("  {:<10} {}", a.name, a.address);
    }
    say!("devnet file (with the dev keys): {}", tpod_devnet::file_path(dir).display());
}

fn ether(v: U256) -> String {
    let s = format_ether(v);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Where the devnet's (first) provider publishes its peer id and addresses.
pub fn provider_info_path(dir: &Path) -> PathBuf {
    crate::devprovider::data_dir(dir).join("provider.json")
}
