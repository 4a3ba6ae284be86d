//! Bedrock Converse over real HTTP: shape and usage, ConverseStream binary framing (both
//! CRCs checked by an independent decoder), event order, tools round trip, validation, auth,
//! faults, cut streams, cached tokens.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};
use tollgate_tokens::Encoding;

/// A model id as it appears in a request path: percent-encoded colon.
const MODEL_PATH: &str = "anthropic.claude-3-5-sonnet-20240620-v1%3A0";
const SIGV4: (&str, &str) = (
    "authorization",
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-east-1/bedrock/aws4_request, \
     SignedHeaders=host;x-amz-date, Signature=deadbeef",
);

fn url(h: &SimHandle, stream: bool) -> String {
    let op = if stream {
        "converse-stream"
    } else {
        "converse"
    };
    format!("http://{}/model/{MODEL_PATH}/{op}", h.addr)
}

fn body(extra: Value) -> Value {
    merged(
        json!({
            "system": [{"text": "Be brief."}],
            "messages": [{"role": "user", "content": [{"text": "Say something about budgets."}]}]
        }),
        extra,
    )
}

fn o200k(s: &str) -> u64 {
    Encoding::O200k.count(s)
}

/// The documented prompt formula for text-only messages: 3 per message + its role + its
/// text blocks, 3 to prime the reply, plus the system text blocks.
fn prompt_of(b: &Value) -> u64 {
    let texts = |blocks: &Value| -> u64 {
        blocks
            .as_array()
            .unwrap()
            .iter()
            .map(|p| o200k(p["text"].as_str().unwrap()))
            .sum()
    };
    let mut n = 3;
    for m in b["messages"].as_array().unwrap() {
        n += 3 + o200k(m["role"].as_str().unwrap()) + texts(&m["content"]);
    }
    n + texts(&b["system"])
}

async fn post(h: &SimHandle, stream: bool, b: &Value) -> Raw {
    post_raw(&url(h, stream), &[SIGV4], b).await
}

fn tools() -> Value {
    json!({"tools": [
        {"toolSpec": {"name": "get_weather", "description": "Current weather",
            "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}},
                "required": ["city"]}}}},
        {"toolSpec": {"name": "get_time",
            "inputSchema": {"json": {"type": "object", "properties": {"tz": {"type": "string"}},
                "required": ["tz"]}}}}
    ]})
}

#[tokio::test]
async fn converse_shape_and_usage() {
    let h = sim(SimConfig::default()).await;
    let b = body(json!({}));
    let r = post(&h, false, &b).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type(), "application/json");
    let j = r.json();
    assert_eq!(j["stopReason"], "end_turn");
    let msg = &j["output"]["message"];
    assert_eq!(msg["role"], "assistant");
    let text = msg["content"][0]["text"].as_str().unwrap();
    assert_eq!(text.split(' ').count(), 16);
    let u = &j["usage"];
    assert_eq!(u["inputTokens"].as_u64().unwrap(), prompt_of(&b));
    assert_eq!(u["outputTokens"].as_u64().unwrap(), o200k(text));
    assert_eq!(u["outputTokens"], 16);
    assert_eq!(u["totalTokens"].as_u64().unwrap(), prompt_of(&b) + 16);
    assert!(u.get("cacheReadInputTokens").is_none());
    assert!(j["metrics"]["latencyMs"].is_u64());
    let s = h.stats();
    assert_eq!(s.converse, 1);
    assert_eq!(s.completion_tokens, 16);
}

