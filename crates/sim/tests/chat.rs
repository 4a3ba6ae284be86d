//! Chat Completions over real HTTP: shapes, usage consistency, streaming framing, tools,
//! JSON mode, n, logprobs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};
use tollgate_tokens::{Encoding, count_chat_prompt};

fn hello(extra: Value) -> Value {
    let mut body = json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say something about budgets."}
        ]
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    body
}

fn o200k(s: &str) -> u64 {
    Encoding::O200k.count(s)
}

#[tokio::test]
async fn non_stream_shape_and_usage() {
    let h = sim(SimConfig::default()).await;
    let body = hello(json!({}));
    let r = post_json(&chat_url(&h), &body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/json");
    assert!(
        r.headers["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    let j = &r.json;
    assert!(j["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(j["object"], "chat.completion");
    assert_eq!(j["model"], "gpt-4o");
    assert_eq!(j["system_fingerprint"], "fp_sim");
    assert!(j["created"].as_u64().unwrap() > 1_700_000_000);
    let choice = &j["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(choice["logprobs"].is_null());
    let content = choice["message"]["content"].as_str().unwrap();
    assert_eq!(content.split(' ').count(), 16);

    let u = &j["usage"];
    assert_eq!(
        u["prompt_tokens"].as_u64().unwrap(),
        count_chat_prompt(Encoding::O200k, &body)
    );
    assert_eq!(u["completion_tokens"].as_u64().unwrap(), 16);
    assert_eq!(u["completion_tokens"].as_u64().unwrap(), o200k(content));
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + 16
    );
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(u["completion_tokens_details"]["reasoning_tokens"], 0);

    let s = h.stats();
    assert_eq!(s.requests, 1);
    assert_eq!(s.chat_completions, 1);
    assert_eq!(s.completion_tokens, 16);
    assert_eq!(s.prompt_tokens, count_chat_prompt(Encoding::O200k, &body));
    assert_eq!(s.in_flight, 0);
    h.shutdown().await;
}

#[tokio::test]
async fn content_is_deterministic() {
    let h = sim(SimConfig::default()).await;
    let a = post_json(&chat_url(&h), &hello(json!({}))).await.json;
    let b = post_json(
        &chat_url(&h),
        &hello(json!({"seed": 7, "temperature": 1.5})),
    )
    .await
    .json;
    assert_eq!(
        a["choices"][0]["message"]["content"],
        b["choices"][0]["message"]["content"]
    );
    assert_ne!(a["id"], b["id"]);
    let mut other = hello(json!({}));
    other["messages"][1]["content"] = json!("Something else entirely.");
    let c = post_json(&chat_url(&h), &other).await.json;
    assert_ne!(
        a["choices"][0]["message"]["content"],
        c["choices"][0]["message"]["content"]
    );
}

#[tokio::test]
async fn max_tokens_honoured() {
    let h = sim(SimConfig::default()).await;
    let r = post_json(&chat_url(&h), &hello(json!({"max_tokens": 5}))).await;
    let c = &r.json["choices"][0];
    assert_eq!(c["finish_reason"], "length");
    assert_eq!(r.json["usage"]["completion_tokens"], 5);
    assert_eq!(o200k(c["message"]["content"].as_str().unwrap()), 5);

    let r = post_json(
        &chat_url(&h),
        &hello(json!({"max_completion_tokens": 3, "max_tokens": 100})),
    )
    .await;
    assert_eq!(r.json["usage"]["completion_tokens"], 3);

    // A max above the knob: the knob's length, natural stop.
    let r = post_json(&chat_url(&h), &hello(json!({"max_tokens": 100}))).await;
    assert_eq!(r.json["usage"]["completion_tokens"], 16);
    assert_eq!(r.json["choices"][0]["finish_reason"], "stop");

    // Equal to the knob: not cut.
    let r = post_json(&chat_url(&h), &hello(json!({"max_tokens": 16}))).await;
    assert_eq!(r.json["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn unknown_models_count_with_o200k_and_cl100k_models_with_cl100k() {
    let h = sim(SimConfig::default()).await;
    for (model, enc) in [
        ("claude-sonnet-4-5", Encoding::O200k),
        ("gpt-4-turbo", Encoding::Cl100k),
    ] {
        let mut body = hello(json!({}));
        body["model"] = json!(model);
        let r = post_json(&chat_url(&h), &body).await;
        assert_eq!(r.json["model"], model);
        assert_eq!(
            r.json["usage"]["prompt_tokens"].as_u64().unwrap(),
            count_chat_prompt(enc, &body)
        );
        let content = r.json["choices"][0]["message"]["content"].as_str().unwrap();
        assert_eq!(r.json["usage"]["completion_tokens"], enc.count(content));
    }
}

#[tokio::test]
async fn stream_framing_with_usage() {
    let h = sim(SimConfig::default()).await;
    let plain = post_json(&chat_url(&h), &hello(json!({}))).await.json;
    let body = hello(json!({"stream": true, "stream_options": {"include_usage": true}}));
    let s = stream(&chat_url(&h), &body).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.content_type, "text/event-stream");
    assert!(!s.errored);
    assert!(s.done());
    let chunks = s.chunks();
    // role + 16 tokens + finish + usage
    assert_eq!(chunks.len(), 19);
    let id = chunks[0]["id"].clone();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], id);
        assert_eq!(c["model"], "gpt-4o");
        assert!(c.as_object().unwrap().contains_key("usage"));
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    for c in &chunks[..18] {
        assert!(c["usage"].is_null());
    }
    let finish = &chunks[17]["choices"][0];
    assert_eq!(finish["delta"], json!({}));
    assert_eq!(finish["finish_reason"], "stop");
    for c in &chunks[..17] {
        assert!(c["choices"][0]["finish_reason"].is_null());
    }
    let usage_chunk = &chunks[18];
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"], plain["usage"]);

    let content = s.content(0);
    assert_eq!(content, plain["choices"][0]["message"]["content"]);
    assert_eq!(usage_chunk["usage"]["completion_tokens"], o200k(&content));
    assert_eq!(h.stats().streams, 1);
}

#[tokio::test]
async fn stream_without_usage() {
    let h = sim(SimConfig::default()).await;
    for body in [
        hello(json!({"stream": true})),
        hello(json!({"stream": true, "stream_options": {"include_usage": false}})),
    ] {
        let s = stream(&chat_url(&h), &body).await;
        assert!(s.done());
        let chunks = s.chunks();
        assert_eq!(chunks.len(), 18);
        for c in &chunks {
            assert!(!c.as_object().unwrap().contains_key("usage"), "{c}");
            assert_eq!(c["choices"].as_array().unwrap().len(), 1);
        }
    }
    // An upstream that ignores include_usage.
    h.set_config(SimConfig {
        stream_usage: false,
        ..SimConfig::default()
    });
    let s = stream(
        &chat_url(&h),
        &hello(json!({"stream": true, "stream_options": {"include_usage": true}})),
    )
    .await;
    assert!(s.done());
    assert!(s.chunks().iter().all(|c| c.get("usage").is_none()));
}

#[tokio::test]
async fn chunks_knob_splits_content() {
    let h = sim(SimConfig {
        chunks: 3,
        completion_tokens: 10,
        ..SimConfig::default()
    })
    .await;
    let s = stream(&chat_url(&h), &hello(json!({"stream": true}))).await;
    let chunks = s.chunks();
    // role + 3 content + finish
    assert_eq!(chunks.len(), 5);
    assert_eq!(o200k(&s.content(0)), 10);
}

#[tokio::test]
async fn tool_call_single() {
    let h = sim(SimConfig::default()).await;
    let body = json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string"}, "days": {"type": "integer"},
                "metric": {"type": "boolean"}, "note": {"type": "string"}},
                "required": ["city", "days", "metric"]}}}]
    });
    let r = post_json(&chat_url(&h), &body).await;
    assert_eq!(r.status, 200);
    let c = &r.json["choices"][0];
    assert_eq!(c["finish_reason"], "tool_calls");
    assert!(c["message"]["content"].is_null());
    let calls = c["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args_text = calls[0]["function"]["arguments"].as_str().unwrap();
    let args: Value = serde_json::from_str(args_text).unwrap();
    assert!(args["city"].is_string());
    assert_eq!(args["days"], 1);
    assert_eq!(args["metric"], true);
    assert!(args.get("note").is_none());
    assert_eq!(r.json["usage"]["completion_tokens"], o200k(args_text));
    assert_eq!(
        r.json["usage"]["prompt_tokens"].as_u64().unwrap(),
        count_chat_prompt(Encoding::O200k, &body)
    );

    // Same request, same id and arguments.
    let again = post_json(&chat_url(&h), &body).await;
    assert_eq!(
        again.json["choices"][0]["message"]["tool_calls"],
        json!(calls)
    );
}

