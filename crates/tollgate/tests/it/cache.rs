//! The response cache over real HTTP: hit, miss and bypass (header, row, upstream not
//! reached), tenant isolation (docs/contracts.md §2 invariant 7), SSE replay of stored answers and
//! filling from streams, TTL expiry, and the memory bound under concurrent load.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::harness::*;

const CACHE_HEADER: &str = "x-tollgate-cache";

/// Caching on for every model but `gpt-4o`; `extra` goes under `cache:`.
fn opts(extra: &str) -> Opts {
    Opts {
        extra_yaml: format!(
            "cache:\n  default: {{ttl_secs: 300}}\n  models:\n    gpt-4o: {{enabled: false}}\n{extra}"
        ),
        ..Opts::default()
    }
}

fn ask(prompt: &str) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "temperature": 0,
        "messages": [{"role": "user", "content": prompt}],
    })
}

fn streamed(mut body: Value, include_usage: bool) -> Value {
    body["stream"] = json!(true);
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

async fn send(
    env: &TestEnv,
    key: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> reqwest::Response {
    env.chat_with(key, headers, body).await
}

/// Sends a request; returns the cache header (empty when absent), request id and body.
async fn call(
    env: &TestEnv,
    key: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (String, String, Value) {
    let r = send(env, key, headers, body).await;
    assert_eq!(r.status(), 200);
    let cache = r
        .headers()
        .get(CACHE_HEADER)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let id = header(&r, "x-tollgate-request-id").to_string();
    let v: Value = r.json().await.unwrap();
    (cache, id, v)
}

fn upstream_calls(env: &TestEnv) -> u64 {
    env.sim.stats().chat_completions
}

fn money(row: &Value, field: &str) -> i64 {
    nanos(
        row[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} in {row}")),
    )
}

/// A `/metrics` sample.
async fn metric(env: &TestEnv, name: &str) -> u64 {
    let text = env.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn miss_then_hit_costs_zero_and_records_the_saving() {
    let env = TestEnv::with(opts("")).await;
    let key = env.key().await;
    let body = ask("what is a cache?");
    let (c1, id1, v1) = call(&env, &key, &[], &body).await;
    assert_eq!(c1, "miss");
    assert_eq!(upstream_calls(&env), 1);

    // Same request, fields in another order, transport fields differ: a hit.
    let reordered = json!({
        "messages": [{"content": "what is a cache?", "role": "user"}],
        "user": "someone-else",
        "temperature": 0,
        "model": "gpt-4o-mini",
    });
    let r = send(&env, &key, &[], &reordered).await;
    assert_eq!(header(&r, CACHE_HEADER), "hit");
    assert_eq!(header(&r, "x-tollgate-cost-usd"), "0");
    assert_eq!(header(&r, "x-tollgate-served-model"), "gpt-4o-mini");
    assert_eq!(header(&r, "x-tollgate-provider"), "sim");
    let id2 = header(&r, "x-tollgate-request-id").to_string();
    assert_ne!(id1, id2);
    let v2: Value = r.json().await.unwrap();
    assert_eq!(v1, v2, "the stored answer is replayed as it was");
    assert_eq!(upstream_calls(&env), 1, "a hit never reaches the provider");

    let miss = env.row(&id1).await;
    let hit = env.row(&id2).await;
    assert_eq!(miss["cache_status"], "miss");
    assert!(money(&miss, "effective_cost") > 0, "{miss}");
    assert_eq!(hit["cache_status"], "hit");
    assert_eq!(hit["outcome"], "ok");
    assert_eq!(hit["status"], 200);
    assert_eq!(hit["effective_cost"], "0");
    assert_eq!(hit["list_cost"], "0");
    assert_eq!(money(&hit, "saved_cost"), money(&miss, "effective_cost"));
    assert_eq!(hit["attempts"], 0);
    assert_eq!(hit["input_tokens"], 0);
    assert_eq!(hit["output_tokens"], 0);
    assert_eq!(hit["deployment"], "sim/gpt-4o-mini");
    assert_eq!(hit["tenant"], "acme");
    assert_eq!(metric(&env, "tollgate_cache_hits_total").await, 1);
    assert_eq!(metric(&env, "tollgate_cache_misses_total").await, 1);
    assert_eq!(metric(&env, "tollgate_cache_entries").await, 1);
}

#[tokio::test]
async fn sampling_requests_client_opt_outs_and_uncached_models_bypass() {
    let env = TestEnv::with(opts("")).await;
    let key = env.key().await;
    let fill = ask("deterministic");
    assert_eq!(call(&env, &key, &[], &fill).await.0, "miss");
    assert_eq!(call(&env, &key, &[], &fill).await.0, "hit");
    let before = upstream_calls(&env);

    let mut warm = fill.clone();
    warm["temperature"] = json!(0.7);
    let mut default_temp = fill.clone();
    default_temp.as_object_mut().unwrap().remove("temperature");
    let cases: [(&[(&str, &str)], &Value); 5] = [
        (&[], &warm),
        (&[], &default_temp),
        (&[("cache-control", "no-cache")], &fill),
        (&[("cache-control", "max-age=0, No-Store")], &fill),
        (&[("x-tollgate-cache", "bypass")], &fill),
    ];
    for (i, (headers, body)) in cases.iter().enumerate() {
        let (c, id, _) = call(&env, &key, headers, body).await;
        assert_eq!(c, "bypass", "case {i}");
        assert_eq!(
            upstream_calls(&env),
            before + i as u64 + 1,
            "case {i} goes upstream"
        );
        assert_eq!(env.row(&id).await["cache_status"], "bypass");
    }
    // A bypass neither reads nor writes: the sampled request is still not cached.
    assert_eq!(call(&env, &key, &[], &warm).await.0, "bypass");

    // Caching off for the model: no header, no status.
    let mut other = fill.clone();
    other["model"] = json!("gpt-4o");
    for _ in 0..2 {
        let (c, id, _) = call(&env, &key, &[], &other).await;
        assert_eq!(c, "");
        assert!(env.row(&id).await["cache_status"].is_null());
    }
}

#[tokio::test]
async fn tenants_never_read_each_others_answers() {
    let env = TestEnv::with(opts("")).await;
    let (acme, _) = env.create_key(json!({"name": "a", "tenant": "acme"})).await;
    let (globex, _) = env
        .create_key(json!({"name": "g", "tenant": "globex"}))
        .await;
    let (multi, _) = env
        .create_key(json!({"name": "m", "tenant": "acme", "allow_tenant_header": true}))
        .await;
    let (untenanted_1, _) = env.create_key(json!({"name": "u1"})).await;
    let (untenanted_2, _) = env.create_key(json!({"name": "u2"})).await;
    let body = ask("a secret about my company");

    assert_eq!(call(&env, &acme, &[], &body).await.0, "miss");
    assert_eq!(call(&env, &globex, &[], &body).await.0, "miss");
    assert_eq!(call(&env, &globex, &[], &body).await.0, "hit");
    // One key, two tenants by header: acme's entry is shared with acme, not with initech.
    assert_eq!(
        call(&env, &multi, &[("x-tollgate-tenant", "acme")], &body)
            .await
            .0,
        "hit"
    );
    assert_eq!(
        call(&env, &multi, &[("x-tollgate-tenant", "initech")], &body)
            .await
            .0,
        "miss"
    );
    // Without a tenant, answers are per key.
    assert_eq!(call(&env, &untenanted_1, &[], &body).await.0, "miss");
    assert_eq!(call(&env, &untenanted_2, &[], &body).await.0, "miss");
    assert_eq!(call(&env, &untenanted_2, &[], &body).await.0, "hit");
    assert_eq!(upstream_calls(&env), 5);
}

#[tokio::test]
async fn global_scope_shares_answers_across_tenants() {
    let env = TestEnv::with(Opts {
        extra_yaml: "cache:\n  models:\n    gpt-4o-mini: {scope: global}\n".into(),
        ..Opts::default()
    })
    .await;
    let (acme, _) = env.create_key(json!({"name": "a", "tenant": "acme"})).await;
    let (globex, _) = env
        .create_key(json!({"name": "g", "tenant": "globex"}))
        .await;
    let body = ask("public question");
    assert_eq!(call(&env, &acme, &[], &body).await.0, "miss");
    assert_eq!(call(&env, &globex, &[], &body).await.0, "hit");
}

#[tokio::test]
async fn stored_answers_replay_as_sse_and_streams_fill_the_cache() {
    let env = TestEnv::with(opts("")).await;
    let key = env.key().await;

    // Filled by a complete answer, replayed to a streaming client.
    let body = ask("stream me later");
    let (c, _, complete) = call(&env, &key, &[], &body).await;
    assert_eq!(c, "miss");
    let text = complete["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    for include_usage in [false, true] {
        let r = send(&env, &key, &[], &streamed(body.clone(), include_usage)).await;
        assert_eq!(header(&r, CACHE_HEADER), "hit");
        assert!(header(&r, "content-type").starts_with("text/event-stream"));
        let events = read_stream(r).await;
        assert!(events.last().unwrap().is_done());
        assert_eq!(streamed_text(&events), text);
        let chunks: Vec<Value> = events
            .iter()
            .filter(|e| !e.is_done())
            .map(Event::json)
            .collect();
        assert!(
            chunks
                .iter()
                .all(|c| c["object"] == "chat.completion.chunk")
        );
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let finish: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["finish_reason"].as_str().map(|_| c))
            .collect();
        assert_eq!(finish.len(), 1);
        let usage = chunks.iter().find(|c| !c["usage"].is_null());
        assert_eq!(
            usage.is_some(),
            include_usage,
            "usage chunk only when asked for"
        );
        if let Some(u) = usage {
            assert_eq!(u["usage"], complete["usage"]);
        }
    }
    assert_eq!(upstream_calls(&env), 1);

    // Filled by a stream (assembled from the relayed chunks), replayed both ways.
    let body = ask("stream me now");
    let r = send(&env, &key, &[], &streamed(body.clone(), false)).await;
    assert_eq!(header(&r, CACHE_HEADER), "miss");
    let first = read_stream(r).await;
    let text = streamed_text(&first);
    assert!(!text.is_empty());
    let (c, id, v) = call(&env, &key, &[], &body).await;
    assert_eq!(c, "hit");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], text.as_str());
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let r = send(&env, &key, &[], &streamed(body.clone(), true)).await;
    assert_eq!(header(&r, CACHE_HEADER), "hit");
    assert_eq!(streamed_text(&read_stream(r).await), text);
    assert_eq!(upstream_calls(&env), 2);
    let fill_cost: i64 = env
        .rows("")
        .await
        .iter()
        .filter(|r| r["stream"] == true && r["cache_status"] == "miss")
        .map(|r| money(r, "effective_cost"))
        .sum();
    assert!(fill_cost > 0);
    assert_eq!(money(&env.row(&id).await, "saved_cost"), fill_cost);
}

#[tokio::test]
async fn failed_and_cut_streams_are_not_stored() {
    let sim = tollgate_sim::SimConfig {
        cut_rate: 1.0,
        ..Default::default()
    };
    let env = TestEnv::with(Opts { sim, ..opts("") }).await;
    let key = env.key().await;
    let body = streamed(ask("this will be cut"), false);
    let r = send(&env, &key, &[], &body).await;
    assert_eq!(header(&r, CACHE_HEADER), "miss");
    let _ = read_stream(r).await;
    let r = send(&env, &key, &[], &body).await;
    assert_eq!(header(&r, CACHE_HEADER), "miss", "a cut stream was stored");
    let _ = read_stream(r).await;
    assert_eq!(metric(&env, "tollgate_cache_inserts_total").await, 0);
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    let env = TestEnv::with(Opts {
        extra_yaml: "cache:\n  models:\n    gpt-4o-mini: {ttl_secs: 1}\n".into(),
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    let body = ask("short-lived");
    assert_eq!(call(&env, &key, &[], &body).await.0, "miss");
    assert_eq!(call(&env, &key, &[], &body).await.0, "hit");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(call(&env, &key, &[], &body).await.0, "miss");
    assert_eq!(upstream_calls(&env), 2);
    assert_eq!(metric(&env, "tollgate_cache_expired_total").await, 1);
    assert_eq!(call(&env, &key, &[], &body).await.0, "hit");
}

#[tokio::test]
async fn the_memory_bound_holds_under_load() {
    // 64 KiB globally; the model asks for more and is scaled down to fit.
    const BOUND: u64 = 64 * 1024;
    let env = TestEnv::with(Opts {
        extra_yaml: format!(
            "cache:\n  max_bytes: {BOUND}\n  models:\n    gpt-4o-mini: {{max_bytes: 1048576}}\n"
        ),
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    assert_eq!(metric(&env, "tollgate_cache_max_bytes").await, BOUND);
    // 400 distinct answers of ~300 tokens (~2 KiB each, ~800 KiB in all), 25 at a time, with
    // /metrics sampled between waves.
    let mut max_seen = 0;
    for wave in 0..16 {
        let reqs = (0..25).map(|i| {
            let mut b = ask(&format!("question {wave}-{i}"));
            b["max_tokens"] = json!(300);
            if i % 2 == 0 {
                b = streamed(b, true);
            }
            let env = &env;
            let key = &key;
            async move {
                let r = send(env, key, &[], &b).await;
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await.unwrap();
            }
        });
        join_all(reqs).await;
        let bytes = metric(&env, "tollgate_cache_bytes").await;
        assert!(bytes <= BOUND, "cache holds {bytes} bytes, bound {BOUND}");
        max_seen = max_seen.max(bytes);
    }
    let inserts = metric(&env, "tollgate_cache_inserts_total").await;
    let entries = metric(&env, "tollgate_cache_entries").await;
    assert!(inserts >= 300, "answers were stored: {inserts}");
    assert!(
        entries > 5 && entries < inserts,
        "evicted to fit: {entries} of {inserts}"
    );
    assert!(max_seen > BOUND / 2, "the cache was filled: {max_seen}");
}

/// `/v1/messages` with `body`; returns the cache header, request id and response.
async fn messages(env: &TestEnv, key: &str, body: &Value) -> (String, String, reqwest::Response) {
    let r = env
        .http
        .post(env.url("/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .expect("messages request");
    assert_eq!(r.status(), 200);
    let cache = r
        .headers()
        .get(CACHE_HEADER)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let id = header(&r, "x-tollgate-request-id").to_string();
    (cache, id, r)
}

/// The text of Anthropic `content_block_delta` events.
fn messages_stream_text(body: &str) -> String {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v["type"] == "content_block_delta")
        .filter_map(|v| v["delta"]["text"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn messages_are_cached_translated_and_native_and_replayed_as_events() {
    let mut o = opts("");
    o.extra_providers =
        "  sim-anthropic:\n    kind: anthropic\n    base_url: {sim_root}\n".to_string();
    o.extra_models =
        "  claude: {deployments: [{provider: sim-anthropic, model: claude-sonnet-4-6}]}\n"
            .to_string();
    let env = TestEnv::with(o).await;
    let key = env.key().await;
    for model in ["gpt-4o-mini", "claude"] {
        let body = json!({"model": model, "max_tokens": 64, "temperature": 0,
                          "messages": [{"role": "user", "content": format!("cache me via {model}")}]});
        let (c, first_id, r) = messages(&env, &key, &body).await;
        assert_eq!(c, "miss", "{model}");
        let first: Value = r.json().await.unwrap();
        let upstream = env.sim.stats().requests;
        let (c, id, r) = messages(&env, &key, &body).await;
        assert_eq!(c, "hit", "{model}");
        assert_eq!(header(&r, "x-tollgate-cost-usd"), "0");
        let again: Value = r.json().await.unwrap();
        assert_eq!(again["type"], "message", "{again}");
        assert_eq!(
            again["content"][0]["text"], first["content"][0]["text"],
            "{model}"
        );
        // Streamed: the same answer as Messages events, still without an upstream call.
        let mut s = body.clone();
        s["stream"] = json!(true);
        let (c, _, r) = messages(&env, &key, &s).await;
        assert_eq!(c, "hit", "{model}");
        let text = r.text().await.unwrap();
        assert!(text.contains("event: message_stop"), "{text}");
        assert_eq!(
            messages_stream_text(&text),
            first["content"][0]["text"].as_str().unwrap(),
            "{model}"
        );
        assert_eq!(
            env.sim.stats().requests,
            upstream,
            "a hit reached the provider"
        );
        let hit = env.row(&id).await;
        let miss = env.row(&first_id).await;
        assert_eq!(hit["cache_status"], "hit");
        assert_eq!(hit["effective_cost"], "0");
        assert_eq!(hit["saved_cost"], miss["effective_cost"], "{model}");
    }
}
