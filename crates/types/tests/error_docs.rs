//! `docs/errors.md` lists every stable error code with its status and type; this test keeps the
//! document and the table in `error.rs` identical, so neither can drift.

use tollgate_types::ErrorCode;

fn expected_table() -> String {
    let mut s = String::from("| code | HTTP | type | origin | meaning |\n|---|---|---|---|---|\n");
    for c in ErrorCode::ALL {
        s.push_str(&format!(
            "| `{}` | {} | `{}` | {} | {} |\n",
            c.as_str(),
            c.status(),
            c.error_type(),
            c.origin().as_str(),
            c.description()
        ));
    }
    s
}

#[test]
fn docs_table_matches_code() {
    let doc = include_str!("../../../docs/errors.md");
    let table = expected_table();
    assert!(
        doc.contains(&table),
        "docs/errors.md is out of date; its table must be exactly:\n{table}"
    );
}
