//! OpenAI and Azure OpenAI answers (one adapter, `tollgate_providers::openai`; the Azure flavor
//! differs only in URLs and auth), read the way the gateway reads them:
//! - a non-streaming body: `canonical::ResponsePeek` (usage and output text, as the adapter and
//!   the meter read it), then `anthropic::response_from_canonical` (the Anthropic ingress
//!   rendering it for a Messages client);
//! - a streamed body: SSE events through the adapter's per-event decision
//!   (`openai::stream_event`: `[DONE]`, in-stream `{"error"}` events), the meter
//!   (`metering::MeteredStream` with `OpenAiRenderer`, once relaying everything and once with
//!   an output cap and the usage chunk stripped), and the Anthropic ingress's
//!   `StreamTranslator`.
//!
//! Invariants: no panic; a JSON body the meter can read renders for a Messages client; the
//! meter settles exactly once, relays every chunk to the client as the same SSE event data and
//! ends with `[DONE]` or one error event, settles with the provider's last usage when one came,
//! never relays the provider key, and — capped — strips usage-only chunks and ends a cut stream
//! with a `length` finish; the Messages events form a well-nested sequence.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tollgate_fuzz::{
    SECRET, assert_no_secret, check_messages_events, check_messages_response, check_upstream_error,
    drain, meter_options, settled_once, settlements, sse_events,
};
use tollgate_ingress::anthropic::{StreamTranslator, response_from_canonical};
use tollgate_metering::{MeteredStream, OpenAiRenderer, Settlement};
use tollgate_providers::openai::{StreamEvent, stream_event};
use tollgate_providers::{UpstreamError, UpstreamErrorKind};
use tollgate_types::canonical::{ChunkPeek, ResponsePeek, WireUsage};
use tollgate_types::{Outcome, Usage, UsageSource};

type Item = Result<Bytes, UpstreamError>;

fn response(data: &[u8]) {
    let Ok(peek) = serde_json::from_slice::<ResponsePeek>(data) else {
        return;
    };
    let usage = peek
        .usage
        .as_ref()
        .map(WireUsage::to_usage)
        .unwrap_or_default();
    let text = peek.output_text();
    assert!(text.len() <= data.len(), "output text longer than the body");
    // The peek skips unused fields without validating them (invalid UTF-8 in an unread string
    // passes); the Messages rendering reads the whole body, so it may refuse what is not JSON.
    match response_from_canonical(data, "claude-fuzz", &usage) {
        Ok(r) => check_messages_response(&r, &usage),
        Err(e) => assert!(
            serde_json::from_slice::<Value>(data).is_err(),
            "a JSON body the meter reads must render for a Messages client: {e:?}"
        ),
    }
}

/// The chunk stream the OpenAI adapter hands the gateway for this SSE body.
fn chunks(data: &[u8]) -> Vec<Item> {
    let mut items = Vec::new();
    for ev in sse_events(data) {
        match stream_event(ev.data) {
            StreamEvent::Done => return items,
            StreamEvent::Skip => {}
            StreamEvent::Chunk(c) => items.push(Ok(c)),
            StreamEvent::Error(kind) => {
                assert!(matches!(kind, UpstreamErrorKind::InStream { .. }));
                items.push(Err(UpstreamError::new("openai-fuzz", kind)));
                return items;
            }
        }
    }
    items.push(Err(UpstreamError::new(
        "openai-fuzz",
        UpstreamErrorKind::Broken("stream ended before [DONE]".into()),
    )));
    items
}

/// What the client must see from a meter that relays everything: each chunk's data up to the
/// first error (an `{"error"}` chunk that slipped through counts as one), then `[DONE]` or one
/// error event; and the provider usage the meter must settle with.
enum Seen {
    Data(Bytes),
    Error,
    Done,
}

fn expected(items: &[Item]) -> (Vec<Seen>, Option<Usage>, u64) {
    let mut seen = Vec::new();
    let mut usage = None;
    let mut relayed = 0;
    for item in items {
        let Ok(c) = item else {
            seen.push(Seen::Error);
            return (seen, usage, relayed);
        };
        relayed += 1;
        if let Ok(p) = serde_json::from_slice::<ChunkPeek<'_>>(c) {
            if p.error.is_some() {
                seen.push(Seen::Error);
                return (seen, usage, relayed);
            }
            if let Some(u) = &p.usage {
                usage = Some(u.to_usage());
            }
        }
        seen.push(Seen::Data(c.clone()));
    }
    seen.push(Seen::Done);
    (seen, usage, relayed)
}

