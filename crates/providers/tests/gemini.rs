//! Golden fixtures for the Gemini adapter (Generative Language API `v1beta`, see
//! `tests/fixtures/gemini/README.md`), in each direction: the Gemini request the adapter sends
//! for a canonical request (byte-exact JSON), the canonical answer it builds from a Gemini
//! response (body, usage, streamed chunks), error mapping, and where the API key travels. The
//! upstream is a raw TCP server that records each request and replays a fixture, so nothing
//! between the adapter and the socket is mocked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may panic

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_providers::{
    ChatCall, ChatResponse, EmbeddingsCall, Provider, ProviderSettings, UpstreamError,
    UpstreamErrorKind, build,
};
use tollgate_types::ProviderKind;

const KEY: &str = "AIzaGoldenSecret-0123456789";

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gemini")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A fixture's JSON re-serialised compactly (key order kept: serde_json `preserve_order`).
fn compact(name: &str) -> String {
    let v: Value = serde_json::from_str(&fixture(name)).unwrap();
    v.to_string()
}

fn obj(s: &str) -> Arc<Map<String, Value>> {
    Arc::new(serde_json::from_str(s).unwrap())
}

/// A canonical body with `created` checked (a plausible Unix time) and zeroed, re-serialised.
fn normalized(body: &[u8]) -> String {
    let mut v: Value = serde_json::from_slice(body).unwrap();
    let created = v["created"].as_u64().expect("created is an integer");
    assert!(created > 1_700_000_000, "created = {created}");
    v["created"] = json!(0);
    v.to_string()
}

#[derive(Debug, Default, Clone)]
struct Captured {
    request_line: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Captured {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

type Seen = Arc<Mutex<Vec<Captured>>>;

/// How the canned response body is delimited.
#[derive(Clone, Copy)]
enum Framing {
    /// `content-length` (ordinary JSON answers).
    Length,
    /// No length; the body ends when the server closes the connection — how a Gemini SSE
    /// stream ends, cleanly or (when the fixture is truncated) cut.
    Close,
}

/// Serves one canned response per connection and records each request.
#[expect(
    clippy::disallowed_methods,
    reason = "a fake upstream for one test: its tasks die with the test's runtime and record no ledger rows"
)]
async fn upstream(
    status: u16,
    content_type: &str,
    body: String,
    framing: Framing,
) -> (String, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    let content_type = content_type.to_string();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut tmp = [0u8; 8192];
            let head_end = loop {
                let n = sock.read(&mut tmp).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&tmp[..n]);
                if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break p + 4;
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
            let mut lines = head.split("\r\n");
            let request_line = lines.next().unwrap_or_default().to_string();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            while buf.len() < head_end + len {
                let n = sock.read(&mut tmp).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            let end = buf.len().min(head_end + len);
            seen2.lock().unwrap().push(Captured {
                request_line,
                headers,
                body: String::from_utf8_lossy(&buf[head_end..end]).into_owned(),
            });
            let length = match framing {
                Framing::Length => format!("content-length: {}\r\n", body.len()),
                Framing::Close => String::new(),
            };
            let resp = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n{length}connection: close\r\n\r\n{body}"
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        }
    });
    (format!("http://{addr}"), seen)
}

fn provider(base: &str) -> Arc<dyn Provider> {
    build(ProviderSettings {
        api_key: Some(KEY.into()),
        ..ProviderSettings::new("gem", ProviderKind::Gemini, base)
    })
    .unwrap()
}

/// The credential travels only in `x-goog-api-key`.
fn assert_key_placement(req: &Captured) {
    assert!(!req.request_line.contains(KEY), "{}", req.request_line);
    assert!(!req.request_line.contains("key="), "{}", req.request_line);
    assert_eq!(req.header("x-goog-api-key"), Some(KEY));
    assert_eq!(req.header("authorization"), None);
    assert_eq!(req.header("content-type"), Some("application/json"));
}

