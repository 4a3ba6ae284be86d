use std::collections::BTreeMap;

use proptest::prelude::*;
use tollgate_types::{Attribution, LedgerRow, NanoUsd, Outcome, UnitPrices, Usage};

use super::*;

fn opts(version: Version) -> Options {
    Options {
        version,
        dataset: Dataset::Cost,
        format: Format::Csv,
        tenants: BTreeMap::new(),
        allocations: Vec::new(),
        pools: Vec::new(),
        issuer: "Tollgate".into(),
        currency: "USD".into(),
        publishers: BTreeMap::from([(
            "openai".to_string(),
            Publisher {
                name: "OpenAI".into(),
                service: "OpenAI API".into(),
            },
        )]),
    }
}

fn row(i: u64, at_ms: i64, tenant: &str, usage: Usage, cost: i64) -> LedgerRow {
    let mut r = LedgerRow::start(format!("req_{i:032x}"), at_ms, "/v1/chat/completions");
    r.attribution = Attribution {
        tenant: Some(tenant.into()),
        feature: Some("chat".into()),
        ..Default::default()
    };
    r.provider = Some("openai".into());
    r.served_model = Some("gpt-4o-mini".into());
    r.requested_model = Some("gpt-4o-mini".into());
    r.price_version = Some("builtin-2026-07-24".into());
    r.unit_prices = Some(UnitPrices {
        input: NanoUsd(150_000_000),
        cached_input: NanoUsd(75_000_000),
        cache_write: NanoUsd(150_000_000),
        output: NanoUsd(600_000_000),
    });
    r.usage = usage;
    r.list_cost = NanoUsd(cost);
    r.effective_cost = NanoUsd(cost);
    r
}

fn export(version: Version, rows: &[LedgerRow]) -> (Summary, Vec<BTreeMap<String, String>>) {
    export_with(opts(version), rows)
}

/// A BilledCost cell (at most 9 decimals) in nano-USD.
fn nanos(cell: &str) -> i128 {
    let d = Decimal::parse(cell).unwrap();
    d.units() * 10i128.pow(u32::from(9 - d.scale()))
}

const T: i64 = 1_780_000_000_000; // 2026-05-28T20:26:40Z

#[test]
fn one_row_per_token_class_with_exact_list_cost() {
    let u = Usage {
        input_tokens: 1_000,
        cached_input_tokens: 200,
        cache_write_input_tokens: 0,
        output_tokens: 50,
        reasoning_tokens: 10,
    };
    // 800 × 0.15 + 200 × 0.075 + 50 × 0.6 per 1M = 165 000 nano-USD... per 1e6: 165 nanos.
    let (s, recs) = export(Version::V1_2, &[row(1, T, "acme", u, 165)]);
    assert_eq!(recs.len(), 3, "{recs:?}");
    assert_eq!(s.billed, NanoUsd(165));
    let meters: Vec<&str> = recs.iter().map(|r| r["SkuMeter"].as_str()).collect();
    assert_eq!(
        meters,
        ["Input Tokens", "Cached Input Tokens", "Output Tokens"]
    );
    let r = &recs[0];
    assert_eq!(r["ListUnitPrice"], "0.15");
    assert_eq!(r["PricingQuantity"], "0.0008");
    assert_eq!(r["ListCost"], "0.00012");
    assert_eq!(r["PricingUnit"], "1000000 Tokens");
    assert_eq!(r["ChargePeriodStart"], "2026-05-28T20:00:00Z");
    assert_eq!(r["ChargePeriodEnd"], "2026-05-28T21:00:00Z");
    assert_eq!(r["BillingPeriodStart"], "2026-05-01T00:00:00Z");
    assert_eq!(r["BillingPeriodEnd"], "2026-06-01T00:00:00Z");
    assert_eq!(r["ChargeClass"], "", "null, not a value");
    assert_eq!(r["x_RequestCount"], "1");
    assert_eq!(recs[2]["x_RequestCount"], "0");
    assert_eq!(recs[2]["x_ReasoningTokens"], "10");
    let billed: Vec<i128> = recs.iter().map(|r| nanos(&r["BilledCost"])).collect();
    // 120 : 15 : 30 nanos of list cost → exactly those shares.
    assert_eq!(billed, [120, 15, 30]);
}

