#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The FOCUS 1.2 Requirements Model, evaluated by `focus_model` on the reference export and on
//! mutations of it. Each mutation must fail with the rule ids named below, and only the
//! rows that were changed.

mod focus_model;

use focus_model::csv::{Cell, parse_records, parse_table, write_records};
use focus_model::decimal::Dec;
use focus_model::{GATEWAY_CRITERIA, Report, check_csv, formats};

/// Passes the official focus_validator v2.0.1 with [`GATEWAY_CRITERIA`].
const REFERENCE: &str = include_str!("focus/llm-tokens-focus-1.2.csv");

fn check(csv: &str) -> Report {
    let report = check_csv(csv, GATEWAY_CRITERIA);
    assert!(
        report.model_errors.is_empty(),
        "model errors:\n{}",
        report.summary()
    );
    report
}

/// The reference file with `edit` applied to its records (record 0 is the header).
fn mutate(edit: impl FnOnce(&mut Vec<Vec<Cell>>)) -> String {
    let mut records = parse_records(REFERENCE).unwrap();
    edit(&mut records);
    write_records(&records)
}

fn column(records: &[Vec<Cell>], name: &str) -> usize {
    records[0]
        .iter()
        .position(|c| c.text == name)
        .unwrap_or_else(|| panic!("no column {name}"))
}

/// Sets `name` in the given 1-based data rows.
fn set(records: &mut [Vec<Cell>], name: &str, rows: &[usize], cell: &Cell) {
    let c = column(records, name);
    for &row in rows {
        records[row][c] = cell.clone();
    }
}

const ALL_ROWS: &[usize] = &[1, 2, 3, 4, 5, 6];

/// Asserts that every rule in `rules` failed on exactly `rows` (empty = dataset level).
fn assert_fails(report: &Report, rules: &[&str], rows: &[usize]) {
    println!("{}", report.summary());
    for rule in rules {
        let failure = report.failure(rule).unwrap_or_else(|| {
            panic!(
                "{rule} did not fail; failed: {:?}\n{}",
                report.failed_rules(),
                report.summary()
            )
        });
        assert_eq!(
            failure.rows,
            rows,
            "{rule} failed on other rows:\n{}",
            report.summary()
        );
    }
}

