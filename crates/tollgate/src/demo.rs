//! `tollgate demo`: the main job on a fresh machine — no API keys, no network.
//!
//! Starts the simulated provider and the gateway on free loopback ports with a throw-away
//! ledger, creates virtual keys for three tenants through the admin API, drives a burst of
//! mixed streaming, non-streaming and embeddings traffic over real HTTP, then prints the spend
//! report straight from the ledger.
//!
//! One section measures prompt-cache stickiness: two more simulators, each with its own
//! simulated provider prompt cache (`prompt_cache` knob), serve one logical model through two
//! deployments, once with stickiness on and once off, and the ledger says how many input
//! tokens were read from the cache and what that saved.
//!
//! Another shows the traffic operations, each read back from the gateway: failover to a healthy
//! deployment and the circuit breaker taking a failing one (a simulator answering every request
//! with 503) out of rotation, a fallback to another provider, a per-key rate limit refusing a
//! concurrent burst, and the response cache answering repeats for $0.
//!
//! With `--serve` the gateway and the simulators keep running after the reports: a viewer
//! admin token is created through the admin API and the dashboard's URL is printed with it, so
//! the pages show the demo's traffic; Ctrl-C (or SIGTERM) stops everything. Without it the
//! demo shuts the gateway down (draining the ledger) before the reports and exits.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tollgate_config::Config;

use crate::cli::DemoArgs;
use crate::{assemble, report};

struct NoEnv;
impl tollgate_config::EnvSource for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

fn random_hex(bytes: usize) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for _ in 0..bytes {
        let _ = write!(s, "{:02x}", rand_byte());
    }
    s
}

fn rand_byte() -> u8 {
    // Seeded from the clock and a counter; this is a throw-away demo secret, not a key.
    use std::sync::atomic::{AtomicU64, Ordering};
    static C: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let t = jiff::Timestamp::now().as_nanosecond() as u64;
    let mut x = C.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) ^ t;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x & 0xff) as u8
}

