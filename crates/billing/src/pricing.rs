//! A provider's prices and the exact cost of usage.
//!
//! Units, per resource (prices are token base units):
//!
//! | resource  | reservation price per        | usage price per                          |
//! |-----------|------------------------------|------------------------------------------|
//! | `cpu`     | millicore-second reserved    | millicore-second of CPU time (1 CPU-s = 1000) |
//! | `memory`  | MiB-second reserved          | MiB-second in use                        |
//! | `storage` | MiB-second reserved          | — (must be 0)                            |
//! | `ingress` | — (must be 0)                | MiB carried to the pod                   |
//! | `egress`  | — (must be 0)                | MiB carried from the pod                 |
//!
//! Costs are computed as a numerator over [`DENOMINATOR`] (MiB × ns), in which every product of
//! a [`Usage`] counter and a price is an exact integer; the amount owed is the numerator divided
//! once, rounding down.

use alloy::primitives::{B256, U256};
use alloy::sol_types::SolStruct;
use serde::{Deserialize, Serialize};
use tpod_wire::pb;

use crate::Usage;
use crate::dec::parse_u256;

/// Bytes per MiB.
const MIB: u64 = 1 << 20;
/// Nanoseconds per second.
const NS: u64 = 1_000_000_000;

/// The common denominator of cost numerators: one MiB-nanosecond.
pub const DENOMINATOR: U256 = U256::from_limbs([MIB * NS, 0, 0, 0]);

/// The resources a table prices, in table order.
pub const RESOURCES: [&str; 5] = ["cpu", "memory", "storage", "ingress", "egress"];

/// Why a pricing table was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    /// A row names a resource nobody meters.
    #[error("unknown resource {0:?}; priced resources are cpu, memory, storage, ingress and egress")]
    UnknownResource(String),
    /// Two rows name one resource.
    #[error("resource {0:?} is priced twice")]
    Duplicate(String),
    /// A price is not a decimal amount.
    #[error("{resource}.{kind}: {reason}")]
    InvalidPrice {
        /// The resource.
        resource: String,
        /// `reservation` or `usage`.
        kind: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A price is given for something that is not metered.
    #[error("{resource} has no {kind} price ({why}); set it to 0")]
    NotMetered {
        /// The resource.
        resource: String,
        /// `reservation` or `usage`.
        kind: &'static str,
        /// Why.
        why: &'static str,
    },
    /// A cost does not fit in 256 bits.
    #[error("cost overflows 256 bits")]
    Overflow,
}

/// Prices of one resource.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Price {
    /// Per unit reserved, per second.
    pub reservation: U256,
    /// Per unit used (per second, or per MiB for traffic).
    pub usage: U256,
}

/// A provider's prices, fixed into a pod's terms at deploy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "Vec<PriceRow>", try_from = "Vec<PriceRow>")]
pub struct PriceTable {
    /// Per millicore.
    pub cpu: Price,
    /// Per MiB.
    pub memory: Price,
    /// Per MiB.
    pub storage: Price,
    /// Per MiB.
    pub ingress: Price,
    /// Per MiB.
    pub egress: Price,
}

/// One row as configured and serialized: amounts as decimal strings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceRow {
    /// The resource.
    pub resource: String,
    /// Reservation price (decimal).
    pub reservation: String,
    /// Usage price (decimal).
    pub usage: String,
}

alloy::sol! {
    /// The EIP-712 form of a price table, hashed into usage reports.
    struct Pricing {
        uint256 cpuReservation;
        uint256 cpuUsage;
        uint256 memoryReservation;
        uint256 memoryUsage;
        uint256 storageReservation;
        uint256 ingressUsage;
        uint256 egressUsage;
    }
}

