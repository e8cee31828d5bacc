//! Choosing the provider a deploy pays: the one named with `--provider`, or with
//! `--provider auto` the cheapest in the Registry that fits the manifest, answers a quote that
//! matches its registered prices and passes attestation.
//!
//! Nothing is approved, sealed or paid before a provider has passed every check; a provider that
//! fails one is skipped with the reason, and the next one in price order is tried.

use std::path::Path;

use alloy::primitives::{Address, U256};
use anyhow::{Context, bail};
use tpod_attestation::Attested;
use tpod_billing::PriceTable;
use tpod_wire::pb;

use crate::pods::{ProviderTarget, Publisher};

/// What a quote commits the provider to, checked against this network.
#[derive(Clone, Debug)]
pub(crate) struct Terms {
    /// The provider's payment address: the channel's payee.
    pub(crate) provider_address: Address,
    /// The least a channel must hold unclaimed.
    pub(crate) min_funding: U256,
    /// The least unlock delay.
    pub(crate) min_unlock_delay_secs: u32,
    /// The prices as quoted, sent back in the signed deploy.
    pub(crate) quoted: pb::PricingTable,
    /// The same prices, parsed.
    pub(crate) prices: PriceTable,
}

impl Terms {
    /// Checks that `quote` offers the pod on this network's Payment contract and chain, and reads
    /// its terms.
    pub(crate) fn of(quote: &pb::QuoteResponse, publisher: &Publisher) -> anyhow::Result<Self> {
        if !quote.available {
            bail!("cannot take this pod: {}", quote.reason);
        }
        let payment: Address = quote.payment_contract.parse().context("the quote's payment contract is malformed")?;
        if payment != publisher.chain.contracts().payment || quote.chain_id != publisher.chain.chain_id() {
            bail!(
                "it is paid through {payment} on chain {}, not this network's {} on chain {}",
                quote.chain_id,
                publisher.chain.contracts().payment,
                publisher.chain.chain_id()
            );
        }
        let quoted = quote.pricing.clone().context("the quote has no prices")?;
        Ok(Self {
            provider_address: quote.provider_address.parse().context("the quote's provider address is malformed")?,
            min_funding: quote.min_funding.parse().context("the quote's minimum funding is malformed")?,
            min_unlock_delay_secs: quote.min_unlock_delay_secs,
            prices: PriceTable::from_proto(&quoted).context("the provider quoted malformed prices")?,
            quoted,
        })
    }
}

/// The provider a deploy goes to, with what it quoted and what its attestation proved.
pub(crate) struct Chosen {
    /// Where it is.
    pub(crate) provider: ProviderTarget,
    /// What it quoted.
    pub(crate) terms: Terms,
    /// Its verified attestation: the enclave keys come from here only.
    pub(crate) attested: Attested,
}

/// A provider that was passed over, and why.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Skipped {
    /// Its peer id.
    pub(crate) peer_id: String,
    /// Its payment address, from the Registry.
    pub(crate) address: Address,
    /// Why it was skipped.
    pub(crate) reason: String,
}

/// A provider named rather than picked: quoted and attested, or the deploy stops.
async fn named(
    publisher: &Publisher,
    provider: ProviderTarget,
    resources: pb::Resources,
    attest: &crate::attest::AttestArgs,
    devnet_dir: &Path,
) -> anyhow::Result<(Chosen, Vec<Skipped>)> {
    let checked = async {
        let terms = Terms::of(&publisher.quote(&provider, resources).await?, publisher)?;
        let attested = crate::attest::attested(publisher.client(), &provider, attest, devnet_dir).await?;
        anyhow::Ok((terms, attested))
    };
    let (terms, attested) = checked.await.with_context(|| format!("provider {}", provider.peer()))?;
    Ok((Chosen { provider, terms, attested }, Vec::new()))
}

impl Skipped {
    /// Says on stderr why the provider was skipped, so a user sees it whatever the output format.
    fn report(self, all: &mut Vec<Skipped>) {
        eprintln!("skipped provider {} ({}): {}", self.peer_id, self.address, self.reason);
        all.push(self);
    }
}