pub async fn run(args: DemoArgs) -> Result<ExitCode> {
    let started = Instant::now();
    println!("Tollgate demo: simulated providers, the gateway, and multi-tenant traffic.\n");

    let sim_cfg = tollgate_sim::SimConfig {
        ttft_ms: 15,
        chunk_delay_ms: 1,
        completion_tokens: 24,
        ..tollgate_sim::SimConfig::default()
    };
    let sim = tollgate_sim::spawn("127.0.0.1:0".parse()?, sim_cfg)
        .await
        .context("starting the simulated provider")?;
    // Two deployments of one model whose providers each keep their own prompt cache.
    let cache_cfg = tollgate_sim::SimConfig {
        ttft_ms: 5,
        completion_tokens: 24,
        prompt_cache: true,
        ..tollgate_sim::SimConfig::default()
    };
    let cache_sims = [
        tollgate_sim::spawn("127.0.0.1:0".parse()?, cache_cfg.clone())
            .await
            .context("starting a simulated provider")?,
        tollgate_sim::spawn("127.0.0.1:0".parse()?, cache_cfg)
            .await
            .context("starting a simulated provider")?,
    ];

    // A provider that is down: every request answered 503.
    let down = tollgate_sim::spawn(
        "127.0.0.1:0".parse()?,
        tollgate_sim::SimConfig {
            fail_rate: 1.0,
            fail_status: 503,
            ..tollgate_sim::SimConfig::default()
        },
    )
    .await
    .context("starting a simulated provider")?;

    let dir = std::env::temp_dir().join(format!("tollgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("ledger.db");
    let master = format!("demo-master-{}", random_hex(16));
    let yaml = format!(
        r#"
server:
  listen: 127.0.0.1:0
  master_key: {master}
storage:
  ledger: sqlite://{db}
providers:
  sim:
    kind: openai
    base_url: {base}
  sim-anthropic:
    kind: anthropic
    base_url: {origin}
  sim-gemini:
    kind: gemini
    base_url: {origin}
  cache-a:
    kind: openai
    base_url: {cache_a}
  cache-b:
    kind: openai
    base_url: {cache_b}
  sim-down:
    kind: openai
    base_url: {down}
models:
  gpt-4o-mini:
    deployments: [{{provider: sim, model: gpt-4o-mini}}]
  gpt-4o:
    deployments: [{{provider: sim, model: gpt-4o}}]
  text-embedding-3-small:
    deployments: [{{provider: sim, model: text-embedding-3-small}}]
  claude-sonnet-4-6:
    deployments: [{{provider: sim-anthropic, model: claude-sonnet-4-6}}]
  gemini-2.5-flash:
    deployments: [{{provider: sim-gemini, model: gemini-2.5-flash}}]
  {STICKY_MODEL}:
    deployments: [{{provider: cache-a, model: gpt-4o-mini}}, {{provider: cache-b, model: gpt-4o-mini}}]
  {UNSTICKY_MODEL}:
    deployments: [{{provider: cache-a, model: gpt-4o-mini}}, {{provider: cache-b, model: gpt-4o-mini}}]
    sticky: {{enabled: false}}
  # Traffic operations: the dead deployment is the primary (weight 3), as when a region fails.
  {FAILOVER_MODEL}:
    deployments: [{{provider: sim-down, model: gpt-4o-mini, weight: 3}}, {{provider: sim, model: gpt-4o-mini}}]
    breaker: {{consecutive_failures: 3, cooldown_secs: 60}}
  {FALLBACK_MODEL}:
    deployments: [{{provider: sim-down, model: gpt-4o-mini}}]
    fallbacks: [claude-sonnet-4-6]
    retry: {{max_attempts: 2}}
  {LIMITED_MODEL}:
    deployments: [{{provider: sim, model: gpt-4o-mini}}]
  {CACHED_MODEL}:
    deployments: [{{provider: sim, model: gpt-4o-mini}}]
rate_limits:
  - {{name: demo-rpm, per: key, match: {{model: {LIMITED_MODEL}}}, rpm: {RPM}}}
cache:
  models:
    {CACHED_MODEL}: {{ttl_secs: 300}}
allocations:
  - {{name: unattributed, match: {{tenant: "(unattributed)"}}, method: even}}
  - {{name: traffic-ops, match: {{feature: traffic-ops}}}}
budgets:
  - {{name: hooli-daily, scope: {{tenant: hooli}}, limit_usd: "0.0012", window: day, mode: hard}}
  - {{name: org-monthly, scope: {{}}, limit_usd: "100", window: month, mode: soft}}
policies:
  - name: hooli-ladder
    scope: {{tenant: hooli}}
    budget: hooli-daily
    mode: enforce
    hysteresis_pct: 5
    steps:
      - when: {{utilization_pct: 50}}
        then: [{{downgrade: {{gpt-4o: gpt-4o-mini}}}}]
      - when: {{utilization_pct: 75}}
        then: [{{cap_max_tokens: 8}}]
      - when: {{utilization_pct: 95}}
        then: [block]
"#,
        db = db.display(),
        base = sim.base_url(),
        origin = sim.origin(),
        cache_a = cache_sims[0].base_url(),
        cache_b = cache_sims[1].base_url(),
        down = down.base_url(),
    );
    let cfg = Config::from_yaml_str(&yaml, &NoEnv)
        .map_err(|e| anyhow::anyhow!("demo config: {e}"))?
        .config;
    let parts = assemble::gateway_parts(&cfg)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let gw = tollgate_server::Gateway::new(parts)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    #[expect(
        clippy::disallowed_methods,
        reason = "the gateway itself: the demo awaits this handle, which drains every row"
    )]
    let server = tokio::spawn(tollgate_server::serve(listener, gw, async move {
        let _ = stop_rx.await;
    }));
    let base = format!("http://{addr}");
    println!("  simulated provider  {}", sim.base_url());
    println!(
        "  prompt-cache sims   {} · {}",
        cache_sims[0].base_url(),
        cache_sims[1].base_url()
    );
    println!("  failing sim (503)   {}", down.base_url());
    println!("  gateway             {base}/v1   (OpenAI-compatible)");
    println!("  ledger              {}\n", db.display());

    let http = reqwest::Client::new();
    let admin = |path: &str| format!("{base}/admin/v1/{path}");

    // Keys: two single-tenant apps and one SaaS backend that attributes per customer.
    let mut keys = Vec::new();
    for body in [
        json!({"name": "acme-backend", "tenant": "acme", "team": "platform"}),
        json!({"name": "globex-app", "tenant": "globex", "team": "growth", "models": ["gpt-4o-mini", "gemini-2.5-flash", "claude-sonnet-4-6", "text-embedding-3-small"]}),
        json!({"name": "saas-backend", "team": "platform", "allow_tenant_header": true, "allowed_tenants": ["initech", "umbrella", "hooli"]}),
    ] {
        let resp = http
            .post(admin("keys"))
            .bearer_auth(&master)
            .json(&body)
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("creating a key failed: {}", resp.text().await?);
        }
        let v: Value = resp.json().await?;
        println!(
            "  created key {:<14} {}…  tenant={}",
            v["name"].as_str().unwrap_or(""),
            v["key_prefix"].as_str().unwrap_or(""),
            v["tenant"].as_str().unwrap_or("(per request)")
        );
        keys.push(v["key"].as_str().unwrap_or_default().to_string());
    }

    println!(
        "\nSending {} requests (streaming, non-streaming, embeddings)…",
        args.requests
    );
    let features = ["search", "summarize", "chat"];
    // A mix of OpenAI-format chat (streaming and not) on OpenAI, Anthropic and Gemini
    // deployments, embeddings, and Anthropic-format `/v1/messages` calls: every route is metered
    // the same way.
    let plan: Vec<(usize, usize)> = (0..args.requests).map(|i| (i, i % 8)).collect();
    let results: Vec<Result<u16>> = futures_util::stream::iter(plan)
        .map(|(i, kind)| {
            let http = http.clone();
            let base = base.clone();
            let keys = keys.clone();
            async move {
                let (key, tenant) = match i % 3 {
                    0 => (&keys[0], None),
                    1 => (&keys[1], None),
                    _ => (&keys[2], Some(if i % 2 == 0 { "initech" } else { "umbrella" })),
                };
                let feature = features[i % features.len()];
                let mut req = match kind {
                    6 => http.post(format!("{base}/v1/embeddings")).json(&json!({
                        "model": "text-embedding-3-small",
                        "input": format!("document {i} about the quarterly plan"),
                    })),
                    7 => http.post(format!("{base}/v1/messages")).json(&json!({
                        "model": if (i / 8) % 2 == 0 { "claude-sonnet-4-6" } else { "gpt-4o-mini" },
                        "max_tokens": 64,
                        "stream": (i / 16) % 2 == 0,
                        "messages": [{"role": "user", "content": format!("Request {i}: draft the {feature} summary.")}],
                    })),
                    k => {
                        let model = match (i % 3, k) {
                            (0, 0 | 2) => "gpt-4o",
                            (_, 4) => "claude-sonnet-4-6",
                            (_, 5) => "gemini-2.5-flash",
                            _ => "gpt-4o-mini",
                        };
                        http.post(format!("{base}/v1/chat/completions")).json(&json!({
                            "model": model,
                            "stream": k % 2 == 1,
                            "messages": [
                                {"role": "system", "content": "You are a concise assistant."},
                                {"role": "user", "content": format!("Request {i}: summarise the {feature} results for this week.")}
                            ],
                        }))
                    }
                };
                req = req.bearer_auth(key).header("x-tollgate-feature", feature);
                if let Some(t) = tenant {
                    req = req.header("x-tollgate-tenant", t);
                }
                let resp = req.send().await?;
                let status = resp.status().as_u16();
                // Read the whole body (streams included) so every request completes.
                let _ = resp.bytes().await?;
                Ok(status)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let ok = results.iter().filter(|r| matches!(r, Ok(200))).count();
    println!("  {ok}/{} answered 200", results.len());

    // One tenant ramps up against its daily budget: the policy ladder downgrades, then caps,
    // then blocks — all before the budget itself would have to refuse anything.
    println!(
        "\nTenant hooli ramps up gpt-4o traffic against a $0.0012 daily budget (ladder: downgrade at 50%, cap at 75%, block at 95%):"
    );
    let mut last = String::new();
    let mut sent = 0;
    let mut served = 0;
    for i in 0..80 {
        let resp = http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&keys[2])
            .header("x-tollgate-tenant", "hooli")
            .header("x-tollgate-feature", "assistant")
            .json(&json!({"model": "gpt-4o", "max_tokens": 64, "messages": [
                {"role": "user", "content": format!("Request {i}: draft a reply to the customer.")}
            ]}))
            .send()
            .await?;
        sent += 1;
        let status = resp.status().as_u16();
        let model = resp
            .headers()
            .get("x-tollgate-served-model")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        let policy = resp
            .headers()
            .get("x-tollgate-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let state = if status == 200 {
            served += 1;
            format!(
                "200 served by {model}{}",
                if policy.is_empty() {
                    String::new()
                } else {
                    format!("  [x-tollgate-policy: {policy}]")
                }
            )
        } else {
            format!("{status} {}", body["error"]["code"].as_str().unwrap_or(""))
        };
        if state != last {
            println!("  request {:>2}: {state}", i + 1);
            last = state;
        }
        if status == 429 {
            break;
        }
    }
    println!("  {served} of {sent} served before the block");
    let status: Value = http
        .get(admin("budgets/hooli-daily"))
        .bearer_auth(&master)
        .send()
        .await?
        .json()
        .await?;
    println!(
        "  budget hooli-daily: limit ${} · spent ${} · reserved ${} · remaining ${}",
        status["limit"].as_str().unwrap_or("?"),
        status["spent"].as_str().unwrap_or("?"),
        status["reserved"].as_str().unwrap_or("?"),
        status["remaining"].as_str().unwrap_or("?"),
    );

    // One request the key may not make, one with a bad key: both still leave ledger rows.
    let denied = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&keys[1])
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await?;
    println!(
        "  globex-app asking for gpt-4o → {} (model not allowed for that key)",
        denied.status().as_u16()
    );
    let bad = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("tg-not-a-key")
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await?;
    println!("  an unknown key → {}", bad.status().as_u16());

    let ops_sent = traffic_ops(&http, &base, &master, &keys[0]).await?;

    // The same conversations on a sticky and a non-sticky model over the same two
    // deployments; each run starts with cold provider caches so neither warms the other's.
    println!(
        "\nPrompt-cache stickiness: {CONVERSATIONS} support conversations × {TURNS} turns, each opening with its own ~{SYSTEM_CHARS}-character system prompt, sent to `{STICKY_MODEL}` (sticky) and to `{UNSTICKY_MODEL}` (sticky: {{enabled: false}}); both spread over two gpt-4o-mini deployments whose providers each keep their own prompt cache:"
    );
    let mut sticky_runs = Vec::new();
    for model in [STICKY_MODEL, UNSTICKY_MODEL] {
        for s in &cache_sims {
            s.clear_prompt_cache();
        }
        let ok = converse(&http, &base, &keys[0], model).await?;
        let st: Value = http
            .get(admin("deployments"))
            .bearer_auth(&master)
            .send()
            .await?
            .json()
            .await?;
        let sticky = st["data"]
            .as_array()
            .and_then(|ds| ds.iter().find(|d| d["model"] == model))
            .map(|d| d["routing"]["sticky"].clone())
            .unwrap_or(Value::Null);
        println!(
            "  {model:<18}  {ok}/{} turns answered 200 (provider caches cold at the start)",
            CONVERSATIONS * TURNS,
        );
        sticky_runs.push((model, sticky["hits"].as_u64().unwrap_or(0)));
    }

    // Showback: shared spend (requests with no tenant, the traffic-operations runs) spread
    // over the tenants by the `allocations` rules, through the admin API.
    let now = jiff::Timestamp::now();
    let showback: Value = http
        .get(admin(&format!(
            "showback?from={}&to={}",
            now - jiff::SignedDuration::from_hours(24),
            now + jiff::SignedDuration::from_hours(1)
        )))
        .bearer_auth(&master)
        .send()
        .await?
        .json()
        .await?;

    // Everything the gateway ran, stopped together: the gateway first (it drains the ledger),
    // then the simulators.
    let stop = move || async move {
        let _ = stop_tx.send(());
        let summary = server.await.context("gateway task")??;
        sim.shutdown().await;
        down.shutdown().await;
        for s in cache_sims {
            s.shutdown().await;
        }
        Ok::<tollgate_server::ShutdownSummary, anyhow::Error>(summary)
    };
    // Without --serve the gateway stops now, so the reports below read a drained ledger. With
    // it, the showback read above flushed the ledger (admin reads do) after the last request.
    let mut summary = None;
    let mut stop = Some(stop);
    if !args.serve
        && let Some(stop) = stop.take()
    {
        summary = Some(stop().await?);
    }

    let store = assemble::open_store(&cfg)?;
    let prices = cfg.price_table().context("pricing")?;
    println!();
    print!("{}", cache_savings(&store, &prices, &sticky_runs)?);

    let (rows, total) = store.totals(&Default::default())?;
    println!(
        "\nLedger: {rows} rows for {} requests sent (every request leaves exactly one row), ${} in total.",
        args.requests + 2 + sent + ops_sent + 2 * CONVERSATIONS * TURNS,
        total.to_usd_fixed(6)
    );
    let by_tenant = tollgate_store::Dim::parse_list("tenant,model")?;
    let spend = store.spend(&tollgate_store::SpendQuery {
        group_by: by_tenant.clone(),
        ..Default::default()
    })?;
    println!("\nSpend by tenant and model:\n");
    print!(
        "{}",
        report::spend(&by_tenant, &spend, crate::cli::Format::Table)
    );
    let by_provider = tollgate_store::Dim::parse_list("provider,endpoint")?;
    let spend = store.spend(&tollgate_store::SpendQuery {
        group_by: by_provider.clone(),
        ..Default::default()
    })?;
    println!(
        "\nSpend by provider and endpoint (OpenAI, Anthropic and Gemini wire formats, one meter):\n"
    );
    print!(
        "{}",
        report::spend(&by_provider, &spend, crate::cli::Format::Table)
    );
    let by_feature = tollgate_store::Dim::parse_list("feature,outcome")?;
    let spend = store.spend(&tollgate_store::SpendQuery {
        group_by: by_feature.clone(),
        ..Default::default()
    })?;
    println!("\nSpend by feature and outcome:\n");
    print!(
        "{}",
        report::spend(&by_feature, &spend, crate::cli::Format::Table)
    );
    println!(
        "\nShowback (GET /admin/v1/showback): direct spend, plus shared spend — requests with no tenant \
         (split evenly) and the traffic-operations runs (split by direct spend) — by allocations rules:\n"
    );
    let rows: Vec<Vec<String>> = showback["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|l| {
            ["tenant", "direct_usd", "allocated_usd", "total_usd"]
                .iter()
                .map(|k| l[*k].as_str().unwrap_or("").to_string())
                .collect()
        })
        .collect();
    print!(
        "{}",
        report::table(
            &["tenant", "direct_usd", "allocated_usd", "total_usd"],
            &rows
        )
    );
    let (total, ledger) = (
        &showback["total"]["total_usd"],
        &showback["ledger_total_usd"],
    );
    println!(
        "total: {} USD ({} the ledger's {} USD)",
        total.as_str().unwrap_or("?"),
        if total == ledger {
            "equal to"
        } else {
            "DIFFERENT FROM"
        },
        ledger.as_str().unwrap_or("?")
    );
    // Finance output: the whole run as a FOCUS 1.2 file, and a config to explore it with.
    let focus = dir.join("focus-1.2.csv");
    let hour = 3_600_000;
    let now = jiff::Timestamp::now().as_millisecond();
    let exported = crate::export::run(
        &cfg,
        &store,
        &crate::export::FocusJob {
            from_ms: now - 24 * hour,
            to_ms: now + hour,
            version: tollgate_finance::focus::Version::V1_2,
            dataset: tollgate_finance::focus::Dataset::Cost,
            format: tollgate_finance::focus::Format::Csv,
            output: Some(focus.clone()),
        },
    )?;
    let (_, ledger_total) = store.totals(&tollgate_store::RowFilter::default())?;
    let explore = dir.join("explore.yaml");
    std::fs::write(
        &explore,
        format!("storage:\n  ledger: sqlite://{}\n", db.display()),
    )?;
    println!(
        "\nFOCUS 1.2 export: {} ledger rows → {} rows, Σ BilledCost {} USD ({} the ledger's {} USD), in {}",
        exported.ledger_rows,
        exported.focus_rows,
        tollgate_finance::decimal::Decimal::from_nanos(exported.billed.nanos()),
        if exported.billed == ledger_total {
            "equal to"
        } else {
            "DIFFERENT FROM"
        },
        tollgate_finance::decimal::Decimal::from_nanos(ledger_total.nanos()),
        focus.display()
    );
    if let Some(stop) = stop.take() {
        serve_dashboard(&http, &base, &master).await?;
        summary = Some(stop().await?);
    }
    if let Some(summary) = summary {
        println!(
            "\nDone in {:.1}s (ledger rows written {}, spilled {}).",
            started.elapsed().as_secs_f64(),
            summary.rows_written,
            summary.rows_spilled
        );
    }
    let c = explore.display();
    println!("Explore it:");
    println!("  tollgate spend --by key,model --config {c}");
    println!(
        "  tollgate export focus --from YYYY-MM-DD --to YYYY-MM-DD --version 1.0 -o focus-1.0.csv --config {c}"
    );
    println!(
        "  validate the 1.0 file with the FinOps Foundation's validator: pip install focus-validator==1.0.0 'multimethod<1.11'; \
         focus-validator --data-file focus-1.0.csv --validate-version 1.0 \
         --override-file crates/finance/tests/focus/focus-validator-1.0.0-overrides.yaml (run from its site-packages folder)"
    );
    if !args.serve {
        println!("  tollgate demo --serve   (the same run, then the dashboard at /ui/ stays up)");
    }
    Ok(ExitCode::SUCCESS)
}

