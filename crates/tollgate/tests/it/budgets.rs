//! Budgets over real HTTP (docs/contracts.md §2 invariants 2–4): hard budgets hold under concurrency
//! and streaming, requests are fitted by clamping the output cap, counters survive restarts,
//! the admin API manages definitions, soft and shadow budgets never block.
//!
//! Every request here is `gpt-4o-mini` with the one-word prompt "hi": 8 prompt tokens (3 per
//! message + `user` + `hi` + 3 priming the reply), so a request with `max_tokens: 16` answered
//! in full by the simulator (its default answer is 16 tokens) costs exactly its worst case,
//! 8 × 150 + 16 × 600 = 10,800 nano-USD — the admitted count is then exact, not "about".

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tollgate_sim::SimConfig;

use crate::harness::*;

/// Prompt tokens of [`hi`] for gpt-4o-mini (checked against every row below).
const HI_TOKENS: u64 = 8;
/// Worst case (= actual cost) of `hi` with `max_tokens: 16`.
const HI16: i64 = (HI_TOKENS * 150 + 16 * 600) as i64;
/// What a budgeted request without `max_tokens` reserves (and is capped at) when its model has
/// no `max_output_tokens` in config: 4,096, not gpt-4o-mini's whole 16,384-token window.
const DEFAULT_OUTPUT_CAP: u64 = 4_096;
/// How many requests are in flight at a time in the concurrency tests.
const IN_FLIGHT: usize = 100;

fn hi(max_tokens: Option<u64>, stream: bool) -> Value {
    let mut b = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    if let Some(m) = max_tokens {
        b["max_tokens"] = json!(m);
    }
    if stream {
        b["stream"] = json!(true);
        b["stream_options"] = json!({"include_usage": true});
    }
    b
}

