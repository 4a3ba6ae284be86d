//! Rate limits over real HTTP: RPM exact under 500 concurrent requests, TPM reserved from the
//! estimate and settled to actual usage, per-tenant and per-user rules isolated, the
//! `x-ratelimit-*` headers on every kind of response, and refusals recorded in the ledger.
//!
//! Every chat request is `gpt-4o-mini` with the prompt "hi": 8 prompt tokens, and the
//! simulator answers 16 tokens unless `max_tokens` is lower. With `max_tokens: 100` the TPM
//! estimate is 8 + 100 = 108 tokens and the actual usage 8 + 16 = 24.

use std::collections::BTreeSet;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tollgate_sim::SimConfig;

use crate::harness::*;

const EST: u64 = 108;
const ACTUAL: u64 = 24;

fn hi(max_tokens: u64, stream: bool) -> Value {
    let mut b = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
    });
    if stream {
        b["stream"] = json!(true);
        b["stream_options"] = json!({"include_usage": true});
    }
    b
}

async fn env_with(rules: &[&str]) -> TestEnv {
    let mut yaml = String::from("rate_limits:\n");
    for r in rules {
        yaml.push_str(&format!("  - {r}\n"));
    }
    TestEnv::with(Opts {
        extra_yaml: yaml,
        ..Opts::default()
    })
    .await
}

async fn send(
    env: &TestEnv,
    key: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> reqwest::Response {
    env.chat_with(key, headers, body).await
}

fn num(r: &reqwest::Response, name: &str) -> u64 {
    header(r, name)
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number: {:?}", r.headers()))
}

/// Checks a `rate_limit_exceeded` refusal and returns its Retry-After.
async fn expect_limited(r: reqwest::Response, rule: &str) -> u64 {
    let retry = num(&r, "retry-after");
    assert!((1..=61).contains(&retry), "Retry-After {retry}");
    // Retrying after the delay helps: SDKs may retry.
    assert!(r.headers().get("x-should-retry").is_none());
    let e = expect_error(r, 429, "rate_limit_exceeded").await;
    assert_eq!(e["type"], "rate_limit_error", "{e}");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains(&format!("'{rule}'")), "{msg}");
    retry
}

