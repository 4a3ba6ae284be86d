//! Helpers shared by the fuzz targets in `fuzz_targets/`: driving in-memory streams (they never
//! wait, so a no-op waker is enough and no runtime is needed), decoding server-sent events the
//! way the adapters do, and the invariants every canonical answer keeps whichever adapter
//! produced it.
//!
//! A failed `assert!` here is a finding, exactly like a panic inside the parsers.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures_util::Stream;
use serde_json::{Map, Value};
use tollgate_metering::{MeterOptions, Settlement};
use tollgate_providers::sse;
use tollgate_tokens::Encoding;
use tollgate_types::Usage;
use tollgate_types::canonical::{ChunkPeek, ResponsePeek, WireUsage};

/// A provider key planted in every target that relays provider text to clients: it must never
/// come out whole.
pub const SECRET: &str = "sk-fuzz-7Qm2Zt9XbLw4Kp8R";

/// Runs a future whose streams are all in memory (it never waits) to completion.
pub fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an in-memory future waited"),
    }
}

/// Every item of a stream that never waits, in order; the stream is dropped afterwards.
pub fn drain<S: Stream + Unpin>(mut s: S) -> Vec<S::Item> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    loop {
        match Pin::new(&mut s).poll_next(&mut cx) {
            Poll::Ready(Some(item)) => out.push(item),
            Poll::Ready(None) => return out,
            Poll::Pending => panic!("an in-memory stream waited"),
        }
    }
}

/// The events of a whole SSE body, decoded as the adapters' event pump decodes it.
pub fn sse_events(data: &[u8]) -> Vec<sse::Event> {
    let mut d = sse::Decoder::new();
    let mut out = Vec::new();
    // Fuzz inputs are far below `MAX_EVENT_BYTES`; an oversized one just ends the body early.
    if d.push(data, &mut out).is_ok() {
        d.finish(&mut out);
    }
    out
}

/// The canonical request the meters count prompt tokens of when a provider reports no usage.
pub fn sample_request() -> Arc<Map<String, Value>> {
    let v = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say hello."}],
        "stream": true,
    });
    match v {
        Value::Object(m) => Arc::new(m),
        _ => unreachable!(),
    }
}

/// Meter options with [`SECRET`] as the provider key and the given output cap.
pub fn meter_options(output_cap: Option<u64>) -> MeterOptions {
    MeterOptions {
        encoding: Encoding::O200k,
        request: sample_request(),
        secrets: Arc::from(vec![SECRET.to_string()]),
        output_cap,
    }
}

/// A settle callback that records every settlement, and where it records them.
pub fn settlements() -> (
    Arc<Mutex<Vec<Settlement>>>,
    impl FnOnce(Settlement) + Send + 'static,
) {
    let store = Arc::new(Mutex::new(Vec::new()));
    let s2 = store.clone();
    (store, move |s| s2.lock().expect("not poisoned").push(s))
}

/// The one settlement a finished meter must have made.
pub fn settled_once(store: &Mutex<Vec<Settlement>>) -> Settlement {
    let s = store.lock().expect("not poisoned");
    assert_eq!(
        s.len(),
        1,
        "a metered stream must settle exactly once: {s:?}"
    );
    s[0].clone()
}

/// Asserts that `text` relayed to a client does not carry [`SECRET`].
pub fn assert_no_secret(text: &str) {
    assert!(!text.contains(SECRET), "provider key relayed: {text}");
}

/// Usage as the meter reads it back from a canonical `usage` object.
pub fn read_back_usage(usage: &Value) -> Usage {
    let wire: WireUsage = serde_json::from_value(usage.clone()).expect("usage object readable");
    wire.to_usage()
}

