//! `tollgate ledger export|import`: ledger rows as JSON lines, one row per line in the shape
//! of `GET /admin/v1/requests` items, to back up history, move it between instances or seed a
//! new one. Reports and exports see imported rows at once; a running gateway adds them to its
//! budgets within a key-poll interval (imported rows are marked, and each import bumps a
//! counter the gateway polls).

use std::io::{BufRead, BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use tollgate_store::{RowFilter, Store};
use tollgate_types::LedgerRow;

use crate::export::write_atomically;

/// Rows per insert transaction.
const BATCH: usize = 2_000;
/// Bad lines listed in an error at most.
const SHOWN: usize = 20;

/// Writes the rows started in `[from, to)`, oldest first; returns how many.
pub fn export(store: &Store, from_ms: i64, to_ms: i64, output: Option<&Path>) -> Result<u64> {
    let filter = RowFilter {
        from_ms: Some(from_ms),
        to_ms: Some(to_ms),
        ..Default::default()
    };
    let write = |out: &mut dyn Write| -> Result<u64> {
        let mut n = 0u64;
        store
            .scan_rows(&filter, |row| {
                serde_json::to_writer(&mut *out, &row)?;
                out.write_all(b"\n").map_err(serde_json::Error::io)?;
                n += 1;
                Ok::<(), serde_json::Error>(())
            })
            .context("reading the ledger")??;
        Ok(n)
    };
    match output {
        None => {
            let mut out = BufWriter::new(std::io::stdout().lock());
            let n = write(&mut out)?;
            out.flush()?;
            Ok(n)
        }
        Some(path) => write_atomically(path, |file| {
            let mut out = BufWriter::new(file);
            let n = write(&mut out)?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            Ok(n)
        }),
    }
}

/// What an import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Imported {
    /// Valid rows read.
    pub valid: u64,
    /// Rows stored now; the rest of the valid ones were already in the ledger.
    pub inserted: u64,
    /// Invalid lines skipped (`--skip-invalid`), with the reason of each, first ones only.
    pub skipped: Vec<(u64, String)>,
    pub skipped_total: u64,
}

/// Loads a JSON-lines file. Every line is checked first; without `skip_invalid` one bad line
/// refuses the whole file (listing the line numbers), so nothing partial is imported. Rows
/// already in the ledger (same `request_id`) are left as they are: importing twice is a no-op.
pub fn import(store: &Store, path: &Path, skip_invalid: bool) -> Result<Imported> {
    let mut report = Imported::default();
    for_each_line(path, |line_no, parsed| {
        if let Err(reason) = parsed {
            report.skipped_total += 1;
            if report.skipped.len() < SHOWN {
                report.skipped.push((line_no, reason));
            }
        }
        Ok(())
    })?;
    if report.skipped_total > 0 && !skip_invalid {
        let lines: Vec<String> = report
            .skipped
            .iter()
            .map(|(n, why)| format!("  line {n}: {why}"))
            .collect();
        let more = report.skipped_total - report.skipped.len() as u64;
        bail!(
            "{}: {} invalid line(s); nothing imported (pass --skip-invalid to import the rest)\n{}{}",
            path.display(),
            report.skipped_total,
            lines.join("\n"),
            if more > 0 {
                format!("\n  … and {more} more")
            } else {
                String::new()
            }
        );
    }
    let mut batch = Vec::with_capacity(BATCH);
    let flush = |batch: &mut Vec<LedgerRow>, report: &mut Imported| -> Result<()> {
        report.inserted += store.import_rows(batch).context("writing imported rows")? as u64;
        batch.clear();
        Ok(())
    };
    for_each_line(path, |_, parsed| {
        if let Ok(row) = parsed {
            report.valid += 1;
            batch.push(row);
            if batch.len() == BATCH {
                flush(&mut batch, &mut report)?;
            }
        }
        Ok(())
    })?;
    flush(&mut batch, &mut report)?;
    Ok(report)
}

/// Reads `path` line by line (blank lines ignored) and parses and checks each one.
fn for_each_line(
    path: &Path,
    mut f: impl FnMut(u64, Result<LedgerRow, String>) -> Result<()>,
) -> Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<LedgerRow>(&line)
            .map_err(|e| e.to_string())
            .and_then(|row| row.check().map(|()| row));
        f(i as u64 + 1, parsed)?;
    }
    Ok(())
}
