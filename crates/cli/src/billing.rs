//! `tpod bill | topup | unlock | withdraw | accept-pricing`: what a pod costs and its channel.
//!
//! `bill` shows the provider's metering next to the chain's view of the channel, and checks the
//! provider's latest usage report: its digest and the enclave signature over the claim must
//! match the enclave signer the channel names, so a provider cannot show one account and claim
//! another. The channel commands act on chain directly; the provider follows the chain.

use std::path::Path;
use std::process::ExitCode;

use alloy::primitives::{Address, Signature, U256};
use anyhow::{Context, bail};
use serde_json::json;
use tpod_billing::{PriceTable, Usage, UsageReport};
use tpod_chain::Chain;
use tpod_chain::claim::Claim;
use tpod_chain::client::ChannelState;
use tpod_wire::pb;

use crate::deployments::{Deployment, Deployments};
use crate::pods::{ProviderTarget, Publisher, Target};

/// The chain's time: the timestamp of the block a transaction sent now would go into (the
/// pending block, where the node serves one), else of the latest block. Unlocks, withdrawals and
/// closes are decided by the contract against block time, which may run ahead of or behind this
/// machine's clock; the local clock is never used for them. A quiet chain (a devnet mines only
/// with transactions) has an old latest block, which is why the pending one comes first.
pub(crate) async fn chain_now(chain: &Chain) -> anyhow::Result<u64> {
    use alloy::providers::Provider as _;
    let provider = chain.provider();
    let latest = provider
        .get_block_by_number(alloy::rpc::types::BlockNumberOrTag::Latest)
        .await
        .context("reading the chain's latest block")?
        .context("the chain has no latest block")?
        .header
        .timestamp;
    // Read raw: a pending block has no hash, which the typed block does not allow.
    let pending = provider
        .raw_request::<_, serde_json::Value>("eth_getBlockByNumber".into(), ("pending", false))
        .await
        .ok()
        .and_then(|block| {
            let text = block.get("timestamp")?.as_str()?.trim_start_matches("0x").to_owned();
            u64::from_str_radix(&text, 16).ok()
        });
    Ok(pending.map_or(latest, |pending| pending.max(latest)))
}

/// The deployment called `name` (or the only one) and the publisher that owns it.
async fn open(name: Option<&str>, target: &Target, devnet_dir: &Path) -> anyhow::Result<(Deployment, Publisher)> {
    let record = Deployments::load(&target.records_dir(devnet_dir)?)?.find(name)?.clone();
    Ok((record, Publisher::open(devnet_dir, target).await?))
}

/// The pod's status (with its account) from its provider.
async fn status_of(publisher: &Publisher, record: &Deployment, devnet_dir: &Path) -> anyhow::Result<pb::PodStatus> {
    let provider = ProviderTarget::from_deployment(record, devnet_dir)?;
    publisher.provision(&provider, record.pod_id, pb::provision_request::Action::Status(pb::Status {})).await
}

async fn channel_of(publisher: &Publisher, record: &Deployment) -> anyhow::Result<ChannelState> {
    publisher
        .chain
        .channel(record.channel_id)
        .await
        .context("reading the payment channel")?
        .with_context(|| format!("payment channel {} does not exist", record.channel_id))
}

fn amount(text: &str, what: &str) -> anyhow::Result<U256> {
    if text.is_empty() {
        return Ok(U256::ZERO);
    }
    tpod_billing::parse_u256(text).map_err(|e| anyhow::anyhow!("the provider sent a malformed {what}: {e}"))
}

