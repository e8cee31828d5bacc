//! Units for people: token amounts in the token's own units (`12.5 TPT`, from its `symbol()` and
//! `decimals()`), prices per hour, sizes in KiB/MiB/GiB, RFC 3339 dates and short durations.
//!
//! Everything here is exact: amounts are converted between token units and base units as decimal
//! strings, never through floating point, so `--amount 0.000000000000000001` is one base unit and
//! the largest `U256` prints to its last digit. `--json` output keeps base units (as strings)
//! and unix times; only text output goes through these helpers.

use std::fmt;
use std::str::FromStr;

use alloy::primitives::{Address, U256};
use anyhow::Context as _;
use tpod_billing::PriceTable;
use tpod_chain::Chain;

/// The suffix that marks an amount in base units: `--amount 1000base`.
pub const BASE_SUFFIX: &str = "base";

/// Why an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Not a number at all.
    #[error("{text:?} is not an amount: write it in token units (12.5, 12.5TPT) or base units (1000base)")]
    Malformed {
        /// What was given.
        text: String,
    },
    /// A minus sign.
    #[error("{text:?}: amounts cannot be negative")]
    Negative {
        /// What was given.
        text: String,
    },
    /// More fraction digits than the token has decimals.
    #[error(
        "{text:?} has more decimals than {symbol} has ({decimals}); give at most {decimals} digits after the point, or base units with the suffix `base`"
    )]
    TooPrecise {
        /// What was given.
        text: String,
        /// The token's symbol.
        symbol: String,
        /// The token's decimals.
        decimals: u8,
    },
    /// A fractional number of base units.
    #[error("{text:?}: base units are whole numbers")]
    FractionalBase {
        /// What was given.
        text: String,
    },
    /// Another token's symbol.
    #[error("{text:?} is in {given}, but this network's token is {symbol}")]
    WrongSymbol {
        /// What was given.
        text: String,
        /// The symbol given.
        given: String,
        /// The token's symbol.
        symbol: String,
    },
    /// Larger than 2^256 - 1 base units.
    #[error("{text:?} is too large (more than 2^256 - 1 base units)")]
    TooLarge {
        /// What was given.
        text: String,
    },
}

/// An amount as typed, before the token is known: parsed for syntax by clap, converted to base
/// units by [`Token::amount`] once the token's decimals are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount {
    text: String,
    /// Digits before the point (no sign, no leading zeros needed).
    integer: String,
    /// Digits after the point.
    fraction: String,
    /// Power of ten from an exponent (`1e18`).
    exponent: i64,
    unit: AmountUnit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum AmountUnit {
    /// No suffix: token units.
    Tokens,
    /// A token symbol as suffix.
    Symbol(String),
    /// `base`.
    Base,
}

impl FromStr for Amount {
    type Err = AmountError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let malformed = || AmountError::Malformed { text: text.to_owned() };
        if trimmed.starts_with('-') {
            return Err(AmountError::Negative { text: text.to_owned() });
        }
        let trimmed = trimmed.strip_prefix('+').unwrap_or(trimmed);
        // The number is digits, at most one point, then an optional exponent; the rest is the unit.
        let number_end = number_prefix_len(trimmed);
        let (number, unit) = trimmed.split_at(number_end);
        let unit = unit.trim();
        let (mantissa, exponent) = match number.find(['e', 'E']) {
            Some(at) => {
                let exponent: i64 = number[at + 1..].parse().map_err(|_| malformed())?;
                (&number[..at], exponent)
            }
            None => (number, 0),
        };
        let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (integer.is_empty() && fraction.is_empty()) || !digits(integer) || !digits(fraction) {
            return Err(malformed());
        }
        if exponent.unsigned_abs() > 1000 {
            return Err(AmountError::TooLarge { text: text.to_owned() });
        }
        let unit = match unit {
            "" => AmountUnit::Tokens,
            u if u.eq_ignore_ascii_case(BASE_SUFFIX) => AmountUnit::Base,
            u if u.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-') => AmountUnit::Symbol(u.to_owned()),
            _ => return Err(malformed()),
        };
        Ok(Self { text: text.to_owned(), integer: integer.to_owned(), fraction: fraction.to_owned(), exponent, unit })
    }
}

