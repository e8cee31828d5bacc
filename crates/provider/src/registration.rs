//! Listing in the Registry: the provider makes its Registry entry match its configuration and
//! serves the signed profile that entry points to.
//!
//! One reconcile ([`Registrar::reconcile`]) finds the pricing table the configuration offers
//! (reusing an identical registered one, since tables are immutable, or registering it), signs
//! the profile naming that table, puts it where `/tpod/profile/1` serves it, and only then sets
//! the profile URI on chain (so whoever reads the new URI finds the document), subscribes the
//! table and unsubscribes every other. Each step is skipped when the chain already says so, so a
//! reconcile with nothing to do sends no transaction.
//!
//! The daemon runs reconciles in a task of its own ([`Registrar::run`]): at start, then every
//! [`Schedule::repair`] to undo drift (another key's transaction, an entry removed by hand), and
//! with exponential backoff while the chain is unreachable or the account cannot pay gas. The
//! provider keeps serving meanwhile; it never stops over the Registry.
//!
//! A daemon started without the chain (`[chain] chain_id` and `token` set) gates the task on
//! [`crate::chaincheck`]: it waits until the chain answers and matches the configuration, and
//! sends nothing to a chain that does not.
//!
//! The configuration is read at start, so new prices, addresses or capacity take effect with a
//! restart, whose first reconcile registers the new table and profile and drops the old table.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::Provider as _;
use alloy::signers::local::PrivateKeySigner;
use prost::Message as _;
use tpod_billing::PriceTable;
use tpod_chain::client::{PricingTable, ResourcePrice};
use tpod_chain::{Chain, ChainError};
use tpod_net::{Multiaddr, PeerId};
use tpod_wire::pb;
use tracing::Instrument as _;

use crate::chaincheck::{ChainGate, ChainStatus};
use crate::config::Settings;

/// The signed profile the provider serves on `/tpod/profile/1`; `None` until the first reconcile
/// has signed one (or when the provider does not register).
pub type ProfileSlot = Arc<RwLock<Option<pb::SignedProfile>>>;

/// How often reconciles run and how failed ones are retried.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Between successful reconciles: how soon drift is repaired.
    pub repair: Duration,
    /// The first retry delay after a failure; it doubles with each further failure.
    pub first_retry: Duration,
    /// The longest retry delay.
    pub max_retry: Duration,
    /// Longest one reconcile may take before it counts as failed (a node that accepts
    /// connections but never answers).
    pub attempt_timeout: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            repair: Duration::from_secs(600),
            first_retry: Duration::from_secs(1),
            max_retry: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(300),
        }
    }
}

/// Why a reconcile or a deregistration failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// The chain refused, failed or could not be reached.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The profile could not be signed (it breaks the profile format's limits).
    #[error("cannot publish the profile: {0}")]
    Profile(#[from] tpod_market::ProfileError),
    /// A Registry answer that cannot be right (a table id past 64 bits).
    #[error("unexpected Registry answer: {0}")]
    Registry(String),
    /// The chain has not been checked against the configuration yet, or does not match it.
    #[error("not registering on a chain that does not match the configuration: {0}")]
    Unchecked(String),
    /// A reconcile took longer than [`Schedule::attempt_timeout`].
    #[error("the chain did not answer within {0:?}")]
    Timeout(Duration),
}

/// What the provider lists, fixed for the life of the process.
#[derive(Clone, Debug)]
pub struct Listing {
    /// JSON-RPC URL of the chain.
    pub rpc_url: String,
    /// The Payment contract (its token is the pricing table's token).
    pub payment: Address,
    /// The Registry contract.
    pub registry: Address,
    /// The libp2p peer that serves the profile.
    pub peer: PeerId,
    /// Where publishers dial it.
    pub multiaddrs: Vec<Multiaddr>,
    /// Region label.
    pub region: String,
    /// Operator contact; may be empty.
    pub contact: String,
    /// TEE type, as in the pricing table.
    pub tee_type: String,
    /// CPU model of the pricing table; may be empty.
    pub cpu_model: String,
    /// Capacity totals.
    pub capacity: pb::Resources,
    /// Least unclaimed funding of a channel.
    pub min_funding: U256,
    /// Least unlock delay of a channel, seconds.
    pub min_unlock_delay_secs: u32,
    /// The prices offered (and quoted).
    pub pricing: PriceTable,
    /// sha256 of the provider binary, the measurement attestation binds.
    pub binary_sha256: [u8; 32],
    /// The ingress domain.
    pub domain: String,
    /// Where the last signed profile is kept, so a restart with the same content keeps its URI.
    pub saved_profile: PathBuf,
}

