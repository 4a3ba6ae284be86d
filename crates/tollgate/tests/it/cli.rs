//! The `tollgate` binary: `config check`, `keys create|list|revoke`, `spend`, and `serve` as a
//! child process stopped with SIGTERM.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_store::{Dim, SpendQuery, Store};

use crate::harness::*;

pub(crate) const IT_MASTER: &str = "cli-master-key-5b7e1c0d9a";
pub(crate) const IT_PROVIDER_KEY: &str = "sk-cli-provider-secret-zq81";
pub(crate) const IT_ORG_SECRET: &str = "org-header-secret-xy42";

/// The binary with a clean environment (nothing inherited: no stray `TOLLGATE_CONFIG`,
/// `RUST_LOG` or provider keys), plus the test's secrets.
pub(crate) fn tollgate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    c.env_clear()
        .env("NO_COLOR", "1")
        .env("IT_MASTER", IT_MASTER)
        .env("IT_PROVIDER_KEY", IT_PROVIDER_KEY)
        .env("IT_ORG_SECRET", IT_ORG_SECRET)
        .stdin(Stdio::null());
    c
}

pub(crate) fn run(args: &[&str]) -> Output {
    tollgate().args(args).output().expect("run tollgate")
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(crate) fn write_config(dir: &Path, name: &str, ledger: &Path, extra: &str) -> String {
    let path = dir.join(name);
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\n  master_key: ${{IT_MASTER}}\n\
         storage:\n  ledger: sqlite://{}\n{extra}",
        ledger.display()
    );
    std::fs::write(&path, yaml).unwrap();
    path.to_str().unwrap().to_string()
}

fn provider_yaml(base_url: &str) -> String {
    format!(
        "providers:\n  sim:\n    kind: openai\n    base_url: {base_url}\n    api_key: ${{IT_PROVIDER_KEY}}\n    headers: {{x-org: '${{IT_ORG_SECRET}}'}}\n\
         models:\n  gpt-4o-mini: {{deployments: [{{provider: sim, model: gpt-4o-mini}}]}}\n  gpt-4o: {{deployments: [{{provider: sim, model: gpt-4o}}]}}\n"
    )
}

