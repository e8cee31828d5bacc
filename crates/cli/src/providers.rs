//! `tpod providers [MANIFEST]`: the market on the selected network, cheapest first.
//!
//! The Registry's events are read into the market index (cached in the network's directory, so
//! a second run reads only new blocks), every (provider, table) in the network's token is priced
//! for the manifest's reservation — or 1 CPU and 1 GiB without a manifest, so prices compare at
//! a glance — filtered by `--tee` and `--max-price`, and the cheapest `--limit` are probed: each
//! one's signed profile is fetched and verified, `--region` is applied to it, and a quote must
//! match the provider's Registry table. `--verify` adds the attestation checks of `tpod verify`
//! for those that passed. `--no-probe` stops after ranking (no network traffic to providers).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use alloy::primitives::U256;
use alloy::signers::local::PrivateKeySigner;
use anyhow::Context as _;
use clap::Args;
use serde_json::json;
use tpod_market::index::{CacheUse, Scanner, cache_path};
use tpod_market::{Filters, Network, ProbeOptions, Reservation, Status};
use tpod_net::Client;

use crate::pods::{ProviderTarget, Target};
use crate::units::{Amount, Token};

/// Options of `tpod providers`.
#[derive(Debug, Clone, Args)]
pub struct ProvidersArgs {
    /// Price the reservation of this pod manifest (default: 1 CPU and 1 GiB of memory).
    pub manifest: Option<PathBuf>,
    /// Only pricing tables of this TEE type, e.g. sev-snp, tdx, simulated.
    #[arg(long, value_name = "TEE")]
    pub tee: Option<String>,
    /// Only providers whose signed profile names this region.
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// Only offers costing at most this per hour for the reservation, in token units (e.g. 2.5,
    /// 2.5TPT) or base units (1000base).
    #[arg(long, value_name = "AMOUNT")]
    pub max_price: Option<Amount>,
    /// How many of the cheapest offers to probe and show.
    #[arg(long, default_value_t = 8, value_name = "K")]
    pub limit: usize,
    /// Also check each answering provider's attestation (as `tpod verify` does).
    #[arg(long)]
    pub verify: bool,
    /// Seconds each provider gets to send its profile and a quote.
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    pub timeout: u64,
    /// List and rank from the chain only; ask no provider anything.
    #[arg(long, conflicts_with_all = ["verify", "region"])]
    pub no_probe: bool,
}

/// One line of the output.
struct Row {
    peer_id: String,
    address: String,
    cost_per_hour: U256,
    region: String,
    tee: String,
    table_id: u64,
    latency_ms: Option<u64>,
    status: &'static str,
    reason: String,
    multiaddr: String,
}