impl Listing {
    /// The listing of a provider configured by `settings`, serving as `peer` on `bound` (the
    /// listen address actually bound, used when `[profile] public_addrs` is empty).
    pub fn new(settings: &Settings, peer: PeerId, bound: &Multiaddr, binary_sha256: [u8; 32]) -> Self {
        let c = &settings.config;
        // The configuration checked that each address parses.
        let public: Vec<Multiaddr> = c.profile.public_addrs.iter().filter_map(|a| a.parse().ok()).collect();
        Self {
            rpc_url: c.chain.rpc_url.clone(),
            payment: c.chain.payment,
            registry: c.chain.registry,
            peer,
            multiaddrs: if public.is_empty() { vec![bound.clone()] } else { public },
            region: c.profile.region.clone().unwrap_or_default(),
            contact: c.profile.contact.clone().unwrap_or_default(),
            tee_type: settings.tee_type.clone(),
            cpu_model: settings.cpu_model.clone(),
            capacity: pb::Resources {
                cpu_millis: settings.cpu_millis,
                memory_bytes: settings.memory_bytes,
                gpu: 0,
                storage_bytes: settings.storage_bytes,
                pids: 0,
            },
            min_funding: settings.min_funding,
            min_unlock_delay_secs: c.terms.min_unlock_delay_secs,
            pricing: settings.pricing,
            binary_sha256,
            domain: c.ingress.domain.clone(),
            saved_profile: c.data_dir.join("profile.pb"),
        }
    }

    /// The pricing table this listing offers, in `token`: every priced resource, zero prices
    /// included, so the table says as much as the quote does.
    pub fn table(&self, token: Address) -> PricingTable {
        let p = &self.pricing;
        PricingTable {
            token,
            tee_type: self.tee_type.clone(),
            cpu_model: self.cpu_model.clone(),
            prices: [p.cpu, p.memory, p.storage, p.ingress, p.egress]
                .into_iter()
                .zip(tpod_billing::RESOURCES)
                .map(|(price, resource)| ResourcePrice {
                    resource: resource.to_owned(),
                    reservation: price.reservation,
                    usage: price.usage,
                })
                .collect(),
        }
    }

    /// The profile offering `table`, without its issue time.
    fn profile(&self, chain_id: u64, account: Address, table: u64) -> pb::ProviderProfile {
        pb::ProviderProfile {
            version: tpod_wire::PROFILE_FORMAT_VERSION,
            chain_id,
            registry: self.registry.to_string(),
            payment_address: account.to_string(),
            peer_id: self.peer.to_string(),
            multiaddrs: self.multiaddrs.iter().map(ToString::to_string).collect(),
            region: self.region.clone(),
            contact: self.contact.clone(),
            tee: self.tee_type.clone(),
            capacity: Some(self.capacity),
            min_funding: self.min_funding.to_string(),
            min_unlock_delay_secs: self.min_unlock_delay_secs,
            pricing_tables: vec![table],
            provider_binary_sha256: self.binary_sha256.to_vec(),
            issued_at_unix: 0,
            domain: self.domain.clone(),
        }
    }
}

