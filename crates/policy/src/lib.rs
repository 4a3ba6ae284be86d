//! The budget engine: budgets that hold while traffic is live, by **reserving before, metering
//! during, settling after** (docs/contracts.md §1 "Budget", §2
//! invariants 2–5).
//!
//! Pure logic and an in-process counter store: no async runtime, no HTTP, no SQL. The server
//! wires it in: it builds an [`Ask`] per request, turns an [`Admission`] into a response (or a
//! clamped `max_tokens`), settles or releases the [`Reservation`] when the request ends, calls
//! [`Budgets::expire`] every few seconds, and seeds counters from the ledger at start-up
//! ([`Budgets::seed_plan`]).
//!
//! | module | owns |
//! |---|---|
//! | [`def`] | [`BudgetDef`], [`Scope`], [`Window`], [`Mode`]: parsing and validation |
//! | [`window`] | calendar window bounds in a time zone (`jiff`), rolling-window buckets |
//! | [`store`] | the [`CounterStore`] trait (atomic multi-key reserve) and [`MemoryStore`] |
//! | [`engine`] | [`Budgets`]: matching, admission with fitting, settle / release / expire, status, seeding |
//! | [`clock`] | the injectable [`Clock`] |
//! | [`ratelimit`] | [`RateLimits`]: requests and tokens per minute on the same counter store, one atomic reserve per request |
//! | [`rules`] | spend policies: graded ladders (alert / downgrade / cap / reroute / block) over budget utilisation, forecast, burn rate and revenue share, with hysteresis, shadow mode and a decision log |
//!
//! # How admission works
//! Every budget whose scope matches the request is found through an index on the scope fields
//! (cheap with thousands of budgets). One atomic [`CounterStore::try_reserve`] then checks
//! every **hard** budget's `limit − spent − reserved` and reserves on **all** matching budgets
//! (hard, soft and shadow — the latter two are tracked, never blocking) or on none:
//! - the worst case fits everywhere → [`Admission::Admitted`];
//! - it does not, but the tightest hard budget still has at least `minimum` → that room is
//!   reserved, in the same atomic step (no read-then-reserve race, no retry loop) →
//!   [`Admission::Fitted`], and the server clamps `max_tokens` to it;
//! - otherwise nothing is reserved → [`Admission::Denied`] with the budget and seconds until
//!   room appears (calendar: the reset; rolling: when enough spend ages out).
//!
//! # Overspend bound
//! For a hard budget and one window, settled spend ≤ `limit + E + L`, where
//! - `E` = Σ over settles of `(actual − reserved)⁺`: the reservation was an under-estimate.
//!   Reported per settle as [`Settlement::excess`]. Zero when the worst case is a true upper
//!   bound (exact token counts and `max_tokens`, as for OpenAI-tokenised models);
//! - `L` = Σ `actual` of settles that arrive after their reservation expired (TTL passed,
//!   room given back and possibly taken by others). Reported as [`Settlement::late`]. Zero
//!   when the TTL is longer than the longest request.
//!
//! The engine never grants a reservation that takes `spent + reserved` past a hard limit, and
//! nothing else loosens it: rolling-window bucketing and seeding from the ledger can only
//! over-count (see [`window`] and [`Budgets::seed_plan`]). Administrative changes are not
//! overspend: lowering a limit below what is already spent or held, or seeding a window whose
//! ledger spend already exceeds it, denies new requests but claws nothing back.
//!
//! # Fail-closed / fail-open
//! - Definitions are validated when installed (unknown time zone, bad window, negative
//!   limit → [`DefError`] naming the field); admission never sees an invalid budget.
//! - When a **hard** budget cannot be evaluated — the counter store is unavailable (only
//!   possible with a remote store) or the clock is outside the calendar's range — admission
//!   fails **closed**: [`Admission::Unavailable`], nothing reserved (the server answers 503).
//! - **Soft** and **shadow** budgets fail **open**: if only they match and the store is
//!   unavailable, the request is admitted untracked and [`Advisory::store_error`] says so.
//! - A request that dies without settling holds its reservation until its TTL, then
//!   [`Budgets::expire`] frees it — stricter (room held) until then, never looser.
//! - [`MemoryStore`] lives in the process: a restart loses live counters and in-flight
//!   reservations, and the server rebuilds spend from the ledger before serving
//!   ([`Budgets::seed_plan`], [`Budgets::seed`]) — a restart never resets a budget.
//!
//! Money is [`NanoUsd`](tollgate_types::NanoUsd) throughout; forecasts use `i128`; no floats.

pub mod clock;
pub mod def;
pub mod engine;
mod index;
pub mod ratelimit;
pub mod rules;
pub mod store;
pub mod window;

pub use clock::{Clock, ManualClock, SystemClock};
pub use def::{BudgetDef, DefError, MAX_ROLLING_MS, Mode, RollingUnit, Scope, Window};
pub use engine::{
    Admission, Advisory, Ask, BudgetError, BudgetStatus, Budgets, Reservation, ReservationState,
    SeedQuery, Settlement, Upserted, linear_forecast,
};
pub use ratelimit::{
    Dimension, Per, Quota, Quotas, RateAdmission, RateAsk, RateHold, RateLimitDef, RateLimits,
};
pub use store::{
    CounterKey, CounterStore, Counts, Entry, Grant, MemoryStore, Refusal, Room, SeedSpend, Slot,
};
pub use window::WindowError;
