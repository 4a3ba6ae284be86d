//! The upstream server-sent-events decoder (`tollgate_providers::sse::Decoder`), which every
//! SSE-speaking adapter (OpenAI, Azure, Anthropic, Gemini) reads provider bodies with.
//!
//! Invariants: no panic; the events do not depend on how the body is split into pushes
//! (bodies arrive in arbitrary TCP-sized pieces: whole, one byte at a time, and a size taken
//! from the input); no event data holds a CR and no event name a CR or LF; writing the events
//! back as SSE and decoding that gives the same events.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_providers::sse::{Decoder, Event};

fn decode<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<Event> {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for p in parts {
        d.push(p, &mut out)
            .expect("fuzz inputs are far below the event size limit");
    }
    d.finish(&mut out);
    out
}

fn encode(events: &[Event]) -> Vec<u8> {
    let mut text = Vec::new();
    for ev in events {
        if let Some(name) = &ev.event {
            text.extend_from_slice(b"event: ");
            text.extend_from_slice(name.as_bytes());
            text.push(b'\n');
        }
        for line in ev.data.split(|&b| b == b'\n') {
            text.extend_from_slice(b"data: ");
            text.extend_from_slice(line);
            text.push(b'\n');
        }
        text.push(b'\n');
    }
    text
}

fuzz_target!(|data: &[u8]| {
    let whole = decode([data]);
    let k = data.len() % 13 + 2;
    assert_eq!(decode(data.chunks(k)), whole, "split every {k} bytes");
    // One byte per push re-scans the buffered line each time (quadratic), so only short inputs.
    if data.len() <= 512 {
        assert_eq!(decode(data.chunks(1)), whole, "split into single bytes");
    }
    for ev in &whole {
        assert!(!ev.data.contains(&b'\r'), "{ev:?}");
        if let Some(name) = &ev.event {
            assert!(!name.contains(['\r', '\n']), "{ev:?}");
        }
    }
    assert_eq!(decode([&encode(&whole)[..]]), whole, "re-encoded events");
});
