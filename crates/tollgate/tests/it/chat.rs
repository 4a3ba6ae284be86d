//! `POST /v1/chat/completions`, non-streaming: faithful pass-through, routing headers, and the
//! ledger row's usage and exact cost; the tool-call round trip (streaming and not).

use serde_json::{Value, json};
use tollgate_types::Usage;

use crate::harness::*;

fn usage_of(v: &Value) -> (u64, u64, u64) {
    let u = &v["usage"];
    (
        u["prompt_tokens"].as_u64().unwrap(),
        u["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or(0),
        u["completion_tokens"].as_u64().unwrap(),
    )
}

/// Checks the routing headers, then the row against the answer's usage and the price table.
async fn check_billed(env: &TestEnv, resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), 200);
    let request_id = header(&resp, "x-tollgate-request-id").to_string();
    assert!(request_id.starts_with("req_"), "{request_id}");
    assert_eq!(header(&resp, "x-tollgate-served-model"), "gpt-4o-mini");
    assert_eq!(header(&resp, "x-tollgate-provider"), "sim");
    let cost_header = header(&resp, "x-tollgate-cost-usd").to_string();
    let body: Value = resp.json().await.unwrap();
    let (input, cached, output) = usage_of(&body);
    assert!(input > 0 && output > 0, "{body}");

    let row = env.row(&request_id).await;
    assert_eq!(row["outcome"], "ok");
    assert_eq!(row["status"], 200);
    assert_eq!(row["usage_source"], "provider");
    assert_eq!(row["input_tokens"], input);
    assert_eq!(row["cached_input_tokens"], cached);
    assert_eq!(row["output_tokens"], output);
    assert_eq!(row["requested_model"], "gpt-4o-mini");
    assert_eq!(row["served_model"], "gpt-4o-mini");
    assert_eq!(row["provider"], "sim");
    assert_eq!(row["deployment"], "sim/gpt-4o-mini");
    assert_eq!(row["attempts"], 1);
    assert_eq!(row["price_version"], tollgate_pricing::BUILTIN_VERSION);
    assert_eq!(row["unpriced"], false);
    assert_eq!(row["stream"], false);

    // The exact cost, by hand and by the pricing crate; header, row list and effective cost
    // agree to the nano-dollar.
    let expected = gpt4o_mini_cost(input, cached, output);
    let price = tollgate_pricing::builtin()
        .unwrap()
        .get("gpt-4o-mini")
        .unwrap()
        .price;
    let usage = Usage {
        input_tokens: input,
        cached_input_tokens: cached,
        output_tokens: output,
        ..Usage::default()
    };
    assert_eq!(tollgate_pricing::cost(&usage, &price).nanos(), expected);
    assert_eq!(nanos(row["effective_cost"].as_str().unwrap()), expected);
    assert_eq!(nanos(row["list_cost"].as_str().unwrap()), expected);
    assert_eq!(nanos(&cost_header), expected);
    body
}

fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                           "required": ["city", "days"]}}},
        {"type": "function", "function": {"name": "get_time", "description": "Local time",
            "parameters": {"type": "object", "properties": {"tz": {"type": "string", "enum": ["UTC", "CET"]}},
                           "required": ["tz"]}}}
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_streaming_tools_parallel_calls_multimodal_n2() {
    let env = TestEnv::start().await;
    let key = env.key().await;
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": [
                {"type": "text", "text": "Use get_weather and get_time for the city in this picture."},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}
            ]}
        ],
        "tools": weather_tools(),
        "tool_choice": "auto",
        "parallel_tool_calls": true,
        "n": 2,
        "seed": 42,
        "stop": ["\n\n", "END"],
        "max_completion_tokens": 200,
        "temperature": 0.2,
    });
    let resp = env.chat(&key, body).await;
    let v = check_billed(&env, resp).await;
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(v["object"], "chat.completion");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2, "n=2 reached the upstream: {v}");
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["finish_reason"], "tool_calls");
        assert!(c["message"]["content"].is_null());
        let calls = c["message"]["tool_calls"].as_array().unwrap();
        let names: Vec<&str> = calls
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        // Both tools mentioned + parallel_tool_calls → two calls in one turn.
        assert_eq!(names, ["get_weather", "get_time"], "{v}");
        let weather: Value =
            serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert!(weather["city"].is_string(), "{weather}");
        assert_eq!(weather["days"], 1);
        let time: Value =
            serde_json::from_str(calls[1]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(time, json!({"tz": "UTC"}));
    }

    // parallel_tool_calls: false → only the first tool.
    let resp = env
        .chat(
            &key,
            json!({
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "Use get_weather and get_time please."}],
                "tools": weather_tools(),
                "parallel_tool_calls": false,
            }),
        )
        .await;
    let v = check_billed(&env, resp).await;
    let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["function"]["name"], "get_weather");

    // A named tool_choice reaches the upstream: the named tool is called.
    let resp = env
        .chat(
            &key,
            json!({
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "What time is it?"}],
                "tools": weather_tools(),
                "tool_choice": {"type": "function", "function": {"name": "get_time"}},
            }),
        )
        .await;
    let v = check_billed(&env, resp).await;
    let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["function"]["name"], "get_time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_streaming_json_schema_logprobs_and_max_tokens() {
    let env = TestEnv::start().await;
    let key = env.key().await;
    let schema = json!({
        "type": "object",
        "properties": {"title": {"type": "string"}, "score": {"type": "number"}, "ok": {"type": "boolean"}},
        "required": ["title", "score", "ok"],
        "additionalProperties": false
    });
    let resp = env
        .chat(
            &key,
            json!({
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "Rate this."}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "rating", "strict": true, "schema": schema}},
            }),
        )
        .await;
    let v = check_billed(&env, resp).await;
    let content: Value =
        serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(content["title"].is_string(), "{content}");
    assert_eq!(content["score"], 1);
    assert_eq!(content["ok"], true);

    // logprobs + top_logprobs: one entry per token, each with the asked-for alternatives.
    let resp = env
        .chat(
            &key,
            json!({
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "Say something."}],
                "logprobs": true,
                "top_logprobs": 3,
            }),
        )
        .await;
    let v = check_billed(&env, resp).await;
    let lp = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(
        lp.len() as u64,
        v["usage"]["completion_tokens"].as_u64().unwrap()
    );
    for e in lp {
        assert_eq!(e["top_logprobs"].as_array().unwrap().len(), 3, "{e}");
    }

    // max_completion_tokens with n=2: each choice cut at 5 tokens, usage sums both.
    let resp = env
        .chat(
            &key,
            json!({
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "Write a long story."}],
                "n": 2,
                "max_completion_tokens": 5,
            }),
        )
        .await;
    let v = check_billed(&env, resp).await;
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    for c in v["choices"].as_array().unwrap() {
        assert_eq!(c["finish_reason"], "length", "{v}");
    }
    assert_eq!(v["usage"]["completion_tokens"], 10);
}

