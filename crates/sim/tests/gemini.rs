//! Gemini over real HTTP: generateContent shape and usage, SSE and JSON-array streams,
//! maxOutputTokens, candidates, JSON mode, function calling round trip, validation, auth,
//! faults, cut streams, cached tokens, embeddings, countTokens, models.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};
use tollgate_tokens::Encoding;

const MODEL: &str = "gemini-2.5-flash";

fn url(h: &SimHandle, method: &str) -> String {
    format!("http://{}/v1beta/models/{MODEL}:{method}", h.addr)
}

fn body(extra: Value) -> Value {
    merged(
        json!({
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "contents": [{"role": "user", "parts": [{"text": "Say something about budgets."}]}]
        }),
        extra,
    )
}

fn o200k(s: &str) -> u64 {
    Encoding::O200k.count(s)
}

/// The documented prompt formula for text-only contents: 3 per content + its role + its text
/// parts, 3 to prime the reply, plus the system instruction's text.
fn prompt_of(b: &Value) -> u64 {
    let texts = |c: &Value| -> u64 {
        c["parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| o200k(p["text"].as_str().unwrap()))
            .sum()
    };
    let mut n = 3;
    for c in b["contents"].as_array().unwrap() {
        n += 3 + c["role"].as_str().map_or(0, o200k) + texts(c);
    }
    if b.get("systemInstruction").is_some() {
        n += texts(&b["systemInstruction"]);
    }
    n
}

/// SSE chunks of a Gemini stream: `data: ` events separated by CRLF blank lines.
fn sse_chunks(r: &Raw) -> Vec<Value> {
    let text = std::str::from_utf8(&r.bytes).unwrap();
    assert!(!text.contains("[DONE]"));
    text.split("\r\n\r\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let data = e
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("bad event {e:?}"));
            serde_json::from_str(data).unwrap()
        })
        .collect()
}

fn chunk_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .flat_map(|c| {
            c["candidates"][0]["content"]["parts"]
                .as_array()
                .cloned()
                .unwrap()
        })
        .filter_map(|p| p["text"].as_str().map(str::to_string))
        .collect()
}

fn weather_tools() -> Value {
    json!([{"functionDeclarations": [
        {"name": "get_weather", "description": "Current weather",
         "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"},
            "days": {"type": "INTEGER"}}, "required": ["city", "days"]}},
        {"name": "get_time",
         "parametersJsonSchema": {"type": "object", "properties": {"tz": {"type": "string"}},
            "required": ["tz"]}}
    ]}])
}

#[tokio::test]
async fn generate_content_shape_and_usage() {
    let h = sim(SimConfig::default()).await;
    let b = body(json!({}));
    let r = post_raw(&url(&h, "generateContent"), &[], &b).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type(), "application/json");
    let j = r.json();
    assert_eq!(j["modelVersion"], MODEL);
    assert!(j["responseId"].is_string());
    let cands = j["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), 1);
    let c = &cands[0];
    assert_eq!(c["index"], 0);
    assert_eq!(c["finishReason"], "STOP");
    assert_eq!(c["content"]["role"], "model");
    let text = c["content"]["parts"][0]["text"].as_str().unwrap();
    assert_eq!(text.split(' ').count(), 16);
    let u = &j["usageMetadata"];
    assert_eq!(u["promptTokenCount"].as_u64().unwrap(), prompt_of(&b));
    assert_eq!(u["candidatesTokenCount"].as_u64().unwrap(), 16);
    assert_eq!(u["candidatesTokenCount"].as_u64().unwrap(), o200k(text));
    assert_eq!(u["totalTokenCount"].as_u64().unwrap(), prompt_of(&b) + 16);
    assert!(u.get("cachedContentTokenCount").is_none());

    // The stable surface and a percent-encoded colon reach the same method.
    let again = post_raw(
        &format!("http://{}/v1/models/{MODEL}%3AgenerateContent", h.addr),
        &[],
        &b,
    )
    .await
    .json();
    assert_eq!(again["candidates"][0]["content"], c["content"]);
    let s = h.stats();
    assert_eq!(s.generate_content, 2);
    assert_eq!(s.completion_tokens, 32);
}