/// Whether two pricing tables offer the same thing: same token, TEE type, CPU model and the same
/// rows in any order.
pub fn same_table(a: &PricingTable, b: &PricingTable) -> bool {
    fn rows(t: &PricingTable) -> Vec<(&str, U256, U256)> {
        let mut rows: Vec<_> = t.prices.iter().map(|p| (p.resource.as_str(), p.reservation, p.usage)).collect();
        rows.sort();
        rows
    }
    a.token == b.token && a.tee_type == b.tee_type && a.cpu_model == b.cpu_model && rows(a) == rows(b)
}

/// What a reconcile changed on chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The pricing table offered.
    pub table: U256,
    /// Whether that table was registered by this reconcile (no identical one existed).
    pub registered_table: bool,
    /// Whether the profile URI was set.
    pub profile_set: bool,
    /// Whether the table was subscribed.
    pub subscribed: bool,
    /// Tables no longer offered, unsubscribed.
    pub unsubscribed: Vec<U256>,
    /// The profile URI now on chain.
    pub uri: String,
}

impl Outcome {
    /// Whether anything was sent.
    pub fn changed(&self) -> bool {
        self.registered_table || self.profile_set || self.subscribed || !self.unsubscribed.is_empty()
    }
}

/// A signed profile and what it was made from.
#[derive(Clone, Debug)]
struct Published {
    /// The profile with `issued_at_unix` zeroed: what decides whether a new one is needed.
    content: pb::ProviderProfile,
    issued_at: u64,
    signed: pb::SignedProfile,
    uri: String,
}

/// Keeps the provider's Registry entry matching its [`Listing`], remembering across attempts
/// what it learned (the chain connection, the matching table, how far the tables were searched).
pub struct Registrar {
    listing: Listing,
    account: PrivateKeySigner,
    slot: ProfileSlot,
    chain: Option<Chain>,
    /// The id of a registered table identical to the offered one.
    table: Option<U256>,
    /// Tables `1..=searched` were compared with the offered one (they never change).
    searched: u64,
    published: Option<Published>,
    /// When set, nothing is sent until this says the chain matches the configuration.
    gate: Option<ChainGate>,
}

impl Registrar {
    /// A registrar acting as `account`, serving its profile through `slot`. A profile saved by an
    /// earlier run is reused while its content stays the same, so its URI does too.
    pub fn new(listing: Listing, account: PrivateKeySigner, slot: ProfileSlot) -> Self {
        let published = load_saved(&listing.saved_profile);
        Self { listing, account, slot, chain: None, table: None, searched: 0, published, gate: None }
    }

