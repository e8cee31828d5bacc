//! Candidates: which (provider, pricing table) pairs could run a reservation on this network,
//! and what each costs per hour, cheapest first.
//!
//! The cost is computed with [`tpod_billing::PriceTable`], the arithmetic the provider bills
//! with: the reservation's exact cost per second as a numerator over
//! [`tpod_billing::DENOMINATOR`], times 3600, divided once and rounded down. Only reservation
//! prices count: usage and traffic depend on what the pod does, not on what it reserves.
//!
//! Filters known from the chain apply here (the table's token must be the network's, `tee`
//! compares with the table's TEE type, `max_price` with the cost per hour). A provider's region
//! is in its signed profile only, which is fetched when probing: see [`crate::probe`].

use std::cmp::Ordering;

use alloy::primitives::{Address, U256};
use serde::{Deserialize, Serialize};
use tpod_billing::{DENOMINATOR, PriceTable, PricingError};
use tpod_chain::client::PricingTable;
use tpod_manifest::{Manifest, VolumeSource};
use tpod_wire::pb;

use crate::MarketState;

/// Bytes per GiB.
const GIB: u64 = 1 << 30;

/// What a pod reserves on a provider, the quantities reservation prices apply to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// CPU in millicores: the sum over the pod's containers.
    pub cpu_millis: u64,
    /// Memory in bytes: the sum over the pod's containers.
    pub memory_bytes: u64,
    /// Storage in bytes: the sizes of the pod's `filesystem` volumes.
    pub storage_bytes: u64,
}

impl Reservation {
    /// The yardstick prices are compared with when there is no manifest: 1 CPU and 1 GiB of
    /// memory, no storage (what one small service reserves, and easy to read per hour).
    pub const ONE_CPU_ONE_GIB: Self = Self { cpu_millis: 1000, memory_bytes: GIB, storage_bytes: 0 };

    /// What `manifest`'s pod reserves: its containers' CPU and memory, and its `filesystem` and
    /// sized `emptyDir` volumes (a secret is not reserved storage), once per replica it may
    /// scale up to (`replicas.max`): a provider keeps room for all of them, and this is also
    /// the most it bills while they all run. Saturates instead of wrapping; no provider holds
    /// 2^64 of anything.
    pub fn of_manifest(manifest: &Manifest) -> Self {
        let (cpu_millis, memory_bytes) = manifest.containers.iter().fold((0u64, 0u64), |(cpu, mem), c| {
            (cpu.saturating_add(c.resources.cpu_millis), mem.saturating_add(c.resources.memory_bytes))
        });
        let storage_bytes = manifest
            .volumes
            .iter()
            .filter_map(|v| match v.source {
                VolumeSource::Filesystem { size_bytes } => Some(size_bytes),
                // Without a size, the provider's default applies: unknown here.
                VolumeSource::EmptyDir { size_bytes } => size_bytes,
                VolumeSource::Secret { .. } => None,
            })
            .fold(0u64, u64::saturating_add);
        let replicas = u64::from(manifest.replicas.max.max(1));
        Self {
            cpu_millis: cpu_millis.saturating_mul(replicas),
            memory_bytes: memory_bytes.saturating_mul(replicas),
            storage_bytes: storage_bytes.saturating_mul(replicas),
        }
    }

    /// The resources to ask a quote for.
    pub fn to_proto(&self) -> pb::Resources {
        pb::Resources {
            cpu_millis: self.cpu_millis,
            memory_bytes: self.memory_bytes,
            gpu: 0,
            storage_bytes: self.storage_bytes,
            pids: 0,
        }
    }

    /// What holding this reservation for an hour costs at `prices`, in token base units,
    /// rounded down: exactly what billing charges for that hour.
    pub fn cost_per_hour(&self, prices: &PriceTable) -> Result<U256, PricingError> {
        let per_second =
            prices.reservation_numerator_per_second(self.cpu_millis, self.memory_bytes, self.storage_bytes)?;
        Ok(per_second.checked_mul(U256::from(3600u64)).ok_or(PricingError::Overflow)? / DENOMINATOR)
    }
}

/// A Registry table's prices in the billing form. Refuses tables billing cannot charge by
/// (unknown resources, prices for what is not metered).
pub fn billing_prices(table: &PricingTable) -> Result<PriceTable, PricingError> {
    let rows: Vec<(String, String, String)> =
        table.prices.iter().map(|p| (p.resource.clone(), p.reservation.to_string(), p.usage.to_string())).collect();
    PriceTable::from_rows(rows.iter().map(|(r, res, usage)| (r.as_str(), res.as_str(), usage.as_str())))
}