#[test]
fn requests_without_tokens_are_counted_on_a_zero_row() {
    let mut rejected = row(2, T, "acme", Usage::default(), 0);
    rejected.outcome = Outcome::Rejected;
    rejected.provider = None;
    rejected.served_model = None;
    rejected.unit_prices = None;
    rejected.price_version = None;
    let (s, recs) = export(Version::V1_2, &[rejected]);
    assert_eq!(s.ledger_rows, 1);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["x_RequestCount"], "1");
    assert_eq!(recs[0]["x_FailedRequestCount"], "1");
    assert_eq!(recs[0]["BilledCost"], "0.0");
    assert_eq!(recs[0]["PricingQuantity"], "0.0");
}

#[test]
fn hours_and_months_split_rows_and_out_of_order_is_refused() {
    let u = Usage {
        input_tokens: 10,
        output_tokens: 10,
        ..Default::default()
    };
    let end_of_may = 1_780_271_999_000; // 2026-05-31T23:59:59Z
    let rows = [
        row(1, end_of_may, "acme", u, 8),
        row(2, end_of_may + 2_000, "acme", u, 8),
    ];
    let (_, recs) = export(Version::V1_2, &rows);
    let months: Vec<&str> = recs
        .iter()
        .map(|r| r["BillingPeriodStart"].as_str())
        .collect();
    assert_eq!(
        months,
        [
            "2026-05-01T00:00:00Z",
            "2026-05-01T00:00:00Z",
            "2026-06-01T00:00:00Z",
            "2026-06-01T00:00:00Z"
        ]
    );
    assert_eq!(recs[3]["InvoiceId"], "acme-2026-06");

    let mut e = Exporter::new(opts(Version::V1_2), Vec::new()).unwrap();
    e.push(&rows[1]).unwrap();
    assert!(matches!(e.push(&rows[0]), Err(ExportError::OutOfOrder(..))));
}

#[test]
fn the_1_0_column_set_has_no_1_2_columns() {
    let (_, recs) = export(Version::V1_0, &[row(1, T, "a", Usage::default(), 0)]);
    assert!(recs[0].contains_key("AvailabilityZone"));
    assert!(!recs[0].contains_key("SkuMeter"));
    assert!(!recs[0].contains_key("InvoiceId"));
}

proptest! {
    /// The split always sums to the total and gives each part within 1 of its exact share.
    #[test]
    fn split_is_exact(total in 0i64..1_000_000_000_000, w in prop::collection::vec(0i128..1_000_000_000_000_000_000, 1..5)) {
        let parts = split(total, &w);
        prop_assert_eq!(parts.iter().sum::<i64>(), total);
        let sum: i128 = w.iter().sum();
        if sum > 0 {
            for (p, x) in parts.iter().zip(&w) {
                let exact = i128::from(total) * x / sum;
                prop_assert!((i128::from(*p) - exact).abs() <= 1);
            }
        }
    }

    /// Σ BilledCost of an export equals Σ effective_cost of the ledger rows, per tenant too.
    #[test]
    fn billed_cost_reconciles_to_the_ledger(
        rows in prop::collection::vec((0i64..7_200_000, 0usize..3, 0u64..5_000, 0u64..500, 0u64..2_000, 0i64..5_000_000), 1..60)
    ) {
        let mut ledger: Vec<LedgerRow> = rows.iter().enumerate().map(|(i, &(dt, t, input, cached, output, cost))| {
            let u = Usage { input_tokens: input + cached, cached_input_tokens: cached, output_tokens: output, ..Default::default() };
            row(i as u64, T + dt, ["acme", "globex", "initech"][t], u, cost)
        }).collect();
        ledger.sort_by_key(|r| r.started_at_ms);
        let (s, recs) = export(Version::V1_2, &ledger);
        let total: i64 = ledger.iter().map(|r| r.effective_cost.nanos()).sum();
        prop_assert_eq!(s.billed, NanoUsd(total));
        for tenant in ["acme", "globex", "initech"] {
            let want: i128 = ledger.iter().filter(|r| r.attribution.tenant.as_deref() == Some(tenant)).map(|r| i128::from(r.effective_cost.nanos())).sum();
            let got: i128 = recs.iter().filter(|r| r["BillingAccountId"] == tenant).map(|r| nanos(&r["BilledCost"])).sum();
            prop_assert_eq!(got, want);
        }
        let requests: u64 = recs.iter().map(|r| r["x_RequestCount"].parse::<u64>().unwrap()).sum();
        prop_assert_eq!(requests, ledger.len() as u64);
        for r in &recs {
            let unit = Decimal::parse(&r["ListUnitPrice"]).unwrap();
            let qty = Decimal::parse(&r["PricingQuantity"]).unwrap();
            let list = Decimal::parse(&r["ListCost"]).unwrap();
            prop_assert!(unit.checked_mul(qty).unwrap().same_value(list));
        }
    }
}

