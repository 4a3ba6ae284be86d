//! `tollgate export focus` over a ledger that real traffic filled: several tenants, two
//! provider kinds, cached input tokens, streams, rejections and an unattributed request. The
//! export's money must equal the ledger and the spend report exactly, in total and per tenant
//! and model, and its request counts must cover every row.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::json;

use crate::harness::*;

fn export(env: &TestEnv, version: &str, out: &std::path::Path) -> std::process::Output {
    let cfg = env.dir.path().join("export.yaml");
    std::fs::write(
        &cfg,
        format!(
            "server:\n  organization: Example Operator Ltd\nstorage:\n  ledger: sqlite://{}\n\
             providers:\n  sim:\n    kind: openai\n    base_url: http://127.0.0.1:9/v1\n  claude:\n    kind: anthropic\n    base_url: http://127.0.0.1:9\n",
            env.db.display()
        ),
    )
    .unwrap();
    let (today, tomorrow) = days();
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .env_clear()
        .args([
            "export",
            "focus",
            "--from",
            &today,
            "--to",
            &tomorrow,
            "--version",
            version,
        ])
        .arg("--config")
        .arg(&cfg)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap()
}

/// A gateway with keys for tenants `acme` and `globex`, and one without a tenant.
async fn two_tenants(o: Opts) -> (TestEnv, String, String, String) {
    let env = TestEnv::with(o).await;
    let (acme, _) = env
        .create_key(json!({"name": "acme-app", "tenant": "acme"}))
        .await;
    let (globex, _) = env
        .create_key(json!({"name": "globex-app", "tenant": "globex"}))
        .await;
    let plain = env.key().await;
    (env, acme, globex, plain)
}

/// An admin GET whose status and body the test inspects itself.
async fn admin_raw(env: &TestEnv, path: &str) -> reqwest::Response {
    env.http
        .get(env.url(path))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
}

/// Yesterday and tomorrow (UTC), `YYYY-MM-DD`: a range that holds every row a test just made,
/// even across midnight.
pub(crate) fn days() -> (String, String) {
    let now = jiff::Timestamp::now();
    let day = |t: jiff::Timestamp| t.strftime("%Y-%m-%d").to_string();
    let h24 = jiff::SignedDuration::from_hours(24);
    (day(now - h24), day(now + h24))
}

