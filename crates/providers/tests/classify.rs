//! Failure classification through each adapter: real provider error bodies (and in-stream error
//! events) from `tests/fixtures/errors/` are served by a raw TCP upstream, the adapter turns
//! them into an `UpstreamError`, and `class()`, `retry_after()` and the client-facing code are
//! checked. Nothing between the adapter and the socket is mocked, so the Bedrock case also
//! covers the exception name travelling in `x-amzn-errortype`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may panic

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_providers::{
    AwsCredentials, ChatCall, ChatResponse, FailureClass, Provider, ProviderSettings,
    UpstreamError, UpstreamErrorKind, build,
};
use tollgate_types::ProviderKind;

const KEY: &str = "sk-classify-secret-0123456789";

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/errors")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Answers every connection with the same canned response, then closes it.
#[expect(
    clippy::disallowed_methods,
    reason = "a fake upstream for one test: its tasks die with the test's runtime and record no ledger rows"
)]
async fn upstream(
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    content_type: &'static str,
    body: String,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 8192];
                let head_end = loop {
                    let Ok(n) = sock.read(&mut tmp).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match sock.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                let mut out = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                out.push_str(&body);
                let _ = sock.write_all(out.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

fn provider(kind: ProviderKind, root: &str) -> Arc<dyn Provider> {
    let mut s = ProviderSettings::new("p", kind, root);
    s.api_key = Some(KEY.into());
    match kind {
        ProviderKind::Openai => s.base_url = format!("{root}/v1"),
        ProviderKind::Azure => s.api_version = Some("2024-10-21".into()),
        ProviderKind::Bedrock => {
            s.api_key = None;
            s.region = Some("us-east-1".into());
            s.aws = Some(AwsCredentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "classify-secret-key".into(),
                session_token: None,
            });
        }
        _ => {}
    }
    build(s).unwrap()
}

fn call(kind: ProviderKind, stream: bool) -> ChatCall {
    let model = match kind {
        ProviderKind::Anthropic => "claude-sonnet-4-5",
        ProviderKind::Gemini => "gemini-2.5-flash",
        ProviderKind::Bedrock => "anthropic.claude-sonnet-4-5-v1:0",
        _ => "gpt-4o",
    };
    let body: Map<String, Value> = serde_json::from_value(serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
    }))
    .unwrap();
    ChatCall {
        body: Arc::new(body),
        stream,
    }
}

async fn status_error(
    kind: ProviderKind,
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    file: &str,
) -> UpstreamError {
    let base = upstream(status, headers, "application/json", fixture(file)).await;
    match provider(kind, &base).chat(call(kind, false)).await {
        Err(e) => e,
        Ok(_) => panic!("{file}: expected an error"),
    }
}

/// The first item of a stream whose upstream answered 200 and then an error event.
async fn first_stream_item(kind: ProviderKind, file: &str) -> UpstreamError {
    let base = upstream(200, &[], "text/event-stream", fixture(file)).await;
    match provider(kind, &base).chat(call(kind, true)).await {
        Ok(ChatResponse::Stream { mut chunks, .. }) => match chunks.next().await {
            Some(Err(e)) => e,
            other => panic!("{file}: expected an error first, got {other:?}"),
        },
        Ok(_) => panic!("{file}: expected a stream"),
        Err(e) => panic!("{file}: {e}"),
    }
}

/// Extra response headers of a canned answer.
type Headers = &'static [(&'static str, &'static str)];

const AMZN_VALIDATION: &[(&str, &str)] = &[(
    "x-amzn-errortype",
    "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/",
)];
const AMZN_THROTTLING: &[(&str, &str)] = &[(
    "x-amzn-errortype",
    "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
)];
const AMZN_UNAVAILABLE: &[(&str, &str)] = &[(
    "x-amzn-errortype",
    "ServiceUnavailableException:http://internal.amazon.com/coral/com.amazon.bedrock/",
)];
const AMZN_MODEL_ERROR: &[(&str, &str)] = &[(
    "x-amzn-errortype",
    "ModelErrorException:http://internal.amazon.com/coral/com.amazon.bedrock/",
)];

#[tokio::test]
async fn context_window_errors_per_provider() {
    use ProviderKind::*;
    let cases: &[(ProviderKind, Headers, &str)] = &[
        (Openai, &[], "openai_context_length_exceeded.json"),
        (Azure, &[], "azure_context_length_exceeded.json"),
        (Anthropic, &[], "anthropic_prompt_too_long.json"),
        (Anthropic, &[], "anthropic_context_limit.json"),
        (Gemini, &[], "gemini_context_window.json"),
        (Bedrock, AMZN_VALIDATION, "bedrock_input_too_long.json"),
        (Bedrock, AMZN_VALIDATION, "bedrock_prompt_too_long.json"),
    ];
    for (kind, headers, file) in cases {
        let e = status_error(*kind, 400, headers, file).await;
        assert_eq!(e.class(), FailureClass::ContextWindow, "{file}: {e:?}");
        assert!(!e.retryable(), "{file}");
        let api = e.to_api_error(&[KEY]);
        assert_eq!(
            (api.status(), api.code.as_str()),
            (400, "context_length_exceeded"),
            "{file}"
        );
        assert!(
            api.message.contains("provider 'p' returned HTTP 400"),
            "{file}"
        );
    }
}