/// The length of the numeric part at the start of `s`: digits and points, then `e` and an
/// optionally signed exponent when digits follow it (so `12.5e3TPT` splits after `3`, and a
/// symbol starting with `e` is not taken for an exponent).
fn number_prefix_len(s: &str) -> usize {
    let bytes = s.as_bytes();
    let mut i = bytes.iter().take_while(|b| b.is_ascii_digit() || **b == b'.').count();
    if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
        let mut j = i + 1;
        if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
            j += 1;
        }
        let digits = bytes[j..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits > 0 {
            i = j + digits;
        }
    }
    i
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Amount {
    /// The amount in base units of a token with `decimals` decimals and symbol `symbol`.
    pub fn to_base_units(&self, symbol: &str, decimals: u8) -> Result<U256, AmountError> {
        let shift = match &self.unit {
            AmountUnit::Base => 0,
            AmountUnit::Tokens => i64::from(decimals),
            AmountUnit::Symbol(given) if given.eq_ignore_ascii_case(symbol) => i64::from(decimals),
            AmountUnit::Symbol(given) => {
                return Err(AmountError::WrongSymbol {
                    text: self.text.clone(),
                    given: given.clone(),
                    symbol: symbol.to_owned(),
                });
            }
        };
        // value = integer.fraction × 10^(exponent + shift); exact when the shift covers every
        // fraction digit that is not zero.
        let shift = self.exponent + shift;
        let fraction = self.fraction.trim_end_matches('0');
        let frac_len = i64::try_from(fraction.len()).unwrap_or(i64::MAX);
        if frac_len > shift {
            return Err(match self.unit {
                AmountUnit::Base => AmountError::FractionalBase { text: self.text.clone() },
                _ => AmountError::TooPrecise { text: self.text.clone(), symbol: symbol.to_owned(), decimals },
            });
        }
        let zeros = usize::try_from(shift - frac_len).map_err(|_| AmountError::TooLarge { text: self.text.clone() })?;
        let mut digits = format!("{}{fraction}", self.integer);
        let significant = digits.trim_start_matches('0');
        if significant.is_empty() {
            return Ok(U256::ZERO);
        }
        // 2^256 has 78 digits: anything longer overflows, and is refused before allocating zeros.
        if significant.len() + zeros > 78 {
            return Err(AmountError::TooLarge { text: self.text.clone() });
        }
        digits = format!("{significant}{}", "0".repeat(zeros));
        U256::from_str_radix(&digits, 10).map_err(|_| AmountError::TooLarge { text: self.text.clone() })
    }
}

/// `amount` base units of a token with `decimals` decimals, as an exact decimal in token units,
/// without trailing zeros: `12.5`, `0.000000000000000001`, `1000000`.
pub fn format_decimal(amount: U256, decimals: u8) -> String {
    let digits = amount.to_string();
    let decimals = usize::from(decimals);
    if decimals == 0 {
        return digits;
    }
    let padded =
        if digits.len() <= decimals { format!("{}{digits}", "0".repeat(decimals + 1 - digits.len())) } else { digits };
    let (integer, fraction) = padded.split_at(padded.len() - decimals);
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() { integer.to_owned() } else { format!("{integer}.{fraction}") }
}

/// An ERC-20 token as people see it: its symbol and decimals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The token contract.
    pub address: Address,
    /// `symbol()`, e.g. `TPT`.
    pub symbol: String,
    /// `decimals()`, e.g. 18.
    pub decimals: u8,
}

impl Token {
    /// Reads `symbol()` and `decimals()` of the chain's payment token.
    pub async fn read(chain: &Chain) -> anyhow::Result<Self> {
        Self::read_at(chain.provider(), chain.contracts().token).await
    }

    /// Reads `symbol()` and `decimals()` of the ERC-20 at `address`.
    pub async fn read_at(provider: &alloy::providers::DynProvider, address: Address) -> anyhow::Result<Self> {
        let token = tpod_chain::contracts::TestToken::new(address, provider);
        let symbol =
            token.symbol().call().await.with_context(|| format!("reading symbol() of the token at {address}"))?;
        let decimals =
            token.decimals().call().await.with_context(|| format!("reading decimals() of the token at {address}"))?;
        Ok(Self { address, symbol, decimals })
    }

