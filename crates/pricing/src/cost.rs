//! Exact cost arithmetic.
//!
//! Prices are nano-USD per 1M tokens; a request's cost is `Σ tokens × price / 1_000_000`. Each
//! product is exact in `i128`, the sum is divided **once** and rounded half-up, so the only
//! rounding error is < 0.5 nano-USD per request and splitting usage across two rows changes the
//! total by at most 1 nano-USD. Rounding per token class instead would let four half-nano errors
//! pile up in one direction.

use tollgate_types::{NanoUsd, Usage};

use crate::ModelPrice;

const TOKENS_PER_PRICE_UNIT: i128 = 1_000_000;

/// Cost of `usage` at `price`.
///
/// Uses the canonical usage semantics of `tollgate-types`: `input_tokens` includes cached and
/// cache-write tokens, so the full input price applies to [`Usage::uncached_input_tokens`] only;
/// cache reads cost `cached_input` (or `input`), cache writes `cache_write` (or `input`);
/// `output_tokens` already includes reasoning tokens, which are not billed again.
///
/// A provider that reports more cache-read + cache-write tokens than input tokens is
/// inconsistent; the reported cache counts are then billed as given and no uncached tokens are
/// billed (`uncached_input_tokens` saturates at zero) — never a negative quantity.
///
/// The result is never negative (a negative price could only come from an unvalidated
/// [`ModelPrice`]; it is clamped to zero rather than credited) and saturates at `i64::MAX`.
pub fn cost(usage: &Usage, price: &ModelPrice) -> NanoUsd {
    let terms = [
        (usage.uncached_input_tokens(), price.input),
        (usage.cached_input_tokens, price.cached_input_or_input()),
        (usage.cache_write_input_tokens, price.cache_write_or_input()),
        (usage.output_tokens, price.output),
    ];
    round_once(terms.iter().map(|&(t, p)| mul(t, p)))
}

/// Upper bound on the cost of a request with `input_tokens` of prompt and at most
/// `max_output_tokens` of output, for budget reservations.
///
/// Every input token is priced at the most expensive input rate (the highest of `input`,
/// `cached_input` and `cache_write`), because admission cannot know how the provider's cache
/// will split the prompt. Rounding is the same as [`cost`] and monotone, so
/// `cost(usage) <= worst_case_cost(usage.input_tokens, usage.output_tokens)` for any usage.
pub fn worst_case_cost(input_tokens: u64, max_output_tokens: u64, price: &ModelPrice) -> NanoUsd {
    let input_rate = price
        .input
        .max(price.cached_input_or_input())
        .max(price.cache_write_or_input());
    round_once([
        mul(input_tokens, input_rate),
        mul(max_output_tokens, price.output),
    ])
}

fn mul(tokens: u64, price_per_1m: NanoUsd) -> i128 {
    // |u64| * |i64| < 2^127, so one product never overflows; sums saturate below.
    i128::from(tokens) * i128::from(price_per_1m.nanos())
}