/// Decimal USD of a nano-USD amount, for config YAML.
fn usd(nanos: i64) -> String {
    format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn send(
    env: &TestEnv,
    key: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> reqwest::Response {
    env.chat_with(key, headers, body).await
}

/// `GET /admin/v1/budgets/{name}`.
async fn budget(env: &TestEnv, name: &str) -> Value {
    env.admin_get(&format!("/admin/v1/budgets/{name}")).await
}

fn money(v: &Value, field: &str) -> i64 {
    nanos(
        v[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} is not a decimal string: {v}")),
    )
}

/// Σ effective cost of rows.
fn ledger_sum(rows: &[Value]) -> i64 {
    rows.iter()
        .map(|r| nanos(r["effective_cost"].as_str().unwrap()))
        .sum()
}

/// Asserts the budget's counters against the ledger rows of its scope: `spent` equals their
/// sum exactly, nothing is still reserved, and (for hard budgets) the spend is within the limit.
async fn check_budget(env: &TestEnv, name: &str, scope_query: &str) -> (i64, i64) {
    let b = budget(env, name).await;
    let rows = env.rows(scope_query).await;
    let sum = ledger_sum(&rows);
    assert_eq!(money(&b, "spent"), sum, "{name}: spent vs ledger: {b}");
    assert_eq!(b["reserved"], "0", "{name}: reservation left: {b}");
    let limit = money(&b, "limit");
    if b["mode"] == "hard" {
        assert!(sum <= limit, "{name}: settled {sum} > limit {limit}");
        assert_eq!(
            money(&b, "remaining"),
            limit - sum,
            "{name}: remaining: {b}"
        );
    }
    (sum, limit)
}

/// Checks a `budget_exceeded` refusal: status, OpenAI error shape, headers, message.
async fn expect_budget_exceeded(r: reqwest::Response, budget_name: &str, sent_ms: i64) -> Value {
    let retry: i64 = header(&r, "retry-after")
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After not an integer: {:?}", r.headers()));
    assert_eq!(header(&r, "x-should-retry"), "false");
    assert!(r.headers().get("x-tollgate-request-id").is_some());
    let e = expect_error(r, 429, "budget_exceeded").await;
    assert_eq!(e["type"], "insufficient_quota", "{e}");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains(&format!("'{budget_name}'")), "{msg}");
    assert!(msg.contains("month"), "names the window: {msg}");
    // Seconds to the calendar reset: between what was left when the answer came back and
    // when the request was sent (rounded up, at least 1).
    let end = month_end_ms();
    let recv = now_ms();
    assert!(
        retry >= (end - recv) / 1000 - 1 && retry <= (end - sent_ms) / 1000 + 1,
        "Retry-After {retry} vs window end {end}"
    );
    e
}

/// The end of the current UTC month, ms.
fn month_end_ms() -> i64 {
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    let first = now.date().first_of_month();
    let next = first.checked_add(jiff::Span::new().months(1)).unwrap();
    next.to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap()
        .timestamp()
        .as_millisecond()
}

fn budgets_yaml(lines: &[&str]) -> String {
    let mut y = String::from("budgets:\n");
    for l in lines {
        y.push_str("  - ");
        y.push_str(l);
        y.push('\n');
    }
    y
}

#[derive(Debug)]
enum Outcome {
    Served { output: u64 },
    Refused,
}

/// Sends `n` copies of `body` with at most [`IN_FLIGHT`] at a time; every answer is either a
/// complete 200 (stream read to `[DONE]`) or a well-formed `budget_exceeded` refusal naming
/// `refused_by`.
async fn hammer(env: &TestEnv, key: &str, n: usize, body: Value, refused_by: &str) -> Vec<Outcome> {
    let stream = body["stream"] == true;
    futures_util::stream::iter(0..n)
        .map(|_| {
            let body = body.clone();
            async move {
                let sent = now_ms();
                let r = send(env, key, &[], &body).await;
                if r.status() != 200 {
                    expect_budget_exceeded(r, refused_by, sent).await;
                    return Outcome::Refused;
                }
                assert!(r.headers().get("x-tollgate-policy").is_none());
                if stream {
                    let events = read_stream(r).await;
                    assert!(events.last().unwrap().is_done());
                    let usage = events
                        .iter()
                        .rev()
                        .filter(|e| !e.is_done())
                        .map(|e| e.json())
                        .find(|v| v["usage"].is_object())
                        .expect("usage chunk");
                    assert_eq!(usage["usage"]["prompt_tokens"], HI_TOKENS);
                    Outcome::Served {
                        output: usage["usage"]["completion_tokens"].as_u64().unwrap(),
                    }
                } else {
                    let v: Value = r.json().await.unwrap();
                    assert_eq!(v["usage"]["prompt_tokens"], HI_TOKENS);
                    Outcome::Served {
                        output: v["usage"]["completion_tokens"].as_u64().unwrap(),
                    }
                }
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await
}

/// 1,000 requests (streamed or not) from one tenant against a hard budget affording 100.
async fn thousand_against_a_hundred(stream: bool) {
    // 100 requests and half of another one.
    let limit = 100 * HI16 + HI16 / 2;
    let env = TestEnv::with(Opts {
        extra_yaml: budgets_yaml(&[&format!(
            "{{name: acme-monthly, scope: {{tenant: acme}}, limit_usd: \"{}\", window: month, mode: hard}}",
            usd(limit)
        )]),
        ..Opts::default()
    })
    .await;
    let key = env.key().await;

    let outcomes = hammer(&env, &key, 1000, hi(Some(16), stream), "acme-monthly").await;
    let served: Vec<u64> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Served { output } => Some(*output),
            Outcome::Refused => None,
        })
        .collect();
    assert!(served.iter().all(|&o| o == 16), "{served:?}");
    // Each admitted request costs exactly what it reserved, so exactly floor(limit / cost) are
    // admitted — not one fewer (no reservation outlived its request), not one more.
    assert!(served.len() >= 90);
    assert_eq!(served.len(), 100, "admitted");

    // One row per request; settled spend within the limit and equal to the budget's counter.
    let rows = env.rows("tenant=acme").await;
    assert_eq!(rows.len(), 1000);
    let ok: Vec<&Value> = rows.iter().filter(|r| r["status"] == 200).collect();
    assert_eq!(ok.len(), 100);
    for r in &ok {
        assert_eq!(r["input_tokens"], HI_TOKENS, "{r}");
        assert_eq!(r["output_tokens"], 16, "{r}");
        assert_eq!(r["stream"], stream, "{r}");
        assert_eq!(nanos(r["effective_cost"].as_str().unwrap()), HI16);
        assert_eq!(r["policy_actions"], "", "{r}");
    }
    for r in rows.iter().filter(|r| r["status"] != 200) {
        assert_eq!(r["status"], 429, "{r}");
        assert_eq!(r["outcome"], "rejected", "{r}");
        assert_eq!(r["error_code"], "budget_exceeded", "{r}");
        assert_eq!(r["policy_actions"], "block=acme-monthly", "{r}");
        assert_eq!(r["effective_cost"], "0", "{r}");
    }
    let (spent, lim) = check_budget(&env, "acme-monthly", "tenant=acme").await;
    assert_eq!(lim, limit);
    assert_eq!(spent, 100 * HI16);
    println!(
        "budgets (stream={stream}): admitted {} of 1000, limit {limit} nano-USD, settled {spent}",
        served.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_budget_holds_under_a_thousand_concurrent_requests() {
    thousand_against_a_hundred(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_budget_holds_under_a_thousand_concurrent_streams() {
    thousand_against_a_hundred(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_and_nested_budgets_hold_together() {
    // The organisation affords 200 requests; tenant a 80, of which feature `search` 30;
    // tenant b 60; tenant c only the organisation's limit. A soft budget on c tracks without
    // blocking.
    let lim = |n: i64| n * HI16 + HI16 / 2;
    let env = TestEnv::with(Opts {
        extra_yaml: budgets_yaml(&[
            &format!(
                "{{name: org, scope: {{}}, limit_usd: \"{}\", window: month, mode: hard}}",
                usd(lim(200))
            ),
            &format!(
                "{{name: a, scope: {{tenant: a}}, limit_usd: \"{}\", window: month, mode: hard}}",
                usd(lim(80))
            ),
            &format!(
                "{{name: a-search, scope: {{tenant: a, feature: search}}, limit_usd: \"{}\", window: month, mode: hard}}",
                usd(lim(30))
            ),
            &format!(
                "{{name: b, scope: {{tenant: b}}, limit_usd: \"{}\", window: month, mode: hard}}",
                usd(lim(60))
            ),
            &format!(
                "{{name: c-soft, scope: {{tenant: c}}, limit_usd: \"{}\", window: month, mode: soft}}",
                usd(lim(10))
            ),
        ]),
        ..Opts::default()
    })
    .await;
    let (key, _) = env
        .create_key(json!({"name": "saas", "team": "platform", "allow_tenant_header": true}))
        .await;
    // (tenant, feature) groups, 150 requests each, interleaved.
    let groups: [(&str, Option<&str>); 4] = [
        ("a", Some("search")),
        ("a", Some("chat")),
        ("b", None),
        ("c", None),
    ];
    let body = hi(Some(16), false);
    let outcomes: Vec<(usize, u16)> = futures_util::stream::iter(0..600usize)
        .map(|i| {
            let (tenant, feature) = groups[i % 4];
            let (key, body) = (&key, &body);
            let env = &env;
            async move {
                let mut h = vec![("x-tollgate-tenant", tenant)];
                if let Some(f) = feature {
                    h.push(("x-tollgate-feature", f));
                }
                let r = send(env, key, &h, body).await;
                let status = r.status().as_u16();
                if status != 200 {
                    let e = expect_error(r, 429, "budget_exceeded").await;
                    assert_eq!(e["type"], "insufficient_quota");
                } else {
                    r.bytes().await.unwrap();
                }
                (i % 4, status)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let mut admitted = [0usize; 4];
    for (g, s) in &outcomes {
        if *s == 200 {
            admitted[*g] += 1;
        }
    }

    // Each budget: spent = Σ ledger over its scope, nothing reserved, within its limit.
    let (org, _) = check_budget(&env, "org", "").await;
    let (a, _) = check_budget(&env, "a", "tenant=a").await;
    let (a_search, _) = check_budget(&env, "a-search", "tenant=a&feature=search").await;
    let (b, _) = check_budget(&env, "b", "tenant=b").await;
    let (c, c_limit) = check_budget(&env, "c-soft", "tenant=c").await;
    assert_eq!(env.rows("").await.len(), 600);
    // Demand exceeds the organisation's limit (c alone could take 150), so it fills exactly.
    assert_eq!(org, 200 * HI16, "admitted per group {admitted:?}");
    assert_eq!(org, a + b + c);
    assert_eq!(admitted.iter().sum::<usize>(), 200);
    assert_eq!(a, (admitted[0] + admitted[1]) as i64 * HI16);
    assert_eq!(a_search, admitted[0] as i64 * HI16);
    assert_eq!(b, admitted[2] as i64 * HI16);
    assert_eq!(c, admitted[3] as i64 * HI16);
    // The soft budget was overrun without blocking anything: c was only ever refused by org.
    assert!(c > c_limit, "c spent {c}, soft limit {c_limit}");

    // Every refusal names a hard budget whose scope holds the request.
    for r in env.rows("status=429").await {
        let allowed: &[&str] = match (r["tenant"].as_str(), r["feature"].as_str()) {
            (Some("a"), Some("search")) => &["block=org", "block=a", "block=a-search"],
            (Some("a"), _) => &["block=org", "block=a"],
            (Some("b"), _) => &["block=org", "block=b"],
            (Some("c"), _) => &["block=org"],
            _ => panic!("unexpected row {r}"),
        };
        let pa = r["policy_actions"].as_str().unwrap();
        let first = pa.split(',').next().unwrap();
        assert!(allowed.contains(&first), "{r}");
    }
    println!(
        "budgets (nested): admitted a/search {} a/chat {} b {} c {}; org settled {org} of {}",
        admitted[0],
        admitted[1],
        admitted[2],
        admitted[3],
        lim(200)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_fitted_to_what_remains() {
    // Long answers unless capped: 1,000 tokens.
    let limit: i64 = 200_000;
    let env = TestEnv::with(Opts {
        sim: SimConfig {
            completion_tokens: 1000,
            ..SimConfig::default()
        },
        extra_yaml: budgets_yaml(&[
            &format!(
                "{{name: fit, scope: {{tenant: acme}}, limit_usd: \"{}\", window: month, mode: hard}}",
                usd(limit)
            ),
            "{name: globex, scope: {tenant: globex}, limit_usd: \"0.02\", window: month, mode: hard}",
        ]),
        ..Opts::default()
    })
    .await;
    let (key, _) = env
        .create_key(json!({"name": "saas", "allow_tenant_header": true}))
        .await;
    let acme = [("x-tollgate-tenant", "acme")];

    // A request that fits as asked: not clamped.
    let r = send(&env, &key, &acme, &hi(Some(16), false)).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-tollgate-policy").is_none());
    r.bytes().await.unwrap();
    let remaining = limit - HI16;
    assert_eq!(money(&budget(&env, "fit").await, "remaining"), remaining);

    // A prompt whose input alone costs more than what remains: refused, nothing reserved.
    let long = "hello ".repeat(2000);
    assert!(2000 * 150 > remaining);
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 1,
                      "messages": [{"role": "user", "content": long}]});
    let sent = now_ms();
    let r = send(&env, &key, &acme, &body).await;
    let id = header(&r, "x-tollgate-request-id").to_string();
    expect_budget_exceeded(r, "fit", sent).await;
    let row = env.row(&id).await;
    assert_eq!(row["policy_actions"], "block=fit");
    assert_eq!(row["effective_cost"], "0");
    assert_eq!(money(&budget(&env, "fit").await, "remaining"), remaining);

    // A stream asking for far more than remains is clamped to the largest cap that fits.
    let cap = (remaining - HI_TOKENS as i64 * 150) / 600;
    assert!(cap > 16 && cap < 1000, "{cap}");
    let r = send(&env, &key, &acme, &hi(Some(100_000), true)).await;
    assert_eq!(
        header(&r, "x-tollgate-policy"),
        format!("cap_max_tokens={cap}")
    );
    let id = header(&r, "x-tollgate-request-id").to_string();
    let events = read_stream(r).await;
    assert!(events.last().unwrap().is_done());
    let finish: Vec<Value> = events
        .iter()
        .filter(|e| !e.is_done())
        .map(|e| e.json())
        .filter_map(|v| v["choices"][0]["finish_reason"].as_str().map(|s| json!(s)))
        .collect();
    assert_eq!(finish, [json!("length")]);
    let usage = events
        .iter()
        .filter(|e| !e.is_done())
        .map(|e| e.json())
        .find(|v| v["usage"].is_object())
        .expect("usage chunk");
    // The upstream honoured the cap: exactly N tokens (its answer would have been 1,000).
    assert_eq!(usage["usage"]["completion_tokens"], cap);
    let row = env.row(&id).await;
    assert_eq!(row["output_tokens"], cap);
    assert!(
        row["policy_actions"]
            .as_str()
            .unwrap()
            .split(',')
            .any(|a| a == format!("cap_max_tokens={cap}")),
        "{row}"
    );
    let (spent, _) = check_budget(&env, "fit", "tenant=acme").await;
    assert_eq!(spent, HI16 + HI_TOKENS as i64 * 150 + cap * 600);
    assert!(spent <= limit);
    // What remains cannot take even a minimal answer.
    let sent = now_ms();
    let r = send(&env, &key, &acme, &hi(Some(16), false)).await;
    expect_budget_exceeded(r, "fit", sent).await;

    // No max_tokens: the model's output cap (16,384) is reserved while the request runs, and
    // the reservation settles to the actual cost.
    env.sim.set_config(SimConfig {
        completion_tokens: 1000,
        ttft_ms: 1000,
        ..SimConfig::default()
    });
    let client = env.http.clone();
    let url = env.url("/v1/chat/completions");
    let k = key.clone();
    let inflight = tokio::spawn(async move {
        client
            .post(url)
            .bearer_auth(k)
            .header("x-tollgate-tenant", "globex")
            .json(&hi(None, false))
            .send()
            .await
            .unwrap()
    });
    let reserved = loop {
        let b = budget(&env, "globex").await;
        if b["reserved"] != "0" {
            break money(&b, "reserved");
        }
        assert!(
            !inflight.is_finished(),
            "the request finished before its reservation was seen"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(
        reserved,
        (HI_TOKENS * 150 + DEFAULT_OUTPUT_CAP * 600) as i64,
        "reserved for a request without max_tokens"
    );
    let r = inflight.await.unwrap();
    assert_eq!(r.status(), 200);
    let id = header(&r, "x-tollgate-request-id").to_string();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 1000);
    let row = env.row(&id).await;
    let (spent, _) = check_budget(&env, "globex", "tenant=globex").await;
    assert_eq!(spent, (HI_TOKENS * 150 + 1000 * 600) as i64);
    assert_eq!(nanos(row["effective_cost"].as_str().unwrap()), spent);
    println!(
        "budgets (fit): limit {limit}, clamped to {cap}, settled {} ; no-cap reserved {reserved}, settled {spent}",
        HI16 + HI_TOKENS as i64 * 150 + cap * 600
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_are_rebuilt_from_the_ledger_after_a_restart() {
    // Three requests spent, then room for 20 output tokens of one more.
    let limit = 3 * HI16 + HI_TOKENS as i64 * 150 + 20 * 600;
    let mut env = TestEnv::with(Opts {
        sim: SimConfig {
            completion_tokens: 1000,
            ..SimConfig::default()
        },
        extra_yaml: budgets_yaml(&[&format!(
            "{{name: acme-monthly, scope: {{tenant: acme}}, limit_usd: \"{}\", window: month, mode: hard}}",
            usd(limit)
        )]),
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    for _ in 0..3 {
        let r = send(&env, &key, &[], &hi(Some(16), false)).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let (before, _) = check_budget(&env, "acme-monthly", "tenant=acme").await;
    assert_eq!(before, 3 * HI16);

    env.restart().await;
    let b = budget(&env, "acme-monthly").await;
    assert_eq!(money(&b, "spent"), before, "{b}");
    assert_eq!(b["reserved"], "0");
    assert_eq!(money(&b, "remaining"), limit - before);

    // With the counter rebuilt only 20 output tokens fit (a reset counter would allow 74).
    let r = send(&env, &key, &[], &hi(Some(100), false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-tollgate-policy"), "cap_max_tokens=20");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 20);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let sent = now_ms();
    let r = send(&env, &key, &[], &hi(Some(16), false)).await;
    expect_budget_exceeded(r, "acme-monthly", sent).await;
    let (after, _) = check_budget(&env, "acme-monthly", "tenant=acme").await;
    assert_eq!(after, limit);

    // And again: a second restart still counts everything.
    env.restart().await;
    assert_eq!(money(&budget(&env, "acme-monthly").await, "spent"), limit);
    let sent = now_ms();
    let r = send(&env, &key, &[], &hi(Some(16), false)).await;
    expect_budget_exceeded(r, "acme-monthly", sent).await;
}

async fn admin(
    env: &TestEnv,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = env.http.request(method, env.url(path)).bearer_auth(MASTER);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_manages_budgets() {
    use reqwest::Method;
    let mut env = TestEnv::start().await;
    let key = env.key().await;
    // Spend recorded before the budget exists.
    for _ in 0..2 {
        let r = send(&env, &key, &[], &hi(Some(16), false)).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }

    // Every route needs the master key (a virtual key is not one).
    let def = json!({"name": "rt", "scope": {"tenant": "acme"}, "limit_usd": "0.000050",
                     "window": "month", "mode": "hard"});
    for (method, path) in [
        (Method::POST, "/admin/v1/budgets"),
        (Method::GET, "/admin/v1/budgets"),
        (Method::GET, "/admin/v1/budgets/rt"),
        (Method::PATCH, "/admin/v1/budgets/rt"),
        (Method::DELETE, "/admin/v1/budgets/rt"),
    ] {
        for auth in [None, Some(key.as_str())] {
            let mut req = env.http.request(method.clone(), env.url(path)).json(&def);
            if let Some(k) = auth {
                req = req.bearer_auth(k);
            }
            let r = req.send().await.unwrap();
            expect_error(r, 401, "invalid_api_key").await;
        }
    }

    // Create: 201 with its status, seeded with the spend already in the window.
    let (s, v) = admin(&env, Method::POST, "/admin/v1/budgets", Some(def.clone())).await;
    assert_eq!(s, 201, "{v}");
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "forecast_at_window_end",
            "limit",
            "mode",
            "name",
            "remaining",
            "reserved",
            "scope",
            "spent",
            "utilization_pct",
            "window",
            "window_end",
            "window_end_ms",
            "window_start",
            "window_start_ms",
        ],
        "{v}"
    );
    assert_eq!(v["name"], "rt");
    assert_eq!(v["scope"], json!({"tenant": "acme"}));
    assert_eq!(v["mode"], "hard");
    assert_eq!(v["window"], "month");
    assert_eq!(money(&v, "limit"), 50_000);
    assert_eq!(money(&v, "spent"), 2 * HI16, "seeded from the ledger: {v}");
    assert_eq!(v["reserved"], "0");
    assert_eq!(money(&v, "remaining"), 50_000 - 2 * HI16);
    // (spent + reserved) / limit in basis points, rounded down, as the policy trigger reads it.
    let bp = 2 * HI16 * 10_000 / 50_000;
    let pct = if bp % 100 == 0 {
        (bp / 100).to_string()
    } else if bp % 10 == 0 {
        format!("{}.{}", bp / 100, bp % 100 / 10)
    } else {
        format!("{}.{:02}", bp / 100, bp % 100)
    };
    assert_eq!(v["utilization_pct"], pct, "{v}");
    assert_eq!(v["window_end_ms"], month_end_ms());
    assert!(v["window_start"].as_str().unwrap().ends_with('Z'), "{v}");
    // Duplicate name: 409.
    let (s, v) = admin(&env, Method::POST, "/admin/v1/budgets", Some(def.clone())).await;
    assert_eq!(s, 409, "{v}");
    assert_error_shape(&v);
    assert_eq!(v["error"]["code"], "conflict");
    // Invalid definitions: 400 naming the field.
    let (s, v) = admin(
        &env,
        Method::POST,
        "/admin/v1/budgets",
        Some(json!({"name": "typo", "scope": {"tenat": "x"}, "limit_usd": "1", "window": "month", "mode": "hard"})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_error_shape(&v);
    let e = &v["error"];
    assert!(
        e["param"].as_str().is_some_and(|p| p.starts_with("scope"))
            && e["message"].as_str().unwrap().contains("tenat"),
        "{v}"
    );
    let (s, v) = admin(
        &env,
        Method::POST,
        "/admin/v1/budgets",
        Some(json!({"name": "bad", "scope": {}, "limit_usd": "1", "window": "fortnight", "mode": "hard"})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["param"], "window", "{v}");
    let (s, _) = admin(&env, Method::GET, "/admin/v1/budgets/typo", None).await;
    assert_eq!(s, 404);

    // The budget is enforced at once: 4 of these fit in 50,000 − 21,600, the 5th does not.
    for i in 0..5 {
        let r = send(&env, &key, &[], &hi(Some(16), false)).await;
        if i < 2 {
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
        } else {
            let sent = now_ms();
            if i == 2 {
                expect_budget_exceeded(r, "rt", sent).await;
            } else {
                expect_error(r, 429, "budget_exceeded").await;
            }
        }
    }
    let (spent, _) = check_budget(&env, "rt", "tenant=acme").await;
    assert_eq!(spent, 4 * HI16);

    // List.
    let list = env.admin_get("/admin/v1/budgets").await;
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{list}");
    assert_eq!(data[0]["name"], "rt");
    assert_eq!(money(&data[0], "spent"), spent);

    // PATCH (merge patch): a new limit, the counters kept.
    let (s, v) = admin(
        &env,
        Method::PATCH,
        "/admin/v1/budgets/rt",
        Some(json!({"limit_usd": "0.0001"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(money(&v, "limit"), 100_000);
    assert_eq!(money(&v, "spent"), spent, "PATCH kept the counter: {v}");
    assert_eq!(v["scope"], json!({"tenant": "acme"}));
    assert_eq!(v["mode"], "hard");
    let r = send(&env, &key, &[], &hi(Some(16), false)).await;
    assert_eq!(r.status(), 200, "the raised limit applies");
    r.bytes().await.unwrap();
    let (s, v) = admin(
        &env,
        Method::PATCH,
        "/admin/v1/budgets/rt",
        Some(json!({"name": "other"})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["param"], "name");
    let (s, v) = admin(
        &env,
        Method::PATCH,
        "/admin/v1/budgets/rt",
        Some(json!({"window": "fortnight"})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["param"], "window");
    let (s, _) = admin(
        &env,
        Method::PATCH,
        "/admin/v1/budgets/nope",
        Some(json!({"limit_usd": "1"})),
    )
    .await;
    assert_eq!(s, 404);

    // The definition and its patch survive a restart, the counter is rebuilt.
    env.restart().await;
    let v = budget(&env, "rt").await;
    assert_eq!(money(&v, "limit"), 100_000);
    assert_eq!(money(&v, "spent"), 5 * HI16);

    // DELETE: gone (404), requests no longer counted against it, and still gone after a
    // restart.
    let (s, v) = admin(&env, Method::DELETE, "/admin/v1/budgets/rt", None).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = admin(&env, Method::GET, "/admin/v1/budgets/rt", None).await;
    assert_eq!(s, 404, "{v}");
    assert_error_shape(&v);
    let (s, _) = admin(&env, Method::DELETE, "/admin/v1/budgets/rt", None).await;
    assert_eq!(s, 404);
    env.restart().await;
    let (s, _) = admin(&env, Method::GET, "/admin/v1/budgets/rt", None).await;
    assert_eq!(s, 404);
    assert_eq!(env.admin_get("/admin/v1/budgets").await["data"], json!([]));
    for _ in 0..3 {
        let r = send(&env, &key, &[], &hi(Some(16), false)).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_and_shadow_budgets_never_block() {
    // Both far below one request's cost.
    let env = TestEnv::with(Opts {
        extra_yaml: budgets_yaml(&[
            "{name: acme-soft, scope: {tenant: acme}, limit_usd: \"0.000001\", window: month, mode: soft}",
            "{name: acme-shadow, scope: {tenant: acme}, limit_usd: \"0\", window: month, mode: shadow}",
        ]),
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    for stream in [false, true, false] {
        let r = send(&env, &key, &[], &hi(Some(16), stream)).await;
        assert_eq!(r.status(), 200);
        assert!(
            r.headers().get("x-tollgate-policy").is_none(),
            "{:?}",
            r.headers()
        );
        let id = header(&r, "x-tollgate-request-id").to_string();
        if stream {
            read_stream(r).await;
        } else {
            r.bytes().await.unwrap();
        }
        let row = env.row(&id).await;
        let actions: BTreeMap<&str, ()> = row["policy_actions"]
            .as_str()
            .unwrap()
            .split(',')
            .map(|a| (a, ()))
            .collect();
        assert!(actions.contains_key("soft_exceeded=acme-soft"), "{row}");
        assert!(actions.contains_key("shadow_block=acme-shadow"), "{row}");
        assert!(
            !actions
                .keys()
                .any(|a| a.starts_with("block=") || a.starts_with("cap_")),
            "{row}"
        );
        assert_eq!(row["output_tokens"], 16);
    }
    // Both still track the spend exactly.
    let (soft, soft_limit) = check_budget(&env, "acme-soft", "tenant=acme").await;
    let (shadow, _) = check_budget(&env, "acme-shadow", "tenant=acme").await;
    assert_eq!(soft, 3 * HI16);
    assert_eq!(shadow, 3 * HI16);
    assert!(soft > soft_limit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_anthropic_stream_is_cut_at_the_budget_cap() {
    // `/v1/messages` to an Anthropic deployment is passed through natively. The simulator
    // ignores `max_tokens` (it would stream 1,000 tokens), so only the gateway's live cut at
    // the output the budget reserved can keep the spend inside the limit.
    let input_price = 3_000i64; // nano-USD per token: $3 / 1M
    let output_price = 15_000i64; // $15 / 1M
    let limit = 1_530_000i64; // room for roughly 100 output tokens after the prompt
    let env = TestEnv::with(Opts {
        sim: SimConfig {
            completion_tokens: 1000,
            ignore_max_tokens: true,
            ..SimConfig::default()
        },
        extra_providers: "  sim-anthropic:\n    kind: anthropic\n    base_url: {sim_root}\n"
            .to_string(),
        extra_models: "  claude: {deployments: [{provider: sim-anthropic, model: claude-sonnet-4-5}], price: {input: 3, output: 15}}\n"
            .to_string(),
        extra_yaml: budgets_yaml(&[&format!(
            "{{name: cap, scope: {{tenant: acme}}, limit_usd: \"{}\", window: month, mode: hard}}",
            usd(limit)
        )]),
        ..Opts::default()
    })
    .await;
    let (key, _) = env
        .create_key(json!({"name": "native", "tenant": "acme"}))
        .await;
    let r = env
        .http
        .post(env.url("/v1/messages"))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .json(
            &json!({"model": "claude", "max_tokens": 4096, "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    let policy = header(&r, "x-tollgate-policy").to_string();
    let cap: i64 = policy
        .strip_prefix("cap_max_tokens=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not fitted: {policy}"));
    assert!(cap > 16 && cap < 1000, "{cap}");
    let id = header(&r, "x-tollgate-request-id").to_string();
    let events: Vec<Value> = read_stream(r).await.iter().map(|e| e.json()).collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    // Ended in Anthropic's own shape: the open block closed, the stop reason, the end.
    assert_eq!(kinds.first(), Some(&"message_start"), "{kinds:?}");
    assert_eq!(
        &kinds[kinds.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"],
        "{kinds:?}"
    );
    let delta = &events[events.len() - 2];
    assert_eq!(delta["delta"]["stop_reason"], "max_tokens", "{delta}");
    let relayed = delta["usage"]["output_tokens"].as_i64().unwrap();
    assert!(relayed <= cap && relayed > 0, "{relayed} > {cap}");
    let text: String = events
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert!(!text.is_empty());

    let row = env.row(&id).await;
    assert_eq!(row["outcome"], "ok", "{row}");
    assert_eq!(row["output_tokens"], relayed, "{row}");
    assert_eq!(row["usage_source"], "estimated", "{row}");
    let actions: Vec<&str> = row["policy_actions"].as_str().unwrap().split(',').collect();
    assert!(actions.contains(&policy.as_str()), "{row}");
    assert!(actions.contains(&"stream_cut_at_budget_cap"), "{row}");
    let input = row["input_tokens"].as_i64().unwrap();
    assert_eq!(
        nanos(row["effective_cost"].as_str().unwrap()),
        input * input_price + relayed * output_price
    );
    // Spent (from the ledger) never passes the hard limit.
    let (spent, _) = check_budget(&env, "cap", "tenant=acme").await;
    assert!(spent <= limit, "{spent} > {limit}");
}
