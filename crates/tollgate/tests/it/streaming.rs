//! Streaming chat: incremental relay, `[DONE]`, the usage chunk only when asked, and the
//! ledger's usage for streams with and without provider usage.

use serde_json::{Value, json};
use tollgate_sim::SimConfig;

use crate::harness::*;

fn usage_events(events: &[Event]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| !e.is_done())
        .map(Event::json)
        .filter(|v| v["usage"].is_object())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_are_relayed_incrementally() {
    let env = TestEnv::with(Opts {
        sim: SimConfig {
            chunk_delay_ms: 50,
            completion_tokens: 10,
            ..SimConfig::default()
        },
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    let resp = env
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "stream": true,
                   "messages": [{"role": "user", "content": "count"}]}),
        )
        .await;
    assert_eq!(header(&resp, "x-tollgate-served-model"), "gpt-4o-mini");
    assert_eq!(header(&resp, "x-tollgate-provider"), "sim");
    assert!(resp.headers().get("x-tollgate-cost-usd").is_none());
    let request_id = header(&resp, "x-tollgate-request-id").to_string();
    let events = read_stream(resp).await;
    // role chunk + 10 content chunks + finish chunk + [DONE]; the sim waits 50 ms between
    // frames, so 11+ gaps separate the first and the last frame at the source.
    assert_eq!(events.len(), 13, "{events:#?}");
    assert!(events.last().unwrap().is_done());
    assert_eq!(events.iter().filter(|e| e.is_done()).count(), 1);
    let first = events.first().unwrap().at;
    let last = events.last().unwrap().at;
    // A gateway that buffered the answer would deliver everything at once. Relayed chunk by
    // chunk, the client sees the first frame at least half the source's spacing before the
    // end (a lower bound only: no assertion on how fast anything is).
    let spread = last.duration_since(first);
    assert!(
        spread >= std::time::Duration::from_millis(275),
        "the stream arrived in one burst ({spread:?}): not relayed incrementally"
    );
    // And in order: arrival times never go backwards, content comes before the finish chunk.
    assert!(events.windows(2).all(|w| w[0].at <= w[1].at));
    let finish_at = events
        .iter()
        .position(|e| !e.is_done() && e.json()["choices"][0]["finish_reason"] == "stop")
        .unwrap();
    assert_eq!(finish_at, 11);
    assert_eq!(streamed_text(&events).split_whitespace().count(), 10);
    let row = env.row(&request_id).await;
    assert_eq!(row["stream"], true);
    assert_eq!(row["outcome"], "ok");
    assert_eq!(row["output_tokens"], 10);
    assert!(row["ttft_us"].as_u64().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_chunk_only_when_asked_and_row_has_provider_usage() {
    let env = TestEnv::start().await;
    let key = env.key().await;
    let messages = json!([{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": "Tell me about the sea."}]);

    // With include_usage: exactly one usage chunk, last before [DONE], with empty choices.
    let resp = env
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true},
                   "messages": messages}),
        )
        .await;
    let with_id = header(&resp, "x-tollgate-request-id").to_string();
    let events = read_stream(resp).await;
    assert!(events.last().unwrap().is_done());
    let usage = usage_events(&events);
    assert_eq!(usage.len(), 1, "{events:#?}");
    let n = events.len();
    assert_eq!(events[n - 2].json(), usage[0]);
    assert_eq!(usage[0]["choices"], json!([]));
    let prompt = usage[0]["usage"]["prompt_tokens"].as_u64().unwrap();
    let completion = usage[0]["usage"]["completion_tokens"].as_u64().unwrap();
    assert_eq!(completion, 16);
    assert_eq!(streamed_text(&events).split_whitespace().count(), 16);

    // Without: no usage chunk at all (the gateway asked upstream for one and stripped it).
    let resp = env
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "stream": true, "messages": messages}),
        )
        .await;
    let without_id = header(&resp, "x-tollgate-request-id").to_string();
    let events = read_stream(resp).await;
    assert!(events.last().unwrap().is_done());
    assert_eq!(usage_events(&events).len(), 0, "{events:#?}");
    assert!(events.iter().all(|e| !e.data.contains("prompt_tokens")));
    assert_eq!(streamed_text(&events).split_whitespace().count(), 16);

    for id in [with_id, without_id] {
        let row = env.row(&id).await;
        assert_eq!(row["usage_source"], "provider", "{row}");
        assert_eq!(row["input_tokens"], prompt);
        assert_eq!(row["output_tokens"], completion);
        assert_eq!(row["outcome"], "ok");
        assert_eq!(row["status"], 200);
        assert_eq!(
            nanos(row["effective_cost"].as_str().unwrap()),
            gpt4o_mini_cost(prompt, 0, completion)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_without_stream_usage_is_estimated_from_what_was_relayed() {
    let env = TestEnv::start().await;
    let key = env.key().await;
    let messages = json!([{"role": "user", "content": "Describe a mountain in a few words."}]);
    // The provider's count for this prompt, from a non-streamed answer.
    let v: Value = env
        .chat(&key, json!({"model": "gpt-4o-mini", "messages": messages}))
        .await
        .json()
        .await
        .unwrap();
    let provider_prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();

    env.sim.set_config(SimConfig {
        stream_usage: false,
        completion_tokens: 24,
        ..SimConfig::default()
    });
    for include_usage in [false, true] {
        let mut body = json!({"model": "gpt-4o-mini", "stream": true, "messages": messages});
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let resp = env.chat(&key, body).await;
        let id = header(&resp, "x-tollgate-request-id").to_string();
        let events = read_stream(resp).await;
        assert!(events.last().unwrap().is_done());
        let relayed = streamed_text(&events).split_whitespace().count() as u64;
        assert_eq!(relayed, 24);
        let row = env.row(&id).await;
        assert_eq!(row["usage_source"], "estimated", "{row}");
        assert_eq!(row["outcome"], "ok");
        assert_eq!(row["output_tokens"], relayed);
        assert_eq!(row["input_tokens"], provider_prompt);
        assert_eq!(
            nanos(row["effective_cost"].as_str().unwrap()),
            gpt4o_mini_cost(provider_prompt, 0, relayed)
        );
    }
    let spend = env.admin_get("/admin/v1/spend").await;
    assert_eq!(spend["data"][0]["estimated_rows"], 2);
}

/// HTTP/2 clients (prior knowledge, as gRPC-style proxies use): streams relay the same way and
/// a reset stream cancels the upstream call like a closed HTTP/1 connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_stream_and_cancel() {
    let env = TestEnv::with(Opts {
        sim: SimConfig {
            chunk_delay_ms: 20,
            completion_tokens: 5000,
            ..SimConfig::default()
        },
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(HANG_GUARD)
        .build()
        .unwrap();
    let body = json!({"model": "gpt-4o-mini", "stream": true,
                      "messages": [{"role": "user", "content": "over h2"}]});
    let r = h2
        .post(env.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let mut sse = Sse::new(r);
    for _ in 0..3 {
        sse.next().await.expect("a chunk");
    }
    drop(sse);
    eventually("the upstream call is cancelled", || async {
        env.sim.stats().in_flight == 0
    })
    .await;
    let rows = env.wait_rows("outcome=cancelled", |r| r.len() == 1).await;
    let out = rows[0]["output_tokens"].as_u64().unwrap();
    assert!((2..5000).contains(&out), "{out}");

    // A complete answer over the same HTTP/2 connection.
    env.sim.set_config(SimConfig::default());
    let r = h2
        .post(env.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let events = read_stream(r).await;
    assert!(events.last().unwrap().is_done());
    assert_eq!(streamed_text(&events).split_whitespace().count(), 16);
}
