//! Golden fixtures for the Anthropic adapter (Messages API, `anthropic-version: 2023-06-01`),
//! in each direction: the Messages request the adapter sends for a canonical (OpenAI Chat)
//! request, the canonical answer it hands back (non-streaming body and usage; streamed chunks),
//! the native `/v1/messages` passthrough, and error mapping (529, 400, in-stream error, cut
//! stream). The upstream is a raw TCP server that records the request and replays a fixture, so
//! nothing between the adapter and the socket is mocked. See `fixtures/anthropic/README.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may panic

use std::path::Path;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_providers::{
    ChatCall, ChatResponse, EmbeddingsCall, MessagesCall, MessagesResponse, OutputLimits, Provider,
    ProviderSettings, UpstreamError, UpstreamErrorKind, build,
};
use tollgate_types::ProviderKind;

const KEY: &str = "sk-ant-golden-secret-0123456789";

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/anthropic")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn json_obj(s: &str) -> Map<String, Value> {
    serde_json::from_str(s).unwrap()
}

/// A pretty-printed fixture in the compact form serde_json writes (key order kept), for
/// byte-exact comparison with what went over the wire.
fn compact(s: &str) -> String {
    serde_json::to_string(&serde_json::from_str::<Value>(s).unwrap()).unwrap()
}

#[derive(Debug, Default, Clone)]
struct Captured {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Captured {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }
}

/// How the canned response is framed.
#[derive(Clone, Copy, PartialEq)]
enum Framing {
    /// `content-length`, the whole body.
    Complete,
    /// No length: the body ends when the connection closes (used to cut streams cleanly, so
    /// the adapter must notice the missing `message_stop` itself).
    CloseDelimited,
}

struct Canned {
    status: u16,
    content_type: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: String,
    framing: Framing,
}

impl Canned {
    fn ok(content_type: &'static str, body: String) -> Self {
        Canned {
            status: 200,
            content_type,
            headers: Vec::new(),
            body,
            framing: Framing::Complete,
        }
    }
}

/// Serves one canned HTTP response per connection and records each request.
#[expect(
    clippy::disallowed_methods,
    reason = "a fake upstream for one test: its tasks die with the test's runtime and record no ledger rows"
)]
async fn upstream(canned: Canned) -> (String, Arc<Mutex<Vec<Captured>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut tmp = [0u8; 8192];
            let head_end = loop {
                let n = sock.read(&mut tmp).await.unwrap();
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
                .map(|(_, v)| v.parse().unwrap())
                .unwrap_or(0);
            while buf.len() < head_end + len {
                let n = sock.read(&mut tmp).await.unwrap();
                buf.extend_from_slice(&tmp[..n]);
            }
            seen2.lock().unwrap().push(Captured {
                request_line,
                headers,
                body: buf[head_end..head_end + len].to_vec(),
            });
            let mut resp = format!(
                "HTTP/1.1 {} X\r\ncontent-type: {}\r\nrequest-id: req_upstream_ant_1\r\nconnection: close\r\n",
                canned.status, canned.content_type
            );
            for (k, v) in &canned.headers {
                resp.push_str(&format!("{k}: {v}\r\n"));
            }
            if canned.framing == Framing::Complete {
                resp.push_str(&format!("content-length: {}\r\n", canned.body.len()));
            }
            resp.push_str("\r\n");
            resp.push_str(&canned.body);
            sock.write_all(resp.as_bytes()).await.unwrap();
            let _ = sock.shutdown().await;
        }
    });
    (format!("http://{addr}"), seen)
}

fn provider(base_url: &str) -> Arc<dyn Provider> {
    build(ProviderSettings {
        api_key: Some(KEY.into()),
        // The limits the binary supplies (the built-in model table), so the fixtures show the
        // `max_tokens` a deployment really sends.
        output_limits: OutputLimits::new(tollgate_pricing::max_output_tokens),
        ..ProviderSettings::new("claude", ProviderKind::Anthropic, base_url)
    })
    .unwrap()
}

