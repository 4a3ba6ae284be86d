//! Fills a ledger with synthetic rows, for the export benchmark (`bench/focus_export.sh`).
//!
//! `cargo run --release -p tollgate --example seed_ledger -- ROWS sqlite:///path/ledger.db`
//! writes ROWS rows spread evenly over 30 days from 2026-06-01T00:00:00Z: 50 tenants, 4 teams,
//! 3 features, 4 models on 2 providers, every token class, 5 % rejected. Deterministic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark tool

use tollgate_store::Store;
use tollgate_types::{Attribution, LedgerRow, NanoUsd, Outcome, UnitPrices, Usage};

const START_MS: i64 = 1_780_272_000_000; // 2026-06-01T00:00:00Z
const SPAN_MS: i64 = 30 * 86_400_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .expect("ROWS")
        .parse()
        .expect("ROWS is a number");
    let url = args.next().expect("sqlite:// URL");
    let store = Store::open(&url).expect("open store");
    let models = [
        (
            "openai",
            "gpt-4o-mini",
            [150_000_000, 75_000_000, 150_000_000, 600_000_000],
        ),
        (
            "openai",
            "gpt-4o",
            [2_500_000_000, 1_250_000_000, 2_500_000_000, 10_000_000_000],
        ),
        (
            "claude",
            "claude-sonnet-4-5",
            [3_000_000_000, 300_000_000, 3_750_000_000, 15_000_000_000],
        ),
        (
            "claude",
            "claude-haiku-4-5",
            [1_000_000_000, 100_000_000, 1_250_000_000, 5_000_000_000],
        ),
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let started = std::time::Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..n {
        let at = START_MS + (i as i128 * SPAN_MS as i128 / n.max(1) as i128) as i64;
        let r = next();
        let (provider, model, p) = models[(r % 4) as usize];
        let mut row = LedgerRow::start(format!("req_{i:032x}"), at, "/v1/chat/completions");
        row.attribution = Attribution {
            tenant: Some(format!("tenant-{:02}", (r >> 8) % 50)),
            team: Some(format!("team-{}", (r >> 16) % 4)),
            feature: Some(["chat", "search", "summarize"][((r >> 20) % 3) as usize].into()),
            key_id: Some(format!("key_{:04}", (r >> 24) % 200)),
            ..Default::default()
        };
        row.requested_model = Some(model.into());
        row.served_model = Some(model.into());
        row.provider = Some(provider.into());
        row.deployment = Some(format!("{provider}/{model}"));
        row.price_version = Some("builtin-2026-07-24".into());
        let prices = UnitPrices {
            input: NanoUsd(p[0]),
            cached_input: NanoUsd(p[1]),
            cache_write: NanoUsd(p[2]),
            output: NanoUsd(p[3]),
        };
        row.unit_prices = Some(prices);
        if (r >> 32) % 20 == 0 {
            row.outcome = Outcome::Rejected;
            row.status = 429;
        } else {
            let input = 200 + (r >> 36) % 4_000;
            let cached = if (r >> 40) % 3 == 0 { input / 2 } else { 0 };
            let write = if provider == "claude" && (r >> 44) % 5 == 0 {
                input / 4
            } else {
                0
            };
            let output = 20 + (r >> 48) % 800;
            row.usage = Usage {
                input_tokens: input,
                cached_input_tokens: cached,
                cache_write_input_tokens: write,
                output_tokens: output,
                reasoning_tokens: 0,
            };
            row.attempts = 1;
            row.status = 200;
            let c = tollgate_pricing::cost(
                &row.usage,
                &tollgate_pricing::ModelPrice {
                    input: prices.input,
                    cached_input: Some(prices.cached_input),
                    cache_write: Some(prices.cache_write),
                    output: prices.output,
                },
            );
            row.list_cost = c;
            row.effective_cost = c;
        }
        batch.push(row);
        if batch.len() == batch.capacity() {
            store.insert_rows(&batch).expect("insert");
            batch.clear();
        }
    }
    store.insert_rows(&batch).expect("insert");
    eprintln!("seeded {n} rows in {:.1}s", started.elapsed().as_secs_f64());
}
