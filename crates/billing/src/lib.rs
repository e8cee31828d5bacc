//! Billing: what a pod used, what that costs, and the usage report an enclave signs to be paid.
//!
//! - [`Usage`] holds cumulative metered quantities in fine units (nanosecond-based), so per-second
//!   samples add up without rounding.
//! - [`PriceTable`] is a provider's prices per resource, reserved and used, in token base units.
//! - [`Ledger`] accumulates usage and its cost as an exact integer numerator over one fixed
//!   [`DENOMINATOR`]: the cost of usage recorded over any number of intervals equals the cost of
//!   the total, to the base unit. A pricing change starts a new segment; earlier usage keeps its
//!   old prices.
//! - [`UsageReport`] is the cumulative report whose EIP-712 struct hash is the `usageDigest` of a
//!   payment claim, so a claim commits to the exact usage and terms it is paid for.

mod ledger;
mod pricing;
mod report;
mod usage;

pub use ledger::{Ledger, LedgerError, Segment};
pub use pricing::{DENOMINATOR, Price, PriceTable, PricingError, RESOURCES};
pub use report::{UsageReport, terms_digest};
pub use usage::{Usage, UsageError};

/// Serde helpers: large integers as decimal strings, so JSON tools never round them.
pub(crate) mod dec {
    use alloy::primitives::U256;
    use serde::{Deserialize, Deserializer, Serializer};

    /// A `u128` as a decimal string.
    pub mod u128_str {
        use super::*;

        pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&v.to_string())
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
            let text = String::deserialize(d)?;
            text.parse().map_err(|_| serde::de::Error::custom(format!("{text:?} is not a decimal u128")))
        }
    }

    /// A `U256` as a decimal string.
    pub mod u256_str {
        use super::*;

        pub fn serialize<S: Serializer>(v: &U256, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&v.to_string())
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<U256, D::Error> {
            let text = String::deserialize(d)?;
            super::parse_u256(&text).map_err(serde::de::Error::custom)
        }
    }

    /// Parses a decimal U256 (digits only).
    pub fn parse_u256(text: &str) -> Result<U256, String> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{text:?} is not a decimal amount"));
        }
        U256::from_str_radix(text, 10).map_err(|_| format!("{text:?} does not fit in 256 bits"))
    }
}

pub use dec::parse_u256;