fn chargeback_opts(markup_bp: u32, list: Option<[i64; 4]>) -> Options {
    let mut o = opts(Version::V1_2);
    o.dataset = Dataset::Chargeback;
    o.tenants.insert(
        "acme".into(),
        Terms {
            markup_bp,
            price_list: list
                .map(|l| BTreeMap::from([("gpt-4o-mini".to_string(), l)]))
                .unwrap_or_default(),
            revenue_per_month: None,
        },
    );
    o
}

fn export_with(o: Options, rows: &[LedgerRow]) -> (Summary, Vec<BTreeMap<String, String>>) {
    let mut e = Exporter::new(o, Vec::new()).unwrap();
    for r in rows {
        e.push(r).unwrap();
    }
    let (s, bytes) = e.finish().unwrap();
    let mut rd = csv::Reader::from_reader(bytes.as_slice());
    let header: Vec<String> = rd.headers().unwrap().iter().map(String::from).collect();
    let recs = rd
        .records()
        .map(|r| {
            header
                .iter()
                .cloned()
                .zip(r.unwrap().iter().map(String::from))
                .collect()
        })
        .collect();
    (s, recs)
}

#[test]
fn chargeback_bills_markup_or_the_price_list() {
    let u = Usage {
        input_tokens: 1_000_000,
        output_tokens: 100_000,
        ..Default::default()
    };
    // Upstream: 1M × 0.15 + 0.1M × 0.6 = 0.21 USD.
    let rows = [
        row(1, T, "acme", u, 210_000_000),
        row(2, T, "globex", u, 210_000_000),
    ];
    let (s, recs) = export_with(chargeback_opts(2_000, None), &rows);
    assert_eq!(s.upstream, NanoUsd(420_000_000));
    // acme +20 %, globex (no terms) at cost.
    assert_eq!(s.tenants["acme"].billed, NanoUsd(252_000_000));
    assert_eq!(s.tenants["globex"].billed, NanoUsd(210_000_000));
    let acme: Vec<_> = recs
        .iter()
        .filter(|r| r["BillingAccountId"] == "acme")
        .collect();
    assert_eq!(acme[0]["ListUnitPrice"], "0.18", "0.15 × 1.2");
    assert_eq!(acme[0]["BilledCost"], "0.18");
    assert_eq!(acme[0]["x_UpstreamCost"], "0.15");
    assert_eq!(acme[0]["x_Margin"], "0.03");
    assert_eq!(acme[1]["BilledCost"], "0.072");

    // A price list replaces cost plus markup for its model.
    let (s, recs) = export_with(
        chargeback_opts(
            2_000,
            Some([500_000_000, 250_000_000, 500_000_000, 2_000_000_000]),
        ),
        &rows[..1],
    );
    assert_eq!(s.tenants["acme"].billed, NanoUsd(700_000_000), "0.5 + 0.2");
    assert_eq!(recs[0]["ListUnitPrice"], "0.5");
    assert_eq!(recs[1]["ListCost"], "0.2");
}

