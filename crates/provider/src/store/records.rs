//! The records the provider keeps about its pods, as they are serialized (JSON) into the store.
//!
//! Byte arrays are hex strings and `u128` / U256 quantities are decimal strings, so that records
//! stay readable when dumped and survive JSON tooling that would round large numbers to floats.

use serde::{Deserialize, Serialize};
use tpod_billing::{Ledger, UsageReport};

/// A pod the provider has accepted, with its lifecycle state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    /// The pod's identifier.
    #[serde(with = "hex32")]
    pub pod_id: [u8; 32],
    /// The publisher's address (`0x…`).
    pub publisher: String,
    /// The payment channel the pod is paid from.
    #[serde(with = "hex32")]
    pub channel_id: [u8; 32],
    /// The validated manifest; opaque to the store.
    pub manifest_json: String,
    /// Where the pod is in its lifecycle.
    pub state: PodState,
    /// When the record was first written (Unix seconds).
    pub created_at_unix: u64,
    /// When the record was last written (Unix seconds).
    pub updated_at_unix: u64,
    /// The ingress hostnames the pod holds; kept in step with the store's hostname index.
    pub hostnames: Vec<String>,
    /// TCP ports exposed on the host: (container port, host port).
    #[serde(default)]
    pub tcp_ports: Vec<(u16, u16)>,
}

/// Lifecycle state of a pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PodState {
    /// Images are being fetched and containers created.
    Provisioning,
    /// The pod is serving.
    Running,
    /// The pod's containers were stopped for a recoverable reason (its funds ran low, or the
    /// publisher asked to unlock the channel); its volumes are kept for the retention period.
    Paused {
        /// Why the pod was paused.
        reason: String,
        /// When (Unix seconds).
        #[serde(default)]
        since_unix: u64,
        /// What the pod cost per second when it was paused (decimal): resuming needs funds
        /// for a while at this rate.
        #[serde(default = "zero")]
        rate_per_second: String,
    },
    /// The pod (`replicas.min: 0`) received no request for its idle timeout: its processes
    /// were stopped, its rootfs (in memory), volumes and address are kept, only its storage is
    /// billed, and the next request or connection wakes it.
    ScaledToZero {
        /// When (Unix seconds).
        since_unix: u64,
    },
    /// The pod was deleted; its record stays until the final claim is confirmed.
    Stopped,
    /// Every container ended for good under the pod's restart policy (a job): nothing of it
    /// runs, metering stopped when it finished (no storage is billed afterwards either), its
    /// final claim is made and its channel released (`settled`). The record, its status and its
    /// logs stay until the publisher deletes the pod or the provider's retention passes; it
    /// reserves its volumes' storage (still on disk) and no CPU or memory.
    Finished {
        /// Each container, in pod order, with the exit code it ended with (`None`: lost, as
        /// for a container that ended while the provider was down).
        exit_codes: Vec<(String, Option<i32>)>,
        /// When it finished (Unix seconds).
        since_unix: u64,
        /// Whether the final claim is made and the channel released.
        #[serde(default)]
        settled: bool,
    },
    /// The pod could not be run.
    Failed {
        /// What went wrong.
        reason: String,
    },
}

/// Metered usage of one pod, cumulative since it was deployed, with its cost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// The pod the usage belongs to.
    #[serde(with = "hex32")]
    pub pod_id: [u8; 32],
    /// Cumulative usage, its exact cost and the pricing segments it was billed at.
    pub ledger: Ledger,
    /// The runtime's cumulative CPU counter (ns) when the last sample was taken: after a restart
    /// the next sample bills the difference, so CPU used while the provider was down is counted.
    pub cpu_counter_ns: u64,
    /// When the last sample was taken (Unix milliseconds).
    pub sampled_at_ms: u64,
}

/// A payment claim the provider made (or is about to make) against a pod's channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRecord {
    /// The pod whose usage is claimed.
    #[serde(with = "hex32")]
    pub pod_id: [u8; 32],
    /// The usage report the claim is backed by.
    pub report: UsageReport,
    /// The cumulative amount claimed, as a decimal U256 (at most the report's amount: a claim
    /// never exceeds what the channel holds).
    pub cumulative_amount: String,
    /// Digest of the usage report that was signed.
    #[serde(with = "hex32")]
    pub usage_digest: [u8; 32],
    /// The enclave's signature over the usage report.
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
    /// The claim transaction, once submitted.
    #[serde(with = "opt_hex32")]
    pub tx_hash: Option<[u8; 32]>,
    /// Whether the claim transaction is confirmed on chain.
    pub confirmed: bool,
}

