//! The records the provider keeps about its pods, as they are serialized (JSON) into the store.
//!
//! Byte arrays are hex strings and `u128` / U256 quantities are decimal strings, so that records
//! stay readable when dumped and survive JSON tooling that would round large numbers to floats.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    /// The pod was stopped for a recoverable reason (e.g. the channel ran dry).
    Paused {
        /// Why the pod was paused.
        reason: String,
    },
    /// The pod was stopped for good.
    Stopped,
    /// The pod could not be run.
    Failed {
        /// What went wrong.
        reason: String,
    },
}

/// Metered usage of one pod, cumulative since it started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// The pod the usage belongs to.
    #[serde(with = "hex32")]
    pub pod_id: [u8; 32],
    /// Unit-seconds consumed per resource name.
    #[serde(with = "decimal_map")]
    pub cumulative: BTreeMap<String, u128>,
    /// What the usage costs in total, as a decimal U256.
    pub cumulative_amount: String,
    /// When the latest sample was taken (Unix seconds).
    pub last_sample_unix: u64,
}

/// A payment claim the provider made (or is about to make) against a pod's channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRecord {
    /// The pod whose usage is claimed.
    #[serde(with = "hex32")]
    pub pod_id: [u8; 32],
    /// The cumulative amount claimed, as a decimal U256.
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

/// `BTreeMap<String, u128>` with the values as decimal strings.
mod decimal_map {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer, de::Error, ser::SerializeMap};

    pub fn serialize<S: Serializer>(v: &BTreeMap<String, u128>, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(v.len()))?;
        for (k, n) in v {
            map.serialize_entry(k, &n.to_string())?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, u128>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, n)| {
                let n = n.parse::<u128>().map_err(|e| D::Error::custom(format!("{k}: {n:?}: {e}")))?;
                Ok((k, n))
            })
            .collect()
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
        let usage = UsageRecord {
            pod_id: [0xab; 32],
            cumulative: BTreeMap::from([("cpu".to_owned(), u128::MAX)]),
            cumulative_amount: "12".to_owned(),
            last_sample_unix: 5,
        };
        let json = serde_json::to_string(&usage).unwrap();
        assert!(json.contains(&"ab".repeat(32)), "{json}");
        assert!(json.contains(&format!("\"{}\"", u128::MAX)), "{json}");
        assert_eq!(serde_json::from_str::<UsageRecord>(&json).unwrap(), usage);

        let claim = ClaimRecord {
            pod_id: [1; 32],
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