async fn complete(p: &Arc<dyn Provider>, request: &str) -> tollgate_providers::Completion {
    let call = ChatCall {
        body: Arc::new(json_obj(request)),
        stream: false,
    };
    match p.chat(call).await {
        Ok(ChatResponse::Complete(c)) => c,
        Ok(ChatResponse::Stream { .. }) => panic!("expected a complete answer"),
        Err(e) => panic!("unexpected error: {e:?}"),
    }
}

/// Drains a chunk stream: the chunks (with `created` normalised to 0) and the error that ended
/// it, if any.
async fn drain(
    mut chunks: tollgate_providers::ChunkStream,
) -> (Vec<String>, Option<UpstreamError>) {
    let mut got = Vec::new();
    while let Some(c) = chunks.next().await {
        match c {
            Ok(bytes) => {
                let mut v: Value = serde_json::from_slice(&bytes).unwrap();
                assert!(
                    v["created"].as_u64().unwrap() > 1_700_000_000,
                    "created is now"
                );
                v["created"] = 0.into();
                got.push(serde_json::to_string(&v).unwrap());
            }
            Err(e) => return (got, Some(e)),
        }
    }
    (got, None)
}

fn expected_chunks() -> Vec<String> {
    fixture("stream.expected.jsonl")
        .lines()
        .map(str::to_string)
        .collect()
}

