//! The ledger import line reader (`tollgate ledger import`, `crates/tollgate/src/ledger_io.rs`),
//! reproduced through the public API it uses: the file's lines (blank ones skipped), each parsed
//! as a `tollgate_types::LedgerRow` from JSON and checked with `LedgerRow::check`.
//!
//! Invariants: no panic; an accepted row satisfies what `check` promises (an id, a positive
//! time, no negative money, token counts that add up); exporting it (`serde_json::to_string`,
//! as `ledger export` writes it) gives one line that imports back to the same row; every money
//! field round-trips through its decimal text exactly.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_types::{LedgerRow, NanoUsd};

fn read(line: &str) -> Result<LedgerRow, String> {
    serde_json::from_str::<LedgerRow>(line)
        .map_err(|e| e.to_string())
        .and_then(|row| row.check().map(|()| row))
}

fn money(row: &LedgerRow) -> Vec<NanoUsd> {
    let mut m = vec![row.list_cost, row.effective_cost, row.saved_cost];
    if let Some(p) = row.unit_prices {
        m.extend([p.input, p.cached_input, p.cache_write, p.output]);
    }
    m
}

fuzz_target!(|data: &[u8]| {
    // `BufRead::lines` fails on a line that is not UTF-8, which refuses the file.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(row) = read(line) else {
            continue;
        };
        assert!(!row.request_id.trim().is_empty());
        assert!(row.started_at_ms > 0);
        let u = &row.usage;
        assert!(
            u.cached_input_tokens
                .saturating_add(u.cache_write_input_tokens)
                <= u.input_tokens
        );
        assert!(u.reasoning_tokens <= u.output_tokens);
        for v in money(&row) {
            assert!(v.nanos() >= 0, "{v:?}");
            assert_eq!(NanoUsd::parse_usd(&v.to_usd_string()), Ok(v), "{v:?}");
        }

        let exported = serde_json::to_string(&row).expect("a row serialises");
        assert!(!exported.contains('\n'), "an exported row is one line");
        let again = read(&exported).expect("an exported row imports");
        assert_eq!(again, row, "export → import round trip");
    }
});
