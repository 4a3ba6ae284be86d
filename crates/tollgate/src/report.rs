//! Rendering spend reports for people (table), spreadsheets (CSV) and programs (JSON).

use std::fmt::Write;

use tollgate_store::{Dim, SpendRow};
use tollgate_types::NanoUsd;

use crate::cli::Format;

/// Column names a group-by dimension contributes (`key` → key_id, key_name).
fn dim_columns(dims: &[Dim]) -> Vec<String> {
    let mut cols = Vec::new();
    for d in dims {
        match d {
            Dim::Key => {
                cols.push("key_id".to_string());
                cols.push("key_name".to_string());
            }
            other => cols.push(other.as_str().to_string()),
        }
    }
    cols
}

pub fn spend(dims: &[Dim], rows: &[SpendRow], format: Format) -> String {
    let mut header = dim_columns(dims);
    header.extend(
        [
            "requests",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "estimated_rows",
        ]
        .map(String::from),
    );
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut line: Vec<String> = dim_columns(dims)
                .iter()
                .map(|c| r.dims.get(c).cloned().unwrap_or_default())
                .collect();
            line.push(r.requests.to_string());
            line.push(r.input_tokens.to_string());
            line.push(r.output_tokens.to_string());
            line.push(match format {
                Format::Table => r.effective_cost.to_usd_fixed(6),
                _ => r.effective_cost.to_usd_string(),
            });
            line.push(r.estimated_rows.to_string());
            line
        })
        .collect();
    match format {
        Format::Json => {
            let v: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    let mut m = serde_json::Map::new();
                    for (k, v) in &r.dims {
                        m.insert(k.clone(), v.clone().into());
                    }
                    m.insert("requests".into(), r.requests.into());
                    m.insert("input_tokens".into(), r.input_tokens.into());
                    m.insert("cached_input_tokens".into(), r.cached_input_tokens.into());
                    m.insert("output_tokens".into(), r.output_tokens.into());
                    m.insert("reasoning_tokens".into(), r.reasoning_tokens.into());
                    m.insert("cost_usd".into(), r.effective_cost.to_usd_string().into());
                    m.insert("estimated_rows".into(), r.estimated_rows.into());
                    serde_json::Value::Object(m)
                })
                .collect();
            format!("{}\n", serde_json::Value::Array(v))
        }
        Format::Csv => {
            let mut s = String::new();
            let _ = writeln!(
                s,
                "{}",
                header.iter().map(|h| csv(h)).collect::<Vec<_>>().join(",")
            );
            for line in &body {
                let _ = writeln!(
                    s,
                    "{}",
                    line.iter().map(|c| csv(c)).collect::<Vec<_>>().join(",")
                );
            }
            s
        }
        Format::Table => {
            let total: NanoUsd = rows.iter().map(|r| r.effective_cost).sum();
            let requests: u64 = rows.iter().map(|r| r.requests).sum();
            let refs: Vec<&str> = header.iter().map(String::as_str).collect();
            let mut s = table(&refs, &body);
            let _ = writeln!(s, "total: {requests} requests, ${}", total.to_usd_fixed(6));
            s
        }
    }
}

fn csv(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A plain aligned text table.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut s = String::new();
    let line = |s: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let parts: Vec<String> = cells
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths.get(i).copied().unwrap_or(0)))
            .collect();
        let _ = writeln!(s, "{}", parts.join("  ").trim_end());
    };
    line(&mut s, &mut header.iter().copied());
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    let _ = writeln!(s, "{}", rule.join("  "));
    for r in rows {
        line(&mut s, &mut r.iter().map(String::as_str));
    }
    s
}
