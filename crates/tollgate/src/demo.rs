//! `tollgate demo`: the main job on a fresh machine — no API keys, no network.
//!
//! Starts the simulated provider and the gateway on free loopback ports with a throw-away
//! ledger, creates virtual keys for three tenants through the admin API, drives a burst of
//! mixed streaming, non-streaming and embeddings traffic over real HTTP, then prints the spend
//! report straight from the ledger.

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
    );
    let cfg = Config::from_yaml_str(&yaml, &NoEnv)
        .map_err(|e| anyhow::anyhow!("demo config: {e}"))?
        .config;
    let parts = assemble::gateway_parts(&cfg)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let gw = tollgate_server::Gateway::new(parts)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tollgate_server::serve(listener, gw, async move {
        let _ = stop_rx.await;
    }));
    let base = format!("http://{addr}");
    println!("  simulated provider  {}", sim.base_url());
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

    let _ = stop_tx.send(());
    let summary = server.await.context("gateway task")??;
    sim.shutdown().await;

    let store = assemble::open_store(&cfg)?;
    let (rows, total) = store.totals(&Default::default())?;
    println!(
        "\nLedger: {rows} rows for {} requests sent (every request leaves exactly one row), ${} in total.",
        args.requests + 2 + sent,
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
        "\nDone in {:.1}s (ledger rows written {}, spilled {}).",
        started.elapsed().as_secs_f64(),
        summary.rows_written,
        summary.rows_spilled
    );
    println!(
        "Explore it: tollgate spend --by key,model --config <a config whose storage.ledger is sqlite://{}>",
        db.display()
    );
    Ok(ExitCode::SUCCESS)
}