/// Filters that the chain alone can decide.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    /// Only tables of this TEE type (compared without regard to case), e.g. `sev-snp`.
    pub tee: Option<String>,
    /// Only candidates costing at most this much per hour for the reservation, in base units.
    pub max_price: Option<U256>,
}

/// One provider offering one pricing table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The provider's payment address (the Registry entry's owner).
    pub provider: Address,
    /// Its profile URI as set in the Registry (parsed when probing).
    pub profile_uri: String,
    /// The table's id.
    pub table_id: u64,
    /// The table as registered.
    pub table: PricingTable,
    /// Its prices in the billing form.
    pub prices: PriceTable,
    /// What the reservation costs per hour under this table, in base units.
    pub cost_per_hour: U256,
}

/// Every (provider, subscribed table) pair whose table is in `token` and passes `filters`, with
/// the cost of `reservation`, cheapest first, then by provider address and table id. Providers
/// without a profile and tables billing cannot read are left out (logged at debug level).
pub fn candidates(state: &MarketState, token: Address, reservation: &Reservation, filters: &Filters) -> Vec<Candidate> {
    let mut out = Vec::new();
    for (provider, entry) in &state.providers {
        if entry.profile_uri.is_empty() {
            continue;
        }
        for id in &entry.tables {
            let Some(table) = state.tables.get(id) else {
                tracing::debug!(%provider, table = id, "subscribed to a table the index does not know");
                continue;
            };
            if table.token != token {
                continue;
            }
            if filters.tee.as_deref().is_some_and(|tee| !tee.eq_ignore_ascii_case(&table.tee_type)) {
                continue;
            }
            let cost = billing_prices(table).and_then(|prices| Ok((reservation.cost_per_hour(&prices)?, prices)));
            let (cost_per_hour, prices) = match cost {
                Ok(found) => found,
                Err(e) => {
                    tracing::debug!(%provider, table = id, error = %e, "table left out");
                    continue;
                }
            };
            if filters.max_price.is_some_and(|max| cost_per_hour > max) {
                continue;
            }
            out.push(Candidate {
                provider: *provider,
                profile_uri: entry.profile_uri.clone(),
                table_id: *id,
                table: table.clone(),
                prices,
                cost_per_hour,
            });
        }
    }
    out.sort_by(cheapest_first);
    out
}