proptest! {
    /// Chargeback: the upstream column reconciles to the ledger exactly, billed and margin add
    /// up, each tenant's bill is its upstream cost × (1 + markup) to within half a nano-dollar
    /// per group, and ListCost stays exact.
    #[test]
    fn chargeback_sums_are_exact(
        markup in 0u32..100_000,
        rows in prop::collection::vec((0i64..10_800_000, 0usize..2, 0u64..50_000, 0u64..5_000, 0i64..50_000_000), 1..50)
    ) {
        let mut ledger: Vec<LedgerRow> = rows.iter().enumerate().map(|(i, &(dt, t, input, output, cost))| {
            let u = Usage { input_tokens: input, output_tokens: output, ..Default::default() };
            row(i as u64, T + dt, ["acme", "globex"][t], u, cost)
        }).collect();
        ledger.sort_by_key(|r| r.started_at_ms);
        let (s, recs) = export_with(chargeback_opts(markup, None), &ledger);
        let ledger_total: i128 = ledger.iter().map(|r| i128::from(r.effective_cost.nanos())).sum();
        let sum = |col: &str| recs.iter().map(|r| nanos(&r[col])).sum::<i128>();
        prop_assert_eq!(sum("x_UpstreamCost"), ledger_total);
        prop_assert_eq!(sum("BilledCost"), i128::from(s.billed.nanos()));
        prop_assert_eq!(sum("x_Margin"), sum("BilledCost") - sum("x_UpstreamCost"));
        let acme_up: i128 = ledger.iter().filter(|r| r.attribution.tenant.as_deref() == Some("acme")).map(|r| i128::from(r.effective_cost.nanos())).sum();
        let acme_billed = i128::from(s.tenants.get("acme").map_or(0, |t| t.billed.nanos()));
        let groups = recs.iter().filter(|r| r["BillingAccountId"] == "acme" && r["x_RequestCount"] != "0").count() as i128;
        let exact_x2 = acme_up * i128::from(10_000 + markup) * 2 / 10_000;
        prop_assert!((acme_billed * 2 - exact_x2).abs() <= groups + 1, "{acme_billed} vs {exact_x2}/2 over {groups} groups");
        for r in &recs {
            let unit = Decimal::parse(&r["ListUnitPrice"]).unwrap();
            let qty = Decimal::parse(&r["PricingQuantity"]).unwrap();
            prop_assert!(unit.checked_mul(qty).unwrap().same_value(Decimal::parse(&r["ListCost"]).unwrap()));
        }
    }
}

#[test]
fn shared_cost_rows_name_their_allocation_pool() {
    let mut o = opts(Version::V1_2);
    o.allocations.push(crate::showback::Rule {
        name: "shared-embeddings".into(),
        take: Some(crate::showback::Match {
            feature: Some("embed".into()),
            ..Default::default()
        }),
        amount_per_month: None,
        method: crate::showback::Method::Even,
        tenants: Vec::new(),
    });
    let u = Usage {
        input_tokens: 100,
        ..Default::default()
    };
    let mut shared = row(1, T, "acme", u, 15);
    shared.attribution.feature = Some("embed".into());
    let (_, recs) = export_with(o, &[row(2, T, "acme", u, 15), shared]);
    let pools: Vec<(&str, &str)> = recs
        .iter()
        .map(|r| (r["x_Feature"].as_str(), r["x_AllocationPool"].as_str()))
        .collect();
    assert_eq!(pools, [("chat", ""), ("embed", "shared-embeddings")]);
}