/// `tpod providers`.
pub async fn providers(
    args: &ProvidersArgs,
    target: &Target,
    devnet_dir: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let reservation = match &args.manifest {
        Some(path) => {
            let manifest = tpod_manifest::load(path).map_err(|errors| anyhow::anyhow!("{errors}"))?;
            Reservation::of_manifest(&manifest)
        }
        None => Reservation::ONE_CPU_ONE_GIB,
    };
    let network = crate::network::resolve(&target.network, devnet_dir)?;
    // Reading only: any key will do.
    let chain = crate::network::connect(&network, PrivateKeySigner::random()).await?;
    let contracts = *chain.contracts();
    let token = if json && args.max_price.is_none() { None } else { Some(Token::read(&chain).await?) };
    let max_price = match (&args.max_price, &token) {
        (Some(amount), Some(token)) => Some(token.amount(amount)?),
        _ => None,
    };

    let (state, report) = read_market(&chain, &network).await?;
    let filters = Filters { tee: args.tee.clone(), max_price };
    let found = tpod_market::candidates(&state, contracts.token, &reservation, &filters);
    let listed = started.elapsed();
    tracing::info!(?report, candidates = found.len(), elapsed = ?listed, "market listed and ranked");

    let mut rows = Vec::new();
    if args.no_probe {
        for c in found.iter().take(args.limit) {
            let peer_id = c.profile_uri.parse::<tpod_market::ProfileUri>().map(|u| u.peer.to_string());
            rows.push(Row {
                peer_id: peer_id.unwrap_or_default(),
                address: c.provider.to_string(),
                cost_per_hour: c.cost_per_hour,
                region: String::new(),
                tee: c.table.tee_type.clone(),
                table_id: c.table_id,
                latency_ms: None,
                status: "listed",
                reason: String::new(),
                multiaddr: String::new(),
            });
        }
    } else {
        let client = Client::connect(tpod_net::generate_keypair()).context("cannot start the libp2p client")?;
        let net = Network { chain_id: chain.chain_id(), registry: contracts.registry, payment: contracts.payment };
        let options = ProbeOptions {
            limit: args.limit,
            timeout: Duration::from_secs(args.timeout),
            region: args.region.clone(),
            ..ProbeOptions::default()
        };
        for probed in tpod_market::probe(&client, &net, &found, &reservation, &options).await {
            let (mut status, mut reason) = match &probed.status {
                Status::Ok => ("ok", String::new()),
                Status::Skipped(why) => ("skipped", why.clone()),
            };
            if args.verify
                && status == "ok"
                && let (Some(peer), Some(addr)) = (probed.peer, probed.addr.clone())
            {
                let provider = ProviderTarget::new(peer, addr);
                let verified = crate::attest::verify_provider(&client, &provider, &target.attest, devnet_dir).await;
                if let Err(e) =
                    verified.map_err(|e| format!("{e:#}")).and_then(|v| v.into_result().map_err(|e| e.to_string()))
                {
                    (status, reason) = ("skipped", e);
                }
            }
            let c = &probed.candidate;
            rows.push(Row {
                peer_id: probed.peer.map(|p| p.to_string()).unwrap_or_default(),
                address: c.provider.to_string(),
                cost_per_hour: c.cost_per_hour,
                region: probed.profile.as_ref().map(|p| p.region.clone()).unwrap_or_default(),
                tee: c.table.tee_type.clone(),
                table_id: c.table_id,
                latency_ms: probed.latency_ms,
                status,
                reason,
                multiaddr: probed.addr.map(|a| a.to_string()).unwrap_or_default(),
            });
        }
    }

    if json {
        let entries: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "peer_id": r.peer_id, "address": r.address, "cost_per_hour": r.cost_per_hour.to_string(),
                    "region": r.region, "tee": r.tee, "table_id": r.table_id, "latency_ms": r.latency_ms,
                    "status": r.status, "reason": r.reason, "multiaddr": r.multiaddr,
                })
            })
            .collect();
        say!("{}", serde_json::Value::Array(entries));
    } else {
        let cache = match &report.cache {
            CacheUse::Warm { confirmed_block } => format!("cache up to block {confirmed_block}"),
            CacheUse::Cold(why) => format!("no cache used: {why}"),
            CacheUse::Off => "no cache".to_owned(),
        };
        say!(
            "{} providers, {} offers in the network's token for {} ({} of memory, {} of storage); \
             blocks {}..{} read ({cache}) in {:.2} s",
            state.providers.len(),
            found.len(),
            cpu_text(reservation.cpu_millis),
            crate::units::format_size(reservation.memory_bytes),
            crate::units::format_size(reservation.storage_bytes),
            report.from_block,
            report.to_block,
            listed.as_secs_f64(),
        );
        let cost = |v: U256| token.as_ref().map_or_else(|| format!("{v} base"), |t| t.format(v));
        say!(
            "{:<42}  {:<10}  {:<10}  {:>6}  {:>22}  {:>8}  STATUS",
            "ADDRESS",
            "REGION",
            "TEE",
            "TABLE",
            "COST/H",
            "LATENCY"
        );
        for r in &rows {
            let latency = r.latency_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms"));
            let status = if r.reason.is_empty() { r.status.to_owned() } else { format!("{}: {}", r.status, r.reason) };
            let region = if r.region.is_empty() { "-" } else { &r.region };
            say!(
                "{:<42}  {:<10}  {:<10}  {:>6}  {:>22}  {:>8}  {status}",
                r.address,
                region,
                r.tee,
                r.table_id,
                cost(r.cost_per_hour),
                latency
            );
        }
        if rows.is_empty() {
            say!("no provider offers this in the network's token with these filters");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The market of `network`'s Registry, read through `chain`: cached in the network's directory,
/// so a run reads only the blocks since the last one.
pub(crate) async fn read_market(
    chain: &tpod_chain::Chain,
    network: &crate::network::Network,
) -> anyhow::Result<(tpod_market::MarketState, tpod_market::SyncReport)> {
    let registry = chain.contracts().registry;
    Scanner::new(chain.provider().clone(), chain.chain_id(), registry)
        .start_block(network.deployed_at_block.unwrap_or(0))
        .cache_file(cache_path(&network.dir, chain.chain_id(), registry))
        .sync()
        .await
        .with_context(|| format!("reading the market from Registry {registry} of network {}", network.name))
}

/// `1.5 CPU`.
fn cpu_text(millis: u64) -> String {
    let (whole, frac) = (millis / 1000, millis % 1000);
    if frac == 0 {
        format!("{whole} CPU")
    } else {
        format!("{whole}.{} CPU", format!("{frac:03}").trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_shown_in_cores() {
        assert_eq!(cpu_text(1000), "1 CPU");
        assert_eq!(cpu_text(1500), "1.5 CPU");
        assert_eq!(cpu_text(100), "0.1 CPU");
        assert_eq!(cpu_text(2025), "2.025 CPU");
    }
}