/// Every non-streaming request fixture: canonical in, exact Anthropic body out, on the right
/// path with the right headers.
#[tokio::test]
async fn requests_out_match_fixtures() {
    for case in [
        "plain",
        "multiturn",
        "tools",
        "images",
        "json_schema",
        "sampling",
    ] {
        let (base, seen) = upstream(Canned::ok(
            "application/json",
            fixture("message.response.json"),
        ))
        .await;
        // A base URL with a path prefix (a corporate proxy) keeps it.
        let p = provider(&format!("{base}/anthropic/"));
        complete(&p, &fixture(&format!("{case}.request.json"))).await;
        let req = seen.lock().unwrap()[0].clone();
        assert_eq!(
            req.request_line, "POST /anthropic/v1/messages HTTP/1.1",
            "{case}"
        );
        assert_eq!(
            String::from_utf8(req.body.clone()).unwrap(),
            compact(&fixture(&format!("{case}.upstream.json"))),
            "{case}: request body"
        );
        assert_eq!(req.header("x-api-key").as_deref(), Some(KEY));
        assert_eq!(
            req.header("anthropic-version").as_deref(),
            Some("2023-06-01")
        );
        assert_eq!(
            req.header("content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(req.header("authorization"), None);
    }
}

#[tokio::test]
async fn response_back_is_canonical_with_inclusive_cache_usage() {
    let (base, _) = upstream(Canned::ok(
        "application/json",
        fixture("message.response.json"),
    ))
    .await;
    let p = provider(&base);
    let c = complete(&p, &fixture("tools.request.json")).await;
    assert_eq!(c.upstream_request_id.as_deref(), Some("req_upstream_ant_1"));
    let mut body: Value = serde_json::from_slice(&c.body).unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
    body["created"] = 0.into();
    assert_eq!(
        serde_json::to_string(&body).unwrap(),
        compact(&fixture("message.expected.json"))
    );
    let u = c.usage.unwrap();
    // 57 uncached + 2048 read + 1024 written.
    assert_eq!(u.input_tokens, 3129);
    assert_eq!(u.cached_input_tokens, 2048);
    assert_eq!(u.cache_write_input_tokens, 1024);
    assert_eq!(u.uncached_input_tokens(), 57);
    assert_eq!(u.output_tokens, 143);
    // The body's usage reads back to the same canonical usage through the peek the gateway uses.
    let peek: tollgate_types::canonical::ResponsePeek = serde_json::from_slice(&c.body).unwrap();
    assert_eq!(peek.usage.unwrap().to_usage(), u);
}

#[tokio::test]
async fn stream_request_out_and_chunks_back() {
    let (base, seen) = upstream(Canned::ok(
        "text/event-stream",
        fixture("stream.response.sse"),
    ))
    .await;
    let p = provider(&base);
    let call = ChatCall {
        body: Arc::new(json_obj(&fixture("stream.request.json"))),
        stream: true,
    };
    let ChatResponse::Stream {
        chunks,
        upstream_request_id,
    } = p.chat(call).await.unwrap()
    else {
        panic!("expected a stream");
    };
    assert_eq!(upstream_request_id.as_deref(), Some("req_upstream_ant_1"));
    let (got, err) = drain(chunks).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, expected_chunks());

    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(
        String::from_utf8(req.body.clone()).unwrap(),
        compact(&fixture("stream.upstream.json"))
    );
    assert_eq!(req.header("accept").as_deref(), Some("text/event-stream"));

    // The tool-call fragments concatenate to the JSON the model produced.
    let mut args = [String::new(), String::new()];
    for line in &got {
        let v: Value = serde_json::from_str(line).unwrap();
        for tc in v["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = tc["index"].as_u64().unwrap() as usize;
            args[i].push_str(tc["function"]["arguments"].as_str().unwrap());
        }
    }
    assert_eq!(
        serde_json::from_str::<Value>(&args[0]).unwrap(),
        serde_json::json!({"city": "Paris", "unit": "celsius"})
    );
    assert_eq!(
        serde_json::from_str::<Value>(&args[1]).unwrap(),
        serde_json::json!({"city": "Berlin"})
    );
}

#[tokio::test]
async fn cut_stream_is_broken() {
    let full = fixture("stream.response.sse");
    let cut = &full[..full.find("event: message_delta").unwrap()];
    let (base, _) = upstream(Canned {
        framing: Framing::CloseDelimited,
        ..Canned::ok("text/event-stream", cut.to_string())
    })
    .await;
    let p = provider(&base);
    let call = ChatCall {
        body: Arc::new(json_obj(&fixture("stream.request.json"))),
        stream: true,
    };
    let ChatResponse::Stream { chunks, .. } = p.chat(call).await.unwrap() else {
        panic!("expected a stream");
    };
    let (got, err) = drain(chunks).await;
    // Everything before the cut was relayed; no finish or usage chunk was invented.
    assert_eq!(got, expected_chunks()[..12].to_vec());
    let err = err.expect("a cut stream ends with an error");
    assert!(
        matches!(&err.kind, UpstreamErrorKind::Broken(m) if m.contains("message_stop")),
        "{err:?}"
    );
    assert!(err.retryable());
}

#[tokio::test]
async fn error_event_mid_stream_is_in_stream_error() {
    let full = fixture("stream.response.sse");
    let head = &full[..full.find("event: content_block_stop").unwrap()];
    let body = format!(
        "{head}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n"
    );
    let (base, _) = upstream(Canned::ok("text/event-stream", body)).await;
    let p = provider(&base);
    let call = ChatCall {
        body: Arc::new(json_obj(&fixture("stream.request.json"))),
        stream: true,
    };
    let ChatResponse::Stream { chunks, .. } = p.chat(call).await.unwrap() else {
        panic!("expected a stream");
    };
    let (got, err) = drain(chunks).await;
    assert_eq!(got, expected_chunks()[..3].to_vec());
    let err = err.unwrap();
    match &err.kind {
        UpstreamErrorKind::InStream { message, .. } => {
            assert_eq!(message, "Overloaded (type: overloaded_error)")
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.retryable(), "errors after a 200 are never retried");
}

#[tokio::test]
async fn overloaded_529_is_retryable_and_maps_to_503() {
    let (base, _) = upstream(Canned {
        status: 529,
        content_type: "application/json",
        headers: vec![("retry-after", "2")],
        body: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#.into(),
        framing: Framing::Complete,
    })
    .await;
    let p = provider(&base);
    let Err(e) = p
        .chat(ChatCall {
            body: Arc::new(json_obj(&fixture("plain.request.json"))),
            stream: true,
        })
        .await
    else {
        panic!("expected an error");
    };
    assert!(matches!(
        e.kind,
        UpstreamErrorKind::Status { status: 529, .. }
    ));
    assert!(e.retryable());
    let api = e.to_api_error(&[KEY]);
    assert_eq!(api.status(), 503);
    assert_eq!(api.code.as_str(), "upstream_unavailable");
    assert_eq!(api.retry_after_secs, Some(2));
    assert!(api.message.contains("provider 'claude'"), "{}", api.message);
    assert!(api.message.contains("Overloaded"), "{}", api.message);
}

#[tokio::test]
async fn invalid_request_400_maps_to_upstream_bad_request() {
    let body = format!(
        r#"{{"type":"error","error":{{"type":"invalid_request_error","message":"messages.0.content.0.type: Input tag 'input_audio' found using 'type' does not match any of the expected tags (key {KEY})"}}}}"#
    );
    let (base, _) = upstream(Canned {
        status: 400,
        content_type: "application/json",
        headers: Vec::new(),
        body,
        framing: Framing::Complete,
    })
    .await;
    let p = provider(&base);
    let Err(e) = p
        .chat(ChatCall {
            body: Arc::new(json_obj(
                r#"{"model":"claude-haiku-4-5","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}]}]}"#,
            )),
            stream: false,
        })
        .await
    else {
        panic!("expected an error");
    };
    assert!(!e.retryable());
    let api = e.to_api_error(&[KEY]);
    assert_eq!(api.status(), 400);
    assert_eq!(api.code.as_str(), "upstream_bad_request");
    assert!(api.message.contains("input_audio"), "{}", api.message);
    assert!(!api.message.contains("0123456789"), "{}", api.message);
}

#[tokio::test]
async fn native_passthrough_complete() {
    let (base, seen) = upstream(Canned::ok(
        "application/json",
        fixture("native.response.json"),
    ))
    .await;
    let p = provider(&base);
    let request = fixture("native.request.json");
    let call = MessagesCall {
        body: Arc::new(json_obj(&request)),
        stream: false,
        headers: vec![
            ("anthropic-version".into(), "2023-06-01".into()),
            (
                "anthropic-beta".into(),
                "extended-cache-ttl-2025-04-11".into(),
            ),
        ],
    };
    let Some(fut) = p.messages(call) else {
        panic!("anthropic speaks Messages natively");
    };
    let MessagesResponse::Complete(c) = fut.await.unwrap() else {
        panic!("expected a complete answer");
    };
    // The body comes back exactly as the upstream sent it.
    assert_eq!(
        String::from_utf8(c.body.to_vec()).unwrap(),
        fixture("native.response.json")
    );
    let u = c.usage.unwrap();
    assert_eq!(
        (
            u.input_tokens,
            u.cached_input_tokens,
            u.cache_write_input_tokens,
            u.output_tokens
        ),
        (3512, 3500, 0, 9)
    );
    assert_eq!(c.upstream_request_id.as_deref(), Some("req_upstream_ant_1"));
    // The client's body went out unchanged, unknown fields included.
    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(req.request_line, "POST /v1/messages HTTP/1.1");
    assert_eq!(
        String::from_utf8(req.body.clone()).unwrap(),
        compact(&request)
    );
    assert_eq!(
        req.header("anthropic-version").as_deref(),
        Some("2023-06-01")
    );
    assert_eq!(
        req.header("anthropic-beta").as_deref(),
        Some("extended-cache-ttl-2025-04-11")
    );
    assert_eq!(req.header("x-api-key").as_deref(), Some(KEY));
}

#[tokio::test]
async fn native_passthrough_stream() {
    let sse = fixture("native_stream.response.sse");
    // Anything after message_stop is not read.
    let body = format!("{sse}event: ping\ndata: {{\"type\":\"ping\"}}\n\n");
    let (base, seen) = upstream(Canned::ok("text/event-stream", body)).await;
    let p = provider(&base);
    let mut request = json_obj(&fixture("native.request.json"));
    request.insert("stream".into(), Value::Bool(true));
    let call = MessagesCall {
        body: Arc::new(request.clone()),
        stream: true,
        headers: Vec::new(),
    };
    let MessagesResponse::Stream {
        mut events,
        upstream_request_id,
    } = p.messages(call).unwrap().await.unwrap()
    else {
        panic!("expected a stream");
    };
    assert_eq!(upstream_request_id.as_deref(), Some("req_upstream_ant_1"));
    let mut got = Vec::new();
    let mut usage = tollgate_providers::anthropic::UsageTracker::new();
    while let Some(ev) = events.next().await {
        let ev = ev.unwrap();
        usage.observe(&ev);
        got.push((
            ev.event.unwrap_or_default(),
            String::from_utf8(ev.data.to_vec()).unwrap(),
        ));
    }
    // Raw events, pings included, in order, ending with message_stop.
    let expected: Vec<(String, String)> = sse
        .split("\n\n")
        .filter(|b| !b.is_empty())
        .map(|b| {
            let (name, data) = b.split_once('\n').unwrap();
            (
                name.strip_prefix("event: ").unwrap().to_string(),
                data.strip_prefix("data: ").unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, expected);
    let u = usage.usage().unwrap();
    assert_eq!(
        (u.input_tokens, u.cache_write_input_tokens, u.output_tokens),
        (3512, 3500, 9)
    );
    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(
        String::from_utf8(req.body.clone()).unwrap(),
        serde_json::to_string(&request).unwrap()
    );
    // No client version: the default is sent.
    assert_eq!(
        req.header("anthropic-version").as_deref(),
        Some("2023-06-01")
    );
    assert_eq!(req.header("anthropic-beta"), None);
}

#[tokio::test]
async fn native_stream_error_event_and_cut() {
    let sse = fixture("native_stream.response.sse");
    let head = &sse[..sse.find("event: message_delta").unwrap()];
    let with_error = format!(
        "{head}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"api_error\",\"message\":\"Internal server error\"}}}}\n\n"
    );
    for (body, framing) in [
        (with_error, Framing::Complete),
        (head.to_string(), Framing::CloseDelimited),
    ] {
        let (base, _) = upstream(Canned {
            framing,
            ..Canned::ok("text/event-stream", body)
        })
        .await;
        let p = provider(&base);
        let call = MessagesCall {
            body: Arc::new(json_obj(&fixture("native.request.json"))),
            stream: true,
            headers: Vec::new(),
        };
        let MessagesResponse::Stream { mut events, .. } = p.messages(call).unwrap().await.unwrap()
        else {
            panic!("expected a stream");
        };
        let mut n = 0;
        let mut last_err = None;
        while let Some(ev) = events.next().await {
            match ev {
                Ok(_) => n += 1,
                Err(e) => last_err = Some(e),
            }
        }
        assert_eq!(n, 6, "events before the failure are relayed");
        let e = last_err.unwrap();
        match framing {
            Framing::Complete => assert!(
                matches!(&e.kind, UpstreamErrorKind::InStream { message, .. } if message == "Internal server error (type: api_error)"),
                "{e:?}"
            ),
            Framing::CloseDelimited => {
                assert!(matches!(e.kind, UpstreamErrorKind::Broken(_)), "{e:?}")
            }
        }
    }
}

#[tokio::test]
async fn no_embeddings() {
    let p = provider("http://127.0.0.1:9");
    assert!(!p.capabilities().embeddings);
    assert!(p.capabilities().chat && p.capabilities().streaming);
    let Err(e) = p
        .embeddings(EmbeddingsCall {
            body: Arc::new(json_obj(r#"{"model":"m","input":"x"}"#)),
        })
        .await
    else {
        panic!("expected an error");
    };
    assert!(!e.retryable());
    let api = e.to_api_error(&[]);
    assert!(api.message.contains("no embeddings API"), "{}", api.message);
}
