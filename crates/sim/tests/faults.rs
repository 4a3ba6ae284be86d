//! Fault injection at exact rates, cut streams, runtime configuration, latency, shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn body() -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
}

fn stream_body() -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
           "stream": true, "stream_options": {"include_usage": true}})
}

#[tokio::test]
async fn fail_rate_is_exact() {
    let h = sim(SimConfig {
        fail_rate: 0.3,
        ..SimConfig::default()
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let r = post_json(&chat_url(&h), &body()).await;
        if r.status == 500 {
            assert_eq!(r.json["error"]["type"], "server_error");
            assert!(r.headers.get("retry-after").is_none());
        }
        statuses.push(r.status.as_u16());
    }
    assert_eq!(
        statuses,
        vec![200, 200, 200, 500, 200, 200, 500, 200, 200, 500]
    );
    let s = h.stats();
    assert_eq!(s.faults_fail, 3);
    assert_eq!(s.client_errors, 0);
    assert_eq!(s.completion_tokens, 7 * 16);
}

#[tokio::test]
async fn rate_limit_faults_carry_retry_after() {
    let h = sim(SimConfig {
        fail_rate: 1.0,
        fail_status: 429,
        retry_after_secs: Some(7),
        ..SimConfig::default()
    })
    .await;
    let r = post_json(&chat_url(&h), &body()).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.headers["retry-after"], "7");
    assert_eq!(r.json["error"]["type"], "rate_limit_error");
    assert_eq!(r.json["error"]["code"], "rate_limit_exceeded");

    // Streams fail before any byte: a plain error response, not SSE.
    let r = post_json(&chat_url(&h), &stream_body()).await;
    assert_eq!(r.status, 429);

    h.set_config(SimConfig {
        fail_rate: 1.0,
        fail_status: 503,
        retry_after_secs: Some(2),
        ..SimConfig::default()
    });
    let r = post_json(
        &format!("{}/embeddings", h.base_url()),
        &json!({"model": "m", "input": "x"}),
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["retry-after"], "2");
    assert_eq!(r.json["error"]["type"], "server_error");

    // No Retry-After on a 500 even when configured.
    h.set_config(SimConfig {
        fail_rate: 1.0,
        retry_after_secs: Some(2),
        ..SimConfig::default()
    });
    let r = post_json(&chat_url(&h), &body()).await;
    assert_eq!(r.status, 500);
    assert!(r.headers.get("retry-after").is_none());
}

#[tokio::test]
async fn reset_rate_is_exact() {
    let h = sim(SimConfig {
        reset_rate: 0.5,
        ..SimConfig::default()
    })
    .await;
    let mut outcomes = Vec::new();
    for _ in 0..10 {
        let res = client().post(chat_url(&h)).json_body(&body()).send().await;
        outcomes.push(match res {
            Ok(r) => {
                assert_eq!(r.status(), 200);
                true
            }
            Err(e) => {
                assert!(!e.is_timeout(), "{e}");
                false
            }
        });
    }
    assert_eq!(
        outcomes,
        vec![
            true, false, true, false, true, false, true, false, true, false
        ]
    );
    assert_eq!(h.stats().faults_reset, 5);
    assert_eq!(h.stats().chat_completions, 10);
}

