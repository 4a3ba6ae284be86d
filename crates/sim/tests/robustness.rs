//! Every data-plane route answers malformed input with a 4xx in its own error shape — never a
//! 5xx, a dropped connection or a dead server — and cut streams never look finished.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};

/// Bodies of every wrong shape, reused for every route.
fn garbage() -> Vec<Value> {
    // Deep but within serde_json's recursion limit, so it reaches the schema filler.
    let deep = (0..50).fold(json!("x"), |acc, _| json!({"type": "object", "a": [acc]}));
    vec![
        Value::Null,
        json!(1),
        json!("text"),
        json!([]),
        json!({}),
        json!({"model": 5, "messages": "no", "contents": 7, "max_tokens": "x"}),
        json!({"model": "m", "max_tokens": -1, "messages": [null]}),
        json!({"model": "m", "max_tokens": 1e300, "messages": [{"role": "user"}]}),
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [null, 1, {}]}]}),
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
               "tools": [null, {"name": 1}, {"name": "f", "input_schema": deep}],
               "tool_choice": "auto", "thinking": {"type": "enabled"}, "system": [{}]}),
        json!({"contents": [null]}),
        json!({"contents": [{"role": 1, "parts": [{"text": 1}]}]}),
        json!({"contents": [{"parts": [{"functionCall": {}}]}], "tools": [{"functionDeclarations": [null]}],
               "generationConfig": {"candidateCount": -3, "maxOutputTokens": "lots"}}),
        json!({"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 0}}),
        json!({"content": null, "requests": [null, {"content": {"parts": []}}]}),
        json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}],
               "inferenceConfig": {"maxTokens": -1, "temperature": "hot"},
               "toolConfig": {"tools": [null], "toolChoice": 3}}),
        json!({"messages": [{"role": "user", "content": [{}]}], "system": "not a list"}),
        json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}],
               "toolConfig": {"tools": [{"toolSpec": {"name": "f", "inputSchema": {"json": deep}}}]}}),
    ]
}

#[tokio::test]
async fn malformed_bodies_get_client_errors() {
    let h = sim(SimConfig::default()).await;
    let a = h.addr;
    let routes: Vec<(String, Vec<(&str, &str)>)> = vec![
        (format!("http://{a}/v1/chat/completions"), vec![]),
        (format!("http://{a}/v1/embeddings"), vec![]),
        (
            format!("http://{a}/v1/messages"),
            vec![("anthropic-version", "2023-06-01")],
        ),
        (
            format!("http://{a}/v1/messages/count_tokens"),
            vec![("anthropic-version", "2023-06-01")],
        ),
        (
            format!("http://{a}/v1beta/models/g:generateContent"),
            vec![],
        ),
        (
            format!("http://{a}/v1beta/models/g:streamGenerateContent?alt=sse"),
            vec![],
        ),
        (format!("http://{a}/v1beta/models/g:embedContent"), vec![]),
        (
            format!("http://{a}/v1beta/models/g:batchEmbedContents"),
            vec![],
        ),
        (format!("http://{a}/v1beta/models/g:countTokens"), vec![]),
        (
            format!("http://{a}/model/m/converse"),
            vec![("authorization", "x")],
        ),
        (
            format!("http://{a}/model/m/converse-stream"),
            vec![("authorization", "x")],
        ),
    ];
    // One client for the ~200 requests (building one per request dominates the run time).
    let c = client();
    for (url, headers) in &routes {
        for body in garbage() {
            let mut req = c.post(url).json_body(&body);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let r = read_raw(req.send().await.unwrap()).await;
            assert!(!r.errored, "{url} {body}");
            assert!(
                r.status.is_client_error() || r.status.is_success(),
                "{url} {body}: {}",
                r.status
            );
            if r.status.is_client_error() {
                // An error body in some JSON shape.
                let _ = r.json();
            }
        }
        // Not JSON at all.
        let mut req = c.post(url).body("{\"unterminated");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = read_raw(req.send().await.unwrap()).await;
        assert_eq!(r.status, 400, "{url}");
    }
    // Still serving.
    let r = post_json(
        &chat_url(&h),
        &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(h.stats().in_flight, 0);
}

#[tokio::test]
async fn single_frame_stream_is_cut_before_its_only_frame() {
    let h = sim(SimConfig {
        cut_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    // A Gemini function call streams as one chunk, which carries the finish reason.
    let body = json!({
        "tools": [{"functionDeclarations": [{"name": "f"}]}],
        "contents": [{"role": "user", "parts": [{"text": "call f"}]}]});
    let r = post_raw(
        &format!(
            "http://{}/v1beta/models/g:streamGenerateContent?alt=sse",
            h.addr
        ),
        &[],
        &body,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.errored);
    assert!(r.bytes.is_empty(), "{}", String::from_utf8_lossy(&r.bytes));
    assert_eq!(h.stats().streams_cut, 1);
}
