//! `tpod list`: every recorded deployment and channel on the network, with what each channel
//! holds on chain. A failed deploy's funded channel shows here, and `tpod unlock` / `tpod
//! withdraw` take its channel id.

use std::path::Path;
use std::process::ExitCode;

use alloy::primitives::U256;
use alloy::signers::local::PrivateKeySigner;
use serde_json::json;
use tpod_chain::client::ChannelState;

use crate::deployments::{Deployment, Deployments};
use crate::pods::Target;

/// What a channel holds on chain, or why it could not be read.
fn funds(channel: &Result<Option<ChannelState>, String>) -> serde_json::Value {
    match channel {
        Ok(Some(c)) => json!({
            "deposited": c.deposited.to_string(), "claimed": c.claimed.to_string(),
            "unclaimed": c.unclaimed().to_string(), "unlock_at": c.unlock_at, "closed": c.closed,
        }),
        Ok(None) => json!({ "error": "no such channel on chain" }),
        Err(e) => json!({ "error": e }),
    }
}

/// `tpod list`.
pub async fn list(target: &Target, devnet_dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let records = Deployments::load(&target.records_dir(devnet_dir)?)?;
    // Reading channels needs no account: a throwaway key signs nothing.
    let network = crate::network::resolve(&target.network, devnet_dir)?;
    let chain = crate::network::connect(&network, PrivateKeySigner::random()).await?;
    let token = crate::units::Token::read(&chain).await?;
    let now = crate::billing::chain_now(&chain).await?;
    let mut rows: Vec<(&Deployment, Result<Option<ChannelState>, String>)> = Vec::new();
    for d in &records.deployments {
        let channel = chain.channel(d.channel_id).await.map_err(|e| e.to_string());
        rows.push((d, channel));
    }
    if json {
        let all: Vec<serde_json::Value> = rows
            .iter()
            .map(|(d, channel)| {
                json!({
                    "name": d.name, "state": d.state(), "deployed": d.deployed, "pod_id": d.pod_id,
                    "channel_id": d.channel_id, "provider": d.provider_peer, "provider_address": d.provider_address,
                    "url": d.url, "created_at": d.created_at, "channel": funds(channel),
                })
            })
            .collect();
        say!("{}", json!({ "network": network.name, "chain_time": now, "deployments": all }));
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        say!("no deployments on network {}", network.name);
        return Ok(ExitCode::SUCCESS);
    }
    for name in records.names() {
        say!("{name}");
        for (d, channel) in rows.iter().filter(|(d, _)| d.name == name) {
            say!("  channel {} ({}), pod {}", d.channel_id, d.state(), d.pod_id);
            say!("    provider {} ({})", d.provider_peer, d.provider_address);
            if !d.url.is_empty() && d.deployed {
                say!("    url      {}", d.url);
            }
            match channel {
                Ok(Some(c)) => {
                    let unlock = match c.unlock_at {
                        Some(at) if at <= now => ", unlocked: `tpod withdraw` possible now".to_owned(),
                        Some(at) => format!(
                            ", unlocking: withdraw in {}",
                            crate::units::format_duration(at.saturating_sub(now))
                        ),
                        None => String::new(),
                    };
                    let closed = if c.closed { ", closed" } else { "" };
                    say!(
                        "    funds    {} deposited, {} claimed, {} left{unlock}{closed}",
                        token.format(c.deposited),
                        token.format(c.claimed),
                        token.format(c.unclaimed())
                    );
                    if !d.deployed && c.unclaimed() > U256::ZERO && !c.closed {
                        say!(
                            "    recover  `tpod unlock {id}`, then `tpod withdraw {id}`{reuse}",
                            id = d.channel_id,
                            reuse = if d.is_unused() { "; or `tpod deploy` the same name again to use it" } else { "" }
                        );
                    }
                }
                Ok(None) => say!("    funds    no such channel on chain"),
                Err(e) => say!("    funds    cannot read the channel: {e}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