fn round_once(products: impl IntoIterator<Item = i128>) -> NanoUsd {
    let total = products.into_iter().fold(0i128, i128::saturating_add);
    if total <= 0 {
        return NanoUsd::ZERO;
    }
    // Half-up on a non-negative value. `total` ≤ i128::MAX, so adding half a unit could only
    // overflow at the very top; saturating keeps it monotone there.
    let rounded = total.saturating_add(TOKENS_PER_PRICE_UNIT / 2) / TOKENS_PER_PRICE_UNIT;
    NanoUsd(i64::try_from(rounded).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usd(s: &str) -> NanoUsd {
        NanoUsd::parse_usd(s).unwrap()
    }

    fn gpt_4o_mini() -> ModelPrice {
        ModelPrice {
            input: usd("0.15"),
            cached_input: Some(usd("0.075")),
            cache_write: None,
            output: usd("0.6"),
        }
    }

    fn claude_sonnet() -> ModelPrice {
        ModelPrice {
            input: usd("3"),
            cached_input: Some(usd("0.3")),
            cache_write: Some(usd("3.75")),
            output: usd("15"),
        }
    }

    #[test]
    fn gpt_4o_mini_known_value() {
        // 1000 input of which 200 cached, 500 output:
        // 800 × 0.15 + 200 × 0.075 + 500 × 0.6 = 120 + 15 + 300 = 435 USD per 1M tokens
        // → 0.000435 USD = 435_000 nano-USD.
        let u = Usage {
            input_tokens: 1000,
            cached_input_tokens: 200,
            output_tokens: 500,
            ..Usage::default()
        };
        assert_eq!(cost(&u, &gpt_4o_mini()), NanoUsd(435_000));
        assert_eq!(cost(&u, &gpt_4o_mini()).to_usd_string(), "0.000435");
    }

    #[test]
    fn anthropic_cache_read_and_write() {
        // Canonical usage: input_tokens = 100 uncached + 1000 read + 2000 written.
        // 100×3 + 1000×0.3 + 2000×3.75 + 400×15 = 300 + 300 + 7500 + 6000 = 14100 µUSD.
        let u = Usage {
            input_tokens: 3100,
            cached_input_tokens: 1000,
            cache_write_input_tokens: 2000,
            output_tokens: 400,
            reasoning_tokens: 100,
        };
        assert_eq!(cost(&u, &claude_sonnet()), NanoUsd(14_100_000));
    }

    #[test]
    fn missing_cache_prices_fall_back_to_input() {
        let p = ModelPrice {
            input: usd("1"),
            cached_input: None,
            cache_write: None,
            output: usd("2"),
        };
        let u = Usage {
            input_tokens: 30,
            cached_input_tokens: 10,
            cache_write_input_tokens: 10,
            output_tokens: 0,
            reasoning_tokens: 0,
        };
        assert_eq!(cost(&u, &p), NanoUsd(30_000));
    }

    #[test]
    fn reasoning_tokens_not_billed_twice() {
        let u = Usage {
            output_tokens: 1000,
            reasoning_tokens: 900,
            ..Usage::default()
        };
        assert_eq!(cost(&u, &gpt_4o_mini()), NanoUsd(600_000));
    }

    #[test]
    fn rounds_half_up_once() {
        // Prices with more than six decimals (USD per 1M) are fractions of a nano-USD per token.
        let per_token = |input: &str, cached: &str| ModelPrice {
            input: usd(input),
            cached_input: Some(usd(cached)),
            cache_write: None,
            output: usd("0"),
        };
        let inp = |n| Usage {
            input_tokens: n,
            ..Usage::default()
        };
        // 1.2 nano per token: 1 → 1.2 → 1; 2 → 2.4 → 2; 3 → 3.6 → 4.
        let p = per_token("0.0012", "0.0012");
        assert_eq!(cost(&inp(1), &p), NanoUsd(1));
        assert_eq!(cost(&inp(2), &p), NanoUsd(2));
        assert_eq!(cost(&inp(3), &p), NanoUsd(4));
        // Exactly half rounds up: 1.5 → 2, 0.5 → 1.
        assert_eq!(cost(&inp(1), &per_token("0.0015", "0")), NanoUsd(2));
        assert_eq!(cost(&inp(1), &per_token("0.0005", "0")), NanoUsd(1));
        // Below half rounds down: 0.4 → 0.
        assert_eq!(cost(&inp(1), &per_token("0.0004", "0")), NanoUsd(0));
        // Once, not per class: 1 uncached at 1.4 + 1 cached at 1.2 = 2.6 → 3, where rounding
        // each class first would give 1 + 1 = 2.
        let u = Usage {
            input_tokens: 2,
            cached_input_tokens: 1,
            ..Usage::default()
        };
        assert_eq!(cost(&u, &per_token("0.0014", "0.0012")), NanoUsd(3));
        // Whole-nano prices (≤ 6 decimals) are exact: 1 token of gpt-4o-mini input = 150 nano.
        assert_eq!(cost(&inp(1), &gpt_4o_mini()), NanoUsd(150));
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        let p = ModelPrice {
            input: usd("1000"),
            cached_input: None,
            cache_write: None,
            output: usd("1000"),
        };
        let u = Usage {
            input_tokens: u64::MAX,
            cached_input_tokens: 0,
            cache_write_input_tokens: 0,
            output_tokens: u64::MAX,
            reasoning_tokens: 0,
        };
        assert_eq!(cost(&u, &p), NanoUsd(i64::MAX));
        assert_eq!(worst_case_cost(u64::MAX, u64::MAX, &p), NanoUsd(i64::MAX));
        let extreme = ModelPrice {
            input: NanoUsd(i64::MAX),
            cached_input: Some(NanoUsd(i64::MAX)),
            cache_write: Some(NanoUsd(i64::MAX)),
            output: NanoUsd(i64::MAX),
        };
        let all = Usage {
            input_tokens: u64::MAX,
            cached_input_tokens: u64::MAX / 3,
            cache_write_input_tokens: u64::MAX / 3,
            output_tokens: u64::MAX,
            reasoning_tokens: 0,
        };
        assert_eq!(cost(&all, &extreme), NanoUsd(i64::MAX));
    }

    #[test]
    fn negative_prices_never_credit() {
        let p = ModelPrice {
            input: NanoUsd(-5_000_000),
            cached_input: None,
            cache_write: None,
            output: NanoUsd(-1),
        };
        let u = Usage {
            input_tokens: 1_000_000,
            output_tokens: 10,
            ..Usage::default()
        };
        assert_eq!(cost(&u, &p), NanoUsd::ZERO);
    }

    #[test]
    fn worst_case_uses_most_expensive_input_rate() {
        // Sonnet: cache write 3.75 > input 3. 1000 × 3.75 + 500 × 15 = 11250 µUSD.
        assert_eq!(
            worst_case_cost(1000, 500, &claude_sonnet()),
            NanoUsd(11_250_000)
        );
        // gpt-4o-mini: no cache-write price → input 0.15. 1000 × 0.15 + 500 × 0.6 = 450 µUSD.
        assert_eq!(worst_case_cost(1000, 500, &gpt_4o_mini()), NanoUsd(450_000));
        assert_eq!(worst_case_cost(0, 0, &claude_sonnet()), NanoUsd::ZERO);
    }

    // ---- properties -------------------------------------------------------------------------

    /// Valid prices: 0..=$1000/1M with cached ≤ input.
    fn arb_price() -> impl Strategy<Value = ModelPrice> {
        let max = 1_000_000_000_000i64;
        (
            0..=max,
            proptest::option::of(0..=max),
            proptest::option::of(0..=max),
            0..=max,
        )
            .prop_map(|(input, cached, write, output)| ModelPrice {
                input: NanoUsd(input),
                cached_input: cached.map(|c| NanoUsd(c.min(input))),
                cache_write: write.map(NanoUsd),
                output: NanoUsd(output),
            })
    }

    /// Token counts per class; canonical usage is built from them (input = sum of the three
    /// input classes), so each class can be varied independently.
    type Classes = (u64, u64, u64, u64, u64);

    fn arb_classes() -> impl Strategy<Value = Classes> {
        let t = 0u64..=10_000_000_000;
        (t.clone(), t.clone(), t.clone(), t.clone(), t)
    }

    fn usage_of((uncached, cached, write, output, reasoning): Classes) -> Usage {
        Usage {
            input_tokens: uncached + cached + write,
            cached_input_tokens: cached,
            cache_write_input_tokens: write,
            output_tokens: output + reasoning,
            reasoning_tokens: reasoning,
        }
    }

    fn add(a: &Usage, b: &Usage) -> Usage {
        Usage {
            input_tokens: a.input_tokens + b.input_tokens,
            cached_input_tokens: a.cached_input_tokens + b.cached_input_tokens,
            cache_write_input_tokens: a.cache_write_input_tokens + b.cache_write_input_tokens,
            output_tokens: a.output_tokens + b.output_tokens,
            reasoning_tokens: a.reasoning_tokens + b.reasoning_tokens,
        }
    }

    proptest! {
        #[test]
        fn never_negative(price in arb_price(), c in arb_classes()) {
            prop_assert!(cost(&usage_of(c), &price).nanos() >= 0);
        }

        #[test]
        fn never_negative_even_for_arbitrary_usage(
            price in arb_price(),
            u in (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
        ) {
            let u = Usage {
                input_tokens: u.0,
                cached_input_tokens: u.1,
                cache_write_input_tokens: u.2,
                output_tokens: u.3,
                reasoning_tokens: u.4,
            };
            prop_assert!(cost(&u, &price).nanos() >= 0);
        }

        #[test]
        fn zero_usage_costs_zero(price in arb_price()) {
            prop_assert_eq!(cost(&Usage::default(), &price), NanoUsd::ZERO);
        }

        #[test]
        fn monotone_in_each_class(
            price in arb_price(),
            c in arb_classes(),
            class in 0usize..4,
            extra in 0u64..=1_000_000_000,
        ) {
            let mut more = c;
            match class {
                0 => more.0 += extra,
                1 => more.1 += extra,
                2 => more.2 += extra,
                _ => more.3 += extra,
            }
            prop_assert!(cost(&usage_of(more), &price) >= cost(&usage_of(c), &price));
        }

        #[test]
        fn monotone_in_input_tokens_alone(price in arb_price(), c in arb_classes(), extra in 0u64..=1_000_000) {
            let u = usage_of(c);
            let more = Usage { input_tokens: u.input_tokens + extra, ..u };
            prop_assert!(cost(&more, &price) >= cost(&u, &price));
        }

        #[test]
        fn additive_within_one_nano(price in arb_price(), a in arb_classes(), b in arb_classes()) {
            let (ua, ub) = (usage_of(a), usage_of(b));
            let split = cost(&ua, &price).nanos() + cost(&ub, &price).nanos();
            let whole = cost(&add(&ua, &ub), &price).nanos();
            prop_assert!((split - whole).abs() <= 1, "split {split} whole {whole}");
        }

        #[test]
        fn worst_case_bounds_actual(price in arb_price(), c in arb_classes(), slack in 0u64..1000) {
            let u = usage_of(c);
            let bound = worst_case_cost(u.input_tokens, u.output_tokens + slack, &price);
            prop_assert!(cost(&u, &price) <= bound);
        }
    }
}
