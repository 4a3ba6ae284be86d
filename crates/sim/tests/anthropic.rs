//! Anthropic Messages over real HTTP: shape, usage consistency, SSE event order, max tokens,
//! tools round trip, validation, auth, faults (529 included), cut streams, cached tokens.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};
use tollgate_tokens::{Encoding, count_chat_prompt};

const VERSION: (&str, &str) = ("anthropic-version", "2023-06-01");

fn url(h: &SimHandle) -> String {
    format!("{}/v1/messages", h.origin())
}

fn body(extra: Value) -> Value {
    merged(
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "system": "Be brief.",
            "messages": [{"role": "user", "content": "Say something about budgets."}]
        }),
        extra,
    )
}

fn o200k(s: &str) -> u64 {
    Encoding::O200k.count(s)
}

/// The documented prompt formula: OpenAI chat accounting of messages and tools, plus the
/// system prompt.
fn prompt_of(b: &Value) -> u64 {
    let system = b["system"].as_str().map_or(0, o200k);
    count_chat_prompt(Encoding::O200k, b) + system
}

async fn post(h: &SimHandle, b: &Value) -> Raw {
    post_raw(&url(h), &[VERSION], b).await
}

fn weather_tools() -> Value {
    json!([
        {"name": "get_weather", "description": "Current weather",
         "input_schema": {"type": "object", "properties": {"city": {"type": "string"},
            "days": {"type": "integer"}}, "required": ["city", "days"]}},
        {"name": "get_time", "input_schema": {"type": "object",
            "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}
    ])
}

#[tokio::test]
async fn plain_message_shape_and_usage() {
    let h = sim(SimConfig::default()).await;
    let b = body(json!({}));
    let r = post(&h, &b).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type(), "application/json");
    assert!(
        r.headers["request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    let j = r.json();
    assert!(j["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(j["type"], "message");
    assert_eq!(j["role"], "assistant");
    assert_eq!(j["model"], "claude-sonnet-4-5");
    assert_eq!(j["stop_reason"], "end_turn");
    assert!(j["stop_sequence"].is_null());
    let content = j["content"].as_array().unwrap();
    assert_eq!(content.len(), 1);
    assert_eq!(content[0]["type"], "text");
    let text = content[0]["text"].as_str().unwrap();
    assert_eq!(text.split(' ').count(), 16);

    let u = &j["usage"];
    assert_eq!(u["input_tokens"].as_u64().unwrap(), prompt_of(&b));
    assert_eq!(u["output_tokens"].as_u64().unwrap(), 16);
    assert_eq!(u["output_tokens"].as_u64().unwrap(), o200k(text));
    assert_eq!(u["cache_creation_input_tokens"], 0);
    assert_eq!(u["cache_read_input_tokens"], 0);

    // Deterministic: the same conversation gives the same text.
    let again = post(&h, &b).await.json();
    assert_eq!(again["content"], j["content"]);
    assert_ne!(again["id"], j["id"]);

    let s = h.stats();
    assert_eq!(s.messages, 2);
    assert_eq!(s.chat_completions, 0);
    assert_eq!(s.prompt_tokens, 2 * prompt_of(&b));
    assert_eq!(s.completion_tokens, 32);
    assert_eq!(s.in_flight, 0);
    h.shutdown().await;
}

#[tokio::test]
async fn stream_event_order_and_cumulative_usage() {
    let h = sim(SimConfig::default()).await;
    let plain = post(&h, &body(json!({}))).await.json();
    let b = body(json!({"stream": true}));
    let r = post(&h, &b).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type(), "text/event-stream");
    assert!(!r.errored);
    let events = named_events(&r);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", 16));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str(), "event name equals type");
    }

    let start = &events[0].1["message"];
    assert!(start["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(start["content"], json!([]));
    assert!(start["stop_reason"].is_null());
    assert_eq!(
        start["usage"]["input_tokens"].as_u64().unwrap(),
        prompt_of(&b)
    );
    assert_eq!(start["usage"]["output_tokens"], 1);
    assert_eq!(start["usage"]["cache_read_input_tokens"], 0);
    assert_eq!(
        events[1].1["content_block"],
        json!({"type": "text", "text": ""})
    );

    let text: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| {
            assert_eq!(d["index"], 0);
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(text, plain["content"][0]["text"].as_str().unwrap());
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(delta["delta"]["stop_sequence"].is_null());
    // Cumulative: the total, which is the count of the streamed text.
    assert_eq!(
        delta["usage"]["output_tokens"].as_u64().unwrap(),
        o200k(&text)
    );
    assert_eq!(
        delta["usage"]["output_tokens"],
        plain["usage"]["output_tokens"]
    );

    // `chunks` groups the deltas.
    h.set_config(SimConfig {
        chunks: 3,
        ..SimConfig::default()
    });
    let events = named_events(&post(&h, &b).await);
    let deltas = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .count();
    assert_eq!(deltas, 3);
    assert_eq!(h.stats().streams, 2);
}

#[tokio::test]
async fn max_tokens_and_stop_sequences() {
    let h = sim(SimConfig::default()).await;
    let r = post(&h, &body(json!({"max_tokens": 5}))).await.json();
    assert_eq!(r["stop_reason"], "max_tokens");
    assert_eq!(r["usage"]["output_tokens"], 5);
    assert_eq!(o200k(r["content"][0]["text"].as_str().unwrap()), 5);

    let events = named_events(&post(&h, &body(json!({"max_tokens": 5, "stream": true}))).await);
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
    assert_eq!(delta["usage"]["output_tokens"], 5);

    // A stop sequence taken from the answer ends it just before the match.
    let full = post(&h, &body(json!({}))).await.json()["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    let words: Vec<&str> = full.split(' ').collect();
    let stop = format!(" {}", words[6]);
    let at = full.find(&stop).unwrap();
    let r = post(&h, &body(json!({"stop_sequences": [stop]})))
        .await
        .json();
    assert_eq!(r["stop_reason"], "stop_sequence");
    assert_eq!(r["stop_sequence"], stop.as_str());
    assert_eq!(r["content"][0]["text"], &full[..at]);
    assert_eq!(
        r["usage"]["output_tokens"].as_u64().unwrap(),
        o200k(&full[..at])
    );
}

#[tokio::test]
async fn ignore_max_tokens_overruns_the_stream() {
    // 40-token answers; the request asks for 5.
    let h = sim(SimConfig {
        completion_tokens: 40,
        ..SimConfig::default()
    })
    .await;
    let b = body(json!({"max_tokens": 5, "stream": true}));
    let deltas = |events: &[(String, Value)]| {
        events
            .iter()
            .filter(|(n, _)| n == "content_block_delta")
            .map(|(_, d)| d["delta"]["text"].as_str().unwrap().to_string())
            .collect::<String>()
    };
    let honoured = named_events(&post(&h, &b).await);
    assert_eq!(o200k(&deltas(&honoured)), 5);
    assert_eq!(
        honoured[honoured.len() - 2].1["delta"]["stop_reason"],
        "max_tokens"
    );

    // Set at run time, as the gateway's integration tests and scripts do.
    let r = post_json(
        &format!("{}/_sim/config", h.origin()),
        &json!({"ignore_max_tokens": true}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["ignore_max_tokens"], true);
    let r = post(&h, &b).await;
    assert_eq!(r.status, 200);
    assert!(!r.errored);
    let events = named_events(&r);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", 40));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected, "the whole answer, well past max_tokens");
    let text = deltas(&events);
    assert_eq!(o200k(&text), 40);
    assert!(
        text.starts_with(&deltas(&honoured)),
        "the same answer, not cut"
    );
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(
        delta["usage"]["output_tokens"], 40,
        "usage reports the overrun"
    );
    assert_eq!(h.stats().completion_tokens, 5 + 40);

    // Tool arguments too: a 1-token max still gets complete arguments.
    let ask = body(json!({
        "max_tokens": 1, "stream": true, "tools": weather_tools(),
        "tool_choice": {"type": "tool", "name": "get_weather"},
    }));
    let events = named_events(&post(&h, &ask).await);
    let json: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap().to_string())
        .collect();
    assert!(o200k(&json) > 1);
    let input: Value = serde_json::from_str(&json).unwrap();
    assert!(
        input["city"].is_string() && input["days"].is_number(),
        "{input}"
    );
    assert_eq!(
        events[events.len() - 2].1["delta"]["stop_reason"],
        "tool_use"
    );
}

#[tokio::test]
async fn tools_round_trip() {
    let h = sim(SimConfig::default()).await;
    let ask = body(json!({"tools": weather_tools(),
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}]}));
    let r = post(&h, &ask).await.json();
    assert_eq!(r["stop_reason"], "tool_use");
    let content = r["content"].as_array().unwrap();
    assert_eq!(content.len(), 1);
    let call = &content[0];
    assert_eq!(call["type"], "tool_use");
    assert_eq!(call["name"], "get_weather");
    let id = call["id"].as_str().unwrap();
    assert!(id.starts_with("toolu_"));
    assert!(call["input"]["city"].is_string());
    assert_eq!(call["input"]["days"], 1);
    // Output tokens are the count of the input JSON text.
    assert_eq!(
        r["usage"]["output_tokens"].as_u64().unwrap(),
        o200k(&call["input"].to_string())
    );
    assert_eq!(
        r["usage"]["input_tokens"].as_u64().unwrap(),
        prompt_of(&ask)
    );

    // Streamed: a tool_use block with empty input, then input_json_delta fragments.
    let events = named_events(&post(&h, &merged(ask.clone(), json!({"stream": true}))).await);
    let (_, start) = events
        .iter()
        .find(|(n, _)| n == "content_block_start")
        .unwrap();
    assert_eq!(
        start["content_block"],
        json!({"type": "tool_use", "id": id, "name": "get_weather", "input": {}})
    );
    let partial: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| {
            assert_eq!(d["delta"]["type"], "input_json_delta");
            d["delta"]["partial_json"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&partial).unwrap(),
        call["input"]
    );
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], r["usage"]["output_tokens"]);

    // The tool result goes back in a user turn: a text answer.
    let answer = body(json!({"tools": weather_tools(), "messages": [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "18C"}]}
    ]}));
    let r = post(&h, &answer).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
    let r = r.json();
    assert_eq!(r["stop_reason"], "end_turn");
    assert_eq!(r["content"][0]["type"], "text");
    assert_eq!(
        r["usage"]["input_tokens"].as_u64().unwrap(),
        prompt_of(&answer)
    );

    // Two tools mentioned: two calls; parallel use disabled: one; a named tool; none.
    let both = body(json!({"tools": weather_tools(), "messages": [
        {"role": "user", "content": "Call get_weather and get_time please."}]}));
    let r = post(&h, &both).await.json();
    assert_eq!(r["content"].as_array().unwrap().len(), 2);
    assert_ne!(r["content"][0]["id"], r["content"][1]["id"]);
    let one = merged(
        both.clone(),
        json!({"tool_choice": {"type": "auto", "disable_parallel_tool_use": true}}),
    );
    assert_eq!(
        post(&h, &one).await.json()["content"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let named = merged(
        both.clone(),
        json!({"tool_choice": {"type": "tool", "name": "get_time"}}),
    );
    let r = post(&h, &named).await.json();
    assert_eq!(r["content"][0]["name"], "get_time");
    let none = merged(both, json!({"tool_choice": {"type": "none"}}));
    let r = post(&h, &none).await.json();
    assert_eq!(r["content"][0]["type"], "text");
    assert_eq!(r["stop_reason"], "end_turn");
}

#[tokio::test]
async fn validation_errors() {
    let h = sim(SimConfig::default()).await;
    let check = |r: Raw, status: u16, needle: &str| {
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.bytes));
        let j = r.json();
        assert_eq!(j["type"], "error");
        assert_eq!(j["error"]["type"], "invalid_request_error");
        let msg = j["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    };
    // No anthropic-version header.
    check(
        post_raw(&url(&h), &[], &body(json!({}))).await,
        400,
        "anthropic-version: header is required",
    );
    check(
        post_raw(
            &url(&h),
            &[("anthropic-version", "2023-6-1")],
            &body(json!({})),
        )
        .await,
        400,
        "is not a valid version",
    );
    let mut no_max = body(json!({}));
    no_max.as_object_mut().unwrap().remove("max_tokens");
    check(post(&h, &no_max).await, 400, "max_tokens: Field required");
    check(
        post(&h, &body(json!({"messages": []}))).await,
        400,
        "at least one message",
    );
    check(
        post(
            &h,
            &body(json!({"messages": [{"role": "system", "content": "x"},
                                      {"role": "user", "content": "hi"}]})),
        )
        .await,
        400,
        "Unexpected role \"system\"",
    );
    check(
        post(
            &h,
            &body(json!({"messages": [{"role": "assistant", "content": "x"}]})),
        )
        .await,
        400,
        "first message must use the \"user\" role",
    );
    check(
        post(
            &h,
            &body(json!({"messages": [{"role": "user", "content": "a"},
                                      {"role": "user", "content": "b"}]})),
        )
        .await,
        400,
        "roles must alternate",
    );
    check(
        post(&h, &body(json!({"temperature": 1.5}))).await,
        400,
        "temperature: Input should be less than or equal to 1",
    );
    check(
        post(
            &h,
            &body(json!({"stream_options": {"include_usage": true}})),
        )
        .await,
        400,
        "stream_options: Extra inputs are not permitted",
    );
    let bad_json = read_raw(
        client()
            .post(url(&h))
            .header(VERSION.0, VERSION.1)
            .body("{nope")
            .send()
            .await
            .unwrap(),
    )
    .await;
    check(bad_json, 400, "parsing the body");
    // Unknown paths under /v1/messages answer in Anthropic's shape.
    let r = post(&h, &body(json!({}))).await;
    assert_eq!(r.status, 200);
    let r = post_raw(&format!("{}/batches", url(&h)), &[VERSION], &json!({})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    let s = h.stats();
    assert_eq!(s.client_errors, 11);
    assert_eq!(
        s.completion_tokens, 16,
        "validation failures produce nothing"
    );
}

#[tokio::test]
async fn auth_uses_x_api_key() {
    let h = sim(SimConfig {
        api_key: Some("sk-ant-test".into()),
        ..SimConfig::default()
    })
    .await;
    let b = body(json!({}));
    for headers in [
        vec![VERSION],
        vec![VERSION, ("x-api-key", "wrong")],
        vec![VERSION, ("authorization", "Bearer sk-ant-test")],
    ] {
        let r = post_raw(&url(&h), &headers, &b).await;
        assert_eq!(r.status, 401);
        let j = r.json();
        assert_eq!(j["type"], "error");
        assert_eq!(j["error"]["type"], "authentication_error");
    }
    let r = post_raw(&url(&h), &[VERSION, ("x-api-key", "sk-ant-test")], &b).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn injected_failures_in_anthropic_shape() {
    for (status, kind, retry) in [
        (529, "overloaded_error", true),
        (429, "rate_limit_error", true),
        (500, "api_error", false),
        (504, "timeout_error", false),
    ] {
        let h = sim(SimConfig {
            fail_rate: 1.0,
            fail_status: status,
            retry_after_secs: Some(3),
            ..SimConfig::default()
        })
        .await;
        for stream in [false, true] {
            let r = post(&h, &body(json!({"stream": stream}))).await;
            assert_eq!(r.status.as_u16(), status);
            assert_eq!(r.content_type(), "application/json");
            let j = r.json();
            assert_eq!(j["type"], "error");
            assert_eq!(j["error"]["type"], kind);
            assert_eq!(r.headers.get("retry-after").is_some(), retry, "{status}");
        }
        assert_eq!(h.stats().faults_fail, 2);
    }

    // Resets drop the connection with no response.
    let h = sim(SimConfig {
        reset_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    let res = client()
        .post(url(&h))
        .header(VERSION.0, VERSION.1)
        .json_body(&body(json!({})))
        .send()
        .await;
    assert!(res.is_err());
    assert_eq!(h.stats().faults_reset, 1);
}

#[tokio::test]
async fn cut_stream_has_no_stop() {
    let h = sim(SimConfig {
        cut_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    let r = post(&h, &body(json!({"stream": true}))).await;
    assert_eq!(r.status, 200);
    assert!(r.errored, "the body ends with a transport error");
    let events = named_events(&r);
    assert!(!events.is_empty());
    assert_eq!(events[0].0, "message_start");
    assert!(events.len() < 21);
    assert!(
        events
            .iter()
            .all(|(n, _)| n != "message_delta" && n != "message_stop")
    );
    let s = h.stats();
    assert_eq!(s.streams_cut, 1);
    assert_eq!(s.completion_tokens, 0, "cut streams are not counted");
}

#[tokio::test]
async fn cached_prompt_tokens_are_excluded_from_input_tokens() {
    let h = sim(SimConfig {
        cached_prompt_tokens: 5,
        ..SimConfig::default()
    })
    .await;
    let b = body(json!({}));
    let p = prompt_of(&b);
    assert!(p > 5);
    let u = post(&h, &b).await.json()["usage"].clone();
    assert_eq!(u["input_tokens"].as_u64().unwrap(), p - 5);
    assert_eq!(u["cache_read_input_tokens"], 5);
    assert_eq!(u["cache_creation_input_tokens"], 0);
    let events = named_events(&post(&h, &body(json!({"stream": true}))).await);
    let start = &events[0].1["message"]["usage"];
    assert_eq!(start["input_tokens"].as_u64().unwrap(), p - 5);
    assert_eq!(start["cache_read_input_tokens"], 5);

    // More cached tokens than the prompt has: capped.
    h.set_config(SimConfig {
        cached_prompt_tokens: 100_000,
        ..SimConfig::default()
    });
    let u = post(&h, &b).await.json()["usage"].clone();
    assert_eq!(u["input_tokens"], 0);
    assert_eq!(u["cache_read_input_tokens"].as_u64().unwrap(), p);
    let s = h.stats();
    assert_eq!(s.prompt_tokens, 3 * p);
    assert_eq!(s.cached_prompt_tokens, 10 + p);
}

#[tokio::test]
async fn count_tokens_matches_reported_input() {
    let h = sim(SimConfig::default()).await;
    let b = body(json!({"tools": weather_tools()}));
    let reported = post(&h, &b).await.json()["usage"]["input_tokens"].clone();
    let mut counted = b.clone();
    counted.as_object_mut().unwrap().remove("max_tokens");
    let r = post_raw(&format!("{}/count_tokens", url(&h)), &[VERSION], &counted).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["input_tokens"], reported);
    assert_eq!(h.stats().messages_count_tokens, 1);
}

#[tokio::test]
async fn structured_output_and_latency() {
    let h = sim(SimConfig {
        ttft_ms: 120,
        ..SimConfig::default()
    })
    .await;
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}},
                        "required": ["city"]});
    let t = std::time::Instant::now();
    let r = post(
        &h,
        &body(json!({"output_config": {"format": {"type": "json_schema", "schema": schema}}})),
    )
    .await
    .json();
    assert!(t.elapsed() >= std::time::Duration::from_millis(120));
    let text = r["content"][0]["text"].as_str().unwrap();
    let v: Value = serde_json::from_str(text).unwrap();
    assert!(v["city"].is_string());
    assert_eq!(r["usage"]["output_tokens"].as_u64().unwrap(), o200k(text));
}

#[tokio::test]
async fn prompt_cache_reads_are_excluded_from_input_tokens() {
    let h = sim(SimConfig {
        prompt_cache: true,
        ..SimConfig::default()
    })
    .await;
    let b = body(json!({"system": long_text("anthropic", 10_000)}));
    let p = prompt_of(&b);
    let u = post(&h, &b).await.json()["usage"].clone();
    assert_eq!(u["input_tokens"].as_u64().unwrap(), p);
    assert_eq!(u["cache_read_input_tokens"], 0);
    // The repeat reads every message (all but the 3 reply-priming tokens), in 128s.
    let cached = (p - 3) / 128 * 128;
    assert!(cached >= 1024);
    let u = post(&h, &b).await.json()["usage"].clone();
    assert_eq!(u["cache_read_input_tokens"].as_u64().unwrap(), cached);
    assert_eq!(u["input_tokens"].as_u64().unwrap(), p - cached);
    let events =
        named_events(&post(&h, &body(json!({"stream": true, "system": b["system"]}))).await);
    let start = &events[0].1["message"]["usage"];
    assert_eq!(start["cache_read_input_tokens"].as_u64().unwrap(), cached);
}