fn assert_passes(report: &Report, rules: &[&str]) {
    for rule in rules {
        assert!(
            report.checked.iter().any(|c| c == rule),
            "{rule} was not checked"
        );
        assert!(
            report.failure(rule).is_none(),
            "{rule} failed:\n{}",
            report.summary()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The reference file
// ---------------------------------------------------------------------------------------------

#[test]
fn reference_export_passes_every_applicable_rule() {
    let report = check(REFERENCE);
    println!("{}", report.summary());
    println!("checked: {}", report.checked.join(" "));
    for (category, ids) in report.skip_groups() {
        println!("skipped ({category}): {}", ids.join(" "));
    }
    assert!(report.failures.is_empty(), "{}", report.summary());
    assert_eq!(
        report.checked.len() + report.skipped.len(),
        621,
        "every rule is accounted for"
    );
    assert!(
        report.checked.len() >= 200,
        "only {} rules checked",
        report.checked.len()
    );
    // The mandatory columns' core rules are among them.
    assert_passes(
        &report,
        &[
            "CostAndUsage-D-000-M",
            "BilledCost-C-001-M",
            "BillingCurrency-C-006-M",
            "ChargeCategory-C-003-M",
            "ListCost-C-009-C",
            "ContractedUnitPrice-C-011-C",
            "PricingUnit-C-003-O",
            "Tags-C-001-M",
            "InvoiceId-C-003-C",
            "ChargePeriodEnd-C-004-M",
            "ColumnHandling-A-010-M",
        ],
    );
}

#[test]
fn skips_are_explained() {
    let report = check(REFERENCE);
    let reason = |rule: &str| {
        report
            .skip_reason(rule)
            .unwrap_or_else(|| panic!("{rule} not skipped"))
    };
    assert!(reason("InvoiceId-C-004-C").starts_with("model bug: validator bug"));
    assert!(reason("CommitmentDiscountStatus-C-001-M").contains("COMMITMENT_DISCOUNT_SUPPORTED"));
    assert!(reason("RegionId-C-001-M").starts_with("not applicable"));
    assert!(reason("BillingAccountId-C-004-M").starts_with("dynamic"));
    assert!(reason("DateTimeFormat-A-004-M").contains("FormatDateTime"));
    assert!(reason("ListUnitPrice-C-006-O").starts_with("optional"));
    for (id, why) in &report.skipped {
        assert!(why.contains(": "), "{id}: reason without a category: {why}");
    }
}

#[test]
fn crlf_line_ends_change_nothing() {
    let report = check(&REFERENCE.replace('\n', "\r\n"));
    assert!(report.failures.is_empty(), "{}", report.summary());
}

#[test]
fn unquoted_null_literal_is_null() {
    let csv = mutate(|r| set(r, "ChargeClass", ALL_ROWS, &Cell::plain("NULL")));
    assert!(check(&csv).failures.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Mutations that must fail
// ---------------------------------------------------------------------------------------------

#[test]
fn pricing_unit_1m_tokens_fails_unit_format() {
    let csv = mutate(|r| set(r, "PricingUnit", ALL_ROWS, &Cell::plain("1M Tokens")));
    let report = check(&csv);
    assert_fails(&report, &["PricingUnit-C-003-O"], ALL_ROWS);
    assert_eq!(
        report.failure("PricingUnit-C-003-O").unwrap().keyword,
        "SHOULD"
    );
    // A SHOULD violation: the composites above it fail too, but none of this is a MUST.
    assert!(
        report.mandatory_failures().is_empty(),
        "{}",
        report.summary()
    );
    assert_eq!(
        report.failed_rules(),
        ["PricingUnit-C-003-O"],
        "{}",
        report.summary()
    );
}

#[test]
fn quoted_empty_billing_currency_is_an_empty_string_not_null() {
    let csv = mutate(|r| set(r, "BillingCurrency", &[2], &Cell::quoted("")));
    let report = check(&csv);
    assert_fails(
        &report,
        &[
            "BillingCurrency-C-002-M", // FormatString
            "BillingCurrency-C-003-M", // FormatCurrency
            "BillingCurrency-C-006-M", // CheckNationalCurrency
            "NullHandling-A-002-M",    // no empty strings
        ],
        &[2],
    );
    // Not null, so the nullability rule holds.
    assert_passes(&report, &["BillingCurrency-C-004-M"]);
}

#[test]
fn unquoted_empty_billing_currency_is_null() {
    let csv = mutate(|r| set(r, "BillingCurrency", &[2], &Cell::plain("")));
    let report = check(&csv);
    assert_fails(&report, &["BillingCurrency-C-004-M"], &[2]);
    assert_eq!(
        report.failed_rules(),
        ["BillingCurrency-C-004-M"],
        "{}",
        report.summary()
    );
}

#[test]
fn quoted_empty_charge_class_is_not_null() {
    let csv = mutate(|r| set(r, "ChargeClass", &[1], &Cell::quoted("")));
    let report = check(&csv);
    // ChargeClass MUST be "Correction" when it is not null.
    assert_fails(
        &report,
        &["ChargeClass-C-005-C", "NullHandling-A-002-M"],
        &[1],
    );
}

#[test]
fn quote_everything_writer_fails_null_rules() {
    let csv = mutate(|r| {
        for record in r.iter_mut() {
            for cell in record.iter_mut() {
                cell.quoted = true;
            }
        }
    });
    let report = check(&csv);
    assert_fails(
        &report,
        &["ChargeClass-C-005-C", "NullHandling-A-002-M"],
        ALL_ROWS,
    );
}

#[test]
fn lowercase_usage_on_one_row_fails_that_row() {
    let csv = mutate(|r| set(r, "ChargeCategory", &[3], &Cell::plain("usage")));
    let report = check(&csv);
    // The validator passes an enum rule when any row is valid; here every row must be.
    assert_fails(&report, &["ChargeCategory-C-003-M"], &[3]);
    // "usage" is not "Usage", so ConsumedQuantity must be null on that row.
    assert_fails(&report, &["ConsumedQuantity-C-004-C"], &[3]);
}

#[test]
fn date_only_charge_period_start_fails() {
    let csv = mutate(|r| set(r, "ChargePeriodStart", &[1], &Cell::plain("2026-06-15")));
    let report = check(&csv);
    assert_fails(
        &report,
        &["ChargePeriodStart-C-001-M", "ChargePeriodStart-C-002-M"],
        &[1],
    );
}

#[test]
fn accepted_datetime_variants_pass() {
    for value in [
        "2026-06-15 10:00:00Z",
        "2026-06-15T10:00:00+00:00",
        "2026-06-15T10:00:00.000Z",
    ] {
        let csv = mutate(|r| set(r, "ChargePeriodStart", &[1, 2], &Cell::plain(value)));
        let report = check(&csv);
        assert!(report.failures.is_empty(), "{value}:\n{}", report.summary());
    }
}

#[test]
fn missing_mandatory_column_fails_its_presence_rule() {
    let csv = mutate(|r| {
        let c = column(r, "InvoiceIssuerName");
        for record in r.iter_mut() {
            record.remove(c);
        }
    });
    let report = check(&csv);
    assert_fails(&report, &["CostAndUsage-D-023-M"], &[]);
    assert_eq!(
        report.failed_rules(),
        ["CostAndUsage-D-023-M"],
        "{}",
        report.summary()
    );
    assert!(
        report
            .skip_reason("InvoiceIssuerName-C-003-M")
            .unwrap()
            .starts_with("column absent")
    );
    // Compares ProviderName with InvoiceIssuerName: not applicable without the column.
    assert!(
        report
            .skip_reason("BilledCost-C-005-C")
            .unwrap()
            .contains("InvoiceIssuerName")
    );
}

#[test]
fn missing_conditional_column_is_not_a_failure_unless_claimed() {
    let drop = |name: &str| {
        mutate(|r| {
            let c = column(r, name);
            for record in r.iter_mut() {
                record.remove(c);
            }
        })
    };
    // Without TAGGING_SUPPORTED, Tags is not required.
    let csv = drop("Tags");
    let no_tagging: Vec<&str> = GATEWAY_CRITERIA
        .iter()
        .copied()
        .filter(|c| *c != "TAGGING_SUPPORTED")
        .collect();
    assert!(check_csv(&csv, &no_tagging).failures.is_empty());
    // With it, the presence rule fails.
    assert_fails(&check(&csv), &["CostAndUsage-D-064-C"], &[]);
}

#[test]
fn integer_only_billed_cost_fails_the_decimal_type() {
    let csv = mutate(|r| {
        let c = column(r, "BilledCost");
        for (i, record) in r.iter_mut().enumerate().skip(1) {
            record[c] = Cell::plain(&(i + 2).to_string());
        }
    });
    let report = check(&csv);
    assert_fails(&report, &["BilledCost-C-001-M"], ALL_ROWS);
    assert!(report.failure("BilledCost-C-000-M").unwrap().mandatory);
    // Integers are valid numeric format and valid decimal values.
    assert_passes(&report, &["BilledCost-C-002-M", "BilledCost-C-004-M"]);
    assert_eq!(
        report.failed_rules(),
        ["BilledCost-C-001-M"],
        "{}",
        report.summary()
    );
}

#[test]
fn one_integer_in_a_decimal_column_is_fine() {
    let csv = mutate(|r| set(r, "BilledCost", &[1], &Cell::plain("3")));
    assert!(check(&csv).failures.is_empty());
}

#[test]
fn unknown_billing_currency_fails() {
    let csv = mutate(|r| set(r, "BillingCurrency", ALL_ROWS, &Cell::plain("XYZ")));
    let report = check(&csv);
    assert_fails(
        &report,
        &["BillingCurrency-C-006-M", "BillingCurrency-C-003-M"],
        ALL_ROWS,
    );
}

#[test]
fn tags_must_be_a_flat_json_object() {
    for tags in [
        "tenant=acme",
        r#"["acme"]"#,
        r#"{"a":{"b":1}}"#,
        r#"{"a":1,"a":2}"#,
        "{",
    ] {
        let csv = mutate(|r| set(r, "Tags", &[4], &Cell::quoted(tags)));
        let report = check(&csv);
        assert_fails(&report, &["Tags-C-001-M"], &[4]);
    }
}

#[test]
fn numeric_format_rejects_plus_and_separators() {
    for value in ["+3.0864175", "3,0864175", "$3.0864175", "3.0864175 USD"] {
        let csv = mutate(|r| set(r, "BilledCost", &[1], &Cell::quoted(value)));
        let report = check(&csv);
        assert_fails(&report, &["BilledCost-C-002-M"], &[1]);
    }
}

#[test]
fn list_cost_must_equal_unit_price_times_quantity_exactly() {
    // The validator skips this on rows whose ChargeClass is null; every row here has one.
    let csv = mutate(|r| set(r, "ListCost", &[2], &Cell::plain("3.4567801")));
    let report = check(&csv);
    assert_fails(
        &report,
        &[
            "ListCost-C-009-C",
            "ListUnitPrice-C-010-C",
            "PricingQuantity-C-009-C",
        ],
        &[2],
    );
}

#[test]
fn contracted_cost_must_equal_unit_price_times_quantity() {
    let csv = mutate(|r| set(r, "ContractedCost", &[5], &Cell::plain("5.000003")));
    let report = check(&csv);
    assert_fails(
        &report,
        &["ContractedUnitPrice-C-011-C", "ContractedCost-C-009-C"],
        &[5],
    );
}

#[test]
fn charge_period_must_end_after_it_starts() {
    let csv = mutate(|r| {
        set(
            r,
            "ChargePeriodEnd",
            &[6],
            &Cell::plain("2026-06-15T11:00:00Z"),
        )
    });
    let report = check(&csv);
    assert_fails(&report, &["ChargePeriodEnd-C-004-M"], &[6]);
}

#[test]
fn custom_columns_need_the_x_prefix_and_come_last() {
    let csv = mutate(|r| {
        for (i, record) in r.iter_mut().enumerate() {
            record.push(Cell::plain(if i == 0 { "GatewayRoute" } else { "primary" }));
        }
    });
    assert_fails(&check(&csv), &["ColumnHandling-A-010-M"], &[]);

    let csv = mutate(|r| {
        for (i, record) in r.iter_mut().enumerate() {
            record.insert(0, Cell::plain(if i == 0 { "x_Route" } else { "primary" }));
        }
    });
    assert_fails(
        &check(&csv),
        &["ColumnHandling-A-012-O", "ColumnHandling-A-013-O"],
        &[],
    );
}

#[test]
fn purchase_must_not_be_usage_based() {
    let csv = mutate(|r| set(r, "ChargeCategory", &[1], &Cell::plain("Purchase")));
    let report = check(&csv);
    assert_fails(
        &report,
        &["ChargeFrequency-C-004-C", "EffectiveCost-C-005-C"],
        &[1],
    );
}

#[test]
fn malformed_csv_is_a_failure() {
    let report = check_csv(
        "BilledCost,BillingCurrency\n1.0,USD,extra\n",
        GATEWAY_CRITERIA,
    );
    assert_eq!(report.failed_rules(), ["CSV"]);
}

// ---------------------------------------------------------------------------------------------
// The model and the checker's building blocks
// ---------------------------------------------------------------------------------------------

#[test]
fn every_check_function_is_implemented_and_every_rule_parses() {
    assert!(
        focus_model::model_errors().is_empty(),
        "{:#?}",
        focus_model::model_errors()
    );
    let declared = focus_model::declared_check_functions();
    let mut names: Vec<&str> = declared.iter().map(|(n, _)| n.as_str()).collect();
    let mut implemented = focus_model::IMPLEMENTED_CHECK_FUNCTIONS.to_vec();
    names.sort_unstable();
    implemented.sort_unstable();
    assert_eq!(names, implemented);
    assert_eq!(names.len(), 22);
    // A call with the declared arguments parses for every function.
    for (name, args) in &declared {
        let mut call = serde_json::json!({ "CheckFunction": name });
        for arg in args {
            call[arg] = match arg.as_str() {
                "Items" => {
                    serde_json::json!([{"CheckFunction": "ColumnPresent", "ColumnName": "BilledCost"}])
                }
                "Value" | "ExpectedCount" => serde_json::json!(1),
                "ModelRuleId" => serde_json::json!("BilledCost-C-001-M"),
                _ => serde_json::json!("BilledCost"),
            };
        }
        focus_model::parse_check_function(&call).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn unknown_or_malformed_check_functions_are_errors() {
    let bad = [
        serde_json::json!({"CheckFunction": "CheckSomethingNew", "ColumnName": "BilledCost"}),
        serde_json::json!({"CheckFunction": "CheckValue", "ColumnName": "BilledCost"}),
        serde_json::json!({"CheckFunction": "CheckValue", "ColumnName": "BilledCost", "Value": 0, "Negate": true}),
        serde_json::json!({"AND": [{"CheckFunction": "ColumnPresent", "ColumnName": "BilledCost"}]}),
        serde_json::json!({"CheckFunction": "OR", "Items": []}),
    ];
    for tree in &bad {
        assert!(
            focus_model::parse_check_function(tree).is_err(),
            "{tree} parsed"
        );
    }
}

#[test]
fn model_fixes_cover_exactly_the_unparsable_rules() {
    let mut unparsable = focus_model::unparsable_without_fixes();
    unparsable.sort();
    assert_eq!(
        unparsable,
        [
            "CapacityReservationStatus-C-003-C",
            "CapacityReservationStatus-C-004-C",
            "ResourceId-C-006-C",
            "ResourceType-C-005-C",
        ]
    );
    for id in &unparsable {
        assert!(
            focus_model::MODEL_FIXES.iter().any(|f| f.rule == id),
            "{id} has no fix"
        );
    }
    for fix in focus_model::MODEL_FIXES {
        println!("fix {} {:?}: {}", fix.rule, fix.part, fix.why);
    }
    for s in focus_model::SUPPLEMENTS {
        println!("hand-written check {}: {}", s.rule, s.how);
    }
}

#[test]
fn csv_parser_handles_rfc_4180() {
    let records =
        parse_records("a,\"b,1\",c\r\n\"x \"\"y\"\"\",\"line\nbreak\",\r\n,\"\",NULL").unwrap();
    assert_eq!(
        records,
        [
            vec![Cell::plain("a"), Cell::quoted("b,1"), Cell::plain("c")],
            vec![
                Cell::quoted("x \"y\""),
                Cell::quoted("line\nbreak"),
                Cell::plain("")
            ],
            vec![Cell::plain(""), Cell::quoted(""), Cell::plain("NULL")],
        ]
    );
    assert!(records[2][0].is_null() && !records[2][1].is_null() && records[2][2].is_null());
    assert_eq!(parse_records(&write_records(&records)).unwrap(), records);
    assert_eq!(
        parse_records("\u{feff}a\n").unwrap(),
        [vec![Cell::plain("a")]]
    );
    for bad in ["\"open", "a\"b\n", "\"a\"b\n", "a\rb\n"] {
        assert!(parse_records(bad).is_err(), "{bad:?} parsed");
    }
    assert!(parse_table("a,b\n1\n").is_err());
    assert!(parse_table("a,a\n1,2\n").is_err());
    let table = parse_table(REFERENCE).unwrap();
    assert_eq!((table.header.len(), table.rows.len()), (45, 6));
}

#[test]
fn unit_format() {
    for ok in [
        "Tokens",
        "1000000 Tokens",
        "1000 Tokens",
        "GB-Hours",
        "GB/Hour",
        "Requests",
        "Units/3 Months",
        "API Requests",
        "vCPU-Hours",
        "GiB",
    ] {
        assert!(formats::is_unit(ok), "{ok} rejected");
    }
    for bad in [
        "1M Tokens",
        "tokens",
        "GBs",
        "0 Tokens",
        "1,000 Tokens",
        "Tokens ",
        "",
        "GB-Hours-Days",
        "GB//Hour",
        "1.5 Tokens",
    ] {
        assert!(!formats::is_unit(bad), "{bad:?} accepted");
    }
}

#[test]
fn numeric_format_and_decimals() {
    for ok in ["0", "-1", "3.0864175", "1.5E-3", "2e10", "1234567.0"] {
        assert!(formats::is_numeric_format(ok), "{ok} rejected");
    }
    for bad in [
        "+1", "1,000", "1.", ".5", "1e+3", "1/2", "$1", " 1", "1 ", "", "-",
    ] {
        assert!(!formats::is_numeric_format(bad), "{bad:?} accepted");
    }
    let d = |s: &str| Dec::parse(s).unwrap_or_else(|| panic!("{s} not a decimal"));
    let product = d("1.234567").mul(&d("2.5")).unwrap();
    assert_eq!(
        product.cmp_exact(&d("3.0864175")),
        Some(std::cmp::Ordering::Equal)
    );
    assert_eq!(
        d("1.5E-3").cmp_exact(&d("0.0015")),
        Some(std::cmp::Ordering::Equal)
    );
    assert_eq!(
        d("2e3").cmp_exact(&d("2000.000")),
        Some(std::cmp::Ordering::Equal)
    );
    assert_eq!(d("-0.1").cmp_exact(&d("0")), Some(std::cmp::Ordering::Less));
    for bad in ["", "-", ".", "1e", "abc", "1.2.3", "1e99999"] {
        assert!(Dec::parse(bad).is_none(), "{bad:?} parsed");
    }
}

#[test]
fn datetime_formats() {
    let utc = [
        "2026-06-15T10:00:00Z",
        "2026-06-15 10:00:00Z",
        "2026-06-15T10:00:00+00:00",
        "2026-06-15T10:00:00.123Z",
    ];
    for ok in utc {
        assert!(formats::is_focus_datetime(ok), "{ok} rejected");
    }
    for bad in [
        "2026-06-15",
        "2026-06-15T10:00Z",
        "2026-02-30T10:00:00Z",
        "2026-06-15T24:00:00Z",
        "2026-06-15T10:00:00+02:00",
        "2026-06-15T10:00:00",
    ] {
        assert!(!formats::is_focus_datetime(bad), "{bad:?} accepted");
    }
    // A type check accepts a date-time in another zone; the format check does not.
    let a = formats::parse_datetime("2026-06-15T12:00:00+02:00").unwrap();
    let b = formats::parse_datetime("2026-06-15T10:00:00Z").unwrap();
    assert_eq!(a.instant, b.instant);
    assert!(!a.utc && b.utc);
}

#[test]
fn currencies_and_key_values() {
    for ok in ["USD", "EUR", "JPY", "XAF"] {
        assert!(formats::is_national_currency(ok), "{ok} rejected");
    }
    for bad in ["XYZ", "usd", "XAU", "XXX", "US", ""] {
        assert!(!formats::is_national_currency(bad), "{bad:?} accepted");
    }
    assert_eq!(
        formats::key_value_problem(r#"{"a":"x","b":1,"c":true,"d":null}"#),
        None
    );
    assert!(
        formats::key_value_problem(r#"{"a":1,"a":1}"#)
            .unwrap()
            .contains("duplicate")
    );
    assert!(formats::key_value_problem(r#"{"a":[1]}"#).is_some());
    assert!(formats::key_value_problem("[]").is_some());
    assert!(formats::key_value_problem(r#"{"a":1} x"#).is_some());
}
