//! The refusal and failover knobs: `context_window`, `content_filter_rate`,
//! `stream_error_rate` / `stream_error_after_chunks`, `fail_first`, and the request counter
//! (`GET /_sim/stats`, `POST /_sim/stats/reset`). Each wire format answers in its real shape.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};

const ANTHROPIC_VERSION: (&str, &str) = ("anthropic-version", "2023-06-01");

fn chat(stream: bool) -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there, how are you today"}],
           "stream": stream})
}

fn messages(stream: bool) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": stream,
           "messages": [{"role": "user", "content": "hello there, how are you today"}]})
}

fn gemini() -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": "hello there, how are you today"}]}]})
}

fn converse() -> Value {
    json!({"messages": [{"role": "user", "content": [{"text": "hello there, how are you today"}]}]})
}

fn gemini_url(h: &SimHandle, method: &str) -> String {
    format!("{}/v1beta/models/gemini-2.5-flash:{method}", h.origin())
}

fn bedrock_url(h: &SimHandle, stream: bool) -> String {
    let op = if stream {
        "converse-stream"
    } else {
        "converse"
    };
    format!(
        "{}/model/anthropic.claude-sonnet-4-5-v1%3A0/{op}",
        h.origin()
    )
}

const AWS_AUTH: (&str, &str) = ("authorization", "AWS4-HMAC-SHA256 Credential=x");

#[tokio::test]
async fn context_window_answers_each_format_s_real_error() {
    let h = sim(SimConfig {
        context_window: Some(5),
        ..SimConfig::default()
    })
    .await;

    let r = post_json(&chat_url(&h), &chat(false)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json["error"]["code"], "context_length_exceeded");
    assert_eq!(r.json["error"]["param"], "messages");
    let msg = r.json["error"]["message"].as_str().unwrap();
    assert!(msg.contains("maximum context length is 5 tokens"), "{msg}");

    let r = post_raw(
        &format!(
            "{}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            h.origin()
        ),
        &[],
        &chat(true),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "context_length_exceeded");

    let r = post_raw(
        &format!("{}/v1/messages", h.origin()),
        &[ANTHROPIC_VERSION],
        &messages(false),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.starts_with("prompt is too long: ") && msg.ends_with("tokens > 5 maximum"),
        "{msg}"
    );

    let r = post_raw(&gemini_url(&h, "generateContent"), &[], &gemini()).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["status"], "INVALID_ARGUMENT");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("exceeds the maximum number of tokens allowed (5)"),
        "{msg}"
    );

    let r = post_raw(&bedrock_url(&h, true), &[AWS_AUTH], &converse()).await;
    assert_eq!(r.status, 400);
    assert!(
        r.headers["x-amzn-errortype"]
            .to_str()
            .unwrap()
            .starts_with("ValidationException:")
    );
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("Input is too long for requested model")
    );

    // Embeddings are not generation: no context-window check.
    let r = post_json(
        &format!("{}/embeddings", h.base_url()),
        &json!({"model": "text-embedding-3-small", "input": "a long enough input text here"}),
    )
    .await;
    assert_eq!(r.status, 200);

    let s = h.stats();
    assert_eq!(s.context_window_exceeded, 5);
    assert_eq!(s.requests, 6);

    // A large window lets the same prompts through.
    h.set_config(SimConfig {
        context_window: Some(10_000),
        ..SimConfig::default()
    });
    assert_eq!(post_json(&chat_url(&h), &chat(false)).await.status, 200);
}

