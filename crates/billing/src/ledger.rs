//! A pod's running account: cumulative usage and its exact cost, segment by pricing table.

use alloy::primitives::U256;
use serde::{Deserialize, Serialize};

use crate::dec::u256_str;
use crate::pricing::floor_amount;
use crate::{PriceTable, PricingError, Usage, UsageError};

/// Why usage could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// A counter overflowed or went backwards.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// The cost overflowed.
    #[error(transparent)]
    Pricing(#[from] PricingError),
    /// A stored ledger does not add up.
    #[error("inconsistent ledger: {0}")]
    Inconsistent(String),
}

/// The prices in force from one point of a pod's usage on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// The prices.
    pub table: PriceTable,
    /// When they took effect (Unix seconds).
    pub since_unix: u64,
    /// The pod's cumulative usage when they took effect.
    pub from: Usage,
}

/// Cumulative usage of a pod and what it costs.
///
/// The cost is kept as one exact numerator over [`crate::DENOMINATOR`]; [`Ledger::amount`]
/// rounds it down once. Recording usage in any number of pieces gives the same numerator as
/// recording the total, so nothing leaks through rounding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "LedgerRepr")]
pub struct Ledger {
    usage: Usage,
    #[serde(with = "u256_str")]
    numerator: U256,
    segments: Vec<Segment>,
}

#[derive(Deserialize)]
struct LedgerRepr {
    usage: Usage,
    #[serde(with = "u256_str")]
    numerator: U256,
    segments: Vec<Segment>,
}

impl TryFrom<LedgerRepr> for Ledger {
    type Error = LedgerError;

    fn try_from(r: LedgerRepr) -> Result<Self, Self::Error> {
        let ledger = Self { usage: r.usage, numerator: r.numerator, segments: r.segments };
        ledger.check()?;
        Ok(ledger)
    }
}

impl Ledger {
    /// A new account at `table`'s prices, starting at `now_unix`.
    pub fn new(table: PriceTable, now_unix: u64) -> Self {
        Self {
            usage: Usage::default(),
            numerator: U256::ZERO,
            segments: vec![Segment { table, since_unix: now_unix, from: Usage::default() }],
        }
    }

    /// Cumulative usage.
    pub fn usage(&self) -> &Usage {
        &self.usage
    }

    /// The prices in force now.
    pub fn table(&self) -> &PriceTable {
        // `new` and `check` guarantee at least one segment.
        &self.segments[self.segments.len() - 1].table
    }

    /// Every pricing segment, oldest first.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The exact cost so far, times [`crate::DENOMINATOR`].
    pub fn numerator(&self) -> U256 {
        self.numerator
    }

    /// The cost so far in token base units, rounded down.
    pub fn amount(&self) -> U256 {
        floor_amount(self.numerator)
    }

    /// Adds one interval's usage at the prices in force. Changes nothing on error.
    pub fn record(&mut self, delta: &Usage) -> Result<(), LedgerError> {
        let usage = self.usage.checked_add(delta)?;
        let cost = self.table().numerator(delta)?;
        let numerator = self.numerator.checked_add(cost).ok_or(PricingError::Overflow)?;
        self.usage = usage;
        self.numerator = numerator;
        Ok(())
    }

    /// Bills usage from now on at `table`; usage so far keeps the prices it was recorded at.
    /// Returns whether the prices changed.
    pub fn switch(&mut self, table: PriceTable, now_unix: u64) -> bool {
        if *self.table() == table {
            return false;
        }
        self.segments.push(Segment { table, since_unix: now_unix, from: self.usage });
        true
    }