/// Checks a canonical (OpenAI `chat.completion`) body produced by a translating adapter, and
/// that the usage the meter reads back from it is the usage the adapter reported. Then renders
/// it for an Anthropic Messages client, which must always work on a translated answer.
pub fn check_completion(body: &[u8], usage: Option<Usage>) {
    let v: Value = serde_json::from_slice(body).expect("canonical completion is JSON");
    assert_eq!(v["object"], "chat.completion", "{v}");
    let choices = v["choices"].as_array().expect("choices is an array");
    for c in choices {
        assert_eq!(c["message"]["role"], "assistant", "{c}");
        assert!(c["finish_reason"].is_string(), "{c}");
        for tc in c["message"]["tool_calls"].as_array().into_iter().flatten() {
            assert_eq!(tc["type"], "function", "{tc}");
            assert!(tc["id"].is_string(), "{tc}");
            assert!(tc["function"]["arguments"].is_string(), "{tc}");
        }
    }
    let peek: ResponsePeek = serde_json::from_slice(body).expect("meter can peek the body");
    assert_eq!(
        peek.usage.as_ref().map(WireUsage::to_usage),
        usage,
        "usage in the body differs from the usage reported: {v}"
    );
    let messages = tollgate_ingress::anthropic::response_from_canonical(
        body,
        "claude-fuzz",
        &usage.unwrap_or_default(),
    )
    .expect("a translated answer renders as a Messages response");
    check_messages_response(&messages, &usage.unwrap_or_default());
}

/// Checks a Messages response rendered by the Anthropic ingress.
pub fn check_messages_response(r: &Value, usage: &Usage) {
    assert_eq!(r["type"], "message", "{r}");
    assert_eq!(r["role"], "assistant", "{r}");
    assert!(
        r["id"].as_str().is_some_and(|id| id.starts_with("msg_")),
        "{r}"
    );
    for block in r["content"].as_array().expect("content is an array") {
        match block["type"].as_str() {
            Some("text") => assert!(block["text"].as_str().is_some_and(|t| !t.is_empty())),
            Some("tool_use") => assert!(block.get("input").is_some(), "{block}"),
            other => panic!("unexpected content block {other:?}"),
        }
    }
    assert!(
        matches!(
            r["stop_reason"].as_str(),
            Some("end_turn" | "max_tokens" | "tool_use" | "refusal")
        ),
        "{r}"
    );
    assert_eq!(
        r["usage"]["input_tokens"],
        usage.uncached_input_tokens(),
        "{r}"
    );
    assert_eq!(r["usage"]["output_tokens"], usage.output_tokens, "{r}");
}

/// Per-stream checks of the canonical chunks a translating adapter emits.
#[derive(Debug)]
pub struct ChunkChecker {
    /// Whether every chunk must carry the same `id` (Gemini and Bedrock promise it).
    same_id: bool,
    id: Option<Value>,
    /// Choice indices seen so far.
    seen: BTreeMap<u64, ()>,
    /// A usage-only chunk was emitted: it must be the last chunk.
    usage_sent: bool,
    /// The usage of that chunk, read back as the meter reads it.
    pub usage: Option<Usage>,
    /// Tool calls started (a delta with an `id`), per choice: their `index`es must count up
    /// from 0.
    tool_calls: BTreeMap<u64, u64>,
    pub chunks: usize,
}

impl ChunkChecker {
    pub fn new(same_id: bool) -> Self {
        ChunkChecker {
            same_id,
            id: None,
            seen: BTreeMap::new(),
            usage_sent: false,
            usage: None,
            tool_calls: BTreeMap::new(),
            chunks: 0,
        }
    }

    /// Checks one chunk: a JSON `chat.completion.chunk` the meter can peek; the first chunk of
    /// each choice carries `role: assistant`; tool-call indices count up; nothing follows the
    /// usage-only chunk.
    pub fn chunk(&mut self, raw: &[u8]) {
        self.chunks += 1;
        assert!(!self.usage_sent, "a chunk after the usage-only chunk");
        let v: Value = serde_json::from_slice(raw).expect("canonical chunk is JSON");
        assert_eq!(v["object"], "chat.completion.chunk", "{v}");
        let peek: ChunkPeek<'_> = serde_json::from_slice(raw).expect("meter can peek the chunk");
        assert!(peek.error.is_none(), "{v}");
        if self.same_id {
            match &self.id {
                None => self.id = Some(v["id"].clone()),
                Some(id) => assert_eq!(id, &v["id"], "chunks of one stream share their id"),
            }
        }
        let choices = v["choices"].as_array().expect("choices is an array");
        if choices.is_empty() {
            let usage = v
                .get("usage")
                .expect("a chunk without choices carries usage");
            assert!(peek.is_usage_only());
            self.usage = Some(read_back_usage(usage));
            self.usage_sent = true;
            return;
        }
        for c in choices {
            let index = c["index"].as_u64().expect("choice index");
            if self.seen.insert(index, ()).is_none() {
                assert_eq!(
                    c["delta"]["role"], "assistant",
                    "the first chunk of a choice carries the role: {v}"
                );
            }
            for tc in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
                let k = tc["index"].as_u64().expect("tool call index");
                let started = self.tool_calls.entry(index).or_insert(0);
                if tc.get("id").is_some() {
                    assert_eq!(k, *started, "tool calls are numbered from 0: {v}");
                    *started += 1;
                } else {
                    assert!(k < *started, "a fragment of a call never started: {v}");
                }
                assert!(tc["function"]["arguments"].is_string(), "{v}");
            }
        }
    }
}

