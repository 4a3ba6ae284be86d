//! The AWS event-stream decoder (`tollgate_providers::bedrock::eventstream::Decoder`) that
//! reads Bedrock `ConverseStream` bodies, and the stream adapter on top of it
//! (`bedrock::stream::ConverseStream`: frames → canonical chunks, exceptions → errors) on the
//! same raw bytes.
//!
//! Invariants: no panic; the frames decoded, the error that ends them and the bytes left
//! buffered do not depend on how the body is split into pushes; a decoded frame, encoded again
//! with its string headers, decodes to the same frame; every chunk the adapter emits is a
//! canonical chunk (see `tollgate_fuzz::ChunkChecker`), and nothing follows an error.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tollgate_fuzz::{ChunkChecker, check_upstream_error, drain, ready};
use tollgate_providers::bedrock::eventstream::{Decoder, Frame, FrameError, encode};
use tollgate_providers::bedrock::response::Identity;
use tollgate_providers::bedrock::stream::ConverseStream;
use tollgate_providers::{UpstreamError, UpstreamErrorKind};

type Decoded = (Vec<Frame>, Option<FrameError>, usize);

fn frames<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Decoded {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for p in parts {
        d.push(p);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => out.push(f),
                Ok(None) => break,
                Err(e) => return (out, Some(e), 0),
            }
        }
    }
    let left = d.buffered();
    (out, None, left)
}

fn reencode(f: &Frame) -> Vec<u8> {
    let fields = [
        (":message-type", &f.message_type),
        (":event-type", &f.event_type),
        (":exception-type", &f.exception_type),
        (":content-type", &f.content_type),
        (":error-code", &f.error_code),
        (":error-message", &f.error_message),
    ];
    let headers: Vec<(&str, &str)> = fields
        .iter()
        .filter_map(|(n, v)| v.as_deref().map(|v| (*n, v)))
        .collect();
    encode(&headers, &f.payload)
}

fn identity() -> Identity {
    Identity {
        id: "chatcmpl-fuzz".into(),
        created: 1,
        model: "anthropic.claude-fuzz".into(),
    }
}

fuzz_target!(|data: &[u8]| {
    let whole = frames([data]);
    let k = data.len() % 29 + 1;
    assert_eq!(frames(data.chunks(k)), whole, "split every {k} bytes");
    for f in &whole.0 {
        let again = frames([&reencode(f)[..]]);
        assert_eq!(again, (vec![f.clone()], None, 0), "re-encoded frame");
    }

    // The adapter on the same bytes, delivered in pieces of `k` bytes.
    let body: Vec<Result<Bytes, UpstreamError>> = data
        .chunks(k)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let json_tool = data.len().is_multiple_of(2);
    let mut s = ConverseStream::new(
        "bedrock-fuzz",
        futures_util::stream::iter(body),
        identity(),
        json_tool,
    );
    if let Err(e) = ready(s.prime()) {
        // Before the first event: a status error the router may retry, never an in-stream one.
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
                check_upstream_error(e);
            }
        }
    }
});
