//! OpenAI ingress: a client's request body for `POST /v1/chat/completions` and
//! `POST /v1/embeddings` through `tollgate_ingress::parse_object`, `ChatRequest::parse` and
//! `EmbeddingsRequest::parse`, then what the gateway does next with the client's bytes: the
//! local prompt token count of budget and rate-limit admission (`tollgate_tokens`), and each
//! translating adapter's request translation (Anthropic `to_messages_request`, Gemini
//! `chat_request` and embeddings `prepare`, Bedrock `request::translate`; OpenAI and Azure pass
//! the body through).
//!
//! Invariants: no panic; an accepted request keeps the client's body untouched and agrees with
//! it (model, stream flags, output cap, `n`); serialising the body and parsing it again yields
//! the same request; a refusal names the offending parameter and is a 400; a chat prompt counts
//! at least its per-message framing; every translated request serialises, and carries the
//! client's output cap unchanged (the cap budget admission reserved for).

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use tollgate_ingress::openai::{ChatRequest, EmbeddingsRequest};
use tollgate_providers::{OutputLimits, anthropic, bedrock, gemini};
use tollgate_tokens::{Encoding, count_chat_prompt_map, count_embedding_input};

fn reparse(body: &Map<String, Value>) -> Map<String, Value> {
    let bytes = serde_json::to_vec(body).expect("a parsed body serialises");
    tollgate_ingress::parse_object(&bytes).expect("a serialised body parses again")
}

fuzz_target!(|data: &[u8]| {
    let body = match tollgate_ingress::parse_object(data) {
        Ok(body) => body,
        Err(e) => {
            assert_eq!(e.status(), 400);
            return;
        }
    };

    match ChatRequest::parse(body.clone()) {
        Ok(r) => {
            assert_eq!(r.body, body, "the body passes through untouched");
            assert!(!r.model.trim().is_empty());
            assert_eq!(body.get("model").and_then(Value::as_str), Some(&*r.model));
            assert!(r.n >= 1);
            assert!(
                !r.include_usage || r.stream,
                "include_usage only on streams"
            );
            let cap = |k: &str| body.get(k).and_then(Value::as_u64);
            assert_eq!(
                r.max_output_tokens,
                cap("max_completion_tokens").or(cap("max_tokens"))
            );
            let again = ChatRequest::parse(reparse(&r.body)).expect("re-serialised body accepted");
            assert_eq!(
                (&again.model, again.stream, again.include_usage),
                (&r.model, r.stream, r.include_usage)
            );
            assert_eq!(
                (again.max_output_tokens, again.n),
                (r.max_output_tokens, r.n)
            );

            let messages = body["messages"].as_array().map_or(0, Vec::len) as u64;
            let tokens = count_chat_prompt_map(Encoding::for_model(&r.model), &r.body);
            assert!(
                tokens >= 3 * messages + 3,
                "{tokens} tokens for {messages} messages"
            );
            translations(&r);
        }
        Err(e) => {
            assert_eq!(e.status(), 400);
            assert!(e.param.as_deref().is_some_and(|p| !p.is_empty()), "{e:?}");
        }
    }

    match EmbeddingsRequest::parse(body.clone()) {
        Ok(r) => {
            assert_eq!(r.body, body);
            assert!(!r.model.trim().is_empty());
            let input = &body["input"];
            assert!(input.is_string() || input.as_array().is_some_and(|a| !a.is_empty()));
            let tokens = count_embedding_input(Encoding::for_model(&r.model), input);
            if let Some(s) = input.as_str() {
                assert!(tokens <= s.len() as u64, "more tokens than bytes");
            }
            if let Ok(p) = gemini::embeddings::prepare(&r.body, &r.model) {
                let n = input.as_array().map_or(1, Vec::len);
                assert_eq!(p.count, n, "one vector expected per input");
                serde_json::to_vec(&p.wire).expect("Gemini embeddings request serialises");
            }
        }
        Err(e) => {
            assert_eq!(e.status(), 400);
            assert!(e.param.is_some(), "{e:?}");
        }
    }
});

/// The request translations of the adapters that do not speak the OpenAI format.
fn translations(r: &ChatRequest) {
    let cap = r.max_output_tokens;

    let m = anthropic::request::to_messages_request(&r.body, r.stream, &OutputLimits::default());
    let want = cap.unwrap_or_else(|| anthropic::request::default_max_tokens(None, r.stream));
    assert_eq!(
        m["max_tokens"], want,
        "Anthropic max_tokens is the reserved cap"
    );
    if let Some(budget) = m.get("thinking").and_then(|t| t["budget_tokens"].as_u64()) {
        assert!(
            budget < want,
            "thinking budget {budget} within max_tokens {want}"
        );
    }
    serde_json::to_vec(&m).expect("Anthropic request serialises");

    if let Ok(g) = gemini::request::chat_request(&r.body, &r.model) {
        let max = &g["generationConfig"]["maxOutputTokens"];
        match cap {
            Some(c) => assert_eq!(max, &c, "Gemini maxOutputTokens is the reserved cap: {g}"),
            None => assert!(max.is_null(), "{g}"),
        }
        serde_json::to_vec(&g).expect("Gemini request serialises");
    }

    if let Ok(t) = bedrock::request::translate(&r.body) {
        let v: Value = serde_json::from_slice(&t.body).expect("Converse request is JSON");
        let max = &v["inferenceConfig"]["maxTokens"];
        match cap {
            Some(c) => assert_eq!(max, &c, "Bedrock maxTokens is the reserved cap: {v}"),
            None => assert!(max.is_null(), "{v}"),
        }
    }
}