fn cheapest_first(a: &Candidate, b: &Candidate) -> Ordering {
    (a.cost_per_hour, a.provider, a.table_id).cmp(&(b.cost_per_hour, b.provider, b.table_id))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    use tpod_chain::client::ResourcePrice;

    use super::*;
    use crate::ProviderEntry;

    const TOKEN: Address = Address::repeat_byte(0xee);

    fn table(token: Address, tee: &str, cpu: u64, memory: u64) -> PricingTable {
        PricingTable {
            token,
            tee_type: tee.into(),
            cpu_model: String::new(),
            prices: vec![
                ResourcePrice { resource: "cpu".into(), reservation: U256::from(cpu), usage: U256::from(99) },
                ResourcePrice { resource: "memory".into(), reservation: U256::from(memory), usage: U256::ZERO },
            ],
        }
    }

    fn provider(uri: &str, tables: &[u64]) -> ProviderEntry {
        ProviderEntry { profile_uri: uri.into(), tables: tables.iter().copied().collect::<BTreeSet<_>>() }
    }

    fn market() -> MarketState {
        let mut broken = table(TOKEN, "tdx", 1, 1);
        broken.prices.push(ResourcePrice { resource: "gpu".into(), reservation: U256::from(1), usage: U256::ZERO });
        MarketState {
            tables: BTreeMap::from([
                (1, table(TOKEN, "simulated", 10, 1)),
                (2, table(TOKEN, "sev-snp", 5, 1)),
                (3, table(Address::repeat_byte(1), "sev-snp", 1, 1)),
                (4, broken),
                (5, table(TOKEN, "SEV-SNP", 5, 1)),
            ]),
            providers: BTreeMap::from([
                (Address::repeat_byte(0xb), provider("uri-b", &[1, 2, 3, 4])),
                (Address::repeat_byte(0xa), provider("uri-a", &[5, 9])),
                (Address::repeat_byte(0xc), provider("", &[2])),
            ]),
        }
    }

    #[test]
    fn cost_per_hour_is_what_billing_charges_for_an_hour() {
        let prices = billing_prices(&table(TOKEN, "x", 3, 7)).unwrap();
        // 1 CPU = 1000 millicores at 3 per millicore-second, 1 GiB = 1024 MiB at 7 per MiB-second.
        let expected = (1000 * 3 + 1024 * 7) * 3600;
        assert_eq!(Reservation::ONE_CPU_ONE_GIB.cost_per_hour(&prices).unwrap(), U256::from(expected));
        // Fractions of a MiB are billed exactly and rounded down once, over the hour.
        let half_mib = Reservation { cpu_millis: 0, memory_bytes: 512 * 1024, storage_bytes: 0 };
        assert_eq!(half_mib.cost_per_hour(&prices).unwrap(), U256::from(7 * 3600 / 2));
        let odd = Reservation { cpu_millis: 0, memory_bytes: 1, storage_bytes: 0 };
        assert_eq!(odd.cost_per_hour(&prices).unwrap(), U256::from(7u64 * 3600 / (1 << 20)));
    }

    #[test]
    fn candidates_are_in_the_token_cheapest_first_ties_by_address() {
        let found = candidates(&market(), TOKEN, &Reservation::ONE_CPU_ONE_GIB, &Filters::default());
        let order: Vec<_> = found.iter().map(|c| (c.provider, c.table_id)).collect();
        // Tables 2 and 5 cost the same: provider 0x0a… first. Table 3 is in another token,
        // table 4 prices a resource nobody meters, table 9 does not exist, 0x0c… has no profile.
        assert_eq!(
            order,
            [(Address::repeat_byte(0xa), 5), (Address::repeat_byte(0xb), 2), (Address::repeat_byte(0xb), 1)]
        );
        assert!(found[0].cost_per_hour < found[2].cost_per_hour);
        assert_eq!(found[0].profile_uri, "uri-a");
    }

    #[test]
    fn tee_and_max_price_filter() {
        let tee = Filters { tee: Some("sev-snp".into()), ..Filters::default() };
        let found = candidates(&market(), TOKEN, &Reservation::ONE_CPU_ONE_GIB, &tee);
        assert_eq!(found.iter().map(|c| c.table_id).collect::<Vec<_>>(), [5, 2]);

        let cheap = candidates(&market(), TOKEN, &Reservation::ONE_CPU_ONE_GIB, &Filters::default())[0].cost_per_hour;
        let max = Filters { max_price: Some(cheap), ..Filters::default() };
        let found = candidates(&market(), TOKEN, &Reservation::ONE_CPU_ONE_GIB, &max);
        assert_eq!(found.iter().map(|c| c.table_id).collect::<Vec<_>>(), [5, 2]);
        let below = Filters { max_price: Some(cheap - U256::from(1)), ..Filters::default() };
        assert!(candidates(&market(), TOKEN, &Reservation::ONE_CPU_ONE_GIB, &below).is_empty());
    }

    #[test]
    fn a_manifest_reserves_its_containers_and_filesystem_volumes() {
        let yaml = "\
name: shop
containers:
  - name: web
    image: ./image
    resources: { cpu: 500m, memory: 256Mi }
    volumeMounts: [{ name: data, mountPath: /data }, { name: tmp, mountPath: /tmp }]
  - name: worker
    image: ./image
    resources: { cpu: '1', memory: 1Gi }
volumes:
  - name: data
    filesystem: { size: 2Gi }
  - name: tmp
    emptyDir: {}
";
        let manifest = tpod_manifest::parse(yaml, Path::new("tpod.yaml")).unwrap();
        let r = Reservation::of_manifest(&manifest);
        assert_eq!(r, Reservation { cpu_millis: 1500, memory_bytes: (256 << 20) + GIB, storage_bytes: 2 * GIB });
        assert_eq!(r.to_proto().storage_bytes, 2 * GIB);
        // Room is kept for every replica it may scale to.
        let replicated =
            yaml.replace("filesystem: { size: 2Gi }", "emptyDir: { size: 2Gi }") + "replicas: {min: 1, max: 3}\n";
        let manifest = tpod_manifest::parse(&replicated, Path::new("tpod.yaml")).unwrap();
        let r = Reservation::of_manifest(&manifest);
        assert_eq!(r, Reservation { cpu_millis: 4500, memory_bytes: 3 * ((256 << 20) + GIB), storage_bytes: 6 * GIB });
    }
}