impl PriceTable {
    /// Builds a table from `(resource, reservation, usage)` rows; a resource without a row is
    /// free. Refuses unknown or repeated resources, bad amounts and prices of unmetered things.
    pub fn from_rows<'a>(rows: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) -> Result<Self, PricingError> {
        let mut table = Self::default();
        let mut seen = Vec::new();
        for (resource, reservation, usage) in rows {
            if seen.contains(&resource) {
                return Err(PricingError::Duplicate(resource.to_owned()));
            }
            seen.push(resource);
            let amount = |kind: &'static str, text: &str| {
                parse_u256(text.trim()).map_err(|reason| PricingError::InvalidPrice {
                    resource: resource.to_owned(),
                    kind,
                    reason,
                })
            };
            let price = Price { reservation: amount("reservation", reservation)?, usage: amount("usage", usage)? };
            let not_metered = |kind, why| Err(PricingError::NotMetered { resource: resource.to_owned(), kind, why });
            match resource {
                "cpu" => table.cpu = price,
                "memory" => table.memory = price,
                "storage" if !price.usage.is_zero() => {
                    return not_metered("usage", "only reserved storage is metered");
                }
                "storage" => table.storage = price,
                "ingress" | "egress" if !price.reservation.is_zero() => {
                    return not_metered("reservation", "traffic is priced per MiB carried");
                }
                "ingress" => table.ingress = price,
                "egress" => table.egress = price,
                other => return Err(PricingError::UnknownResource(other.to_owned())),
            }
        }
        Ok(table)
    }

    /// The rows, one per resource in [`RESOURCES`] order.
    pub fn rows(&self) -> Vec<PriceRow> {
        [self.cpu, self.memory, self.storage, self.ingress, self.egress]
            .iter()
            .zip(RESOURCES)
            .map(|(p, resource)| PriceRow {
                resource: resource.to_owned(),
                reservation: p.reservation.to_string(),
                usage: p.usage.to_string(),
            })
            .collect()
    }

    /// The cost of `usage` at these prices, times [`DENOMINATOR`]; exact.
    pub fn numerator(&self, usage: &Usage) -> Result<U256, PricingError> {
        let mib = U256::from(MIB);
        let ns = U256::from(NS);
        // Each term's factor scales its counter's unit to MiB × ns of the denominator.
        let terms = [
            (usage.cpu_reserved, self.cpu.reservation, mib),
            (usage.cpu_used, self.cpu.usage, mib * U256::from(1000u64)),
            (usage.memory_reserved, self.memory.reservation, U256::from(1u64)),
            (usage.memory_used, self.memory.usage, U256::from(1u64)),
            (usage.storage_reserved, self.storage.reservation, U256::from(1u64)),
            (usage.ingress, self.ingress.usage, ns),
            (usage.egress, self.egress.usage, ns),
        ];
        terms.iter().try_fold(U256::ZERO, |sum, &(quantity, price, factor)| {
            U256::from(quantity)
                .checked_mul(price)
                .and_then(|v| v.checked_mul(factor))
                .and_then(|v| sum.checked_add(v))
                .ok_or(PricingError::Overflow)
        })
    }

    /// What holding a reservation costs per second, times [`DENOMINATOR`].
    pub fn reservation_numerator_per_second(
        &self,
        cpu_millis: u64,
        memory_bytes: u64,
        storage_bytes: u64,
    ) -> Result<U256, PricingError> {
        self.numerator(&Usage::interval((cpu_millis, memory_bytes, storage_bytes), NS, true, 0, 0, (0, 0)))
    }

    /// The table's EIP-712 struct hash.
    pub fn digest(&self) -> B256 {
        Pricing {
            cpuReservation: self.cpu.reservation,
            cpuUsage: self.cpu.usage,
            memoryReservation: self.memory.reservation,
            memoryUsage: self.memory.usage,
            storageReservation: self.storage.reservation,
            ingressUsage: self.ingress.usage,
            egressUsage: self.egress.usage,
        }
        .eip712_hash_struct()
    }

    /// The wire form, with the token and TEE kind the provider offers.
    pub fn to_proto(&self, token: &str, tee_type: &str) -> pb::PricingTable {
        pb::PricingTable {
            prices: self
                .rows()
                .into_iter()
                .map(|r| pb::ResourcePrice { resource: r.resource, reservation: r.reservation, usage: r.usage })
                .collect(),
            token: token.to_owned(),
            tee_type: tee_type.to_owned(),
            cpu_model: String::new(),
        }
    }

    /// Reads the wire form's prices.
    pub fn from_proto(table: &pb::PricingTable) -> Result<Self, PricingError> {
        Self::from_rows(table.prices.iter().map(|p| (p.resource.as_str(), p.reservation.as_str(), p.usage.as_str())))
    }
}

impl From<PriceTable> for Vec<PriceRow> {
    fn from(table: PriceTable) -> Self {
        table.rows()
    }
}

impl TryFrom<Vec<PriceRow>> for PriceTable {
    type Error = PricingError;

    fn try_from(rows: Vec<PriceRow>) -> Result<Self, Self::Error> {
        Self::from_rows(rows.iter().map(|r| (r.resource.as_str(), r.reservation.as_str(), r.usage.as_str())))
    }
}