/// `--serve`: a viewer token for the dashboard, its URL, and the gateway kept running until
/// Ctrl-C or SIGTERM.
async fn serve_dashboard(http: &reqwest::Client, base: &str, master: &str) -> Result<()> {
    let resp = http
        .post(format!("{base}/admin/v1/tokens"))
        .bearer_auth(master)
        .json(&json!({"name": "demo-dashboard", "role": "viewer"}))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!(
            "creating the dashboard's viewer token failed: {}",
            resp.text().await?
        );
    }
    let v: Value = resp.json().await?;
    let token = v["token"].as_str().unwrap_or_default();
    println!("\nDashboard: {base}/ui/");
    println!("  sign in with this viewer token (reads every page, changes nothing):");
    println!("    {token}");
    println!("  or with the demo's master key to create and revoke keys:");
    println!("    {master}");
    println!("  the gateway keeps serving at {base}/v1 with the demo's keys; Ctrl-C stops it.");
    crate::cli::shutdown_signal().await;
    println!("\nStopping the gateway and the simulated providers…");
    Ok(())
}

/// The logical models of the traffic-operations section (no other section sends to them).
const FAILOVER_MODEL: &str = "resilient";
const FALLBACK_MODEL: &str = "gpt-4o-mini-eu";
const LIMITED_MODEL: &str = "limited";
const CACHED_MODEL: &str = "faq-bot";
/// `demo-rpm`'s requests per minute, and the burst sent against it.
const RPM: usize = 5;
const BURST: usize = 8;
const FAILOVER_REQUESTS: usize = 20;

