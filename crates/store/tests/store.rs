//! Store tests against real SQLite files in temp dirs (and `sqlite::memory:` for proptests).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may panic

use std::collections::{BTreeMap, BTreeSet, HashSet};

use proptest::prelude::*;
use tollgate_store::*;
use tollgate_types::{Attribution, Usage, UsageSource};

const DAY_MS: i64 = 86_400_000;
/// 2025-01-01T00:00:00Z.
const T0: i64 = 1_735_689_600_000;

fn file_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tollgate.db").display());
    let store = Store::open(&url).unwrap();
    (dir, store)
}

/// A deterministic, varied row. `i` drives every field so groups overlap in many ways.
fn row(i: u64) -> LedgerRow {
    let mut r = LedgerRow::start(
        format!("req_{i:032x}"),
        T0 + (i as i64 % 5) * DAY_MS + i as i64,
        "/v1/chat/completions",
    );
    let pick = |opts: &[&str], k: u64| -> Option<String> {
        let v = opts[(k % opts.len() as u64) as usize];
        (!v.is_empty()).then(|| v.to_string())
    };
    r.stream = i.is_multiple_of(2);
    r.attribution = Attribution {
        key_id: pick(&["key_a", "key_b", ""], i),
        key_name: pick(&["alpha", "beta", ""], i),
        team: pick(&["search", "", "ml"], i / 2),
        tenant: pick(&["acme", "globex", ""], i / 3),
        feature: pick(&["chat", "summarise", ""], i / 5),
        user: pick(&["u1", "u2", "u3", ""], i / 7),
        tags: if i.is_multiple_of(4) {
            BTreeMap::from([
                ("env".to_string(), "prod".to_string()),
                ("k".to_string(), i.to_string()),
            ])
        } else {
            BTreeMap::new()
        },
    };
    r.requested_model = pick(&["gpt-4o", "claude", ""], i / 11);
    r.served_model = pick(&["gpt-4o-2024", "claude-3", ""], i / 11);
    r.provider = pick(&["openai", "anthropic", ""], i / 13);
    r.deployment = pick(&["openai/gpt-4o", "anthropic/claude-3", ""], i / 13);
    if i.is_multiple_of(3) {
        r.endpoint = "/v1/embeddings".into();
    }
    r.attempts = (i % 3) as u32;
    r.usage = Usage {
        input_tokens: 1000 + i * 7,
        cached_input_tokens: i % 100,
        cache_write_input_tokens: i % 10,
        output_tokens: 50 + i * 3,
        reasoning_tokens: i % 20,
    };
    r.usage_source = [
        UsageSource::Provider,
        UsageSource::Estimated,
        UsageSource::None,
    ][(i % 3) as usize];
    r.list_cost = NanoUsd((i as i64) * 1_234_567 + 89);
    r.effective_cost = NanoUsd((i as i64) * 1_000_003 + 7);
    r.price_version = pick(&["builtin-2025-01-01", ""], i);
    r.unpriced = i.is_multiple_of(17);
    r.policy_actions = if i.is_multiple_of(9) {
        tollgate_types::PolicyActions::parse("cap_max_tokens=120")
    } else {
        Default::default()
    };
    r.cache_status = pick(&["hit", "miss", ""], i);
    r.saved_cost = NanoUsd(i as i64 * 7);
    r.attempted = pick(&["a/x", "a/x,b/y", ""], i).unwrap_or_default();
    r.unit_prices = (!i.is_multiple_of(17)).then(|| tollgate_types::UnitPrices {
        input: NanoUsd(2_500_000_000 + i as i64),
        cached_input: NanoUsd(1_250_000_000),
        cache_write: NanoUsd(3_125_000_000),
        output: NanoUsd(10_000_000_000 - i as i64),
    });
    r.status = [200, 429, 502, 499][(i % 4) as usize];
    r.outcome = [
        Outcome::Ok,
        Outcome::Rejected,
        Outcome::Failed,
        Outcome::Cancelled,
    ][(i % 4) as usize];
    r.error_code = (!i.is_multiple_of(4)).then(|| "budget_exceeded".to_string());
    r.error_origin = (!i.is_multiple_of(4)).then(|| "gateway".to_string());
    r.latency_us = 1000 + i;
    r.ttft_us = (i.is_multiple_of(2)).then_some(500 + i);
    r
}

/// The dims map a report line would carry for `r` under `dims`, computed in Rust.
fn expected_dims(r: &LedgerRow, dims: &[Dim]) -> BTreeMap<String, String> {
    let none = |v: &Option<String>| v.clone().unwrap_or_else(|| NONE_LABEL.to_string());
    let mut m = BTreeMap::new();
    for d in dims {
        match d {
            Dim::Key => {
                m.insert("key_id".into(), none(&r.attribution.key_id));
                m.insert("key_name".into(), none(&r.attribution.key_name));
            }
            Dim::Team => {
                m.insert("team".into(), none(&r.attribution.team));
            }
            Dim::Tenant => {
                m.insert("tenant".into(), r.attribution.tenant_label().to_string());
            }
            Dim::Feature => {
                m.insert("feature".into(), none(&r.attribution.feature));
            }
            Dim::User => {
                m.insert("user".into(), none(&r.attribution.user));
            }
            Dim::Model => {
                m.insert("model".into(), none(&r.requested_model));
            }
            Dim::ServedModel => {
                m.insert("served_model".into(), none(&r.served_model));
            }
            Dim::Provider => {
                m.insert("provider".into(), none(&r.provider));
            }
            Dim::Deployment => {
                m.insert("deployment".into(), none(&r.deployment));
            }
            Dim::Endpoint => {
                m.insert("endpoint".into(), r.endpoint.clone());
            }
            Dim::Outcome => {
                m.insert("outcome".into(), r.outcome.as_str().to_string());
            }
            Dim::Day => {
                m.insert("day".into(), utc_day(r.started_at_ms));
            }
            Dim::Hour => {
                let hour = r.started_at_ms.rem_euclid(DAY_MS) / 3_600_000;
                m.insert(
                    "hour".into(),
                    format!("{}T{hour:02}:00:00Z", utc_day(r.started_at_ms)),
                );
            }
        }
    }
    m
}

