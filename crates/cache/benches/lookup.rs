//! Key computation + lookup: the cache's share of the request path (a hit answers with what
//! `get` returns; a miss pays exactly this before going upstream).
//!
//! `cargo bench -p tollgate-cache --bench lookup`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // benchmarks may panic

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Map, Value, json};
use tollgate_cache::key::{self, KeyInput, Namespace};
use tollgate_cache::{CacheScope, Entry, ModelSettings, ResponseCache};
use tollgate_types::{NanoUsd, Usage};

/// A typical small chat request (the benchmark's request: ~1 KiB of JSON, one tool).
fn body() -> Map<String, Value> {
    let v = json!({
        "model": "gpt-4o-mini",
        "temperature": 0,
        "max_tokens": 256,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant that answers briefly and precisely."},
            {"role": "user", "content": "Summarise the following paragraph in one sentence: ".repeat(8)},
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "Look a term up",
            "parameters": {"type": "object", "properties": {"term": {"type": "string"}}, "required": ["term"]}}}],
        "stream": false,
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn bench(c: &mut Criterion) {
    let body = body();
    let input = KeyInput {
        namespace: Namespace::Tenant("acme"),
        endpoint: "chat",
        requested_model: "gpt-4o-mini",
        served_model: "gpt-4o-mini",
        policy_cap: None,
        body: &body,
    };
    let settings = ModelSettings {
        ttl: Duration::from_secs(3600),
        max_bytes: 64 << 20,
        scope: CacheScope::Tenant,
        cache_nondeterministic: false,
    };
    let cache = ResponseCache::new(256 << 20, [("gpt-4o-mini".to_string(), settings)]);
    // A warm cache: 10,000 answers of ~1 KiB.
    for i in 0..10_000u64 {
        let mut b = body.clone();
        b.insert("seed".into(), i.into());
        let k = key::compute(&KeyInput { body: &b, ..input });
        cache.insert(
            "gpt-4o-mini",
            k,
            Entry::new(
                Bytes::from(vec![b'x'; 1024]),
                None,
                Usage::default(),
                NanoUsd(1),
                (
                    "gpt-4o-mini".into(),
                    "openai".into(),
                    "openai/gpt-4o-mini".into(),
                ),
                settings.ttl,
            ),
        );
    }
    let mut hit_body = body.clone();
    hit_body.insert("seed".into(), 42.into());

    c.bench_function("key_compute", |b| {
        b.iter(|| key::compute(black_box(&input)))
    });
    c.bench_function("key_compute_and_lookup_hit", |b| {
        b.iter(|| {
            let k = key::compute(black_box(&KeyInput {
                body: &hit_body,
                ..input
            }));
            cache.get("gpt-4o-mini", &k).expect("warm")
        })
    });
    c.bench_function("key_compute_and_lookup_miss", |b| {
        b.iter(|| {
            let k = key::compute(black_box(&input));
            cache.get("gpt-4o-mini", &k)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