impl std::fmt::Display for PriceTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rows = self.rows();
        let parts: Vec<String> = rows
            .iter()
            .filter(|r| r.reservation != "0" || r.usage != "0")
            .map(|r| format!("{} {}/{}", r.resource, r.reservation, r.usage))
            .collect();
        if parts.is_empty() { write!(f, "free") } else { write!(f, "{} (reserved/used)", parts.join(", ")) }
    }
}

/// Rounds a numerator down to whole base units.
pub(crate) fn floor_amount(numerator: U256) -> U256 {
    numerator / DENOMINATOR
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> PriceTable {
        PriceTable::from_rows([
            ("cpu", "1000", "3"),
            ("memory", "7", "0"),
            ("storage", "1", "0"),
            ("ingress", "0", "5"),
            ("egress", "0", "11"),
        ])
        .unwrap_or_default()
    }

    #[test]
    fn units_match_the_documented_prices() -> Result<(), PricingError> {
        let t = table();
        let second = |u: Usage| t.numerator(&u).map(floor_amount);
        // 250 millicores reserved for 4 s at 1000 per millicore-second.
        assert_eq!(second(Usage::interval((250, 0, 0), 4 * NS, true, 0, 0, (0, 0)))?, U256::from(1_000_000u64));
        // 2 CPU-seconds used = 2000 millicore-seconds at 3.
        assert_eq!(second(Usage { cpu_used: 2 * u128::from(NS), ..Default::default() })?, U256::from(6000u64));
        // 3 MiB reserved for 10 s at 7 per MiB-second; storage 1 GiB for 1 s at 1.
        assert_eq!(second(Usage::interval((0, 3 * MIB, 0), 10 * NS, true, 0, 0, (0, 0)))?, U256::from(210u64));
        assert_eq!(second(Usage::interval((0, 0, 1024 * MIB), NS, false, 0, 0, (0, 0)))?, U256::from(1024u64));
        // 2 MiB in, 1 MiB out.
        assert_eq!(second(Usage::interval((0, 0, 0), 0, true, 0, 0, (2 * MIB, MIB)))?, U256::from(21u64));
        Ok(())
    }

    #[test]
    fn bad_tables_are_refused_with_the_reason() {
        let err = |rows: Vec<(&str, &str, &str)>| PriceTable::from_rows(rows).err().map(|e| e.to_string());
        assert_eq!(err(vec![("gpu", "1", "1")]), Some(PricingError::UnknownResource("gpu".into()).to_string()));
        assert_eq!(err(vec![("cpu", "1", "1"), ("cpu", "1", "1")]), Some("resource \"cpu\" is priced twice".into()));
        assert!(err(vec![("cpu", "-1", "1")]).is_some_and(|m| m.starts_with("cpu.reservation: ")));
        assert!(err(vec![("storage", "1", "1")]).is_some_and(|m| m.contains("only reserved storage")));
        assert!(err(vec![("egress", "1", "1")]).is_some_and(|m| m.contains("per MiB carried")));
    }

    #[test]
    fn serde_and_proto_round_trip_and_digest_binds_every_price() -> Result<(), PricingError> {
        let t = table();
        let json = serde_json::to_string(&t).unwrap_or_default();
        assert_eq!(serde_json::from_str::<PriceTable>(&json).ok(), Some(t));
        assert_eq!(PriceTable::from_proto(&t.to_proto("0x00", "simulated"))?, t);
        let mut seen = vec![t.digest()];
        for field in 0..7 {
            let mut other = t;
            let slot = match field {
                0 => &mut other.cpu.reservation,
                1 => &mut other.cpu.usage,
                2 => &mut other.memory.reservation,
                3 => &mut other.memory.usage,
                4 => &mut other.storage.reservation,
                5 => &mut other.ingress.usage,
                _ => &mut other.egress.usage,
            };
            *slot += U256::from(1u64);
            assert!(!seen.contains(&other.digest()), "price {field} is not bound by the digest");
            seen.push(other.digest());
        }
        Ok(())
    }

    #[test]
    fn overflow_is_reported() {
        let t = PriceTable { cpu: Price { reservation: U256::MAX, usage: U256::ZERO }, ..Default::default() };
        assert_eq!(t.numerator(&Usage { cpu_reserved: 2, ..Default::default() }), Err(PricingError::Overflow));
    }
}