/// Civil date from Unix ms (Howard Hinnant's algorithm), independent of the SQL under test.
fn utc_day(ms: i64) -> String {
    let z = ms.div_euclid(DAY_MS) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Reference aggregation in Rust (i128 so the reference itself cannot overflow).
fn expected_spend(
    rows: &[LedgerRow],
    dims: &[Dim],
) -> BTreeMap<BTreeMap<String, String>, SpendRow> {
    let mut out: BTreeMap<BTreeMap<String, String>, SpendRow> = BTreeMap::new();
    for r in rows {
        let k = expected_dims(r, dims);
        let e = out.entry(k.clone()).or_insert_with(|| SpendRow {
            dims: k,
            requests: 0,
            input_tokens: 0,
            cached_input_tokens: 0,
            cache_write_input_tokens: 0,
            output_tokens: 0,
            reasoning_tokens: 0,
            list_cost: NanoUsd::ZERO,
            effective_cost: NanoUsd::ZERO,
            estimated_rows: 0,
        });
        e.requests += 1;
        e.input_tokens += r.usage.input_tokens;
        e.cached_input_tokens += r.usage.cached_input_tokens;
        e.cache_write_input_tokens += r.usage.cache_write_input_tokens;
        e.output_tokens += r.usage.output_tokens;
        e.reasoning_tokens += r.usage.reasoning_tokens;
        e.list_cost =
            NanoUsd(i64::try_from(e.list_cost.0 as i128 + r.list_cost.0 as i128).unwrap());
        e.effective_cost = NanoUsd(
            i64::try_from(e.effective_cost.0 as i128 + r.effective_cost.0 as i128).unwrap(),
        );
        e.estimated_rows += u64::from(r.usage_source == UsageSource::Estimated);
    }
    out
}

fn check_spend(store: &Store, rows: &[LedgerRow], dims: &[Dim]) {
    let got = store
        .spend(&SpendQuery {
            group_by: dims.to_vec(),
            ..Default::default()
        })
        .unwrap();
    // Ordered by effective cost, descending.
    for w in got.windows(2) {
        assert!(
            w[0].effective_cost >= w[1].effective_cost,
            "order for {dims:?}"
        );
    }
    let got_map: BTreeMap<_, _> = got.into_iter().map(|r| (r.dims.clone(), r)).collect();
    assert_eq!(got_map, expected_spend(rows, dims), "group by {dims:?}");
}

#[test]
fn insert_is_idempotent_and_round_trips() {
    let (_dir, store) = file_store();
    let rows: Vec<_> = (0..50).map(row).collect();
    assert_eq!(store.insert_rows(&rows).unwrap(), 50);
    assert_eq!(store.insert_rows(&rows).unwrap(), 0, "re-insert is a no-op");
    assert_eq!(store.insert_rows(&rows[10..20]).unwrap(), 0);
    assert_eq!(store.insert_rows(&[]).unwrap(), 0);
    let (listed, next) = store
        .list_requests(&RowFilter::default(), Page::first(1000))
        .unwrap();
    assert!(next.is_none());
    let mut expected = rows.clone();
    // Newest first: by start time, then id.
    expected
        .sort_by(|a, b| (b.started_at_ms, &b.request_id).cmp(&(a.started_at_ms, &a.request_id)));
    assert_eq!(listed, expected, "every field round-trips");
    let (n, sum) = store.totals(&RowFilter::default()).unwrap();
    assert_eq!(n, 50);
    assert_eq!(sum, rows.iter().map(|r| r.effective_cost).sum::<NanoUsd>());
}

#[test]
fn reopen_keeps_data_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    {
        let s = Store::open(&url).unwrap();
        s.insert_rows(&[row(1), row(2)]).unwrap();
    }
    let s = Store::open(&url).unwrap();
    let s2 = Store::open(&url).unwrap();
    assert_eq!(s.schema_version().unwrap(), 11);
    assert_eq!(s2.totals(&RowFilter::default()).unwrap().0, 2);
    assert_eq!(s.path(), Some(dir.path().join("t.db").as_path()));

    // A database from a newer build is refused, not silently used.
    let conn = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    assert!(matches!(Store::open(&url), Err(StoreError::Schema(_))));
}

#[test]
fn memory_store_works() {
    let s = Store::open("sqlite::memory:").unwrap();
    s.insert_rows(&[row(1)]).unwrap();
    assert_eq!(s.clone().totals(&RowFilter::default()).unwrap().0, 1);
    // Each memory store is private.
    let other = Store::open("sqlite::memory:").unwrap();
    assert_eq!(other.totals(&RowFilter::default()).unwrap().0, 0);
}

