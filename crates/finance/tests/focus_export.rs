#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Tollgate's own FOCUS 1.2 exports, checked against every applicable rule of the FOCUS 1.2
//! requirements model (`focus_model`): ledgers with several tenants, sub-accounts, providers,
//! every token class, unpriced and rejected requests, tags and a month boundary.

#[allow(dead_code)] // the checker's API serves focus_rules.rs too
mod focus_model;

use std::collections::BTreeMap;

use tollgate_finance::focus::{Dataset, Exporter, Format, Options, Publisher, Terms, Version};
use tollgate_types::{Attribution, LedgerRow, NanoUsd, Outcome, PolicyActions, UnitPrices, Usage};

fn options() -> Options {
    Options {
        version: Version::V1_2,
        dataset: Dataset::Cost,
        format: Format::Csv,
        tenants: BTreeMap::new(),
        allocations: Vec::new(),
        pools: Vec::new(),
        issuer: "Example Operator Ltd".into(),
        currency: "USD".into(),
        publishers: BTreeMap::from([
            (
                "openai".to_string(),
                Publisher {
                    name: "OpenAI".into(),
                    service: "OpenAI API".into(),
                },
            ),
            (
                "claude".to_string(),
                Publisher {
                    name: "Anthropic".into(),
                    service: "Anthropic API".into(),
                },
            ),
        ]),
    }
}

fn ledger() -> Vec<LedgerRow> {
    let t0 = 1_780_268_400_000; // 2026-05-31T23:00:00Z
    (0..60u64)
        .map(|i| {
            let mut r = LedgerRow::start(
                format!("req_{i:032x}"),
                t0 + i as i64 * 120_000,
                "/v1/chat/completions",
            );
            r.attribution = Attribution {
                tenant: [Some("acme"), Some("globex"), None][(i % 3) as usize].map(String::from),
                team: (i % 2 == 0).then(|| "search".to_string()),
                key_id: Some(format!("key_{}", i % 4)),
                key_name: Some(format!("app-{}", i % 4)),
                feature: [Some("chat"), None][(i % 2) as usize].map(String::from),
                tags: if i % 5 == 0 {
                    BTreeMap::from([("env".to_string(), "prod".to_string())])
                } else {
                    BTreeMap::new()
                },
                ..Default::default()
            };
            let claude = i % 2 == 1;
            r.provider = Some(if claude { "claude" } else { "openai" }.into());
            r.served_model = Some(
                if claude {
                    "claude-sonnet-4-5"
                } else {
                    "gpt-4o-mini"
                }
                .into(),
            );
            r.requested_model = r.served_model.clone();
            r.price_version = Some("builtin-2026-07-24".into());
            r.unit_prices = Some(if claude {
                UnitPrices {
                    input: NanoUsd(3_000_000_000),
                    cached_input: NanoUsd(300_000_000),
                    cache_write: NanoUsd(3_750_000_000),
                    output: NanoUsd(15_000_000_000),
                }
            } else {
                UnitPrices {
                    input: NanoUsd(150_000_000),
                    cached_input: NanoUsd(75_000_000),
                    cache_write: NanoUsd(150_000_000),
                    output: NanoUsd(600_000_000),
                }
            });
            r.usage = Usage {
                input_tokens: 1_000 + i * 13,
                cached_input_tokens: if i % 3 == 0 { 256 } else { 0 },
                cache_write_input_tokens: if claude && i % 4 == 1 { 100 } else { 0 },
                output_tokens: 40 + i,
                reasoning_tokens: if i % 6 == 0 { 10 } else { 0 },
            };
            r.effective_cost = NanoUsd(1_000 + i as i64 * 7_919);
            r.list_cost = r.effective_cost;
            if i % 9 == 4 {
                r.outcome = Outcome::Rejected;
                r.usage = Usage::default();
                r.effective_cost = NanoUsd::ZERO;
                r.list_cost = NanoUsd::ZERO;
                r.policy_actions = PolicyActions::parse("cap_max_tokens=120");
            }
            if i == 7 {
                // Unpriced and never routed.
                r.provider = None;
                r.served_model = None;
                r.unit_prices = None;
                r.price_version = None;
                r.unpriced = true;
            }
            r
        })
        .collect()
}

fn export(rows: &[LedgerRow]) -> String {
    export_with(options(), rows)
}

fn export_with(opts: Options, rows: &[LedgerRow]) -> String {
    String::from_utf8(run(opts, rows).1).unwrap()
}

