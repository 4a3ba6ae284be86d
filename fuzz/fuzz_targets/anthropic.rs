//! Anthropic Messages answers (`tollgate_providers::anthropic`), every way the gateway reads
//! them:
//! - a non-streaming body translated for a chat client (`response::to_chat_completion`) and
//!   read natively (`response::usage_of_message`);
//! - a streamed body translated for a chat client: SSE events through `stream::event_type`,
//!   `stream::Translator` and `stream::error_event_message`, as the adapter's transport feeds
//!   them (stop at `message_stop`, an `error` event is an in-stream error);
//! - a streamed body passed through natively to a Messages client:
//!   `metering::anthropic::MeteredEvents` (relay, usage from the events, the live cut at an
//!   output cap), and `stream::UsageTracker`.
//!
//! Invariants: no panic; a translated body is a canonical completion whose usage reads back as
//! the usage reported, and equals the native reading; translated chunks are canonical
//! (`tollgate_fuzz::ChunkChecker`) and a completed stream ends with a usage-only chunk that
//! reads back as the translator's usage; the native relay settles exactly once, relays every
//! event as sent (same name and data) unless it was cut, ends a cut stream with
//! `message_delta` (`stop_reason: max_tokens`) and `message_stop`, and settles with the
//! events' own usage when they carried it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tollgate_fuzz::{
    ChunkChecker, check_completion, check_upstream_error, drain, meter_options, settled_once,
    settlements, sse_events,
};
use tollgate_metering::anthropic::MeteredEvents;
use tollgate_providers::anthropic::UsageTracker;
use tollgate_providers::anthropic::response::{to_chat_completion, usage_of_message};
use tollgate_providers::anthropic::stream::{Translator, error_event_message, event_type};
use tollgate_providers::sse::Event;
use tollgate_providers::{UpstreamError, UpstreamErrorKind};
use tollgate_types::{Outcome, UsageSource};

fn response(data: &[u8]) {
    let native = usage_of_message(data);
    if let Ok((body, usage)) = to_chat_completion(data, 7) {
        check_completion(&body, usage);
        if let Ok(native) = native {
            assert_eq!(native, usage, "native and translated usage agree");
        }
    }
}

fn in_stream(ev: &Event) -> UpstreamError {
    UpstreamError::new(
        "anthropic-fuzz",
        UpstreamErrorKind::InStream {
            message: error_event_message(&ev.data),
            body: ev.data.clone(),
        },
    )
}

fn chat_stream(events: &[Event]) {
    let mut t = Translator::new(7);
    let mut check = ChunkChecker::new(false);
    for ev in events {
        if event_type(ev) == "error" {
            check_upstream_error(&in_stream(ev));
            return;
        }
        let mut out = Vec::new();
        let result = t.on_event(ev, &mut out);
        for c in &out {
            check.chunk(c);
        }
        if let Err(e) = result {
            assert!(out.is_empty(), "chunks from an event that failed");
            check_upstream_error(&UpstreamError::new(
                "anthropic-fuzz",
                UpstreamErrorKind::Protocol(e.to_string()),
            ));
            return;
        }
        if event_type(ev) == "message_stop" {
            assert!(t.is_done());
            assert_eq!(
                check.usage,
                Some(t.usage().unwrap_or_default()),
                "the usage-only chunk reads back as the stream's usage"
            );
            return;
        }
    }
}

/// The event stream the adapter's transport hands a native Messages client.
fn native_items(events: &[Event]) -> Vec<Result<Event, UpstreamError>> {
    let mut items = Vec::new();
    for ev in events {
        match event_type(ev).as_ref() {
            "message_stop" => {
                items.push(Ok(ev.clone()));
                return items;
            }
            "error" => {
                items.push(Err(in_stream(ev)));
                return items;
            }
            _ => items.push(Ok(ev.clone())),
        }
    }
    items.push(Err(UpstreamError::new(
        "anthropic-fuzz",
        UpstreamErrorKind::Broken("stream ended before message_stop".into()),
    )));
    items
}

fn native_stream(events: &[Event], cap: Option<u64>) {
    let items = native_items(events);
    let (store, settle) = settlements();
    let m = MeteredEvents::new(
        Box::pin(futures_util::stream::iter(items.clone())),
        meter_options(cap),
        settle,
    );
    let mut out = Vec::new();
    for part in drain(m) {
        let Ok(bytes) = part;
        out.extend_from_slice(&bytes);
    }
    let s = settled_once(&store);
    let client = sse_events(&out);
    let upstream: Vec<&Event> = items.iter().filter_map(|i| i.as_ref().ok()).collect();
    let failed = items.last().is_some_and(Result::is_err);

    if s.cut_at_cap {
        assert_eq!(s.outcome, Outcome::Ok);
        assert_eq!(s.finish_reason.as_deref(), Some("max_tokens"));
        let names: Vec<Option<&str>> = client.iter().map(|e| e.event.as_deref()).collect();
        assert!(
            names.ends_with(&[Some("message_delta"), Some("message_stop")]),
            "{names:?}"
        );
        let delta: Value =
            serde_json::from_slice(&client[client.len() - 2].data).expect("message_delta is JSON");
        assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
        assert!(s.usage.output_tokens <= cap.unwrap_or(u64::MAX), "{s:?}");
        return;
    }
    assert_eq!(
        client.len(),
        upstream.len() + usize::from(failed),
        "client events"
    );
    for (got, sent) in client.iter().zip(&upstream) {
        let name = sent.event.as_deref().unwrap_or("message");
        assert_eq!(
            got.event.as_deref(),
            Some(name),
            "event relayed under its name"
        );
        assert_eq!(got.data, sent.data, "event relayed with its data");
    }
    assert_eq!(s.chunks_relayed, upstream.len() as u64);
    if failed {
        assert_eq!(s.outcome, Outcome::Failed);
        let last = client.last().expect("error event");
        assert_eq!(last.event.as_deref(), Some("error"));
        let v: Value = serde_json::from_slice(&last.data).expect("error event is JSON");
        tollgate_fuzz::assert_no_secret(v["error"]["message"].as_str().unwrap_or(""));
    } else {
        assert_eq!(s.outcome, Outcome::Ok);
    }
    if s.usage_source == UsageSource::Provider {
        let mut tracker = UsageTracker::new();
        for ev in &upstream {
            tracker.observe(ev);
        }
        assert_eq!(
            Some(s.usage),
            tracker.usage(),
            "settled with the events' usage"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    response(data);
    let events = sse_events(data);
    chat_stream(&events);
    let cap = match data.len() % 3 {
        0 => None,
        _ => Some(data.len() as u64 % 64),
    };
    native_stream(&events, cap);
});
