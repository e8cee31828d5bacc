//! Kubernetes-style resource quantities: CPU in millicores (`500m`, `0.5`, `2`) and memory or
//! storage in bytes (`128Mi`, `1G`, `12345`). Arithmetic is exact and checked: a quantity that
//! is not a whole number of millicores or bytes, or that overflows `u64`, is refused.

use thiserror::Error;

/// Why a quantity string was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuantityError {
    /// Not a CPU quantity at all.
    #[error("`{0}` is not a CPU quantity (expected millicores like `500m`, or cores like `0.5` or `2`)")]
    Cpu(String),
    /// Not a byte quantity at all.
    #[error(
        "`{0}` is not a byte quantity (expected a whole number, optionally with a suffix Ki, Mi, Gi, Ti, K, M, G or T)"
    )]
    Bytes(String),
    /// A CPU quantity finer than one millicore.
    #[error("`{0}` is finer than one millicore")]
    SubMillicore(String),
    /// A byte quantity that is not a whole number of bytes.
    #[error("`{0}` is not a whole number of bytes")]
    FractionalBytes(String),
    /// The value does not fit in 64 bits.
    #[error("`{0}` is too large")]
    TooLarge(String),
}

/// Parses a CPU quantity into millicores: `250m` is 250, `0.25` is 250, `1` is 1000.
pub fn parse_cpu_millis(text: &str) -> Result<u64, QuantityError> {
    let bad = || QuantityError::Cpu(text.to_owned());
    if let Some(millis) = text.strip_suffix('m') {
        let (whole, frac) = decimal(millis).ok_or_else(bad)?;
        if !frac.is_empty() {
            return Err(QuantityError::SubMillicore(text.to_owned()));
        }
        return whole.try_into().map_err(|_| QuantityError::TooLarge(text.to_owned()));
    }
    let (whole, frac) = decimal(text).ok_or_else(bad)?;
    scale(whole, frac, 1000)
        .ok_or_else(|| QuantityError::SubMillicore(text.to_owned()))?
        .try_into()
        .map_err(|_| QuantityError::TooLarge(text.to_owned()))
}

/// Binary suffixes first so that `Mi` is not mistaken for `M` followed by garbage.
const BYTE_SUFFIXES: [(&str, u128); 9] = [
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("k", 1_000),
    ("K", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
];

/// Parses a byte quantity: `1Gi` is 1073741824, `1G` is 1000000000, `12345` is 12345, `1.5Ki` is 1536.
pub fn parse_bytes(text: &str) -> Result<u64, QuantityError> {
    let (number, multiplier) = BYTE_SUFFIXES
        .iter()
        .find_map(|(suffix, multiplier)| text.strip_suffix(suffix).map(|n| (n, *multiplier)))
        .unwrap_or((text, 1));
    let (whole, frac) = decimal(number).ok_or_else(|| QuantityError::Bytes(text.to_owned()))?;
    scale(whole, frac, multiplier)
        .ok_or_else(|| QuantityError::FractionalBytes(text.to_owned()))?
        .try_into()
        .map_err(|_| QuantityError::TooLarge(text.to_owned()))
}

/// Splits `digits[.digits]` into its whole part and its fractional digits (trailing zeros dropped).
/// Returns `None` for anything else, including signs, exponents, whitespace and absurdly long inputs.
fn decimal(text: &str) -> Option<(u128, &str)> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let frac = frac.trim_end_matches('0');
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    // 30 digits keep every later multiplication within u128; such values overflow u64 anyway.
    if whole.len() + frac.len() == 0 || whole.len() > 30 || frac.len() > 30 || !digits(whole) || !digits(frac) {
        return None;
    }
    let whole = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    Some((whole, frac))
}

/// Computes `(whole + 0.frac) * multiplier`, or `None` when the result is not a whole number.
/// Overflow saturates, so the caller's conversion to `u64` reports it as too large.
fn scale(whole: u128, frac: &str, multiplier: u128) -> Option<u128> {
    let whole = whole.saturating_mul(multiplier);
    if frac.is_empty() {
        return Some(whole);
    }
    let denominator = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    let numerator = frac.parse::<u128>().ok()?.checked_mul(multiplier)?;
    if numerator % denominator != 0 {
        return None;
    }
    Some(whole.saturating_add(numerator / denominator))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn cpu() {
        assert_eq!(parse_cpu_millis("1"), Ok(1000));
        assert_eq!(parse_cpu_millis("2"), Ok(2000));
        assert_eq!(parse_cpu_millis("0.25"), Ok(250));
        assert_eq!(parse_cpu_millis("0.5"), Ok(500));
        assert_eq!(parse_cpu_millis(".5"), Ok(500));
        assert_eq!(parse_cpu_millis("1.500"), Ok(1500));
        assert_eq!(parse_cpu_millis("250m"), Ok(250));
        assert_eq!(parse_cpu_millis("0"), Ok(0));
        assert_eq!(parse_cpu_millis("abc"), Err(QuantityError::Cpu("abc".into())));
        assert_eq!(parse_cpu_millis("-1"), Err(QuantityError::Cpu("-1".into())));
        for bad in ["", "m", ".", "1e3", " 1", "1 ", "+1", "1.2.3", "5mm", "0x10"] {
            assert_eq!(parse_cpu_millis(bad), Err(QuantityError::Cpu(bad.into())), "{bad:?}");
        }
        assert_eq!(parse_cpu_millis("0.0001"), Err(QuantityError::SubMillicore("0.0001".into())));
        assert_eq!(parse_cpu_millis("1.5m"), Err(QuantityError::SubMillicore("1.5m".into())));
        assert_eq!(
            parse_cpu_millis("99999999999999999999"),
            Err(QuantityError::TooLarge("99999999999999999999".into()))
        );
    }

    #[test]
    fn bytes() {
        assert_eq!(parse_bytes("1Gi"), Ok(1_073_741_824));
        assert_eq!(parse_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("12345"), Ok(12345));
        assert_eq!(parse_bytes("128Mi"), Ok(128 << 20));
        assert_eq!(parse_bytes("64Mi"), Ok(64 << 20));
        assert_eq!(parse_bytes("2Ki"), Ok(2048));
        assert_eq!(parse_bytes("1Ti"), Ok(1 << 40));
        assert_eq!(parse_bytes("3k"), Ok(3000));
        assert_eq!(parse_bytes("1.5Ki"), Ok(1536));
        assert_eq!(parse_bytes("1Qi"), Err(QuantityError::Bytes("1Qi".into())));
        for bad in ["", "Gi", "-1", "1 Gi", "1gi", "1e9", "1Mii"] {
            assert_eq!(parse_bytes(bad), Err(QuantityError::Bytes(bad.into())), "{bad:?}");
        }
        assert_eq!(parse_bytes("1.5"), Err(QuantityError::FractionalBytes("1.5".into())));
        assert_eq!(parse_bytes("100000000Ti"), Err(QuantityError::TooLarge("100000000Ti".into())));
        assert_eq!(parse_bytes(&"9".repeat(40)), Err(QuantityError::Bytes("9".repeat(40))));
    }

    #[test]
    fn never_panics_on_odd_input() {
        // A cheap property check: every short string over the quantity alphabet parses or errors.
        let alphabet = ['0', '1', '9', '.', 'm', 'K', 'i', 'G', '-'];
        let mut inputs = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> =
                inputs.iter().flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}"))).collect();
            inputs.extend(longer);
            inputs.dedup();
        }
        for input in &inputs {
            let _ = parse_cpu_millis(input);
            let _ = parse_bytes(input);
        }
    }
}