#[test]
fn spend_group_by_every_dim() {
    let (_dir, store) = file_store();
    let rows: Vec<_> = (0..300).map(row).collect();
    store.insert_rows(&rows).unwrap();
    check_spend(&store, &rows, &[]);
    for d in Dim::ALL {
        check_spend(&store, &rows, &[*d]);
    }
    check_spend(&store, &rows, &[Dim::Tenant, Dim::Model, Dim::Day]);
    check_spend(&store, &rows, Dim::ALL);

    // The unattributed label and the key's two columns.
    let by_tenant = store
        .spend(&SpendQuery {
            group_by: vec![Dim::Tenant],
            ..Default::default()
        })
        .unwrap();
    let labels: BTreeSet<_> = by_tenant.iter().map(|r| r.dims["tenant"].clone()).collect();
    assert_eq!(
        labels,
        BTreeSet::from(["(unattributed)".into(), "acme".into(), "globex".into()])
    );
    let by_key = store
        .spend(&SpendQuery {
            group_by: vec![Dim::Key],
            ..Default::default()
        })
        .unwrap();
    assert!(
        by_key
            .iter()
            .all(|r| r.dims.contains_key("key_id") && r.dims.contains_key("key_name"))
    );
    let days: BTreeSet<_> = store
        .spend(&SpendQuery {
            group_by: vec![Dim::Day],
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|r| r.dims["day"].clone())
        .collect();
    assert_eq!(days.first().map(String::as_str), Some("2025-01-01"));
    assert_eq!(days.len(), 5);

    // Drilling into the unattributed line with its label finds exactly those rows.
    let unattributed = by_tenant
        .iter()
        .find(|r| r.dims["tenant"] == UNATTRIBUTED)
        .unwrap();
    let f = RowFilter {
        tenant: Some(UNATTRIBUTED.into()),
        ..Default::default()
    };
    assert_eq!(
        store.totals(&f).unwrap(),
        (unattributed.requests, unattributed.effective_cost)
    );
}

#[test]
fn spend_time_range_and_filters() {
    let (_dir, store) = file_store();
    let rows: Vec<_> = (0..200).map(row).collect();
    store.insert_rows(&rows).unwrap();
    let from = T0 + DAY_MS;
    let to = T0 + 3 * DAY_MS; // exclusive
    let in_range: Vec<_> = rows
        .iter()
        .filter(|r| r.started_at_ms >= from && r.started_at_ms < to)
        .cloned()
        .collect();
    assert!(!in_range.is_empty() && in_range.len() < rows.len());
    let got = store
        .spend(&SpendQuery {
            group_by: vec![Dim::Tenant],
            from_ms: Some(from),
            to_ms: Some(to),
            ..Default::default()
        })
        .unwrap();
    let got: BTreeMap<_, _> = got.into_iter().map(|r| (r.dims.clone(), r)).collect();
    assert_eq!(got, expected_spend(&in_range, &[Dim::Tenant]));

    // Row filters: each field narrows exactly like the Rust predicate.
    let f = RowFilter {
        tenant: Some("acme".into()),
        outcome: Some(Outcome::Ok),
        provider: Some("openai".into()),
        ..Default::default()
    };
    let want: Vec<_> = rows
        .iter()
        .filter(|r| {
            r.attribution.tenant.as_deref() == Some("acme")
                && r.outcome == Outcome::Ok
                && r.provider.as_deref() == Some("openai")
        })
        .collect();
    let (n, sum) = store.totals(&f).unwrap();
    assert_eq!(n, want.len() as u64);
    assert_eq!(sum, want.iter().map(|r| r.effective_cost).sum::<NanoUsd>());
    let f = RowFilter {
        status: Some(429),
        key_id: Some("key_b".into()),
        ..Default::default()
    };
    let want = rows
        .iter()
        .filter(|r| r.status == 429 && r.attribution.key_id.as_deref() == Some("key_b"))
        .count();
    assert_eq!(store.totals(&f).unwrap().0, want as u64);

    // Empty range: empty report, zero totals.
    let empty = store
        .spend(&SpendQuery {
            from_ms: Some(0),
            to_ms: Some(1),
            ..Default::default()
        })
        .unwrap();
    assert!(empty.is_empty());
    assert_eq!(
        store
            .totals(&RowFilter {
                to_ms: Some(1),
                ..Default::default()
            })
            .unwrap(),
        (0, NanoUsd::ZERO)
    );
}

#[test]
fn overflowing_sums_are_errors_not_wrong_numbers() {
    let (_dir, store) = file_store();
    let mut a = row(1);
    a.effective_cost = NanoUsd(i64::MAX - 10);
    let mut b = row(2);
    b.effective_cost = NanoUsd(11);
    store.insert_rows(&[a, b]).unwrap();
    assert!(matches!(
        store.spend(&SpendQuery::default()),
        Err(StoreError::Overflow(_))
    ));
    assert!(matches!(
        store.totals(&RowFilter::default()),
        Err(StoreError::Overflow(_))
    ));
}

#[test]
fn pagination_covers_every_row_once() {
    let (_dir, store) = file_store();
    // A third of the rows share one start time: pages break those ties by id.
    let rows: Vec<_> = (0..2345)
        .map(|i| {
            let mut r = row(i);
            if i % 3 == 0 {
                r.started_at_ms = T0 + DAY_MS;
            }
            r
        })
        .collect();
    for chunk in rows.chunks(500) {
        store.insert_rows(chunk).unwrap();
    }
    for (filter, limit) in [
        (RowFilter::default(), 100),
        (RowFilter::default(), 1),
        (RowFilter::default(), 5000), // clamped to 1000
        (
            RowFilter {
                tenant: Some("acme".into()),
                ..Default::default()
            },
            77,
        ),
    ] {
        let mut seen = Vec::new();
        let mut page = Page::first(limit);
        let mut pages = 0;
        loop {
            let (batch, next) = store.list_requests(&filter, page.clone()).unwrap();
            assert!(batch.len() <= limit.min(MAX_PAGE_LIMIT));
            seen.extend(batch.into_iter().map(|r| r.request_id));
            pages += 1;
            match next {
                Some(c) => page.cursor = Some(c),
                None => break,
            }
        }
        let mut want: Vec<_> = rows
            .iter()
            .filter(|r| filter.tenant.is_none() || r.attribution.tenant == filter.tenant)
            .map(|r| (r.started_at_ms, r.request_id.clone()))
            .collect();
        want.sort();
        want.reverse();
        let want: Vec<String> = want.into_iter().map(|(_, id)| id).collect();
        assert_eq!(seen, want, "limit {limit}");
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len());
        if limit == 5000 {
            assert_eq!(pages, 3);
        }
    }
    let bad = Page {
        limit: 10,
        cursor: Some("not-a-cursor".into()),
    };
    assert!(matches!(
        store.list_requests(&RowFilter::default(), bad),
        Err(StoreError::InvalidInput(_))
    ));
}

#[test]
fn corrupt_database_values_are_errors_not_panics() {
    let (dir, store) = file_store();
    store.insert_rows(&[row(1), row(2)]).unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("tollgate.db")).unwrap();
    conn.execute(
        "UPDATE requests SET outcome = 'exploded' WHERE request_id = ?1",
        [&row(1).request_id],
    )
    .unwrap();
    drop(conn);
    assert!(matches!(
        store.list_requests(&RowFilter::default(), Page::default()),
        Err(StoreError::Corrupt(_))
    ));
}