/// The provider a deploy goes to: `--provider PEER@ADDR` as named, else (no flag, or `auto`) the
/// cheapest provider in the Registry that passes every check, trying them in price order. On a
/// devnet whose Registry lists nobody yet, its first provider.
pub(crate) async fn choose(
    publisher: &Publisher,
    reservation: &tpod_market::Reservation,
    flag: Option<&str>,
    attest: &crate::attest::AttestArgs,
    devnet_dir: &Path,
) -> anyhow::Result<(Chosen, Vec<Skipped>)> {
    let resources = reservation.to_proto();
    if let Some(text) = flag.filter(|f| *f != AUTO) {
        return named(publisher, ProviderTarget::resolve(Some(text), devnet_dir)?, resources, attest, devnet_dir).await;
    }
    let found = market_candidates(publisher, reservation).await?;
    if found.is_empty() {
        if flag.is_none() && publisher.network.devnet.is_some() {
            // A devnet provider that is not listed (started with `register = false`).
            return named(publisher, ProviderTarget::resolve(None, devnet_dir)?, resources, attest, devnet_dir).await;
        }
        bail!(
            "no provider in the Registry of network {} offers prices in its token; `tpod providers` lists the market",
            publisher.network.name
        );
    }
    let network = tpod_market::Network {
        chain_id: publisher.chain.chain_id(),
        registry: publisher.chain.contracts().registry,
        payment: publisher.chain.contracts().payment,
    };
    let mut skipped = Vec::new();
    let mut rest = found.as_slice();
    while !rest.is_empty() {
        let options = tpod_market::ProbeOptions::default();
        let probed = tpod_market::probe(publisher.client(), &network, rest, reservation, &options).await;
        let Some(last) = probed.last() else { break };
        // The probe answers for a prefix of `rest`; the next round starts after it.
        let consumed = rest.iter().position(|c| *c == last.candidate).map_or(rest.len(), |i| i + 1);
        for p in probed {
            let peer_id = p.peer.map_or_else(|| "(no peer id)".to_owned(), |peer| peer.to_string());
            let skip = |reason: String| Skipped { peer_id: peer_id.clone(), address: p.candidate.provider, reason };
            let (tpod_market::Status::Ok, Some(peer), Some(addr), Some(quote)) = (&p.status, p.peer, &p.addr, &p.quote)
            else {
                let reason = match &p.status {
                    tpod_market::Status::Skipped(reason) => reason.clone(),
                    tpod_market::Status::Ok => "it answered without an address or a quote".to_owned(),
                };
                skip(reason).report(&mut skipped);
                continue;
            };
            // A provider offering several tables is attested once.
            if skipped.iter().any(|s| s.address == p.candidate.provider) {
                continue;
            }
            let provider = ProviderTarget::new(peer, addr.clone());
            let checked = match Terms::of(quote, publisher) {
                Ok(terms) => crate::attest::attested(publisher.client(), &provider, attest, devnet_dir)
                    .await
                    .map(|attested| (terms, attested)),
                Err(e) => Err(e),
            };
            match checked {
                Ok((terms, attested)) => return Ok((Chosen { provider, terms, attested }, skipped)),
                Err(e) => skip(format!("{e:#}")).report(&mut skipped),
            }
        }
        rest = &rest[consumed..];
    }
    let reasons: Vec<String> =
        skipped.iter().map(|s| format!("  {} ({}): {}", s.peer_id, s.address, s.reason)).collect();
    bail!("no provider in the Registry passed every check; nothing was paid:\n{}", reasons.join("\n"))
}

/// `--provider auto`: pick from the Registry.
pub(crate) const AUTO: &str = "auto";

/// The market of the publisher's network as candidates for `reservation`, cheapest first.
pub(crate) async fn market_candidates(
    publisher: &Publisher,
    reservation: &tpod_market::Reservation,
) -> anyhow::Result<Vec<tpod_market::Candidate>> {
    let (state, _) = crate::providers::read_market(&publisher.chain, &publisher.network).await?;
    Ok(tpod_market::candidates(
        &state,
        publisher.chain.contracts().token,
        reservation,
        &tpod_market::Filters::default(),
    ))
}