proptest! {
    /// Shared rows carry their cost apportioned over the pool's carriers: each row's shares
    /// are non-negative and sum to its BilledCost, and each carrier's shares over the file sum
    /// to its showback share of the pool's ledger spend, exactly.
    #[test]
    fn allocated_costs_add_up_to_the_showback_shares(
        rows in prop::collection::vec((0i64..72, 0u64..5_000, 0u64..3_000, 0i64..50_000_000), 1..40),
        weights in prop::collection::vec(1u64..1_000_000, 1..5),
    ) {
        let carriers: Vec<String> = (0..weights.len()).map(|i| format!("t{i}")).collect();
        let mut ledger: Vec<LedgerRow> = rows
            .iter()
            .enumerate()
            .map(|(i, &(h, input, output, cost))| {
                let u = Usage { input_tokens: input, output_tokens: output, ..Default::default() };
                let mut r = row(i as u64, T + h * HOUR_MS, "shared", u, cost);
                r.attribution.feature = Some("embed".into());
                r
            })
            .collect();
        ledger.sort_by_key(|r| r.started_at_ms);
        let rule = crate::showback::Rule {
            name: "pool".into(),
            take: Some(crate::showback::Match { feature: Some("embed".into()), ..Default::default() }),
            amount_per_month: None,
            method: crate::showback::Method::Weights(
                carriers.iter().cloned().zip(weights.iter().copied()).collect(),
            ),
            tenants: Vec::new(),
        };
        let spend: Vec<_> = ledger
            .iter()
            .map(|r| {
                let a = crate::showback::Attribution {
                    tenant: "shared".into(),
                    team: "(none)".into(),
                    feature: "embed".into(),
                    model: "gpt-4o-mini".into(),
                    provider: "openai".into(),
                };
                (a, r.effective_cost)
            })
            .collect();
        let (_, pools) =
            crate::showback::showback(&spend, std::slice::from_ref(&rule), &BTreeMap::new(), false);
        let mut o = opts(Version::V1_2);
        o.allocations.push(rule);
        o.pools = pools.clone();
        let (_, recs) = export_with(o, &ledger);
        let mut got: BTreeMap<String, i128> = BTreeMap::new();
        for r in &recs {
            let shares: BTreeMap<String, String> =
                serde_json::from_str(&r["x_AllocatedCosts"]).unwrap();
            let mut sum = 0;
            for (t, v) in shares {
                let n = nanos(&v);
                prop_assert!(n > 0, "{r:?}");
                sum += n;
                *got.entry(t).or_default() += n;
            }
            prop_assert_eq!(sum, nanos(&r["BilledCost"]));
        }
        for (t, share) in &pools[0].ledger_shares {
            prop_assert_eq!(got.get(t).copied().unwrap_or(0), i128::from(share.nanos()), "{}", t);
        }
    }
}

proptest! {
    /// A totals-only exporter (the margins) sums exactly what a chargeback file bills: the same
    /// groups, the same rounding once per group, per tenant and overall.
    #[test]
    fn totals_equal_the_chargeback_file(
        rows in prop::collection::vec((0i64..7_200_000, 0usize..3, 0u64..5_000, 0u64..2_000, 0i64..5_000_000), 1..60),
        markup_bp in 0u32..5_000,
        list in prop::option::of([1i64..5_000_000_000, 0i64..1_000_000_000, 0i64..1_000_000_000, 1i64..9_000_000_000]),
    ) {
        let mut ledger: Vec<LedgerRow> = rows.iter().enumerate().map(|(i, &(dt, t, input, output, cost))| {
            let u = Usage { input_tokens: input, output_tokens: output, ..Default::default() };
            row(i as u64, T + dt, ["acme", "globex", "initech"][t], u, cost)
        }).collect();
        ledger.sort_by_key(|r| r.started_at_ms);
        let (file, _) = export_with(chargeback_opts(markup_bp, list), &ledger);
        let mut totals = Exporter::totals(chargeback_opts(markup_bp, list), std::io::sink());
        for r in &ledger {
            totals.push(r).unwrap();
        }
        let (sums, _) = totals.finish().unwrap();
        prop_assert_eq!(sums.focus_rows, 0);
        prop_assert_eq!(Summary { focus_rows: file.focus_rows, ..sums }, file);
    }
}