/// Byte-level pass-through, checked on an upstream that records what it receives: the body
/// arrives with every field intact (only `model` rewritten to the deployment's upstream name),
/// and a provider-reported cached-token count is billed at the cached price.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_reaches_upstream_unchanged_and_cached_tokens_are_priced() {
    let (rec_addr, recorded) = spawn_recorder(false).await;
    let env = TestEnv::with(Opts {
        extra_providers: format!("  rec:\n    kind: openai\n    base_url: http://{rec_addr}/v1\n"),
        extra_models: "  mini-alias: {deployments: [{provider: rec, model: gpt-4o-mini}]}\n".into(),
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    let sent = json!({
        "model": "mini-alias",
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.invalid/a.png"}},
                {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"r\":2}"},
            {"role": "user", "content": "and now?"}
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "parallel_tool_calls": true,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": true}},
        "n": 2,
        "stop": ["END"],
        "seed": 7,
        "logprobs": true,
        "top_logprobs": 2,
        "max_completion_tokens": 64,
        "temperature": 0.5,
        "top_p": 0.9,
        "presence_penalty": 0.1,
        "frequency_penalty": -0.1,
        "logit_bias": {"50256": -100},
        "user": "end-user-1",
        "metadata": {"env": "test"},
        "store": false,
        "reasoning_effort": "low",
        "some_vendor_extension": {"nested": [1, 2.5, "x", null, true]}
    });
    let resp = env.chat(&key, sent.clone()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-tollgate-served-model"), "gpt-4o-mini");
    assert_eq!(header(&resp, "x-tollgate-provider"), "rec");
    let request_id = header(&resp, "x-tollgate-request-id").to_string();
    let cost = header(&resp, "x-tollgate-cost-usd").to_string();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "recorded");

    let got = recorded.lock().unwrap().clone();
    assert_eq!(got.bodies.len(), 1);
    let mut expected = sent.clone();
    expected["model"] = json!("gpt-4o-mini");
    assert_eq!(got.bodies[0], expected, "upstream body differs");
    // Tollgate's own headers and the caller's virtual key never go upstream.
    let h = &got.headers[0];
    assert!(!h.values().any(|v| v.contains(&key)), "{h:?}");
    assert!(!h.keys().any(|k| k.starts_with("x-tollgate")), "{h:?}");

    // 1000 prompt tokens of which 400 cached, 100 output:
    // 600 × 150 + 400 × 75 + 100 × 600 = 180_000 nano-USD.
    assert_eq!(gpt4o_mini_cost(1000, 400, 100), 180_000);
    assert_eq!(nanos(&cost), 180_000);
    assert_eq!(cost, "0.00018");
    let row = env.row(&request_id).await;
    assert_eq!(row["input_tokens"], 1000);
    assert_eq!(row["cached_input_tokens"], 400);
    assert_eq!(row["output_tokens"], 100);
    assert_eq!(row["usage_source"], "provider");
    assert_eq!(nanos(row["effective_cost"].as_str().unwrap()), 180_000);
    assert_eq!(row["requested_model"], "mini-alias");
    assert_eq!(row["deployment"], "rec/gpt-4o-mini");
    assert_eq!(row["user"], "end-user-1");
    assert_eq!(row["tags"], json!({"env": "test"}));
}

/// assistant tool_calls → tool result → text answer, over both transports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_call_round_trip_streaming_and_not() {
    let env = TestEnv::start().await;
    let key = env.key().await;
    let tools = weather_tools();
    let ask = json!([{"role": "user", "content": "What's the weather? Use get_weather."}]);

    for stream in [false, true] {
        // 1. The model asks for a tool call.
        let mut req = json!({"model": "gpt-4o-mini", "messages": ask, "tools": tools});
        let call = if stream {
            req["stream"] = json!(true);
            let events = read_stream(env.chat(&key, req).await).await;
            assert!(events.last().unwrap().is_done());
            // Reassemble the streamed tool call.
            let (mut id, mut name, mut args, mut finish) =
                (String::new(), String::new(), String::new(), String::new());
            for e in events.iter().filter(|e| !e.is_done()) {
                let v = e.json();
                let c = &v["choices"][0];
                if let Some(tc) = c["delta"]["tool_calls"].as_array() {
                    assert_eq!(tc[0]["index"], 0);
                    if let Some(s) = tc[0]["id"].as_str() {
                        id.push_str(s);
                    }
                    if let Some(s) = tc[0]["function"]["name"].as_str() {
                        name.push_str(s);
                    }
                    if let Some(s) = tc[0]["function"]["arguments"].as_str() {
                        args.push_str(s);
                    }
                }
                if let Some(f) = c["finish_reason"].as_str() {
                    finish = f.to_string();
                }
            }
            assert_eq!(finish, "tool_calls");
            json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}})
        } else {
            let v: Value = env.chat(&key, req).await.json().await.unwrap();
            assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
            v["choices"][0]["message"]["tool_calls"][0].clone()
        };
        assert_eq!(call["function"]["name"], "get_weather");
        let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap())
            .expect("arguments are JSON");
        assert!(args["city"].is_string());
        let call_id = call["id"].as_str().unwrap().to_string();
        assert!(call_id.starts_with("call_"), "{call_id}");

        // 2. The tool result goes back; the model answers in text.
        let mut messages = ask.as_array().unwrap().clone();
        messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
        messages
            .push(json!({"role": "tool", "tool_call_id": call_id, "content": "{\"temp_c\": 21}"}));
        let mut req = json!({"model": "gpt-4o-mini", "messages": messages, "tools": tools});
        if stream {
            req["stream"] = json!(true);
            let events = read_stream(env.chat(&key, req).await).await;
            assert!(events.last().unwrap().is_done());
            let text = streamed_text(&events);
            assert_eq!(text.split_whitespace().count(), 16, "{text}");
            assert!(
                events
                    .iter()
                    .filter(|e| !e.is_done())
                    .all(|e| e.json()["choices"][0]["delta"]["tool_calls"].is_null())
            );
        } else {
            let v: Value = env.chat(&key, req).await.json().await.unwrap();
            assert_eq!(v["choices"][0]["finish_reason"], "stop");
            let text = v["choices"][0]["message"]["content"].as_str().unwrap();
            assert_eq!(text.split_whitespace().count(), 16, "{text}");
            assert!(v["choices"][0]["message"]["tool_calls"].is_null());
        }
    }
    let rows = env.rows("outcome=ok").await;
    assert_eq!(rows.len(), 4);
    assert_eq!(rows.iter().filter(|r| r["stream"] == true).count(), 2);
    assert!(rows.iter().all(|r| r["usage_source"] == "provider"));
}