    /// `12.5 TPT`.
    pub fn format(&self, amount: U256) -> String {
        format!("{} {}", format_decimal(amount, self.decimals), self.symbol)
    }

    /// An amount as typed, in base units; errors name the token.
    pub fn amount(&self, amount: &Amount) -> anyhow::Result<U256> {
        Ok(amount.to_base_units(&self.symbol, self.decimals)?)
    }

    /// A price per unit-second shown per hour for `per` units: `price_per_hour(p, 1000, "CPU")`
    /// for a price per millicore-second gives `0.36 TPT/h per CPU`.
    pub fn price_per_hour(&self, per_unit_second: U256, per: u64, unit: &str) -> String {
        let hourly = per_unit_second.saturating_mul(U256::from(per)).saturating_mul(U256::from(3600u64));
        format!("{} {}/h per {unit}", format_decimal(hourly, self.decimals), self.symbol)
    }

    /// A price per MiB of traffic shown per GiB: `0.5 TPT per GiB`.
    pub fn price_per_gib(&self, per_mib: U256) -> String {
        format!(
            "{} {} per GiB",
            format_decimal(per_mib.saturating_mul(U256::from(1024u64)), self.decimals),
            self.symbol
        )
    }

    /// A provider's prices for people: per hour per CPU, per GiB-hour of memory and storage,
    /// per GiB of traffic; free resources are left out.
    pub fn prices(&self, table: &PriceTable) -> String {
        const MILLI: u64 = 1000;
        const MIB_PER_GIB: u64 = 1024;
        let mut parts = Vec::new();
        let mut rate = |what: &str, reserved: U256, used: U256, per: u64, unit: &str| {
            if !reserved.is_zero() {
                parts.push(format!("{what} {} reserved", self.price_per_hour(reserved, per, unit)));
            }
            if !used.is_zero() {
                parts.push(format!("{what} {} used", self.price_per_hour(used, per, unit)));
            }
        };
        rate("cpu", table.cpu.reservation, table.cpu.usage, MILLI, "CPU");
        rate("memory", table.memory.reservation, table.memory.usage, MIB_PER_GIB, "GiB");
        rate("storage", table.storage.reservation, table.storage.usage, MIB_PER_GIB, "GiB");
        for (what, price) in [("ingress", table.ingress.usage), ("egress", table.egress.usage)] {
            if !price.is_zero() {
                parts.push(format!("{what} {}", self.price_per_gib(price)));
            }
        }
        if parts.is_empty() { "free".to_owned() } else { parts.join(", ") }
    }

    /// An hourly amount (`--max-rate 3.6`) as the per-second rate a channel caps spending at:
    /// exact when it divides, rounded down otherwise; a rate below one base unit per second is
    /// refused, as the contract takes 0 for "no cap".
    pub fn per_second(&self, per_hour: U256) -> anyhow::Result<u128> {
        let per_second = per_hour / U256::from(3600u64);
        if per_second.is_zero() {
            anyhow::bail!(
                "a rate of {}/h is less than one base unit per second ({} per hour at least)",
                self.format(per_hour),
                self.format(U256::from(3600u64))
            );
        }
        u128::try_from(per_second).map_err(|_| anyhow::anyhow!("a rate of {}/h is too large", self.format(per_hour)))
    }
}

/// A size in bytes with a binary unit: `512 B`, `1.5 KiB`, `64 MiB`, `2.25 GiB` (up to two
/// decimals, rounded down, trailing zeros dropped).
pub fn format_size(bytes: impl Into<u128>) -> String {
    const UNITS: [(&str, u128); 4] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    let bytes: u128 = bytes.into();
    for (unit, size) in UNITS {
        if bytes >= size {
            let hundredths = bytes.saturating_mul(100) / size;
            let (whole, frac) = (hundredths / 100, hundredths % 100);
            let frac = format!("{frac:02}");
            let frac = frac.trim_end_matches('0');
            return if frac.is_empty() { format!("{whole} {unit}") } else { format!("{whole}.{frac} {unit}") };
        }
    }
    format!("{bytes} B")
}

