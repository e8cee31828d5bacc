//! The market as the Registry's events describe it: every pricing table, and every provider with
//! its profile URI and the tables it offers, rebuilt from logs alone.
//!
//! [`Scanner::sync`] reads `PricingTableRegistered`, `ProviderProfileSet`, `ProviderRemoved`,
//! `Subscribed` and `Unsubscribed` with `eth_getLogs`, one block range per query (50,000 blocks
//! by default), halving the range and asking again when the node refuses a query (public RPCs
//! cap ranges and result counts, each with its own message). It starts at the Registry's
//! deployment block when the caller knows it, else at block 0.
//!
//! With a cache file, the state is kept as of the last *confirmed* block (the head minus 12
//! blocks by default) together with that block's hash, and the next run reads only the blocks
//! after it: the unconfirmed tail is read again every time and applied to a copy, never saved,
//! so a reorganisation of up to that depth cannot leave an orphaned event behind. A cache for
//! another chain or Registry, of another format, or whose confirmed block the chain no longer
//! has (a reset devnet, a deeper reorganisation) is ignored and the market rebuilt.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{Filter, Log};
use alloy::sol_types::{SolEvent, SolEventInterface};
use alloy::transports::RpcError;
use serde::{Deserialize, Serialize};
use tpod_chain::client::{PricingTable, ResourcePrice};
use tpod_chain::contracts::Registry::{self, RegistryEvents};

use crate::MarketError;

/// Blocks per `eth_getLogs` query, before any halving.
pub const DEFAULT_MAX_RANGE: u64 = 50_000;
/// Blocks below the head that are read again on every run and never cached.
pub const DEFAULT_CONFIRMATIONS: u64 = 12;
/// The cache file's format; another is ignored.
const CACHE_FORMAT: u32 = 1;

/// A provider in the Registry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderEntry {
    /// The profile URI it set (see [`crate::ProfileUri`]); empty if it has none.
    pub profile_uri: String,
    /// The pricing tables it offers.
    pub tables: BTreeSet<u64>,
}

/// Everything the Registry's events say.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketState {
    /// Pricing tables by id (immutable once registered).
    pub tables: BTreeMap<u64, PricingTable>,
    /// Registered providers by payment address.
    pub providers: BTreeMap<Address, ProviderEntry>,
}

impl MarketState {
    /// Applies one Registry event. Every event sets values outright (a profile, a membership, a
    /// removal), so applying the same event twice leaves the same state.
    pub fn apply(&mut self, event: &RegistryEvents) {
        match event {
            RegistryEvents::PricingTableRegistered(e) => {
                let Some(id) = table_id(e.tableId) else { return };
                let prices = e
                    .prices
                    .iter()
                    .map(|p| ResourcePrice { resource: p.resource.clone(), reservation: p.reservation, usage: p.usage })
                    .collect();
                let table =
                    PricingTable { token: e.token, tee_type: e.teeType.clone(), cpu_model: e.cpuModel.clone(), prices };
                self.tables.insert(id, table);
            }
            RegistryEvents::ProviderProfileSet(e) => {
                self.providers.entry(e.provider).or_default().profile_uri.clone_from(&e.profileUri);
            }
            RegistryEvents::ProviderRemoved(e) => {
                self.providers.remove(&e.provider);
            }
            RegistryEvents::Subscribed(e) => {
                if let Some(id) = table_id(e.tableId) {
                    self.providers.entry(e.provider).or_default().tables.insert(id);
                }
            }
            RegistryEvents::Unsubscribed(e) => {
                if let (Some(id), Some(entry)) = (table_id(e.tableId), self.providers.get_mut(&e.provider)) {
                    entry.tables.remove(&id);
                }
            }
        }
    }
}

/// Table ids count up from 1; one beyond `u64` cannot be registered in any real chain's life.
fn table_id(id: U256) -> Option<u64> {
    let id = u64::try_from(id).ok();
    if id.is_none() {
        tracing::warn!("ignoring a Registry event with a table id beyond u64");
    }
    id
}

