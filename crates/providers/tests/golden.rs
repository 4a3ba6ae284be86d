//! Golden fixtures for the OpenAI-family adapters, in each direction: the request the adapter
//! sends upstream (byte-exact JSON), the canonical answer it hands back (non-streaming body and
//! usage; streaming chunks), and error mapping. The upstream is a raw TCP server that records the
//! request and replays a fixture response, so nothing between the adapter and the socket is
//! mocked. Fixtures follow the OpenAI Chat Completions wire format as of openai-python v3.3.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may panic

use std::path::Path;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_providers::{ChatCall, ChatResponse, ProviderSettings, UpstreamErrorKind, build};
use tollgate_types::ProviderKind;

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/openai")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn json_obj(s: &str) -> Map<String, Value> {
    serde_json::from_str(s).unwrap()
}

#[derive(Debug, Default, Clone)]
struct Captured {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Serves one canned HTTP response per connection and records each request.
#[expect(
    clippy::disallowed_methods,
    reason = "a fake upstream for one test: its tasks die with the test's runtime and record no ledger rows"
)]
async fn canned_upstream(
    status: u16,
    content_type: &str,
    body: String,
) -> (String, Arc<Mutex<Vec<Captured>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let content_type = content_type.to_string();
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
            let resp = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nx-request-id: req_upstream_1\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(resp.as_bytes()).await.unwrap();
            let _ = sock.shutdown().await;
        }
    });
    (format!("http://{addr}"), seen)
}

fn settings(kind: ProviderKind, base_url: String) -> ProviderSettings {
    ProviderSettings {
        api_key: Some("sk-golden-secret-0123456789".into()),
        api_version: (kind == ProviderKind::Azure).then(|| "2024-10-21".to_string()),
        headers: vec![("x-extra".into(), "1".into())],
        ..ProviderSettings::new("up", kind, &base_url)
    }
}

#[tokio::test]
async fn openai_stream_request_out_and_chunks_back() {
    let (base, seen) = canned_upstream(
        200,
        "text/event-stream",
        fixture("chat_stream.response.sse"),
    )
    .await;
    let p = build(settings(ProviderKind::Openai, format!("{base}/v1"))).unwrap();
    let call = ChatCall {
        body: Arc::new(json_obj(&fixture("chat_stream.request.json"))),
        stream: true,
    };
    let ChatResponse::Stream {
        mut chunks,
        upstream_request_id,
    } = p.chat(call).await.unwrap()
    else {
        panic!("expected a stream");
    };
    assert_eq!(upstream_request_id.as_deref(), Some("req_upstream_1"));
    let mut got = Vec::new();
    while let Some(c) = chunks.next().await {
        got.push(String::from_utf8(c.unwrap().to_vec()).unwrap());
    }
    // Request out: byte-exact, unknown fields kept in order, include_usage injected.
    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(req.request_line, "POST /v1/chat/completions HTTP/1.1");
    assert_eq!(
        String::from_utf8(req.body).unwrap(),
        fixture("chat_stream.upstream_request.json").trim()
    );
    let h = |k: &str| {
        req.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        h("authorization").as_deref(),
        Some("Bearer sk-golden-secret-0123456789")
    );
    assert_eq!(h("accept").as_deref(), Some("text/event-stream"));
    assert_eq!(h("x-extra").as_deref(), Some("1"));
    // Chunks back: every data payload except [DONE], unchanged, comments dropped.
    let expected: Vec<String> = fixture("chat_stream.response.sse")
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(str::to_string)
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn openai_complete_passes_body_through_and_reads_usage() {
    let (base, seen) =
        canned_upstream(200, "application/json", fixture("chat.response.json")).await;
    let p = build(settings(ProviderKind::Openai, format!("{base}/v1"))).unwrap();
    let request = fixture("chat.request.json");
    let call = ChatCall {
        body: Arc::new(json_obj(&request)),
        stream: false,
    };
    let ChatResponse::Complete(c) = p.chat(call).await.unwrap() else {
        panic!("expected a complete answer");
    };
    assert_eq!(
        String::from_utf8(c.body.to_vec()).unwrap(),
        fixture("chat.response.json")
    );
    let u = c.usage.unwrap();
    assert_eq!(
        (
            u.input_tokens,
            u.cached_input_tokens,
            u.output_tokens,
            u.reasoning_tokens
        ),
        (100, 64, 12, 4)
    );
    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(String::from_utf8(req.body).unwrap(), request.trim());
}

#[tokio::test]
async fn azure_uses_deployment_url_and_api_key_header() {
    let (base, seen) =
        canned_upstream(200, "application/json", fixture("chat.response.json")).await;
    let p = build(settings(ProviderKind::Azure, base)).unwrap();
    let call = ChatCall {
        body: Arc::new(json_obj(
            r#"{"model":"my deployment","messages":[{"role":"user","content":"hi"}]}"#,
        )),
        stream: false,
    };
    assert!(matches!(
        p.chat(call).await.unwrap(),
        ChatResponse::Complete(_)
    ));
    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(
        req.request_line,
        "POST /openai/deployments/my%20deployment/chat/completions?api-version=2024-10-21 HTTP/1.1"
    );
    let h = |k: &str| {
        req.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(h("api-key").as_deref(), Some("sk-golden-secret-0123456789"));
    assert_eq!(h("authorization"), None);
}

#[tokio::test]
async fn upstream_error_status_is_mapped_and_scrubbed() {
    let body = r#"{"error":{"message":"Incorrect API key provided: sk-golden-secret-0123456789","type":"invalid_request_error","code":"invalid_api_key"}}"#;
    let (base, _) = canned_upstream(401, "application/json", body.to_string()).await;
    let p = build(settings(ProviderKind::Openai, format!("{base}/v1"))).unwrap();
    let call = ChatCall {
        body: Arc::new(json_obj(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        )),
        stream: false,
    };
    let Err(e) = p.chat(call).await else {
        panic!("expected an error")
    };
    assert!(matches!(
        e.kind,
        UpstreamErrorKind::Status { status: 401, .. }
    ));
    let api = e.to_api_error(&["sk-golden-secret-0123456789"]);
    assert_eq!(api.status(), 502);
    assert_eq!(api.code.as_str(), "upstream_auth_failed");
    assert!(api.message.contains("provider 'up'"));
    assert!(!api.message.contains("0123456789"), "{}", api.message);
}

#[tokio::test]
async fn connection_refused_is_unavailable_and_retryable() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let p = build(settings(ProviderKind::Openai, format!("http://{addr}/v1"))).unwrap();
    let call = ChatCall {
        body: Arc::new(json_obj(r#"{"model":"m","messages":[]}"#)),
        stream: false,
    };
    let Err(e) = p.chat(call).await else {
        panic!("expected an error")
    };
    assert!(e.retryable());
    assert_eq!(e.to_api_error(&[]).code.as_str(), "upstream_unavailable");
}
