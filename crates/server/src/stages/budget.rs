//! Stage 9b, budget admission by reservation, once per attempt (`docs/contracts.md` §2,
//! invariant 2).
//!
//! Before the provider is called, the request's worst-case cost is reserved on every budget
//! whose scope matches, atomically, all or nothing (`tollgate_policy::Budgets::admit`):
//! - worst case = input tokens × the highest input rate + the output cap × the output rate,
//!   times `n` choices. Input tokens are counted with the model's tokenizer — exact for
//!   OpenAI-tokenised models — and bounded from above otherwise (one token per byte of the
//!   prompt's text, a strict bound for byte-level tokenizers). The output cap is the request's
//!   `max_completion_tokens`/`max_tokens`, else the model's configured `max_output_tokens`,
//!   else 4,096 — always bounded by the model's output limit, never the whole window, which
//!   let a few concurrent requests lock a small budget — and a default is written into the
//!   request so the provider honours what was reserved;
//! - when a hard budget cannot take the worst case, the request is fitted: the output cap is
//!   clamped to what remains (`x-tollgate-policy: cap_max_tokens=N`); when not even a minimal
//!   answer fits it is refused with `429 budget_exceeded`, `Retry-After` = seconds to the reset.
//!
//! The reservation rides on the request's `exchange::row::PendingRow` and is settled with the row's actual
//! cost whenever the row is recorded — served, failed, cancelled — so nothing leaks; a request
//! that dies without a row is released by the expiry sweep.
//!
//! **Overspend bound:** settled spend exceeds a hard limit only by what providers bill beyond
//! the reserved worst case (reported as `excess` by the engine). For OpenAI-tokenised models
//! the input count is exact and the provider stops at the reserved output cap, so the bound is
//! zero (image parts are the exception: counted at a fixed 765 tokens each).

use serde_json::{Map, Value};
use tollgate_policy::{Admission, Ask, Reservation};
use tollgate_pricing::{DeploymentRef, ModelPrice, worst_case_cost};
use tollgate_tokens::{self as tokens, Encoding};
use tollgate_types::{ApiError, ErrorCode, LedgerRow, NanoUsd, PolicyAction, Usage};

use crate::gateway::Gateway;
use crate::stages::target::Candidate;

/// The least output worth admitting a request for.
pub(crate) const MIN_ANSWER_TOKENS: u64 = 16;
/// Output cap reserved — and written into the request — when a budgeted request sets none and
/// its model has no `max_output_tokens` in config (bounded by the model's output limit).
pub(crate) const FALLBACK_OUTPUT_CAP: u64 = 4096;
/// A reservation whose request never settles is released after this long (longer than the
/// default total provider timeout of 10 minutes).
pub(crate) const RESERVATION_TTL_MS: i64 = 20 * 60_000;

/// What kind of request is being admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Chat-like: prompt plus an output cap in `max_completion_tokens`/`max_tokens`.
    Chat,
    /// Embeddings: input only.
    Embeddings,
}

/// The outcome of admission for an admitted request.
pub(crate) struct Admitted {
    pub(crate) reservation: Option<Reservation>,
    /// The output cap written into the request, when admission changed or set it.
    pub(crate) clamped_to: Option<u64>,
    /// A hard budget could not take the worst case and the output cap was lowered to fit:
    /// the answer may be shorter than the same request would get otherwise (never cached).
    pub(crate) fitted: bool,
    /// The tokens the reservation covers (prompt, output cap × choices), when one was taken.
    pub(crate) reserved: Option<Usage>,
}

/// The field a request's output cap lives in: the one the client used, else the one the
/// model family accepts (OpenAI's reasoning models refuse `max_tokens`).
fn cap_field(body: &Map<String, Value>, upstream_model: &str) -> &'static str {
    if body.contains_key("max_completion_tokens") {
        "max_completion_tokens"
    } else if body.contains_key("max_tokens") {
        "max_tokens"
    } else {
        let m = upstream_model.rsplit('/').next().unwrap_or(upstream_model);
        if ["o1", "o3", "o4", "gpt-5"].iter().any(|p| m.starts_with(p)) {
            "max_completion_tokens"
        } else {
            "max_tokens"
        }
    }
}

