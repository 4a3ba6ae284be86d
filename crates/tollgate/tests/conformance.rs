//! The provider conformance suite: every adapter joins by declaring its capabilities, and the
//! same cases run against each through the built-in simulated provider, which speaks every
//! wire format over real HTTP. A declared capability must hold (its cases run and must pass);
//! the declaration itself must equal what the adapter reports, so it cannot drift.
//!
//! The cases check the canonical contract, not the wire details (the golden fixtures do that):
//! text answers with provider usage, streams that reassemble into the same shape and end with
//! exactly one usage-only chunk, tool calls with parseable arguments and a full round trip,
//! image parts accepted, JSON answers under a schema, embeddings.

// Tests may panic, their helpers are not an API, and the tasks they spawn (clients, the
// gateway under test) are awaited or die with the test's runtime.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    unreachable_pub
)]

use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use tollgate_providers::{
    AwsCredentials, Capabilities, ChatCall, ChatResponse, EmbeddingsCall, Provider,
    ProviderSettings, build,
};
use tollgate_types::ProviderKind;

const KEY: &str = "sim-conformance-key-0123456789";

async fn sim() -> tollgate_sim::SimHandle {
    tollgate_providers::http::install_crypto_provider();
    let cfg = tollgate_sim::SimConfig {
        api_key: Some(KEY.into()),
        completion_tokens: 12,
        ..tollgate_sim::SimConfig::default()
    };
    tollgate_sim::spawn("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .unwrap()
}

fn provider(kind: ProviderKind, sim: &tollgate_sim::SimHandle) -> Arc<dyn Provider> {
    let root = format!("http://{}", sim.addr);
    let mut s = ProviderSettings::new("sim", kind, &root);
    s.api_key = Some(KEY.into());
    match kind {
        ProviderKind::Openai => s.base_url = format!("{root}/v1"),
        ProviderKind::Azure => s.api_version = Some("2024-10-21".into()),
        ProviderKind::Bedrock => {
            s.api_key = None;
            s.region = Some("us-east-1".into());
            s.aws = Some(AwsCredentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "conformance-secret".into(),
                session_token: None,
            });
        }
        ProviderKind::Anthropic | ProviderKind::Gemini => {}
    }
    build(s).unwrap()
}

fn body(v: Value) -> Arc<Map<String, Value>> {
    match v {
        Value::Object(m) => Arc::new(m),
        _ => unreachable!("test bodies are objects"),
    }
}

async fn complete(p: &Arc<dyn Provider>, v: Value) -> (Value, tollgate_types::Usage) {
    let ChatResponse::Complete(c) = p
        .chat(ChatCall {
            body: body(v),
            stream: false,
        })
        .await
        .unwrap()
    else {
        panic!("expected a complete answer");
    };
    (serde_json::from_slice(&c.body).unwrap(), c.usage.unwrap())
}