/// Checks the provider's latest signed claim against the channel's enclave signer.
fn verify_claim(claim: &pb::SignedClaim, channel: &ChannelState, domain: &alloy::sol_types::Eip712Domain) -> String {
    let check = || -> anyhow::Result<Address> {
        let report = UsageReport::from_proto(claim.report.as_ref().context("no report")?)
            .map_err(|e| anyhow::anyhow!("malformed report: {e}"))?;
        let cumulative = amount(&claim.cumulative_amount, "claim amount")?;
        if cumulative > report.amount {
            bail!("claims {cumulative}, more than its report's {}", report.amount);
        }
        let signature = Signature::from_raw(&claim.signature).context("malformed signature")?;
        let signed = Claim::new(report.channel, cumulative, report.digest());
        Ok(signed.recover_signer(domain, &signature)?)
    };
    match check() {
        Ok(signer) if signer == channel.enclave_signer => format!("verified: signed by enclave {signer}"),
        Ok(signer) => format!("NOT VALID: signed by {signer}, but the channel's enclave is {}", channel.enclave_signer),
        Err(e) => format!("NOT VALID: {e:#}"),
    }
}

/// Human-readable figures for each usage counter.
fn usage_lines(u: &Usage) -> Vec<(&'static str, String)> {
    const MIB_NS: f64 = (1u64 << 20) as f64 * 1e9;
    vec![
        ("cpu reserved", format!("{:.1} millicore-s", u.cpu_reserved_millicore_seconds())),
        ("cpu used", format!("{:.3} CPU-s", u.cpu_used_seconds())),
        ("memory reserved", format!("{:.1} MiB-s", u.memory_reserved as f64 / MIB_NS)),
        ("memory used", format!("{:.1} MiB-s", u.memory_used as f64 / MIB_NS)),
        ("storage reserved", format!("{:.1} MiB-s", u.storage_reserved as f64 / MIB_NS)),
        ("ingress", crate::units::format_size(u.ingress)),
        ("egress", crate::units::format_size(u.egress)),
    ]
}