fn two_tools(text: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": text}],
        "tools": [
            {"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "get_time",
                "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}},
            {"type": "function", "function": {"name": "no_args"}}
        ]
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    body
}

fn call_names(j: &Value) -> Vec<String> {
    j["choices"][0]["message"]["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["function"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn parallel_and_forced_tool_calls() {
    let h = sim(SimConfig::default()).await;
    let url = chat_url(&h);
    let r = post_json(&url, &two_tools("call get_time and get_weather", json!({}))).await;
    assert_eq!(call_names(&r.json), vec!["get_weather", "get_time"]);
    let calls = r.json["choices"][0]["message"]["tool_calls"]
        .as_array()
        .unwrap()
        .clone();
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    let total: u64 = calls
        .iter()
        .map(|c| o200k(c["function"]["arguments"].as_str().unwrap()))
        .sum();
    assert_eq!(r.json["usage"]["completion_tokens"], total);

    let r = post_json(
        &url,
        &two_tools(
            "call get_time and get_weather",
            json!({"parallel_tool_calls": false}),
        ),
    )
    .await;
    assert_eq!(call_names(&r.json), vec!["get_weather"]);

    let r = post_json(&url, &two_tools("just one: get_time", json!({}))).await;
    assert_eq!(call_names(&r.json), vec!["get_weather"]);

    let r = post_json(
        &url,
        &two_tools(
            "hello",
            json!({"tool_choice": {"type": "function", "function": {"name": "no_args"}}}),
        ),
    )
    .await;
    assert_eq!(call_names(&r.json), vec!["no_args"]);
    assert_eq!(
        r.json["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{}"
    );

    let r = post_json(&url, &two_tools("hello", json!({"tool_choice": "none"}))).await;
    assert!(r.json["choices"][0]["message"]["content"].is_string());
    assert_eq!(r.json["choices"][0]["finish_reason"], "stop");

    let r = post_json(
        &url,
        &two_tools(
            "hello",
            json!({"tool_choice": {"type": "function", "function": {"name": "missing"}}}),
        ),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json["error"]["param"], "tool_choice");
}

#[tokio::test]
async fn tool_result_round_trip() {
    let h = sim(SimConfig::default()).await;
    let url = chat_url(&h);
    let first = two_tools("weather please", json!({}));
    let r = post_json(&url, &first).await;
    let call = r.json["choices"][0]["message"]["tool_calls"][0].clone();

    let mut second = first.clone();
    let msgs = second["messages"].as_array_mut().unwrap();
    msgs.push(json!({"role": "assistant", "content": null, "tool_calls": [call.clone()]}));
    msgs.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "18C, cloudy"}));
    let r = post_json(&url, &second).await;
    assert_eq!(r.status, 200);
    let c = &r.json["choices"][0];
    assert_eq!(c["finish_reason"], "stop");
    assert!(c["message"].get("tool_calls").is_none());
    let content = c["message"]["content"].as_str().unwrap();
    assert_eq!(r.json["usage"]["completion_tokens"], o200k(content));
    assert_eq!(
        r.json["usage"]["prompt_tokens"].as_u64().unwrap(),
        count_chat_prompt(Encoding::O200k, &second)
    );
}

