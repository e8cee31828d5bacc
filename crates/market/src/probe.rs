//! Probing candidates: fetch each provider's signed profile over `/tpod/profile/1`, verify it
//! against its Registry entry, and ask it for a quote for the reservation. A candidate is `ok`
//! only if the profile verifies and the quote offers the pod on this network at exactly the
//! prices of the Registry table it stands for; otherwise it is skipped, with the reason.
//!
//! Providers are probed in parallel, each within its own deadline (5 s by default), the
//! cheapest `limit` candidates at a time. A provider offering several tables is asked once. The
//! latency recorded is the quote's round trip, on the connection the profile fetch opened.
//!
//! Region: the chain holds only the profile URI, so a provider's region is known once its
//! signed profile is fetched. With a region filter, candidates outside it are dropped after
//! their profile is fetched, and the next cheapest are probed, until `limit` candidates in the
//! region have answered or `max_providers` providers have been asked.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use futures::future::join_all;
use tpod_billing::PriceTable;
use tpod_net::{Client, Multiaddr, PeerId};
use tpod_wire::pb;

use crate::profile::{self, ProfileUri};
use crate::rank::{Candidate, Reservation};

/// The network the probe checks profiles and quotes against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    /// The chain id.
    pub chain_id: u64,
    /// The Registry the candidates come from.
    pub registry: Address,
    /// The Payment contract quotes must name.
    pub payment: Address,
}

/// How far to probe.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// Candidates to report (8 by default).
    pub limit: usize,
    /// Time each provider gets for its profile and quote together (5 s by default).
    pub timeout: Duration,
    /// Only providers whose profile names this region (compared without regard to case).
    pub region: Option<String>,
    /// Providers asked at most, when a region filter drops some (64 by default).
    pub max_providers: usize,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self { limit: 8, timeout: Duration::from_secs(5), region: None, max_providers: 64 }
    }
}

/// Whether a candidate can be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Its profile verifies and it quotes its Registry prices.
    Ok,
    /// Why not.
    Skipped(String),
}

/// A probed candidate.
#[derive(Clone, Debug)]
pub struct Probed {
    /// The candidate.
    pub candidate: Candidate,
    /// The peer id its profile URI names, if the URI parses.
    pub peer: Option<PeerId>,
    /// The address that answered.
    pub addr: Option<Multiaddr>,
    /// Its verified profile.
    pub profile: Option<pb::ProviderProfile>,
    /// Its quote's round trip, in milliseconds.
    pub latency_ms: Option<u64>,
    /// Its quote.
    pub quote: Option<pb::QuoteResponse>,
    /// Ok, or skipped with the reason.
    pub status: Status,
}

/// What one provider said, shared by its candidates.
#[derive(Clone, Debug, Default)]
struct Answer {
    peer: Option<PeerId>,
    addr: Option<Multiaddr>,
    profile: Option<pb::ProviderProfile>,
    latency_ms: Option<u64>,
    quote: Option<pb::QuoteResponse>,
    quoted: Option<PriceTable>,
    /// Why the provider as a whole is skipped.
    failure: Option<String>,
    /// Outside the region asked for.
    elsewhere: bool,
}

/// Probes `candidates` (cheapest first, as [`crate::candidates`] returns them) and returns
/// up to `options.limit` of them, in the same order, each ok or skipped with a reason.
#[tracing::instrument(skip_all, fields(candidates = candidates.len(), limit = options.limit))]
pub async fn probe(
    client: &Client,
    network: &Network,
    candidates: &[Candidate],
    reservation: &Reservation,
    options: &ProbeOptions,
) -> Vec<Probed> {
    let mut out = Vec::new();
    let mut next = 0;
    let mut asked = 0;
    while out.len() < options.limit && next < candidates.len() && asked < options.max_providers {
        // The next providers, cheapest first, enough for the candidates still wanted.
        let want = options.limit - out.len();
        let mut wave: Vec<Address> = Vec::new();
        let mut end = next;
        let mut covered = 0;
        while end < candidates.len() && covered < want && asked + wave.len() < options.max_providers {
            let provider = candidates[end].provider;
            if !wave.contains(&provider) {
                wave.push(provider);
            }
            covered += 1;
            end += 1;
        }
        // Every candidate of a wave's provider is settled by its answer, wherever it ranks.
        let answers: BTreeMap<Address, Answer> =
            join_all(
                wave.iter().map(|provider| {
                    let uri =
                        candidates[next..end].iter().find(|c| c.provider == *provider).map(|c| c.profile_uri.as_str());
                    async move {
                        (*provider, ask(client, network, *provider, uri.unwrap_or(""), reservation, options).await)
                    }
                }),
            )
            .await
            .into_iter()
            .collect();
        asked += wave.len();
        for candidate in &candidates[next..end] {
            let Some(answer) = answers.get(&candidate.provider) else { continue };
            if answer.elsewhere {
                continue;
            }
            out.push(settle(candidate, answer));
        }
        next = end;
    }
    out.truncate(options.limit);
    out
}

/// One candidate's status from its provider's answer.
fn settle(candidate: &Candidate, answer: &Answer) -> Probed {
    let status = match (&answer.failure, &answer.quoted) {
        (Some(reason), _) => Status::Skipped(reason.clone()),
        (None, Some(quoted)) => match price_difference(&candidate.prices, quoted) {
            None => Status::Ok,
            Some(difference) => Status::Skipped(format!(
                "quoted prices differ from its registry table {}: {difference}",
                candidate.table_id
            )),
        },
        (None, None) => Status::Skipped("it sent no prices".into()),
    };
    Probed {
        candidate: candidate.clone(),
        peer: answer.peer,
        addr: answer.addr.clone(),
        profile: answer.profile.clone(),
        latency_ms: answer.latency_ms,
        quote: answer.quote.clone(),
        status,
    }
}