/// `tpod bill`.
pub async fn bill(name: Option<&str>, target: &Target, devnet_dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let (record, publisher) = open(name, target, devnet_dir).await?;
    let record = &record;
    let status = status_of(&publisher, record, devnet_dir).await?;
    let billing = status.billing.clone().context("the provider reports no billing for this pod")?;
    let channel = channel_of(&publisher, record).await?;
    let usage = Usage::from_proto(&billing.usage.clone().unwrap_or_default())
        .map_err(|e| anyhow::anyhow!("the provider sent malformed usage: {e}"))?;
    let metered = amount(&billing.amount, "amount")?;
    let rate = amount(&billing.rate_per_second, "rate")?;
    let prices = billing.pricing.as_ref().map(PriceTable::from_proto).transpose()?.unwrap_or_default();
    let proposed = billing.proposed_pricing.as_ref().map(PriceTable::from_proto).transpose()?;
    let unused = channel.deposited.saturating_sub(metered);
    let seconds_left = (!rate.is_zero()).then(|| unused / rate);
    let verified = billing.last_claim.as_ref().map(|c| verify_claim(c, &channel, &publisher.chain.claim_domain()));
    if json {
        say!(
            "{}",
            json!({
                "name": record.name, "pod_id": record.pod_id, "channel_id": record.channel_id, "state": status.state,
                "usage": usage, "metered": metered.to_string(), "claimed": channel.claimed.to_string(),
                "deposited": channel.deposited.to_string(), "unclaimed": channel.unclaimed().to_string(),
                "unused": unused.to_string(), "rate_per_second": rate.to_string(),
                "seconds_left": seconds_left.map(|s| s.to_string()),
                "pricing": prices, "proposed_pricing": proposed, "top_up": billing.top_up,
                "unlock_at": channel.unlock_at, "closed": channel.closed,
                "max_rate_per_second": channel.cap.map(|(rate, _)| rate.to_string()),
                "last_claim": billing.last_claim.as_ref().map(|c| json!({
                    "cumulative_amount": c.cumulative_amount, "confirmed": c.confirmed, "check": verified,
                })),
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    let token = &publisher.token;
    let tokens = |v: U256| token.format(v);
    say!("{}: {}", record.name, status.state);
    say!("  prices      {}", token.prices(&prices));
    for (what, figure) in usage_lines(&usage) {
        say!("  {what:<16} {figure}");
    }
    say!("  metered     {} (the cost of all usage so far)", tokens(metered));
    say!("  claimed     {} (paid to the provider on chain)", tokens(channel.claimed));
    say!(
        "  deposited   {} ({} left in the channel, {} not yet used)",
        tokens(channel.deposited),
        tokens(channel.unclaimed()),
        tokens(unused)
    );
    let hourly = |per_second: U256| format!("{}/h", tokens(per_second.saturating_mul(U256::from(3600u64))));
    match seconds_left {
        Some(s) => say!("  rate        {}: about {} left", hourly(rate), human_duration(s)),
        None => say!("  rate        {}", hourly(U256::ZERO)),
    }
    if let Some((cap, _)) = channel.cap {
        say!("  spend cap   {}", hourly(U256::from(cap)));
    }
    if let Some(check) = verified {
        say!("  last claim  {check}");
    }
    if let Some(p) = proposed {
        say!(
            "  the provider proposes new prices: {}; agree with `tpod accept-pricing {}`",
            token.prices(&p),
            record.name
        );
    }
    if let Some(at) = channel.unlock_at {
        let now = chain_now(&publisher.chain).await?;
        let when = if at <= now {
            "now".to_owned()
        } else {
            format!(
                "at {} (in {} of chain time)",
                crate::units::format_time(at),
                crate::units::format_duration(at - now)
            )
        };
        say!("  unlock requested: `tpod withdraw {}` possible {when}", record.name);
    }
    Ok(ExitCode::SUCCESS)
}

fn human_duration(seconds: U256) -> String {
    crate::units::format_duration(u64::try_from(seconds).unwrap_or(u64::MAX))
}

/// `tpod topup`.
pub async fn topup(
    amount: crate::units::Amount,
    name: Option<&str>,
    target: &Target,
    devnet_dir: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (record, publisher) = open(name, target, devnet_dir).await?;
    let record = &record;
    let amount = publisher.token.amount(&amount)?;
    publisher
        .chain
        .approve_payment(publisher.chain.contracts().token, amount)
        .await
        .context("approving the payment")?;
    publisher.chain.deposit(record.provider_address, record.pod_id, amount).await.context("depositing")?;
    let channel = channel_of(&publisher, record).await?;
    if json {
        say!(
            "{}",
            json!({ "name": record.name, "deposited": amount.to_string(), "unclaimed": channel.unclaimed().to_string() })
        );
    } else {
        say!(
            "deposited {} into {}'s channel; {} is now unclaimed",
            publisher.token.format(amount),
            record.name,
            publisher.token.format(channel.unclaimed())
        );
        say!("  a paused pod resumes once the provider sees enough funds (`tpod status {}`)", record.name);
    }
    Ok(ExitCode::SUCCESS)
}

/// The channel `selector` names (a channel id or a deployment name, see
/// [`Deployments::find_channel`]) and the publisher that owns it.
async fn open_channel(
    selector: Option<&str>,
    target: &Target,
    devnet_dir: &Path,
) -> anyhow::Result<(Deployment, Publisher)> {
    let record = Deployments::load(&target.records_dir(devnet_dir)?)?.find_channel(selector)?.clone();
    Ok((record, Publisher::open(devnet_dir, target).await?))
}

/// How `tpod withdraw` names a channel: by its deployment's name if that holds only it.
fn withdraw_hint(records: &Deployments, record: &Deployment) -> String {
    if records.named(&record.name).len() == 1 { record.name.clone() } else { record.channel_id.to_string() }
}

/// `tpod unlock`: starts the unlock delay of a deployment's channel (by name, or by channel id
/// for a name holding several, such as a failed deploy's).
pub async fn unlock(name: Option<&str>, target: &Target, devnet_dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let (record, publisher) = open_channel(name, target, devnet_dir).await?;
    let record = &record;
    let hint = withdraw_hint(&Deployments::load(&target.records_dir(devnet_dir)?)?, record);
    publisher.chain.request_unlock(record.provider_address, record.pod_id).await.context("requesting the unlock")?;
    let channel = channel_of(&publisher, record).await?;
    let at = channel.unlock_at.unwrap_or_default();
    let now = chain_now(&publisher.chain).await?;
    if json {
        say!("{}", json!({ "name": record.name, "channel_id": record.channel_id, "unlock_at": at, "chain_time": now }));
    } else {
        say!(
            "unlock requested for {}'s channel {}: the provider stops the pod and makes its final claim;",
            record.name,
            record.channel_id
        );
        say!(
            "  `tpod withdraw {hint}` returns the rest from {} (in {} of chain time)",
            crate::units::format_time(at),
            crate::units::format_duration(at.saturating_sub(now))
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `tpod withdraw`: after the unlock delay (by the chain's clock), takes back everything the
/// provider has not claimed, then closes the channel, which holds nothing any more, and forgets
/// it. A channel that holds nothing unclaimed is closed at once.
pub async fn withdraw(name: Option<&str>, target: &Target, devnet_dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let records_dir = target.records_dir(devnet_dir)?;
    let mut records = Deployments::load(&records_dir)?;
    let record = records.find_channel(name)?.clone();
    let publisher = Publisher::open(devnet_dir, target).await?;
    let channel = channel_of(&publisher, &record).await?;
    if channel.closed {
        records.remove_channel(record.channel_id);
        records.save(&records_dir)?;
        bail!("{}'s channel {} is closed already; it is no longer recorded", record.name, record.channel_id);
    }
    let returned = if channel.unclaimed().is_zero() {
        U256::ZERO
    } else {
        let now = chain_now(&publisher.chain).await?;
        let hint = withdraw_hint(&records, &record);
        match channel.unlock_at {
            None => bail!("no unlock was requested for {}'s channel; run `tpod unlock {hint}` first", record.name),
            Some(at) if at > now => bail!(
                "the unlock delay of {}'s channel ends in {} of chain time (at {})",
                record.name,
                crate::units::format_duration(at - now),
                crate::units::format_time(at)
            ),
            Some(_) => {}
        }
        publisher.chain.withdraw_unlocked(record.provider_address, record.pod_id).await.context("withdrawing")?
    };
    // Nothing is left in it: close it for good, so the provider forgets the pod and the record
    // can go.
    let refunded =
        publisher.chain.close_channel(record.provider_address, record.pod_id).await.context("closing the channel")?;
    records.remove_channel(record.channel_id);
    records.save(&records_dir)?;
    let returned = returned.saturating_add(refunded);
    if json {
        say!(
            "{}",
            json!({ "name": record.name, "channel_id": record.channel_id, "withdrawn": returned.to_string(), "closed": true })
        );
    } else {
        say!(
            "withdrew {} from {}'s channel {} (everything the provider had not claimed); the channel is closed",
            publisher.token.format(returned),
            record.name,
            record.channel_id
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `tpod accept-pricing`.
pub async fn accept_pricing(
    name: Option<&str>,
    target: &Target,
    devnet_dir: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (record, publisher) = open(name, target, devnet_dir).await?;
    let record = &record;
    let status = status_of(&publisher, record, devnet_dir).await?;
    let proposed = status
        .billing
        .and_then(|b| b.proposed_pricing)
        .with_context(|| format!("the provider proposes no new prices for {}", record.name))?;
    let table = PriceTable::from_proto(&proposed)?;
    let action = pb::provision_request::Action::AcceptPricing(pb::AcceptPricing { pricing: Some(proposed) });
    let provider = ProviderTarget::from_deployment(record, devnet_dir)?;
    let status = publisher.provision(&provider, record.pod_id, action).await?;
    if json {
        // The account at the switch: everything before it is billed at the old prices.
        let billing = status.billing.unwrap_or_default();
        let usage = Usage::from_proto(&billing.usage.unwrap_or_default())
            .map_err(|e| anyhow::anyhow!("the provider sent malformed usage: {e}"))?;
        say!("{}", json!({ "name": record.name, "pricing": table, "usage": usage, "metered": billing.amount }));
    } else {
        say!(
            "{} is billed at {} from now on; earlier usage keeps the old prices",
            record.name,
            publisher.token.prices(&table)
        );
    }
    Ok(ExitCode::SUCCESS)
}