/// The total output a budget reserved for a streamed request (cap × `n`), for the meter's
/// live cut.
pub(crate) fn stream_output_cap(body: &Map<String, Value>) -> Option<u64> {
    let n = body.get("n").and_then(Value::as_u64).unwrap_or(1).max(1);
    requested_cap(body).map(|c| c.saturating_mul(n))
}

fn requested_cap(body: &Map<String, Value>) -> Option<u64> {
    body.get("max_completion_tokens")
        .and_then(Value::as_u64)
        .or_else(|| body.get("max_tokens").and_then(Value::as_u64))
}

/// Upper bound on the prompt tokens of a body whose model's tokenizer we do not have.
fn prompt_upper_bound(body: &Map<String, Value>) -> u64 {
    let mut bytes = 0u64;
    let mut images = 0u64;
    for m in body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        bytes += 8; // role and framing
        match m.get("content") {
            Some(Value::String(s)) => bytes += s.len() as u64,
            Some(Value::Array(parts)) => {
                for p in parts {
                    match p.get("type").and_then(Value::as_str) {
                        Some("image_url") => images += 1,
                        _ => bytes += p.to_string().len() as u64,
                    }
                }
            }
            Some(other) => bytes += other.to_string().len() as u64,
            None => {}
        }
        if let Some(tc) = m.get("tool_calls") {
            bytes += tc.to_string().len() as u64;
        }
    }
    if let Some(t) = body.get("tools") {
        bytes += t.to_string().len() as u64;
    }
    // Providers price a large image at well under 2,000 tokens.
    bytes + images * 2_000
}

/// Cost of `input` tokens alone.
fn input_cost(input: u64, price: &ModelPrice) -> NanoUsd {
    worst_case_cost(input, 0, price)
}

/// The largest output cap whose worst case fits in `allowed`.
fn fit_cap(input: u64, n: u64, allowed: NanoUsd, price: &ModelPrice) -> u64 {
    let out_price = price.output.nanos().max(1) as i128;
    let room = (allowed.nanos() - input_cost(input, price).nanos()).max(0) as i128;
    let mut cap =
        (room * 1_000_000 / out_price / n.max(1) as i128).clamp(0, u64::MAX as i128) as u64;
    // Per-request rounding can add a nano; step down until the worst case fits exactly.
    while cap > 0 && worst_case_cost(input, cap.saturating_mul(n), price) > allowed {
        cap -= 1;
    }
    cap
}

/// The most tokens a request can use, as admission counts them: prompt tokens (exact for
/// OpenAI-tokenised models, an upper bound otherwise), choices, and the output cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenBound {
    pub(crate) input: u64,
    pub(crate) n: u64,
    pub(crate) out_cap: u64,
    /// The cap came from the request (not the model's limit or the fallback).
    pub(crate) explicit: bool,
}

impl TokenBound {
    /// Worst-case tokens: prompt + output cap × choices.
    pub(crate) fn tokens(&self) -> u64 {
        self.input
            .saturating_add(self.out_cap.saturating_mul(self.n))
    }
}

