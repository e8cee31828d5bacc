//! `tpod dev up | status | down`: the local development network.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use alloy::primitives::U256;
use alloy::primitives::utils::format_ether;
use anyhow::Context;
use clap::Subcommand;
use serde_json::json;
use tpod_devnet::{DevnetFile, UpOptions, UpOutcome};

/// `tpod dev` subcommands.
#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Start anvil on loopback, deploy the contracts, fund dev accounts, write the devnet file.
    /// Does nothing if a devnet is already up.
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
        /// How the local provider is set up.
        #[command(flatten)]
        provider: crate::devprovider::ProviderOptions,
    },
    /// Check the devnet against the live chain: anvil, RPC, contracts, balances.
    Status,
    /// Stop anvil and remove the devnet file.
    Down,
}

/// Runs a `tpod dev` subcommand.
pub async fn run(command: DevCommand, dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    match command {
        DevCommand::Up { port, chain_id, anvil, provider } => {
            let opts = UpOptions { dir: dir.to_owned(), anvil, port, chain_id };
            let outcome = tpod_devnet::up(&opts).await.context("tpod dev up")?;
            let (already, file) = match &outcome {
                UpOutcome::AlreadyUp(f) => (true, f),
                UpOutcome::Started(f) => (false, f),
            };
            if !already {
                // A new chain: pods and deployments of an earlier devnet belong to channels that
                // no longer exist.
                crate::devprovider::stop(dir).await.context("stopping the previous devnet's provider")?;
                crate::devprovider::purge(dir).context("removing the previous devnet's pods")?;
                let _ = std::fs::remove_file(crate::deployments::Deployments::path(dir));
            }
            let started = crate::devprovider::ensure_running(dir, file, &provider)
                .await
                .context("starting the devnet's provider")?;
            let info = crate::devprovider::info(dir)?;
            if json {
                say!(
                    "{}",
                    json!({
                        "already_up": already, "devnet_file": tpod_devnet::file_path(dir), "devnet": summary(file),
                        "provider": info, "provider_started": started,
                    })
                );
            } else {
                if already {
                    say!("devnet already up at {} (chain {}); nothing changed", file.rpc_url, file.chain_id);
                } else {
                    say!("devnet up: anvil at {} (chain {}, pid {})", file.rpc_url, file.chain_id, file.anvil_pid);
                }
                print_file(file, dir);
                let verb = if started { "started" } else { "already running" };
                say!(
                    "provider {verb} (pid {}): {}@{}, ingress http://*.{}:{}",
                    info.pid,
                    info.peer_id,
                    info.multiaddr,
                    info.domain,
                    info.ingress.rsplit(':').next().unwrap_or_default()
                );
                say!("deploy a pod with: tpod deploy examples/hello/tpod.yaml");
            }
            Ok(ExitCode::SUCCESS)
        }
        DevCommand::Status => {
            let status = tpod_devnet::status(dir).await.context("tpod dev status")?;
            let provider = crate::devprovider::running(dir);
            let healthy = status.healthy() && provider.is_some();
            if json {
                say!(
                    "{}",
                    json!({
                        "healthy": healthy,
                        "provider": provider,
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
                match &provider {
                    Some(p) => {
                        say!("provider pid {} running: {}@{}, ingress {}", p.pid, p.peer_id, p.multiaddr, p.ingress)
                    }
                    None => say!("provider NOT running (`tpod dev up` restarts it; its pods are re-adopted)"),
                }
                say!("{}", if healthy { "healthy" } else { "UNHEALTHY: run `tpod dev down` then `tpod dev up`" });
            }
            Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        DevCommand::Down => {
            crate::devprovider::stop(dir).await.context("stopping the devnet's provider")?;
            crate::devprovider::purge(dir).context("removing the devnet's pods")?;
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

/// Where the devnet's provider publishes its peer id and addresses.
pub fn provider_info_path(dir: &Path) -> PathBuf {
    crate::devprovider::data_dir(dir).join("provider.json")
}