async fn complete(
    p: &Arc<dyn Provider>,
    body: Arc<Map<String, Value>>,
) -> tollgate_providers::Completion {
    match p
        .chat(ChatCall {
            body,
            stream: false,
        })
        .await
    {
        Ok(ChatResponse::Complete(c)) => c,
        Ok(ChatResponse::Stream { .. }) => panic!("expected a complete answer"),
        Err(e) => panic!("{e}"),
    }
}

async fn chat_err(p: &Arc<dyn Provider>, body: &str, stream: bool) -> UpstreamError {
    match p
        .chat(ChatCall {
            body: obj(body),
            stream,
        })
        .await
    {
        Err(e) => e,
        Ok(_) => panic!("expected an error"),
    }
}

/// Collects a stream: the chunks, then the error that ended it (if any).
async fn drain(
    p: &Arc<dyn Provider>,
    body: Arc<Map<String, Value>>,
) -> (Vec<String>, Option<UpstreamError>) {
    let ChatResponse::Stream { mut chunks, .. } =
        p.chat(ChatCall { body, stream: true }).await.unwrap()
    else {
        panic!("expected a stream");
    };
    let mut got = Vec::new();
    while let Some(item) = chunks.next().await {
        match item {
            Ok(c) => got.push(String::from_utf8(c.to_vec()).unwrap()),
            Err(e) => {
                assert!(chunks.next().await.is_none(), "an error ends the stream");
                return (got, Some(e));
            }
        }
    }
    (got, None)
}

#[tokio::test]
async fn builds_with_full_capabilities() {
    let p = provider("https://generativelanguage.googleapis.com/");
    assert_eq!(p.kind(), ProviderKind::Gemini);
    assert_eq!(p.name(), "gem");
    let c = p.capabilities();
    assert!(c.chat && c.streaming && c.tools && c.images && c.json_schema && c.embeddings);
}

/// Canonical request in → Gemini request out, byte-exact, for every request fixture.
#[tokio::test]
async fn requests_out() {
    for name in [
        "chat_plain",
        "chat_multiturn",
        "chat_tools",
        "chat_images",
        "chat_json_schema",
        "chat_generation_config",
    ] {
        let (base, seen) = upstream(
            200,
            "application/json",
            fixture("chat_plain.response.json"),
            Framing::Length,
        )
        .await;
        let p = provider(&base);
        let body = obj(&fixture(&format!("{name}.request.json")));
        let model = body["model"].as_str().unwrap().to_string();
        complete(&p, body).await;
        let req = seen.lock().unwrap()[0].clone();
        assert_eq!(
            req.request_line,
            format!("POST /v1beta/models/{model}:generateContent HTTP/1.1"),
            "{name}"
        );
        assert_eq!(
            req.body,
            compact(&format!("{name}.upstream.json")),
            "{name}"
        );
        assert_key_placement(&req);
    }
}