#[test]
fn concurrent_writers_on_one_file() {
    let (_dir, store) = file_store();
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let s = store.clone();
            std::thread::spawn(move || {
                for c in 0..10u64 {
                    let rows: Vec<_> = (0..50).map(|i| row(t * 100_000 + c * 1000 + i)).collect();
                    s.insert_rows(&rows).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(store.totals(&RowFilter::default()).unwrap().0, 2000);
}

fn key(id: &str, name: &str, hash_byte: u8) -> StoredKey {
    StoredKey {
        id: id.into(),
        name: name.into(),
        key_hash: format!("{hash_byte:02x}").repeat(32),
        key_prefix: "tg-ab12c".into(),
        tenant: Some("acme".into()),
        team: None,
        models: vec!["gpt-4o".into()],
        allow_tenant_header: true,
        allowed_tenants: vec!["acme".into(), "globex".into()],
        allow_route_override: true,
        created_at_ms: T0 + i64::from(hash_byte),
        expires_at_ms: None,
        revoked_at_ms: None,
        metadata: serde_json::json!({"owner": "ops", "n": 1}),
        rotated_to: None,
    }
}

#[test]
fn key_crud_revocation_and_version() {
    let (_dir, store) = file_store();
    assert_eq!(store.keys_version().unwrap(), 0);
    let k1 = key("key_1", "backend", 1);
    store.insert_key(&k1, None).unwrap();
    assert_eq!(store.keys_version().unwrap(), 1);
    assert_eq!(store.get_key("key_1").unwrap(), k1);
    assert!(matches!(
        store.get_key("key_nope"),
        Err(StoreError::NotFound(_))
    ));

    // Same name while active: conflict, version unchanged.
    assert!(matches!(
        store.insert_key(&key("key_2", "backend", 2), None),
        Err(StoreError::Conflict(_))
    ));
    // Same hash or same id: conflict too.
    assert!(matches!(
        store.insert_key(&key("key_3", "other", 1), None),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.insert_key(&key("key_1", "other", 3), None),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.keys_version().unwrap(), 1);
    // Malformed input.
    let mut bad = key("key_9", "x", 9);
    bad.key_hash = "XYZ".into();
    assert!(matches!(
        store.insert_key(&bad, None),
        Err(StoreError::InvalidInput(_))
    ));
    assert!(matches!(
        store.insert_key(&key("nokey", "y", 8), None),
        Err(StoreError::InvalidInput(_))
    ));

    let mut k4 = key("key_4", "expiring", 4);
    k4.expires_at_ms = Some(T0 + 1000);
    k4.tenant = None;
    k4.models = vec![];
    k4.metadata = serde_json::Value::Null;
    store.insert_key(&k4, None).unwrap();
    assert_eq!(store.keys_version().unwrap(), 2);
    assert_eq!(store.get_key("key_4").unwrap(), k4);

    let active: Vec<_> = store
        .load_active_keys(T0)
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(active, vec!["key_1", "key_4"]);
    let active: Vec<_> = store
        .load_active_keys(T0 + 1000)
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(active, vec!["key_1"], "expired key not active");

    assert!(store.revoke_key("key_1", T0 + 5, None).unwrap());
    assert_eq!(store.keys_version().unwrap(), 3);
    assert!(
        !store.revoke_key("key_1", T0 + 6, None).unwrap(),
        "already revoked"
    );
    assert!(!store.revoke_key("key_unknown", T0 + 6, None).unwrap());
    assert_eq!(
        store.keys_version().unwrap(),
        3,
        "no-op revokes do not bump"
    );
    assert_eq!(store.get_key("key_1").unwrap().revoked_at_ms, Some(T0 + 5));
    assert!(
        store
            .load_active_keys(T0)
            .unwrap()
            .iter()
            .all(|k| k.id != "key_1")
    );

    // The name is free again once its key is revoked.
    store.insert_key(&key("key_5", "backend", 5), None).unwrap();
    assert_eq!(store.keys_version().unwrap(), 4);
    let all: Vec<_> = store
        .list_keys(true)
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(all, vec!["key_1", "key_4", "key_5"]);
    let live: Vec<_> = store
        .list_keys(false)
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(live, vec!["key_4", "key_5"]);
}

#[test]
fn keys_version_is_visible_across_processes() {
    // Two independent Store handles on one file stand in for the gateway and the CLI.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("k.db").display());
    let gateway = Store::open(&url).unwrap();
    let cli = Store::open(&url).unwrap();
    let before = gateway.keys_version().unwrap();
    cli.insert_key(&key("key_1", "a", 1), None).unwrap();
    assert!(gateway.keys_version().unwrap() > before);
    assert_eq!(gateway.load_active_keys(T0).unwrap().len(), 1);
}

fn arb_row() -> impl Strategy<Value = LedgerRow> {
    (
        any::<u64>(),
        0i64..(10 * DAY_MS),
        prop::option::of(prop::sample::select(vec!["acme", "globex", "initech"])),
        prop::option::of(prop::sample::select(vec!["gpt-4o", "claude"])),
        prop::sample::select(vec![Outcome::Ok, Outcome::Failed, Outcome::Rejected]),
        (0u64..1 << 40, 0u64..1 << 30, 0u64..1 << 40),
        (-(1i64 << 50)..(1i64 << 50), 0i64..(1i64 << 50)),
        any::<bool>(),
    )
        .prop_map(
            |(id, t, tenant, model, outcome, (inp, cached, out), (list, eff), est)| {
                let mut r =
                    LedgerRow::start(format!("req_{id:032x}"), T0 + t, "/v1/chat/completions");
                r.attribution.tenant = tenant.map(String::from);
                r.requested_model = model.map(String::from);
                r.outcome = outcome;
                r.usage = Usage {
                    input_tokens: inp,
                    cached_input_tokens: cached,
                    cache_write_input_tokens: 0,
                    output_tokens: out,
                    reasoning_tokens: out / 3,
                };
                r.list_cost = NanoUsd(list);
                r.effective_cost = NanoUsd(eff);
                r.usage_source = if est {
                    UsageSource::Estimated
                } else {
                    UsageSource::Provider
                };
                r
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn spend_sums_are_exact(
        rows in prop::collection::vec(arb_row(), 0..80),
        dims in prop::sample::subsequence(vec![Dim::Tenant, Dim::Model, Dim::Outcome, Dim::Day], 0..=3),
    ) {
        // Dedupe ids the way the primary key will.
        let mut seen = HashSet::new();
        let rows: Vec<_> = rows.into_iter().filter(|r| seen.insert(r.request_id.clone())).collect();
        let store = Store::open("sqlite::memory:").unwrap();
        store.insert_rows(&rows).unwrap();
        let got = store.spend(&SpendQuery { group_by: dims.clone(), ..Default::default() }).unwrap();
        let got: BTreeMap<_, _> = got.into_iter().map(|r| (r.dims.clone(), r)).collect();
        prop_assert_eq!(got, expected_spend(&rows, &dims));
        let (n, sum) = store.totals(&RowFilter::default()).unwrap();
        prop_assert_eq!(n, rows.len() as u64);
        prop_assert_eq!(sum.0 as i128, rows.iter().map(|r| r.effective_cost.0 as i128).sum::<i128>());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Reports over any range and filter equal the rows' sums, though whole days are read from
    /// the daily rollup and only the edges from the rows: rows inserted in several batches,
    /// some replayed (a replay must not count twice in the rollup), some imported.
    #[test]
    fn reports_from_the_rollup_equal_the_rows(
        rows in prop::collection::vec(arb_row(), 1..120),
        cuts in prop::collection::vec(0usize..120, 0..4),
        from in prop::option::of(-DAY_MS..(11 * DAY_MS)),
        len in 0i64..(8 * DAY_MS),
        open_end in any::<bool>(),
        tenant in prop::option::of(prop::sample::select(vec!["acme", "globex", "(unattributed)"])),
        outcome in prop::option::of(prop::sample::select(vec![Outcome::Ok, Outcome::Failed])),
        dims in prop::sample::subsequence(
            vec![Dim::Tenant, Dim::Model, Dim::Outcome, Dim::Day, Dim::Endpoint], 0..=3),
    ) {
        let mut seen = HashSet::new();
        let rows: Vec<_> = rows.into_iter().filter(|r| seen.insert(r.request_id.clone())).collect();
        let store = Store::open("sqlite::memory:").unwrap();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(rows.len())).collect();
        cuts.push(0);
        cuts.push(rows.len());
        cuts.sort_unstable();
        for (i, w) in cuts.windows(2).enumerate() {
            let batch = &rows[w[0]..w[1]];
            if i % 2 == 1 { store.import_rows(batch).unwrap(); } else { store.insert_rows(batch).unwrap(); }
            // The whole batch again, and the first rows once more: nothing changes.
            store.insert_rows(batch).unwrap();
            store.insert_rows(&rows[..w[1].min(3)]).unwrap();
        }
        let from_ms = from.map(|f| T0 + f);
        let to_ms = if open_end { None } else { Some(from_ms.unwrap_or(T0) + len) };
        let filter = RowFilter {
            tenant: tenant.map(String::from),
            outcome,
            ..Default::default()
        };
        let matching: Vec<LedgerRow> = rows
            .iter()
            .filter(|r| {
                from_ms.is_none_or(|f| r.started_at_ms >= f)
                    && to_ms.is_none_or(|t| r.started_at_ms < t)
                    && filter.tenant.as_deref().is_none_or(|t| r.attribution.tenant_label() == t)
                    && outcome.is_none_or(|o| r.outcome == o)
            })
            .cloned()
            .collect();
        let got = store
            .spend(&SpendQuery { group_by: dims.clone(), from_ms, to_ms, filter: filter.clone() })
            .unwrap();
        let got: BTreeMap<_, _> = got.into_iter().map(|r| (r.dims.clone(), r)).collect();
        prop_assert_eq!(got, expected_spend(&matching, &dims));
        let stats = store
            .traffic_stats(&RowFilter { from_ms, to_ms, ..filter })
            .unwrap();
        prop_assert_eq!(stats.requests, matching.len() as u64);
        prop_assert_eq!(
            stats.failed,
            matching.iter().filter(|r| r.outcome == Outcome::Failed).count() as u64
        );
        prop_assert_eq!(stats.cost, matching.iter().map(|r| r.effective_cost).sum::<NanoUsd>());
    }
}

#[test]
fn edge_values_day_before_epoch_and_huge_counters() {
    let (_dir, store) = file_store();
    let mut a = row(1);
    a.started_at_ms = -1;
    a.usage.output_tokens = u64::MAX; // saturated to i64::MAX, never rejected
    store.insert_rows(&[a]).unwrap();
    let r = store
        .spend(&SpendQuery {
            group_by: vec![Dim::Day],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r[0].dims["day"], "1969-12-31");
    assert_eq!(r[0].output_tokens, i64::MAX as u64);
}

#[test]
fn imported_rows_are_marked_and_counted_by_import() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).unwrap();
    s.insert_rows(&[row(1), row(2)]).unwrap();
    assert_eq!(s.imports_version().unwrap(), 0);
    assert_eq!(s.import_rows(&[row(2), row(3), row(4)]).unwrap(), 2);
    assert_eq!(s.imports_version().unwrap(), 1);
    // Importing what is already there changes nothing, not even the counter.
    assert_eq!(s.import_rows(&[row(3)]).unwrap(), 0);
    assert_eq!(s.imports_version().unwrap(), 1);
    let imported = RowFilter {
        imported_only: true,
        ..Default::default()
    };
    let want: NanoUsd = [row(3), row(4)].iter().map(|r| r.effective_cost).sum();
    assert_eq!(s.totals(&imported).unwrap(), (2, want));
    // Row 2 was served here first: the later import did not re-mark it.
    assert_eq!(s.totals(&RowFilter::default()).unwrap().0, 4);
}

// ---- audit trail and key rotation --------------------------------------------------------

fn view(k: &StoredKey) -> serde_json::Value {
    // A public view like the admin API's: everything but the hash.
    let mut v = serde_json::to_value(k).unwrap();
    v.as_object_mut().unwrap().remove("key_hash");
    v
}

fn master(at_ms: i64) -> KeyAudit {
    KeyAudit {
        audit: Audit {
            actor: Actor::Master,
            address: Some("127.0.0.1:5555".into()),
            at_ms,
        },
        view,
    }
}

fn all_audit(store: &Store) -> Vec<AuditRecord> {
    store.list_audit(&AuditFilter::default(), 1000).unwrap()
}

#[test]
fn the_audit_table_refuses_update_and_delete() {
    let (dir, store) = file_store();
    let a = Audit {
        actor: Actor::Cli {
            user: Some("ops".into()),
        },
        address: None,
        at_ms: T0,
    };
    let id = store
        .record_audit(&a.entry(
            "budget.create",
            "b",
            None,
            Some(serde_json::json!({"name": "b"})),
        ))
        .unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("tollgate.db")).unwrap();
    for sql in [
        "UPDATE audit SET action = 'x'",
        "UPDATE audit SET after_json = NULL WHERE id = 1",
        "DELETE FROM audit",
        "DELETE FROM audit WHERE id = 1",
    ] {
        let err = conn.execute(sql, []).unwrap_err().to_string();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    drop(conn);
    let entries = all_audit(&store);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].id, id);
    assert_eq!(entries[0].entry.action, "budget.create");
    assert_eq!(
        entries[0].entry.actor,
        Actor::Cli {
            user: Some("ops".into())
        }
    );
    assert_eq!(
        entries[0].entry.after,
        Some(serde_json::json!({"name": "b"}))
    );
    assert_eq!(entries[0].entry.before, None);
}

#[test]
fn key_changes_write_their_audit_entry_in_the_same_transaction() {
    let (_dir, store) = file_store();
    let k1 = key("key_1", "backend", 1);
    store.insert_key(&k1, Some(&master(T0))).unwrap();
    // A refused change leaves no entry.
    assert!(
        store
            .insert_key(&key("key_2", "backend", 2), Some(&master(T0)))
            .is_err()
    );
    assert!(!store.revoke_key("key_nope", T0, Some(&master(T0))).unwrap());
    let entries = all_audit(&store);
    assert_eq!(entries.len(), 1);
    let e = &entries[0].entry;
    assert_eq!(
        (e.action.as_str(), e.resource_id.as_str()),
        ("key.create", "key_1")
    );
    assert_eq!(e.before, None);
    assert_eq!(e.after, Some(view(&k1)));
    assert_eq!(e.address.as_deref(), Some("127.0.0.1:5555"));

    assert!(
        store
            .revoke_key("key_1", T0 + 7, Some(&master(T0 + 7)))
            .unwrap()
    );
    assert!(
        !store
            .revoke_key("key_1", T0 + 8, Some(&master(T0 + 8)))
            .unwrap()
    );
    let entries = all_audit(&store);
    assert_eq!(entries.len(), 2, "a no-op revoke is not audited");
    let e = &entries[0].entry;
    assert_eq!(e.action, "key.revoke");
    assert_eq!(e.before, Some(view(&k1)));
    let revoked = store.get_key("key_1").unwrap();
    assert_eq!(revoked.revoked_at_ms, Some(T0 + 7));
    assert_eq!(e.after, Some(view(&revoked)));
    // The hash never reaches the log.
    let text = format!("{entries:?}");
    assert!(!text.contains(&k1.key_hash));
}

#[test]
fn rotation_keeps_the_name_and_shortens_the_old_expiry() {
    let (_dir, store) = file_store();
    let old = key("key_1", "backend", 1);
    store.insert_key(&old, None).unwrap();
    let v0 = store.keys_version().unwrap();
    let next = key("key_2", "backend", 2);
    let after = store
        .rotate_key("key_1", &next, T0 + 1000, T0, Some(&master(T0)))
        .unwrap();
    assert_eq!(after.rotated_to.as_deref(), Some("key_2"));
    assert_eq!(after.expires_at_ms, Some(T0 + 1000));
    assert_eq!(store.get_key("key_1").unwrap(), after);
    assert_eq!(store.get_key("key_2").unwrap(), next);
    assert!(store.keys_version().unwrap() > v0);
    // Both work until the old one's expiry, then only the successor.
    let ids = |now| -> Vec<String> {
        store
            .load_active_keys(now)
            .unwrap()
            .into_iter()
            .map(|k| k.id)
            .collect()
    };
    assert_eq!(ids(T0 + 999), ["key_1", "key_2"]);
    assert_eq!(ids(T0 + 1000), ["key_2"]);
    // One audit entry, on the old key, before and after.
    let entries = all_audit(&store);
    assert_eq!(entries.len(), 1);
    let e = &entries[0].entry;
    assert_eq!(
        (e.action.as_str(), e.resource_id.as_str()),
        ("key.rotate", "key_1")
    );
    assert_eq!(e.before, Some(view(&old)));
    assert_eq!(e.after, Some(view(&after)));

    // The name is still taken by the successor.
    assert!(matches!(
        store.insert_key(&key("key_3", "backend", 3), None),
        Err(StoreError::Conflict(_))
    ));
    // A rotated key cannot be rotated again; its successor can.
    assert!(matches!(
        store.rotate_key("key_1", &key("key_3", "backend", 3), T0 + 500, T0, None),
        Err(StoreError::Conflict(_))
    ));
    store
        .rotate_key("key_2", &key("key_4", "backend", 4), T0 + 10, T0 + 1, None)
        .unwrap();
    assert_eq!(store.get_key("key_2").unwrap().expires_at_ms, Some(T0 + 10));

    // An earlier expiry is never extended, and the successor keeps the definition's.
    let mut limited = key("key_6", "limited", 6);
    limited.expires_at_ms = Some(T0 + 300);
    store.insert_key(&limited, None).unwrap();
    let mut successor = key("key_7", "limited", 7);
    successor.expires_at_ms = Some(T0 + 300);
    let after = store
        .rotate_key("key_6", &successor, T0 + 5000, T0, None)
        .unwrap();
    assert_eq!(after.expires_at_ms, Some(T0 + 300), "never extended");

    // Unknown, revoked and expired keys are refused, and nothing is stored for them.
    let stored = store.list_keys(true).unwrap().len();
    assert!(matches!(
        store.rotate_key("key_nope", &key("key_8", "n", 8), T0, T0, None),
        Err(StoreError::NotFound(_))
    ));
    store.insert_key(&key("key_5", "x", 5), None).unwrap();
    assert!(store.revoke_key("key_5", T0, None).unwrap());
    assert!(matches!(
        store.rotate_key("key_5", &key("key_8", "x", 8), T0, T0, None),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.rotate_key(
            "key_7",
            &key("key_8", "limited", 8),
            T0 + 400,
            T0 + 300,
            None
        ),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.list_keys(true).unwrap().len(), stored + 1);
    assert_eq!(all_audit(&store).len(), 1, "unaudited calls write nothing");
}

#[test]
fn audit_filters_and_keyset_pages() {
    let store = Store::open("sqlite::memory:").unwrap();
    let who = [
        Actor::Master,
        Actor::Token { id: "tok_1".into() },
        Actor::Cli {
            user: Some("ann".into()),
        },
        Actor::Cli { user: None },
    ];
    for i in 0..40i64 {
        let a = Audit {
            actor: who[(i % 4) as usize].clone(),
            address: None,
            at_ms: T0 + i * 1000,
        };
        let action = if i % 2 == 0 {
            "budget.update"
        } else {
            "policy.create"
        };
        store
            .record_audit(&a.entry(action, &format!("r{}", i % 5), None, None))
            .unwrap();
    }
    let list = |f: AuditFilter| -> Vec<i64> {
        store
            .list_audit(&f, 1000)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect()
    };
    let everything = list(AuditFilter::default());
    assert_eq!(everything.len(), 40);
    assert!(everything.windows(2).all(|w| w[0] > w[1]), "newest first");
    let f = |kind: &str, id: Option<&str>| AuditFilter {
        actor_kind: Some(kind.into()),
        actor_id: id.map(String::from),
        ..Default::default()
    };
    assert_eq!(list(f("master", None)).len(), 10);
    assert_eq!(list(f("cli", None)).len(), 20);
    assert_eq!(list(f("cli", Some("ann"))).len(), 10);
    assert_eq!(list(f("token", Some("tok_1"))).len(), 10);
    assert_eq!(list(f("token", Some("tok_2"))).len(), 0);
    let by = list(AuditFilter {
        action: Some("policy.create".into()),
        resource_id: Some("r1".into()),
        ..Default::default()
    });
    // i odd and i % 5 == 1: 1, 11, 21, 31.
    assert_eq!(by.len(), 4);
    let window = store
        .list_audit(
            &AuditFilter {
                from_ms: Some(T0 + 10_000),
                to_ms: Some(T0 + 20_000),
                ..Default::default()
            },
            1000,
        )
        .unwrap();
    assert_eq!(window.len(), 10);
    assert!(
        window
            .iter()
            .all(|r| (T0 + 10_000..T0 + 20_000).contains(&r.entry.at_ms))
    );
    // Pages of 7 by id cover everything once.
    let mut seen = Vec::new();
    let mut before_id = None;
    loop {
        let page = store
            .list_audit(
                &AuditFilter {
                    before_id,
                    ..Default::default()
                },
                7,
            )
            .unwrap();
        if page.is_empty() {
            break;
        }
        before_id = page.last().map(|r| r.id);
        seen.extend(page.iter().map(|r| r.id));
    }
    assert_eq!(seen, everything);
}

// ---- admin tokens --------------------------------------------------------------------------

fn token(id: &str, role: TokenRole, hash_byte: u8) -> AdminToken {
    AdminToken {
        id: id.into(),
        name: format!("{id} for ops"),
        role,
        token_hash: format!("{hash_byte:02x}").repeat(32),
        token_prefix: "tga-00aa11".into(),
        created_at_ms: T0 + i64::from(hash_byte),
        expires_at_ms: None,
        revoked_at_ms: None,
    }
}

fn token_view(t: &AdminToken) -> serde_json::Value {
    let mut v = serde_json::to_value(t).unwrap();
    v.as_object_mut().unwrap().remove("token_hash");
    v
}

fn token_master(at_ms: i64) -> TokenAudit {
    TokenAudit {
        audit: Audit {
            actor: Actor::Master,
            address: Some("127.0.0.1:5555".into()),
            at_ms,
        },
        view: token_view,
    }
}

#[test]
fn admin_tokens_crud_version_and_audit() {
    let (_dir, store) = file_store();
    assert_eq!(store.admin_tokens_version().unwrap(), 0);
    let admin = token("tok_1", TokenRole::Admin, 1);
    store
        .insert_admin_token(&admin, Some(&token_master(T0)))
        .unwrap();
    assert_eq!(store.admin_tokens_version().unwrap(), 1);
    assert_eq!(
        store.keys_version().unwrap(),
        0,
        "keys are a separate counter"
    );
    assert_eq!(store.get_admin_token("tok_1").unwrap(), admin);
    assert!(matches!(
        store.get_admin_token("tok_nope"),
        Err(StoreError::NotFound(_))
    ));
    // Duplicate id or hash: conflict; malformed: invalid; nothing written, nothing audited.
    assert!(matches!(
        store.insert_admin_token(&token("tok_1", TokenRole::Viewer, 2), None),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.insert_admin_token(&token("tok_2", TokenRole::Viewer, 1), None),
        Err(StoreError::Conflict(_))
    ));
    let mut bad = token("tok_3", TokenRole::Viewer, 3);
    bad.token_hash = "ABC".into();
    assert!(matches!(
        store.insert_admin_token(&bad, None),
        Err(StoreError::InvalidInput(_))
    ));
    assert!(matches!(
        store.insert_admin_token(&token("key_3", TokenRole::Viewer, 3), None),
        Err(StoreError::InvalidInput(_))
    ));
    assert_eq!(store.admin_tokens_version().unwrap(), 1);

    let mut viewer = token("tok_4", TokenRole::Viewer, 4);
    viewer.expires_at_ms = Some(T0 + 1_000);
    store.insert_admin_token(&viewer, None).unwrap();
    assert_eq!(
        store.get_admin_token("tok_4").unwrap().role,
        TokenRole::Viewer
    );
    let ids = |v: Vec<AdminToken>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.load_admin_tokens(T0).unwrap()),
        ["tok_1", "tok_4"]
    );
    assert_eq!(
        ids(store.load_admin_tokens(T0 + 1_000).unwrap()),
        ["tok_1"],
        "expired before the horizon"
    );

    assert!(
        store
            .revoke_admin_token("tok_1", T0 + 50, Some(&token_master(T0 + 50)))
            .unwrap()
    );
    assert_eq!(store.admin_tokens_version().unwrap(), 3);
    assert!(!store.revoke_admin_token("tok_1", T0 + 60, None).unwrap());
    assert!(!store.revoke_admin_token("tok_zz", T0 + 60, None).unwrap());
    assert_eq!(store.admin_tokens_version().unwrap(), 3, "no-op revokes");
    assert_eq!(
        store.get_admin_token("tok_1").unwrap().revoked_at_ms,
        Some(T0 + 50)
    );
    assert_eq!(ids(store.list_admin_tokens(false).unwrap()), ["tok_4"]);
    assert_eq!(
        ids(store.list_admin_tokens(true).unwrap()),
        ["tok_1", "tok_4"]
    );
    // Revoked after the horizon: still held (to answer "revoked"); before it: gone.
    assert_eq!(
        ids(store.load_admin_tokens(T0 + 49).unwrap()),
        ["tok_1", "tok_4"]
    );
    assert!(store.load_admin_tokens(T0 + 5_000).unwrap().is_empty());

    // Two entries, in the changes' transactions, never the hash.
    let entries = all_audit(&store);
    assert_eq!(entries.len(), 2);
    let (revoke, create) = (&entries[0].entry, &entries[1].entry);
    assert_eq!(create.action, "token.create");
    assert_eq!(create.resource_id, "tok_1");
    assert_eq!(create.before, None);
    assert_eq!(create.after, Some(token_view(&admin)));
    assert_eq!(revoke.action, "token.revoke");
    assert_eq!(revoke.before, Some(token_view(&admin)));
    assert_eq!(
        revoke.after.as_ref().unwrap()["revoked_at_ms"],
        serde_json::json!(T0 + 50)
    );
    for e in &entries {
        let text = serde_json::to_string(&e.entry).unwrap();
        assert!(!text.contains(&admin.token_hash), "{text}");
    }
}

#[test]
fn the_database_refuses_an_unknown_role() {
    let (dir, store) = file_store();
    store
        .insert_admin_token(&token("tok_1", TokenRole::Viewer, 1), None)
        .unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("tollgate.db")).unwrap();
    let r = conn.execute(
        "UPDATE admin_tokens SET role = 'root' WHERE id = 'tok_1'",
        [],
    );
    assert!(r.is_err(), "CHECK (role IN ('admin', 'viewer'))");
}

/// Nearest-rank percentile of `v` (sorted here), independently of the store.
fn nearest_rank(mut v: Vec<u64>, pct: u64) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let rank = (pct * v.len() as u64).div_ceil(100).max(1);
    Some(v[rank as usize - 1])
}

