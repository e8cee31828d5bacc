//! The usage report an enclave signs to be paid: cumulative usage, cumulative amount and the
//! pricing terms, for one channel. Its EIP-712 struct hash is a claim's `usageDigest`, so the
//! Payment contract's signature check also binds the usage behind every payment.

use alloy::primitives::{B256, U256, keccak256};
use alloy::sol_types::{SolStruct, SolValue};
use serde::{Deserialize, Serialize};
use tpod_wire::pb;

use crate::dec::u256_str;
use crate::{Ledger, Segment, Usage};

alloy::sol! {
    /// Cumulative usage, in the units of [`Usage`].
    struct UsageTotals {
        uint256 cpuReserved;
        uint256 cpuUsed;
        uint256 memoryReserved;
        uint256 memoryUsed;
        uint256 storageReserved;
        uint256 ingress;
        uint256 egress;
    }

    /// What the enclave attests to.
    struct Report {
        bytes32 channel;
        bytes32 podId;
        uint64 timestamp;
        UsageTotals usage;
        uint256 amount;
        bytes32 terms;
    }
}

/// A pod's cumulative usage report for its payment channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    /// The payment channel.
    pub channel: B256,
    /// The pod.
    pub pod_id: B256,
    /// When the usage was sampled (Unix seconds).
    pub timestamp_unix: u64,
    /// Cumulative usage.
    pub usage: Usage,
    /// What the usage costs in total at the agreed prices (rounded down).
    #[serde(with = "u256_str")]
    pub amount: U256,
    /// [`terms_digest`] of the pricing segments the amount was computed with.
    pub terms: B256,
}

/// Commits to every pricing segment: its prices, start time and starting usage.
pub fn terms_digest(segments: &[Segment]) -> B256 {
    segments.iter().fold(B256::ZERO, |acc, s| {
        keccak256((acc, s.table.digest(), s.since_unix, totals(&s.from).eip712_hash_struct()).abi_encode())
    })
}

fn totals(u: &Usage) -> UsageTotals {
    UsageTotals {
        cpuReserved: U256::from(u.cpu_reserved),
        cpuUsed: U256::from(u.cpu_used),
        memoryReserved: U256::from(u.memory_reserved),
        memoryUsed: U256::from(u.memory_used),
        storageReserved: U256::from(u.storage_reserved),
        ingress: U256::from(u.ingress),
        egress: U256::from(u.egress),
    }
}

impl UsageReport {
    /// The report of `ledger` for `channel` and `pod_id` at `timestamp_unix`.
    pub fn of(ledger: &Ledger, channel: B256, pod_id: B256, timestamp_unix: u64) -> Self {
        Self {
            channel,
            pod_id,
            timestamp_unix,
            usage: *ledger.usage(),
            amount: ledger.amount(),
            terms: terms_digest(ledger.segments()),
        }
    }

    /// The EIP-712 struct hash: the `usageDigest` a claim carries.
    pub fn digest(&self) -> B256 {
        Report {
            channel: self.channel,
            podId: self.pod_id,
            timestamp: self.timestamp_unix,
            usage: totals(&self.usage),
            amount: self.amount,
            terms: self.terms,
        }
        .eip712_hash_struct()
    }

    /// The wire form.
    pub fn to_proto(&self) -> pb::UsageReport {
        pb::UsageReport {
            channel: self.channel.to_vec(),
            pod_id: self.pod_id.to_vec(),
            timestamp_unix: self.timestamp_unix,
            usage: Some(self.usage.to_proto()),
            amount: self.amount.to_string(),
            terms: self.terms.to_vec(),
        }
    }

    /// Reads the wire form.
    pub fn from_proto(p: &pb::UsageReport) -> Result<Self, String> {
        let b32 = |name: &str, v: &[u8]| {
            <[u8; 32]>::try_from(v).map(B256::from).map_err(|_| format!("report {name} must be 32 bytes"))
        };
        Ok(Self {
            channel: b32("channel", &p.channel)?,
            pod_id: b32("pod_id", &p.pod_id)?,
            timestamp_unix: p.timestamp_unix,
            usage: Usage::from_proto(p.usage.as_ref().ok_or("report without usage")?).map_err(|e| e.to_string())?,
            amount: crate::parse_u256(&p.amount)?,
            terms: b32("terms", &p.terms)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PriceTable;

    #[test]
    fn the_digest_binds_usage_amount_and_terms() {
        let table = PriceTable::from_rows([("cpu", "10", "20")]).unwrap_or_default();
        let mut ledger = Ledger::new(table, 100);
        let used = Usage::interval((100, 0, 0), 1_000_000_000, true, 5, 0, (0, 0));
        assert!(ledger.record(&used).is_ok());
        let report = UsageReport::of(&ledger, B256::repeat_byte(1), B256::repeat_byte(2), 200);
        assert_eq!(UsageReport::from_proto(&report.to_proto()).as_ref(), Ok(&report));

        let mut changed = vec![];
        let mut r = report.clone();
        r.usage.cpu_used += 1;
        changed.push(r);
        let mut r = report.clone();
        r.amount += U256::from(1u64);
        changed.push(r);
        let mut r = report.clone();
        r.timestamp_unix += 1;
        changed.push(r);
        let mut switched = ledger.clone();
        switched.switch(PriceTable::from_rows([("cpu", "11", "20")]).unwrap_or_default(), 150);
        changed.push(UsageReport::of(&switched, report.channel, report.pod_id, 200));
        for other in changed {
            assert_ne!(other.digest(), report.digest(), "{other:?}");
        }
    }
}
