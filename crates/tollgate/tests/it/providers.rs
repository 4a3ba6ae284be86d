//! Every provider kind end to end over real HTTP: OpenAI, Azure, Anthropic, Gemini and Bedrock
//! deployments on the simulator, reached through `/v1/chat/completions` and `/v1/messages`.
//!
//! - Ledger rows and costs are exact for each provider's usage shape, cached tokens included.
//!   Expected costs are computed here by hand from the builtin price table (USD per 1M tokens ×
//!   1000 = nano-USD per token), never through `tollgate_pricing`, and the token counts they
//!   use are the simulator's own (`SimStats`), so a wrong conversion of Anthropic's or
//!   Bedrock's exclusive cache counts cannot pass by being self-consistent.
//! - `/v1/messages` is metered exactly like chat, natively (Anthropic deployment) and
//!   translated (OpenAI deployment).
//! - Upstream failures reach the client in its own ingress format with the documented status.
//! - No provider credential ever reaches a client.

use std::sync::Mutex;

use futures_util::StreamExt;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tollgate_sim::{SimConfig, SimStats};

use crate::harness::*;

/// AWS credentials of the SigV4 Bedrock provider: secrets like the API keys.
const AWS_KEY_ID: &str = "AKIAPROVIDERSIT7Q2XZ";
const AWS_SECRET: &str = "aws-secret-providers-it-4b9e1d7c0a35f268";

/// The attribution header sent on `/v1/messages`.
const FEATURE: &str = "summaries";

/// Prompt tokens the simulator reports as read from its cache.
const CACHED: u64 = 8;
/// The simulator's answer length (its default `completion_tokens`).
const ANSWER: u64 = 16;

/// Prices in nano-USD per token (USD per 1M tokens × 1000), copied by hand.
#[derive(Debug, Clone, Copy)]
struct Price {
    input: u64,
    cached: u64,
    output: u64,
}

/// One provider kind on the simulator: a logical model served by a provider of that kind.
struct Kind {
    /// The logical model clients send.
    model: &'static str,
    /// `providers.<name>`.
    provider: &'static str,
    /// The upstream model.
    upstream: &'static str,
    price: Price,
    /// Generation calls the simulator saw on this kind's wire format.
    calls: fn(&SimStats) -> u64,
}

// gpt-4o-mini: input $0.15, cached $0.075, output $0.60 per 1M.
const GPT4O_MINI: Price = Price {
    input: 150,
    cached: 75,
    output: 600,
};

const OPENAI: Kind = Kind {
    model: "via-openai",
    provider: "oa",
    upstream: "gpt-4o-mini",
    price: GPT4O_MINI,
    calls: |s| s.chat_completions,
};
const AZURE: Kind = Kind {
    model: "via-azure",
    provider: "az",
    upstream: "gpt-4o-mini",
    price: GPT4O_MINI,
    calls: |s| s.chat_completions,
};
// claude-sonnet-4-6: input $3, cached $0.30, output $15 per 1M.
const ANTHROPIC: Kind = Kind {
    model: "via-anthropic",
    provider: "an",
    upstream: "claude-sonnet-4-6",
    price: Price {
        input: 3000,
        cached: 300,
        output: 15000,
    },
    calls: |s| s.messages,
};
// gemini-2.5-flash: input $0.30, cached $0.03, output $2.50 per 1M.
const GEMINI: Kind = Kind {
    model: "via-gemini",
    provider: "ge",
    upstream: "gemini-2.5-flash",
    price: Price {
        input: 300,
        cached: 30,
        output: 2500,
    },
    calls: |s| s.generate_content + s.stream_generate_content,
};
// No builtin price for a Bedrock model id: the config's override (input $2, cached $0.20,
// cache write $2.50, output $10 per 1M), deliberately unlike any builtin Claude price.
const BEDROCK: Kind = Kind {
    model: "via-bedrock",
    provider: "br",
    upstream: "anthropic.claude-sonnet-4-5-20250929-v1:0",
    price: Price {
        input: 2000,
        cached: 200,
        output: 10000,
    },
    calls: |s| s.converse + s.converse_stream,
};
/// Bedrock with a Bedrock API key (Bearer) instead of SigV4: the simulator checks the key.
const BEDROCK_KEY: Kind = Kind {
    model: "via-bedrock-key",
    provider: "brk",
    upstream: "anthropic.claude-sonnet-4-5-20250929-v1:0",
    price: Price {
        input: 2000,
        cached: 200,
        output: 10000,
    },
    calls: |s| s.converse + s.converse_stream,
};

