//! The `prompt_cache` knob over real HTTP: a provider's automatic prefix cache, per simulator
//! instance and per model, with OpenAI's 1,024-token floor and 128-token increments.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tollgate_tokens::{Encoding, count_chat_prompt};

fn cache_on() -> SimConfig {
    SimConfig {
        prompt_cache: true,
        ..SimConfig::default()
    }
}

/// A conversation with a long system prompt (`system_chars` characters) and `turns` user
/// turns, each after the first preceded by an assistant answer.
fn conversation(model: &str, tag: &str, system_chars: usize, turns: usize) -> Value {
    let mut messages = vec![json!({"role": "system", "content": long_text(tag, system_chars)})];
    for t in 0..turns {
        if t > 0 {
            messages.push(json!({"role": "assistant", "content": format!("Answer {t}.")}));
        }
        messages.push(json!({"role": "user", "content": format!("Question {t} about {tag}?")}));
    }
    json!({"model": model, "messages": messages})
}

fn prompt_of(body: &Value) -> u64 {
    count_chat_prompt(Encoding::O200k, body)
}

async fn usage(h: &SimHandle, body: &Value) -> (u64, u64) {
    let r = post_json(&chat_url(h), body).await;
    assert_eq!(r.status, 200, "{}", r.json);
    let u = &r.json["usage"];
    (
        u["prompt_tokens"].as_u64().unwrap(),
        u["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap(),
    )
}

/// The cached tokens a provider reports for a reused prefix of `n` tokens.
fn rounded(n: u64) -> u64 {
    if n < 1024 { 0 } else { n / 128 * 128 }
}

#[tokio::test]
async fn follow_up_turn_reads_the_earlier_prompt_from_the_cache() {
    let h = sim(cache_on()).await;
    let turn1 = conversation("gpt-4o-mini", "follow-up", 10_000, 1);
    let p1 = prompt_of(&turn1);
    assert!(p1 > 1200, "the test needs a cacheable prompt, got {p1}");
    // A miss the first time.
    assert_eq!(usage(&h, &turn1).await, (p1, 0));

    let turn2 = conversation("gpt-4o-mini", "follow-up", 10_000, 2);
    let (p2, cached) = usage(&h, &turn2).await;
    assert_eq!(p2, prompt_of(&turn2));
    // The whole earlier prompt (its messages; the 3 reply-priming tokens are not part of a
    // message) rounded down to 128 tokens.
    assert_eq!(cached, rounded(p1 - 3));
    assert_eq!(
        cached,
        p1 / 128 * 128,
        "p1 = {p1} straddles a multiple of 128"
    );

    // Turn 3 reads all of turn 2's prompt; an exact repeat reads every message.
    let turn3 = conversation("gpt-4o-mini", "follow-up", 10_000, 3);
    assert_eq!(usage(&h, &turn3).await.1, rounded(p2 - 3));
    assert_eq!(usage(&h, &turn3).await.1, rounded(prompt_of(&turn3) - 3));

    // A conversation with another opening shares nothing.
    let other = conversation("gpt-4o-mini", "another", 10_000, 2);
    assert_eq!(usage(&h, &other).await.1, 0);

    let s = h.stats();
    assert_eq!(
        s.cached_prompt_tokens,
        cached + rounded(p2 - 3) + rounded(prompt_of(&turn3) - 3)
    );
}

#[tokio::test]
async fn streams_report_the_same_cached_tokens() {
    let h = sim(cache_on()).await;
    let body = conversation("gpt-4o", "stream", 10_000, 1);
    usage(&h, &body).await;
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let sse = stream(&chat_url(&h), &streamed).await;
    let last = sse.chunks().last().unwrap().clone();
    assert_eq!(
        last["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap(),
        rounded(prompt_of(&body) - 3)
    );
}

#[tokio::test]
async fn nothing_is_cached_under_1024_tokens() {
    let h = sim(cache_on()).await;
    let body = conversation("gpt-4o-mini", "short", 2500, 1);
    let p = prompt_of(&body);
    assert!(p < 1024, "the test needs a short prompt, got {p}");
    assert_eq!(usage(&h, &body).await, (p, 0));
    assert_eq!(usage(&h, &body).await, (p, 0));
}

#[tokio::test]
async fn models_do_not_share_a_cache() {
    let h = sim(cache_on()).await;
    let a = conversation("gpt-4o", "models", 10_000, 1);
    let mut b = a.clone();
    b["model"] = json!("gpt-4o-mini");
    assert_eq!(usage(&h, &a).await.1, 0);
    assert_eq!(usage(&h, &b).await.1, 0, "another model: a miss");
    let hit = rounded(prompt_of(&a) - 3);
    assert!(hit > 0);
    assert_eq!(usage(&h, &a).await.1, hit);
    assert_eq!(usage(&h, &b).await.1, hit);
}

#[tokio::test]
async fn prefixes_expire_after_the_ttl() {
    let h = sim(SimConfig {
        prompt_cache_ttl_secs: 1,
        ..cache_on()
    })
    .await;
    let body = conversation("gpt-4o-mini", "ttl", 10_000, 1);
    let hit = rounded(prompt_of(&body) - 3);
    assert_eq!(usage(&h, &body).await.1, 0);
    assert_eq!(usage(&h, &body).await.1, hit, "within the TTL");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(usage(&h, &body).await.1, 0, "after the TTL");
    // The miss remembered it again.
    assert_eq!(usage(&h, &body).await.1, hit);

    // A zero TTL caches nothing.
    h.set_config(SimConfig {
        prompt_cache_ttl_secs: 0,
        ..cache_on()
    });
    assert_eq!(usage(&h, &body).await.1, 0);
}

#[tokio::test]
async fn each_simulator_has_its_own_cache() {
    let a = sim(cache_on()).await;
    let b = sim(cache_on()).await;
    let body = conversation("gpt-4o-mini", "instances", 10_000, 1);
    let hit = rounded(prompt_of(&body) - 3);
    assert_eq!(usage(&a, &body).await.1, 0);
    assert_eq!(usage(&b, &body).await.1, 0, "another instance: a miss");
    assert_eq!(usage(&a, &body).await.1, hit);
    assert_eq!(usage(&b, &body).await.1, hit);
}

#[tokio::test]
async fn prompt_cache_replaces_the_fixed_knob_and_can_be_reset() {
    let h = sim(SimConfig {
        cached_prompt_tokens: 5,
        ..cache_on()
    })
    .await;
    let body = conversation("gpt-4o-mini", "knobs", 10_000, 1);
    let hit = rounded(prompt_of(&body) - 3);
    assert_eq!(usage(&h, &body).await.1, 0, "the fixed knob is ignored");
    assert_eq!(usage(&h, &body).await.1, hit);

    // Changing other knobs keeps the cache; turning it off falls back to the fixed knob.
    let r = post_json(
        &format!("http://{}/_sim/config", h.addr),
        &json!({"completion_tokens": 4}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(usage(&h, &body).await.1, hit);
    let r = post_json(
        &format!("http://{}/_sim/config", h.addr),
        &json!({"prompt_cache": false}),
    )
    .await;
    assert_eq!(r.json["prompt_cache"], false);
    assert_eq!(usage(&h, &body).await.1, 5);

    // The reset route empties it.
    post_json(
        &format!("http://{}/_sim/config", h.addr),
        &json!({"prompt_cache": true}),
    )
    .await;
    let r = post_json(
        &format!("http://{}/_sim/prompt_cache/reset", h.addr),
        &json!({}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.json["cleared"].as_u64().unwrap() >= 1);
    assert_eq!(usage(&h, &body).await.1, 0);
    h.clear_prompt_cache();
    assert_eq!(usage(&h, &body).await.1, 0);
}
