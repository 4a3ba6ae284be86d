//! Amazon Bedrock Converse answers (`tollgate_providers::bedrock`): a `Converse` body
//! (`response::translate`, with and without the forced JSON tool), and a `ConverseStream` body
//! through `stream::ConverseStream` (`prime`, then every chunk) — exceptions before and after
//! the first event included.
//!
//! The stream part reads the input as text, one event-stream message per line, so the fuzzer
//! works on the JSON payloads without having to forge CRCs (the binary framing itself is the
//! `bedrock_eventstream` target's):
//!
//! ```text
//! contentBlockDelta {"contentBlockIndex":0,"delta":{"text":"Hi"}}   an event
//! !throttlingException {"message":"slow down"}                      an exception
//! ?InternalFailure something broke                                  an unmodelled error
//! ```
//!
//! Each message is encoded with `eventstream::encode` and delivered as its own body piece.
//!
//! Invariants: no panic; a translated body is a canonical completion whose usage reads back as
//! the usage reported; chunks are canonical and share one id (`tollgate_fuzz::ChunkChecker`); an
//! exception before the first event is a status error (never an in-stream one), after it an
//! in-stream error that ends the stream; errors classify and stay bounded.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tollgate_fuzz::{ChunkChecker, check_completion, check_upstream_error, drain, ready};
use tollgate_providers::bedrock::eventstream::encode;
use tollgate_providers::bedrock::response::{Identity, translate};
use tollgate_providers::bedrock::stream::ConverseStream;
use tollgate_providers::{UpstreamError, UpstreamErrorKind};

fn identity() -> Identity {
    Identity {
        id: "chatcmpl-fuzz".into(),
        created: 1,
        model: "anthropic.claude-fuzz".into(),
    }
}

fn response(data: &[u8]) {
    for json_tool in [false, true] {
        if let Ok((body, usage)) = translate(data, &identity(), json_tool) {
            check_completion(&body, usage);
        }
    }
}

/// One line → one encoded event-stream message.
fn message(line: &str) -> Vec<u8> {
    let (head, payload) = line.split_once(' ').unwrap_or((line, ""));
    if let Some(name) = head.strip_prefix('!') {
        encode(
            &[
                (":message-type", "exception"),
                (":exception-type", name),
                (":content-type", "application/json"),
            ],
            payload.as_bytes(),
        )
    } else if let Some(code) = head.strip_prefix('?') {
        encode(
            &[
                (":message-type", "error"),
                (":error-code", code),
                (":error-message", payload),
            ],
            b"",
        )
    } else {
        encode(
            &[
                (":message-type", "event"),
                (":event-type", head),
                (":content-type", "application/json"),
            ],
            payload.as_bytes(),
        )
    }
}

fn stream(text: &str) {
    let body: Vec<Result<Bytes, UpstreamError>> = text
        .lines()
        // A header value carries a u16 length.
        .filter(|l| !l.is_empty() && l.len() < 60_000)
        .map(|l| Ok(Bytes::from(message(l))))
        .collect();
    let json_tool = text.len() % 2 == 1;
    let mut s = ConverseStream::new(
        "bedrock-fuzz",
        futures_util::stream::iter(body),
        identity(),
        json_tool,
    );
    if let Err(e) = ready(s.prime()) {
        assert!(
            !matches!(e.kind, UpstreamErrorKind::InStream { .. }),
            "{e:?}"
        );
        check_upstream_error(&e);
        return;
    }
    let mut check = ChunkChecker::new(true);
    let items = drain(s);
    for (i, item) in items.iter().enumerate() {
        match item {
            Ok(chunk) => check.chunk(chunk),
            Err(e) => {
                assert_eq!(i + 1, items.len(), "an error ends the stream");
                assert!(
                    !matches!(e.kind, UpstreamErrorKind::Status { .. }),
                    "after the first event an exception is in-stream: {e:?}"
                );
                check_upstream_error(e);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    response(data);
    if let Ok(text) = std::str::from_utf8(data) {
        stream(text);
    }
});