const KINDS: [&Kind; 5] = [&OPENAI, &AZURE, &ANTHROPIC, &GEMINI, &BEDROCK];

fn cost(p: Price, input: u64, cached: u64, output: u64) -> i64 {
    ((input - cached) * p.input + cached * p.cached + output * p.output) as i64
}

fn providers_yaml(first_byte_ms: Option<u64>) -> String {
    let timeouts = first_byte_ms
        .map(|ms| format!("    timeouts: {{first_byte_ms: {ms}}}\n"))
        .unwrap_or_default();
    let mut y = String::new();
    for (name, body) in [
        (
            "oa",
            "kind: openai\n    base_url: {sim_root}/v1\n    api_key: ${SIM_API_KEY}\n",
        ),
        (
            "az",
            "kind: azure\n    base_url: {sim_root}\n    api_version: 2024-10-21\n    api_key: ${SIM_API_KEY}\n",
        ),
        (
            "an",
            "kind: anthropic\n    base_url: {sim_root}\n    api_key: ${SIM_API_KEY}\n",
        ),
        (
            "ge",
            "kind: gemini\n    base_url: {sim_root}\n    api_key: ${SIM_API_KEY}\n",
        ),
        (
            "br",
            "kind: bedrock\n    base_url: {sim_root}\n    region: us-east-1\n    aws_access_key_id: ${AWS_KEY_ID}\n    aws_secret_access_key: ${AWS_SECRET}\n",
        ),
        (
            "brk",
            "kind: bedrock\n    base_url: {sim_root}\n    region: eu-west-1\n    api_key: ${SIM_API_KEY}\n",
        ),
    ] {
        y.push_str(&format!("  {name}:\n    {body}{timeouts}"));
    }
    y
}

fn models_yaml() -> String {
    let mut y = String::new();
    for k in [&OPENAI, &AZURE, &ANTHROPIC, &GEMINI] {
        y.push_str(&format!(
            "  {}: {{deployments: [{{provider: {}, model: {}}}], {SINGLE_ATTEMPT}}}\n",
            k.model, k.provider, k.upstream
        ));
    }
    for k in [&BEDROCK, &BEDROCK_KEY] {
        y.push_str(&format!(
            "  {}:\n    deployments: [{{provider: {}, model: \"{}\"}}]\n    price: {{input: 2, cached_input: 0.2, cache_write: 2.5, output: 10}}\n    {}\n",
            k.model,
            k.provider,
            k.upstream,
            "retry: {max_attempts: 1}\n    breaker: {enabled: false}"
        ));
    }
    y
}

/// What the client received, whole.
struct Got {
    status: u16,
    headers: HeaderMap,
    body: String,
    /// The body ended with a transport error rather than cleanly.
    broken: bool,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn id(&self) -> String {
        self.header("x-tollgate-request-id")
            .expect("request id header")
            .to_string()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }

    /// OpenAI SSE: the `data:` payloads, in order.
    fn data_events(&self) -> Vec<String> {
        assert_eq!(self.status, 200, "{}", self.body);
        assert_eq!(self.header("content-type"), Some("text/event-stream"));
        assert!(
            !self.broken,
            "the stream did not end cleanly: {}",
            self.body
        );
        assert!(self.body.ends_with("\n\n"), "{:?}", self.body);
        self.body
            .split("\n\n")
            .filter(|f| !f.trim().is_empty())
            .map(|f| {
                let data: Vec<&str> = f.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                assert_eq!(data.len(), 1, "one data line per frame: {f:?}");
                data[0].to_string()
            })
            .collect()
    }

    /// Anthropic SSE: `(event, data)` pairs, in order; each event's name equals its data's
    /// `type`, as the Messages API sends them.
    fn named_events(&self) -> Vec<(String, Value)> {
        assert_eq!(self.status, 200, "{}", self.body);
        assert_eq!(self.header("content-type"), Some("text/event-stream"));
        assert!(
            !self.broken,
            "the stream did not end cleanly: {}",
            self.body
        );
        assert!(self.body.ends_with("\n\n"), "{:?}", self.body);
        self.body
            .split("\n\n")
            .filter(|f| !f.trim().is_empty())
            .map(|f| {
                let mut lines = f.lines();
                let name = lines
                    .next()
                    .and_then(|l| l.strip_prefix("event: "))
                    .unwrap_or_else(|| panic!("no event line: {f:?}"));
                let data = lines
                    .next()
                    .and_then(|l| l.strip_prefix("data: "))
                    .unwrap_or_else(|| panic!("no data line: {f:?}"));
                assert!(lines.next().is_none(), "{f:?}");
                let v: Value = serde_json::from_str(data).unwrap();
                assert_eq!(v["type"], name, "{f:?}");
                (name.to_string(), v)
            })
            .collect()
    }
}

