//! Prompt-cache stickiness measured end to end: two deployments whose simulated providers keep
//! their own prompt cache (`prompt_cache` knob), the same conversations on a sticky and a
//! non-sticky model, and the ledger rows' `cached_input_tokens` and cost.

use serde_json::{Value, json};
use tollgate_sim::{SimConfig, SimHandle};

use crate::harness::*;

const CONVERSATIONS: usize = 6;
const TURNS: usize = 4;

async fn cache_sim() -> SimHandle {
    tollgate_sim::spawn(
        "127.0.0.1:0".parse().unwrap(),
        SimConfig {
            prompt_cache: true,
            ..SimConfig::default()
        },
    )
    .await
    .expect("spawn sim")
}

fn provider(name: &str, sim: &SimHandle) -> String {
    format!(
        "  {name}:\n    kind: openai\n    base_url: {}\n",
        sim.base_url()
    )
}

/// Runs every conversation (turns in order) on `model`; returns each turn's ledger
/// `(cached_input_tokens, input_tokens)` by conversation, from the response's usage.
async fn converse(env: &TestEnv, key: &str, model: &str) -> Vec<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for c in 0..CONVERSATIONS {
        let mut messages = vec![
            json!({"role": "system", "content": format!("Account {c}. ") + &"You are a careful billing assistant. ".repeat(170)}),
            json!({"role": "user", "content": format!("conversation {c}: why is my bill higher?")}),
        ];
        let mut turns = Vec::new();
        for turn in 0..TURNS {
            let r = env
                .chat(key, json!({"model": model, "messages": messages}))
                .await;
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            turns.push((
                v["usage"]["prompt_tokens_details"]["cached_tokens"]
                    .as_u64()
                    .unwrap_or(0),
                v["usage"]["prompt_tokens"].as_u64().unwrap(),
            ));
            messages.push(
                json!({"role": "assistant", "content": v["choices"][0]["message"]["content"]}),
            );
            messages.push(
                json!({"role": "user", "content": format!("turn {turn}: and the line items?")}),
            );
        }
        out.push(turns);
    }
    out
}

#[tokio::test]
async fn sticky_conversations_read_the_provider_cache_and_cost_less() {
    let a = cache_sim().await;
    let b = cache_sim().await;
    let deployments = "[{provider: a, model: gpt-4o-mini}, {provider: b, model: gpt-4o-mini}]";
    let env = TestEnv::with(Opts {
        extra_providers: provider("a", &a) + &provider("b", &b),
        extra_models: format!(
            "  chat:\n    deployments: {deployments}\n  chat-unsticky:\n    deployments: {deployments}\n    sticky: {{enabled: false}}\n"
        ),
        ..Opts::default()
    })
    .await;
    let key = env.key().await;

    let sticky = converse(&env, &key, "chat").await;
    a.clear_prompt_cache();
    b.clear_prompt_cache();
    let unsticky = converse(&env, &key, "chat-unsticky").await;

    // With stickiness every follow-up reads the whole previous prompt (its messages, in
    // 128-token steps) from the cache; the first turn of each conversation misses.
    for turns in &sticky {
        assert_eq!(turns[0].0, 0, "{turns:?}");
        for w in turns.windows(2) {
            let (prev_input, cached) = (w[0].1, w[1].0);
            assert!(cached >= 1024, "{turns:?}");
            assert_eq!(cached, (prev_input - 3) / 128 * 128, "{turns:?}");
        }
    }

    // The ledger agrees with what the clients saw, and prices the cache reads.
    let rows = |m: &'static str| {
        let env = &env;
        async move {
            let rows = env.rows(&format!("model={m}")).await;
            assert_eq!(rows.len(), CONVERSATIONS * TURNS);
            let cached: u64 = rows
                .iter()
                .map(|r| r["cached_input_tokens"].as_u64().unwrap())
                .sum();
            let input: u64 = rows
                .iter()
                .map(|r| r["input_tokens"].as_u64().unwrap())
                .sum();
            let cost: i64 = rows
                .iter()
                .map(|r| nanos(r["effective_cost"].as_str().unwrap()))
                .sum();
            let output: u64 = rows
                .iter()
                .map(|r| r["output_tokens"].as_u64().unwrap())
                .sum();
            (cached, input, output, cost)
        }
    };
    let (cached_s, input_s, output_s, cost_s) = rows("chat").await;
    let (cached_u, input_u, output_u, cost_u) = rows("chat-unsticky").await;
    let seen = |runs: &[Vec<(u64, u64)>]| -> u64 { runs.iter().flatten().map(|t| t.0).sum() };
    assert_eq!(cached_s, seen(&sticky));
    assert_eq!(cached_u, seen(&unsticky));
    // Same conversations, same tokens; only where they were served differs.
    assert_eq!((input_s, output_s), (input_u, output_u));
    // A non-sticky conversation stays on one deployment throughout with probability 1/8
    // here; all six doing so (and tying) is a 1-in-262,144 event.
    assert!(cached_s > cached_u, "sticky {cached_s} vs {cached_u}");
    assert!(cost_s < cost_u, "sticky {cost_s} vs {cost_u}");
    // Each row is priced at gpt-4o-mini's cached-input rate for its cached tokens.
    assert_eq!(
        cost_s,
        rows_cost(&env.rows("model=chat").await),
        "ledger cost = Σ per-row price"
    );

    let st = env.admin_get("/admin/v1/deployments").await;
    let sticky_hits = |m: &str| {
        st["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["model"] == m)
            .unwrap()["routing"]["sticky"]["hits"]
            .clone()
    };
    assert_eq!(sticky_hits("chat"), (CONVERSATIONS * (TURNS - 1)) as u64);
    assert_eq!(sticky_hits("chat-unsticky"), 0);
}

fn rows_cost(rows: &[Value]) -> i64 {
    rows.iter()
        .map(|r| {
            gpt4o_mini_cost(
                r["input_tokens"].as_u64().unwrap(),
                r["cached_input_tokens"].as_u64().unwrap(),
                r["output_tokens"].as_u64().unwrap(),
            )
        })
        .sum()
}