/// Gemini response back → canonical body and usage.
#[tokio::test]
async fn responses_back() {
    // (fixture, (input, cached, output, reasoning))
    let cases = [
        ("chat_plain", (4, 0, 2, 0)),
        ("chat_tools", (126, 64, 80, 50)),
        ("chat_generation_config", (9, 0, 240, 200)),
        ("blocked", (12, 0, 0, 0)),
    ];
    for (name, (input, cached, output, reasoning)) in cases {
        let (base, _) = upstream(
            200,
            "application/json",
            fixture(&format!("{name}.response.json")),
            Framing::Length,
        )
        .await;
        let p = provider(&base);
        let c = complete(
            &p,
            obj(r#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"hi"}]}"#),
        )
        .await;
        assert_eq!(
            normalized(&c.body),
            compact(&format!("{name}.canonical.json")),
            "{name}"
        );
        let u = c.usage.expect("usage");
        assert_eq!(
            (
                u.input_tokens,
                u.cached_input_tokens,
                u.cache_write_input_tokens,
                u.output_tokens,
                u.reasoning_tokens
            ),
            (input, cached, 0, output, reasoning),
            "{name}"
        );
        // Gemini sends no request-id header; the responseId stands in.
        assert!(
            c.upstream_request_id
                .as_deref()
                .unwrap()
                .starts_with("resp-"),
            "{name}"
        );
    }
}

/// The canonical answer with tool calls, replayed as history with tool results, becomes the
/// Gemini turns it came from: names resolved from the synthesized ids, signatures replayed.
#[tokio::test]
async fn tool_calls_round_trip() {
    let answer: Value = serde_json::from_str(&fixture("chat_tools.canonical.json")).unwrap();
    let message = answer["choices"][0]["message"].clone();
    let ids: Vec<String> = message["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    let request = json!({
        "model": "gemini-3-flash-preview",
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            message,
            {"role": "tool", "tool_call_id": ids[1], "content": "24C"},
            {"role": "tool", "tool_call_id": ids[0], "content": "18C"},
        ]
    });
    let (base, seen) = upstream(
        200,
        "application/json",
        fixture("chat_plain.response.json"),
        Framing::Length,
    )
    .await;
    let p = provider(&base);
    complete(&p, Arc::new(request.as_object().unwrap().clone())).await;
    let sent: Value = serde_json::from_str(&seen.lock().unwrap()[0].body).unwrap();
    assert_eq!(
        sent["contents"],
        json!([
            {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
            {"role": "model", "parts": [
                {"text": "Checking both cities."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris", "unit": "C"}},
                 "thoughtSignature": "c2lnLTE="},
                {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"output": "24C"}}},
                {"functionResponse": {"name": "get_weather", "response": {"output": "18C"}}}
            ]}
        ])
    );
}