/// A response header as text, `-` when absent.
fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

/// The traffic-operations section: failover and the circuit breaker, a cross-provider
/// fallback, a rate limit and the response cache, every number read back from the gateway
/// (response headers, `/admin/v1/deployments`, the ledger through `/admin/v1/requests`).
/// Returns how many data-plane requests it sent.
async fn traffic_ops(http: &reqwest::Client, base: &str, master: &str, key: &str) -> Result<usize> {
    let admin_get = |path: String| async move {
        let resp = http
            .get(format!("{base}/admin/v1/{path}"))
            .bearer_auth(master)
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("GET /admin/v1/{path}: {}", resp.text().await?);
        }
        Ok::<Value, anyhow::Error>(resp.json().await?)
    };
    // Admin reads flush the ledger first, so every row of the requests sent is there.
    let rows = |model: &'static str| {
        let admin_get = &admin_get;
        async move {
            let page = admin_get(format!("requests?model={model}&limit=1000")).await?;
            Ok::<Vec<Value>, anyhow::Error>(page["data"].as_array().cloned().unwrap_or_default())
        }
    };
    let chat = |model: &str, content: String| {
        http.post(format!("{base}/v1/chat/completions"))
            .bearer_auth(key)
            .header("x-tollgate-feature", "traffic-ops")
            .json(&json!({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": content}]}))
    };
    let mut sent = 0;

    println!(
        "\nTraffic operations (one more simulator answers every request with 503):\n  failover — `{FAILOVER_MODEL}`: two gpt-4o-mini deployments, the primary on the failing simulator; breaker opens after 3 failures in a row:"
    );
    // One at a time, so the breaker sees the failures in order and opens after exactly three.
    let mut ok = 0;
    for i in 0..FAILOVER_REQUESTS {
        let resp = chat(FAILOVER_MODEL, format!("Request {i}: status of order {i}?"))
            .send()
            .await?;
        sent += 1;
        ok += usize::from(resp.status().as_u16() == 200);
        let _ = resp.bytes().await?;
    }
    let ledger = rows(FAILOVER_MODEL).await?;
    let retried: Vec<&Value> = ledger
        .iter()
        .filter(|r| r["attempts"].as_u64().unwrap_or(0) > 1)
        .collect();
    println!(
        "    {ok}/{FAILOVER_REQUESTS} answered 200; the ledger says {} needed a second attempt{}",
        retried.len(),
        retried
            .first()
            .map(|r| format!(" (attempted: {})", r["attempted"].as_str().unwrap_or("")))
            .unwrap_or_default()
    );
    let deployments = admin_get("deployments".into()).await?;
    let health: Vec<String> = deployments["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["model"] == FAILOVER_MODEL)
        .map(|d| {
            let h = &d["health"];
            let probe = h["retry_in_ms"]
                .as_u64()
                .map(|ms| format!(", next probe in {}s", ms.div_ceil(1000)))
                .unwrap_or_default();
            format!(
                "{} {} ({} requests, {} failures{probe})",
                d["deployment"].as_str().unwrap_or("?"),
                h["state"].as_str().unwrap_or("?"),
                h["requests"],
                h["failures"],
            )
        })
        .collect();
    println!("    breakers: {}", health.join(" · "));

    let resp = chat(FALLBACK_MODEL, "Where is my parcel?".to_string())
        .send()
        .await?;
    sent += 1;
    let (status, provider, served) = (
        resp.status().as_u16(),
        header(&resp, "x-tollgate-provider"),
        header(&resp, "x-tollgate-served-model"),
    );
    let rid = header(&resp, "x-tollgate-request-id");
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let row = rows(FALLBACK_MODEL)
        .await?
        .into_iter()
        .find(|r| r["request_id"] == rid.as_str())
        .unwrap_or(Value::Null);
    println!(
        "  fallback — `{FALLBACK_MODEL}` (only deployment on the failing simulator, fallbacks: [claude-sonnet-4-6], retry.max_attempts 2):\n    {status} `{}` in the OpenAI format, x-tollgate-provider: {provider}, served by {served}; ledger: {} attempts ({})",
        body["object"].as_str().unwrap_or("?"),
        row["attempts"],
        row["attempted"].as_str().unwrap_or(""),
    );

    let burst: Vec<reqwest::Response> = futures_util::future::try_join_all(
        (0..BURST).map(|i| chat(LIMITED_MODEL, format!("Batch item {i}: classify it.")).send()),
    )
    .await?;
    sent += BURST;
    let mut admitted = 0;
    let mut refused = Vec::new();
    for resp in burst {
        if resp.status().as_u16() == 200 {
            admitted += 1;
            let _ = resp.bytes().await?;
            continue;
        }
        let (status, remaining, retry) = (
            resp.status().as_u16(),
            header(&resp, "x-ratelimit-remaining-requests"),
            header(&resp, "retry-after"),
        );
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str().unwrap_or("?").to_string();
        refused.push((status, code, remaining, retry));
    }
    println!(
        "  rate limit — rule demo-rpm ({RPM} requests per minute per key on `{LIMITED_MODEL}`), {BURST} requests at once:\n    {admitted} admitted, {} refused{}",
        refused.len(),
        refused
            .first()
            .map(|(status, code, remaining, retry)| format!(
                " with {status} {code}; one refusal: x-ratelimit-remaining-requests: {remaining}, retry-after: {retry}"
            ))
            .unwrap_or_default()
    );

    let ask = json!({
        "model": CACHED_MODEL,
        "temperature": 0,
        "messages": [{"role": "user", "content": "What are your opening hours?"}],
    });
    let mut statuses = Vec::new();
    let mut answer = String::new();
    for i in 0..3 {
        if i == 1 {
            // The miss's answer is stored on a task of its own; wait until it is in.
            wait_cached(http, base).await?;
        }
        let resp = http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(key)
            .header("x-tollgate-feature", "traffic-ops")
            .json(&ask)
            .send()
            .await?;
        sent += 1;
        statuses.push(header(&resp, "x-tollgate-cache"));
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        answer = body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    }
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let resp = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-tollgate-feature", "traffic-ops")
        .json(&streamed)
        .send()
        .await?;
    sent += 1;
    let stream_cache = header(&resp, "x-tollgate-cache");
    let sse = String::from_utf8_lossy(&resp.bytes().await?).into_owned();
    let (mut chunks, mut text, mut done) = (0, String::new(), false);
    for data in sse.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            done = true;
            continue;
        }
        chunks += 1;
        let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
        text.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
    }
    let ledger = rows(CACHED_MODEL).await?;
    let hits: Vec<&Value> = ledger
        .iter()
        .filter(|r| r["cache_status"] == "hit")
        .collect();
    let miss_cost = ledger
        .iter()
        .find(|r| r["cache_status"] == "miss")
        .and_then(|r| r["effective_cost"].as_str())
        .unwrap_or("?");
    // Distinct values of a money field over the hit rows: one value when they agree.
    let distinct = |field: &str| {
        let set: std::collections::BTreeSet<&str> = hits
            .iter()
            .map(|r| r[field].as_str().unwrap_or("?"))
            .collect();
        set.into_iter().collect::<Vec<_>>().join("/")
    };
    println!(
        "  response cache — `{CACHED_MODEL}` (cache ttl_secs 300), the same temperature-0 request three times:\n    x-tollgate-cache: {}",
        statuses.join(", "),
    );
    println!(
        "    the same request with stream: true → x-tollgate-cache: {stream_cache}, replayed as {chunks} SSE chunks{}, {} the plain answer",
        if done { " + [DONE]" } else { " (no [DONE])" },
        if text == answer && !text.is_empty() {
            "same text as"
        } else {
            "NOT the same text as"
        },
    );
    println!(
        "    ledger: the miss cost ${miss_cost}; {} hit rows (the streamed one included) cost ${} with saved_cost ${} each",
        hits.len(),
        distinct("effective_cost"),
        distinct("saved_cost"),
    );
    Ok(sent)
}

/// Polls `/metrics` until the response cache holds an entry (at most about a second).
async fn wait_cached(http: &reqwest::Client, base: &str) -> Result<()> {
    for _ in 0..100 {
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let entries = text
            .lines()
            .find_map(|l| l.strip_prefix("tollgate_cache_entries "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if entries >= 1.0 {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Ok(())
}

/// The logical models of the stickiness section: the same two deployments, stickiness on
/// (the default) and off.
const STICKY_MODEL: &str = "assistant";
const UNSTICKY_MODEL: &str = "assistant-unsticky";
const CONVERSATIONS: usize = 8;
const TURNS: usize = 6;
/// Long enough for the opening to clear the 1,024-token cache floor and the default
/// `sticky.min_prefix_chars` (4,096).
const SYSTEM_CHARS: usize = 6000;

/// Conversation `c`'s system prompt: a support playbook plus that customer's account notes,
/// so no two conversations share a cacheable prefix.
fn system_prompt(c: usize) -> String {
    const PLAYBOOK: [&str; 6] = [
        "Answer billing questions with the exact figures from the account notes.",
        "Quote invoice numbers and dates as written; never round amounts.",
        "When a refund is requested, check the plan's refund window first.",
        "Escalate disputes above the team's approval limit to a human.",
        "Summarise the customer's usage trend before proposing a plan change.",
        "Keep answers under five sentences unless the customer asks for detail.",
    ];
    let mut s = format!(
        "You are the support assistant for customer account {:04}. Follow the playbook.\n",
        1000 + c * 37
    );
    let mut i = 0;
    while s.len() < SYSTEM_CHARS {
        let line = match i % 3 {
            0 => format!("Rule {}: {}\n", i + 1, PLAYBOOK[i % PLAYBOOK.len()]),
            1 => format!(
                "Note {}: invoice INV-{:05} for ${}.{:02} was issued on day {} of month {}.\n",
                i + 1,
                c * 1000 + i,
                40 + (c * 13 + i * 7) % 900,
                (c + i * 11) % 100,
                1 + (i * 5 + c) % 28,
                1 + (i + c) % 12
            ),
            _ => format!(
                "Usage {}: {} requests, {} input tokens, {} output tokens that week.\n",
                i + 1,
                1200 + (c * 53 + i * 31) % 5000,
                90_000 + (c * 7919 + i * 104_729) % 400_000,
                20_000 + (c * 4111 + i * 7_013) % 90_000
            ),
        };
        s.push_str(&line);
        i += 1;
    }
    s
}

/// A follow-up question with the line items the customer pastes in (different every turn).
fn follow_up(c: usize, turn: usize) -> String {
    let mut s = format!(
        "Follow-up {turn}: here are this week's line items; which of them changed, and why?\n"
    );
    for i in 0..24 {
        let n = c * 131 + turn * 17 + i;
        let _ = std::fmt::Write::write_fmt(
            &mut s,
            format_args!(
                "- item {:03} · {} calls · ${}.{:02}\n",
                n % 1000,
                100 + (n * 37) % 900,
                1 + (n * 13) % 60,
                (n * 7) % 100
            ),
        );
    }
    s
}

/// Sends every conversation's turns in order (the conversations concurrently), each turn
/// carrying the whole history so far, the way a chat client does. Returns how many turns were
/// answered 200.
async fn converse(http: &reqwest::Client, base: &str, key: &str, model: &str) -> Result<usize> {
    let results: Vec<Result<usize>> = futures_util::stream::iter(0..CONVERSATIONS)
        .map(|c| async move {
            let mut messages = vec![
                json!({"role": "system", "content": system_prompt(c)}),
                json!({"role": "user", "content": format!("Why is my invoice for week {} higher than the week before?", c + 1)}),
            ];
            let mut ok = 0;
            for turn in 1..=TURNS {
                let resp = http
                    .post(format!("{base}/v1/chat/completions"))
                    .bearer_auth(key)
                    .header("x-tollgate-feature", "support-chat")
                    .json(&json!({"model": model, "max_tokens": 64, "messages": messages}))
                    .send()
                    .await?;
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                if status != 200 {
                    break;
                }
                ok += 1;
                let answer = body["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                messages.push(json!({"role": "assistant", "content": answer}));
                messages.push(json!({"role": "user", "content": follow_up(c, turn)}));
            }
            Ok(ok)
        })
        .buffer_unordered(CONVERSATIONS)
        .collect()
        .await;
    results.into_iter().sum()
}

/// The stickiness section's table, from the ledger rows of each model: input tokens, those
/// read from the provider's cache, the cost paid, and the saving against paying the full
/// input price for every input token (each row re-priced without its cache discount at the
/// price the gateway used). Exact: integer nano-USD throughout.
fn cache_savings(
    store: &tollgate_store::Store,
    prices: &tollgate_pricing::PriceTable,
    runs: &[(&str, u64)],
) -> Result<String> {
    use std::fmt::Write;
    use tollgate_types::NanoUsd;

    let mut body = Vec::new();
    let mut summary = Vec::new();
    let mut price_note = None;
    for &(model, sticky_hits) in runs {
        let filter = tollgate_store::RowFilter {
            model: Some(model.to_string()),
            ..Default::default()
        };
        let (mut requests, mut hits, mut input, mut cached) = (0u64, 0u64, 0u64, 0u64);
        let (mut paid, mut list, mut full) = (NanoUsd(0), NanoUsd(0), NanoUsd(0));
        let mut page = tollgate_store::Page::first(tollgate_store::MAX_PAGE_LIMIT);
        loop {
            let (rows, next) = store.list_requests(&filter, page)?;
            for r in &rows {
                requests += 1;
                hits += u64::from(r.usage.cached_input_tokens > 0);
                input += r.usage.input_tokens;
                cached += r.usage.cached_input_tokens;
                paid = paid.saturating_add(r.effective_cost);
                list = list.saturating_add(r.list_cost);
                let (Some(provider), Some(upstream)) = (&r.provider, &r.served_model) else {
                    continue;
                };
                let deployment = tollgate_pricing::DeploymentRef {
                    provider,
                    model: upstream,
                };
                match prices.resolve(model, &deployment) {
                    tollgate_pricing::Resolution::Priced { price, .. } => {
                        price_note.get_or_insert(price);
                        let uncached = tollgate_types::Usage {
                            cached_input_tokens: 0,
                            ..r.usage
                        };
                        full = full.saturating_add(tollgate_pricing::cost(&uncached, &price));
                    }
                    tollgate_pricing::Resolution::Unpriced { .. } => {
                        bail!("{model} is not priced: the demo needs a price to show savings")
                    }
                }
            }
            match next {
                Some(cursor) => {
                    page = tollgate_store::Page {
                        limit: tollgate_store::MAX_PAGE_LIMIT,
                        cursor: Some(cursor),
                    }
                }
                None => break,
            }
        }
        let saved = full.saturating_sub(list);
        // Share in tenths of a percent, in integers.
        let share = (cached * 1000).checked_div(input).unwrap_or(0);
        body.push(vec![
            model.to_string(),
            requests.to_string(),
            sticky_hits.to_string(),
            hits.to_string(),
            input.to_string(),
            cached.to_string(),
            format!("{}.{}%", share / 10, share % 10),
            paid.to_usd_fixed(6),
            full.to_usd_fixed(6),
            saved.to_usd_fixed(6),
        ]);
        summary.push((model, hits, share, paid, full, saved));
    }
    let mut s = report::table(
        &[
            "model",
            "requests",
            "sticky_hits",
            "cache_hits",
            "input_tokens",
            "cached_input_tokens",
            "cached",
            "paid_usd",
            "full_price_usd",
            "saved_usd",
        ],
        &body,
    );
    if let Some(p) = price_note {
        let _ = writeln!(
            s,
            "cache_hits: turns that read part of their prompt from the provider's cache; full_price_usd: the same rows with every input token at the full price (gpt-4o-mini: ${} input, ${} cached input per 1M tokens).",
            p.input.to_usd_string(),
            p.cached_input_or_input().to_usd_string(),
        );
    }
    let follow_ups = (CONVERSATIONS * (TURNS - 1)) as u64;
    if let [
        (a, hits_a, share_a, paid_a, _, saved_a),
        (b, hits_b, share_b, paid_b, _, saved_b),
    ] = summary[..]
    {
        let _ = writeln!(
            s,
            "With stickiness {hits_a} of {follow_ups} follow-up turns hit the cache ({}.{}% of input tokens cached), without it {hits_b} ({}.{}%): a turn only finds what its deployment happened to serve of the conversation.",
            share_a / 10,
            share_a % 10,
            share_b / 10,
            share_b % 10,
        );
        let _ = writeln!(
            s,
            "Saved ${} with stickiness vs ${} without; `{a}` paid ${} less than `{b}` for the same conversations.",
            saved_a.to_usd_fixed(6),
            saved_b.to_usd_fixed(6),
            paid_b.saturating_sub(paid_a).to_usd_fixed(6),
        );
    }
    Ok(s)
}