/// Bounds a request's tokens the way budget admission does (shared with rate limiting,
/// [`super::ratelimit`]).
pub(crate) fn token_bound(
    gw: &Gateway,
    cand: &Candidate,
    body: &Map<String, Value>,
    shape: Shape,
) -> TokenBound {
    let logical_model = cand.logical.as_str();
    // The model's own tokenizer, when it has an exact one.
    let exact = Some(Encoding::for_model(&cand.deployment.model)).filter(|e| e.is_exact());
    let (input, n, out_cap, explicit) = match shape {
        Shape::Chat => {
            let input = match exact {
                Some(enc) => tokens::count_chat_prompt_map(enc, body),
                None => prompt_upper_bound(body),
            };
            let n = body.get("n").and_then(Value::as_u64).unwrap_or(1).max(1);
            let limit =
                gw.0.prices
                    .limits(
                        logical_model,
                        &DeploymentRef {
                            provider: &cand.deployment.provider_name,
                            model: &cand.deployment.model,
                        },
                    )
                    .max_output_tokens;
            // Without a cap of its own a request reserves the model's configured default
            // (`models.<name>.max_output_tokens`), else FALLBACK_OUTPUT_CAP — never the model's
            // whole output window, which would let a few concurrent requests lock a small
            // budget. Any cap is bounded by what the model accepts: the provider refuses or
            // clamps more, so reserving more only starves the budget.
            let bound = |c: u64| limit.map_or(c, |l| c.min(l));
            match requested_cap(body) {
                Some(c) => (input, n, bound(c), true),
                None => (
                    input,
                    n,
                    bound(cand.default_cap.map_or(FALLBACK_OUTPUT_CAP, u64::from)),
                    false,
                ),
            }
        }
        Shape::Embeddings => {
            // An embedding input of unknown tokenization: bound by bytes.
            let input = match exact {
                Some(enc) => {
                    tokens::count_embedding_input(enc, body.get("input").unwrap_or(&Value::Null))
                }
                None => body.get("input").map_or(0, |v| v.to_string().len() as u64),
            };
            (input, 1, 0, true)
        }
    };
    TokenBound {
        input,
        n,
        out_cap,
        explicit,
    }
}

/// The most tokens a request could be billed for: the reservation's tokens when a budget took
/// one, else a cheap upper bound — prompt bytes, and the output cap the request or the model's
/// default sets (not clamped to the model's limit: no price-table lookup, no tokenizer, since
/// this runs on every dispatch for the provisional row).
pub(crate) fn worst_usage(
    cand: &Candidate,
    body: &Map<String, Value>,
    shape: Shape,
    admitted: &Admitted,
) -> Usage {
    admitted.reserved.unwrap_or_else(|| match shape {
        Shape::Chat => {
            let n = body.get("n").and_then(Value::as_u64).unwrap_or(1).max(1);
            let cap = requested_cap(body)
                .unwrap_or_else(|| cand.default_cap.map_or(FALLBACK_OUTPUT_CAP, u64::from));
            reserved(prompt_upper_bound(body), cap, n)
        }
        Shape::Embeddings => Usage {
            input_tokens: body.get("input").map_or(0, |v| v.to_string().len() as u64),
            ..Usage::default()
        },
    })
}

fn reserved(input: u64, cap: u64, n: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: cap.saturating_mul(n),
        ..Usage::default()
    }
}

