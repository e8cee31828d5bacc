//! Cumulative metered usage of one pod.

use serde::{Deserialize, Serialize};
use tpod_wire::pb;

use crate::dec::u128_str;

/// Nanoseconds per second.
const NS: u128 = 1_000_000_000;

/// What a pod has used since it was deployed. Every field only grows.
///
/// Time-integrated quantities are kept per nanosecond so that a sample of any length adds
/// exactly; prices are per second and [`crate::PriceTable`] divides only once, at the end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Usage {
    /// Reserved CPU: millicores × nanoseconds, while the pod runs.
    #[serde(with = "u128_str")]
    pub cpu_reserved: u128,
    /// CPU time used by the pod's processes, in nanoseconds (1 CPU-second = 10⁹).
    #[serde(with = "u128_str")]
    pub cpu_used: u128,
    /// Reserved memory: bytes × nanoseconds, while the pod runs.
    #[serde(with = "u128_str")]
    pub memory_reserved: u128,
    /// Memory in use, sampled: bytes × nanoseconds.
    #[serde(with = "u128_str")]
    pub memory_used: u128,
    /// Reserved storage: bytes × nanoseconds, also while the pod is paused.
    #[serde(with = "u128_str")]
    pub storage_reserved: u128,
    /// Request body bytes the ingress carried to the pod.
    #[serde(with = "u128_str")]
    pub ingress: u128,
    /// Response body bytes the ingress carried from the pod.
    #[serde(with = "u128_str")]
    pub egress: u128,
}

/// Why usage could not be combined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// A counter would exceed `u128`.
    #[error("usage counter {0} overflows")]
    Overflow(&'static str),
    /// A later total is below an earlier one.
    #[error("usage counter {field} went backwards: {before} -> {after}")]
    Regressed {
        /// The counter.
        field: &'static str,
        /// The earlier total.
        before: u128,
        /// The later total.
        after: u128,
    },
    /// A wire value is not a decimal u128.
    #[error("usage field {field}: {value:?} is not a decimal number")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The value received.
        value: String,
    },
}

