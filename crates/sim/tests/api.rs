//! Embeddings, models, Azure paths, auth, validation errors, unknown routes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};
use tollgate_tokens::{Encoding, count_embedding_input};

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[tokio::test]
async fn embeddings_float_and_base64() {
    let h = sim(SimConfig::default()).await;
    let url = format!("{}/embeddings", h.base_url());
    let input = json!(["hello world", "budgets hold under concurrency"]);
    let r = post_json(
        &url,
        &json!({"model": "text-embedding-3-small", "input": input}),
    )
    .await;
    assert_eq!(r.status, 200);
    let j = &r.json;
    assert_eq!(j["object"], "list");
    assert_eq!(j["model"], "text-embedding-3-small");
    let data = j["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["object"], "embedding");
        assert_eq!(d["index"], i);
        let v = floats(&d["embedding"]);
        assert_eq!(v.len(), 8);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    let want = count_embedding_input(Encoding::Cl100k, &input);
    assert_eq!(j["usage"]["prompt_tokens"], want);
    assert_eq!(j["usage"]["total_tokens"], want);

    // base64: little-endian f32, identical values; the same text embeds the same way
    // whatever its position in the batch.
    let r64 = post_json(
        &url,
        &json!({"model": "text-embedding-3-small", "input": "budgets hold under concurrency",
                "encoding_format": "base64"}),
    )
    .await;
    let b64 = r64.json["data"][0]["embedding"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(decoded, floats(&data[1]["embedding"]));

    // dimensions, token-id inputs.
    let r = post_json(
        &url,
        &json!({"model": "text-embedding-3-large", "input": [[1, 2, 3], [4]], "dimensions": 4}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(floats(&r.json["data"][0]["embedding"]).len(), 4);
    assert_eq!(r.json["usage"]["prompt_tokens"], 4);
    let r = post_json(
        &url,
        &json!({"model": "text-embedding-3-small", "input": [5, 6, 7]}),
    )
    .await;
    assert_eq!(r.json["data"].as_array().unwrap().len(), 1);
    assert_eq!(r.json["usage"]["prompt_tokens"], 3);

    for (body, param) in [
        (json!({"input": "x"}), "model"),
        (json!({"model": "m"}), "input"),
        (json!({"model": "m", "input": ""}), "input"),
        (json!({"model": "m", "input": []}), "input"),
        (json!({"model": "m", "input": [1, "a"]}), "input"),
        (
            json!({"model": "m", "input": "a", "dimensions": 0}),
            "dimensions",
        ),
        (
            json!({"model": "m", "input": "a", "encoding_format": "hex"}),
            "encoding_format",
        ),
        (
            json!({"model": "m", "input": vec!["a"; 2048], "dimensions": 8192}),
            "dimensions",
        ),
    ] {
        let r = post_json(&url, &body).await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.json["error"]["param"], param, "{body}");
        assert_eq!(r.json["error"]["type"], "invalid_request_error");
    }
    assert_eq!(h.stats().embeddings, 12);
}

#[tokio::test]
async fn models_list() {
    let h = sim(SimConfig::default()).await;
    let r = reply(
        client()
            .get(format!("{}/models", h.base_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["object"], "list");
    let ids: Vec<&str> = r.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["object"], "model");
            assert_eq!(m["owned_by"], "tollgate-sim");
            assert!(m["created"].is_u64());
            m["id"].as_str().unwrap()
        })
        .collect();
    for want in [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "text-embedding-3-small",
        "text-embedding-3-large",
    ] {
        assert!(ids.contains(&want), "{want}");
    }
}

#[tokio::test]
async fn auth() {
    let h = sim(SimConfig {
        api_key: Some("sk-sim".into()),
        ..SimConfig::default()
    })
    .await;
    let url = chat_url(&h);
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("sk-sim"),
        Some("Basic sk-sim"),
    ] {
        let mut rb = client().post(&url).json_body(&body);
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        let r = reply(rb.send().await.unwrap()).await;
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(r.json["error"]["code"], "invalid_api_key");
        assert_eq!(r.json["error"]["type"], "invalid_request_error");
    }
    // An Azure-style header is not accepted on OpenAI paths.
    let r = reply(
        client()
            .post(&url)
            .header("api-key", "sk-sim")
            .json_body(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 401);
    let r = reply(
        client()
            .post(&url)
            .bearer_auth("sk-sim")
            .json_body(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    // Models need the key too.
    let r = client()
        .get(format!("{}/models", h.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let s = h.stats();
    assert_eq!(s.client_errors, 6);
    assert_eq!(s.requests, 7);
}

#[tokio::test]
async fn azure_paths() {
    let h = sim(SimConfig {
        api_key: Some("az-key".into()),
        ..SimConfig::default()
    })
    .await;
    let base = format!("http://{}", h.addr);
    let chat =
        format!("{base}/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21");
    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    let r = reply(
        client()
            .post(&chat)
            .header("api-key", "az-key")
            .json_body(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json);
    // The deployment is the model, whatever the body says.
    assert_eq!(r.json["model"], "my-gpt4o");

    // Bearer is not the Azure key header.
    let r = client()
        .post(&chat)
        .bearer_auth("az-key")
        .json_body(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // api-version is required.
    let r = reply(
        client()
            .post(format!(
                "{base}/openai/deployments/my-gpt4o/chat/completions"
            ))
            .header("api-key", "az-key")
            .json_body(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json["error"]["param"], "api-version");

    // Streaming works the same on Azure paths.
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let s = read_sse(
        client()
            .post(&chat)
            .header("api-key", "az-key")
            .json_body(&sbody)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(s.done());
    assert_eq!(s.chunks()[0]["model"], "my-gpt4o");

    let emb = format!("{base}/openai/deployments/embed-small/embeddings?api-version=2024-10-21");
    let r = reply(
        client()
            .post(&emb)
            .header("api-key", "az-key")
            .json_body(&json!({"input": "hello"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["model"], "embed-small");

    // Azure v1 surface: either header, model from the body.
    let r = reply(
        client()
            .post(format!("{base}/openai/v1/chat/completions"))
            .header("api-key", "az-key")
            .json_body(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["model"], "gpt-4o");
}

#[tokio::test]
async fn validation_errors() {
    let h = sim(SimConfig::default()).await;
    let url = chat_url(&h);
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases: Vec<(Value, Option<&str>)> = vec![
        (json!({"messages": user}), Some("model")),
        (json!({"model": "", "messages": user}), Some("model")),
        (json!({"model": 3, "messages": user}), Some("model")),
        (json!({"model": "gpt-4o"}), Some("messages")),
        (json!({"model": "gpt-4o", "messages": []}), Some("messages")),
        (
            json!({"model": "gpt-4o", "messages": "hi"}),
            Some("messages"),
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"role": "robot", "content": "x"}]}),
            Some("messages[0].role"),
        ),
        (
            json!({"model": "gpt-4o", "messages": user, "stream_options": {"include_usage": true}}),
            Some("stream_options"),
        ),
        (
            json!({"model": "gpt-4o", "messages": user, "stream": false, "stream_options": {"include_usage": true}}),
            Some("stream_options"),
        ),
        (
            json!({"model": "gpt-4o", "messages": user, "n": 0}),
            Some("n"),
        ),
        (
            json!({"model": "gpt-4o", "messages": user, "n": -2}),
            Some("n"),
        ),
        (
            json!({"model": "gpt-4o", "messages": user, "n": 1000}),
            Some("n"),
        ),
        (
            json!({"model": "gpt-4o", "messages": user, "n": "2"}),
            Some("n"),
        ),
        (
            json!({"model": "gpt-4o", "messages": user, "max_tokens": 0}),
            Some("max_tokens"),
        ),
        (
            json!({"model": "gpt-4o", "messages": user, "top_logprobs": 2}),
            Some("top_logprobs"),
        ),
        (
            json!({"model": "gpt-4o", "messages": user, "tool_choice": "auto"}),
            Some("tool_choice"),
        ),
        (
            json!({"model": "gpt-4o", "messages": user, "response_format": {"type": "yaml"}}),
            Some("response_format.type"),
        ),
        (json!([1, 2]), None),
    ];
    for (body, param) in cases {
        let r = post_json(&url, &body).await;
        assert_eq!(r.status, 400, "{body}");
        let e = &r.json["error"];
        assert_eq!(e["type"], "invalid_request_error", "{body}");
        assert_eq!(e["param"].as_str(), param, "{body}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(e.as_object().unwrap().contains_key("code"));
    }

    // Invalid JSON.
    let r = reply(
        client()
            .post(&url)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.json["error"]["param"].is_null());
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("JSON")
    );
    assert_eq!(h.stats().client_errors, 19);
    // Validation failures never consume fault sequence numbers nor count as answers.
    assert_eq!(h.stats().completion_tokens, 0);
}

#[tokio::test]
async fn unknown_routes() {
    let h = sim(SimConfig::default()).await;
    let r = reply(
        client()
            .post(format!("{}/nope", h.base_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json["error"]["type"], "invalid_request_error");
    assert!(r.json["error"]["param"].is_null());
    assert_eq!(r.json["error"]["message"], "Invalid URL (POST /v1/nope)");
    let r = client()
        .get(format!("{}/chat/completions", h.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = client()
        .get(format!("http://{}/", h.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(h.stats().unknown_routes, 3);
}