/// Checks the Messages events the Anthropic ingress renders from canonical chunks: one
/// `message_start` first, content blocks opened and closed in order with indices counting from
/// 0, deltas only into the open block, and `message_delta` + `message_stop` (or an `error`) at
/// the end.
pub fn check_messages_events(events: &[(&'static str, Value)], ended_with_error: bool) {
    let mut open: Option<u64> = None;
    let mut next = 0u64;
    let (last, body) = if ended_with_error {
        let (last, body) = events.split_last().expect("events");
        assert_eq!(last.0, "error");
        assert_eq!(last.1["type"], "error");
        (None, body)
    } else {
        (Some(()), events)
    };
    for (i, (name, v)) in body.iter().enumerate() {
        assert_eq!(v["type"], *name, "{v}");
        match *name {
            "message_start" => assert_eq!(i, 0, "message_start comes first"),
            "content_block_start" => {
                assert!(open.is_none(), "a block opened inside another");
                assert_eq!(v["index"], next, "{v}");
                open = Some(next);
                next += 1;
            }
            "content_block_delta" => {
                assert!(open.is_some() && v["index"].as_u64() == open, "{v}");
            }
            "content_block_stop" => {
                assert_eq!(v["index"].as_u64(), open, "{v}");
                open = None;
            }
            "message_delta" => {
                assert!(open.is_none(), "message_delta with a block open");
                assert_eq!(i + 2, body.len(), "message_delta is second to last");
            }
            "message_stop" => assert_eq!(i + 1, body.len(), "message_stop is last"),
            other => panic!("unexpected event {other}"),
        }
    }
    if last.is_some() {
        let names: Vec<&str> = body.iter().map(|(n, _)| *n).collect();
        assert!(
            names.ends_with(&["message_delta", "message_stop"]),
            "{names:?}"
        );
    }
}

/// The longest wait a provider hint may turn into (`failure::MAX_RETRY_WAIT`).
pub const MAX_RETRY_WAIT: std::time::Duration = std::time::Duration::from_secs(86_400);

/// Checks what the gateway does with an upstream error: it classifies it, its retry hint is
/// bounded, and the client-facing error has an error status, a `Retry-After` no longer than a
/// day, an OpenAI-shaped body, and never the provider key ([`SECRET`]) in its message.
pub fn check_upstream_error(
    e: &tollgate_providers::UpstreamError,
) -> tollgate_providers::FailureClass {
    use tollgate_providers::UpstreamErrorKind;
    let class = e.class();
    let wait = e.retry_after();
    assert!(wait.is_none_or(|w| w <= MAX_RETRY_WAIT), "{wait:?}");
    if let UpstreamErrorKind::Status { status, .. } = e.kind
        && (status >= 500 || matches!(status, 408 | 409 | 429))
    {
        assert!(e.retryable(), "{e:?}");
    }
    let api = e.to_api_error(&[SECRET]);
    assert!((400..600).contains(&api.status()), "{api:?}");
    assert!(
        api.retry_after_secs
            .is_none_or(|s| (1..=MAX_RETRY_WAIT.as_secs()).contains(&s)),
        "{api:?}"
    );
    assert_no_secret(&api.message);
    assert_eq!(api.openai_body()["error"]["code"], api.code.as_str());
    class
}
