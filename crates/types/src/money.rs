//! Exact money: integer nano-USD.
//!
//! One nano-USD is 1e-9 USD. Every provider price in the built-in table is a whole number of
//! nano-USD per token or finer only in the ninth decimal of a per-1M price, so per-request costs
//! are computed in integers and rounded once (see `tollgate-pricing`). Sums use `i64`, which holds
//! about 9.2 billion USD — far beyond any budget window — and saturate rather than wrap.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An amount of money in nano-USD (1e-9 USD). Never a float.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NanoUsd(pub i64);

/// Nano-USD in one USD.
pub const NANOS_PER_USD: i64 = 1_000_000_000;

impl NanoUsd {
    pub const ZERO: NanoUsd = NanoUsd(0);

    pub fn from_usd_whole(usd: i64) -> Self {
        NanoUsd(usd.saturating_mul(NANOS_PER_USD))
    }

    pub fn nanos(self) -> i64 {
        self.0
    }

    pub fn saturating_add(self, other: NanoUsd) -> NanoUsd {
        NanoUsd(self.0.saturating_add(other.0))
    }

    pub fn saturating_sub(self, other: NanoUsd) -> NanoUsd {
        NanoUsd(self.0.saturating_sub(other.0))
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Decimal USD with all nine fractional digits kept but trailing zeros trimmed
    /// (`"0.000525"`, `"12.5"`, `"0"`). This is the form used in headers and JSON.
    pub fn to_usd_string(self) -> String {
        let neg = self.0 < 0;
        let abs = self.0.unsigned_abs();
        let whole = abs / NANOS_PER_USD as u64;
        let frac = abs % NANOS_PER_USD as u64;
        let mut s = String::with_capacity(16);
        if neg {
            s.push('-');
        }
        s.push_str(&whole.to_string());
        if frac != 0 {
            let digits = format!("{frac:09}");
            s.push('.');
            s.push_str(digits.trim_end_matches('0'));
        }
        s
    }

    /// Fixed-point rendering with exactly `decimals` fractional digits (≤ 9), rounded half away
    /// from zero. For tables meant for people; machine output uses [`NanoUsd::to_usd_string`].
    pub fn to_usd_fixed(self, decimals: u32) -> String {
        let decimals = decimals.min(9);
        let unit = 10i128.pow(9 - decimals);
        let v = self.0 as i128;
        let rounded = if v >= 0 {
            (v + unit / 2) / unit
        } else {
            (v - unit / 2) / unit
        };
        let neg = rounded < 0;
        let abs = rounded.unsigned_abs();
        let scale = 10u128.pow(decimals);
        let whole = abs / scale;
        let frac = abs % scale;
        let sign = if neg { "-" } else { "" };
        if decimals == 0 {
            format!("{sign}{whole}")
        } else {
            format!("{sign}{whole}.{frac:0width$}", width = decimals as usize)
        }
    }

    /// Parses a decimal USD amount (`"50"`, `"0.15"`, `"1e-3"` is rejected) exactly.
    pub fn parse_usd(s: &str) -> Result<NanoUsd, MoneyParseError> {
        parse_decimal_scaled(s, 9).map(NanoUsd)
    }
}

impl fmt::Display for NanoUsd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_usd_string())
    }
}

impl std::iter::Sum for NanoUsd {
    fn sum<I: Iterator<Item = NanoUsd>>(iter: I) -> Self {
        iter.fold(NanoUsd::ZERO, NanoUsd::saturating_add)
    }
}

/// Why a decimal money string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyParseError {
    #[error("empty amount")]
    Empty,
    #[error("'{0}' is not a plain decimal number (digits, one optional '.', optional leading '-')")]
    Syntax(String),
    #[error("'{0}' has more than {1} decimal places")]
    TooPrecise(String, u32),
    #[error("'{0}' is too large")]
    Overflow(String),
}

/// Parses a plain decimal string into an integer scaled by `10^scale`, exactly.
pub fn parse_decimal_scaled(s: &str, scale: u32) -> Result<i64, MoneyParseError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(MoneyParseError::Empty);
    }
    let (neg, body) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int_part, frac_part) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(MoneyParseError::Syntax(s.to_string()));
    }
    let frac_trimmed = frac_part.trim_end_matches('0');
    if frac_trimmed.len() > scale as usize {
        return Err(MoneyParseError::TooPrecise(s.to_string(), scale));
    }
    let overflow = || MoneyParseError::Overflow(s.to_string());
    let mut v: i64 = 0;
    for b in int_part.bytes() {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(b - b'0')))
            .ok_or_else(overflow)?;
    }
    v = v.checked_mul(10i64.pow(scale)).ok_or_else(overflow)?;
    let mut f: i64 = 0;
    for (i, b) in frac_trimmed.bytes().enumerate() {
        f += i64::from(b - b'0') * 10i64.pow(scale - 1 - i as u32);
    }
    v = v.checked_add(f).ok_or_else(overflow)?;
    Ok(if neg { -v } else { v })
}

impl FromStr for NanoUsd {
    type Err = MoneyParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NanoUsd::parse_usd(s)
    }
}

/// Serialized as a decimal USD string so JSON consumers never see a float.
impl Serialize for NanoUsd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_usd_string())
    }
}

/// Accepts a decimal string (`"50.00"`) or a JSON/YAML number. Numbers are read through their
/// shortest decimal rendering, so `0.15` means exactly 0.15, not the nearest binary float.
impl<'de> Deserialize<'de> for NanoUsd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = deserialize_decimal_text(d)?;
        NanoUsd::parse_usd(&s).map_err(serde::de::Error::custom)
    }
}

/// Reads a string or number as decimal text (shared by money-like config fields).
pub fn deserialize_decimal_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a decimal number or a string holding one")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
            if !v.is_finite() {
                return Err(E::custom("not a finite number"));
            }
            // `{}` on f64 prints the shortest string that round-trips, never exponent form.
            Ok(format!("{v}"))
        }
    }
    d.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn renders_and_parses() {
        assert_eq!(NanoUsd(525).to_usd_string(), "0.000000525");
        assert_eq!(NanoUsd(12_500_000_000).to_usd_string(), "12.5");
        assert_eq!(NanoUsd(0).to_usd_string(), "0");
        assert_eq!(NanoUsd(-1).to_usd_string(), "-0.000000001");
        assert_eq!(
            NanoUsd::parse_usd("50.00").unwrap(),
            NanoUsd(50_000_000_000)
        );
        assert_eq!(NanoUsd::parse_usd("0.075").unwrap(), NanoUsd(75_000_000));
        assert!(NanoUsd::parse_usd("0.0000000001").is_err());
        assert!(NanoUsd::parse_usd("1e3").is_err());
        assert!(NanoUsd::parse_usd("").is_err());
        assert_eq!(NanoUsd(1_234_567_890).to_usd_fixed(4), "1.2346");
        assert_eq!(NanoUsd(5).to_usd_fixed(2), "0.00");
    }

    #[test]
    fn deserializes_numbers_exactly() {
        let v: NanoUsd = serde_json::from_str("0.15").unwrap();
        assert_eq!(v, NanoUsd(150_000_000));
        let v: NanoUsd = serde_json::from_str("\"2.5\"").unwrap();
        assert_eq!(v, NanoUsd(2_500_000_000));
    }

    proptest! {
        #[test]
        fn string_round_trip(n in any::<i64>().prop_filter("not min", |n| *n != i64::MIN)) {
            let s = NanoUsd(n).to_usd_string();
            prop_assert_eq!(NanoUsd::parse_usd(&s).unwrap(), NanoUsd(n));
        }
    }
}
