//! `tollgate export focus`: the ledger as a FOCUS file, written atomically.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tollgate_config::Config;
use tollgate_finance::focus::{Dataset, Exporter, Format, Options, Summary, Version};

use crate::assemble;
use tollgate_store::{RowFilter, Store};

/// Rows between progress lines on a terminal.
const PROGRESS_EVERY: u64 = 100_000;

/// A validated export request.
pub struct FocusJob {
    pub from_ms: i64,
    pub to_ms: i64,
    pub version: Version,
    pub dataset: Dataset,
    pub format: Format,
    pub output: Option<PathBuf>,
}

/// Runs the export: rows in `[from, to)` by start time → CSV on stdout or `output`.
pub fn run(cfg: &Config, store: &Store, job: &FocusJob) -> Result<Summary> {
    let mut opts = Options {
        version: job.version,
        dataset: job.dataset,
        format: job.format,
        ..assemble::focus_options(cfg)
    };
    opts.pools =
        tollgate_server::allocation_pools(store, &opts.allocations, job.from_ms, job.to_ms)
            .context("reading the ledger for the allocation pools")?;
    let filter = RowFilter {
        from_ms: Some(job.from_ms),
        to_ms: Some(job.to_ms),
        ..Default::default()
    };
    match &job.output {
        None => {
            let stdout = std::io::stdout();
            let (summary, mut w) = export(store, &filter, opts, std::io::BufWriter::new(stdout))?;
            w.flush()?;
            Ok(summary)
        }
        Some(path) => write_atomically(path, |file| {
            let (summary, w) = export(store, &filter, opts, std::io::BufWriter::new(file))?;
            let file = w.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            Ok(summary)
        }),
    }
}

fn export<W: Write + Send>(
    store: &Store,
    filter: &RowFilter,
    opts: Options,
    out: W,
) -> Result<(Summary, W)> {
    let mut exporter = Exporter::new(opts, out)?;
    let progress = std::io::stderr().is_terminal();
    let mut n: u64 = 0;
    store
        .scan_rows(filter, |row| {
            exporter.push(&row)?;
            n += 1;
            if progress && n.is_multiple_of(PROGRESS_EVERY) {
                eprint!("\rexport: {n} ledger rows read");
            }
            Ok::<(), tollgate_finance::focus::ExportError>(())
        })
        .context("reading the ledger")??;
    if progress && n >= PROGRESS_EVERY {
        eprintln!();
    }
    Ok(exporter.finish()?)
}

/// Writes through a temporary file next to `path` and renames it into place, so an export that
/// fails or is interrupted never leaves a truncated file under the target name.
pub(crate) fn write_atomically<T>(
    path: &Path,
    f: impl FnOnce(std::fs::File) -> Result<T>,
) -> Result<T> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Some(name) = path.file_name() else {
        bail!("-o {}: not a file name", path.display());
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    match f(file) {
        Ok(v) => {
            std::fs::rename(&tmp, path)
                .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
            Ok(v)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}