#[test]
fn config_check_masks_secrets_and_names_bad_paths() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let good = write_config(
        dir.path(),
        "good.yaml",
        &db,
        &provider_yaml("http://127.0.0.1:9/v1"),
    );
    let out = run(&["config", "check", "--config", &good]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("config OK"), "{stderr}");
    // What it resolves to, defaults included…
    assert!(stdout.contains("gpt-4o-mini"), "{stdout}");
    assert!(stdout.contains("max_body_bytes: 8388608"), "{stdout}");
    assert!(stdout.contains("first_byte_ms: 60000"), "{stdout}");
    // …with every secret masked.
    assert!(stdout.contains("********"), "{stdout}");
    for secret in [IT_MASTER, IT_PROVIDER_KEY, IT_ORG_SECRET] {
        assert!(!stdout.contains(secret), "{secret} in {stdout}");
        assert!(!stderr.contains(secret), "{secret} in {stderr}");
    }

    // An unknown field: non-zero exit, the file and the field's path named.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "providers:\n  sim:\n    kind: openai\n    base_url: http://127.0.0.1:9/v1\n    bogus_field: 1\n",
    )
    .unwrap();
    let out = run(&["config", "check", "--config", bad.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains(bad.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("providers.sim"), "{stderr}");
    assert!(stderr.contains("bogus_field"), "{stderr}");
    assert!(text(&out.stdout).is_empty());

    // A bad value deeper down, and an unset variable: each names its path.
    let bad2 = dir.path().join("bad2.yaml");
    std::fs::write(
        &bad2,
        "server:\n  max_body_bytes: 0\nproviders:\n  sim:\n    kind: openai\n    base_url: http://127.0.0.1:9/v1\n    api_key: ${IT_NOT_SET}\n",
    )
    .unwrap();
    let out = run(&["config", "check", "--config", bad2.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("providers.sim.api_key"), "{stderr}");
    assert!(stderr.contains("IT_NOT_SET"), "{stderr}");

    // A file that does not exist.
    let out = run(&["config", "check", "--config", "/nonexistent/tollgate.yaml"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("/nonexistent/tollgate.yaml"));
}

#[test]
fn keys_create_list_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let cfg = write_config(
        dir.path(),
        "c.yaml",
        &db,
        &provider_yaml("http://127.0.0.1:9/v1"),
    );

    let out = run(&[
        "keys",
        "create",
        "--name",
        "ci-bot",
        "--tenant",
        "acme",
        "--team",
        "infra",
        "--models",
        "gpt-4o-mini",
        "--config",
        &cfg,
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let key = stdout.trim().to_string();
    assert!(
        key.starts_with("tg-") && !key.contains(char::is_whitespace),
        "{stdout}"
    );
    let id = stderr
        .split("created key ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no key id in {stderr}"))
        .to_string();

    // The ledger holds the hash, not the key, and authenticates it.
    let store = Store::open(&format!("sqlite://{}", db.display())).unwrap();
    let stored = store.get_key(&id).unwrap();
    assert_eq!(stored.name, "ci-bot");
    assert_eq!(stored.tenant.as_deref(), Some("acme"));
    assert_eq!(stored.team.as_deref(), Some("infra"));
    assert_eq!(stored.models, ["gpt-4o-mini"]);
    assert_ne!(stored.key_hash, key);
    assert!(key.starts_with(&stored.key_prefix));

    let out = run(&["keys", "create", "--name", "second", "--config", &cfg]);
    assert!(out.status.success());

    let out = run(&["keys", "list", "--config", &cfg]);
    let list = text(&out.stdout);
    assert!(out.status.success());
    let line = list
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("{list}"));
    for want in ["ci-bot", "acme", "infra", "gpt-4o-mini", "active"] {
        assert!(line.contains(want), "{want} not in {line}");
    }
    assert!(list.contains("second"));
    assert!(!list.contains(&key), "the key itself is never listed");

    let out = run(&["keys", "revoke", &id, "--config", &cfg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["keys", "list", "--config", &cfg]);
    assert!(!text(&out.stdout).contains(&id));
    let out = run(&["keys", "list", "--all", "--config", &cfg]);
    let list = text(&out.stdout);
    let line = list
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(line.contains("revoked"), "{line}");
    assert!(store.get_key(&id).unwrap().revoked_at_ms.is_some());

    // Revoking twice, or an unknown model: non-zero, with a reason.
    let out = run(&["keys", "revoke", &id, "--config", &cfg]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains(&id));
    let out = run(&[
        "keys", "create", "--name", "x", "--models", "gpt-9", "--config", &cfg,
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("gpt-9"));
    assert_eq!(store.list_keys(true).unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_csv_and_json_match_the_ledger() {
    let mut env = TestEnv::start().await;
    let (acme, _) = env.create_key(json!({"name": "a", "tenant": "acme"})).await;
    let (globex, _) = env
        .create_key(json!({"name": "g", "tenant": "globex"}))
        .await;
    for (key, model, n) in [
        (&acme, "gpt-4o-mini", 3),
        (&acme, "gpt-4o", 2),
        (&globex, "gpt-4o-mini", 4),
    ] {
        for i in 0..n {
            let r = env
                .chat(key, json!({"model": model, "messages": [{"role": "user", "content": format!("q{i}")}]}))
                .await;
            assert_eq!(r.status(), 200);
        }
    }
    env.stop().await;
    let store = env.store();
    let by = Dim::parse_list("tenant,model").unwrap();
    let expected = store
        .spend(&SpendQuery {
            group_by: by,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(expected.len(), 3);
    let (rows, total) = store.totals(&Default::default()).unwrap();
    assert_eq!(rows, 9);

    let cfg = write_config(env.dir.path(), "spend.yaml", &env.db, "");
    let cfg2 = cfg.clone();
    let csv = tokio::task::spawn_blocking(move || {
        run(&[
            "spend",
            "--by",
            "tenant,model",
            "--format",
            "csv",
            "--config",
            &cfg2,
        ])
    })
    .await
    .unwrap();
    assert!(csv.status.success(), "{}", text(&csv.stderr));
    let csv = text(&csv.stdout);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "tenant,model,requests,input_tokens,output_tokens,cost_usd,estimated_rows"
    );
    let body: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(body.len(), 3, "{csv}");
    let mut sum = 0;
    for (line, exp) in body.iter().zip(&expected) {
        assert_eq!(line[0], exp.dims["tenant"]);
        assert_eq!(line[1], exp.dims["model"]);
        assert_eq!(line[2], exp.requests.to_string());
        assert_eq!(line[3], exp.input_tokens.to_string());
        assert_eq!(line[4], exp.output_tokens.to_string());
        assert_eq!(nanos(line[5]), exp.effective_cost.nanos());
        assert_eq!(line[6], "0");
        sum += nanos(line[5]);
    }
    assert_eq!(sum, total.nanos());
    let groups: Vec<(&str, &str, &str)> = body.iter().map(|l| (l[0], l[1], l[2])).collect();
    let mut sorted = groups.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            ("acme", "gpt-4o", "2"),
            ("acme", "gpt-4o-mini", "3"),
            ("globex", "gpt-4o-mini", "4")
        ]
    );

    let json_out = tokio::task::spawn_blocking(move || {
        run(&[
            "spend",
            "--by",
            "tenant,model",
            "--format",
            "json",
            "--config",
            &cfg,
        ])
    })
    .await
    .unwrap();
    assert!(json_out.status.success(), "{}", text(&json_out.stderr));
    let v: Value = serde_json::from_slice(&json_out.stdout).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 3);
    let mut sum = 0;
    let mut requests = 0;
    for (g, exp) in arr.iter().zip(&expected) {
        assert_eq!(g["tenant"], exp.dims["tenant"].as_str());
        assert_eq!(g["model"], exp.dims["model"].as_str());
        assert_eq!(g["requests"], exp.requests);
        assert_eq!(g["output_tokens"], exp.output_tokens);
        sum += nanos(g["cost_usd"].as_str().unwrap());
        requests += g["requests"].as_u64().unwrap();
    }
    assert_eq!(sum, total.nanos());
    assert_eq!(requests, 9);
}

/// Keys created and revoked with the CLI (another process) reach a running gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_key_changes_reach_a_running_gateway() {
    let env = TestEnv::start().await;
    let cfg = write_config(
        env.dir.path(),
        "keys.yaml",
        &env.db,
        &provider_yaml("http://127.0.0.1:9/v1"),
    );
    let cfg2 = cfg.clone();
    let out = tokio::task::spawn_blocking(move || {
        run(&[
            "keys", "create", "--name", "from-cli", "--tenant", "initech", "--config", &cfg2,
        ])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = text(&out.stdout).trim().to_string();
    let id = text(&out.stderr)
        .split("created key ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_string();
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]});
    eventually("the gateway accepts the new key", || async {
        env.chat(&key, body.clone()).await.status() == 200
    })
    .await;
    let ok = env.rows("outcome=ok").await;
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0]["tenant"], "initech");
    assert_eq!(ok[0]["key_id"], id.as_str());

    let out = tokio::task::spawn_blocking(move || run(&["keys", "revoke", &id, "--config", &cfg]))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    eventually("the gateway refuses the revoked key", || async {
        env.chat(&key, body.clone()).await.status() == 401
    })
    .await;
}

/// Kills the child if the test fails before it exits.
pub(crate) struct ChildGuard(pub(crate) Option<std::process::Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A `tollgate serve` child process, listening.
pub(crate) struct Serve {
    pub(crate) guard: ChildGuard,
    pub(crate) pid: u32,
    pub(crate) addr: String,
    /// Its log lines from here on.
    pub(crate) log: mpsc::Receiver<String>,
}

/// Starts `tollgate serve --config cfg` and waits until it listens.
pub(crate) async fn serve(cfg: &str) -> Serve {
    serve_env(cfg, &[]).await
}

/// [`serve`] with extra environment variables.
pub(crate) async fn serve_env(cfg: &str, env: &[(&str, &str)]) -> Serve {
    tollgate_providers::http::install_crypto_provider();
    let mut child = tollgate()
        .args(["serve", "--config", cfg])
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let guard = ChildGuard(Some(child));
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(strip_ansi(&line)).is_err() {
                break;
            }
        }
    });
    let (addr, log) = tokio::task::spawn_blocking(move || {
        let mut log = Vec::new();
        loop {
            let line = rx
                .recv_timeout(HANG_GUARD)
                .unwrap_or_else(|_| panic!("serve never reported listening: {log:#?}"));
            log.push(line.clone());
            if line.contains("tollgate listening") {
                let addr = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("listen="))
                    .unwrap_or_else(|| panic!("no listen= in {line}"))
                    .to_string();
                return (addr, rx);
            }
        }
    })
    .await
    .unwrap();
    Serve {
        guard,
        pid,
        addr,
        log,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_process_answers_then_exits_cleanly_on_sigterm() {
    let sim = tollgate_sim::spawn(
        "127.0.0.1:0".parse().unwrap(),
        tollgate_sim::SimConfig {
            api_key: Some(IT_PROVIDER_KEY.into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let cfg = write_config(
        dir.path(),
        "serve.yaml",
        &db,
        &provider_yaml(&sim.base_url()),
    );

    let cfg2 = cfg.clone();
    let out = tokio::task::spawn_blocking(move || {
        run(&[
            "keys", "create", "--name", "proc", "--tenant", "acme", "--config", &cfg2,
        ])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = text(&out.stdout).trim().to_string();

    let Serve {
        guard,
        pid,
        addr,
        log: rx,
    } = serve(&cfg).await;
    let mut guard = guard;

    let http = reqwest::Client::builder()
        .timeout(HANG_GUARD)
        .build()
        .unwrap();
    let r = http
        .post(format!("http://{addr}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "from a process"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let request_id = header(&r, "x-tollgate-request-id").to_string();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 16);
    drop(http);

    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let mut child = guard.0.take().unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + HANG_GUARD;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("serve did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    let rest: Vec<String> = rx.try_iter().collect();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status:?}; log: {rest:#?}"
    );

    let store = Store::open(&format!("sqlite://{}", db.display())).unwrap();
    let (rows, _) = store
        .list_requests(&Default::default(), tollgate_store::Page::first(10))
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].request_id, request_id);
    assert_eq!(rows[0].outcome, tollgate_types::Outcome::Ok);
    assert_eq!(rows[0].attribution.tenant.as_deref(), Some("acme"));
    assert_eq!(rows[0].attribution.key_name.as_deref(), Some("proc"));
    assert_eq!(rows[0].usage.output_tokens, 16);
    // The provider key never reached the log either.
    assert!(rest.iter().all(|l| !l.contains(IT_PROVIDER_KEY)));
}

/// `kill -9` while requests wait on the provider: the restarted gateway records each one as
/// `gateway_interrupted`, billed at the worst case it reserved (`usage_source: unknown`), and
/// its hard budget counts that spend instead of forgetting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_at_kill_9_are_recorded_at_restart() {
    const IN_FLIGHT: usize = 12;
    let sim = tollgate_sim::spawn(
        "127.0.0.1:0".parse().unwrap(),
        tollgate_sim::SimConfig {
            api_key: Some(IT_PROVIDER_KEY.into()),
            hang_rate: 1.0,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let extra = format!(
        "{}budgets:\n  - {{name: acme-monthly, scope: {{tenant: acme}}, limit_usd: \"100\", window: month, mode: hard}}\n",
        provider_yaml(&sim.base_url())
    );
    let cfg = write_config(dir.path(), "crash.yaml", &db, &extra);
    let cfg2 = cfg.clone();
    let out = tokio::task::spawn_blocking(move || {
        run(&[
            "keys", "create", "--name", "k", "--tenant", "acme", "--config", &cfg2,
        ])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = text(&out.stdout).trim().to_string();

    let first = serve(&cfg).await;
    let http = reqwest::Client::new();
    let mut calls = Vec::new();
    for i in 0..IN_FLIGHT {
        let (http, addr, key) = (http.clone(), first.addr.clone(), key.clone());
        calls.push(tokio::spawn(async move {
            http.post(format!("http://{addr}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&json!({"model": "gpt-4o-mini", "max_tokens": 50,
                    "messages": [{"role": "user", "content": format!("in flight {i}")}]}))
                .send()
                .await
        }));
    }
    let store = Store::open(&format!("sqlite://{}", db.display())).unwrap();
    eventually(
        "every call reached the provider and left its provisional row",
        || {
            let (sim, store) = (&sim, &store);
            async move {
                sim.stats().chat_completions == IN_FLIGHT as u64
                    && store.intent_count().unwrap() == IN_FLIGHT as u64
            }
        },
    )
    .await;
    let killed = Command::new("kill")
        .args(["-KILL", &first.pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    drop(first);
    for c in calls {
        assert!(
            c.await.unwrap().is_err(),
            "a client got an answer from a killed gateway"
        );
    }
    assert_eq!(store.totals(&Default::default()).unwrap().0, 0);

    let second = serve(&cfg).await;
    let (rows, _) = store
        .list_requests(&Default::default(), tollgate_store::Page::first(100))
        .unwrap();
    assert_eq!(rows.len(), IN_FLIGHT);
    assert_eq!(store.intent_count().unwrap(), 0);
    let mut sum = 0;
    for r in &rows {
        assert_eq!(
            r.error_code.as_deref(),
            Some("gateway_interrupted"),
            "{r:?}"
        );
        assert_eq!(r.outcome, tollgate_types::Outcome::Failed);
        assert_eq!(r.usage_source, tollgate_types::UsageSource::Unknown);
        assert_eq!(r.usage.output_tokens, 50, "the reserved output cap");
        assert!(r.usage.input_tokens > 0);
        assert_eq!(r.attribution.tenant.as_deref(), Some("acme"));
        assert_eq!(r.attempts, 1);
        assert!(r.effective_cost.nanos() > 0);
        sum += r.effective_cost.nanos();
    }
    let b: Value = http
        .get(format!(
            "http://{}/admin/v1/budgets/acme-monthly",
            second.addr
        ))
        .bearer_auth(IT_MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(nanos(b["spent"].as_str().unwrap()), sum, "{b}");
    assert_eq!(nanos(b["reserved"].as_str().unwrap()), 0, "{b}");
}