#[test]
fn traffic_stats_count_sum_and_rank_like_rust() {
    let (_dir, store) = file_store();
    let rows: Vec<_> = (0..301).map(row).collect();
    store.insert_rows(&rows).unwrap();
    for filter in [
        RowFilter::default(),
        RowFilter {
            tenant: Some("acme".into()),
            from_ms: Some(T0 + DAY_MS),
            to_ms: Some(T0 + 4 * DAY_MS),
            ..Default::default()
        },
        RowFilter {
            cache_status: Some("hit".into()),
            ..Default::default()
        },
        RowFilter {
            cache_status: Some(CACHE_NONE.into()),
            ..Default::default()
        },
        RowFilter {
            from_ms: Some(0),
            to_ms: Some(1),
            ..Default::default()
        },
    ] {
        let m: Vec<&LedgerRow> = rows
            .iter()
            .filter(|r| {
                filter
                    .tenant
                    .as_ref()
                    .is_none_or(|t| r.attribution.tenant.as_ref() == Some(t))
                    && filter.from_ms.is_none_or(|f| r.started_at_ms >= f)
                    && filter.to_ms.is_none_or(|t| r.started_at_ms < t)
                    && match filter.cache_status.as_deref() {
                        None => true,
                        Some(CACHE_NONE) => r.cache_status.is_none(),
                        Some(c) => r.cache_status.as_deref() == Some(c),
                    }
            })
            .collect();
        let s = store.traffic_stats(&filter).unwrap();
        let count = |o: Outcome| m.iter().filter(|r| r.outcome == o).count() as u64;
        let cache = |c: &str| {
            m.iter()
                .filter(|r| r.cache_status.as_deref() == Some(c))
                .count() as u64
        };
        assert_eq!(s.requests, m.len() as u64, "{filter:?}");
        assert_eq!(
            (s.ok, s.rejected, s.failed, s.cancelled),
            (
                count(Outcome::Ok),
                count(Outcome::Rejected),
                count(Outcome::Failed),
                count(Outcome::Cancelled)
            )
        );
        assert_eq!(
            (s.cache_hits, s.cache_misses, s.cache_bypass),
            (cache("hit"), cache("miss"), cache("bypass"))
        );
        assert_eq!(s.cost, m.iter().map(|r| r.effective_cost).sum::<NanoUsd>());
        assert_eq!(s.saved, m.iter().map(|r| r.saved_cost).sum::<NanoUsd>());
        let served: Vec<&&LedgerRow> = m.iter().filter(|r| r.outcome == Outcome::Ok).collect();
        for (i, pct) in PERCENTILES.iter().enumerate() {
            let lat = served.iter().map(|r| r.latency_us).collect();
            let ttft = served.iter().filter_map(|r| r.ttft_us).collect();
            assert_eq!(s.latency_us[i], nearest_rank(lat, u64::from(*pct)));
            assert_eq!(s.ttft_us[i], nearest_rank(ttft, u64::from(*pct)));
        }
        // The cache filter narrows listings the same way.
        let (listed, _) = store.list_requests(&filter, Page::first(1000)).unwrap();
        assert_eq!(listed.len(), m.len());
    }
}
