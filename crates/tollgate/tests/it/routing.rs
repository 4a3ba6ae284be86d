//! Traffic operations over real HTTP (issue 5): routing strategies, retries, failover,
//! fallbacks across providers, circuit breakers, `Retry-After`, the retry budget, streams that
//! fail before and after their first byte, per-request pinning and prompt-cache stickiness.
//!
//! Each test runs two or three simulators — one per deployment — so faults can be injected on
//! one deployment only; the simulators' own request counters say where traffic went.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_sim::{SimConfig, SimHandle};

use crate::harness::*;

/// A second (or third) simulator: a deployment of its own.
async fn spawn_sim(cfg: SimConfig) -> SimHandle {
    tollgate_sim::spawn("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .expect("spawn sim")
}

fn openai_provider(name: &str, sim: &SimHandle) -> String {
    format!(
        "  {name}:\n    kind: openai\n    base_url: {}\n",
        sim.base_url()
    )
}

fn anthropic_provider(name: &str, sim: &SimHandle) -> String {
    format!(
        "  {name}:\n    kind: anthropic\n    base_url: http://{}\n",
        sim.addr
    )
}

fn failing(status: u16) -> SimConfig {
    SimConfig {
        fail_rate: 1.0,
        fail_status: status,
        ..SimConfig::default()
    }
}

/// Generation requests a simulator has seen.
fn calls(sim: &SimHandle) -> u64 {
    let s = sim.stats();
    s.chat_completions + s.messages
}

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]})
}

/// Model `duo` over two simulators — `first` (configured as given) and a healthy `live` —
/// plus `extra` lines under the model; returns the env, both simulators and a key allowed to
/// pin a deployment.
async fn duo(first: SimConfig, extra: &str) -> (TestEnv, SimHandle, SimHandle, String) {
    let first = spawn_sim(first).await;
    let live = spawn_sim(SimConfig::default()).await;
    let env = TestEnv::with(Opts {
        extra_providers: openai_provider("first", &first) + &openai_provider("live", &live),
        extra_models: format!(
            "  duo:\n    deployments: [{{provider: first, model: gpt-4o-mini}}, {{provider: live, model: gpt-4o-mini}}]\n{extra}"
        ),
        ..Opts::default()
    })
    .await;
    let (key, _) = env
        .create_key(json!({"name": "pin", "tenant": "acme", "allow_route_override": true}))
        .await;
    (env, first, live, key)
}

fn stream_ask(model: &str) -> Value {
    json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]})
}

async fn deployments(env: &TestEnv) -> Vec<Value> {
    env.admin_get("/admin/v1/deployments").await["data"]
        .as_array()
        .unwrap()
        .clone()
}

async fn health_of(env: &TestEnv, label: &str) -> Value {
    deployments(env)
        .await
        .into_iter()
        .find(|d| d["deployment"] == label)
        .unwrap_or_else(|| panic!("no deployment {label}"))["health"]
        .clone()
}