/// Stream: request out to `:streamGenerateContent?alt=sse`, exact canonical chunks back, ending
/// with one usage-only chunk built from the last (cumulative) usageMetadata.
#[tokio::test]
async fn stream_out_and_chunks_back() {
    let (base, seen) = upstream(
        200,
        "text/event-stream",
        fixture("chat_stream.response.sse"),
        Framing::Close,
    )
    .await;
    let p = provider(&base);
    let (got, err) = drain(&p, obj(&fixture("chat_stream.request.json"))).await;
    assert!(err.is_none(), "{err:?}");
    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(
        req.request_line,
        "POST /v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse HTTP/1.1"
    );
    assert_eq!(req.header("accept"), Some("text/event-stream"));
    assert_eq!(req.body, compact("chat_stream.upstream.json"));
    assert_key_placement(&req);
    // One `created` for the whole stream.
    let created: Vec<u64> = got
        .iter()
        .map(|c| {
            serde_json::from_str::<Value>(c).unwrap()["created"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(created.windows(2).all(|w| w[0] == w[1]));
    let got: Vec<String> = got.iter().map(|c| normalized(c.as_bytes())).collect();
    let expected: Vec<String> = fixture("chat_stream.chunks.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    assert_eq!(got, expected);
}

/// A connection that closes before any finishReason is a cut stream, after the chunks that did
/// arrive.
#[tokio::test]
async fn cut_stream_is_broken() {
    let (base, _) = upstream(
        200,
        "text/event-stream",
        fixture("chat_stream_cut.response.sse"),
        Framing::Close,
    )
    .await;
    let p = provider(&base);
    let (got, err) = drain(&p, obj(&fixture("chat_stream.request.json"))).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let e = err.expect("the stream must end with an error");
    assert!(matches!(e.kind, UpstreamErrorKind::Broken(_)), "{e:?}");
    assert!(e.retryable());
    assert_eq!(e.to_api_error(&[KEY]).code.as_str(), "upstream_error");
}

/// An error event mid-stream ends it with an in-stream error carrying Google's message.
#[tokio::test]
async fn error_event_mid_stream() {
    let (base, _) = upstream(
        200,
        "text/event-stream",
        fixture("chat_stream_error.response.sse"),
        Framing::Close,
    )
    .await;
    let p = provider(&base);
    let (got, err) = drain(&p, obj(&fixture("chat_stream.request.json"))).await;
    assert_eq!(got.len(), 1);
    match err.map(|e| e.kind) {
        Some(UpstreamErrorKind::InStream { message, .. }) => assert_eq!(
            message,
            "The model is overloaded. Please try again later. (status: UNAVAILABLE)"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn blocked_prompt_in_a_stream() {
    let sse = format!("data: {}\r\n\r\n", compact("blocked.response.json"));
    let (base, _) = upstream(200, "text/event-stream", sse, Framing::Close).await;
    let p = provider(&base);
    let (got, err) = drain(&p, obj(&fixture("chat_plain.request.json"))).await;
    assert!(err.is_none(), "{err:?}");
    let got: Vec<Value> = got
        .iter()
        .map(|c| serde_json::from_str(c).unwrap())
        .collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(got[1]["choices"], json!([]));
    assert_eq!(got[1]["usage"]["prompt_tokens"], 12);
}

#[tokio::test]
async fn embeddings_float_and_base64() {
    for (format, expected) in [
        ("float", "embeddings.canonical.json"),
        ("base64", "embeddings_base64.canonical.json"),
    ] {
        let (base, seen) = upstream(
            200,
            "application/json",
            fixture("embeddings.response.json"),
            Framing::Length,
        )
        .await;
        let p = provider(&base);
        let mut body = (*obj(&fixture("embeddings.request.json"))).clone();
        body.insert("encoding_format".into(), json!(format));
        let c = p
            .embeddings(EmbeddingsCall {
                body: Arc::new(body),
            })
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8(c.body.to_vec()).unwrap(),
            compact(expected),
            "{format}"
        );
        // Gemini reports no token counts for embeddings: the gateway estimates.
        assert_eq!(c.usage, None);
        let req = seen.lock().unwrap()[0].clone();
        assert_eq!(
            req.request_line,
            "POST /v1beta/models/gemini-embedding-001:batchEmbedContents HTTP/1.1"
        );
        assert_eq!(req.body, compact("embeddings.upstream.json"));
        assert_key_placement(&req);
    }
    // The base64 strings decode (as the OpenAI SDK does) to the float vectors.
    let b64: Value = serde_json::from_str(&fixture("embeddings_base64.canonical.json")).unwrap();
    let floats: Value = serde_json::from_str(&fixture("embeddings.canonical.json")).unwrap();
    for i in 0..2 {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64["data"][i]["embedding"].as_str().unwrap())
            .unwrap();
        let decoded: Vec<f64> = bytes
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect();
        let want: Vec<f64> = floats["data"][i]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(decoded, want);
    }
}

#[tokio::test]
async fn embeddings_usage_is_kept_when_reported() {
    let (base, _) = upstream(
        200,
        "application/json",
        r#"{"embeddings":[{"values":[0.5]}],"usageMetadata":{"promptTokenCount":3}}"#.into(),
        Framing::Length,
    )
    .await;
    let c = provider(&base)
        .embeddings(EmbeddingsCall {
            body: obj(r#"{"model":"gemini-embedding-001","input":"hi"}"#),
        })
        .await
        .unwrap();
    assert_eq!(c.usage.map(|u| u.input_tokens), Some(3));
    let body: Value = serde_json::from_slice(&c.body).unwrap();
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 3, "total_tokens": 3})
    );
}

/// What the adapter cannot express is refused before any network call, as a 400.
#[tokio::test]
async fn untranslatable_requests_are_refused_locally() {
    let (base, seen) = upstream(200, "application/json", "{}".into(), Framing::Length).await;
    let p = provider(&base);
    let e = p
        .embeddings(EmbeddingsCall {
            body: obj(r#"{"model":"gemini-embedding-001","input":[[101,202],[303]]}"#),
        })
        .await
        .unwrap_err();
    assert!(matches!(e.kind, UpstreamErrorKind::Unsupported(_)), "{e:?}");
    let api = e.to_api_error(&[]);
    assert_eq!((api.status(), api.code.as_str()), (400, "invalid_request"));
    assert!(api.message.contains("token-array"), "{}", api.message);
    let e = chat_err(
        &p,
        r#"{"model":"gemini-2.5-flash","messages":[{"role":"tool","tool_call_id":"call_zz","content":"1"}]}"#,
        false,
    )
    .await;
    assert!(matches!(e.kind, UpstreamErrorKind::Unsupported(_)), "{e:?}");
    assert!(!e.retryable());
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing may reach the upstream"
    );
}

#[tokio::test]
async fn error_statuses_are_mapped() {
    const REQ: &str = r#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"hi"}]}"#;
    // 429 RESOURCE_EXHAUSTED: rate limited, RetryInfo becomes Retry-After.
    let (base, _) = upstream(
        429,
        "application/json",
        fixture("error_429.json"),
        Framing::Length,
    )
    .await;
    let e = chat_err(&provider(&base), REQ, false).await;
    match &e.kind {
        UpstreamErrorKind::Status {
            status,
            retry_after,
            ..
        } => {
            assert_eq!(
                (*status, *retry_after),
                (429, Some(Duration::from_secs(37)))
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(e.retryable());
    let api = e.to_api_error(&[KEY]);
    assert_eq!(
        (api.status(), api.code.as_str()),
        (429, "upstream_rate_limited")
    );
    assert_eq!(api.retry_after_secs, Some(37));
    assert!(api.message.contains("provider 'gem'"), "{}", api.message);
    assert!(
        api.message.contains("(status: RESOURCE_EXHAUSTED)"),
        "{}",
        api.message
    );

    // 400 INVALID_ARGUMENT: the request was bad; Google's message is relayed. Streaming too.
    for stream in [false, true] {
        let (base, _) = upstream(
            400,
            "application/json",
            fixture("error_400.json"),
            Framing::Length,
        )
        .await;
        let e = chat_err(&provider(&base), REQ, stream).await;
        assert!(!e.retryable());
        let api = e.to_api_error(&[KEY]);
        assert_eq!(
            (api.status(), api.code.as_str()),
            (400, "upstream_bad_request")
        );
        assert!(api.message.contains("candidate_count"), "{}", api.message);
        assert!(
            api.message.contains("(status: INVALID_ARGUMENT)"),
            "{}",
            api.message
        );
    }

    // 400 API_KEY_INVALID: the gateway's credential, not the caller's request.
    let (base, _) = upstream(
        400,
        "application/json",
        fixture("error_api_key.json"),
        Framing::Length,
    )
    .await;
    let e = chat_err(&provider(&base), REQ, false).await;
    assert!(
        matches!(e.kind, UpstreamErrorKind::Status { status: 401, .. }),
        "{e:?}"
    );
    let api = e.to_api_error(&[KEY]);
    assert_eq!(
        (api.status(), api.code.as_str()),
        (502, "upstream_auth_failed")
    );

    // 503 UNAVAILABLE: overloaded, retryable.
    let (base, _) = upstream(
        503,
        "application/json",
        r#"{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}"#
            .into(),
        Framing::Length,
    )
    .await;
    let e = chat_err(&provider(&base), REQ, false).await;
    assert!(e.retryable());
    let api = e.to_api_error(&[KEY]);
    assert_eq!(
        (api.status(), api.code.as_str()),
        (503, "upstream_unavailable")
    );

    // A provider echoing the key back never gets it to the client.
    let echo = format!(
        r#"{{"error":{{"code":400,"message":"bad key {KEY}","status":"INVALID_ARGUMENT"}}}}"#
    );
    let (base, _) = upstream(400, "application/json", echo, Framing::Length).await;
    let api = chat_err(&provider(&base), REQ, false)
        .await
        .to_api_error(&[KEY]);
    assert!(!api.message.contains("0123456789"), "{}", api.message);
}