/// Admits a request against the budgets. May write the output cap into `body`.
pub(crate) fn admit(
    gw: &Gateway,
    row: &mut LedgerRow,
    cand: &Candidate,
    body: &mut Map<String, Value>,
    shape: Shape,
) -> Result<Admitted, ApiError> {
    let logical_model = cand.logical.as_str();
    // A policy's cap comes first, so the worst case below is computed on it.
    let mut policy_clamp = None;
    if let (Some(cap), Shape::Chat) = (cand.policy_cap, &shape) {
        let cap = u64::from(cap);
        if requested_cap(body).is_none_or(|c| c > cap) {
            body.insert(cap_field(body, &cand.deployment.model).into(), cap.into());
            policy_clamp = Some(cap);
        }
    }
    let none = Admitted {
        reservation: None,
        clamped_to: policy_clamp,
        fitted: false,
        reserved: None,
    };
    // An unpriced request (pricing.unknown_model: allow) costs 0 and cannot be budgeted.
    let Some((price, _)) = &cand.price else {
        return Ok(none);
    };
    let budgets = &gw.0.budgets;
    if !budgets.any_match(&row.attribution, logical_model) {
        return Ok(none);
    }
    let TokenBound {
        input,
        n,
        out_cap,
        explicit,
    } = token_bound(gw, cand, body, shape);
    let worst = worst_case_cost(input, out_cap.saturating_mul(n), price);
    let minimum = match shape {
        Shape::Chat => worst_case_cost(
            input,
            MIN_ANSWER_TOKENS.min(out_cap).saturating_mul(n),
            price,
        ),
        Shape::Embeddings => worst,
    };
    let ask = Ask {
        attribution: &row.attribution,
        model: logical_model,
        worst_case: worst,
        minimum: minimum.min(worst),
        now_ms: row.started_at_ms,
        ttl_ms: RESERVATION_TTL_MS,
    };
    let admission = budgets.admit(&ask);
    // The decision first, then the soft and shadow notes.
    let mut actions: Vec<PolicyAction> = Vec::new();
    if let Some(a) = admission.advisory() {
        let soft = (a.soft_exceeded.iter()).map(|b| PolicyAction::SoftExceeded(b.to_string()));
        let deny = (a.would_deny.iter()).map(|b| PolicyAction::ShadowBlock(b.to_string()));
        let fit = (a.would_fit.iter()).map(|b| PolicyAction::ShadowCap(b.to_string()));
        actions.extend(soft.chain(deny).chain(fit));
    }
    let result = match admission {
        Admission::Admitted { reservation, .. } => {
            let mut clamped_to = policy_clamp;
            if !explicit && matches!(shape, Shape::Chat) {
                // Reserved against the model's cap: make the provider honour it.
                body.insert(
                    cap_field(body, &cand.deployment.model).into(),
                    out_cap.into(),
                );
                clamped_to = Some(out_cap);
            }
            Ok(Admitted {
                reservation: Some(reservation),
                clamped_to,
                fitted: false,
                reserved: Some(reserved(input, out_cap, n)),
            })
        }
        Admission::Fitted {
            reservation,
            allowed,
            ..
        } => {
            let cap = fit_cap(input, n, allowed, price).max(1);
            body.insert(cap_field(body, &cand.deployment.model).into(), cap.into());
            actions.insert(0, PolicyAction::CapMaxTokens(cap));
            Ok(Admitted {
                reservation: Some(reservation),
                clamped_to: Some(cap),
                fitted: true,
                reserved: Some(reserved(input, cap, n)),
            })
        }
        Admission::Denied {
            budget,
            window,
            remaining,
            window_end_ms,
            retry_after_secs,
            ..
        } => {
            actions.insert(0, PolicyAction::BudgetBlock(budget.to_string()));
            let resets = jiff::Timestamp::from_millisecond(window_end_ms)
                .map(|t| t.to_string())
                .unwrap_or_default();
            Err(ApiError::new(
                ErrorCode::BudgetExceeded,
                format!(
                    "budget '{budget}' ({window} window) has ${} left, less than the minimal \
                     cost of this request (${}); it resets at {resets}",
                    remaining.to_usd_string(),
                    minimum.to_usd_string(),
                ),
            )
            .with_retry_after(retry_after_secs.max(1)))
        }
        Admission::Unavailable { budget, reason } => Err(ApiError::new(
            ErrorCode::BudgetUnavailable,
            format!("budget '{budget}' could not be evaluated: {reason}"),
        )),
    };
    for a in actions {
        row.policy_actions.push(a);
    }
    result
}

/// Seeds the counters of every budget that needs it from the ledger, so a restart (or a budget
/// created mid-window) counts the spend already recorded in its current window. Blocking
/// (SQL): call from start-up or `spawn_blocking`.
pub fn seed_from_ledger(
    budgets: &tollgate_policy::Budgets,
    store: &tollgate_store::Store,
    now_ms: i64,
) -> Result<usize, String> {
    seed(budgets, store, budgets.seed_plan(now_ms), now_ms)
}

