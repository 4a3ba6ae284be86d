//! The secrets sweep: a gateway process logging at every level (`RUST_LOG=trace`) serves a
//! mix of traffic — answers, streams, embeddings, Messages, provider errors that quote the
//! credential they were sent, bad keys — and is read through every admin report, `/metrics`,
//! the FOCUS export and the CLI; then its whole log and every body it sent are searched for
//! each configured provider key, header secret, the master key, the metrics token, every
//! virtual key and every admin token (and their masked prefix/suffix forms). Zero hits.

use std::process::Command;

use serde_json::{Value, json};

use crate::cli::{IT_MASTER, IT_ORG_SECRET, IT_PROVIDER_KEY, serve_env, text, tollgate};
use crate::harness::*;

const ECHO_KEY: &str = "sk-echo-upstream-secret-4kq9v2";
const METRICS_TOKEN: &str = "metrics-token-secret-77aa1";
/// A credential a client presents that is not a key of ours: it must not be logged either.
const BOGUS_KEY: &str = "tg-bogus-presented-credential-0x5d";
/// The same for an admin token.
const BOGUS_TOKEN: &str = "tga-bogus-presented-admin-token-0x7e";

/// Every way a secret could show: whole, or the prefix / suffix a masked form keeps.
fn forms(secret: &str) -> Vec<String> {
    let n = secret.len();
    vec![
        secret.to_string(),
        secret[..n.min(10)].to_string(),
        secret[n.saturating_sub(8)..].to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_errors_metrics_admin_or_exports() {
    tollgate_providers::http::install_crypto_provider();
    let sim = tollgate_sim::spawn(
        "127.0.0.1:0".parse().unwrap(),
        tollgate_sim::SimConfig {
            api_key: Some(IT_PROVIDER_KEY.into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (echo, _) = spawn_recorder(true).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("secrets.yaml");
    std::fs::write(
        &cfg,
        format!(
            "server:\n  listen: 127.0.0.1:0\n  master_key: ${{IT_MASTER}}\n  metrics_auth: ${{IT_METRICS}}\n\
             storage:\n  ledger: sqlite://{db}\n\
             providers:\n  sim:\n    kind: openai\n    base_url: {sim}\n    api_key: ${{IT_PROVIDER_KEY}}\n    headers: {{x-org: '${{IT_ORG_SECRET}}'}}\n\
             \x20 echo:\n    kind: openai\n    base_url: http://{echo}/v1\n    api_key: ${{IT_ECHO_KEY}}\n\
             models:\n  gpt-4o-mini: {{deployments: [{{provider: sim, model: gpt-4o-mini}}]}}\n\
             \x20 text-embedding-3-small: {{deployments: [{{provider: sim, model: text-embedding-3-small}}]}}\n\
             \x20 leaky: {{deployments: [{{provider: echo, model: gpt-4o-mini}}], retry: {{max_attempts: 1}}}}\n\
             budgets:\n  - {{name: acme, scope: {{tenant: acme}}, limit_usd: \"50\", window: month, mode: hard}}\n",
            db = dir.path().join("ledger.db").display(),
            sim = sim.base_url(),
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    let env = [("IT_ECHO_KEY", ECHO_KEY), ("IT_METRICS", METRICS_TOKEN)];
    let cli = |args: &[&str]| {
        let out = tollgate()
            .envs(env.iter().copied())
            .args(args)
            .args(["--config", &cfg])
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        out
    };
    let cli_key = text(&cli(&["keys", "create", "--name", "cli-key", "--tenant", "acme"]).stdout)
        .trim()
        .to_string();

    // The gateway process, logging everything.
    let gw = serve_env(&cfg, &[env[0], env[1], ("RUST_LOG", "trace")]).await;
    let base = format!("http://{}", gw.addr);
    let http = reqwest::Client::new();
    let mut seen: Vec<String> = Vec::new();

    // A key issued over the admin API: its one answer shows it, nothing else may.
    let created: Value = http
        .post(format!("{base}/admin/v1/keys"))
        .bearer_auth(IT_MASTER)
        .json(&json!({"name": "api-key", "tenant": "acme"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let api_key = created["key"].as_str().unwrap().to_string();
    // Admin tokens of both roles: shown once, then used (and refused where they do not belong).
    let mut admin_tokens = Vec::new();
    for role in ["admin", "viewer"] {
        let created: Value = http
            .post(format!("{base}/admin/v1/tokens"))
            .bearer_auth(IT_MASTER)
            .json(&json!({"name": format!("{role}-token"), "role": role}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        admin_tokens.push(created["token"].as_str().unwrap().to_string());
    }
    for token in admin_tokens.iter().chain([&BOGUS_TOKEN.to_string()]) {
        for (method, path) in [
            (reqwest::Method::GET, "/admin/v1/tokens"),
            (reqwest::Method::POST, "/admin/v1/tokens"),
            (reqwest::Method::POST, "/v1/chat/completions"),
        ] {
            let r = http
                .request(method, format!("{base}{path}"))
                .bearer_auth(token)
                .json(
                    &json!({"name": "n", "role": "viewer", "model": "gpt-4o-mini",
                              "messages": [{"role": "user", "content": "hi"}]}),
                )
                .send()
                .await
                .unwrap();
            seen.push(format!("{:?}", r.headers()));
            seen.push(r.text().await.unwrap());
        }
    }

    let chat = |key: &str, body: Value| {
        http.post(format!("{base}/v1/chat/completions"))
            .bearer_auth(key.to_string())
            .json(&body)
            .send()
    };
    for (key, body) in [
        (
            &cli_key,
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            &api_key,
            json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            &cli_key,
            json!({"model": "leaky", "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            &cli_key,
            json!({"model": "leaky", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            &cli_key,
            json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (&cli_key, json!({"model": "gpt-4o-mini"})),
        (
            &BOGUS_KEY.to_string(),
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
        ),
    ] {
        let r = chat(key, body).await.unwrap();
        seen.push(format!("{:?}", r.headers()));
        seen.push(r.text().await.unwrap());
    }
    // Upstream failures of every kind the simulator makes.
    for status in [400u16, 401, 429, 500, 503] {
        sim.set_config(tollgate_sim::SimConfig {
            api_key: Some(IT_PROVIDER_KEY.into()),
            fail_rate: 1.0,
            fail_status: status,
            ..Default::default()
        });
        let r = chat(
            &cli_key,
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await
        .unwrap();
        seen.push(r.text().await.unwrap());
    }
    sim.set_config(tollgate_sim::SimConfig {
        api_key: Some(IT_PROVIDER_KEY.into()),
        ..Default::default()
    });
    let r = http
        .post(format!("{base}/v1/embeddings"))
        .bearer_auth(&cli_key)
        .json(&json!({"model": "text-embedding-3-small", "input": "x"}))
        .send()
        .await
        .unwrap();
    seen.push(r.text().await.unwrap());
    let r = http
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", &cli_key)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "leaky", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    seen.push(r.text().await.unwrap());

    // Every read surface.
    for path in [
        "/admin/v1/keys",
        "/admin/v1/tokens?include_revoked=true",
        "/admin/v1/requests?limit=100",
        "/admin/v1/spend?group_by=key",
        "/admin/v1/budgets",
        "/admin/v1/deployments",
        "/admin/v1/policies/decisions",
        "/admin/v1/exports/focus",
        "/admin/v1/margins",
        "/admin/v1/audit",
    ] {
        let r = http
            .get(format!("{base}{path}"))
            .bearer_auth(IT_MASTER)
            .send()
            .await
            .unwrap();
        seen.push(format!("{path}: {}", r.text().await.unwrap()));
    }
    for path in ["/metrics", "/readyz", "/healthz", "/v1/models"] {
        let r = http
            .get(format!("{base}{path}"))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .unwrap();
        seen.push(format!("{path}: {}", r.text().await.unwrap()));
    }
    assert!(
        seen.iter().any(|s| s.starts_with("/metrics: # ")),
        "the metrics token was refused"
    );
    let (from, to) = crate::finance::days();
    for args in [
        &["keys", "list", "--all"][..],
        &["spend", "--by", "key"],
        &["ledger", "export", "--from", &from, "--to", &to],
        &["export", "focus", "--from", &from, "--to", &to],
        &["config", "check"],
    ] {
        let out = cli(args);
        seen.push(text(&out.stdout));
        seen.push(text(&out.stderr));
    }

    // Stop it and read its whole log.
    let killed = Command::new("kill")
        .args(["-TERM", &gw.pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut child = gw.guard;
    let _ = child.0.take().unwrap().wait();
    seen.extend(gw.log.try_iter());
    let log_lines = seen.len();
    assert!(
        seen.iter()
            .any(|l| l.contains("TRACE") || l.contains("DEBUG")),
        "the log was not at every level"
    );

    // The traffic did what it is here for: the echoing upstream refused its key (and quoted it),
    // and the gateway answered that.
    assert!(
        seen.iter().any(|s| s.contains("upstream_auth_failed")),
        "no echoed 401"
    );
    assert!(seen.iter().any(|s| s.contains("[DONE]")), "no stream");
    let mut hits = Vec::new();
    let mut searched: Vec<Vec<String>> = [
        IT_PROVIDER_KEY,
        IT_ORG_SECRET,
        ECHO_KEY,
        IT_MASTER,
        METRICS_TOKEN,
        BOGUS_KEY,
        BOGUS_TOKEN,
        cli_key.as_str(),
        api_key.as_str(),
    ]
    .into_iter()
    .map(forms)
    .collect();
    // An admin token's first 10 characters are its public display prefix (`tga-` + 6 hex,
    // like a key's `tg-` + 6): one character more is already secret.
    for t in &admin_tokens {
        let n = t.len();
        searched.push(vec![t.clone(), t[..11].to_string(), t[n - 8..].to_string()]);
    }
    for forms in searched {
        for form in forms {
            for s in &seen {
                if s.contains(&form) {
                    let at = s.find(&form).unwrap();
                    let from = at.saturating_sub(80);
                    hits.push(format!(
                        "{form:?} in …{}…",
                        &s[from..(at + form.len() + 40).min(s.len())]
                    ));
                }
            }
        }
    }
    assert!(
        hits.is_empty(),
        "{} hits in {log_lines} texts:\n{}",
        hits.len(),
        hits.join("\n")
    );
}