async fn stream(p: &Arc<dyn Provider>, mut v: Value) -> Vec<Value> {
    v["stream"] = json!(true);
    let ChatResponse::Stream { mut chunks, .. } = p
        .chat(ChatCall {
            body: body(v),
            stream: true,
        })
        .await
        .unwrap()
    else {
        panic!("expected a stream");
    };
    let mut out = Vec::new();
    while let Some(c) = chunks.next().await {
        out.push(serde_json::from_slice(&c.unwrap()).unwrap());
    }
    out
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

async fn case_chat(p: Arc<dyn Provider>, model: &str) {
    let (v, usage) = complete(&p, json!({"model": model, "max_tokens": 8,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]})).await;
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(
        !choice["message"]["content"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "{v}"
    );
    assert!(
        matches!(choice["finish_reason"].as_str(), Some("stop" | "length")),
        "{v}"
    );
    assert!(
        usage.input_tokens > 0 && usage.output_tokens > 0 && usage.output_tokens <= 8,
        "{usage:?}"
    );
    assert_eq!(v["usage"]["completion_tokens"], usage.output_tokens, "{v}");
}

async fn case_streaming(p: Arc<dyn Provider>, model: &str) {
    let chunks = stream(
        &p,
        json!({"model": model, "max_tokens": 10,
        "messages": [{"role": "user", "content": "Stream please"}]}),
    )
    .await;
    assert!(chunks.len() >= 3, "{chunks:?}");
    assert_eq!(
        chunks[0]["choices"][0]["delta"]["role"], "assistant",
        "{chunks:?}"
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!text.is_empty());
    let usage_chunks: Vec<&Value> = chunks.iter().filter(|c| !c["usage"].is_null()).collect();
    let last = chunks.last().unwrap();
    assert_eq!(
        last["choices"],
        json!([]),
        "the usage-only chunk comes last: {chunks:?}"
    );
    assert_eq!(usage_chunks.len(), 1, "exactly one usage chunk: {chunks:?}");
    assert!(last["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert!(
        chunks
            .iter()
            .any(|c| !c["choices"][0]["finish_reason"].is_null())
    );
}

async fn case_tools(p: Arc<dyn Provider>, model: &str) {
    let first = json!({"model": model, "max_tokens": 100, "tools": weather_tool(),
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}]});
    let (v, _) = complete(&p, first.clone()).await;
    let msg = v["choices"][0]["message"].clone();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    let call = &msg["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args.get("city").is_some(), "{args}");
    // The full round trip: the tool result goes back and a text answer comes.
    let mut second = first.clone();
    second["messages"] = json!([
        first["messages"][0],
        {"role": "assistant", "content": null, "tool_calls": msg["tool_calls"]},
        {"role": "tool", "tool_call_id": call["id"], "content": "18C, cloudy"},
    ]);
    let (v, _) = complete(&p, second).await;
    assert!(
        !v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "{v}"
    );
    // Streamed tool calls reassemble to valid JSON arguments.
    let chunks = stream(&p, first).await;
    let args: String = chunks
        .iter()
        .flat_map(|c| {
            c["choices"][0]["delta"]["tool_calls"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|tc| tc["function"]["arguments"].as_str().map(str::to_string))
        .collect();
    assert!(
        serde_json::from_str::<Value>(&args)
            .unwrap()
            .get("city")
            .is_some(),
        "{args}"
    );
}

async fn case_images(p: Arc<dyn Provider>, model: &str) {
    let png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let (v, usage) = complete(&p, json!({"model": model, "max_tokens": 8, "messages": [{"role": "user",
        "content": [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": png}}]}]})).await;
    assert!(
        !v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "{v}"
    );
    assert!(usage.input_tokens > 0);
}

async fn case_json_schema(p: Arc<dyn Provider>, model: &str) {
    let (v, _) = complete(&p, json!({"model": model, "max_tokens": 200,
        "messages": [{"role": "user", "content": "Answer as JSON"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema":
            {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}}})).await;
    let text = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
    let parsed: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(parsed.get("answer").is_some(), "{parsed}");
}

async fn case_embeddings(p: Arc<dyn Provider>, model: &str) {
    let c = p
        .embeddings(EmbeddingsCall {
            body: body(json!({"model": model, "input": ["one", "two"]})),
        })
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&c.body).unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert!(
        v["data"][0]["embedding"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    );
}

/// The simulator's refusal knobs through the adapter: each wire format's own context-length
/// error, content-policy refusal and in-stream error must come out of the adapter as an
/// `UpstreamError` of the matching `FailureClass` (what the fallback executor acts on).
async fn case_failure_classes(kind: ProviderKind, model: &str) {
    use tollgate_providers::FailureClass;
    let s = sim().await;
    let p = provider(kind, &s);
    let ask = || json!({"model": model, "messages": [{"role": "user", "content": "hello there, how are you today"}]});
    let base = s.config();
    let chat_err = |stream: bool| {
        let p = p.clone();
        let mut v = ask();
        v["stream"] = json!(stream);
        async move {
            match p
                .chat(ChatCall {
                    body: body(v),
                    stream,
                })
                .await
            {
                Err(e) => e,
                Ok(_) => panic!("expected an error"),
            }
        }
    };

    s.set_config(tollgate_sim::SimConfig {
        context_window: Some(4),
        ..base.clone()
    });
    for stream in [false, true] {
        let e = chat_err(stream).await;
        assert_eq!(e.class(), FailureClass::ContextWindow, "{e:?}");
        assert_eq!(
            e.to_api_error(&[KEY]).code.as_str(),
            "context_length_exceeded"
        );
    }

    s.set_config(tollgate_sim::SimConfig {
        content_filter_rate: 1.0,
        ..base.clone()
    });
    if kind == ProviderKind::Gemini {
        // Gemini blocks with a 200 and no candidates: a content_filter finish, not an error.
        let (v, _) = complete(&p, ask()).await;
        assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    } else {
        let e = chat_err(false).await;
        assert_eq!(e.class(), FailureClass::ContentPolicy, "{e:?}");
        assert_eq!(e.to_api_error(&[KEY]).code.as_str(), "content_filter");
    }

    // An in-stream error before the first chunk: the first item of the stream is the error
    // (Bedrock's adapter reads the first frame before answering, so there `chat` itself
    // fails with the exception as a status error).
    s.set_config(tollgate_sim::SimConfig {
        stream_error_rate: 1.0,
        ..base.clone()
    });
    let mut v = ask();
    v["stream"] = json!(true);
    let e = match p
        .chat(ChatCall {
            body: body(v),
            stream: true,
        })
        .await
    {
        Ok(ChatResponse::Stream { mut chunks, .. }) => match chunks.next().await {
            Some(Err(e)) => e,
            other => panic!("expected an error first, got {other:?}"),
        },
        Ok(ChatResponse::Complete(_)) => panic!("expected a stream"),
        Err(e) => {
            assert_eq!(kind, ProviderKind::Bedrock, "{e:?}");
            e
        }
    };
    let expected = match kind {
        // OpenAI's in-stream `server_error`.
        ProviderKind::Openai | ProviderKind::Azure => FailureClass::Transient,
        // Anthropic `overloaded_error`, Gemini 503 UNAVAILABLE, Bedrock
        // serviceUnavailableException.
        _ => FailureClass::Overloaded,
    };
    assert_eq!(e.class(), expected, "{e:?}");

    // fail_first: deterministic failures, then success.
    s.set_config(tollgate_sim::SimConfig {
        fail_first: 2,
        fail_status: 429,
        retry_after_secs: Some(2),
        ..base.clone()
    });
    for _ in 0..2 {
        let e = chat_err(false).await;
        assert_eq!(e.class(), FailureClass::RateLimited, "{e:?}");
        if kind != ProviderKind::Bedrock {
            assert_eq!(
                e.retry_after(),
                Some(std::time::Duration::from_secs(2)),
                "{e:?}"
            );
        }
    }
    complete(&p, ask()).await;
}

/// One module per adapter: its declared capabilities, and a test per capability.
macro_rules! conformance {
    ($name:ident, $kind:expr, chat: $chat:literal, embed: $embed:literal, caps: [$($cap:ident),*]) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn declared_capabilities_match_the_adapter() {
                let s = sim().await;
                let mut declared = Capabilities {
                    chat: false, streaming: false, tools: false, images: false,
                    json_schema: false, embeddings: false,
                };
                $(declared.$cap = true;)*
                assert_eq!(provider($kind, &s).capabilities(), declared);
            }

            #[tokio::test]
            async fn failure_classes() {
                case_failure_classes($kind, $chat).await;
            }

            $(
                #[tokio::test]
                async fn $cap() {
                    let s = sim().await;
                    let p = provider($kind, &s);
                    let model = if stringify!($cap) == "embeddings" { $embed } else { $chat };
                    match stringify!($cap) {
                        "chat" => case_chat(p, model).await,
                        "streaming" => case_streaming(p, model).await,
                        "tools" => case_tools(p, model).await,
                        "images" => case_images(p, model).await,
                        "json_schema" => case_json_schema(p, model).await,
                        "embeddings" => case_embeddings(p, model).await,
                        other => unreachable!("unknown capability {other}"),
                    }
                }
            )*
        }
    };
}

conformance!(openai, ProviderKind::Openai, chat: "gpt-4o-mini", embed: "text-embedding-3-small",
    caps: [chat, streaming, tools, images, json_schema, embeddings]);
conformance!(azure, ProviderKind::Azure, chat: "gpt-4o-mini", embed: "text-embedding-3-small",
    caps: [chat, streaming, tools, images, json_schema, embeddings]);
conformance!(anthropic, ProviderKind::Anthropic, chat: "claude-sonnet-4-5", embed: "",
    caps: [chat, streaming, tools, images, json_schema]);
conformance!(gemini, ProviderKind::Gemini, chat: "gemini-2.5-flash", embed: "gemini-embedding-001",
    caps: [chat, streaming, tools, images, json_schema, embeddings]);
conformance!(bedrock, ProviderKind::Bedrock, chat: "anthropic.claude-sonnet-4-5-v1:0", embed: "",
    caps: [chat, streaming, tools, images, json_schema]);