fn zero() -> String {
    "0".to_owned()
}

/// Lower-case hex without a prefix.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Parses hex, with or without a `0x` prefix.
fn from_hex(s: &str) -> Result<Vec<u8>, String> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if !s.len().is_multiple_of(2) {
        return Err(format!("odd-length hex string ({} digits)", s.len()));
    }
    let digit = |c: u8| -> Result<u8, String> {
        char::from(c).to_digit(16).and_then(|d| u8::try_from(d).ok()).ok_or_else(|| format!("bad hex digit {c:?}"))
    };
    s.as_bytes().chunks(2).map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}

fn to_array32(bytes: Vec<u8>) -> Result<[u8; 32], String> {
    let len = bytes.len();
    bytes.try_into().map_err(|_| format!("expected 32 bytes, got {len}"))
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::to_hex(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        super::from_hex(&s).and_then(super::to_array32).map_err(D::Error::custom)
    }
}

mod opt_hex32 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&super::to_hex(v)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 32]>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| super::from_hex(&s).and_then(super::to_array32).map_err(D::Error::custom))
            .transpose()
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::to_hex(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        super::from_hex(&s).map_err(D::Error::custom)
    }
}

/// Compares two decimal U256 strings numerically; `None` if either is not a plain decimal of at
/// most 78 digits (the width of 2^256 - 1).
pub(crate) fn cmp_decimal(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    let (a, b) = (normalize_decimal(a)?, normalize_decimal(b)?);
    Some(a.len().cmp(&b.len()).then_with(|| a.cmp(b)))
}

/// Strips leading zeros after checking the string is a decimal that can fit a U256.
pub(crate) fn normalize_decimal(s: &str) -> Option<&str> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let trimmed = s.trim_start_matches('0');
    // 2^256 - 1 has 78 digits; a longer (or larger 78-digit) value would not fit on chain.
    const MAX: &str = "115792089237316195423570985008687907853269984665640564039457584007913129639935";
    if trimmed.len() > MAX.len() || (trimmed.len() == MAX.len() && trimmed > MAX) {
        return None;
    }
    Some(trimmed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn records_serialize_with_hex_and_decimal_strings() {
        let mut ledger = Ledger::new(tpod_billing::PriceTable::default(), 1);
        ledger.record(&tpod_billing::Usage { cpu_used: u128::MAX, ..Default::default() }).unwrap();
        let usage = UsageRecord { pod_id: [0xab; 32], ledger: ledger.clone(), cpu_counter_ns: 7, sampled_at_ms: 5 };
        let json = serde_json::to_string(&usage).unwrap();
        assert!(json.contains(&"ab".repeat(32)), "{json}");
        assert!(json.contains(&format!("\"{}\"", u128::MAX)), "{json}");
        assert_eq!(serde_json::from_str::<UsageRecord>(&json).unwrap(), usage);

        let claim = ClaimRecord {
            pod_id: [1; 32],
            report: UsageReport::of(&ledger, [1; 32].into(), [1; 32].into(), 9),
            cumulative_amount: "7".to_owned(),
            usage_digest: [2; 32],
            signature: vec![0, 255, 16],
            tx_hash: Some([3; 32]),
            confirmed: false,
        };
        let json = serde_json::to_string(&claim).unwrap();
        assert!(json.contains("\"00ff10\""), "{json}");
        assert_eq!(serde_json::from_str::<ClaimRecord>(&json).unwrap(), claim);
    }

    #[test]
    fn decimal_comparison() {
        use std::cmp::Ordering::*;
        assert_eq!(cmp_decimal("10", "9"), Some(Greater));
        assert_eq!(cmp_decimal("0009", "9"), Some(Equal));
        assert_eq!(cmp_decimal("0", "000"), Some(Equal));
        assert_eq!(cmp_decimal("1a", "9"), None);
        assert_eq!(cmp_decimal("", "9"), None);
        assert_eq!(cmp_decimal(&"9".repeat(79), "9"), None);
    }
}