#[tokio::test]
async fn content_filter_rate_refuses_in_each_format_s_shape() {
    let h = sim(SimConfig {
        content_filter_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    let r = post_json(&chat_url(&h), &chat(false)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json["error"]["code"], "invalid_prompt");

    let r = post_raw(
        &format!(
            "{}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            h.origin()
        ),
        &[],
        &chat(false),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "content_filter");
    assert_eq!(
        r.json()["error"]["innererror"]["code"],
        "ResponsibleAIPolicyViolation"
    );

    let r = post_raw(
        &format!("{}/v1/messages", h.origin()),
        &[ANTHROPIC_VERSION],
        &messages(true),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "Output blocked by content filtering policy"
    );

    // Gemini blocks a prompt with a 200 and no candidates, plain and streamed.
    let r = post_raw(&gemini_url(&h, "generateContent"), &[], &gemini()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["promptFeedback"]["blockReason"], "SAFETY");
    assert!(r.json().get("candidates").is_none());
    let r = post_raw(
        &format!("{}?alt=sse", gemini_url(&h, "streamGenerateContent")),
        &[],
        &gemini(),
    )
    .await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.bytes.clone()).unwrap();
    assert!(text.starts_with("data: {\"promptFeedback\""), "{text}");

    let r = post_raw(&bedrock_url(&h, false), &[AWS_AUTH], &converse()).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("content filtering policy")
    );

    // Embeddings are never content-filtered.
    let r = post_json(
        &format!("{}/embeddings", h.base_url()),
        &json!({"model": "text-embedding-3-small", "input": "x"}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(h.stats().faults_content_filter, 6);

    // The rate is exact: 0.5 refuses every second request.
    h.set_config(SimConfig {
        content_filter_rate: 0.5,
        ..SimConfig::default()
    });
    let got: Vec<u16> = futures_util::future::join_all(
        (0..4).map(|_| async { post_json(&chat_url(&h), &chat(false)).await.status.as_u16() }),
    )
    .await;
    assert_eq!(got.iter().filter(|s| **s == 400).count(), 2);
}

#[tokio::test]
async fn fail_first_fails_exactly_the_next_n_then_succeeds() {
    let h = sim(SimConfig {
        fail_first: 2,
        fail_status: 429,
        retry_after_secs: Some(3),
        ..SimConfig::default()
    })
    .await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let r = post_json(&chat_url(&h), &chat(false)).await;
        if r.status == 429 {
            assert_eq!(r.headers["retry-after"], "3");
        }
        got.push(r.status.as_u16());
    }
    assert_eq!(got, vec![429, 429, 200, 200]);

    // Counted from when it is set: posting it again re-arms it, across formats.
    let r = post_json(
        &format!("{}/_sim/config", h.origin()),
        &json!({"fail_first": 1, "fail_status": 529}),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = post_raw(
        &format!("{}/v1/messages", h.origin()),
        &[ANTHROPIC_VERSION],
        &messages(false),
    )
    .await;
    assert_eq!(r.status, 529);
    assert_eq!(r.json()["error"]["type"], "overloaded_error");
    let r = post_raw(
        &format!("{}/v1/messages", h.origin()),
        &[ANTHROPIC_VERSION],
        &messages(false),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(h.stats().faults_fail, 3);
}

#[tokio::test]
async fn openai_stream_error_after_n_chunks() {
    let h = sim(SimConfig {
        stream_error_rate: 1.0,
        stream_error_after_chunks: 2,
        ..SimConfig::default()
    })
    .await;
    let s = stream(&chat_url(&h), &chat(true)).await;
    assert_eq!(s.status, 200);
    assert!(!s.done(), "no [DONE] after an error");
    let last: Value = serde_json::from_str(s.data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "server_error");
    // Role chunk, two content chunks, the error.
    assert_eq!(s.data.len(), 4, "{:?}", s.data);
    assert_eq!(h.stats().streams_errored, 1);
    assert_eq!(
        h.stats().completion_tokens,
        0,
        "an errored stream's usage is not counted"
    );

    // 0: the error is the first event.
    h.set_config(SimConfig {
        stream_error_rate: 1.0,
        ..SimConfig::default()
    });
    let s = stream(&chat_url(&h), &chat(true)).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.data.len(), 1, "{:?}", s.data);
    assert!(s.data[0].contains("\"error\""));
}

#[tokio::test]
async fn anthropic_gemini_and_bedrock_stream_errors_use_their_framing() {
    let h = sim(SimConfig {
        stream_error_rate: 1.0,
        stream_error_after_chunks: 1,
        ..SimConfig::default()
    })
    .await;
    let r = post_raw(
        &format!("{}/v1/messages", h.origin()),
        &[ANTHROPIC_VERSION],
        &messages(true),
    )
    .await;
    assert_eq!(r.status, 200);
    let events = named_events(&r);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(
        names
            .iter()
            .filter(|n| **n == "content_block_delta")
            .count(),
        1,
        "{names:?}"
    );
    let (last, payload) = events.last().unwrap();
    assert_eq!(last, "error");
    assert_eq!(payload["error"]["type"], "overloaded_error");
    assert!(!names.contains(&"message_stop"));

    let r = post_raw(
        &format!("{}?alt=sse", gemini_url(&h, "streamGenerateContent")),
        &[],
        &gemini(),
    )
    .await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.bytes.clone()).unwrap();
    let events: Vec<&str> = text.split("\r\n\r\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 2, "{text}");
    assert!(events[1].contains("\"UNAVAILABLE\""), "{text}");

    // The JSON-array framing stays a valid array.
    h.set_config(SimConfig {
        stream_error_rate: 1.0,
        ..SimConfig::default()
    });
    let r = post_raw(&gemini_url(&h, "streamGenerateContent"), &[], &gemini()).await;
    let v: Value = serde_json::from_slice(&r.bytes).unwrap();
    assert_eq!(v[0]["error"]["code"], 503);

    let r = post_raw(&bedrock_url(&h, true), &[AWS_AUTH], &converse()).await;
    assert_eq!(r.status, 200);
    let (frames, rest) = decode_event_stream(&r.bytes);
    assert_eq!(rest, 0);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].header(":message-type"), "exception");
    assert_eq!(
        frames[0].header(":exception-type"),
        "serviceUnavailableException"
    );
}

#[tokio::test]
async fn stats_count_every_request_and_reset_on_demand() {
    let h = sim(SimConfig {
        fail_first: 1,
        ..SimConfig::default()
    })
    .await;
    assert_eq!(post_json(&chat_url(&h), &chat(false)).await.status, 500);
    assert_eq!(post_json(&chat_url(&h), &chat(false)).await.status, 200);
    let r = post_raw(
        &format!("{}/v1/messages", h.origin()),
        &[],
        &messages(false),
    )
    .await;
    assert_eq!(r.status, 400, "missing anthropic-version is still counted");
    let stats = reply(
        client()
            .get(format!("{}/_sim/stats", h.origin()))
            .send()
            .await
            .unwrap(),
    )
    .await
    .json;
    assert_eq!(stats["requests"], 3);
    assert_eq!(stats["chat_completions"], 2);
    assert_eq!(stats["messages"], 1);
    assert_eq!(stats["faults_fail"], 1);

    // Changing the configuration keeps the counters …
    h.set_config(SimConfig::default());
    assert_eq!(h.stats().requests, 3);
    // … resetting them zeroes them.
    let r = post_json(&format!("{}/_sim/stats/reset", h.origin()), &json!({})).await;
    assert_eq!(r.status, 200);
    let after = r.json;
    assert_eq!(after["requests"], 0);
    assert_eq!(h.stats(), tollgate_sim::SimStats::default());
    post_json(&chat_url(&h), &chat(false)).await;
    assert_eq!(h.stats().requests, 1);
    h.reset_stats();
    assert_eq!(h.stats().requests, 0);
}