#[tokio::test]
async fn sse_stream_framing_and_cumulative_usage() {
    let h = sim(SimConfig {
        chunks: 4,
        ..SimConfig::default()
    })
    .await;
    let b = body(json!({}));
    let plain = post_raw(&url(&h, "generateContent"), &[], &b).await.json();
    let r = post_raw(
        &format!("{}?alt=sse", url(&h, "streamGenerateContent")),
        &[],
        &b,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type(), "text/event-stream");
    assert!(!r.errored);
    let chunks = sse_chunks(&r);
    assert_eq!(chunks.len(), 4);
    let mut last = 0;
    for (i, c) in chunks.iter().enumerate() {
        let u = &c["usageMetadata"];
        assert_eq!(u["promptTokenCount"].as_u64().unwrap(), prompt_of(&b));
        let so_far = u["candidatesTokenCount"].as_u64().unwrap();
        assert!(so_far >= last, "cumulative");
        last = so_far;
        assert_eq!(
            u["totalTokenCount"].as_u64().unwrap(),
            prompt_of(&b) + so_far
        );
        let finish = &c["candidates"][0]["finishReason"];
        assert_eq!(
            finish.is_null(),
            i + 1 < chunks.len(),
            "finishReason only last"
        );
        assert_eq!(c["modelVersion"], MODEL);
    }
    assert_eq!(chunks[3]["candidates"][0]["finishReason"], "STOP");
    // The last chunk holds the totals, equal to the non-streamed usage.
    assert_eq!(chunks[3]["usageMetadata"], plain["usageMetadata"]);
    let text = chunk_text(&chunks);
    assert_eq!(
        text,
        plain["candidates"][0]["content"]["parts"][0]["text"]
            .as_str()
            .unwrap()
    );
    assert_eq!(last, o200k(&text));

    // Without alt=sse: the same chunks as one streamed JSON array.
    let r = post_raw(&url(&h, "streamGenerateContent"), &[], &b).await;
    assert_eq!(r.content_type(), "application/json");
    let arr = r.json();
    let arr = arr.as_array().unwrap();
    assert_eq!(arr.len(), 4);
    assert_eq!(chunk_text(arr), text);
    assert_eq!(arr[3]["usageMetadata"], plain["usageMetadata"]);
    let s = h.stats();
    assert_eq!(s.stream_generate_content, 2);
    assert_eq!(s.streams, 2);
}

