//! Exact decimals for export columns: an integer count of `10^-scale` units.
//!
//! Every amount in an export is a product or a sum of integers the ledger stores — nano-USD
//! (scale 9), token counts, prices in nano-USD per 1M tokens — so a fixed-point `i128` holds
//! each one exactly: a unit price is `nanos / 10^9` USD, a pricing quantity `tokens / 10^6`,
//! and their product `nanos × tokens / 10^15` (scale 15) with no rounding at all. This is why
//! no decimal crate is needed: nothing here divides, and `i128` at scale 15 still holds
//! 10^23 USD. It is also Parquet's `DECIMAL(38, s)` representation.

use std::fmt;

/// `units × 10^-scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decimal {
    units: i128,
    scale: u8,
}

impl Decimal {
    pub const fn new(units: i128, scale: u8) -> Decimal {
        Decimal { units, scale }
    }

    /// Nano-USD as USD.
    pub fn from_nanos(nanos: i64) -> Decimal {
        Decimal::new(i128::from(nanos), 9)
    }

    /// The exact product; `None` on overflow (beyond any real bill).
    pub fn checked_mul(self, other: Decimal) -> Option<Decimal> {
        Some(Decimal {
            units: self.units.checked_mul(other.units)?,
            scale: self.scale.checked_add(other.scale)?,
        })
    }

    /// `units` at a larger or equal `scale`.
    fn rescaled(self, scale: u8) -> Option<i128> {
        let up = u32::from(scale.checked_sub(self.scale)?);
        self.units.checked_mul(10i128.checked_pow(up)?)
    }

    /// The value as a count of `10^-scale` units, if that is exact (`2398.0` at scale 0 is
    /// 2398; `0.15` at scale 1 is `None`).
    pub fn units_at(self, scale: u8) -> Option<i128> {
        if scale >= self.scale {
            return self.rescaled(scale);
        }
        let down = 10i128.checked_pow(u32::from(self.scale - scale))?;
        (self.units % down == 0).then(|| self.units / down)
    }

    pub fn units(self) -> i128 {
        self.units
    }

    pub fn scale(self) -> u8 {
        self.scale
    }

    /// Parses the plain decimal text this type writes (`-12.5`, `3.0`, `7`). `None` for
    /// anything else (exponents, `+`, separators).
    pub fn parse(s: &str) -> Option<Decimal> {
        let (neg, digits) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) || (digits.contains('.') && frac.is_empty()) {
            return None;
        }
        let scale = u8::try_from(frac.len()).ok()?;
        let mut units: i128 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            units = units.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
        }
        Some(Decimal::new(if neg { -units } else { units }, scale))
    }

    /// Same value, whatever the scale (`1.50 == 1.5`).
    pub fn same_value(self, other: Decimal) -> bool {
        let scale = self.scale.max(other.scale);
        self.rescaled(scale) == other.rescaled(scale) && self.rescaled(scale).is_some()
    }
}

/// Shortest exact text with a decimal point (`3.0864175`, `2.5`, `0.0`, `-1.25`): no exponent,
/// no `+`, no separators (FOCUS NumericFormat), and a point even for whole values because
/// validators type a column as Decimal only when its values show one.
impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.units.unsigned_abs().to_string();
        let scale = usize::from(self.scale);
        let (int, frac) = if digits.len() > scale {
            digits.split_at(digits.len() - scale)
        } else {
            ("0", digits.as_str())
        };
        let pad = scale.saturating_sub(frac.len());
        let mut frac = format!("{}{frac}", "0".repeat(pad));
        while frac.ends_with('0') {
            frac.pop();
        }
        if frac.is_empty() {
            frac.push('0');
        }
        let sign = if self.units < 0 { "-" } else { "" };
        write!(f, "{sign}{int}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn writes_the_shortest_exact_text() {
        assert_eq!(Decimal::from_nanos(2_500_000_000).to_string(), "2.5");
        assert_eq!(Decimal::from_nanos(0).to_string(), "0.0");
        assert_eq!(Decimal::from_nanos(1).to_string(), "0.000000001");
        assert_eq!(Decimal::from_nanos(-1_250_000_000).to_string(), "-1.25");
        assert_eq!(Decimal::new(1_234_567, 6).to_string(), "1.234567");
        assert_eq!(Decimal::new(7, 0).to_string(), "7.0");
        let p = Decimal::from_nanos(2_500_000_000)
            .checked_mul(Decimal::new(1_234_567, 6))
            .unwrap();
        assert_eq!(p.to_string(), "3.0864175");
    }

    #[test]
    fn units_at_a_scale_only_when_exact() {
        let d = Decimal::parse("2398.0").unwrap();
        assert_eq!(d.units_at(0), Some(2398));
        assert_eq!(d.units_at(3), Some(2_398_000));
        assert_eq!(Decimal::parse("0.15").unwrap().units_at(1), None);
    }

    #[test]
    fn parses_plain_decimals_only() {
        assert_eq!(
            Decimal::parse("3.0864175"),
            Some(Decimal::new(30_864_175, 7))
        );
        assert_eq!(Decimal::parse("-0.5"), Some(Decimal::new(-5, 1)));
        assert_eq!(Decimal::parse("7"), Some(Decimal::new(7, 0)));
        for bad in [
            "", "+1", "1e5", "1,000", ".5", "5.", "--1", "1.2.3", "USD 1",
        ] {
            assert_eq!(Decimal::parse(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn text_round_trips(units in any::<i64>(), scale in 0u8..18) {
            let d = Decimal::new(i128::from(units), scale);
            let back = Decimal::parse(&d.to_string()).unwrap();
            prop_assert!(back.same_value(d));
        }
    }
}
