//! Sanity rules for prices, applied to config overrides when the table is built and to the
//! built-in table by a test.
//!
//! The point is to catch unit mix-ups before they bill anyone: the field is USD per **1M**
//! tokens, and a per-token or per-1K figure typed into it is off by 1e6 or 1e3 (a mis-priced
//! model in LiteLLM, litellm#20615, blocked every request of its users). Real prices sit between
//! about $0.005 and $600 per 1M tokens, so the bounds below leave a wide margin on both sides.

use tollgate_types::NanoUsd;

use crate::ModelPrice;

/// Highest accepted price: $1,000 per 1M tokens.
pub const MAX_PRICE_PER_1M: NanoUsd = NanoUsd(1_000 * tollgate_types::money::NANOS_PER_USD);

/// Lowest accepted non-zero price: $0.001 per 1M tokens. A per-token price of any model up to
/// $1,000/1M is below this, so a per-token figure cannot pass unnoticed. Zero stays allowed
/// (free or self-hosted models).
pub const MIN_NONZERO_PRICE_PER_1M: NanoUsd = NanoUsd(1_000_000);

/// One rule a price broke: which field and why. The caller adds the model name or config path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidPrice {
    /// `input`, `cached_input`, `cache_write` or `output`.
    pub field: &'static str,
    pub reason: String,
}

/// Checks one price: every field non-negative, at most $1,000/1M, and either zero or at least
/// $0.001/1M; `cached_input` ≤ `input`. Returns the first rule broken, fields in declaration
/// order.
pub fn validate_price(price: &ModelPrice) -> Result<(), InvalidPrice> {
    let fields: [(&'static str, Option<NanoUsd>); 4] = [
        ("input", Some(price.input)),
        ("cached_input", price.cached_input),
        ("cache_write", price.cache_write),
        ("output", Some(price.output)),
    ];
    for (field, value) in fields {
        let Some(v) = value else { continue };
        let reason = if v.nanos() < 0 {
            Some(format!("{v} is negative"))
        } else if v > MAX_PRICE_PER_1M {
            Some(format!(
                "{v} USD per 1M tokens is above the {MAX_PRICE_PER_1M} sanity limit \
                 (prices are USD per 1M tokens, not per 1K)"
            ))
        } else if v.nanos() > 0 && v < MIN_NONZERO_PRICE_PER_1M {
            Some(format!(
                "{v} USD per 1M tokens is below {MIN_NONZERO_PRICE_PER_1M}; it looks like a \
                 per-token price (prices are USD per 1M tokens)"
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(InvalidPrice { field, reason });
        }
    }
    if let Some(cached) = price.cached_input
        && cached > price.input
    {
        return Err(InvalidPrice {
            field: "cached_input",
            reason: format!(
                "{cached} is above the input price {} (a cache read never costs more)",
                price.input
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(input: &str, cached: Option<&str>, write: Option<&str>, output: &str) -> ModelPrice {
        let n = |s: &str| NanoUsd::parse_usd(s).unwrap();
        ModelPrice {
            input: n(input),
            cached_input: cached.map(n),
            cache_write: write.map(n),
            output: n(output),
        }
    }

    #[test]
    fn accepts_normal_and_free_prices() {
        assert_eq!(
            validate_price(&p("0.15", Some("0.075"), None, "0.6")),
            Ok(())
        );
        assert_eq!(validate_price(&p("0", None, None, "0")), Ok(()));
        assert_eq!(
            validate_price(&p("1000", Some("1000"), Some("1000"), "1000")),
            Ok(())
        );
        assert_eq!(validate_price(&p("0.001", None, None, "0")), Ok(()));
    }

    #[test]
    fn rejects_negative() {
        let e = validate_price(&p("1", None, None, "-1")).unwrap_err();
        assert_eq!(e.field, "output");
        assert!(e.reason.contains("negative"), "{e}");
    }

    #[test]
    fn rejects_too_large() {
        let e = validate_price(&p("1000.000000001", None, None, "1")).unwrap_err();
        assert_eq!(e.field, "input");
        let e = validate_price(&p("1", None, Some("2500"), "1")).unwrap_err();
        assert_eq!(e.field, "cache_write");
    }

    #[test]
    fn rejects_per_token_figures() {
        // gpt-4o-mini's per-token input price typed into a per-1M field.
        let e = validate_price(&p("0.00000015", None, None, "0.6")).unwrap_err();
        assert_eq!(e.field, "input");
        assert!(e.reason.contains("per-token"), "{e}");
    }

    #[test]
    fn rejects_cached_above_input() {
        let e = validate_price(&p("1", Some("1.5"), None, "2")).unwrap_err();
        assert_eq!(e.field, "cached_input");
        // Equal is fine (no discount).
        assert_eq!(validate_price(&p("1", Some("1"), None, "2")), Ok(()));
    }
}