    /// Makes reconciles wait for `gate` to say the chain matches the configuration.
    pub fn gated(mut self, gate: ChainGate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Reconciles now and then forever: see the module documentation. Never returns; abort the
    /// task to stop it.
    pub async fn run(mut self, schedule: Schedule) {
        let span = tracing::info_span!("registration", account = %self.account.address());
        async move {
            let mut retry = schedule.first_retry;
            loop {
                if let Some(gate) = &mut self.gate {
                    if *gate.borrow() != ChainStatus::Matches {
                        tracing::info!("waiting for the chain to answer and match the configuration");
                    }
                    // The check ended: the daemon is stopping.
                    if gate.wait_for(|s| *s == ChainStatus::Matches).await.is_err() {
                        return;
                    }
                }
                let attempt = tokio::time::timeout(schedule.attempt_timeout, self.reconcile()).await;
                let wait = match attempt.unwrap_or(Err(RegistrationError::Timeout(schedule.attempt_timeout))) {
                    Ok(outcome) => {
                        if outcome.changed() {
                            tracing::info!(
                                table = %outcome.table,
                                registered_table = outcome.registered_table,
                                profile_set = outcome.profile_set,
                                subscribed = outcome.subscribed,
                                unsubscribed = ?outcome.unsubscribed,
                                uri = %outcome.uri,
                                "Registry entry updated"
                            );
                        } else {
                            tracing::debug!(table = %outcome.table, "Registry entry up to date");
                        }
                        retry = schedule.first_retry;
                        schedule.repair
                    }
                    Err(error) => {
                        let wait = retry;
                        tracing::warn!(
                            %error,
                            retry_in_secs = wait.as_secs_f32(),
                            "cannot update the Registry entry; serving meanwhile"
                        );
                        retry = (retry * 2).min(schedule.max_retry);
                        wait
                    }
                };
                tokio::time::sleep(wait).await;
            }
        }
        .instrument(span)
        .await;
    }

    /// Makes the Registry entry match the listing once. See the module documentation.
    pub async fn reconcile(&mut self) -> Result<Outcome, RegistrationError> {
        if let Some(gate) = &self.gate {
            match &*gate.borrow() {
                ChainStatus::Matches => {}
                ChainStatus::Unchecked => return Err(RegistrationError::Unchecked("not checked yet".into())),
                ChainStatus::Mismatch(why) => return Err(RegistrationError::Unchecked(why.clone())),
            }
        }
        let chain = match &self.chain {
            Some(chain) => chain.clone(),
            None => {
                let l = &self.listing;
                let chain = Chain::connect_to_payment(&l.rpc_url, self.account.clone(), l.payment, l.registry).await?;
                self.chain = Some(chain.clone());
                chain
            }
        };
        let me = chain.account();
        let wanted = self.listing.table(chain.contracts().token);
        let subscribed = chain.subscriptions_of(me).await?;
        let mut outcome = Outcome::default();
        let mut gas_checked = false;

        let table = match self.find_table(&chain, &wanted, &subscribed).await? {
            Some(id) => id,
            None => {
                check_gas(&chain, &mut gas_checked).await?;
                let id = chain.register_pricing_table(&wanted).await?;
                tracing::info!(table = %id, "registered the pricing table");
                outcome.registered_table = true;
                id
            }
        };
        self.table = Some(table);
        outcome.table = table;

        let table_u64 = u64::try_from(table).map_err(|_| RegistrationError::Registry(format!("table id {table}")))?;
        let published = self.publish(&chain, table_u64).await?;
        outcome.uri = published.uri.clone();
        if chain.profile_of(me).await?.as_deref() != Some(published.uri.as_str()) {
            check_gas(&chain, &mut gas_checked).await?;
            chain.set_profile(&published.uri).await?;
            outcome.profile_set = true;
        }
        if !subscribed.contains(&table) {
            check_gas(&chain, &mut gas_checked).await?;
            chain.subscribe(table).await?;
            outcome.subscribed = true;
        }
        // New table first, old ones after: the provider is never listed with nothing to offer.
        for old in subscribed.into_iter().filter(|id| *id != table) {
            check_gas(&chain, &mut gas_checked).await?;
            chain.unsubscribe(old).await?;
            outcome.unsubscribed.push(old);
        }
        Ok(outcome)
    }

    /// A registered table identical to `wanted`: the one found before if it still is, one the
    /// provider offers already, or one of the tables not searched yet.
    async fn find_table(
        &mut self,
        chain: &Chain,
        wanted: &PricingTable,
        subscribed: &[U256],
    ) -> Result<Option<U256>, RegistrationError> {
        let count = chain.pricing_table_count().await?;
        let count = u64::try_from(count).map_err(|_| RegistrationError::Registry(format!("{count} tables")))?;
        if count < self.searched {
            // Fewer tables than before: another chain behind the same URL (a devnet restarted).
            self.searched = 0;
            self.table = None;
        }
        let candidates = self.table.iter().chain(subscribed).copied().filter(|id| *id <= U256::from(count));
        for id in candidates.collect::<Vec<_>>() {
            if same_table(&chain.pricing_table(id).await?, wanted) {
                return Ok(Some(id));
            }
        }
        // Tables never change, so each is read once per process.
        while self.searched < count {
            let id = U256::from(self.searched + 1);
            let table = chain.pricing_table(id).await?;
            self.searched += 1;
            if same_table(&table, wanted) {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// The signed profile offering `table`: the one published before if its content is the
    /// same, else a new one issued at the chain's latest block time. It is served from here on.
    async fn publish(&mut self, chain: &Chain, table: u64) -> Result<Published, RegistrationError> {
        let content = self.listing.profile(chain.chain_id(), chain.account(), table);
        let published = match &self.published {
            Some(p) if p.content == content => p.clone(),
            previous => {
                let now = latest_block_time(chain).await?;
                // A later profile has a later time, even within one block's second.
                let issued_at = previous.as_ref().map_or(now, |p| now.max(p.issued_at + 1));
                let profile = pb::ProviderProfile { issued_at_unix: issued_at, ..content.clone() };
                let (signed, uri) =
                    tpod_market::profile::sign(profile, &self.account, chain.chain_id(), self.listing.registry)?;
                let published = Published { content, issued_at, signed, uri: uri.to_string() };
                save(&self.listing.saved_profile, &published.signed);
                tracing::info!(uri = %published.uri, issued_at, "signed a new profile");
                published
            }
        };
        // Served before the URI naming it is set, so whoever reads the URI can fetch it.
        match self.slot.write() {
            Ok(mut slot) => *slot = Some(published.signed.clone()),
            Err(poisoned) => *poisoned.into_inner() = Some(published.signed.clone()),
        }
        self.published = Some(published.clone());
        Ok(published)
    }
}

/// Fails with [`ChainError::NoGasFunds`] before the first transaction of a reconcile when the
/// account has nothing to pay gas with, which says more than a refused estimate does.
async fn check_gas(chain: &Chain, checked: &mut bool) -> Result<(), ChainError> {
    if !*checked {
        if chain.native_balance(chain.account()).await?.is_zero() {
            return Err(ChainError::NoGasFunds { account: chain.account(), chain_id: chain.chain_id() });
        }
        *checked = true;
    }
    Ok(())
}

async fn latest_block_time(chain: &Chain) -> Result<u64, ChainError> {
    let block = chain
        .provider()
        .get_block_by_number(alloy::rpc::types::BlockNumberOrTag::Latest)
        .await
        .map_err(|e| ChainError::Rpc { call: "eth_getBlockByNumber", reason: e.to_string() })?
        .ok_or_else(|| ChainError::Rpc { call: "eth_getBlockByNumber", reason: "no latest block".into() })?;
    Ok(block.header.timestamp)
}

/// The profile saved by an earlier run, if it is readable; anything else starts afresh.
fn load_saved(path: &std::path::Path) -> Option<Published> {
    let bytes = std::fs::read(path).ok()?;
    let signed = pb::SignedProfile::decode(bytes.as_slice()).ok()?;
    let profile = pb::ProviderProfile::decode(signed.profile.as_slice()).ok()?;
    let sha256 = tpod_chain::profile::profile_hash(&signed.profile).0;
    let uri = tpod_market::ProfileUri {
        sha256,
        peer: profile.peer_id.parse().ok()?,
        addrs: profile.multiaddrs.iter().map(|a| a.parse()).collect::<Result<_, _>>().ok()?,
    };
    let issued_at = profile.issued_at_unix;
    Some(Published {
        content: pb::ProviderProfile { issued_at_unix: 0, ..profile },
        issued_at,
        signed,
        uri: uri.to_string(),
    })
}

/// Keeps `signed` for the next run. Losing it only costs a new issue time and a `setProfile`.
fn save(path: &std::path::Path, signed: &pb::SignedProfile) {
    let tmp = path.with_extension("pb.tmp");
    if let Err(error) = std::fs::write(&tmp, signed.encode_to_vec()).and_then(|()| std::fs::rename(&tmp, path)) {
        tracing::warn!(path = %path.display(), %error, "cannot save the signed profile");
    }
}

/// Starts keeping the provider's Registry entry in step with `settings`, in a task that runs
/// until aborted, gated on `gate` when given. The daemon calls this once it listens.
pub fn spawn(
    settings: &Settings,
    account: PrivateKeySigner,
    peer: PeerId,
    bound: &Multiaddr,
    binary_sha256: [u8; 32],
    slot: ProfileSlot,
    gate: Option<ChainGate>,
) -> tokio::task::JoinHandle<()> {
    let listing = Listing::new(settings, peer, bound, binary_sha256);
    let registrar = Registrar::new(listing, account, slot);
    let registrar = match gate {
        Some(gate) => registrar.gated(gate),
        None => registrar,
    };
    tokio::spawn(registrar.run(Schedule::default()))
}

/// What [`deregister`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deregistered {
    /// The account had no Registry entry; nothing was sent.
    NotRegistered,
    /// The entry was removed.
    Removed {
        /// The profile URI it had.
        uri: String,
        /// The tables it offered, now unsubscribed.
        tables: Vec<U256>,
    },
}

/// Removes `account`'s Registry entry (profile and subscriptions; the pricing tables stay, as
/// they are immutable and may be offered by others). An account with no entry is left alone.
pub async fn deregister(settings: &Settings, account: PrivateKeySigner) -> Result<Deregistered, RegistrationError> {
    let c = &settings.config.chain;
    let chain = Chain::connect_to_payment(&c.rpc_url, account, c.payment, c.registry).await?;
    let me = chain.account();
    let Some(uri) = chain.profile_of(me).await? else { return Ok(Deregistered::NotRegistered) };
    let tables = chain.subscriptions_of(me).await?;
    let mut checked = false;
    check_gas(&chain, &mut checked).await?;
    chain.remove_provider().await?;
    Ok(Deregistered::Removed { uri, tables })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn table(rows: &[(&str, u64, u64)]) -> PricingTable {
        PricingTable {
            token: Address::repeat_byte(1),
            tee_type: "simulated".into(),
            cpu_model: String::new(),
            prices: rows
                .iter()
                .map(|(r, res, use_)| ResourcePrice {
                    resource: (*r).into(),
                    reservation: U256::from(*res),
                    usage: U256::from(*use_),
                })
                .collect(),
        }
    }

    #[test]
    fn tables_compare_by_token_tee_cpu_and_rows_in_any_order() {
        let a = table(&[("cpu", 1, 2), ("memory", 3, 0)]);
        assert!(same_table(&a, &table(&[("memory", 3, 0), ("cpu", 1, 2)])));
        assert!(!same_table(&a, &table(&[("cpu", 1, 2), ("memory", 3, 1)])));
        assert!(!same_table(&a, &table(&[("cpu", 1, 2)])));
        assert!(!same_table(&a, &table(&[("cpu", 1, 2), ("memory", 3, 0), ("egress", 0, 0)])));
        assert!(!same_table(&a, &PricingTable { token: Address::repeat_byte(2), ..a.clone() }));
        assert!(!same_table(&a, &PricingTable { tee_type: "tdx".into(), ..a.clone() }));
        assert!(!same_table(&a, &PricingTable { cpu_model: "EPYC".into(), ..a.clone() }));
    }

    #[test]
    fn a_saved_profile_reloads_with_its_uri_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("profile.pb");
        let key = PrivateKeySigner::random();
        let peer = tpod_net::generate_keypair().public().to_peer_id();
        let profile = pb::ProviderProfile {
            version: tpod_wire::PROFILE_FORMAT_VERSION,
            chain_id: 31337,
            registry: Address::repeat_byte(9).to_string(),
            payment_address: key.address().to_string(),
            peer_id: peer.to_string(),
            multiaddrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            region: "eu".into(),
            provider_binary_sha256: vec![7; 32],
            issued_at_unix: 1234,
            ..Default::default()
        };
        let (signed, uri) = tpod_market::profile::sign(profile.clone(), &key, 31337, Address::repeat_byte(9)).unwrap();
        save(&path, &signed);
        let loaded = load_saved(&path).unwrap();
        assert_eq!(loaded.uri, uri.to_string());
        assert_eq!(loaded.issued_at, 1234);
        assert_eq!(loaded.content, pb::ProviderProfile { issued_at_unix: 0, ..profile });
        std::fs::write(&path, b"junk").unwrap();
        assert!(load_saved(&path).is_none());
    }
}