/// How a sync used the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheUse {
    /// No cache file was given.
    Off,
    /// The market was rebuilt from the start block; why the cache was not used.
    Cold(String),
    /// The cache held the market up to `confirmed_block`; only later blocks were read.
    Warm {
        /// The last block the cache covered.
        confirmed_block: u64,
    },
}

/// What a sync read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncReport {
    /// The first and last block read (`from > to` when there was nothing new).
    pub from_block: u64,
    /// The chain head at the time.
    pub to_block: u64,
    /// `eth_getLogs` queries sent, refused ones included.
    pub queries: u32,
    /// Registry events read.
    pub events: usize,
    /// How the cache was used.
    pub cache: CacheUse,
    /// Why the cache could not be written, if it could not (the result is still good).
    pub cache_write_error: Option<String>,
}

/// The cache file's content.
#[derive(Serialize, Deserialize)]
struct CacheFile {
    format: u32,
    chain_id: u64,
    registry: Address,
    /// The last block `state` covers, and its hash.
    confirmed_block: u64,
    confirmed_hash: B256,
    state: MarketState,
}

/// The cache file for a chain and Registry in `dir`.
pub fn cache_path(dir: &Path, chain_id: u64, registry: Address) -> PathBuf {
    dir.join(format!("market-{chain_id}-{registry:#x}.json"))
}

/// Reads the Registry's events of one chain into a [`MarketState`].
#[derive(Clone, Debug)]
pub struct Scanner {
    provider: DynProvider,
    chain_id: u64,
    registry: Address,
    start_block: u64,
    max_range: u64,
    confirmations: u64,
    cache: Option<PathBuf>,
}

impl Scanner {
    /// A scanner of `registry` on chain `chain_id` through `provider`, from block 0, without a
    /// cache.
    pub fn new(provider: DynProvider, chain_id: u64, registry: Address) -> Self {
        Self {
            provider,
            chain_id,
            registry,
            start_block: 0,
            max_range: DEFAULT_MAX_RANGE,
            confirmations: DEFAULT_CONFIRMATIONS,
            cache: None,
        }
    }

    /// Starts at the Registry's deployment block (nothing before it concerns the Registry).
    pub fn start_block(mut self, block: u64) -> Self {
        self.start_block = block;
        self
    }

    /// Blocks per query before any halving (at least 1).
    pub fn max_range(mut self, blocks: u64) -> Self {
        self.max_range = blocks.max(1);
        self
    }

    /// How many blocks below the head are read again every run rather than cached.
    pub fn confirmations(mut self, blocks: u64) -> Self {
        self.confirmations = blocks;
        self
    }

    /// Keeps the market in `file` (see [`cache_path`]) and reads only new blocks next time.
    pub fn cache_file(mut self, file: PathBuf) -> Self {
        self.cache = Some(file);
        self
    }