#[tokio::test]
async fn streamed_tool_calls_reassemble() {
    let h = sim(SimConfig {
        chunks: 2,
        ..SimConfig::default()
    })
    .await;
    let url = chat_url(&h);
    let body = two_tools("use get_weather and get_time", json!({}));
    let plain = post_json(&url, &body).await.json;
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    sbody["stream_options"] = json!({"include_usage": true});
    let s = stream(&url, &sbody).await;
    assert!(s.done());
    let chunks = s.chunks();
    let first = &chunks[0]["choices"][0]["delta"];
    assert_eq!(first["role"], "assistant");
    assert!(first["content"].is_null() && first.get("content").is_some());
    assert_eq!(first["tool_calls"][0]["index"], 0);
    assert_eq!(first["tool_calls"][0]["function"]["arguments"], "");

    // Reassemble per index as a client would.
    let mut ids = vec![String::new(); 2];
    let mut names = vec![String::new(); 2];
    let mut args = vec![String::new(); 2];
    let mut finish = None;
    for c in &chunks {
        for ch in c["choices"].as_array().unwrap() {
            if let Some(f) = ch["finish_reason"].as_str() {
                finish = Some(f.to_string());
            }
            for tc in ch["delta"]["tool_calls"].as_array().into_iter().flatten() {
                let i = tc["index"].as_u64().unwrap() as usize;
                if let Some(id) = tc["id"].as_str() {
                    assert!(ids[i].is_empty(), "id sent twice");
                    ids[i] = id.to_string();
                    names[i] = tc["function"]["name"].as_str().unwrap().to_string();
                }
                args[i].push_str(tc["function"]["arguments"].as_str().unwrap());
            }
        }
    }
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    let want = plain["choices"][0]["message"]["tool_calls"]
        .as_array()
        .unwrap();
    for i in 0..2 {
        assert_eq!(want[i]["id"], ids[i]);
        assert_eq!(want[i]["function"]["name"], names[i]);
        assert_eq!(want[i]["function"]["arguments"], args[i]);
    }
    assert_eq!(chunks.last().unwrap()["usage"], plain["usage"]);
}