fn metered(items: &[Item], cap: Option<u64>, client_wants_usage: bool) -> (Vec<u8>, Settlement) {
    let (store, settle) = settlements();
    let m = MeteredStream::new(
        Box::pin(futures_util::stream::iter(items.to_vec())),
        meter_options(cap),
        OpenAiRenderer { client_wants_usage },
        settle,
    );
    let mut out = Vec::new();
    for part in drain(m) {
        let Ok(bytes) = part;
        out.extend_from_slice(&bytes);
    }
    (out, settled_once(&store))
}

fn check_error_event(data: &[u8]) {
    let v: Value = serde_json::from_slice(data).expect("error event is JSON");
    assert!(v["error"]["code"].is_string(), "{v}");
    assert_no_secret(v["error"]["message"].as_str().unwrap_or(""));
}

fn relay_all(items: &[Item]) {
    let (out, s) = metered(items, None, true);
    let client = sse_events(&out);
    let (want, usage, relayed) = expected(items);
    assert_eq!(client.len(), want.len(), "client events");
    for (got, want) in client.iter().zip(&want) {
        assert_eq!(got.event, None);
        match want {
            Seen::Data(d) => assert_eq!(&got.data, d, "a chunk relayed as the same event data"),
            Seen::Done => assert_eq!(&got.data[..], b"[DONE]"),
            Seen::Error => check_error_event(&got.data),
        }
    }
    let ok = matches!(want.last(), Some(Seen::Done));
    assert_eq!(s.outcome, if ok { Outcome::Ok } else { Outcome::Failed });
    assert_eq!(s.error.is_some(), !ok);
    assert_eq!(s.chunks_relayed, relayed);
    assert!(!s.cut_at_cap);
    match usage {
        Some(u) => assert_eq!((s.usage_source, s.usage), (UsageSource::Provider, u)),
        None => assert_eq!(s.usage_source, UsageSource::Estimated),
    }
}

fn relay_capped(items: &[Item], cap: u64) {
    let (out, s) = metered(items, Some(cap), false);
    let client = sse_events(&out);
    let (last, rest) = client
        .split_last()
        .expect("a metered stream says how it ended");
    for ev in rest {
        let p: ChunkPeek<'_> = match serde_json::from_slice(&ev.data) {
            Ok(p) => p,
            Err(_) => continue, // unreadable chunks are relayed as they are
        };
        assert!(
            !p.is_usage_only(),
            "usage chunk relayed to a client that did not ask"
        );
    }
    if &last.data[..] != b"[DONE]" {
        assert_eq!(s.outcome, Outcome::Failed);
        check_error_event(&last.data);
    }
    if s.cut_at_cap {
        assert_eq!(s.outcome, Outcome::Ok);
        assert_eq!(s.finish_reason.as_deref(), Some("length"));
        let finish: Value = serde_json::from_slice(&rest.last().expect("finish chunk").data)
            .expect("finish chunk is JSON");
        assert_eq!(finish["choices"][0]["finish_reason"], "length");
    }
}

fn anthropic_client(items: &[Item]) {
    let mut t = StreamTranslator::new("claude-fuzz");
    let mut out = Vec::new();
    let mut failed = false;
    let mut usage = None;
    for item in items {
        match item {
            Ok(c) => {
                if let Ok(p) = serde_json::from_slice::<ChunkPeek<'_>>(c)
                    && let Some(u) = &p.usage
                {
                    usage = Some(u.to_usage());
                }
                t.chunk(c, &mut out);
            }
            Err(e) => {
                t.error(&e.to_api_error(&[SECRET]), &mut out);
                failed = true;
                break;
            }
        }
    }
    if !failed {
        t.finish(usage.as_ref(), &mut out);
    }
    check_messages_events(&out, failed);
}

fuzz_target!(|data: &[u8]| {
    response(data);

    let items = chunks(data);
    for e in items.iter().filter_map(|i| i.as_ref().err()) {
        check_upstream_error(e);
    }
    relay_all(&items);
    relay_capped(&items, data.len() as u64 % 48);
    anthropic_client(&items);
});