#[tokio::test]
async fn hang_rate_is_exact_and_released_when_client_leaves() {
    let h = sim(SimConfig {
        hang_rate: 0.5,
        ..SimConfig::default()
    })
    .await;
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let mut timeouts = 0;
    for _ in 0..4 {
        match c.post(chat_url(&h)).json_body(&body()).send().await {
            Ok(r) => assert_eq!(r.status(), 200),
            Err(e) => {
                assert!(e.is_timeout(), "{e}");
                timeouts += 1;
            }
        }
    }
    assert_eq!(timeouts, 2);
    assert_eq!(h.stats().faults_hang, 2);
    // The client gave up and closed its connections: the hung handlers are dropped.
    drop(c);
    let mut in_flight = u64::MAX;
    for _ in 0..100 {
        in_flight = h.stats().in_flight;
        if in_flight == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(in_flight, 0);
}

#[tokio::test]
async fn hung_requests_do_not_block_shutdown() {
    let h = sim(SimConfig {
        hang_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    let url = chat_url(&h);
    #[expect(
        clippy::disallowed_methods,
        reason = "a test's client request, awaited below; not on any request path"
    )]
    let pending = tokio::spawn(async move { client().post(url).json_body(&body()).send().await });
    while h.stats().faults_hang == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let addr = h.addr;
    tokio::time::timeout(Duration::from_secs(10), h.shutdown())
        .await
        .expect("shutdown must not wait for hung requests");
    assert!(pending.await.unwrap().is_err());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn cut_streams() {
    let h = sim(SimConfig {
        cut_rate: 0.5,
        completion_tokens: 10,
        ..SimConfig::default()
    })
    .await;
    let mut cut = 0;
    for i in 0..4 {
        let s = stream(&chat_url(&h), &stream_body()).await;
        assert_eq!(s.status, 200);
        if i % 2 == 1 {
            cut += 1;
            assert!(s.errored, "stream {i} should be cut");
            assert!(!s.done());
            let chunks = s.chunks();
            assert!(!chunks.is_empty());
            // About half: the role chunk and some content, never the finish or usage chunk.
            assert!(chunks.len() < 13, "{}", chunks.len());
            for c in &chunks {
                assert!(c["choices"][0]["finish_reason"].is_null());
                assert!(c["usage"].is_null());
            }
        } else {
            assert!(!s.errored);
            assert!(s.done());
        }
    }
    assert_eq!(cut, 2);
    let st = h.stats();
    assert_eq!(st.streams_cut, 2);
    assert_eq!(st.streams, 4);
    // Only the complete streams count as answered tokens.
    assert_eq!(st.completion_tokens, 20);
    // Cut streams never apply to non-streamed requests.
    h.set_config(SimConfig {
        cut_rate: 1.0,
        ..SimConfig::default()
    });
    assert_eq!(post_json(&chat_url(&h), &body()).await.status, 200);
    assert_eq!(h.stats().streams_cut, 2);
}

#[tokio::test]
async fn cut_streams_over_http2() {
    let h = sim(SimConfig {
        cut_rate: 1.0,
        completion_tokens: 10,
        ..SimConfig::default()
    })
    .await;
    install_crypto();
    let c = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = c
        .post(chat_url(&h))
        .json_body(&stream_body())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let s = read_sse(resp).await;
    assert!(s.errored);
    assert!(!s.done());
    assert!(!s.chunks().is_empty());
}

#[tokio::test]
async fn runtime_config_via_handle_and_http() {
    let h = sim(SimConfig::default()).await;
    let r = post_json(&chat_url(&h), &body()).await;
    assert_eq!(r.json["usage"]["completion_tokens"], 16);

    h.set_config(SimConfig {
        completion_tokens: 4,
        ..SimConfig::default()
    });
    let r = post_json(&chat_url(&h), &body()).await;
    assert_eq!(r.json["usage"]["completion_tokens"], 4);

    // Partial update over HTTP: other fields keep their value.
    let ctl = format!("http://{}/_sim/config", h.addr);
    let r = post_json(&ctl, &json!({"fail_rate": 1.0, "fail_status": 503})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["completion_tokens"], 4);
    assert_eq!(r.json["fail_rate"], 1.0);
    assert_eq!(h.config().fail_status, 503);
    assert_eq!(post_json(&chat_url(&h), &body()).await.status, 503);

    let r = post_json(&ctl, &json!({"fail_rate": 0})).await;
    assert_eq!(r.status, 200);
    let r = post_json(&chat_url(&h), &body()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["usage"]["completion_tokens"], 4);

    // Typos and wrong types are refused and change nothing.
    let r = post_json(&ctl, &json!({"fail_rat": 1.0})).await;
    assert_eq!(r.status, 400);
    let r = post_json(&ctl, &json!({"ttft_ms": "slow"})).await;
    assert_eq!(r.status, 400);
    assert_eq!(h.config().fail_rate, 0.0);

    let r = reply(client().get(&ctl).send().await.unwrap()).await;
    assert_eq!(r.json["completion_tokens"], 4);

    let stats = reply(
        client()
            .get(format!("http://{}/_sim/stats", h.addr))
            .send()
            .await
            .unwrap(),
    )
    .await
    .json;
    assert_eq!(stats["chat_completions"], 4);
    assert_eq!(stats["faults_fail"], 1);
    assert_eq!(stats["in_flight"], 0);
    assert_eq!(serde_json::to_value(h.stats()).unwrap(), stats);
}

#[tokio::test]
async fn ttft_and_chunk_delay_are_observable() {
    let h = sim(SimConfig {
        ttft_ms: 150,
        ..SimConfig::default()
    })
    .await;
    let t = Instant::now();
    let r = post_json(&chat_url(&h), &body()).await;
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(150));

    // Streams: the first chunk comes after ttft, then chunks are spaced and flushed one by
    // one (each arrives in its own read).
    h.set_config(SimConfig {
        ttft_ms: 100,
        chunk_delay_ms: 40,
        chunks: 4,
        ..SimConfig::default()
    });
    let t = Instant::now();
    let resp = client()
        .post(chat_url(&h))
        .json_body(&stream_body())
        .send()
        .await
        .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(100));
    let s = read_sse(resp).await;
    assert!(s.done());
    // role + 4 content + finish + usage + [DONE] = 8 frames, 7 gaps of 40 ms.
    assert_eq!(s.data.len(), 8);
    assert!(t.elapsed() >= Duration::from_millis(100 + 7 * 40));
    assert!(s.reads >= 8, "chunks were batched: {} reads", s.reads);
}
