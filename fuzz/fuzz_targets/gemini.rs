//! Gemini answers (`tollgate_providers::gemini`, API `v1beta`): a `generateContent` body
//! (`response::to_canonical`), a `batchEmbedContents` body (`embeddings::to_canonical`, float and
//! base64 encodings), and a `streamGenerateContent?alt=sse` body: SSE events through
//! `stream::Translator` as the adapter's transport feeds it (empty events skipped, `finish` at
//! the close).
//!
//! Invariants: no panic; a translated body is a canonical completion whose usage reads back as
//! the usage reported (and renders for a Messages client); an embeddings answer has one vector
//! per expected input, in order, base64 vectors of exactly 4 bytes per value, and its usage reads
//! back; translated chunks are canonical and share one id (`tollgate_fuzz::ChunkChecker`);
//! errors classify and stay bounded.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tollgate_fuzz::{
    ChunkChecker, check_completion, check_upstream_error, read_back_usage, sse_events,
};
use tollgate_providers::gemini::embeddings::{self, Encoding};
use tollgate_providers::gemini::response;
use tollgate_providers::gemini::stream::Translator;
use tollgate_providers::{UpstreamError, UpstreamErrorKind};

fn generate(data: &[u8]) {
    if let Ok(c) = response::to_canonical(data, "gemini-fuzz") {
        check_completion(&c.body, c.usage);
    }
}

fn embed(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let values: Vec<usize> = v
        .get("embeddings")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    e.get("values")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len)
                })
                .collect()
        })
        .unwrap_or_default();
    for encoding in [Encoding::Float, Encoding::Base64] {
        assert!(embeddings::to_canonical(data, "m", encoding, values.len() + 1).is_err());
        let Ok((body, usage)) = embeddings::to_canonical(data, "m", encoding, values.len()) else {
            continue;
        };
        let out: Value = serde_json::from_slice(&body).expect("embeddings body is JSON");
        assert_eq!(out["object"], "list");
        let items = out["data"].as_array().expect("data array");
        assert_eq!(items.len(), values.len(), "one vector per input");
        for (i, (item, n)) in items.iter().zip(&values).enumerate() {
            assert_eq!(item["index"], i);
            match encoding {
                Encoding::Float => assert_eq!(item["embedding"].as_array().map(Vec::len), Some(*n)),
                Encoding::Base64 => {
                    let b64 = item["embedding"].as_str().expect("base64 string");
                    assert_eq!(b64.len(), (4 * n).div_ceil(3) * 4, "4 bytes per value");
                }
            }
        }
        assert_eq!(out.get("usage").map(read_back_usage), usage, "{out}");
    }
}

fn stream(data: &[u8]) {
    let mut t = Translator::new("gemini-fuzz", 7);
    let mut check = ChunkChecker::new(true);
    let fail = |kind: UpstreamErrorKind| {
        check_upstream_error(&UpstreamError::new("gemini-fuzz", kind));
    };
    for ev in sse_events(data) {
        if ev.data.is_empty() {
            continue;
        }
        let mut out = Vec::new();
        let result = t.event(&ev.data, &mut out);
        for c in &out {
            check.chunk(c);
        }
        if let Err(kind) = result {
            return fail(kind);
        }
    }
    let mut out = Vec::new();
    let result = t.finish(&mut out);
    for c in &out {
        check.chunk(c);
    }
    match result {
        Ok(()) => assert!(check.chunks > 0, "a finished stream has chunks"),
        Err(kind) => {
            assert!(out.is_empty());
            assert!(matches!(kind, UpstreamErrorKind::Broken(_)), "{kind:?}");
            fail(kind);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    generate(data);
    embed(data);
    stream(data);
});