    /// Brings the market up to the chain head.
    #[tracing::instrument(skip(self), fields(chain_id = self.chain_id, registry = %self.registry))]
    pub async fn sync(&self) -> Result<(MarketState, SyncReport), MarketError> {
        let head = self.provider.get_block_number().await.map_err(rpc("eth_blockNumber"))?;
        let (mut confirmed, from, cache) = match self.load_cache(head).await {
            Ok(file) => {
                let used = CacheUse::Warm { confirmed_block: file.confirmed_block };
                (file.state, file.confirmed_block + 1, used)
            }
            Err(reason) => (MarketState::default(), self.start_block, reason),
        };
        let mut report =
            SyncReport { from_block: from, to_block: head, queries: 0, events: 0, cache, cache_write_error: None };
        let logs = self.logs(from, head, &mut report).await?;
        report.events = logs.len();

        // Events at or below `safe` go into the state that is cached; the rest into a copy.
        let safe = head.checked_sub(self.confirmations).filter(|safe| *safe >= from);
        let split = safe.map_or(0, |safe| logs.partition_point(|(block, _)| *block <= safe));
        for (_, event) in &logs[..split] {
            confirmed.apply(event);
        }
        if let (Some(safe), Some(path)) = (safe, &self.cache)
            && let Err(e) = self.save_cache(path, safe, &confirmed).await
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the market cache");
            report.cache_write_error = Some(e.to_string());
        }
        let mut state = confirmed;
        for (_, event) in &logs[split..] {
            state.apply(event);
        }
        tracing::debug!(?report, providers = state.providers.len(), tables = state.tables.len(), "market synced");
        Ok((state, report))
    }

    /// The decoded Registry events of blocks `from..=to`, with their block numbers, in chain
    /// order.
    async fn logs(
        &self,
        from: u64,
        to: u64,
        report: &mut SyncReport,
    ) -> Result<Vec<(u64, RegistryEvents)>, MarketError> {
        let filter = Filter::new().address(self.registry).event_signature(vec![
            Registry::PricingTableRegistered::SIGNATURE_HASH,
            Registry::ProviderProfileSet::SIGNATURE_HASH,
            Registry::ProviderRemoved::SIGNATURE_HASH,
            Registry::Subscribed::SIGNATURE_HASH,
            Registry::Unsubscribed::SIGNATURE_HASH,
        ]);
        let mut events = Vec::new();
        let mut range = self.max_range;
        let mut next = from;
        while next <= to {
            let end = to.min(next.saturating_add(range - 1));
            report.queries += 1;
            match self.provider.get_logs(&filter.clone().from_block(next).to_block(end)).await {
                Ok(logs) => {
                    for log in logs {
                        events.push(decode(&log)?);
                    }
                    next = end + 1;
                }
                // Nodes refuse wide ranges and large results with an error answer, each in its
                // own words: any refusal gets a narrower range, until one block is refused.
                Err(RpcError::ErrorResp(e)) if range > 1 => {
                    range = (range / 2).max(1);
                    tracing::debug!(from = next, range, refusal = %e.message, "eth_getLogs refused; narrowing the range");
                }
                Err(e) => return Err(rpc("eth_getLogs")(e)),
            }
        }
        Ok(events)
    }

    /// The cached market, or why there is none to use.
    async fn load_cache(&self, head: u64) -> Result<CacheFile, CacheUse> {
        let Some(path) = &self.cache else { return Err(CacheUse::Off) };
        let cold = |why: String| CacheUse::Cold(why);
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(cold("no cache yet".into())),
            Err(e) => return Err(cold(format!("cannot read {}: {e}", path.display()))),
        };
        let file: CacheFile = serde_json::from_slice(&text)
            .map_err(|e| cold(format!("{} is not a market cache: {e}", path.display())))?;
        if file.format != CACHE_FORMAT || file.chain_id != self.chain_id || file.registry != self.registry {
            return Err(cold(format!(
                "the cache is for chain {} Registry {} (format {}), not chain {} Registry {}",
                file.chain_id, file.registry, file.format, self.chain_id, self.registry
            )));
        }
        if file.confirmed_block > head || file.confirmed_block < self.start_block {
            return Err(cold(format!("the cache covers up to block {}, the chain has {head}", file.confirmed_block)));
        }
        match self.block_hash(file.confirmed_block).await {
            Ok(Some(hash)) if hash == file.confirmed_hash => Ok(file),
            Ok(_) => Err(cold(format!("block {} is not the one the cache was made at", file.confirmed_block))),
            Err(e) => Err(cold(format!("cannot check the cache's block: {e}"))),
        }
    }

    async fn block_hash(&self, number: u64) -> Result<Option<B256>, MarketError> {
        let block = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Number(number))
            .await
            .map_err(rpc("eth_getBlockByNumber"))?;
        Ok(block.map(|b| b.header.hash))
    }

    /// Writes the cache atomically (temporary file, then rename), readable by the owner only.
    async fn save_cache(&self, path: &Path, block: u64, state: &MarketState) -> Result<(), MarketError> {
        let hash = self.block_hash(block).await?.ok_or_else(|| MarketError::Rpc {
            call: "eth_getBlockByNumber",
            reason: format!("the node does not have block {block}"),
        })?;
        let file = CacheFile {
            format: CACHE_FORMAT,
            chain_id: self.chain_id,
            registry: self.registry,
            confirmed_block: block,
            confirmed_hash: hash,
            state: state.clone(),
        };
        let io = |e: std::io::Error| MarketError::Cache { path: path.to_owned(), reason: e.to_string() };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        }
        let text = serde_json::to_vec(&file).map_err(|e| io(e.into()))?;
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut f =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
        f.write_all(&text).and_then(|()| f.sync_all()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

fn decode(log: &Log) -> Result<(u64, RegistryEvents), MarketError> {
    let block = log.block_number.ok_or_else(|| MarketError::Rpc {
        call: "eth_getLogs",
        reason: "a log without a block number (pending?)".into(),
    })?;
    let event = RegistryEvents::decode_log(&log.inner).map_err(|e| MarketError::Rpc {
        call: "eth_getLogs",
        reason: format!("a Registry log in block {block} does not decode: {e}"),
    })?;
    Ok((block, event.data))
}

fn rpc<E: std::fmt::Display>(call: &'static str) -> impl Fn(E) -> MarketError {
    move |e| MarketError::Rpc { call, reason: e.to_string() }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use alloy::providers::ProviderBuilder;
    use alloy::transports::mock::Asserter;

    use super::*;

    fn event(provider: Address, table: u64, subscribe: bool) -> RegistryEvents {
        if subscribe {
            RegistryEvents::Subscribed(Registry::Subscribed { provider, tableId: U256::from(table) })
        } else {
            RegistryEvents::Unsubscribed(Registry::Unsubscribed { provider, tableId: U256::from(table) })
        }
    }

    #[test]
    fn events_set_values_so_applying_twice_changes_nothing() {
        let p = Address::repeat_byte(1);
        let events = [
            RegistryEvents::ProviderProfileSet(Registry::ProviderProfileSet { provider: p, profileUri: "a".into() }),
            event(p, 1, true),
            event(p, 2, true),
            event(p, 1, false),
            RegistryEvents::ProviderProfileSet(Registry::ProviderProfileSet { provider: p, profileUri: "b".into() }),
        ];
        let mut once = MarketState::default();
        events.iter().for_each(|e| once.apply(e));
        assert_eq!(once.providers[&p], ProviderEntry { profile_uri: "b".into(), tables: BTreeSet::from([2]) });
        let mut twice = once.clone();
        events.iter().for_each(|e| twice.apply(e));
        assert_eq!(twice, once);
        twice.apply(&RegistryEvents::ProviderRemoved(Registry::ProviderRemoved { provider: p }));
        assert!(twice.providers.is_empty());
    }

    #[tokio::test]
    async fn a_refused_range_is_halved_until_the_node_answers() {
        let asserter = Asserter::new();
        let provider = ProviderBuilder::new().connect_mocked_client(asserter.clone()).erased();
        let scanner = Scanner::new(provider, 1, Address::repeat_byte(9)).max_range(1000).confirmations(0);
        let mut report = SyncReport {
            from_block: 0,
            to_block: 0,
            queries: 0,
            events: 0,
            cache: CacheUse::Off,
            cache_write_error: None,
        };
        // 0..=999 refused twice (two messages nodes really send), 0..=249 answered, then the
        // rest at 250 blocks a query: 250..=499, 500..=749, 750..=999, 1000..=1100.
        asserter.push_failure_msg("query returned more than 10000 results");
        asserter.push_failure_msg("block range is too wide");
        for _ in 0..5 {
            asserter.push_success(&Vec::<Log>::new());
        }
        let events = scanner.logs(0, 1100, &mut report).await.unwrap();
        assert!(events.is_empty());
        assert_eq!(report.queries, 7);
        assert!(asserter.read_q().is_empty());

        // A single block that is still refused is an error, not a loop.
        let scanner = scanner.max_range(1);
        asserter.push_failure_msg("limit exceeded");
        let err = scanner.logs(5, 5, &mut report).await.unwrap_err();
        assert!(err.to_string().contains("limit exceeded"), "{err}");
    }
}