#[tokio::test]
async fn converse_stream_framing_and_order() {
    let h = sim(SimConfig {
        chunks: 4,
        ..SimConfig::default()
    })
    .await;
    let b = body(json!({}));
    let plain = post(&h, false, &b).await.json();
    let r = post(&h, true, &b).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type(), "application/vnd.amazon.eventstream");
    assert!(!r.errored);
    let (events, rest) = decode_event_stream(&r.bytes);
    assert_eq!(rest, 0, "no partial frame");
    let types: Vec<&str> = events.iter().map(EventMessage::event_type).collect();
    assert_eq!(
        types,
        [
            "messageStart",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata"
        ]
    );
    for e in &events {
        assert_eq!(e.header(":message-type"), "event");
        assert_eq!(e.header(":content-type"), "application/json");
        // AWS pads payloads; clients must ignore the field.
        assert!(e.payload["p"].is_string());
    }
    assert_eq!(events[0].payload["role"], "assistant");
    let text: String = events
        .iter()
        .filter(|e| e.event_type() == "contentBlockDelta")
        .map(|e| {
            assert_eq!(e.payload["contentBlockIndex"], 0);
            e.payload["delta"]["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        text,
        plain["output"]["message"]["content"][0]["text"]
            .as_str()
            .unwrap()
    );
    assert_eq!(events[6].payload["stopReason"], "end_turn");
    // Usage arrives last, after messageStop, equal to the non-streamed usage.
    assert_eq!(events[7].payload["usage"], plain["usage"]);
    assert_eq!(
        events[7].payload["usage"]["outputTokens"].as_u64().unwrap(),
        o200k(&text)
    );
    assert!(events[7].payload["metrics"]["latencyMs"].is_u64());
    let s = h.stats();
    assert_eq!(s.converse_stream, 1);
    assert_eq!(s.streams, 1);
}

#[tokio::test]
async fn max_tokens_and_stop_sequences() {
    let h = sim(SimConfig::default()).await;
    let r = post(
        &h,
        false,
        &body(json!({"inferenceConfig": {"maxTokens": 5}})),
    )
    .await
    .json();
    assert_eq!(r["stopReason"], "max_tokens");
    assert_eq!(r["usage"]["outputTokens"], 5);
    let full =
        post(&h, false, &body(json!({}))).await.json()["output"]["message"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .to_string();
    let stop = format!(" {}", full.split(' ').nth(3).unwrap());
    let at = full.find(&stop).unwrap();
    let r = post(
        &h,
        false,
        &body(json!({"inferenceConfig": {"stopSequences": [stop]}})),
    )
    .await
    .json();
    assert_eq!(r["stopReason"], "stop_sequence");
    assert_eq!(r["output"]["message"]["content"][0]["text"], &full[..at]);
    assert_eq!(
        r["usage"]["outputTokens"].as_u64().unwrap(),
        o200k(&full[..at])
    );
}

#[tokio::test]
async fn tools_round_trip() {
    let h = sim(SimConfig::default()).await;
    let ask = body(json!({"toolConfig": tools(),
        "messages": [{"role": "user", "content": [{"text": "Weather in Paris?"}]}]}));
    let r = post(&h, false, &ask).await.json();
    assert_eq!(r["stopReason"], "tool_use");
    let content = r["output"]["message"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 1);
    let tu = &content[0]["toolUse"];
    assert_eq!(tu["name"], "get_weather");
    let id = tu["toolUseId"].as_str().unwrap();
    assert!(id.starts_with("tooluse_"));
    assert!(tu["input"]["city"].is_string());
    assert_eq!(
        r["usage"]["outputTokens"].as_u64().unwrap(),
        o200k(&tu["input"].to_string())
    );

    // Streamed: contentBlockStart with the tool, input string fragments, stop.
    let (events, _) = decode_event_stream(&post(&h, true, &ask).await.bytes);
    let start = events
        .iter()
        .find(|e| e.event_type() == "contentBlockStart")
        .unwrap();
    assert_eq!(start.payload["contentBlockIndex"], 0);
    assert_eq!(
        start.payload["start"]["toolUse"],
        json!({"toolUseId": id, "name": "get_weather"})
    );
    let input: String = events
        .iter()
        .filter(|e| e.event_type() == "contentBlockDelta")
        .map(|e| {
            e.payload["delta"]["toolUse"]["input"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&input).unwrap(), tu["input"]);
    let stop = events
        .iter()
        .find(|e| e.event_type() == "messageStop")
        .unwrap();
    assert_eq!(stop.payload["stopReason"], "tool_use");

    // toolChoice names the other tool.
    let named = merged(
        ask.clone(),
        json!({"toolConfig": merged(tools(), json!({"toolChoice": {"tool": {"name": "get_time"}}}))}),
    );
    let r = post(&h, false, &named).await.json();
    assert_eq!(
        r["output"]["message"]["content"][0]["toolUse"]["name"],
        "get_time"
    );

    // The tool result goes back in a user turn: a text answer.
    let answer = body(json!({"toolConfig": tools(), "messages": [
        {"role": "user", "content": [{"text": "Weather in Paris?"}]},
        {"role": "assistant", "content": [{"toolUse": tu}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": id,
            "content": [{"text": "18C"}], "status": "success"}}]}]}));
    let r = post(&h, false, &answer).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
    let r = r.json();
    assert_eq!(r["stopReason"], "end_turn");
    assert!(r["output"]["message"]["content"][0]["text"].is_string());
}

fn bedrock_error(r: &Raw, status: u16, kind: &str) -> String {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.bytes));
    let t = r.headers["x-amzn-errortype"].to_str().unwrap();
    assert_eq!(t.split(':').next(), Some(kind), "{t}");
    r.json()["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn validation_and_auth() {
    let h = sim(SimConfig::default()).await;
    let alt = body(json!({"messages": [
        {"role": "user", "content": [{"text": "a"}]},
        {"role": "user", "content": [{"text": "b"}]}]}));
    let m = bedrock_error(&post(&h, false, &alt).await, 400, "ValidationException");
    assert!(m.contains("must alternate between user and assistant"));
    let history = body(json!({"messages": [
        {"role": "user", "content": [{"text": "a"}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "f", "input": {}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "x"}]}}]}]}));
    let m = bedrock_error(&post(&h, false, &history).await, 400, "ValidationException");
    assert!(m.contains("toolConfig field must be defined"));
    let m = bedrock_error(
        &post(
            &h,
            true,
            &body(json!({"inferenceConfig": {"maxTokens": 0}})),
        )
        .await,
        400,
        "ValidationException",
    );
    assert!(m.contains("maxTokens"));
    // No Authorization at all.
    let r = post_raw(&url(&h, false), &[], &body(json!({}))).await;
    bedrock_error(&r, 403, "MissingAuthenticationTokenException");
    // Unknown operations answer in Bedrock's shape.
    let r = post_raw(
        &format!("http://{}/model/{MODEL_PATH}/invoke", h.addr),
        &[SIGV4],
        &json!({}),
    )
    .await;
    bedrock_error(&r, 404, "UnknownOperationException");
    assert_eq!(h.stats().client_errors, 5);

    // With a key configured, SigV4 still passes unverified and a Bearer key must match.
    h.set_config(SimConfig {
        api_key: Some("bedrock-key".into()),
        ..SimConfig::default()
    });
    assert_eq!(post(&h, false, &body(json!({}))).await.status, 200);
    let r = post_raw(
        &url(&h, false),
        &[("authorization", "Bearer nope")],
        &body(json!({})),
    )
    .await;
    bedrock_error(&r, 403, "UnrecognizedClientException");
    let r = post_raw(
        &url(&h, false),
        &[("authorization", "Bearer bedrock-key")],
        &body(json!({})),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn faults_and_cut_streams() {
    for (status, kind) in [
        (429, "ThrottlingException"),
        (503, "ServiceUnavailableException"),
        (500, "InternalServerException"),
    ] {
        let h = sim(SimConfig {
            fail_rate: 1.0,
            fail_status: status,
            retry_after_secs: Some(4),
            ..SimConfig::default()
        })
        .await;
        for stream in [false, true] {
            let r = post(&h, stream, &body(json!({}))).await;
            bedrock_error(&r, status, kind);
            assert!(r.headers.get("retry-after").is_none());
        }
    }

    let h = sim(SimConfig {
        cut_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    let r = post(&h, true, &body(json!({}))).await;
    assert_eq!(r.status, 200);
    assert!(r.errored);
    let (events, _) = decode_event_stream(&r.bytes);
    assert!(!events.is_empty());
    assert_eq!(events[0].event_type(), "messageStart");
    assert!(
        events
            .iter()
            .all(|e| e.event_type() != "messageStop" && e.event_type() != "metadata")
    );
    assert_eq!(h.stats().streams_cut, 1);
}

#[tokio::test]
async fn cached_tokens_are_excluded_from_input_tokens() {
    let h = sim(SimConfig {
        cached_prompt_tokens: 5,
        ..SimConfig::default()
    })
    .await;
    let b = body(json!({}));
    let p = prompt_of(&b);
    let u = post(&h, false, &b).await.json()["usage"].clone();
    assert_eq!(u["inputTokens"].as_u64().unwrap(), p - 5);
    assert_eq!(u["cacheReadInputTokens"], 5);
    assert_eq!(u["cacheWriteInputTokens"], 0);
    assert_eq!(u["totalTokens"].as_u64().unwrap(), p + 16);
    let (events, _) = decode_event_stream(&post(&h, true, &b).await.bytes);
    assert_eq!(events.last().unwrap().payload["usage"], u);
}

#[tokio::test]
async fn prompt_cache_reads_are_excluded_from_input_tokens() {
    let h = sim(SimConfig {
        prompt_cache: true,
        ..SimConfig::default()
    })
    .await;
    let b = body(json!({"system": [{"text": long_text("bedrock", 10_000)}]}));
    let p = prompt_of(&b);
    let u = post(&h, false, &b).await.json()["usage"].clone();
    assert_eq!(u["inputTokens"].as_u64().unwrap(), p);
    let cached = (p - 3) / 128 * 128;
    assert!(cached >= 1024);
    let u = post(&h, false, &b).await.json()["usage"].clone();
    assert_eq!(u["cacheReadInputTokens"].as_u64().unwrap(), cached);
    assert_eq!(u["inputTokens"].as_u64().unwrap(), p - cached);
    assert_eq!(u["totalTokens"].as_u64().unwrap(), p + 16);
    let (events, _) = decode_event_stream(&post(&h, true, &b).await.bytes);
    assert_eq!(events.last().unwrap().payload["usage"], u);
}