/// Re-seeds every budget after `tollgate ledger import` added rows to the ledger this process
/// did not settle: the current window's rows from before each counter went live, plus the
/// imported rows since (live spend holds everything else). Blocking (SQL).
pub(crate) fn reseed_after_import(
    budgets: &tollgate_policy::Budgets,
    store: &tollgate_store::Store,
    now_ms: i64,
) -> Result<usize, String> {
    seed(budgets, store, budgets.reseed_plan(now_ms), now_ms)
}

/// The ledger rows a budget or policy scope covers, started in `from_ms..to_ms`.
pub(crate) fn scope_filter(
    s: &tollgate_policy::Scope,
    from_ms: i64,
    to_ms: i64,
) -> tollgate_store::RowFilter {
    tollgate_store::RowFilter {
        key_id: s.key.clone(),
        team: s.team.clone(),
        tenant: s.tenant.clone(),
        feature: s.feature.clone(),
        user: s.user.clone(),
        model: s.model.clone(),
        from_ms: Some(from_ms),
        to_ms: Some(to_ms),
        ..Default::default()
    }
}

fn seed(
    budgets: &tollgate_policy::Budgets,
    store: &tollgate_store::Store,
    plan: Vec<tollgate_policy::SeedQuery>,
    now_ms: i64,
) -> Result<usize, String> {
    let mut seeded = 0;
    for q in plan {
        let before = scope_filter(&q.scope, q.from_ms, q.to_ms);
        // Rows started since the counter went live are live spend — unless another instance
        // served them and they were imported here.
        let imported = tollgate_store::RowFilter {
            from_ms: Some(q.to_ms),
            to_ms: Some(now_ms.saturating_add(1)),
            imported_only: true,
            ..before.clone()
        };
        let err = |e: tollgate_store::StoreError| e.to_string();
        let spend = match q.bucket_ms {
            None => tollgate_policy::SeedSpend::Total(NanoUsd(
                store
                    .totals(&before)
                    .map_err(err)?
                    .1
                    .nanos()
                    .saturating_add(store.totals(&imported).map_err(err)?.1.nanos()),
            )),
            Some(b) => {
                let mut buckets = store.cost_buckets(&before, b).map_err(err)?;
                buckets.extend(store.cost_buckets(&imported, b).map_err(err)?);
                tollgate_policy::SeedSpend::Buckets(buckets)
            }
        };
        budgets
            .seed(&q, spend)
            .map_err(|e| format!("budget '{}': {e}", q.budget))?;
        seeded += 1;
    }
    Ok(seeded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price() -> ModelPrice {
        ModelPrice {
            input: NanoUsd(150_000_000),
            cached_input: Some(NanoUsd(75_000_000)),
            cache_write: None,
            output: NanoUsd(600_000_000),
        }
    }

    #[test]
    fn fitted_cap_never_exceeds_allowed() {
        let p = price();
        // Admission only fits when `allowed` covers the prompt plus a minimal answer.
        for allowed in [30_000i64, 123_456, 999_999, 5_000_000] {
            for n in [1u64, 2, 3] {
                let cap = fit_cap(100, n, NanoUsd(allowed), &p);
                assert!(worst_case_cost(100, cap * n, &p) <= NanoUsd(allowed));
                assert!(
                    worst_case_cost(100, (cap + 1) * n, &p) > NanoUsd(allowed),
                    "{allowed} {n}"
                );
            }
        }
    }

    #[test]
    fn cap_field_follows_the_client_then_the_model() {
        let m = |s: &str| -> Map<String, Value> { serde_json::from_str(s).unwrap() };
        assert_eq!(cap_field(&m(r#"{"max_tokens":5}"#), "gpt-5"), "max_tokens");
        assert_eq!(cap_field(&m("{}"), "gpt-5-mini"), "max_completion_tokens");
        assert_eq!(cap_field(&m("{}"), "gpt-4o"), "max_tokens");
    }
}