/// OpenAI's reset format for a delay of about a minute: `1m0s`, `59.5s`, `1m0.25s`, …
fn is_reset_about_a_minute(v: &str) -> bool {
    let secs: f64 = if let Some(rest) = v.strip_prefix("1m") {
        60.0 + rest
            .trim_end_matches('s')
            .parse::<f64>()
            .unwrap_or(f64::NAN)
    } else {
        v.trim_end_matches('s').parse().unwrap_or(f64::NAN)
    };
    (58.0..=61.0).contains(&secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_holds_exactly_under_500_concurrent_requests() {
    let env = env_with(&["{name: per-key, per: key, rpm: 100}"]).await;
    let key = env.key().await;
    let body = hi(16, false);
    let answers: Vec<(u16, Option<u64>)> = futures_util::stream::iter(0..500)
        .map(|_| {
            let (env, key, body) = (&env, &key, &body);
            async move {
                let r = send(env, key, &[], body).await;
                let status = r.status().as_u16();
                assert_eq!(num(&r, "x-ratelimit-limit-requests"), 100);
                assert!(is_reset_about_a_minute(header(
                    &r,
                    "x-ratelimit-reset-requests"
                )));
                // A request-only rule says nothing about tokens.
                assert!(r.headers().get("x-ratelimit-limit-tokens").is_none());
                if status == 200 {
                    let remaining = num(&r, "x-ratelimit-remaining-requests");
                    let v: Value = r.json().await.unwrap();
                    assert_eq!(v["object"], "chat.completion");
                    (200, Some(remaining))
                } else {
                    assert_eq!(num(&r, "x-ratelimit-remaining-requests"), 0);
                    expect_limited(r, "per-key").await;
                    (429, None)
                }
            }
        })
        .buffer_unordered(500)
        .collect()
        .await;
    let ok: Vec<u64> = answers.iter().filter_map(|a| a.1).collect();
    assert_eq!(ok.len(), 100, "admitted");
    assert_eq!(answers.iter().filter(|a| a.0 == 429).count(), 400);
    // Each admission saw its own slot: remaining counts down 99, 98, …, 0 without repeats.
    assert_eq!(
        ok.iter().copied().collect::<BTreeSet<u64>>(),
        (0..100).collect::<BTreeSet<u64>>()
    );

    // One row per request; refusals recorded as rejected, naming the rule.
    let rows = env.rows("").await;
    assert_eq!(rows.len(), 500);
    assert_eq!(rows.iter().filter(|r| r["status"] == 200).count(), 100);
    for r in rows.iter().filter(|r| r["status"] != 200) {
        assert_eq!(r["status"], 429, "{r}");
        assert_eq!(r["outcome"], "rejected", "{r}");
        assert_eq!(r["error_code"], "rate_limit_exceeded", "{r}");
        assert_eq!(r["error_origin"], "gateway", "{r}");
        assert_eq!(r["policy_actions"], "rate_limited=per-key", "{r}");
        assert_eq!(r["tenant"], "acme", "{r}");
    }
    let metrics = env.metrics().await;
    assert!(
        metrics.contains(r#"tollgate_rate_limited_total{endpoint="/v1/chat/completions"} 400"#),
        "{metrics}"
    );
    // Another key has its own counter.
    let (other, _) = env.create_key(json!({"name": "other"})).await;
    let r = send(&env, &other, &[], &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(num(&r, "x-ratelimit-remaining-requests"), 99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpm_reserves_the_estimate_and_settles_to_actual_usage() {
    let env = env_with(&["{name: acme-tpm, per: tenant, tpm: 250}"]).await;
    let key = env.key().await;

    // 1: nothing used; the estimate is reserved.
    let r = send(&env, &key, &[], &hi(100, false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(num(&r, "x-ratelimit-limit-tokens"), 250);
    assert_eq!(num(&r, "x-ratelimit-remaining-tokens"), 250 - EST);
    assert!(is_reset_about_a_minute(header(
        &r,
        "x-ratelimit-reset-tokens"
    )));
    assert!(r.headers().get("x-ratelimit-limit-requests").is_none());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["usage"]["total_tokens"], ACTUAL);
    // 2: the first settled to its actual 24 tokens before its answer was sent.
    let r = send(&env, &key, &[], &hi(100, false)).await;
    assert_eq!(num(&r, "x-ratelimit-remaining-tokens"), 250 - ACTUAL - EST);
    let _ = r.bytes().await;
    // Used: 48. A request whose estimate (208) does not fit the 202 left is refused, and
    // nothing of it stays reserved.
    let r = send(&env, &key, &[], &hi(200, false)).await;
    assert_eq!(num(&r, "x-ratelimit-remaining-tokens"), 250 - 2 * ACTUAL);
    expect_limited(r, "acme-tpm").await;
    // Larger than the limit itself: refused with advice, whatever the wait.
    let r = send(&env, &key, &[], &hi(300, false)).await;
    assert_eq!(r.status(), 429);
    let e = expect_error(r, 429, "rate_limit_exceeded").await;
    assert!(
        e["message"].as_str().unwrap().contains("lower max_tokens"),
        "{e}"
    );

    // A stream carries the headers (set before the body) and settles when it ends.
    let r = send(&env, &key, &[], &hi(100, true)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        num(&r, "x-ratelimit-remaining-tokens"),
        250 - 2 * ACTUAL - EST
    );
    let id = header(&r, "x-tollgate-request-id").to_string();
    assert!(read_stream(r).await.last().unwrap().is_done());
    env.wait_rows("", |rows| rows.iter().any(|r| r["request_id"] == id))
        .await;
    let r = send(&env, &key, &[], &hi(16, false)).await;
    assert_eq!(
        num(&r, "x-ratelimit-remaining-tokens"),
        250 - 3 * ACTUAL - ACTUAL
    );
    let _ = r.bytes().await;

    // A failed upstream call settles to the tokens it used (none): only its estimate was held.
    env.sim.set_config(SimConfig {
        fail_rate: 1.0,
        fail_status: 500,
        ..SimConfig::default()
    });
    let r = send(&env, &key, &[], &hi(100, false)).await;
    assert_eq!(r.status(), 502);
    assert_eq!(
        num(&r, "x-ratelimit-remaining-tokens"),
        250 - 4 * ACTUAL - EST
    );
    env.sim.set_config(SimConfig::default());
    let r = send(&env, &key, &[], &hi(16, false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(num(&r, "x-ratelimit-remaining-tokens"), 250 - 5 * ACTUAL);
    let _ = r.bytes().await;

    // The ledger agrees: the rows' tokens are what the counter holds.
    let rows = env.rows("").await;
    let used: u64 = rows
        .iter()
        .map(|r| r["input_tokens"].as_u64().unwrap() + r["output_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(used, 5 * ACTUAL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_and_user_rules_count_apart() {
    let env = env_with(&[
        "{name: tenants, per: tenant, rpm: 5}",
        "{name: acme-users, per: user, match: {tenant: acme}, rpm: 2}",
    ])
    .await;
    let (key, _) = env
        .create_key(json!({"name": "saas", "allow_tenant_header": true}))
        .await;
    let body = hi(16, false);
    let go = |tenant: &'static str, user: Option<&'static str>| {
        let (env, key, body) = (&env, &key, &body);
        async move {
            let mut h = vec![("x-tollgate-tenant", tenant)];
            if let Some(u) = user {
                h.push(("x-tollgate-user", u));
            }
            send(env, key, &h, body).await
        }
    };
    let ok = |r: reqwest::Response| async move {
        assert_eq!(r.status(), 200, "{:?}", r.headers());
        num(&r, "x-ratelimit-remaining-requests")
    };
    // Tenant a: five, then the tenant rule refuses. Tenant b is untouched by that.
    for left in (0..5).rev() {
        assert_eq!(ok(go("a", None).await).await, left);
    }
    expect_limited(go("a", None).await, "tenants").await;
    for left in (0..5).rev() {
        assert_eq!(ok(go("b", None).await).await, left);
    }
    // Acme's users: two each, and the tighter user quota is the one reported.
    assert_eq!(ok(go("acme", Some("u1")).await).await, 1);
    assert_eq!(ok(go("acme", Some("u1")).await).await, 0);
    expect_limited(go("acme", Some("u1")).await, "acme-users").await;
    assert_eq!(ok(go("acme", Some("u2")).await).await, 1);
    // Acme has used 3 of 5; a request without a user is not limited by the user rule.
    assert_eq!(ok(go("acme", None).await).await, 1);
    // u2 still has a slot of its own, but all or nothing: the tenant's last one is taken here,
    // and then neither counter moves for the refused request.
    assert_eq!(ok(go("acme", Some("u2")).await).await, 0);
    expect_limited(go("acme", Some("u3")).await, "tenants").await;
    // User rule applies only to acme: a user under tenant b is limited by the tenant rule.
    let r = go("b", Some("u1")).await;
    assert_eq!(num(&r, "x-ratelimit-limit-requests"), 5);
    expect_limited(r, "tenants").await;

    let rows = env.rows("outcome=rejected").await;
    let actions: BTreeSet<String> = rows
        .iter()
        .map(|r| r["policy_actions"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        actions,
        ["rate_limited=acme-users", "rate_limited=tenants"]
            .map(String::from)
            .into()
    );
    assert_eq!(rows.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_and_messages_are_limited_with_the_same_headers() {
    let env = env_with(&["{name: everyone, rpm: 2, tpm: 100000}"]).await;
    let key = env.key().await;
    let r = env
        .http
        .post(env.url("/v1/embeddings"))
        .bearer_auth(&key)
        .json(&json!({"model": "text-embedding-3-small", "input": "hello world"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(num(&r, "x-ratelimit-remaining-requests"), 1);
    // "hello world" is 2 tokens; embeddings have no output.
    assert_eq!(num(&r, "x-ratelimit-remaining-tokens"), 100_000 - 2);
    let _ = r.bytes().await;
    let messages = |stream: bool| {
        env.http
            .post(env.url("/v1/messages"))
            .header("x-api-key", &key)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({
                "model": "gpt-4o-mini", "max_tokens": 50, "stream": stream,
                "messages": [{"role": "user", "content": "hi"}]
            }))
            .send()
    };
    let r = messages(true).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(num(&r, "x-ratelimit-remaining-requests"), 0);
    assert!(header(&r, "content-type").starts_with("text/event-stream"));
    let _ = r.bytes().await;
    let r = messages(false).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(num(&r, "retry-after") >= 1);
    assert_eq!(num(&r, "x-ratelimit-limit-requests"), 2);
    let v: Value = r.json().await.unwrap();
    // The Anthropic error shape on the Messages route.
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
    let rows = env.rows("outcome=rejected").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["error_code"], "rate_limit_exceeded");
    assert_eq!(rows[0]["endpoint"], "/v1/messages");
}

#[test]
fn invalid_rules_fail_at_startup_naming_the_field() {
    let yaml = "rate_limits:\n  - {name: a, per: key, rpm: 10}\n  - {name: b, per: user, tpm: 0}\n";
    let err = tollgate_config::Config::from_yaml_str(
        yaml,
        &std::collections::HashMap::<String, String>::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("rate_limits[1].tpm: must be > 0"), "{err}");
}

/// Requests refused before routing (an unknown model, a body that does not parse) count on the
/// key's request rate too: a client cannot flood the gateway with failing requests for free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_refusals_count_on_the_request_rate() {
    let env = env_with(&["{name: per-key, per: key, rpm: 3}"]).await;
    let key = env.key().await;
    for _ in 0..2 {
        let r = env
            .chat(
                &key,
                json!({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}),
            )
            .await;
        expect_error(r, 404, "model_not_found").await;
    }
    let r = env.chat(&key, json!({"model": "gpt-4o-mini"})).await;
    expect_error(r, 400, "invalid_request").await;
    // The window is spent: the next unknown model is refused by the limit, and so is a valid
    // request.
    let r = env
        .chat(
            &key,
            json!({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    expect_limited(r, "per-key").await;
    let r = env
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    expect_limited(r, "per-key").await;
    let rows = env.wait_rows("", |r| r.len() >= 5).await;
    assert_eq!(rows.len(), 5);
}

/// `max_concurrent`: at most that many of a key's requests run at once — a stream holds its
/// place until it ends — and the rest get `429 rate_limit_exceeded` with `Retry-After: 1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_bounds_requests_in_flight_per_key() {
    let env = TestEnv::with(Opts {
        extra_yaml: "rate_limits:\n  - {name: conc, per: key, max_concurrent: 2}\n".into(),
        sim: tollgate_sim::SimConfig {
            ttft_ms: 600,
            ..Default::default()
        },
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    let body = |stream: bool| {
        json!({"model": "gpt-4o-mini", "stream": stream,
               "messages": [{"role": "user", "content": "hold a place"}]})
    };
    // Two long calls hold both places…
    let (a, b) = (env.chat(&key, body(false)), env.chat(&key, body(true)));
    let held = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        // …so a third is refused while they run.
        let r = env.chat(&key, body(false)).await;
        assert_eq!(num(&r, "retry-after"), 1);
        let e = expect_error(r, 429, "rate_limit_exceeded").await;
        assert!(e["message"].as_str().unwrap().contains("in flight"), "{e}");
    };
    let (a, b, ()) = tokio::join!(a, b, held);
    assert_eq!(a.status(), 200);
    assert_eq!(b.status(), 200);
    let _ = (a.bytes().await.unwrap(), b.bytes().await.unwrap());
    // Both ended: their places are free again.
    let r = env.chat(&key, body(false)).await;
    assert_eq!(r.status(), 200);
    let rows = env.wait_rows("", |r| r.len() >= 4).await;
    assert_eq!(rows.iter().filter(|r| r["status"] == 429).count(), 1);
}