/// A unix time as an RFC 3339 date in UTC: `2025-01-31T12:00:00Z`.
pub fn format_time(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|s| chrono::DateTime::<chrono::Utc>::from_timestamp(s, 0))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| format!("unix time {unix}"))
}

/// A duration in seconds, shortly: `45 s`, `12 min`, `3 h 20 min`, `4 days 2 h`.
pub fn format_duration(seconds: u64) -> String {
    let (days, hours, minutes) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60);
    match seconds {
        0..120 => format!("{seconds} s"),
        120..3600 => format!("{} min", seconds / 60),
        3600..86_400 if minutes == 0 => format!("{hours} h"),
        3600..86_400 => format!("{hours} h {minutes} min"),
        _ if hours == 0 => format!("{days} day{}", if days == 1 { "" } else { "s" }),
        _ => format!("{days} day{} {hours} h", if days == 1 { "" } else { "s" }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn base(text: &str, decimals: u8) -> Result<U256, AmountError> {
        text.parse::<Amount>()?.to_base_units("TPT", decimals)
    }

    fn tokens(n: u64, decimals: u8) -> U256 {
        U256::from(n) * U256::from(10u64).pow(U256::from(decimals))
    }

    #[test]
    fn formats_exactly_without_trailing_zeros() {
        assert_eq!(format_decimal(U256::ZERO, 18), "0");
        assert_eq!(format_decimal(U256::from(1u8), 18), "0.000000000000000001");
        assert_eq!(format_decimal(U256::from(1u8), 6), "0.000001");
        assert_eq!(format_decimal(U256::from(12_500_000u64), 6), "12.5");
        assert_eq!(format_decimal(tokens(1_000_000, 18), 18), "1000000");
        assert_eq!(format_decimal(U256::from(1234u64), 0), "1234");
        assert_eq!(
            format_decimal(U256::MAX, 18),
            "115792089237316195423570985008687907853269984665640564039457.584007913129639935"
        );
        // More decimals than U256 has digits: all of it is fraction.
        assert_eq!(format_decimal(U256::from(5u8), 80), format!("0.{}5", "0".repeat(79)));
        let token = Token { address: Address::ZERO, symbol: "TPT".into(), decimals: 18 };
        assert_eq!(token.format(tokens(125, 17)), "12.5 TPT");
    }

    #[test]
    fn parses_token_units_symbols_and_base_units() {
        assert_eq!(base("12.5", 18).unwrap(), tokens(125, 17));
        assert_eq!(base("12.5TPT", 18).unwrap(), tokens(125, 17));
        assert_eq!(base("12.5 tpt", 18).unwrap(), tokens(125, 17));
        assert_eq!(base("12.5", 6).unwrap(), U256::from(12_500_000u64));
        assert_eq!(base("0", 18).unwrap(), U256::ZERO);
        assert_eq!(base("0.000", 18).unwrap(), U256::ZERO);
        assert_eq!(base(".5", 6).unwrap(), U256::from(500_000u64));
        assert_eq!(base("3.", 6).unwrap(), U256::from(3_000_000u64));
        assert_eq!(base("0.000000000000000001", 18).unwrap(), U256::from(1u8));
        assert_eq!(base("0.0000010", 6).unwrap(), U256::from(1u8));
        assert_eq!(base("1base", 18).unwrap(), U256::from(1u8));
        assert_eq!(base("1000 base", 18).unwrap(), U256::from(1000u64));
        assert_eq!(base("1e18base", 6).unwrap(), tokens(1, 18));
        assert_eq!(base("1.5e3", 6).unwrap(), U256::from(1_500_000_000u64));
        assert!(matches!(base("25e-1TPT", 0), Err(AmountError::TooPrecise { .. })));
        assert_eq!(base("25e-1", 1).unwrap(), U256::from(25u8));
        assert_eq!(base(&U256::MAX.to_string(), 0).unwrap(), U256::MAX);
        assert_eq!(base(&format!("{}base", U256::MAX), 18).unwrap(), U256::MAX);
    }

    #[test]
    fn refuses_what_is_not_an_exact_amount() {
        assert!(matches!(base("0.0000000000000000001", 18), Err(AmountError::TooPrecise { decimals: 18, .. })));
        assert!(matches!(base("1.0000001", 6), Err(AmountError::TooPrecise { decimals: 6, .. })));
        assert!(matches!(base("2.5", 0), Err(AmountError::TooPrecise { .. })));
        assert!(matches!(base("1.5base", 18), Err(AmountError::FractionalBase { .. })));
        assert!(matches!(base("-1", 18), Err(AmountError::Negative { .. })));
        assert!(matches!(base(" -0.5TPT", 18), Err(AmountError::Negative { .. })));
        assert!(matches!(base("12.5ETH", 18), Err(AmountError::WrongSymbol { ref given, .. }) if given == "ETH"));
        for garbage in ["", "abc", "1.2.3", "1,5", "0x10", "1e", "e5", ".", "12.5 T PT", "1e99999999999"] {
            assert!(base(garbage, 18).is_err(), "{garbage:?} was accepted");
        }
        let over = format!("{}0", U256::MAX);
        assert!(matches!(base(&over, 0), Err(AmountError::TooLarge { .. })));
        assert!(matches!(
            base("115792089237316195423570985008687907853269984665640564039458", 18),
            Err(AmountError::TooLarge { .. })
        ));
        assert!(matches!(base("1e400", 18), Err(AmountError::TooLarge { .. })));
        let msg = base("1.0000001", 6).unwrap_err().to_string();
        assert!(msg.contains("at most 6 digits") && msg.contains("base"), "{msg}");
    }

    #[test]
    fn prices_read_per_hour() {
        let token = Token { address: Address::ZERO, symbol: "TPT".into(), decimals: 18 };
        // 10^11 base units per millicore-second = 0.36 TPT per CPU-hour.
        assert_eq!(token.price_per_hour(U256::from(100_000_000_000u64), 1000, "CPU"), "0.36 TPT/h per CPU");
        assert_eq!(token.price_per_hour(U256::ZERO, 1024, "GiB"), "0 TPT/h per GiB");
        assert_eq!(token.price_per_gib(U256::from(1u8)), "0.000000000000001024 TPT per GiB");
        let table = PriceTable::from_rows([("cpu", "100000000000", "0"), ("egress", "1000000000000000", "0")]);
        // A reservation price for egress is refused; usage only.
        assert!(table.is_err());
        let table = PriceTable::from_rows([("cpu", "100000000000", "0"), ("egress", "0", "1000000000000000")]).unwrap();
        assert_eq!(token.prices(&table), "cpu 0.36 TPT/h per CPU reserved, egress 1.024 TPT per GiB");
        assert_eq!(token.prices(&PriceTable::default()), "free");
    }

    #[test]
    fn hourly_rates_become_exact_per_second_caps() {
        let token = Token { address: Address::ZERO, symbol: "TPT".into(), decimals: 18 };
        assert_eq!(token.per_second(tokens(36, 17)).unwrap(), 1_000_000_000_000_000);
        assert_eq!(token.per_second(U256::from(3600u64)).unwrap(), 1);
        let err = token.per_second(U256::from(3599u64)).unwrap_err().to_string();
        assert!(err.contains("less than one base unit per second"), "{err}");
        assert!(token.per_second(U256::MAX).is_err());
    }

    #[test]
    fn sizes_times_and_durations() {
        assert_eq!(format_size(0u64), "0 B");
        assert_eq!(format_size(1023u64), "1023 B");
        assert_eq!(format_size(1536u64), "1.5 KiB");
        assert_eq!(format_size(64u64 << 20), "64 MiB");
        assert_eq!(format_size((9u64 << 30) / 4), "2.25 GiB");
        assert_eq!(format_size(u64::MAX), "16777215.99 TiB");
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_time(u64::MAX), format!("unix time {}", u64::MAX));
        assert_eq!(format_duration(45), "45 s");
        assert_eq!(format_duration(720), "12 min");
        assert_eq!(format_duration(3 * 3600 + 20 * 60), "3 h 20 min");
        assert_eq!(format_duration(7200), "2 h");
        assert_eq!(format_duration(86_400), "1 day");
        assert_eq!(format_duration(4 * 86_400 + 2 * 3600), "4 days 2 h");
    }
}