/// The simulator's own counts for what happened between two snapshots.
#[derive(Debug)]
struct SimDelta {
    prompt: u64,
    cached: u64,
    completion: u64,
    calls: u64,
}

fn delta(kind_calls: fn(&SimStats) -> u64, before: &SimStats, after: &SimStats) -> SimDelta {
    assert_eq!(after.client_errors, before.client_errors, "{after:?}");
    SimDelta {
        prompt: after.prompt_tokens - before.prompt_tokens,
        cached: after.cached_prompt_tokens - before.cached_prompt_tokens,
        completion: after.completion_tokens - before.completion_tokens,
        calls: kind_calls(after) - kind_calls(before),
    }
}

/// A gateway in front of every provider kind, with a key, recording everything the client
/// receives so that [`Ctx::assert_no_secrets`] can check it.
struct Ctx {
    env: TestEnv,
    key: String,
    seen: Mutex<Vec<String>>,
}

impl Ctx {
    async fn new(sim: SimConfig, first_byte_ms: Option<u64>) -> Ctx {
        let env = TestEnv::with(Opts {
            sim,
            // The simulator requires SIM_KEY on every wire format, so a 200 proves each
            // provider really sent its credential.
            provider_auth: true,
            extra_providers: providers_yaml(first_byte_ms),
            extra_models: models_yaml(),
            env: vec![
                ("AWS_KEY_ID".into(), AWS_KEY_ID.into()),
                ("AWS_SECRET".into(), AWS_SECRET.into()),
            ],
            ..Opts::default()
        })
        .await;
        let key = env.key().await;
        Ctx {
            env,
            key,
            seen: Mutex::new(Vec::new()),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Got {
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let mut body = Vec::new();
        let mut broken = false;
        let mut stream = r.bytes_stream();
        while let Some(b) = stream.next().await {
            match b {
                Ok(b) => body.extend_from_slice(&b),
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        let body = String::from_utf8(body).expect("utf-8 body");
        let mut seen = self.seen.lock().unwrap();
        for (k, v) in &headers {
            seen.push(format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())));
        }
        seen.push(body.clone());
        Got {
            status,
            headers,
            body,
            broken,
        }
    }

    async fn chat(&self, body: Value) -> Got {
        self.send(
            self.env
                .http
                .post(self.env.url("/v1/chat/completions"))
                .bearer_auth(&self.key)
                .json(&body),
        )
        .await
    }

    /// `POST /v1/messages` as the Anthropic SDK sends it, with a feature header.
    async fn messages(&self, body: Value) -> Got {
        self.send(
            self.env
                .http
                .post(self.env.url("/v1/messages"))
                .header("x-api-key", &self.key)
                .header("anthropic-version", "2023-06-01")
                .header("x-tollgate-feature", FEATURE)
                .json(&body),
        )
        .await
    }

    /// No provider credential in anything a client received, nor in the ledger.
    async fn assert_no_secrets(&self) {
        let seen = self.seen.lock().unwrap().clone();
        assert!(!seen.is_empty());
        let rows = serde_json::to_string(&self.env.rows("").await).unwrap();
        for secret in [SIM_KEY, AWS_SECRET, AWS_KEY_ID] {
            let tail = &secret[secret.len() - 6..];
            for s in seen.iter().chain([&rows]) {
                assert!(!s.contains(secret), "credential leaked: {s}");
                assert!(!s.contains(tail), "credential tail leaked: {s}");
            }
        }
    }
}

fn chat_body(model: &str, stream: bool) -> Value {
    let mut b = json!({"model": model,
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Explain prompt caching in one short paragraph"}]});
    if stream {
        b["stream"] = json!(true);
        b["stream_options"] = json!({"include_usage": true});
    }
    b
}

fn messages_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 64, "stream": stream, "system": "Be brief.",
           "messages": [{"role": "user", "content": "Explain prompt caching in one short paragraph"}]})
}

/// A served request's row: provider usage equal to the simulator's counts, exact cost.
fn assert_billed(row: &Value, kind: &Kind, endpoint: &str, stream: bool, sim: &SimDelta) -> i64 {
    assert_eq!(sim.calls, 1, "{sim:?}");
    assert_eq!(sim.cached, CACHED, "{sim:?}");
    assert!(sim.prompt > CACHED, "{sim:?}");
    assert_eq!(sim.completion, ANSWER, "{sim:?}");
    assert_eq!(row["outcome"], "ok", "{row}");
    assert_eq!(row["status"], 200, "{row}");
    assert_eq!(row["endpoint"], endpoint, "{row}");
    assert_eq!(row["stream"], stream, "{row}");
    assert_eq!(row["requested_model"], kind.model, "{row}");
    assert_eq!(row["served_model"], kind.upstream, "{row}");
    assert_eq!(row["provider"], kind.provider, "{row}");
    assert_eq!(row["usage_source"], "provider", "{row}");
    assert_eq!(row["input_tokens"], sim.prompt, "cached included: {row}");
    assert_eq!(row["cached_input_tokens"], CACHED, "{row}");
    assert_eq!(row["cache_write_input_tokens"], 0, "{row}");
    assert_eq!(row["output_tokens"], ANSWER, "{row}");
    assert_eq!(row["unpriced"], false, "{row}");
    let expected = cost(kind.price, sim.prompt, CACHED, ANSWER);
    assert_eq!(
        nanos(row["effective_cost"].as_str().unwrap()),
        expected,
        "{row}"
    );
    assert_eq!(nanos(row["list_cost"].as_str().unwrap()), expected, "{row}");
    expected
}

// ---- 1. exact rows and costs per provider usage shape ----------------------------------------

async fn chat_usage_is_exact(kind: &Kind) {
    let ctx = Ctx::new(
        SimConfig {
            cached_prompt_tokens: CACHED as u32,
            ..SimConfig::default()
        },
        None,
    )
    .await;

    // Not streamed.
    let before = ctx.env.sim.stats();
    let got = ctx.chat(chat_body(kind.model, false)).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let sim = delta(kind.calls, &before, &ctx.env.sim.stats());
    assert_eq!(got.header("x-tollgate-provider"), Some(kind.provider));
    assert_eq!(got.header("x-tollgate-served-model"), Some(kind.upstream));
    let v = got.json();
    assert_eq!(v["object"], "chat.completion", "{v}");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(text.split_whitespace().count() as u64, ANSWER, "{v}");
    // The client sees canonical (OpenAI) usage whatever the provider's shape.
    assert_eq!(v["usage"]["prompt_tokens"], sim.prompt, "{v}");
    assert_eq!(
        v["usage"]["prompt_tokens_details"]["cached_tokens"], CACHED,
        "{v}"
    );
    assert_eq!(v["usage"]["completion_tokens"], ANSWER, "{v}");
    let row = ctx.env.row(&got.id()).await;
    let expected = assert_billed(&row, kind, "/v1/chat/completions", false, &sim);
    assert_eq!(
        nanos(got.header("x-tollgate-cost-usd").unwrap()),
        expected,
        "cost header"
    );

    // Streamed, with the usage chunk requested.
    let before = ctx.env.sim.stats();
    let got = ctx.chat(chat_body(kind.model, true)).await;
    let events = got.data_events();
    let sim = delta(kind.calls, &before, &ctx.env.sim.stats());
    let (done, chunks) = events.split_last().unwrap();
    assert_eq!(done, "[DONE]");
    let chunks: Vec<Value> = chunks
        .iter()
        .map(|c| serde_json::from_str(c).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text.split_whitespace().count() as u64, ANSWER, "{text}");
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], sim.prompt, "{chunks:?}");
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], CACHED);
    assert_eq!(usage["completion_tokens"], ANSWER);
    let row = ctx.env.row(&got.id()).await;
    assert_billed(&row, kind, "/v1/chat/completions", true, &sim);

    assert_eq!(ctx.env.rows("").await.len(), 2);
    ctx.assert_no_secrets().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_usage_and_cost_are_exact() {
    chat_usage_is_exact(&OPENAI).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_usage_and_cost_are_exact() {
    chat_usage_is_exact(&AZURE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_usage_and_cost_are_exact() {
    chat_usage_is_exact(&ANTHROPIC).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_usage_and_cost_are_exact() {
    chat_usage_is_exact(&GEMINI).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrock_usage_and_cost_are_exact() {
    chat_usage_is_exact(&BEDROCK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrock_api_key_usage_and_cost_are_exact() {
    chat_usage_is_exact(&BEDROCK_KEY).await;
}

// ---- 2. /v1/messages is metered like chat -----------------------------------------------------

/// Anthropic-semantics usage in a Messages answer (`input_tokens` excludes cache reads) agrees
/// with the simulator's counts.
fn assert_messages_usage(usage: &Value, sim: &SimDelta) {
    assert_eq!(usage["input_tokens"], sim.prompt - CACHED, "{usage}");
    assert_eq!(usage["cache_read_input_tokens"], CACHED, "{usage}");
    assert_eq!(usage["output_tokens"], ANSWER, "{usage}");
}

fn assert_messages_row(row: &Value, kind: &Kind, stream: bool, sim: &SimDelta) -> i64 {
    let c = assert_billed(row, kind, "/v1/messages", stream, sim);
    assert_eq!(row["feature"], FEATURE, "{row}");
    assert_eq!(row["tenant"], "acme", "{row}");
    assert_eq!(row["team"], "core", "{row}");
    c
}

async fn messages_are_metered_like_chat(kind: &Kind) {
    let ctx = Ctx::new(
        SimConfig {
            cached_prompt_tokens: CACHED as u32,
            ..SimConfig::default()
        },
        None,
    )
    .await;

    let before = ctx.env.sim.stats();
    let got = ctx.messages(messages_body(kind.model, false)).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let sim = delta(kind.calls, &before, &ctx.env.sim.stats());
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.header("x-tollgate-provider"), Some(kind.provider));
    let m = got.json();
    assert_eq!(m["type"], "message", "{m}");
    assert_eq!(m["role"], "assistant", "{m}");
    assert!(m["id"].as_str().unwrap().starts_with("msg_"), "{m}");
    assert_eq!(m["stop_reason"], "end_turn", "{m}");
    assert_eq!(m["content"].as_array().unwrap().len(), 1, "{m}");
    assert_eq!(m["content"][0]["type"], "text", "{m}");
    let text = m["content"][0]["text"].as_str().unwrap();
    assert_eq!(text.split_whitespace().count() as u64, ANSWER, "{m}");
    assert_messages_usage(&m["usage"], &sim);
    let row = ctx.env.row(&got.id()).await;
    let expected = assert_messages_row(&row, kind, false, &sim);
    assert_eq!(nanos(got.header("x-tollgate-cost-usd").unwrap()), expected);

    let before = ctx.env.sim.stats();
    let got = ctx.messages(messages_body(kind.model, true)).await;
    let events = got.named_events();
    let sim = delta(kind.calls, &before, &ctx.env.sim.stats());
    let names: Vec<&str> = events
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| *n != "ping")
        .collect();
    let deltas = names.len() - 5;
    assert!(deltas > 0, "{names:?}");
    let mut expected_names = vec!["message_start", "content_block_start"];
    expected_names.extend(std::iter::repeat_n("content_block_delta", deltas));
    expected_names.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected_names);
    let start = &events[0].1["message"];
    assert_eq!(start["type"], "message", "{start}");
    assert_eq!(start["role"], "assistant", "{start}");
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, v)| {
            assert_eq!(v["delta"]["type"], "text_delta", "{v}");
            v["delta"]["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(text.split_whitespace().count() as u64, ANSWER, "{text}");
    let (_, message_delta) = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(message_delta["delta"]["stop_reason"], "end_turn");
    // The final usage: message_start's, updated by message_delta's (as the SDKs merge them).
    let mut usage = start["usage"].clone();
    for (k, v) in message_delta["usage"].as_object().unwrap() {
        usage[k] = v.clone();
    }
    assert_messages_usage(&usage, &sim);
    let row = ctx.env.row(&got.id()).await;
    assert_messages_row(&row, kind, true, &sim);

    assert_eq!(ctx.env.rows("").await.len(), 2);
    ctx.assert_no_secrets().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_native_to_anthropic_are_metered_like_chat() {
    messages_are_metered_like_chat(&ANTHROPIC).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_translated_to_openai_are_metered_like_chat() {
    messages_are_metered_like_chat(&OPENAI).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_translated_to_gemini_and_bedrock_are_metered_like_chat() {
    messages_are_metered_like_chat(&GEMINI).await;
    messages_are_metered_like_chat(&BEDROCK).await;
}

// ---- 3. errors in the client's shape ---------------------------------------------------------

/// `{"type":"error","error":{"type","message"}}` and nothing else; Tollgate's code is appended
/// to the message.
fn assert_anthropic_error(v: &Value, error_type: &str, code: &str) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["error", "type"], "{v}");
    assert_eq!(v["type"], "error", "{v}");
    let e = v["error"].as_object().unwrap();
    let mut keys: Vec<&str> = e.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["message", "type"], "{v}");
    assert_eq!(v["error"]["type"], error_type, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.ends_with(&format!("[{code}]")), "{v}");
}

/// The expected client-facing failure.
struct Expect {
    status: u16,
    code: &'static str,
    openai_type: &'static str,
    anthropic_type: &'static str,
}

#[derive(Clone, Copy, PartialEq)]
enum Ingress {
    Chat,
    Messages,
}

async fn send(ctx: &Ctx, ingress: Ingress, kind: &Kind, stream: bool) -> Got {
    match ingress {
        Ingress::Chat => ctx.chat(chat_body(kind.model, stream)).await,
        Ingress::Messages => ctx.messages(messages_body(kind.model, stream)).await,
    }
}

/// One failed request: its answer in the ingress's shape, and its one row.
async fn check_failure(
    ctx: &Ctx,
    ingress: Ingress,
    kind: &Kind,
    stream: bool,
    want: &Expect,
) -> Got {
    let got = send(ctx, ingress, kind, stream).await;
    let what = format!(
        "{} stream={stream} via {}",
        kind.model,
        ingress_name(ingress)
    );
    assert_eq!(got.status, want.status, "{what}: {}", got.body);
    assert_eq!(
        got.header("content-type"),
        Some("application/json"),
        "{what}"
    );
    let v = got.json();
    match ingress {
        Ingress::Chat => {
            assert_error_shape(&v);
            assert_eq!(v["error"]["code"], want.code, "{what}: {v}");
            assert_eq!(v["error"]["type"], want.openai_type, "{what}: {v}");
        }
        Ingress::Messages => assert_anthropic_error(&v, want.anthropic_type, want.code),
    }
    // Both shapes put the message at `error.message`.
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("provider '{}'", kind.provider)),
        "{what}: {msg}"
    );
    let row = ctx.env.row(&got.id()).await;
    assert_eq!(row["outcome"], "failed", "{what}: {row}");
    assert_eq!(row["status"], want.status, "{what}: {row}");
    assert_eq!(row["error_code"], want.code, "{what}: {row}");
    assert_eq!(row["error_origin"], "upstream", "{what}: {row}");
    assert_eq!(row["provider"], kind.provider, "{what}: {row}");
    assert_eq!(row["endpoint"], endpoint(ingress), "{what}: {row}");
    assert_eq!(row["stream"], stream, "{what}: {row}");
    assert_eq!(row["output_tokens"], 0, "{what}: {row}");
    if want.code == "upstream_timeout" {
        // The provider had the prompt: billed at its estimate, flagged as not known.
        assert_eq!(row["usage_source"], "unknown", "{what}: {row}");
        assert!(row["input_tokens"].as_u64().unwrap() > 0, "{what}: {row}");
        assert_ne!(row["effective_cost"], "0", "{what}: {row}");
    } else {
        assert_eq!(row["usage_source"], "none", "{what}: {row}");
        assert_eq!(row["effective_cost"], "0", "{what}: {row}");
    }
    got
}

fn ingress_name(i: Ingress) -> &'static str {
    match i {
        Ingress::Chat => "chat",
        Ingress::Messages => "messages",
    }
}

fn endpoint(i: Ingress) -> &'static str {
    match i {
        Ingress::Chat => "/v1/chat/completions",
        Ingress::Messages => "/v1/messages",
    }
}

/// Every (ingress, deployment) pair the error tests cover: chat on every provider kind,
/// `/v1/messages` on a native (Anthropic) and a translated (OpenAI) deployment.
fn routes() -> Vec<(Ingress, &'static Kind)> {
    let mut v: Vec<(Ingress, &'static Kind)> = KINDS.iter().map(|k| (Ingress::Chat, *k)).collect();
    v.push((Ingress::Chat, &BEDROCK_KEY));
    v.push((Ingress::Messages, &ANTHROPIC));
    v.push((Ingress::Messages, &OPENAI));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_reach_each_ingress_in_its_shape() {
    let ctx = Ctx::new(SimConfig::default(), None).await;
    let mut expected_rows = 0;
    let cases = [
        (
            500,
            Expect {
                status: 502,
                code: "upstream_error",
                openai_type: "upstream_error",
                anthropic_type: "api_error",
            },
        ),
        (
            529,
            Expect {
                status: 503,
                code: "upstream_unavailable",
                openai_type: "upstream_error",
                anthropic_type: "overloaded_error",
            },
        ),
        (
            429,
            Expect {
                status: 429,
                code: "upstream_rate_limited",
                openai_type: "rate_limit_error",
                anthropic_type: "rate_limit_error",
            },
        ),
    ];
    for (fail_status, want) in &cases {
        ctx.env.sim.set_config(SimConfig {
            api_key: Some(SIM_KEY.into()),
            fail_rate: 1.0,
            fail_status: *fail_status,
            retry_after_secs: Some(7),
            ..SimConfig::default()
        });
        for (ingress, kind) in routes() {
            for stream in [false, true] {
                let got = check_failure(&ctx, ingress, kind, stream, want).await;
                expected_rows += 1;
                // Relayed exactly when the provider said how long to wait: the simulator
                // sends it as real providers do — on 429 (OpenAI and Azure in the header,
                // Gemini in a RetryInfo detail), Anthropic also on 529, Bedrock never.
                let sent = match fail_status {
                    429 => !kind.provider.starts_with("br"),
                    529 => kind.provider == "an",
                    _ => false,
                };
                let what = format!(
                    "{} via {} ({fail_status})",
                    kind.model,
                    ingress_name(ingress)
                );
                assert_eq!(got.header("retry-after"), sent.then_some("7"), "{what}");
            }
        }
    }
    assert_eq!(ctx.env.sim.stats().faults_fail, expected_rows);
    assert_eq!(ctx.env.rows("").await.len() as u64, expected_rows);
    ctx.assert_no_secrets().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_upstream_times_out_in_each_ingress_shape() {
    let ctx = Ctx::new(
        SimConfig {
            hang_rate: 1.0,
            ..SimConfig::default()
        },
        Some(300),
    )
    .await;
    let want = Expect {
        status: 504,
        code: "upstream_timeout",
        openai_type: "upstream_error",
        anthropic_type: "timeout_error",
    };
    let mut n = 0;
    for (ingress, kind) in routes() {
        for stream in [false, true] {
            let got = check_failure(&ctx, ingress, kind, stream, &want).await;
            assert!(got.body.contains("first byte"), "{}", got.body);
            n += 1;
        }
    }
    assert_eq!(ctx.env.sim.stats().faults_hang, n);
    assert_eq!(ctx.env.rows("").await.len() as u64, n);
    // The gateway gave up on every upstream call: nothing is left hanging at the provider.
    eventually("sim in-flight back to 0", || async {
        ctx.env.sim.stats().in_flight == 0
    })
    .await;
    ctx.assert_no_secrets().await;
}

/// A cut stream's row: failed after a 200, billed for what was relayed.
fn assert_cut_row(row: &Value, kind: &Kind, ingress: Ingress, relayed: u64) {
    assert_eq!(row["outcome"], "failed", "{row}");
    assert_eq!(row["status"], 200, "the stream had started: {row}");
    assert_eq!(row["error_code"], "upstream_error", "{row}");
    assert_eq!(row["error_origin"], "upstream", "{row}");
    assert_eq!(row["endpoint"], endpoint(ingress), "{row}");
    assert_eq!(row["provider"], kind.provider, "{row}");
    assert_eq!(row["usage_source"], "estimated", "{row}");
    assert!(relayed > 0);
    assert_eq!(row["output_tokens"], relayed, "{row}");
    let input = row["input_tokens"].as_u64().unwrap();
    let cached = row["cached_input_tokens"].as_u64().unwrap();
    assert!(input > cached, "{row}");
    assert_eq!(
        nanos(row["effective_cost"].as_str().unwrap()),
        cost(kind.price, input, cached, relayed),
        "{row}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_streams_end_with_an_error_event_in_each_ingress_shape() {
    let ctx = Ctx::new(
        SimConfig {
            cut_rate: 1.0,
            completion_tokens: 20,
            cached_prompt_tokens: CACHED as u32,
            ..SimConfig::default()
        },
        None,
    )
    .await;
    let mut n = 0;
    for (ingress, kind) in routes() {
        // For an OpenAI-tokenised upstream the gateway's own count of the prompt is exact:
        // learn the simulator's count from the same request unstreamed (never cut).
        let reference_prompt = if kind.upstream.starts_with("gpt-") {
            let before = ctx.env.sim.stats();
            let got = send(&ctx, ingress, kind, false).await;
            n += 1;
            assert_eq!(got.status, 200, "{}", got.body);
            Some(delta(kind.calls, &before, &ctx.env.sim.stats()).prompt)
        } else {
            None
        };
        let before = ctx.env.sim.stats();
        let got = send(&ctx, ingress, kind, true).await;
        n += 1;
        let after = ctx.env.sim.stats();
        assert_eq!(after.streams_cut - before.streams_cut, 1, "{}", kind.model);
        assert_eq!((kind.calls)(&after) - (kind.calls)(&before), 1);
        let what = format!("{} via {}", kind.model, ingress_name(ingress));
        let row = ctx.env.row(&got.id()).await;
        if let Some(prompt) = reference_prompt {
            assert_eq!(row["input_tokens"], prompt, "{what}: {row}");
        }
        match ingress {
            Ingress::Chat => {
                let events = got.data_events();
                assert!(
                    events.iter().all(|e| e != "[DONE]"),
                    "{what}: no [DONE] after a cut: {events:#?}"
                );
                let (last, relayed) = events.split_last().unwrap();
                for e in relayed {
                    let v: Value = serde_json::from_str(e).unwrap();
                    assert_eq!(v["object"], "chat.completion.chunk", "{what}: {v}");
                    assert!(v["choices"][0]["finish_reason"].is_null(), "{what}: {v}");
                }
                let err: Value = serde_json::from_str(last).unwrap();
                assert_error_shape(&err);
                assert_eq!(err["error"]["code"], "upstream_error", "{what}: {err}");
                let msg = err["error"]["message"].as_str().unwrap();
                assert!(
                    msg.contains(&format!("provider '{}'", kind.provider)),
                    "{msg}"
                );
                let text: String = relayed
                    .iter()
                    .filter_map(|e| {
                        let v: Value = serde_json::from_str(e).unwrap();
                        v["choices"][0]["delta"]["content"]
                            .as_str()
                            .map(str::to_string)
                    })
                    .collect();
                let words = text.split_whitespace().count() as u64;
                assert!(words < 20, "{what}: the whole answer was relayed");
                assert_cut_row(&row, kind, ingress, words);
            }
            Ingress::Messages => {
                let events = got.named_events();
                let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
                assert_eq!(names[0], "message_start", "{what}: {names:?}");
                assert_eq!(*names.last().unwrap(), "error", "{what}: {names:?}");
                assert!(
                    !names.contains(&"message_stop") && !names.contains(&"message_delta"),
                    "{what}: {names:?}"
                );
                let (_, err) = events.last().unwrap();
                assert_anthropic_error(err, "api_error", "upstream_error");
                let msg = err["error"]["message"].as_str().unwrap();
                assert!(
                    msg.contains(&format!("provider '{}'", kind.provider)),
                    "{msg}"
                );
                let text: String = events
                    .iter()
                    .filter(|(n, _)| n == "content_block_delta")
                    .map(|(_, v)| v["delta"]["text"].as_str().unwrap().to_string())
                    .collect();
                let words = text.split_whitespace().count() as u64;
                assert!(words < 20, "{what}: the whole answer was relayed");
                assert_cut_row(&row, kind, ingress, words);
                assert_eq!(row["feature"], FEATURE, "{row}");
                if kind.provider == "an" {
                    // Native passthrough: message_start reported the input side before the
                    // cut (exclusive of cache reads); the row keeps it, converted.
                    let usage = &events[0].1["message"]["usage"];
                    assert_eq!(usage["cache_read_input_tokens"], CACHED, "{usage}");
                    let total = usage["input_tokens"].as_u64().unwrap() + CACHED;
                    assert_eq!(row["input_tokens"], total, "{what}: {row}");
                    assert_eq!(row["cached_input_tokens"], CACHED, "{what}: {row}");
                }
            }
        }
    }
    assert_eq!(ctx.env.rows("").await.len(), n);
    ctx.assert_no_secrets().await;
}

// ---- 4. provider credentials never reach a client --------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_credentials_never_reach_the_client() {
    let ctx = Ctx::new(SimConfig::default(), None).await;
    // Served: every credential is configured correctly and really sent.
    for (ingress, kind) in routes() {
        for stream in [false, true] {
            let got = send(&ctx, ingress, kind, stream).await;
            assert_eq!(got.status, 200, "{}: {}", kind.model, got.body);
        }
    }
    // The provider refuses the key: the gateway's configuration problem, 502
    // upstream_auth_failed in the client's shape (Bedrock SigV4 signatures are not checked by
    // the simulator, so that provider keeps working).
    ctx.env.sim.set_config(SimConfig {
        api_key: Some("sk-a-different-key-000000".into()),
        ..SimConfig::default()
    });
    let want = Expect {
        status: 502,
        code: "upstream_auth_failed",
        openai_type: "upstream_error",
        anthropic_type: "api_error",
    };
    for (ingress, kind) in routes() {
        if kind.provider == "br" {
            continue;
        }
        for stream in [false, true] {
            check_failure(&ctx, ingress, kind, stream, &want).await;
        }
    }
    ctx.assert_no_secrets().await;
}