    /// Checks that the numerator is exactly what the segments' prices make of the usage.
    pub fn check(&self) -> Result<(), LedgerError> {
        let Some(last) = self.segments.last() else {
            return Err(LedgerError::Inconsistent("no pricing segment".into()));
        };
        let mut total = U256::ZERO;
        for pair in self.segments.windows(2) {
            let used = pair[1].from.since(&pair[0].from)?;
            total = total.checked_add(pair[0].table.numerator(&used)?).ok_or(PricingError::Overflow)?;
        }
        let used = self.usage.since(&last.from)?;
        total = total.checked_add(last.table.numerator(&used)?).ok_or(PricingError::Overflow)?;
        if total != self.numerator {
            return Err(LedgerError::Inconsistent(format!(
                "cost numerator {} but the usage at the segments' prices makes {total}",
                self.numerator
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn table(cpu: u64, used: u64, mem: u64, traffic: u64) -> PriceTable {
        let (cpu, used, mem, traffic) = (cpu.to_string(), used.to_string(), mem.to_string(), traffic.to_string());
        PriceTable::from_rows([
            ("cpu", cpu.as_str(), used.as_str()),
            ("memory", mem.as_str(), mem.as_str()),
            ("storage", mem.as_str(), "0"),
            ("ingress", "0", traffic.as_str()),
            ("egress", "0", traffic.as_str()),
        ])
        .unwrap_or_default()
    }

    fn interval() -> impl Strategy<Value = Usage> {
        (0u64..5_000_000_000, any::<bool>(), 0u64..3_000_000_000, 0u64..1 << 32, 0u64..1 << 24, 0u64..1 << 24).prop_map(
            |(ns, running, cpu, mem, i, e)| Usage::interval((1500, 1 << 30, 5 << 30), ns, running, cpu, mem, (i, e)),
        )
    }

    proptest! {
        /// cost(usage over N intervals) == cost(total usage), to the base unit.
        #[test]
        fn pieces_cost_exactly_what_the_total_costs(
            prices in (1u64..1 << 40, 0u64..1 << 40, 0u64..1 << 20, 0u64..1 << 30),
            pieces in proptest::collection::vec(interval(), 1..50),
        ) {
            let t = table(prices.0, prices.1, prices.2, prices.3);
            let mut ledger = Ledger::new(t, 0);
            let mut total = Usage::default();
            for p in &pieces {
                ledger.record(p).map_err(|e| TestCaseError::fail(e.to_string()))?;
                total = total.checked_add(p).map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            let whole = t.numerator(&total).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(ledger.usage(), &total);
            prop_assert_eq!(ledger.numerator(), whole);
            prop_assert_eq!(ledger.amount(), whole / crate::DENOMINATOR);
            prop_assert!(ledger.check().is_ok());
        }

        /// After a switch, earlier usage keeps the old prices and later usage gets the new ones.
        #[test]
        fn a_switch_bills_each_side_at_its_own_prices(
            before in proptest::collection::vec(interval(), 0..20),
            after in proptest::collection::vec(interval(), 0..20),
        ) {
            let (old, new) = (table(1000, 3, 5, 7), table(4000, 9, 1, 2));
            let mut ledger = Ledger::new(old, 0);
            let (mut a, mut b) = (Usage::default(), Usage::default());
            for p in &before {
                ledger.record(p).map_err(|e| TestCaseError::fail(e.to_string()))?;
                a = a.checked_add(p).map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            prop_assert!(ledger.switch(new, 10));
            prop_assert!(!ledger.switch(new, 11));
            for p in &after {
                ledger.record(p).map_err(|e| TestCaseError::fail(e.to_string()))?;
                b = b.checked_add(p).map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            let expected = old.numerator(&a).map_err(|e| TestCaseError::fail(e.to_string()))?
                + new.numerator(&b).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(ledger.numerator(), expected);
            prop_assert_eq!(ledger.segments().len(), 2);
            prop_assert_eq!(ledger.segments()[1].from, a);
            prop_assert!(ledger.check().is_ok());
        }
    }

    #[test]
    fn a_stored_ledger_that_does_not_add_up_is_refused() {
        let mut ledger = Ledger::new(table(1000, 3, 5, 7), 0);
        let used = Usage::interval((100, 0, 0), 1_000_000_000, true, 5, 0, (0, 0));
        assert!(ledger.record(&used).is_ok());
        let json = serde_json::to_string(&ledger).unwrap_or_default();
        assert_eq!(serde_json::from_str::<Ledger>(&json).ok(), Some(ledger.clone()));
        let numerator = ledger.numerator().to_string();
        let tampered = json.replace(&numerator, &(ledger.numerator() + U256::from(1u64)).to_string());
        let err = serde_json::from_str::<Ledger>(&tampered).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("inconsistent ledger"), "{err}");
    }

    #[test]
    fn a_failed_record_changes_nothing() {
        let mut ledger = Ledger::new(table(1000, 3, 5, 7), 0);
        assert!(ledger.record(&Usage { ingress: u128::MAX, ..Default::default() }).is_ok());
        let before = ledger.clone();
        assert!(ledger.record(&Usage { ingress: 1, cpu_used: 5, ..Default::default() }).is_err());
        assert_eq!(ledger, before);
    }
}