#[tokio::test]
async fn a_dead_deployment_is_routed_around_and_its_breaker_opens() {
    let dead = spawn_sim(failing(500)).await;
    let live = spawn_sim(SimConfig::default()).await;
    let env = TestEnv::with(Opts {
        extra_providers: openai_provider("dead", &dead) + &openai_provider("live", &live),
        extra_models: "  duo:\n    deployments: [{provider: dead, model: gpt-4o-mini}, {provider: live, model: gpt-4o-mini}]\n    breaker: {consecutive_failures: 3, cooldown_secs: 60}\n  other:\n    deployments: [{provider: dead, model: gpt-4o-mini}, {provider: live, model: gpt-4o-mini}]\n    breaker: {consecutive_failures: 3, cooldown_secs: 60}\n".into(),
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    for _ in 0..40 {
        let r = env.chat(&key, ask("duo")).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    // Three failures open the breaker; after that the dead deployment gets nothing.
    assert_eq!(
        calls(&dead),
        3,
        "the dead deployment was tried after its breaker opened"
    );
    assert_eq!(calls(&live), 40);
    let h = health_of(&env, "dead/gpt-4o-mini").await;
    assert_eq!(h["state"], "open", "{h}");
    assert_eq!(h["failures"], 3);
    assert_eq!(health_of(&env, "live/gpt-4o-mini").await["state"], "closed");

    let rows = env.wait_rows("model=duo", |r| r.len() == 40).await;
    assert!(rows.iter().all(|r| r["outcome"] == "ok"));
    let retried: Vec<&Value> = rows.iter().filter(|r| r["attempts"] == 2).collect();
    assert_eq!(retried.len(), 3, "each failure cost one extra attempt");
    for r in &retried {
        assert_eq!(r["attempted"], "dead/gpt-4o-mini,live/gpt-4o-mini");
        assert_eq!(r["deployment"], "live/gpt-4o-mini");
        assert_eq!(r["provider"], "live");
    }
    // Prometheus shows the open breaker and the retries.
    let m = env.metrics().await;
    assert!(
        m.contains(
            "tollgate_deployment_breaker_open{model=\"duo\",deployment=\"dead/gpt-4o-mini\"} 1"
        ),
        "{m}"
    );
    assert!(m.contains("tollgate_upstream_retries_total 3"), "{m}");

    // Another model on the same provider deployment shares its health: the open breaker
    // keeps it away from the dead deployment from its first request on.
    for _ in 0..5 {
        assert_eq!(env.chat(&key, ask("other")).await.status(), 200);
    }
    assert_eq!(calls(&dead), 3);
}

#[tokio::test]
async fn a_flaky_deployment_cycles_through_half_open_without_failing_clients() {
    let flaky = spawn_sim(SimConfig {
        fail_rate: 0.3,
        ..SimConfig::default()
    })
    .await;
    let live = spawn_sim(SimConfig::default()).await;
    let env = TestEnv::with(Opts {
        extra_providers: openai_provider("flaky", &flaky) + &openai_provider("live", &live),
        extra_models: "  duo:\n    deployments: [{provider: flaky, model: gpt-4o-mini, weight: 9}, {provider: live, model: gpt-4o-mini}]\n    breaker: {error_rate: 0.2, min_requests: 10, window_secs: 60, cooldown_secs: 1, consecutive_failures: 100}\n".into(),
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    let mut opened_at_least_once = false;
    let mut probed_after_open = false;
    let mut flaky_calls_when_open = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !(opened_at_least_once && probed_after_open) {
        let r = env.chat(&key, ask("duo")).await;
        assert_eq!(r.status(), 200, "a client saw a failure");
        let h = health_of(&env, "flaky/gpt-4o-mini").await;
        match h["state"].as_str().unwrap() {
            "open" => {
                opened_at_least_once = true;
                flaky_calls_when_open.get_or_insert(calls(&flaky));
                // Open means no traffic at all.
                assert!(h["retry_in_ms"].as_u64().unwrap() <= 1000, "{h}");
            }
            "half_open" | "closed" => {
                if let Some(n) = flaky_calls_when_open
                    && calls(&flaky) > n
                {
                    probed_after_open = true;
                }
            }
            other => panic!("unknown state {other}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        opened_at_least_once,
        "30% failures never opened a 20% breaker"
    );
    assert!(
        probed_after_open,
        "the breaker never let a probe through after cooling down"
    );
    let h = health_of(&env, "flaky/gpt-4o-mini").await;
    assert!(h["opened_total"].as_u64().unwrap() >= 1, "{h}");
}

#[tokio::test]
async fn retry_after_is_honoured_and_a_long_one_is_passed_to_the_client() {
    let env = TestEnv::with(Opts {
        sim: SimConfig {
            fail_first: 1,
            fail_status: 429,
            retry_after_secs: Some(1),
            ..SimConfig::default()
        },
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    let t0 = Instant::now();
    let r = env.chat(&key, ask("gpt-4o-mini")).await;
    assert_eq!(r.status(), 200);
    assert!(
        t0.elapsed() >= Duration::from_millis(950),
        "retried before the provider's Retry-After: {:?}",
        t0.elapsed()
    );
    let id = header(&r, "x-tollgate-request-id").to_string();
    let row = env.row(&id).await;
    assert_eq!(row["attempts"], 2, "{row}");

    // Longer than retry.max_retry_after_secs (5): not waited out, the client gets it.
    env.sim.set_config(SimConfig {
        fail_first: 1,
        fail_status: 429,
        retry_after_secs: Some(30),
        ..SimConfig::default()
    });
    let t0 = Instant::now();
    let r = env.chat(&key, ask("gpt-4o")).await;
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(header(&r, "retry-after"), "30");
    expect_error(r, 429, "upstream_rate_limited").await;

    // The deployment now cools down for those 30 s; with nowhere else to go the next request
    // is answered at once, without an upstream call, and told when to come back.
    let before = env.sim.stats().chat_completions;
    let r = env.chat(&key, ask("gpt-4o")).await;
    let wait: u64 = header(&r, "retry-after").parse().unwrap();
    assert!((25..=30).contains(&wait), "{wait}");
    let id = header(&r, "x-tollgate-request-id").to_string();
    expect_error(r, 503, "no_healthy_deployment").await;
    assert_eq!(env.sim.stats().chat_completions, before);
    let row = env.row(&id).await;
    assert_eq!(row["attempts"], 0, "{row}");
    assert_eq!(row["outcome"], "rejected", "{row}");
    assert_eq!(
        health_of(&env, "sim/gpt-4o").await["state"],
        "open",
        "a Retry-After opens the breaker for that long"
    );
}

#[tokio::test]
async fn transient_errors_are_retried_with_backoff_then_fail_with_every_attempt_recorded() {
    let env = TestEnv::with(Opts {
        sim: failing(503),
        extra_models: "  three:\n    deployments: [{provider: sim, model: gpt-4o-mini}]\n    retry: {max_attempts: 3, backoff_ms: 10, max_backoff_ms: 50}\n    breaker: {consecutive_failures: 50}\n".into(),
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    let r = env.chat(&key, ask("three")).await;
    let id = header(&r, "x-tollgate-request-id").to_string();
    expect_error(r, 503, "upstream_unavailable").await;
    assert_eq!(env.sim.stats().chat_completions, 3);
    let row = env.row(&id).await;
    assert_eq!(row["attempts"], 3);
    assert_eq!(row["outcome"], "failed");
    assert_eq!(
        row["attempted"],
        "sim/gpt-4o-mini,sim/gpt-4o-mini,sim/gpt-4o-mini"
    );
}

#[tokio::test]
async fn the_retry_budget_caps_retries_during_an_outage() {
    let env = TestEnv::with(Opts {
        sim: failing(500),
        extra_models: "  m:\n    deployments: [{provider: sim, model: gpt-4o-mini}]\n    retry: {max_attempts: 5, backoff_ms: 0, max_backoff_ms: 0}\n    breaker: {consecutive_failures: 1000, min_requests: 100000}\n".into(),
        extra_server: "  retry_budget: {ratio: 0.2, min_per_sec: 1}\n".into(),
        ..Opts::default()
    })
    .await;
    // ratio 0.2 plus a floor of 1/s over the 10-second window: 30 requests in well under a
    // second may retry at most 0.2 × 30 + 10 = 16 times, far below the 120 retries
    // max_attempts alone would allow.
    let key = env.key().await;
    let mut handles = Vec::new();
    for _ in 0..30 {
        let env_http = env.http.clone();
        let url = env.url("/v1/chat/completions");
        let key = key.clone();
        handles.push(tokio::spawn(async move {
            env_http
                .post(url)
                .bearer_auth(key)
                .json(&ask("m"))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for h in handles {
        assert_eq!(h.await.unwrap(), 502);
    }
    let upstream = env.sim.stats().chat_completions;
    assert!(
        (30..=30 + 16).contains(&upstream),
        "{upstream} upstream calls for 30 requests"
    );
}

#[tokio::test]
async fn a_stream_failing_before_its_first_byte_fails_over_transparently() {
    let broken = SimConfig {
        stream_error_rate: 1.0,
        stream_error_after_chunks: 0,
        ..SimConfig::default()
    };
    let (env, broken, _live, key) = duo(broken, "").await;
    // Pin the broken deployment first; the live one is the failover.
    let pin = [("x-tollgate-deployment", "first")];
    let r = env.chat_with(&key, &pin, &stream_ask("duo")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-tollgate-provider"), "live");
    let id = header(&r, "x-tollgate-request-id").to_string();
    let events = read_stream(r).await;
    assert!(events.last().unwrap().is_done(), "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e.data.is_empty() || e.is_done() || e.json().get("error").is_none()),
        "the client saw the failed attempt: {events:?}"
    );
    assert!(!streamed_text(&events).is_empty());
    assert_eq!(broken.stats().chat_completions, 1);
    let row = env.row(&id).await;
    assert_eq!(row["attempts"], 2);
    assert_eq!(row["attempted"], "first/gpt-4o-mini,live/gpt-4o-mini");
    assert_eq!(row["outcome"], "ok");
    // Billed once, for the attempt that answered.
    let (input, cached, output) = (
        row["input_tokens"].as_u64().unwrap(),
        row["cached_input_tokens"].as_u64().unwrap(),
        row["output_tokens"].as_u64().unwrap(),
    );
    assert!(output > 0, "{row}");
    assert_eq!(
        nanos(row["effective_cost"].as_str().unwrap()),
        gpt4o_mini_cost(input, cached, output),
        "{row}"
    );
}

#[tokio::test]
async fn a_stream_failing_after_its_first_byte_ends_with_an_error_and_is_billed() {
    let broken = SimConfig {
        stream_error_rate: 1.0,
        stream_error_after_chunks: 3,
        ..SimConfig::default()
    };
    let (env, _broken, live, key) = duo(broken, "").await;
    let pin = [("x-tollgate-deployment", "first/gpt-4o-mini")];
    let r = env.chat_with(&key, &pin, &stream_ask("duo")).await;
    assert_eq!(r.status(), 200);
    let id = header(&r, "x-tollgate-request-id").to_string();
    let events = read_stream(r).await;
    let last_json = events
        .iter()
        .rev()
        .find(|e| !e.is_done() && !e.data.is_empty())
        .unwrap()
        .json();
    assert!(last_json.get("error").is_some(), "{events:?}");
    assert!(
        !streamed_text(&events).is_empty(),
        "chunks before the failure were relayed"
    );
    // No retry after the first byte.
    assert_eq!(live.stats().chat_completions, 0);
    let row = env.row(&id).await;
    assert_eq!(row["attempts"], 1);
    assert_eq!(row["outcome"], "failed");
    assert!(
        row["output_tokens"].as_u64().unwrap() > 0,
        "relayed tokens are billed: {row}"
    );
    assert!(nanos(row["effective_cost"].as_str().unwrap()) > 0, "{row}");
}

#[tokio::test]
async fn fallback_from_openai_to_anthropic_keeps_the_clients_format() {
    let dead = spawn_sim(failing(500)).await;
    let claude = spawn_sim(SimConfig::default()).await;
    let env = TestEnv::with(Opts {
        extra_providers: openai_provider("dead", &dead) + &anthropic_provider("claude", &claude),
        extra_models: "  primary:\n    deployments: [{provider: dead, model: gpt-4o-mini}]\n    fallbacks: [backup]\n    retry: {max_attempts: 2}\n  backup:\n    deployments: [{provider: claude, model: claude-sonnet-4-6}]\n".into(),
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    // Non-streaming: an OpenAI chat.completion, served by Anthropic.
    let r = env.chat(&key, ask("primary")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-tollgate-provider"), "claude");
    let id = header(&r, "x-tollgate-request-id").to_string();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion", "{body}");
    assert!(body["choices"][0]["message"]["content"].is_string());
    let row = env.row(&id).await;
    assert_eq!(
        row["attempted"],
        "dead/gpt-4o-mini,claude/claude-sonnet-4-6"
    );
    assert_eq!(row["requested_model"], "primary");
    assert_eq!(row["served_model"], "claude-sonnet-4-6");
    // Priced at the deployment actually used (claude-sonnet-4-6: $3 / $15 per 1M).
    let input = row["input_tokens"].as_i64().unwrap();
    let output = row["output_tokens"].as_i64().unwrap();
    let cached = row["cached_input_tokens"].as_i64().unwrap();
    assert_eq!(
        nanos(row["effective_cost"].as_str().unwrap_or("0")),
        (input - cached) * 3000 + cached * 300 + output * 15000,
        "{row}"
    );

    // Streaming: OpenAI chunks, served by Anthropic.
    let r = env
        .chat(
            &key,
            json!({"model": "primary", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let events = read_stream(r).await;
    assert!(events.last().unwrap().is_done());
    assert_eq!(events[0].json()["object"], "chat.completion.chunk");
    assert!(!streamed_text(&events).is_empty());
}

#[tokio::test]
async fn context_window_errors_go_to_the_larger_model_and_content_policy_is_final() {
    let small = spawn_sim(SimConfig {
        context_window: Some(40),
        ..SimConfig::default()
    })
    .await;
    let env = TestEnv::with(Opts {
        extra_providers: openai_provider("small", &small),
        extra_models: "  short:\n    deployments: [{provider: small, model: gpt-4o-mini}]\n    context_window_fallback: gpt-4o\n".into(),
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    let long = "word ".repeat(200);
    let r = env
        .chat(
            &key,
            json!({"model": "short", "messages": [{"role": "user", "content": long}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let id = header(&r, "x-tollgate-request-id").to_string();
    let row = env.row(&id).await;
    assert_eq!(row["attempted"], "small/gpt-4o-mini,sim/gpt-4o");
    assert_eq!(
        small.stats().chat_completions,
        1,
        "the same model was retried"
    );

    // A content-policy refusal is final even with other deployments available.
    let filtered = spawn_sim(SimConfig {
        content_filter_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    let env = TestEnv::with(Opts {
        extra_providers: openai_provider("filtered", &filtered),
        extra_models: "  strict:\n    deployments: [{provider: filtered, model: gpt-4o-mini}, {provider: sim, model: gpt-4o-mini}]\n    strategy: cost\n    fallbacks: [gpt-4o]\n".into(),
        ..Opts::default()
    })
    .await;
    let (key, _) = env
        .create_key(json!({"name": "pin", "tenant": "acme", "allow_route_override": true}))
        .await;
    let r = env
        .chat_with(
            &key,
            &[("x-tollgate-deployment", "filtered")],
            &ask("strict"),
        )
        .await;
    let id = header(&r, "x-tollgate-request-id").to_string();
    assert_eq!(r.status(), 400);
    assert_eq!(
        env.sim.stats().chat_completions,
        0,
        "a content-policy error was retried"
    );
    assert_eq!(env.row(&id).await["attempts"], 1);
}

#[tokio::test]
async fn latency_routing_moves_traffic_to_the_faster_deployment() {
    let a = spawn_sim(SimConfig::default()).await;
    let b = spawn_sim(SimConfig::default()).await;
    let env = TestEnv::with(Opts {
        extra_providers: openai_provider("a", &a) + &openai_provider("b", &b),
        extra_models: "  fast:\n    strategy: latency\n    deployments: [{provider: a, model: gpt-4o-mini}, {provider: b, model: gpt-4o-mini}]\n".into(),
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    // Warm up both (each gets its first samples), then slow down whichever one the strategy
    // currently prefers: traffic must move to the other.
    for _ in 0..10 {
        assert_eq!(env.chat(&key, ask("fast")).await.status(), 200);
    }
    let (a0, b0) = (calls(&a), calls(&b));
    for _ in 0..10 {
        assert_eq!(env.chat(&key, ask("fast")).await.status(), 200);
    }
    let (preferred, other, slow_label) = if calls(&a) - a0 >= calls(&b) - b0 {
        (&a, &b, "a/gpt-4o-mini")
    } else {
        (&b, &a, "b/gpt-4o-mini")
    };
    preferred.set_config(SimConfig {
        ttft_ms: 150,
        ..SimConfig::default()
    });
    let (p0, o0) = (calls(preferred), calls(other));
    for _ in 0..60 {
        assert_eq!(env.chat(&key, ask("fast")).await.status(), 200);
    }
    let (dp, d_other) = (calls(preferred) - p0, calls(other) - o0);
    assert_eq!(dp + d_other, 60);
    // One request finds out the preferred one got slow; exploration sends it a few more; the
    // rest go to the other.
    assert!(d_other >= 48, "slowed got {dp}, the other {d_other}");
    assert!(dp >= 1, "the slowdown was never observed");
    let h = health_of(&env, slow_label).await;
    assert!(h["ewma_latency_ms"].as_f64().unwrap() > 20.0, "{h}");
}

#[tokio::test]
async fn least_inflight_and_cost_strategies_pick_as_documented() {
    let cheap = spawn_sim(SimConfig::default()).await;
    let dear = spawn_sim(SimConfig::default()).await;
    let env = TestEnv::with(Opts {
        extra_providers: openai_provider("cheap", &cheap) + &openai_provider("dear", &dear),
        extra_models: "  thrifty:\n    strategy: cost\n    deployments: [{provider: dear, model: gpt-4o}, {provider: cheap, model: gpt-4o-mini}]\n".into(),
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    for _ in 0..10 {
        let r = env.chat(&key, ask("thrifty")).await;
        assert_eq!(header(&r, "x-tollgate-provider"), "cheap");
    }
    assert_eq!(calls(&dear), 0);
}

#[tokio::test]
async fn pinning_needs_the_keys_permission() {
    let env = TestEnv::start().await;
    let key = env.key().await;
    let r = env
        .chat_with(
            &key,
            &[("x-tollgate-deployment", "sim")],
            &ask("gpt-4o-mini"),
        )
        .await;
    expect_error(r, 403, "route_override_not_allowed").await;
    let (key, _) = env
        .create_key(json!({"name": "pin", "allow_route_override": true}))
        .await;
    let r = env
        .chat_with(
            &key,
            &[("x-tollgate-deployment", "nowhere")],
            &ask("gpt-4o-mini"),
        )
        .await;
    expect_error(r, 400, "invalid_request").await;
}

#[tokio::test]
async fn conversations_stick_to_their_deployment_while_the_prompt_cache_is_warm() {
    let a = spawn_sim(SimConfig::default()).await;
    let b = spawn_sim(SimConfig::default()).await;
    let env = TestEnv::with(Opts {
        extra_providers: openai_provider("a", &a) + &openai_provider("b", &b),
        extra_models: "  chat:\n    deployments: [{provider: a, model: gpt-4o-mini}, {provider: b, model: gpt-4o-mini}]\n    sticky: {ttl_secs: 2}\n".into(),
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    let system = "You are a careful assistant. ".repeat(200);
    let mut by_conversation = Vec::new();
    for conv in 0..6 {
        let mut messages = vec![
            json!({"role": "system", "content": system}),
            json!({"role": "user", "content": format!("conversation {conv}")}),
        ];
        let mut served = Vec::new();
        for turn in 0..5 {
            let r = env
                .chat(&key, json!({"model": "chat", "messages": messages}))
                .await;
            assert_eq!(r.status(), 200);
            served.push(header(&r, "x-tollgate-provider").to_string());
            messages.push(json!({"role": "assistant", "content": "ok"}));
            messages.push(json!({"role": "user", "content": format!("turn {turn}")}));
        }
        assert!(
            served.iter().all(|p| p == &served[0]),
            "conversation {conv} moved: {served:?}"
        );
        by_conversation.push(served[0].clone());
    }
    let st = env.admin_get("/admin/v1/deployments").await;
    let model = st["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["model"] == "chat")
        .unwrap()["routing"]
        .clone();
    assert_eq!(model["sticky"]["hits"], 6 * 4, "{model}");
}

#[tokio::test]
async fn the_budget_reservation_follows_the_deployment_actually_used() {
    // A cheap deployment that fails and a dear one that answers: the request is reserved at the
    // cheap price, fails over, is re-reserved at the dear price, and settles exactly that.
    let cheap = spawn_sim(failing(503)).await;
    let dear = spawn_sim(SimConfig::default()).await;
    let env = TestEnv::with(Opts {
        extra_providers: openai_provider("cheap", &cheap) + &openai_provider("dear", &dear),
        extra_models: "  pair:\n    strategy: cost\n    deployments: [{provider: cheap, model: gpt-4o-mini}, {provider: dear, model: gpt-4o}]\n".into(),
        extra_yaml: "budgets:\n  - {name: acme-monthly, scope: {tenant: acme}, limit_usd: \"5\", window: month, mode: hard}\n".into(),
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    for stream in [false, true] {
        let r = env
            .chat(
                &key,
                json!({"model": "pair", "stream": stream, "max_tokens": 50,
                       "messages": [{"role": "user", "content": "hello there"}]}),
            )
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-tollgate-provider"), "dear");
        let id = header(&r, "x-tollgate-request-id").to_string();
        if stream {
            read_stream(r).await;
        } else {
            r.bytes().await.unwrap();
        }
        let row = env.row(&id).await;
        assert_eq!(row["attempted"], "cheap/gpt-4o-mini,dear/gpt-4o", "{row}");
        // gpt-4o: $2.50 input / $10 output per 1M tokens.
        let (input, output) = (
            row["input_tokens"].as_i64().unwrap(),
            row["output_tokens"].as_i64().unwrap(),
        );
        assert_eq!(
            nanos(row["effective_cost"].as_str().unwrap()),
            input * 2500 + output * 10000,
            "{row}"
        );
    }
    let b = env.admin_get("/admin/v1/budgets/acme-monthly").await;
    assert_eq!(
        b["reserved"], "0",
        "a reservation outlived its attempt: {b}"
    );
    let rows = env.rows("tenant=acme").await;
    let spent: i64 = rows
        .iter()
        .map(|r| nanos(r["effective_cost"].as_str().unwrap()))
        .sum();
    assert_eq!(nanos(b["spent"].as_str().unwrap()), spent, "{b}");
}