/// The first price that differs, as `<resource> <kind> <quoted> vs <registered>`.
fn price_difference(registered: &PriceTable, quoted: &PriceTable) -> Option<String> {
    let fields = |t: &PriceTable| {
        [
            ("cpu reservation", t.cpu.reservation),
            ("cpu usage", t.cpu.usage),
            ("memory reservation", t.memory.reservation),
            ("memory usage", t.memory.usage),
            ("storage reservation", t.storage.reservation),
            ("ingress usage", t.ingress.usage),
            ("egress usage", t.egress.usage),
        ]
    };
    fields(quoted)
        .into_iter()
        .zip(fields(registered))
        .find(|((_, q), (_, r))| q != r)
        .map(|((name, q), (_, r))| format!("{name} {q} quoted vs {r} registered"))
}

/// Fetches and verifies `provider`'s profile and asks it for a quote, within the deadline.
async fn ask(
    client: &Client,
    network: &Network,
    provider: Address,
    uri: &str,
    reservation: &Reservation,
    options: &ProbeOptions,
) -> Answer {
    let mut answer = Answer::default();
    let uri = match uri.parse::<ProfileUri>() {
        Ok(uri) => uri,
        Err(e) => {
            answer.failure = Some(profile::ProfileError::from(e).to_string());
            return answer;
        }
    };
    answer.peer = Some(uri.peer);
    let within = tokio::time::timeout(
        options.timeout,
        exchange(client, network, provider, &uri, reservation, options, &mut answer),
    );
    match within.await {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => answer.failure = Some(reason),
        Err(_) => answer.failure = Some(format!("no answer within {} s", options.timeout.as_secs_f32())),
    }
    answer
}

/// The profile and quote exchange; fills `answer` as it goes, so a timeout keeps what came.
async fn exchange(
    client: &Client,
    network: &Network,
    provider: Address,
    uri: &ProfileUri,
    reservation: &Reservation,
    options: &ProbeOptions,
    answer: &mut Answer,
) -> Result<(), String> {
    let mut last_error = String::from("its profile URI lists no address");
    let mut fetched = None;
    for addr in &uri.addrs {
        let request = pb::ProfileRequest { version: tpod_wire::VERSION };
        match client.profile(uri.peer, addr.clone(), request).await {
            Ok(response) => {
                fetched = Some((addr.clone(), response));
                break;
            }
            Err(e) => last_error = e.to_string(),
        }
    }
    let (addr, response) = fetched.ok_or_else(|| format!("no answer to the profile request: {last_error}"))?;
    answer.addr = Some(addr.clone());
    let signed = match response.result {
        Some(pb::profile_response::Result::Profile(signed)) => signed,
        Some(pb::profile_response::Result::Error(e)) => return Err(format!("it refused its profile: {}", e.message)),
        None => return Err("it sent an empty profile answer".into()),
    };
    let verified =
        profile::verify(&signed, uri, provider, network.chain_id, network.registry).map_err(|e| e.to_string())?;
    if let Some(region) = &options.region
        && !region.eq_ignore_ascii_case(&verified.region)
    {
        answer.elsewhere = true;
        return Ok(());
    }
    answer.profile = Some(verified);

    // Other fields (added by later protocol versions) keep their defaults.
    let request =
        pb::QuoteRequest { version: tpod_wire::VERSION, resources: Some(reservation.to_proto()), ..Default::default() };
    let started = Instant::now();
    let quote = client.quote(uri.peer, addr, request).await.map_err(|e| format!("no quote: {e}"))?;
    answer.latency_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    answer.quote = Some(quote.clone());
    if !quote.available {
        return Err(format!("it cannot take the reservation: {}", quote.reason));
    }
    let payment = quote.payment_contract.parse::<Address>().ok();
    if quote.chain_id != network.chain_id || payment != Some(network.payment) {
        return Err(format!(
            "it quotes for Payment {} on chain {}, not this network's {} on chain {}",
            quote.payment_contract, quote.chain_id, network.payment, network.chain_id
        ));
    }
    if quote.provider_address.parse::<Address>().ok() != Some(provider) {
        return Err(format!("it quotes payment to {}, not to its Registry account {provider}", quote.provider_address));
    }
    let pricing = quote.pricing.as_ref().ok_or("its quote has no prices")?;
    answer.quoted = Some(PriceTable::from_proto(pricing).map_err(|e| format!("its quoted prices are malformed: {e}"))?);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use alloy::primitives::U256;

    use super::*;

    #[test]
    fn the_first_differing_price_is_named_with_both_values() {
        let registered = PriceTable::from_rows([("cpu", "10", "3"), ("memory", "1", "0")]).unwrap();
        assert_eq!(price_difference(&registered, &registered), None);
        let mut quoted = registered;
        quoted.cpu.reservation = U256::from(12);
        quoted.memory.reservation = U256::from(2);
        assert_eq!(
            price_difference(&registered, &quoted).as_deref(),
            Some("cpu reservation 12 quoted vs 10 registered")
        );
        let mut quoted = registered;
        quoted.egress.usage = U256::from(1);
        assert_eq!(price_difference(&registered, &quoted).as_deref(), Some("egress usage 1 quoted vs 0 registered"));
    }
}