#[tokio::test]
async fn max_output_tokens_candidates_and_json() {
    let h = sim(SimConfig::default()).await;
    let r = post_raw(
        &url(&h, "generateContent"),
        &[],
        &body(json!({"generationConfig": {"maxOutputTokens": 5}})),
    )
    .await
    .json();
    assert_eq!(r["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(r["usageMetadata"]["candidatesTokenCount"], 5);
    let text = r["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap();
    assert_eq!(o200k(text), 5);

    // Streamed, the last chunk says MAX_TOKENS with the capped total.
    let r = post_raw(
        &format!("{}?alt=sse", url(&h, "streamGenerateContent")),
        &[],
        &body(json!({"generationConfig": {"maxOutputTokens": 5}})),
    )
    .await;
    let chunks = sse_chunks(&r);
    let last = chunks.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 5);

    let r = post_raw(
        &url(&h, "generateContent"),
        &[],
        &body(json!({"generationConfig": {"candidateCount": 2}})),
    )
    .await
    .json();
    let cands = r["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), 2);
    assert_eq!(cands[1]["index"], 1);
    assert_ne!(cands[0]["content"], cands[1]["content"]);
    assert_eq!(r["usageMetadata"]["candidatesTokenCount"], 32);

    let schema = json!({"type": "OBJECT", "properties": {"city": {"type": "STRING"}},
                        "required": ["city"]});
    let r = post_raw(
        &url(&h, "generateContent"),
        &[],
        &body(
            json!({"generationConfig": {"responseMimeType": "application/json",
                                          "responseSchema": schema}}),
        ),
    )
    .await
    .json();
    let text = r["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap();
    let v: Value = serde_json::from_str(text).unwrap();
    assert!(v["city"].is_string());
    assert_eq!(
        r["usageMetadata"]["candidatesTokenCount"].as_u64().unwrap(),
        o200k(text)
    );
    let r = post_raw(
        &url(&h, "generateContent"),
        &[],
        &body(json!({"generationConfig": {"responseMimeType": "application/json"}})),
    )
    .await
    .json();
    let text = r["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap();
    assert!(serde_json::from_str::<Value>(text).unwrap()["answer"].is_string());
}

#[tokio::test]
async fn function_calling_round_trip() {
    let h = sim(SimConfig::default()).await;
    let ask = json!({"tools": weather_tools(),
        "contents": [{"role": "user", "parts": [{"text": "Weather in Paris?"}]}]});
    let r = post_raw(&url(&h, "generateContent"), &[], &ask)
        .await
        .json();
    let c = &r["candidates"][0];
    assert_eq!(c["finishReason"], "STOP");
    let parts = c["content"]["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 1);
    let call = &parts[0]["functionCall"];
    assert_eq!(call["name"], "get_weather");
    assert!(call["args"]["city"].is_string());
    assert_eq!(call["args"]["days"], 1);
    assert!(call.get("id").is_none());
    assert_eq!(
        r["usageMetadata"]["candidatesTokenCount"].as_u64().unwrap(),
        o200k(&call["args"].to_string())
    );

    // Streamed: the whole call in one chunk.
    let chunks = sse_chunks(
        &post_raw(
            &format!("{}?alt=sse", url(&h, "streamGenerateContent")),
            &[],
            &ask,
        )
        .await,
    );
    assert_eq!(chunks.len(), 1);
    assert_eq!(
        chunks[0]["candidates"][0]["content"]["parts"][0]["functionCall"],
        *call
    );
    assert_eq!(chunks[0]["usageMetadata"], r["usageMetadata"]);

    // Both tools mentioned: two calls; mode ANY restricted to one name; mode NONE: text.
    let both = json!({"tools": weather_tools(),
        "contents": [{"role": "user", "parts": [{"text": "Use get_weather and get_time."}]}]});
    let r = post_raw(&url(&h, "generateContent"), &[], &both)
        .await
        .json();
    assert_eq!(
        r["candidates"][0]["content"]["parts"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let only = merged(
        both.clone(),
        json!({"toolConfig": {"functionCallingConfig": {"mode": "ANY",
            "allowedFunctionNames": ["get_time"]}}}),
    );
    let r = post_raw(&url(&h, "generateContent"), &[], &only)
        .await
        .json();
    let parts = r["candidates"][0]["content"]["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0]["functionCall"]["name"], "get_time");
    let none = merged(
        both,
        json!({"toolConfig": {"functionCallingConfig": {"mode": "NONE"}}}),
    );
    let r = post_raw(&url(&h, "generateContent"), &[], &none)
        .await
        .json();
    assert!(r["candidates"][0]["content"]["parts"][0]["text"].is_string());

    // The function response goes back in a user turn: a text answer.
    let answer = json!({"tools": weather_tools(), "contents": [
        {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
        {"role": "model", "parts": [{"functionCall": call}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
            "response": {"output": "18C"}}}]}]});
    let r = post_raw(&url(&h, "generateContent"), &[], &answer).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
    let r = r.json();
    assert!(r["candidates"][0]["content"]["parts"][0]["text"].is_string());
    assert_eq!(r["candidates"][0]["finishReason"], "STOP");
}

fn google_error(r: &Raw, status: u16, name: &str) -> Value {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.bytes));
    let j = r.json();
    assert_eq!(j["error"]["code"], status);
    assert_eq!(j["error"]["status"], name);
    assert!(j["error"]["message"].is_string());
    j
}

#[tokio::test]
async fn validation_errors() {
    let h = sim(SimConfig::default()).await;
    let u = url(&h, "generateContent");
    let bad_role = json!({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]});
    let j = google_error(&post_raw(&u, &[], &bad_role).await, 400, "INVALID_ARGUMENT");
    assert_eq!(
        j["error"]["message"],
        "Please use a valid role: user, model."
    );
    let j = google_error(
        &post_raw(&u, &[], &json!({})).await,
        400,
        "INVALID_ARGUMENT",
    );
    assert!(
        j["error"]["message"]
            .as_str()
            .unwrap()
            .contains("contents is not specified")
    );
    let j = google_error(
        &post_raw(
            &u,
            &[],
            &body(json!({"generationConfig": {"max_tokens": 5}})),
        )
        .await,
        400,
        "INVALID_ARGUMENT",
    );
    assert!(
        j["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Unknown name \"max_tokens\"")
    );
    let j = google_error(
        &post_raw(
            &u,
            &[],
            &json!({"contents": [{"role": "user", "parts": []}]}),
        )
        .await,
        400,
        "INVALID_ARGUMENT",
    );
    assert!(
        j["error"]["message"]
            .as_str()
            .unwrap()
            .contains("parts must not be empty")
    );
    // snake_case field names are accepted, as proto JSON allows.
    let snake = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                       "generation_config": {"max_output_tokens": 3}});
    let r = post_raw(&u, &[], &snake).await.json();
    assert_eq!(r["usageMetadata"]["candidatesTokenCount"], 3);
    // Unknown routes answer in Google's shape.
    google_error(
        &post_raw(&url(&h, "predict"), &[], &json!({})).await,
        404,
        "NOT_FOUND",
    );
    assert_eq!(h.stats().client_errors, 5);
}

#[tokio::test]
async fn auth_header_or_query_key() {
    let h = sim(SimConfig {
        api_key: Some("AIza-test".into()),
        ..SimConfig::default()
    })
    .await;
    let b = body(json!({}));
    let u = url(&h, "generateContent");
    google_error(&post_raw(&u, &[], &b).await, 403, "PERMISSION_DENIED");
    let j = google_error(
        &post_raw(&u, &[("x-goog-api-key", "wrong")], &b).await,
        400,
        "INVALID_ARGUMENT",
    );
    assert_eq!(j["error"]["details"][0]["reason"], "API_KEY_INVALID");
    // A Bearer token is not how Gemini API keys travel.
    google_error(
        &post_raw(&u, &[("authorization", "Bearer AIza-test")], &b).await,
        403,
        "PERMISSION_DENIED",
    );
    let r = post_raw(&u, &[("x-goog-api-key", "AIza-test")], &b).await;
    assert_eq!(r.status, 200);
    let r = post_raw(
        &format!("{}?alt=sse&key=AIza-test", url(&h, "streamGenerateContent")),
        &[],
        &b,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type(), "text/event-stream");
}

#[tokio::test]
async fn injected_failures_in_google_shape() {
    for (status, name) in [
        (429, "RESOURCE_EXHAUSTED"),
        (503, "UNAVAILABLE"),
        (500, "INTERNAL"),
    ] {
        let h = sim(SimConfig {
            fail_rate: 1.0,
            fail_status: status,
            retry_after_secs: Some(7),
            ..SimConfig::default()
        })
        .await;
        let j = google_error(
            &post_raw(&url(&h, "generateContent"), &[], &body(json!({}))).await,
            status,
            name,
        );
        let retry = j["error"]["details"]
            .as_array()
            .and_then(|d| {
                d.iter()
                    .find(|d| d["@type"].as_str().unwrap().ends_with("RetryInfo"))
            })
            .map(|d| d["retryDelay"].clone());
        if status == 500 {
            assert!(retry.is_none());
        } else {
            assert_eq!(retry, Some(json!("7s")));
        }
        google_error(
            &post_raw(
                &format!("{}?alt=sse", url(&h, "streamGenerateContent")),
                &[],
                &body(json!({})),
            )
            .await,
            status,
            name,
        );
        // Embeddings are faulted too.
        google_error(
            &post_raw(
                &url(&h, "embedContent"),
                &[],
                &json!({"content": {"parts": [{"text": "hi"}]}}),
            )
            .await,
            status,
            name,
        );
        assert_eq!(h.stats().faults_fail, 3);
    }
}

#[tokio::test]
async fn cut_stream_never_finishes() {
    let h = sim(SimConfig {
        cut_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    let r = post_raw(
        &format!("{}?alt=sse", url(&h, "streamGenerateContent")),
        &[],
        &body(json!({})),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.errored);
    let chunks = sse_chunks(&r);
    assert!(!chunks.is_empty() && chunks.len() < 16);
    assert!(
        chunks
            .iter()
            .all(|c| c["candidates"][0]["finishReason"].is_null())
    );
    assert_eq!(h.stats().streams_cut, 1);
    assert_eq!(h.stats().completion_tokens, 0);
}

#[tokio::test]
async fn cached_tokens_are_included_in_prompt_count() {
    let h = sim(SimConfig {
        cached_prompt_tokens: 5,
        ..SimConfig::default()
    })
    .await;
    let b = body(json!({}));
    let u = post_raw(&url(&h, "generateContent"), &[], &b).await.json()["usageMetadata"].clone();
    assert_eq!(u["promptTokenCount"].as_u64().unwrap(), prompt_of(&b));
    assert_eq!(u["cachedContentTokenCount"], 5);
    assert_eq!(u["totalTokenCount"].as_u64().unwrap(), prompt_of(&b) + 16);
    let chunks = sse_chunks(
        &post_raw(
            &format!("{}?alt=sse", url(&h, "streamGenerateContent")),
            &[],
            &b,
        )
        .await,
    );
    assert!(
        chunks
            .iter()
            .all(|c| c["usageMetadata"]["cachedContentTokenCount"] == 5)
    );
}

#[tokio::test]
async fn embeddings_count_tokens_and_models() {
    let h = sim(SimConfig::default()).await;
    let r = post_raw(
        &url(&h, "embedContent"),
        &[],
        &json!({"content": {"parts": [{"text": "hello world"}]}, "taskType": "RETRIEVAL_QUERY"}),
    )
    .await;
    assert_eq!(r.status, 200);
    let one = r.json()["embedding"]["values"].clone();
    let v: Vec<f64> = one
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(v.len(), 8);
    let norm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3);
    // The same text embeds the same way on the OpenAI path.
    let oa = post_json(
        &format!("{}/embeddings", h.base_url()),
        &json!({"model": "text-embedding-3-small", "input": "hello world"}),
    )
    .await;
    assert_eq!(oa.json["data"][0]["embedding"], one);

    let r = post_raw(
        &url(&h, "batchEmbedContents"),
        &[],
        &json!({"requests": [
            {"model": format!("models/{MODEL}"), "content": {"parts": [{"text": "hello world"}]}},
            {"model": format!("models/{MODEL}"), "content": {"parts": [{"text": "other"}]},
             "outputDimensionality": 16}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let embs = r.json()["embeddings"].clone();
    assert_eq!(embs[0]["values"], one);
    assert_eq!(embs[1]["values"].as_array().unwrap().len(), 16);
    let j = google_error(
        &post_raw(
            &url(&h, "batchEmbedContents"),
            &[],
            &json!({"requests": [{"model": "models/other",
                                  "content": {"parts": [{"text": "x"}]}}]}),
        )
        .await,
        400,
        "INVALID_ARGUMENT",
    );
    assert!(
        j["error"]["message"]
            .as_str()
            .unwrap()
            .contains("must match")
    );

    let b = body(json!({}));
    let counted = post_raw(&url(&h, "countTokens"), &[], &b).await.json();
    assert_eq!(counted["totalTokens"].as_u64().unwrap(), prompt_of(&b));

    let r = read_raw(
        client()
            .get(format!("http://{}/v1beta/models", h.addr))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.json()["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == format!("models/{MODEL}"))
    );
    let s = h.stats();
    assert_eq!(s.embed_content, 1);
    assert_eq!(s.batch_embed_contents, 2);
    assert_eq!(s.count_tokens, 1);
    assert_eq!(s.gemini_models, 1);
    assert_eq!(s.embeddings, 1);
    // "hello world" twice (2 tokens each) + "other" (1) + the OpenAI input (2).
    assert_eq!(s.prompt_tokens, 2 + 2 + 1 + 2);
}

#[tokio::test]
async fn prompt_cache_reads_are_included_in_prompt_count() {
    let h = sim(SimConfig {
        prompt_cache: true,
        ..SimConfig::default()
    })
    .await;
    let b = body(json!({"systemInstruction": {"parts": [{"text": long_text("gemini", 10_000)}]}}));
    let p = prompt_of(&b);
    let u = post_raw(&url(&h, "generateContent"), &[], &b).await.json()["usageMetadata"].clone();
    assert_eq!(u["promptTokenCount"].as_u64().unwrap(), p);
    assert!(u.get("cachedContentTokenCount").is_none());
    let cached = (p - 3) / 128 * 128;
    assert!(cached >= 1024);
    let u = post_raw(&url(&h, "generateContent"), &[], &b).await.json()["usageMetadata"].clone();
    assert_eq!(u["promptTokenCount"].as_u64().unwrap(), p);
    assert_eq!(u["cachedContentTokenCount"].as_u64().unwrap(), cached);
}