fn run(opts: Options, rows: &[LedgerRow]) -> (tollgate_finance::focus::Summary, Vec<u8>) {
    let mut e = Exporter::new(opts, Vec::new()).unwrap();
    for r in rows {
        e.push(r).unwrap();
    }
    e.finish().unwrap()
}

fn assert_passes(csv: &str) {
    let report = focus_model::check_csv(csv, focus_model::GATEWAY_CRITERIA);
    assert!(report.model_errors.is_empty(), "{}", report.summary());
    assert!(report.checked.len() > 200, "{}", report.summary());
    let failed: Vec<String> = report
        .failures
        .iter()
        .map(|f| format!("{} ({}): {}", f.rule, f.keyword, f.requirement))
        .collect();
    assert!(
        failed.is_empty(),
        "{}\n{}",
        failed.join("\n"),
        report.summary()
    );
}

#[test]
fn chargeback_exports_satisfy_the_focus_1_2_requirements_model() {
    let mut opts = options();
    opts.dataset = Dataset::Chargeback;
    opts.tenants.insert(
        "acme".into(),
        Terms {
            markup_bp: 1_250,
            ..Default::default()
        },
    );
    opts.tenants.insert(
        "globex".into(),
        Terms {
            price_list: BTreeMap::from([(
                "claude-sonnet-4-5".to_string(),
                [4_000_000_000, 400_000_000, 5_000_000_000, 20_000_000_000],
            )]),
            ..Default::default()
        },
    );
    assert_passes(&export_with(opts, &ledger()));
}

#[test]
fn exports_satisfy_the_focus_1_2_requirements_model() {
    assert_passes(&export(&ledger()));
}

#[test]
fn an_empty_range_is_a_valid_file() {
    let csv = export(&[]);
    assert_eq!(csv.lines().count(), 1, "the header only");
}

/// The Parquet file holds the same rows as the CSV, typed: decimals exact at their declared
/// scale, periods as UTC timestamps, counts as integers, nulls as nulls.
#[test]
fn parquet_holds_the_csv_rows_with_explicit_types() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    let rows = ledger();
    let csv = export(&rows);
    let mut opts = options();
    opts.format = Format::Parquet;
    let (summary, bytes) = run(opts, &rows);
    assert_eq!(&bytes[..4], b"PAR1");
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
    let schema = reader.metadata().file_metadata().schema_descr();
    let col = |name: &str| {
        schema
            .columns()
            .iter()
            .find(|c| c.name() == name)
            .unwrap_or_else(|| panic!("{name}"))
            .clone()
    };
    assert_eq!(
        (
            col("BilledCost").type_precision(),
            col("BilledCost").type_scale()
        ),
        (38, 9)
    );
    assert_eq!(col("ListCost").type_scale(), 19);

    let mut rd = ::csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = rd.headers().unwrap().iter().map(String::from).collect();
    let csv_rows: Vec<Vec<String>> = rd
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    let parquet_rows: Vec<parquet::record::Row> = reader
        .get_row_iter(None)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(parquet_rows.len(), csv_rows.len());
    assert_eq!(parquet_rows.len() as u64, summary.focus_rows);
    let mut billed: i128 = 0;
    for (p, c) in parquet_rows.iter().zip(&csv_rows) {
        for (name, field) in p.get_column_iter() {
            let i = header.iter().position(|h| h == name).unwrap();
            let cell = &c[i];
            match field {
                Field::Null => assert_eq!(cell, "", "{name}"),
                Field::Decimal(d) => {
                    let mut be = [0u8; 16];
                    be.copy_from_slice(d.data());
                    let units = i128::from_be_bytes(be);
                    let want = tollgate_finance::decimal::Decimal::parse(cell)
                        .and_then(|x| x.units_at(d.scale() as u8))
                        .unwrap();
                    assert_eq!(units, want, "{name} = {cell}");
                    if name == "BilledCost" {
                        billed += units;
                    }
                }
                Field::Long(n) => assert_eq!(n.to_string(), *cell, "{name}"),
                Field::TimestampMillis(ms) => {
                    let t: jiff::Timestamp = cell.parse().unwrap();
                    assert_eq!(*ms, t.as_millisecond(), "{name}");
                }
                Field::Str(s) => assert_eq!(s, cell, "{name}"),
                other => panic!("{name}: unexpected {other:?}"),
            }
        }
    }
    assert_eq!(billed, i128::from(summary.billed.nanos()));
}