/// The CSV as one map per row (an empty cell reads as "").
fn records(path: &std::path::Path) -> Vec<BTreeMap<String, String>> {
    let mut rd = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = rd.headers().unwrap().iter().map(String::from).collect();
    rd.records()
        .map(|r| {
            header
                .iter()
                .cloned()
                .zip(r.unwrap().iter().map(String::from))
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn focus_export_reconciles_with_the_ledger_and_the_spend_report() {
    let mut o = Opts::default();
    o.sim.cached_prompt_tokens = 6;
    o.extra_providers = "  claude:\n    kind: anthropic\n    base_url: {sim_root}\n".into();
    o.extra_models =
        "  sonnet: {deployments: [{provider: claude, model: claude-sonnet-4-5}]}\n".into();
    let env = TestEnv::with(o).await;
    let (acme, _) = env
        .create_key(json!({"name": "acme-app", "tenant": "acme", "team": "search"}))
        .await;
    let (globex, _) = env
        .create_key(json!({"name": "globex-app", "tenant": "globex"}))
        .await;
    let plain = env.key().await;

    let mut sent = 0;
    for (i, key) in [&acme, &globex, &plain]
        .into_iter()
        .cycle()
        .take(9)
        .enumerate()
    {
        let model = ["gpt-4o-mini", "sonnet", "gpt-4o"][i % 3];
        let stream = i % 2 == 1;
        let r = env
            .chat(
                key,
                json!({"model": model, "stream": stream,
                       "messages": [{"role": "user", "content": format!("question {i}")}]}),
            )
            .await;
        assert_eq!(r.status(), 200, "request {i}");
        let _ = r.bytes().await.unwrap();
        sent += 1;
    }
    // Rejections leave rows with no charge: an unknown model and a bad key.
    let r = env
        .chat(
            &acme,
            json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(r.status(), 404);
    let r = env
        .chat(
            "tg-not-a-key",
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(r.status(), 401);
    sent += 2;
    let rows = env.wait_rows("limit=1000", |r| r.len() >= sent).await;
    assert_eq!(rows.len(), sent);

    let out = env.dir.path().join("focus-1.2.csv");
    let res = export(&env, "1.2", &out);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let recs = records(&out);
    let report = crate::focus_model::check_csv(
        &std::fs::read_to_string(&out).unwrap(),
        crate::focus_model::GATEWAY_CRITERIA,
    );
    assert!(
        report.failures.is_empty() && report.model_errors.is_empty(),
        "FOCUS 1.2 rules broken:\n{}",
        report.summary()
    );
    let ledger_total: i64 = rows
        .iter()
        .map(|r| nanos(r["effective_cost"].as_str().unwrap()))
        .sum();
    assert!(ledger_total > 0);
    let billed = |filter: &dyn Fn(&BTreeMap<String, String>) -> bool| -> i64 {
        recs.iter()
            .filter(|r| filter(r))
            .map(|r| nanos(&r["BilledCost"]))
            .sum()
    };
    assert_eq!(
        billed(&|_| true),
        ledger_total,
        "Σ BilledCost = Σ ledger rows"
    );
    let spend = env.admin_get("/admin/v1/spend").await;
    assert_eq!(
        nanos(spend["total"]["cost_usd"].as_str().unwrap()),
        ledger_total
    );

    // Per tenant and per model, against the spend report's groups.
    for (dim, column) in [
        ("tenant", "BillingAccountId"),
        ("model", "x_RequestedModel"),
    ] {
        let by = env
            .admin_get(&format!("/admin/v1/spend?group_by={dim}"))
            .await;
        for g in by["data"].as_array().unwrap() {
            let label = g[dim].as_str().unwrap_or("").to_string();
            let want = nanos(g["cost_usd"].as_str().unwrap());
            let got = billed(&|r| {
                r[column] == label || (r[column].is_empty() && label == "(unattributed)")
            });
            assert_eq!(got, want, "{dim} {label}");
        }
    }

    // Every ledger row is counted once; failures among them.
    let count = |c: &str| {
        recs.iter()
            .map(|r| r[c].parse::<u64>().unwrap())
            .sum::<u64>()
    };
    assert_eq!(count("x_RequestCount"), sent as u64);
    assert_eq!(count("x_FailedRequestCount"), 2);
    // Cached input shows up as its own SKU, at the cached price.
    assert!(
        recs.iter()
            .any(|r| r["SkuMeter"] == "Cached Input Tokens" && r["x_CachedInputTokens"] != "0")
    );
    for r in &recs {
        assert_eq!(r["InvoiceIssuerName"], "Example Operator Ltd");
        assert_eq!(r["ProviderName"], "Example Operator Ltd");
        assert_eq!(r["ChargeCategory"], "Usage");
        assert!(r["ChargePeriodEnd"] > r["ChargePeriodStart"]);
        let unit = exact(&r["ListUnitPrice"]);
        let qty = exact(&r["PricingQuantity"]);
        assert_eq!(
            mul(unit, qty),
            exact(&r["ListCost"]),
            "ListCost = ListUnitPrice × PricingQuantity in {r:?}"
        );
    }
    let publishers: std::collections::BTreeSet<&str> =
        recs.iter().map(|r| r["PublisherName"].as_str()).collect();
    assert!(publishers.contains("Anthropic"), "{publishers:?}");

    // The same export over HTTP, streamed as a named attachment.
    let (today, tomorrow) = days();
    let r = admin_raw(
        &env,
        &format!("/admin/v1/exports/focus?from={today}&to={tomorrow}"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        r.headers()["content-disposition"],
        format!("attachment; filename=\"focus-1.2-cost-{today}-{tomorrow}.csv\"").as_str()
    );
    let http_file = env.dir.path().join("http.csv");
    std::fs::write(&http_file, r.bytes().await.unwrap()).unwrap();
    let over_http = records(&http_file);
    assert_eq!(over_http.len(), recs.len());
    assert_eq!(
        over_http
            .iter()
            .map(|r| nanos(&r["BilledCost"]))
            .sum::<i64>(),
        ledger_total
    );
    for (q, param) in [
        (format!("from={today}"), "to"),
        (format!("from={tomorrow}&to={today}"), "from"),
        (format!("from={today}&to={tomorrow}&version=1.1"), "version"),
        (format!("from={today}&to={tomorrow}&format=xlsx"), "format"),
        ("from=2010-01-01&to=2026-01-01".to_string(), "to"),
    ] {
        let r = admin_raw(&env, &format!("/admin/v1/exports/focus?{q}")).await;
        assert_eq!(r.status(), 400, "{q}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["param"], param, "{q}: {body}");
    }

    // Parquet, over HTTP and from the CLI.
    let r = admin_raw(
        &env,
        &format!("/admin/v1/exports/focus?from={today}&to={tomorrow}&format=parquet"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.apache.parquet"
    );
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .ends_with(".parquet\"")
    );
    let body = r.bytes().await.unwrap();
    assert!(body.starts_with(b"PAR1") && body.ends_with(b"PAR1"));
    let pq = env.dir.path().join("focus.parquet");
    let cfg = env.dir.path().join("export.yaml");
    let o = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .env_clear()
        .args([
            "export", "focus", "--from", &today, "--to", &tomorrow, "--format", "parquet", "-o",
        ])
        .arg(&pq)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let file = std::fs::read(&pq).unwrap();
    assert!(file.starts_with(b"PAR1") && file.ends_with(b"PAR1"));

    // The 1.0 column set, same money.
    let out10 = env.dir.path().join("focus-1.0.csv");
    let res = export(&env, "1.0", &out10);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let recs10 = records(&out10);
    assert!(recs10[0].contains_key("AvailabilityZone") && !recs10[0].contains_key("SkuMeter"));
    assert_eq!(
        recs10.iter().map(|r| nanos(&r["BilledCost"])).sum::<i64>(),
        ledger_total
    );
}

#[tokio::test]
async fn bad_export_arguments_fail_and_write_nothing() {
    let env = TestEnv::start().await;
    let out = env.dir.path().join("never.csv");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .env_clear()
            .args(["export", "focus"])
            .args(args)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap()
    };
    for (args, needle) in [
        (
            &["--from", "2026-02-01", "--to", "2026-01-01"][..],
            "--from must be before --to",
        ),
        (&["--from", "2026-13-01", "--to", "2026-12-01"][..], "from"),
        (
            &[
                "--from",
                "2026-01-01",
                "--to",
                "2026-02-01",
                "--version",
                "1.1",
            ][..],
            "1.1",
        ),
        (
            &[
                "--from",
                "2026-01-01",
                "--to",
                "2026-02-01",
                "--dataset",
                "nope",
            ][..],
            "nope",
        ),
        (
            &[
                "--from",
                "2026-01-01",
                "--to",
                "2026-02-01",
                "--format",
                "xlsx",
            ][..],
            "xlsx",
        ),
        (
            &["--from", "2010-01-01", "--to", "2026-02-01"][..],
            "server.max_report_days",
        ),
    ] {
        let o = run(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} wrote a file");
    }
}

/// A plain decimal as (units, scale), trailing zeros dropped so equal values compare equal.
fn exact(s: &str) -> (i128, u32) {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    norm(((format!("{int}{frac}")).parse().unwrap(), frac.len() as u32))
}

fn mul(a: (i128, u32), b: (i128, u32)) -> (i128, u32) {
    norm((a.0 * b.0, a.1 + b.1))
}

fn norm((mut units, mut scale): (i128, u32)) -> (i128, u32) {
    while scale > 0 && units % 10 == 0 {
        units /= 10;
        scale -= 1;
    }
    (units, scale)
}

fn tollgate(args: &[&str], config: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .env_clear()
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

fn ledger_config(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let cfg = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &cfg,
        format!(
            "storage:\n  ledger: sqlite://{}\n",
            dir.join(format!("{name}.db")).display()
        ),
    )
    .unwrap();
    cfg
}

#[tokio::test]
async fn ledger_export_and_import_round_trip_and_refuse_bad_files() {
    let env = TestEnv::start().await;
    let key = env.key().await;
    for i in 0..5 {
        let r = env
            .chat(
                &key,
                json!({"model": "gpt-4o-mini", "stream": i % 2 == 0,
                               "messages": [{"role": "user", "content": format!("q{i}")}]}),
            )
            .await;
        let _ = r.bytes().await.unwrap();
    }
    let rows = env.wait_rows("limit=100", |r| r.len() >= 5).await;
    let (from, to) = days();
    let source = env.dir.path().join("source.yaml");
    std::fs::write(
        &source,
        format!("storage:\n  ledger: sqlite://{}\n", env.db.display()),
    )
    .unwrap();
    let jsonl = env.dir.path().join("rows.jsonl");
    let o = tollgate(
        &[
            "ledger",
            "export",
            "--from",
            &from,
            "--to",
            &to,
            "-o",
            jsonl.to_str().unwrap(),
        ],
        &source,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&jsonl).unwrap();
    assert_eq!(text.lines().count(), rows.len());
    // Each line is a row exactly as the admin API shows it.
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let same = rows
        .iter()
        .find(|r| r["request_id"] == first["request_id"])
        .unwrap();
    assert_eq!(&first, same);

    let target = ledger_config(env.dir.path(), "target");
    for expect_new in [rows.len(), 0] {
        let o = tollgate(&["ledger", "import", jsonl.to_str().unwrap()], &target);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        assert!(err.contains(&format!("({expect_new} new")), "{err}");
    }
    // The same FOCUS file from the original and the imported ledger.
    let focus = |cfg: &std::path::Path, name: &str| {
        let out = env.dir.path().join(name);
        let o = tollgate(
            &[
                "export",
                "focus",
                "--from",
                &from,
                "--to",
                &to,
                "-o",
                out.to_str().unwrap(),
            ],
            cfg,
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(out).unwrap()
    };
    assert_eq!(focus(&source, "a.csv"), focus(&target, "b.csv"));

    // A bad line refuses the whole file, naming the line; --skip-invalid imports the rest.
    let bad = env.dir.path().join("bad.jsonl");
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let mut broken: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    broken["request_id"] = json!("req_broken");
    broken["reasoning_tokens"] = json!(10_000);
    lines[1] = broken.to_string();
    lines.insert(3, "{not json".into());
    std::fs::write(&bad, lines.join("\n")).unwrap();
    let fresh = ledger_config(env.dir.path(), "fresh");
    let o = tollgate(&["ledger", "import", bad.to_str().unwrap()], &fresh);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("line 2: reasoning_tokens") && err.contains("line 4:"),
        "{err}"
    );
    assert!(err.contains("nothing imported"), "{err}");
    let store = tollgate_store::Store::open(&format!(
        "sqlite://{}",
        env.dir.path().join("fresh.db").display()
    ))
    .unwrap();
    assert_eq!(store.totals(&Default::default()).unwrap().0, 0);
    let o = tollgate(
        &["ledger", "import", "--skip-invalid", bad.to_str().unwrap()],
        &fresh,
    );
    assert!(o.status.success());
    assert_eq!(
        store.totals(&Default::default()).unwrap().0,
        rows.len() as u64 - 1
    );
}

#[tokio::test]
async fn a_running_gateway_counts_imported_spend_in_its_budgets() {
    let env = TestEnv::with(Opts {
        extra_yaml: "budgets:\n  - {name: acme-monthly, scope: {tenant: acme}, limit_usd: \"1\", window: month, mode: hard}\n  - {name: acme-rolling, scope: {tenant: acme}, limit_usd: \"1\", window: 1h, mode: soft}\n".into(),
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    let r = env
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await.unwrap();
    let rows = env.wait_rows("limit=10", |r| !r.is_empty()).await;
    let served = nanos(rows[0]["effective_cost"].as_str().unwrap());

    // Two rows another instance served for acme: one from before this gateway started (the
    // first millisecond of the month), one from just now, after it started. $0.60 each.
    let now = jiff::Timestamp::now();
    let month_start = now
        .to_zoned(jiff::tz::TimeZone::UTC)
        .first_of_month()
        .unwrap()
        .start_of_day()
        .unwrap()
        .timestamp()
        .as_millisecond();
    let mut lines = String::new();
    for (i, at) in [month_start, now.as_millisecond()].into_iter().enumerate() {
        let mut row = rows[0].clone();
        row["request_id"] = json!(format!("req_0000000000000000000000000000000{i}"));
        row["started_at"] = json!(jiff::Timestamp::from_millisecond(at).unwrap().to_string());
        row["started_at_ms"] = json!(at);
        row["list_cost"] = json!("0.6");
        row["effective_cost"] = json!("0.6");
        lines.push_str(&row.to_string());
        lines.push('\n');
    }
    let file = env.dir.path().join("other-instance.jsonl");
    std::fs::write(&file, lines).unwrap();
    let cfg = env.dir.path().join("import.yaml");
    std::fs::write(
        &cfg,
        format!("storage:\n  ledger: sqlite://{}\n", env.db.display()),
    )
    .unwrap();
    let o = tollgate(&["ledger", "import", file.to_str().unwrap()], &cfg);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Within a poll interval the budgets hold both imported rows: the hard one now refuses.
    let want = served + 1_200_000_000;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let b = env.admin_get("/admin/v1/budgets/acme-monthly").await;
        if nanos(b["spent"].as_str().unwrap()) == want {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "imported spend never counted: {b}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The rolling hour holds only the recent one.
    let b = env.admin_get("/admin/v1/budgets/acme-rolling").await;
    let recent = served + 600_000_000;
    if now.as_millisecond() - month_start >= 3_600_000 {
        assert_eq!(nanos(b["spent"].as_str().unwrap()), recent, "{b}");
    }
    let r = env
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "more"}]}),
        )
        .await;
    assert_eq!(r.status(), 429, "{}", r.text().await.unwrap());

    // Live spend is kept across the re-seed, and a second import of the same file changes
    // nothing.
    let o = tollgate(&["ledger", "import", file.to_str().unwrap()], &cfg);
    assert!(o.status.success());
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let b = env.admin_get("/admin/v1/budgets/acme-monthly").await;
    assert_eq!(nanos(b["spent"].as_str().unwrap()), want, "{b}");
}

#[tokio::test]
async fn chargeback_export_and_margins_agree_with_the_ledger() {
    let o = Opts {
        extra_yaml: "tenants:\n  acme: {markup_pct: 20, revenue_usd_per_month: 100}\n  \
                     globex: {price_list: {gpt-4o: {input: 5, output: 20}}}\n"
            .into(),
        ..Opts::default()
    };
    let (env, acme, globex, plain) = two_tenants(o).await;
    let mut sent = 0;
    for (key, model) in [
        (&acme, "gpt-4o-mini"),
        (&globex, "gpt-4o"),
        (&plain, "gpt-4o-mini"),
    ] {
        for i in 0..3 {
            let r = env
                .chat(key, json!({"model": model, "messages": [{"role": "user", "content": format!("q{i}")}]}))
                .await;
            assert_eq!(r.status(), 200);
            let _ = r.bytes().await.unwrap();
            sent += 1;
        }
    }
    let rows = env.wait_rows("limit=100", |r| r.len() >= sent).await;
    let (from, to) = days();
    let r = admin_raw(
        &env,
        &format!("/admin/v1/exports/focus?from={from}&to={to}&dataset=chargeback"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("chargeback")
    );
    let file = env.dir.path().join("chargeback.csv");
    std::fs::write(&file, r.bytes().await.unwrap()).unwrap();
    let recs = records(&file);
    let report = crate::focus_model::check_csv(
        &std::fs::read_to_string(&file).unwrap(),
        crate::focus_model::GATEWAY_CRITERIA,
    );
    assert!(report.failures.is_empty(), "{}", report.summary());

    let margins = env
        .admin_get(&format!("/admin/v1/margins?from={from}&to={to}"))
        .await;
    assert_eq!(margins["object"], "margins");
    let data = margins["data"].as_array().unwrap();
    let upstream_of = |tenant: &str| -> i64 {
        rows.iter()
            .filter(|r| r["tenant"].as_str().unwrap_or("(unattributed)") == tenant)
            .map(|r| nanos(r["effective_cost"].as_str().unwrap()))
            .sum()
    };
    let file_sum = |tenant: &str, col: &str| -> i64 {
        recs.iter()
            .filter(|r| r["BillingAccountId"] == tenant)
            .map(|r| nanos(&r[col]))
            .sum()
    };
    for m in data {
        let tenant = m["tenant"].as_str().unwrap();
        let billed = nanos(m["billed_usd"].as_str().unwrap());
        let cost = nanos(m["ai_cost_usd"].as_str().unwrap());
        assert_eq!(cost, upstream_of(tenant), "{tenant}: AI cost = the ledger");
        assert_eq!(cost, file_sum(tenant, "x_UpstreamCost"), "{tenant}");
        assert_eq!(
            billed,
            file_sum(tenant, "BilledCost"),
            "{tenant}: margins = the export"
        );
        assert_eq!(nanos(m["margin_usd"].as_str().unwrap()), billed - cost);
        match tenant {
            "acme" => {
                // +20 %, rounded once per charge-hour group.
                assert!(
                    (billed * 10 - cost * 12).abs() <= 10 * 3,
                    "{billed} vs 1.2 × {cost}"
                );
                assert_eq!(m["margin_pct"], "16.67");
                let revenue = nanos(m["revenue_usd"].as_str().unwrap());
                assert!(revenue > 0);
                assert_eq!(
                    nanos(m["revenue_margin_usd"].as_str().unwrap()),
                    revenue - cost
                );
            }
            "globex" => {
                // Billed at its price list for gpt-4o, whatever the upstream cost.
                let tokens = |k: &str| -> i64 {
                    rows.iter()
                        .filter(|r| r["tenant"] == "globex")
                        .map(|r| r[k].as_i64().unwrap())
                        .sum()
                };
                let exact_x2 =
                    (tokens("input_tokens") * 5_000 + tokens("output_tokens") * 20_000) * 2;
                assert!(
                    (billed * 2 - exact_x2).abs() <= 3,
                    "{billed} vs {exact_x2}/2"
                );
                assert!(m["revenue_usd"].is_null());
            }
            _ => assert_eq!(billed, cost, "{tenant}: no terms, billed at cost"),
        }
    }
    assert_eq!(
        nanos(margins["total"]["ai_cost_usd"].as_str().unwrap()),
        rows.iter()
            .map(|r| nanos(r["effective_cost"].as_str().unwrap()))
            .sum::<i64>()
    );

    // Whole days are remembered; a day that gains rows is summed again.
    for i in 0..2 {
        let r = env
            .chat(&acme, json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": format!("late {i}")}]}))
            .await;
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await.unwrap();
    }
    let rows = env.wait_rows("limit=100", |r| r.len() >= sent + 2).await;
    let again = env
        .admin_get(&format!("/admin/v1/margins?from={from}&to={to}"))
        .await;
    assert_eq!(again["total"]["requests"], sent + 2, "{again}");
    assert_eq!(
        nanos(again["total"]["ai_cost_usd"].as_str().unwrap()),
        rows.iter()
            .map(|r| nanos(r["effective_cost"].as_str().unwrap()))
            .sum::<i64>()
    );
}

#[tokio::test]
async fn showback_spreads_shared_cost_and_adds_up_to_the_ledger() {
    let o = Opts {
        extra_yaml: "tenants:\n  acme: {}\n  globex: {}\n\
                     allocations:\n  \
                     - {name: shared-embeddings, match: {feature: shared-embeddings}, method: proportional}\n  \
                     - {name: unattributed, match: {tenant: \"(unattributed)\"}, method: even, tenants: [acme, globex]}\n  \
                     - {name: commitment, amount_usd_per_month: 310, method: weights, weights: {acme: 3, globex: 1}}\n"
            .into(),
        ..Opts::default()
    };
    let (env, acme, globex, plain) = two_tenants(o).await;
    let mut sent = 0;
    for (key, feature, n) in [
        (&acme, "chat", 3),
        (&globex, "chat", 1),
        (&acme, "shared-embeddings", 2),
        (&plain, "chat", 2),
    ] {
        for i in 0..n {
            let r = env
                .chat_with(
                    key,
                    &[("x-tollgate-feature", feature)],
                    &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": format!("{feature} {i}")}]}),
                )
                .await;
            assert_eq!(r.status(), 200);
            let _ = r.bytes().await.unwrap();
            sent += 1;
        }
    }
    let rows = env.wait_rows("limit=100", |r| r.len() >= sent).await;
    let cost = |pred: &dyn Fn(&serde_json::Value) -> bool| -> i64 {
        rows.iter()
            .filter(|r| pred(r))
            .map(|r| nanos(r["effective_cost"].as_str().unwrap()))
            .sum()
    };
    let ledger_total = cost(&|_| true);
    // A whole calendar month, so the fixed commitment counts in full.
    let start = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .first_of_month()
        .unwrap()
        .start_of_day()
        .unwrap();
    let end = start.checked_add(jiff::Span::new().months(1)).unwrap();
    let (from, to) = (start.timestamp().to_string(), end.timestamp().to_string());
    let sb = env
        .admin_get(&format!("/admin/v1/showback?from={from}&to={to}"))
        .await;
    assert_eq!(sb["object"], "showback");
    assert_eq!(
        nanos(sb["ledger_total_usd"].as_str().unwrap()),
        ledger_total
    );
    let commitment = 310_000_000_000;
    assert_eq!(
        nanos(sb["total"]["total_usd"].as_str().unwrap()),
        ledger_total + commitment,
        "everything spent, plus the fixed commitment, exactly"
    );
    let line = |tenant: &str| {
        sb["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["tenant"] == tenant)
            .cloned()
            .unwrap()
    };
    let acme_direct = cost(&|r| r["tenant"] == "acme" && r["feature"] == "chat");
    let globex_direct = cost(&|r| r["tenant"] == "globex");
    assert_eq!(
        nanos(line("acme")["direct_usd"].as_str().unwrap()),
        acme_direct
    );
    assert_eq!(
        nanos(line("globex")["direct_usd"].as_str().unwrap()),
        globex_direct
    );
    let pools = sb["allocations"].as_array().unwrap();
    assert_eq!(
        nanos(pools[0]["from_ledger_usd"].as_str().unwrap()),
        cost(&|r| r["feature"] == "shared-embeddings")
    );
    assert_eq!(
        nanos(pools[1]["from_ledger_usd"].as_str().unwrap()),
        cost(&|r| r["tenant"].is_null())
    );
    assert_eq!(
        nanos(pools[2]["shares"]["acme"].as_str().unwrap()),
        commitment / 4 * 3
    );
    for p in pools {
        let shares: i64 = p["shares"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| nanos(v.as_str().unwrap()))
            .sum();
        assert_eq!(
            shares,
            nanos(p["from_ledger_usd"].as_str().unwrap()) + nanos(p["fixed_usd"].as_str().unwrap())
        );
    }
    assert!(
        sb["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["tenant"] != "(unattributed)")
    );

    // The FOCUS export marks the shared-cost rows with the pool that spreads them.
    let r = admin_raw(
        &env,
        &format!("/admin/v1/exports/focus?from={from}&to={to}"),
    )
    .await;
    assert_eq!(r.status(), 200);
    let file = env.dir.path().join("marked.csv");
    std::fs::write(&file, r.bytes().await.unwrap()).unwrap();
    // ... and apportions each one's cost over the pool's carriers: per row exactly its cost,
    // per carrier over the file exactly its showback share of the pool's ledger spend.
    let mut allocated: BTreeMap<(String, String), i64> = BTreeMap::new();
    for rec in records(&file) {
        let want = match (rec["BillingAccountId"].as_str(), rec["x_Feature"].as_str()) {
            (_, "shared-embeddings") => "shared-embeddings",
            ("(unattributed)", _) => "unattributed",
            _ => "",
        };
        assert_eq!(rec["x_AllocationPool"], want, "{rec:?}");
        if want.is_empty() {
            assert_eq!(rec["x_AllocatedCosts"], "", "{rec:?}");
            continue;
        }
        let shares: BTreeMap<String, String> =
            serde_json::from_str(&rec["x_AllocatedCosts"]).unwrap();
        let mut row_sum = 0;
        for (tenant, v) in shares {
            assert!(["acme", "globex"].contains(&tenant.as_str()), "{rec:?}");
            row_sum += nanos(&v);
            *allocated.entry((want.to_string(), tenant)).or_default() += nanos(&v);
        }
        assert_eq!(row_sum, nanos(&rec["BilledCost"]), "{rec:?}");
    }
    // The CLI apportions the same way.
    let cfg = env.dir.path().join("showback.yaml");
    std::fs::write(
        &cfg,
        format!(
            "storage:\n  ledger: sqlite://{}\ntenants:\n  acme: {{}}\n  globex: {{}}\n\
             allocations:\n  \
             - {{name: shared-embeddings, match: {{feature: shared-embeddings}}}}\n  \
             - {{name: unattributed, match: {{tenant: \"(unattributed)\"}}, method: even, tenants: [acme, globex]}}\n",
            env.db.display()
        ),
    )
    .unwrap();
    let cli_file = env.dir.path().join("cli.csv");
    let out = tollgate(
        &[
            "export",
            "focus",
            "--from",
            &from,
            "--to",
            &to,
            "-o",
            cli_file.to_str().unwrap(),
        ],
        &cfg,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let column = |f: &std::path::Path| -> Vec<String> {
        records(f)
            .into_iter()
            .map(|r| r["x_AllocatedCosts"].clone())
            .collect()
    };
    assert_eq!(column(&cli_file), column(&file));
    for p in &pools[..2] {
        for (tenant, share) in p["ledger_shares"].as_object().unwrap() {
            let key = (p["name"].as_str().unwrap().to_string(), tenant.clone());
            assert_eq!(
                allocated.get(&key).copied().unwrap_or(0),
                nanos(share.as_str().unwrap()),
                "{key:?}"
            );
        }
    }

    // The rules in force, in order.
    let rules = env.admin_get("/admin/v1/allocations").await;
    let names: Vec<&str> = rules["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["shared-embeddings", "unattributed", "commitment"]);
    assert_eq!(
        rules["data"][0]["match"],
        json!({"feature": "shared-embeddings"})
    );
    assert_eq!(rules["data"][2]["weights"], json!({"acme": 3, "globex": 1}));
    assert_eq!(rules["data"][2]["amount_usd_per_month"], "310");

    // By feature: allocated shares are their own lines.
    let by = env
        .admin_get(&format!(
            "/admin/v1/showback?from={from}&to={to}&by=tenant,feature"
        ))
        .await;
    assert!(
        by["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["feature"] == "(allocated)")
    );
    assert_eq!(by["total"], sb["total"]);
    let r = admin_raw(
        &env,
        &format!("/admin/v1/showback?from={from}&to={to}&by=model"),
    )
    .await;
    assert_eq!(r.status(), 400);
}

/// A history of `weeks` weeks of hourly rows for `tenant` ending last hour, costing
/// `cost(hour_of_week, hours_ago)` nano-USD each.
fn history(
    tenant: &str,
    weeks: i64,
    cost: impl Fn(i64, i64) -> i64,
) -> Vec<tollgate_types::LedgerRow> {
    let hour = 3_600_000;
    let now = jiff::Timestamp::now().as_millisecond() / hour * hour;
    (1..=weeks * 168)
        .map(|ago| {
            let at = now - ago * hour;
            let mut r = tollgate_types::LedgerRow::start(
                format!("req_{tenant}_{ago:08}"),
                at + 60_000,
                "/v1/chat/completions",
            );
            r.attribution.tenant = Some(tenant.into());
            r.provider = Some("sim".into());
            r.served_model = Some("gpt-4o-mini".into());
            r.requested_model = Some("gpt-4o-mini".into());
            r.status = 200;
            // Hour of the week, from the Unix epoch's Thursday; only its period matters.
            let how = (at / hour).rem_euclid(168);
            r.effective_cost = tollgate_types::NanoUsd(cost(how, ago));
            r.list_cost = r.effective_cost;
            r
        })
        .collect()
}

#[tokio::test]
async fn anomalies_flag_a_spike_once_and_not_a_weekly_pattern() {
    let o = Opts {
        extra_yaml: "anomalies: {by: [[tenant]], min_usd: 1, threshold: 4, weeks: 4}\n".into(),
        ..Opts::default()
    };
    let env = TestEnv::with(o).await;
    let usd = 1_000_000_000;
    // acme: ~$2 an hour with a little noise, and one $40 hour two days ago.
    let mut rows = history("acme", 5, |how, ago| {
        if ago == 48 {
            40 * usd
        } else {
            2 * usd + (how % 5) * usd / 10
        }
    });
    // globex: $1 an hour, but $30 in three hours of each week (a weekly batch job).
    rows.extend(history("globex", 5, |how, _| {
        if (20..23).contains(&how) {
            30 * usd
        } else {
            usd
        }
    }));
    // Loaded as an operator would: `tollgate ledger import`.
    let file = env.dir.path().join("history.jsonl");
    let text: String = rows
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    std::fs::write(&file, text).unwrap();
    let cfg = ledger_config(env.dir.path(), "unused");
    std::fs::write(
        &cfg,
        format!("storage:\n  ledger: sqlite://{}\n", env.db.display()),
    )
    .unwrap();
    let o = tollgate(&["ledger", "import", file.to_str().unwrap()], &cfg);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let now = jiff::Timestamp::now();
    let week_ago = (now - jiff::SignedDuration::from_hours(24 * 7)).to_string();
    let soon = (now + jiff::SignedDuration::from_hours(1)).to_string();
    let list = env
        .admin_get(&format!("/admin/v1/anomalies?from={week_ago}&to={soon}"))
        .await;
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{list}");
    let a = &data[0];
    assert_eq!(a["scope"], json!({"tenant": "acme"}));
    assert_eq!(nanos(a["actual_usd"].as_str().unwrap()), 40 * usd);
    assert_eq!(a["baseline"], "seasonal");
    assert_eq!(a["status"], "closed");
    let spike_hour = rows
        .iter()
        .find(|r| r.effective_cost.nanos() == 40 * usd)
        .unwrap()
        .started_at_ms
        / 3_600_000
        * 3_600_000;
    assert_eq!(
        a["hour"],
        jiff::Timestamp::from_millisecond(spike_hour)
            .unwrap()
            .to_string()
    );
    assert!(a["score"].as_f64().unwrap() >= 4.0);
}

#[tokio::test]
async fn an_anomaly_policy_alerts_and_blocks_the_spiking_tenant_only() {
    let (hook, hooks) = crate::policies::spawn_webhook().await;
    let o = Opts {
        extra_yaml: format!(
            "anomalies: {{by: [[tenant]], min_usd: 1, threshold: 4, weeks: 4, check_every_secs: 1}}\n\
             policies:\n  - name: spike-guard\n    scope: {{tenant: acme}}\n    mode: enforce\n    \
             steps:\n      - when: {{anomaly: {{}}}}\n        then: [{{alert: {{webhook: \"{hook}/spike\"}}}}, block]\n"
        ),
        ..Opts::default()
    };
    let (env, acme, globex, _) = two_tenants(o).await;
    let usd = 1_000_000_000;
    // Five weeks at $1 an hour for both tenants; acme has spent $50 in the current hour.
    let mut rows = history("acme", 5, |_, _| usd);
    rows.extend(history("globex", 5, |_, _| usd));
    let mut spike = tollgate_types::LedgerRow::start(
        "req_acme_spike".into(),
        jiff::Timestamp::now().as_millisecond() - 1_000,
        "/v1/chat/completions",
    );
    spike.attribution.tenant = Some("acme".into());
    spike.effective_cost = tollgate_types::NanoUsd(50 * usd);
    spike.status = 200;
    rows.push(spike);
    env.store().insert_rows(&rows).unwrap();

    let ask = |key: String| {
        let env = &env;
        async move {
            env.chat(
                &key,
                json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await
        }
    };
    // The watch publishes within its interval (1 s here).
    let mut status = 0;
    for _ in 0..50 {
        status = ask(acme.clone()).await.status().as_u16();
        if status == 429 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 429, "acme is blocked while its anomaly is open");
    let body: serde_json::Value = ask(acme.clone()).await.json().await.unwrap();
    assert_eq!(body["error"]["code"], "policy_blocked", "{body}");
    assert_eq!(ask(globex.clone()).await.status(), 200, "globex is not");
    // The alert went to the webhook, off the request path.
    let got = crate::policies::wait_hooks(&hooks, 1).await;
    assert_eq!(got[0].0, "/spike");
    assert!(got[0].1.to_string().contains("spike-guard"), "{}", got[0].1);
    let log = env
        .admin_get("/admin/v1/policies/decisions?policy=spike-guard")
        .await;
    assert!(
        log["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.to_string().contains("anomaly")),
        "{log}"
    );
}