#[tokio::test]
async fn json_modes() {
    let h = sim(SimConfig::default()).await;
    let url = chat_url(&h);
    let r = post_json(
        &url,
        &hello(json!({"response_format": {"type": "json_object"}})),
    )
    .await;
    let content = r.json["choices"][0]["message"]["content"].as_str().unwrap();
    let v: Value = serde_json::from_str(content).unwrap();
    assert!(v["answer"].is_string());
    assert_eq!(r.json["usage"]["completion_tokens"], o200k(content));
    assert_eq!(r.json["choices"][0]["finish_reason"], "stop");

    let schema = json!({"type": "object", "properties": {
        "title": {"type": "string"}, "score": {"type": "number"}, "tags": {"type": "array"}},
        "required": ["title", "score", "tags"]});
    let r = post_json(
        &url,
        &hello(json!({"response_format": {"type": "json_schema",
            "json_schema": {"name": "r", "schema": schema, "strict": true}}})),
    )
    .await;
    let content = r.json["choices"][0]["message"]["content"].as_str().unwrap();
    let v: Value = serde_json::from_str(content).unwrap();
    assert!(v["title"].is_string());
    assert_eq!(v["score"], 1);
    assert_eq!(v["tags"], json!([]));
    assert_eq!(r.json["usage"]["completion_tokens"], o200k(content));

    // A tight max cuts the JSON and says so.
    let r = post_json(
        &url,
        &hello(json!({"response_format": {"type": "json_object"}, "max_tokens": 4})),
    )
    .await;
    let content = r.json["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(r.json["choices"][0]["finish_reason"], "length");
    assert!(r.json["usage"]["completion_tokens"].as_u64().unwrap() <= 4);
    assert_eq!(r.json["usage"]["completion_tokens"], o200k(content));
}

#[tokio::test]
async fn n_choices() {
    let h = sim(SimConfig::default()).await;
    let url = chat_url(&h);
    let r = post_json(&url, &hello(json!({"n": 3, "max_tokens": 4}))).await;
    let choices = r.json["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    let contents: Vec<&str> = choices
        .iter()
        .map(|c| c["message"]["content"].as_str().unwrap())
        .collect();
    assert_ne!(contents[0], contents[1]);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
    }
    let total: u64 = contents.iter().map(|c| o200k(c)).sum();
    assert_eq!(total, 12);
    assert_eq!(r.json["usage"]["completion_tokens"], 12);

    let s = stream(
        &url,
        &hello(json!({"n": 3, "max_tokens": 4, "stream": true, "stream_options": {"include_usage": true}})),
    )
    .await;
    for (i, c) in contents.iter().enumerate() {
        assert_eq!(s.content(i as u64), *c);
    }
    assert_eq!(s.chunks().last().unwrap()["usage"]["completion_tokens"], 12);
}

#[tokio::test]
async fn logprobs() {
    let h = sim(SimConfig::default()).await;
    let url = chat_url(&h);
    let r = post_json(&url, &hello(json!({"logprobs": true, "top_logprobs": 2}))).await;
    let lp = r.json["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(lp.len(), 16);
    let mut joined = String::new();
    for e in &lp {
        let token = e["token"].as_str().unwrap();
        joined.push_str(token);
        assert!(e["logprob"].as_f64().unwrap() < 0.0);
        let bytes: Vec<u8> = e["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(bytes, token.as_bytes());
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        assert_eq!(top[0]["token"], token);
        assert!(top[1]["logprob"].as_f64().unwrap() < top[0]["logprob"].as_f64().unwrap());
    }
    assert_eq!(joined, r.json["choices"][0]["message"]["content"]);

    let s = stream(&url, &hello(json!({"stream": true, "logprobs": true}))).await;
    let streamed: usize = s
        .chunks()
        .iter()
        .filter_map(|c| {
            c["choices"][0]["logprobs"]["content"]
                .as_array()
                .map(Vec::len)
        })
        .sum();
    assert_eq!(streamed, 16);
}

#[tokio::test]
async fn http2_prior_knowledge() {
    let h = sim(SimConfig::default()).await;
    install_crypto();
    let c = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = c
        .post(chat_url(&h))
        .json_body(&hello(json!({"stream": true})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let s = read_sse(resp).await;
    assert!(s.done());
    assert_eq!(o200k(&s.content(0)), 16);
}

#[tokio::test]
async fn cached_prompt_tokens_are_included_in_prompt_tokens() {
    let h = sim(SimConfig {
        cached_prompt_tokens: 5,
        ..SimConfig::default()
    })
    .await;
    let body = hello(json!({}));
    let prompt = count_chat_prompt(Encoding::O200k, &body);
    let u = post_json(&chat_url(&h), &body).await.json["usage"].clone();
    // OpenAI's semantics: prompt_tokens counts every prompt token, cached ones included.
    assert_eq!(u["prompt_tokens"].as_u64().unwrap(), prompt);
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 5);
    assert_eq!(u["total_tokens"].as_u64().unwrap(), prompt + 16);
    let sse = stream(
        &chat_url(&h),
        &hello(json!({"stream": true, "stream_options": {"include_usage": true}})),
    )
    .await;
    let chunks = sse.chunks();
    let last = chunks.last().unwrap();
    assert_eq!(last["usage"]["prompt_tokens_details"]["cached_tokens"], 5);
    // Capped at the prompt.
    h.set_config(SimConfig {
        cached_prompt_tokens: u32::MAX,
        ..SimConfig::default()
    });
    let u = post_json(&chat_url(&h), &body).await.json["usage"].clone();
    assert_eq!(
        u["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap(),
        prompt
    );
    assert_eq!(h.stats().cached_prompt_tokens, 10 + prompt);
}

#[tokio::test]
async fn stop_sequences_end_the_answer() {
    let h = sim(SimConfig::default()).await;
    let full =
        post_json(&chat_url(&h), &hello(json!({}))).await.json["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string();
    let stop = format!(" {}", full.split(' ').nth(5).unwrap());
    let at = full.find(&stop).unwrap();
    let r = post_json(&chat_url(&h), &hello(json!({"stop": [stop]}))).await;
    let c = &r.json["choices"][0];
    assert_eq!(c["finish_reason"], "stop");
    assert_eq!(c["message"]["content"], &full[..at]);
    assert_eq!(
        r.json["usage"]["completion_tokens"].as_u64().unwrap(),
        o200k(&full[..at])
    );
    let r = post_json(
        &chat_url(&h),
        &hello(json!({"stop": ["a", "b", "c", "d", "e"]})),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json["error"]["param"], "stop");
}