impl Usage {
    /// The counters with their names, in report order.
    pub fn fields(&self) -> [(&'static str, u128); 7] {
        [
            ("cpu_reserved", self.cpu_reserved),
            ("cpu_used", self.cpu_used),
            ("memory_reserved", self.memory_reserved),
            ("memory_used", self.memory_used),
            ("storage_reserved", self.storage_reserved),
            ("ingress", self.ingress),
            ("egress", self.egress),
        ]
    }

    fn from_fields(f: [u128; 7]) -> Self {
        Self {
            cpu_reserved: f[0],
            cpu_used: f[1],
            memory_reserved: f[2],
            memory_used: f[3],
            storage_reserved: f[4],
            ingress: f[5],
            egress: f[6],
        }
    }

    /// The usage of one sampling interval of `elapsed_ns`. CPU and memory reservations count
    /// only while the pod `running`; storage is reserved either way.
    pub fn interval(
        reserved: (u64, u64, u64),
        elapsed_ns: u64,
        running: bool,
        cpu_used_ns: u64,
        memory_in_use: u64,
        traffic: (u64, u64),
    ) -> Self {
        let (cpu_millis, memory_bytes, storage_bytes) = reserved;
        let t = u128::from(elapsed_ns);
        let while_running = |v: u64| if running { u128::from(v) * t } else { 0 };
        Self {
            cpu_reserved: while_running(cpu_millis),
            cpu_used: u128::from(cpu_used_ns),
            memory_reserved: while_running(memory_bytes),
            memory_used: while_running(memory_in_use),
            storage_reserved: u128::from(storage_bytes) * t,
            ingress: u128::from(traffic.0),
            egress: u128::from(traffic.1),
        }
    }

    /// `self + other`, counter by counter.
    pub fn checked_add(&self, other: &Self) -> Result<Self, UsageError> {
        let (a, b) = (self.fields(), other.fields());
        let mut out = [0u128; 7];
        for (i, ((name, x), (_, y))) in a.iter().zip(b.iter()).enumerate() {
            out[i] = x.checked_add(*y).ok_or(UsageError::Overflow(name))?;
        }
        Ok(Self::from_fields(out))
    }

    /// What was used between `earlier` and `self`; fails if any counter went backwards.
    pub fn since(&self, earlier: &Self) -> Result<Self, UsageError> {
        let (a, b) = (self.fields(), earlier.fields());
        let mut out = [0u128; 7];
        for (i, ((name, after), (_, before))) in a.iter().zip(b.iter()).enumerate() {
            out[i] = after.checked_sub(*before).ok_or(UsageError::Regressed {
                field: name,
                before: *before,
                after: *after,
            })?;
        }
        Ok(Self::from_fields(out))
    }

    /// Reserved CPU in millicore-seconds (for display).
    pub fn cpu_reserved_millicore_seconds(&self) -> f64 {
        self.cpu_reserved as f64 / NS as f64
    }

    /// CPU used in CPU-seconds (for display).
    pub fn cpu_used_seconds(&self) -> f64 {
        self.cpu_used as f64 / NS as f64
    }

    /// The wire form.
    pub fn to_proto(&self) -> pb::Usage {
        pb::Usage {
            cpu_reserved: self.cpu_reserved.to_string(),
            cpu_used: self.cpu_used.to_string(),
            memory_reserved: self.memory_reserved.to_string(),
            memory_used: self.memory_used.to_string(),
            storage_reserved: self.storage_reserved.to_string(),
            ingress: self.ingress.to_string(),
            egress: self.egress.to_string(),
        }
    }

    /// Reads the wire form.
    pub fn from_proto(p: &pb::Usage) -> Result<Self, UsageError> {
        let values = [
            ("cpu_reserved", &p.cpu_reserved),
            ("cpu_used", &p.cpu_used),
            ("memory_reserved", &p.memory_reserved),
            ("memory_used", &p.memory_used),
            ("storage_reserved", &p.storage_reserved),
            ("ingress", &p.ingress),
            ("egress", &p.egress),
        ];
        let mut out = [0u128; 7];
        for (i, (field, value)) in values.into_iter().enumerate() {
            out[i] = match value.as_str() {
                "" => 0,
                v => v.parse().map_err(|_| UsageError::Invalid { field, value: v.to_owned() })?,
            };
        }
        Ok(Self::from_fields(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_counts_reservations_only_while_running_except_storage() {
        let running = Usage::interval((500, 1 << 20, 1 << 30), 2_000_000_000, true, 7, 100, (3, 4));
        assert_eq!(running.cpu_reserved, 500 * 2 * NS);
        assert_eq!(running.memory_reserved, (1 << 20) * 2 * NS);
        assert_eq!(running.memory_used, 100 * 2 * NS);
        assert_eq!(running.storage_reserved, (1 << 30) * 2 * NS);
        assert_eq!((running.cpu_used, running.ingress, running.egress), (7, 3, 4));
        let paused = Usage::interval((500, 1 << 20, 1 << 30), 2_000_000_000, false, 0, 100, (0, 0));
        assert_eq!((paused.cpu_reserved, paused.memory_reserved, paused.memory_used), (0, 0, 0));
        assert_eq!(paused.storage_reserved, running.storage_reserved);
    }

    #[test]
    fn since_refuses_a_counter_going_backwards_and_names_it() {
        let a = Usage { cpu_used: 10, ..Default::default() };
        let b = Usage { cpu_used: 9, egress: 5, ..Default::default() };
        assert_eq!(b.since(&a), Err(UsageError::Regressed { field: "cpu_used", before: 10, after: 9 }));
        let c = Usage { cpu_used: 15, egress: 5, ..Default::default() };
        assert_eq!(c.since(&a), Ok(Usage { cpu_used: 5, egress: 5, ..Default::default() }));
        assert_eq!(a.checked_add(&c.since(&a).unwrap_or_default()), Ok(c));
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        let max = Usage { ingress: u128::MAX, ..Default::default() };
        let one = Usage { ingress: 1, ..Default::default() };
        assert_eq!(max.checked_add(&one), Err(UsageError::Overflow("ingress")));
    }

    #[test]
    fn proto_round_trip_and_bad_numbers_named() {
        let u = Usage { cpu_reserved: u128::MAX, memory_used: 42, ..Default::default() };
        assert_eq!(Usage::from_proto(&u.to_proto()), Ok(u));
        let bad = pb::Usage { egress: "12x".into(), ..Default::default() };
        assert_eq!(Usage::from_proto(&bad), Err(UsageError::Invalid { field: "egress", value: "12x".into() }));
    }
}