#[tokio::test]
async fn content_policy_errors_per_provider() {
    use ProviderKind::*;
    let cases: &[(ProviderKind, &str)] = &[
        (Openai, "openai_content_policy_violation.json"),
        (Openai, "openai_invalid_prompt.json"),
        (Azure, "azure_content_filter.json"),
        (Anthropic, "anthropic_content_filtering.json"),
    ];
    for (kind, file) in cases {
        let e = status_error(*kind, 400, &[], file).await;
        assert_eq!(e.class(), FailureClass::ContentPolicy, "{file}: {e:?}");
        let api = e.to_api_error(&[KEY]);
        assert_eq!(
            (api.status(), api.code.as_str()),
            (400, "content_filter"),
            "{file}"
        );
    }
}

#[tokio::test]
async fn rate_limits_and_overload() {
    use ProviderKind::*;
    let e = status_error(
        Openai,
        429,
        &[("retry-after-ms", "1400"), ("retry-after", "2")],
        "openai_rate_limit.json",
    )
    .await;
    assert_eq!(e.class(), FailureClass::RateLimited);
    assert_eq!(e.retry_after(), Some(Duration::from_millis(1400)));

    let e = status_error(
        Anthropic,
        429,
        &[("retry-after", "7")],
        "anthropic_rate_limit.json",
    )
    .await;
    assert_eq!(e.class(), FailureClass::RateLimited);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));

    let e = status_error(Anthropic, 529, &[], "anthropic_overloaded.json").await;
    assert_eq!(e.class(), FailureClass::Overloaded);
    assert_eq!(e.to_api_error(&[]).status(), 503);

    let e = status_error(Openai, 503, &[], "openai_overloaded.json").await;
    assert_eq!(e.class(), FailureClass::Overloaded);

    let e = status_error(Gemini, 503, &[], "gemini_unavailable.json").await;
    assert_eq!(e.class(), FailureClass::Overloaded);

    let e = status_error(Bedrock, 429, AMZN_THROTTLING, "bedrock_throttling.json").await;
    assert_eq!(e.class(), FailureClass::RateLimited);
    assert_eq!(e.retry_after(), None, "AWS sends no Retry-After");

    let e = status_error(
        Bedrock,
        503,
        AMZN_UNAVAILABLE,
        "bedrock_service_unavailable.json",
    )
    .await;
    assert_eq!(e.class(), FailureClass::Overloaded);

    let e = status_error(Bedrock, 424, AMZN_MODEL_ERROR, "bedrock_model_error.json").await;
    assert_eq!(e.class(), FailureClass::Transient);
}

#[tokio::test]
async fn gemini_retry_info_is_the_retry_after() {
    let body = r#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"37s"}]}}"#;
    let base = upstream(429, &[], "application/json", body.to_string()).await;
    let e = provider(ProviderKind::Gemini, &base)
        .chat(call(ProviderKind::Gemini, false))
        .await
        .err()
        .unwrap();
    assert_eq!(e.class(), FailureClass::RateLimited);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(37)));
}

#[tokio::test]
async fn client_errors_are_final_and_keys_stay_scrubbed() {
    let e = status_error(
        ProviderKind::Openai,
        401,
        &[],
        "openai_invalid_api_key.json",
    )
    .await;
    assert_eq!(e.class(), FailureClass::Client);
    let api = e.to_api_error(&[KEY]);
    assert_eq!(api.code.as_str(), "upstream_auth_failed");
    assert!(!api.message.contains(KEY));
}

#[tokio::test]
async fn in_stream_errors_before_the_first_chunk_are_classified() {
    let e = first_stream_item(
        ProviderKind::Anthropic,
        "anthropic_stream_overloaded.response.sse",
    )
    .await;
    assert!(
        matches!(e.kind, UpstreamErrorKind::InStream { .. }),
        "{e:?}"
    );
    assert_eq!(e.class(), FailureClass::Overloaded);
    assert_eq!(e.to_api_error(&[]).code.as_str(), "upstream_unavailable");

    let e = first_stream_item(ProviderKind::Openai, "openai_stream_error.response.sse").await;
    assert!(
        matches!(e.kind, UpstreamErrorKind::InStream { .. }),
        "{e:?}"
    );
    assert_eq!(e.class(), FailureClass::Transient);

    let e = first_stream_item(
        ProviderKind::Gemini,
        "gemini_stream_resource_exhausted.response.sse",
    )
    .await;
    assert!(
        matches!(e.kind, UpstreamErrorKind::InStream { .. }),
        "{e:?}"
    );
    assert_eq!(e.class(), FailureClass::RateLimited);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(12)));
}

#[test]
fn transport_failures_are_transient_and_unsupported_is_client() {
    let e = UpstreamError::new("p", UpstreamErrorKind::Broken("reset".into()));
    assert_eq!(e.class(), FailureClass::Transient);
    let e = UpstreamError::new(
        "p",
        UpstreamErrorKind::Timeout(tollgate_providers::TimeoutPhase::FirstByte),
    );
    assert_eq!(e.class(), FailureClass::Transient);
    let e = UpstreamError::new("p", UpstreamErrorKind::Unsupported("n > 1".into()));
    assert_eq!(e.class(), FailureClass::Client);
}
