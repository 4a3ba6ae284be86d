//! Anthropic Messages ingress: a client's `POST /v1/messages` body through
//! `tollgate_ingress::parse_object`, `anthropic::MessagesRequest::parse` and
//! `anthropic::to_canonical` (the translation used when the deployment does not speak Messages),
//! then the canonical request through `openai::ChatRequest::parse` and the prompt token count,
//! as the gateway does next.
//!
//! Invariants: no panic; an accepted request agrees with its body (model, `max_tokens`,
//! `stream`); a refusal names its parameter and is a 400; the canonical request keeps model,
//! output cap and stream flag, re-serialises, and — whenever it has a message — is a valid
//! OpenAI chat request with the same output cap and stream flag.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tollgate_ingress::anthropic::{MessagesRequest, to_canonical};
use tollgate_ingress::openai::ChatRequest;
use tollgate_tokens::{Encoding, count_chat_prompt_map};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = tollgate_ingress::parse_object(data) else {
        return;
    };
    let req = match MessagesRequest::parse(body.clone()) {
        Ok(req) => req,
        Err(e) => {
            assert_eq!(e.status(), 400);
            assert!(e.param.as_deref().is_some_and(|p| !p.is_empty()), "{e:?}");
            return;
        }
    };
    assert_eq!(req.body, body);
    assert_eq!(body.get("model").and_then(Value::as_str), Some(&*req.model));
    assert_eq!(
        body.get("max_tokens").and_then(Value::as_u64),
        Some(req.max_tokens)
    );
    assert!(req.max_tokens >= 1);
    assert_eq!(
        body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        req.stream
    );

    let canonical = match to_canonical(&req) {
        Ok(c) => c,
        Err(e) => {
            assert_eq!(e.status(), 400);
            assert!(e.param.is_some(), "{e:?}");
            return;
        }
    };
    assert_eq!(canonical["model"], Value::String(req.model.clone()));
    assert_eq!(canonical["max_tokens"], req.max_tokens);
    assert_eq!(
        canonical.get("stream") == Some(&Value::Bool(true)),
        req.stream
    );
    let bytes = serde_json::to_vec(&canonical).expect("canonical request serialises");
    let again = tollgate_ingress::parse_object(&bytes).expect("canonical request parses");
    assert_eq!(again, canonical);

    let messages = canonical["messages"].as_array().expect("messages array");
    for m in messages {
        assert!(
            matches!(
                m["role"].as_str(),
                Some("system" | "user" | "assistant" | "tool")
            ),
            "{m}"
        );
    }
    let n = messages.len() as u64;
    if n == 0 {
        return;
    }
    let chat = ChatRequest::parse(canonical).expect("a translated request is a valid chat request");
    assert_eq!(chat.max_output_tokens, Some(req.max_tokens));
    assert_eq!(chat.stream, req.stream);
    assert!(!chat.include_usage);
    let tokens = count_chat_prompt_map(Encoding::for_model(&chat.model), &chat.body);
    assert!(tokens >= 3 * n + 3, "{tokens} tokens for {n} messages");
});
