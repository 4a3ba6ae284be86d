//! Upstream failures (the simulator's fault injection), secret hygiene, and clients that leave.

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_sim::SimConfig;

use crate::harness::*;

fn hi(stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "stream": stream,
           "messages": [{"role": "user", "content": "hello there"}]})
}

async fn failed_row(env: &TestEnv, id: &str, status: u16, code: &str) -> Value {
    let row = env.row(id).await;
    assert_eq!(row["outcome"], "failed", "{row}");
    assert_eq!(row["status"], status, "{row}");
    assert_eq!(row["error_code"], code, "{row}");
    assert_eq!(row["error_origin"], "upstream", "{row}");
    assert_eq!(row["provider"], "sim", "{row}");
    assert_eq!(row["attempts"], 1, "{row}");
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_error_statuses_are_mapped() {
    let env = TestEnv::with(Opts {
        single_attempt: true,
        ..Opts::default()
    })
    .await;
    let key = env.key().await;

    // 5xx → 502 upstream_error naming the provider (streaming or not: nothing was relayed yet).
    env.sim.set_config(SimConfig {
        fail_rate: 1.0,
        fail_status: 500,
        ..SimConfig::default()
    });
    for stream in [false, true] {
        let r = env.chat(&key, hi(stream)).await;
        let id = header(&r, "x-tollgate-request-id").to_string();
        let e = expect_error(r, 502, "upstream_error").await;
        assert_eq!(e["type"], "upstream_error");
        assert!(
            e["message"].as_str().unwrap().contains("provider 'sim'"),
            "{e}"
        );
        let row = failed_row(&env, &id, 502, "upstream_error").await;
        assert_eq!(row["stream"], stream);
        assert_eq!(row["usage_source"], "none");
        assert_eq!(row["effective_cost"], "0");
    }

    // 503 → 503 upstream_unavailable.
    env.sim.set_config(SimConfig {
        fail_rate: 1.0,
        fail_status: 503,
        ..SimConfig::default()
    });
    let r = env.chat(&key, hi(false)).await;
    let id = header(&r, "x-tollgate-request-id").to_string();
    let e = expect_error(r, 503, "upstream_unavailable").await;
    assert!(
        e["message"].as_str().unwrap().contains("provider 'sim'"),
        "{e}"
    );
    failed_row(&env, &id, 503, "upstream_unavailable").await;

    // 429 with Retry-After → 429 with Retry-After.
    env.sim.set_config(SimConfig {
        fail_rate: 1.0,
        fail_status: 429,
        retry_after_secs: Some(7),
        ..SimConfig::default()
    });
    for stream in [false, true] {
        let r = env.chat(&key, hi(stream)).await;
        assert_eq!(header(&r, "retry-after"), "7");
        let id = header(&r, "x-tollgate-request-id").to_string();
        let e = expect_error(r, 429, "upstream_rate_limited").await;
        assert_eq!(e["type"], "rate_limit_error");
        failed_row(&env, &id, 429, "upstream_rate_limited").await;
    }
    assert_eq!(env.sim.stats().faults_fail, 5);
    assert_eq!(env.rows("outcome=failed").await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_upstream_times_out_with_504() {
    let env = TestEnv::with(Opts {
        single_attempt: true,
        sim: SimConfig {
            hang_rate: 1.0,
            ..SimConfig::default()
        },
        first_byte_ms: Some(300),
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    for stream in [false, true] {
        let r = env.chat(&key, hi(stream)).await;
        let id = header(&r, "x-tollgate-request-id").to_string();
        let e = expect_error(r, 504, "upstream_timeout").await;
        let msg = e["message"].as_str().unwrap();
        assert!(
            msg.contains("provider 'sim'") && msg.contains("first byte"),
            "{msg}"
        );
        let row = failed_row(&env, &id, 504, "upstream_timeout").await;
        // The provider had the prompt and may bill it: recorded as a stated estimate, not as
        // a certain $0.
        assert_eq!(row["usage_source"], "unknown", "{row}");
        let input = row["input_tokens"].as_u64().unwrap();
        assert!(input > 0, "{row}");
        assert_eq!(row["output_tokens"], 0, "{row}");
        assert_eq!(
            nanos(row["effective_cost"].as_str().unwrap()),
            gpt4o_mini_cost(input, 0, 0),
            "{row}"
        );
    }
    assert_eq!(env.sim.stats().faults_hang, 2);
    // The gateway gave up on the upstream calls: nothing is left hanging at the provider.
    eventually("sim in-flight back to 0", || async {
        env.sim.stats().in_flight == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_reset_is_a_502_or_503() {
    let env = TestEnv::with(Opts {
        single_attempt: true,
        sim: SimConfig {
            reset_rate: 1.0,
            ..SimConfig::default()
        },
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    for stream in [false, true] {
        let r = env.chat(&key, hi(stream)).await;
        let status = r.status().as_u16();
        let id = header(&r, "x-tollgate-request-id").to_string();
        let code = if status == 503 {
            "upstream_unavailable"
        } else {
            "upstream_error"
        };
        let e = expect_error(r, status, code).await;
        assert!([502, 503].contains(&status), "{status}");
        assert!(
            e["message"].as_str().unwrap().contains("provider 'sim'"),
            "{e}"
        );
        failed_row(&env, &id, status, code).await;
    }
    assert!(env.sim.stats().faults_reset >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_cut_midway_relays_then_errors_and_bills_relayed_tokens() {
    let env = TestEnv::with(Opts {
        single_attempt: true,
        sim: SimConfig {
            cut_rate: 1.0,
            completion_tokens: 20,
            ..SimConfig::default()
        },
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    let r = env.chat(&key, hi(true)).await;
    let id = header(&r, "x-tollgate-request-id").to_string();
    let events = read_stream(r).await;
    assert!(
        events.iter().all(|e| !e.is_done()),
        "no [DONE] after a cut: {events:#?}"
    );
    let (last, relayed) = events.split_last().unwrap();
    // The sim cuts after half its 24 frames (role + 20 content + finish + usage + [DONE]):
    // the role chunk and 11 content chunks.
    assert_eq!(relayed.len(), 12, "{events:#?}");
    for e in relayed {
        let v = e.json();
        assert_eq!(v["object"], "chat.completion.chunk", "{v}");
        assert!(v["choices"][0]["finish_reason"].is_null());
    }
    let err = last.json();
    assert_error_shape(&err);
    assert_eq!(err["error"]["code"], "upstream_error");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("provider 'sim'"),
        "{err}"
    );

    let relayed_tokens = streamed_text(relayed).split_whitespace().count() as u64;
    assert_eq!(relayed_tokens, 11);
    let row = env.row(&id).await;
    assert_eq!(row["outcome"], "failed");
    assert_eq!(row["status"], 200, "the stream had started");
    assert_eq!(row["error_code"], "upstream_error");
    assert_eq!(row["error_origin"], "upstream");
    assert_eq!(row["usage_source"], "estimated");
    assert_eq!(row["output_tokens"], relayed_tokens);
    let input = row["input_tokens"].as_u64().unwrap();
    assert!(input > 0);
    assert_eq!(
        nanos(row["effective_cost"].as_str().unwrap()),
        gpt4o_mini_cost(input, 0, relayed_tokens)
    );
    assert_eq!(env.sim.stats().streams_cut, 1);
}

/// The provider credential never reaches a client: not from a provider 401 that says nothing,
/// not from one that quotes the key back, not from any other failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_key_never_reaches_the_client() {
    let (echo_addr, _) = spawn_recorder(true).await;
    let env = TestEnv::with(Opts {
        single_attempt: true,
        provider_auth: true,
        extra_providers: format!(
            "  echo:\n    kind: openai\n    base_url: http://{echo_addr}/v1\n    api_key: ${{SIM_API_KEY}}\n"
        ),
        extra_models: "  echo-mini: {deployments: [{provider: echo, model: gpt-4o-mini}]}\n".into(),
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    let mut seen: Vec<String> = Vec::new();
    async fn record(seen: &mut Vec<String>, r: reqwest::Response) -> (u16, String) {
        let status = r.status().as_u16();
        for (k, v) in r.headers() {
            seen.push(format!("{k}: {}", v.to_str().unwrap_or("")));
        }
        let text = r.text().await.unwrap();
        seen.push(text.clone());
        (status, text)
    }

    // The key is configured correctly: requests work (so it is really sent upstream).
    let (status, _) = record(&mut seen, env.chat(&key, hi(false)).await).await;
    assert_eq!(status, 200);
    let (status, text) = record(&mut seen, env.chat(&key, hi(true)).await).await;
    assert_eq!(status, 200);
    assert!(text.ends_with("data: [DONE]\n\n"));

    // The provider refuses the key and says nothing about it: 502 upstream_auth_failed.
    env.sim.set_config(SimConfig {
        api_key: Some("sk-a-different-key-000000".into()),
        ..SimConfig::default()
    });
    for stream in [false, true] {
        let (status, text) = record(&mut seen, env.chat(&key, hi(stream)).await).await;
        assert_eq!(status, 502, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_error_shape(&v);
        assert_eq!(v["error"]["code"], "upstream_auth_failed");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("provider 'sim'")
        );
    }
    // A provider that quotes the key back in its 401.
    let mut body = hi(false);
    body["model"] = json!("echo-mini");
    let (status, text) = record(&mut seen, env.chat(&key, body).await).await;
    assert_eq!(status, 502, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "upstream_auth_failed");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("provider 'echo'"),
        "{v}"
    );

    // Other failures with the key configured: 5xx, 429, a cut stream.
    for cfg in [
        SimConfig {
            fail_rate: 1.0,
            fail_status: 500,
            ..SimConfig::default()
        },
        SimConfig {
            fail_rate: 1.0,
            fail_status: 429,
            retry_after_secs: Some(1),
            ..SimConfig::default()
        },
        SimConfig {
            cut_rate: 1.0,
            ..SimConfig::default()
        },
    ] {
        env.sim.set_config(SimConfig {
            api_key: Some(SIM_KEY.into()),
            ..cfg
        });
        for stream in [false, true] {
            record(&mut seen, env.chat(&key, hi(stream)).await).await;
        }
    }

    let tail = &SIM_KEY[SIM_KEY.len() - 6..];
    for s in &seen {
        assert!(!s.contains(SIM_KEY), "provider key leaked: {s}");
        assert!(!s.contains(tail), "provider key tail leaked: {s}");
    }
    // The ledger does not hold it either.
    let rows = env.rows("").await;
    assert_eq!(rows.len(), 11);
    assert!(!serde_json::to_string(&rows).unwrap().contains(SIM_KEY));
}

/// Client disconnect mid-stream: the upstream call is cancelled and the partial answer billed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_mid_stream_cancels_upstream_and_bills_partial() {
    // 5000 tokens at 20 ms each: the answer would take 100 s, far beyond the hang guard, so
    // the sim's stream can only end early because the gateway dropped it.
    const FULL: u64 = 5000;
    let env = TestEnv::with(Opts {
        single_attempt: true,
        sim: SimConfig {
            chunk_delay_ms: 20,
            completion_tokens: FULL as u32,
            ..SimConfig::default()
        },
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    let r = env.chat(&key, hi(true)).await;
    let id = header(&r, "x-tollgate-request-id").to_string();
    let mut sse = Sse::new(r);
    let mut received = Vec::new();
    for _ in 0..3 {
        received.push(sse.next().await.expect("a chunk"));
    }
    assert_eq!(env.sim.stats().in_flight, 1);
    drop(sse); // the client goes away

    eventually("the upstream call is cancelled", || async {
        env.sim.stats().in_flight == 0
    })
    .await;
    let rows = env.wait_rows("outcome=cancelled", |r| r.len() == 1).await;
    let row = &rows[0];
    assert_eq!(row["request_id"], id);
    // The status is what the client got: the stream had started with a 200.
    assert_eq!(row["status"], 200);
    assert_eq!(row["error_code"], "client_closed_request");
    assert_eq!(row["error_origin"], "client");
    assert_eq!(row["usage_source"], "estimated");
    let out = row["output_tokens"].as_u64().unwrap();
    // At least what the client received (2 content chunks), less than the full answer.
    assert!((2..FULL).contains(&out), "{out}");
    let input = row["input_tokens"].as_u64().unwrap();
    assert_eq!(
        nanos(row["effective_cost"].as_str().unwrap()),
        gpt4o_mini_cost(input, 0, out)
    );
    assert_eq!(env.rows("").await.len(), 1);
    let metrics = env.metrics().await;
    assert!(
        metrics.contains("tollgate_requests_in_flight 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "tollgate_requests_total{endpoint=\"/v1/chat/completions\",outcome=\"cancelled\"} 1\n"
        ),
        "{metrics}"
    );
}

/// A client that gives up on a stream before the provider's first byte: the upstream call is
/// dropped and the request recorded as cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gone_before_the_stream_starts_cancels_upstream() {
    // 60 s to first byte, far beyond the hang guard: only a cancellation ends the sim's call.
    let env = TestEnv::with(Opts {
        single_attempt: true,
        sim: SimConfig {
            ttft_ms: 60_000,
            ..SimConfig::default()
        },
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    let r = env
        .http
        .post(env.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&hi(true))
        .timeout(Duration::from_millis(1000))
        .send()
        .await;
    assert!(r.is_err(), "the client gave up before the headers");
    eventually("the sim saw the request", || async {
        env.sim.stats().chat_completions == 1
    })
    .await;
    eventually("the upstream call is cancelled", || async {
        env.sim.stats().in_flight == 0
    })
    .await;
    let rows = env.wait_rows("", |r| r.len() == 1).await;
    let row = &rows[0];
    assert_eq!(row["outcome"], "cancelled", "{row}");
    assert_eq!(row["status"], 499);
    assert_eq!(row["error_code"], "client_closed_request");
    assert_eq!(row["stream"], true);
    assert_eq!(row["provider"], "sim");
}

/// A client that leaves while a non-streamed answer is generating: the provider bills the whole
/// answer, so the row records it (outcome cancelled, provider usage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gone_during_non_streaming_answer_is_still_billed() {
    let env = TestEnv::with(Opts {
        single_attempt: true,
        sim: SimConfig {
            ttft_ms: 5_000,
            ..SimConfig::default()
        },
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    let r = env
        .http
        .post(env.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&hi(false))
        .timeout(Duration::from_millis(1000))
        .send()
        .await;
    assert!(r.is_err(), "the client gave up before the answer");
    assert_eq!(
        env.sim.stats().chat_completions,
        1,
        "the request reached the provider"
    );
    let rows = env.wait_rows("", |r| r.len() == 1).await;
    let row = &rows[0];
    assert_eq!(row["outcome"], "cancelled", "{row}");
    assert_eq!(row["status"], 499);
    assert_eq!(row["usage_source"], "provider");
    assert_eq!(row["output_tokens"], 16);
    let input = row["input_tokens"].as_u64().unwrap();
    assert_eq!(
        nanos(row["effective_cost"].as_str().unwrap()),
        gpt4o_mini_cost(input, 0, 16)
    );
}

/// An upstream that goes silent mid-stream for longer than `timeouts.idle_ms`: the client gets
/// what was relayed, then an `upstream_timeout` error event; the row is failed and billed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_before_first_content_is_a_504() {
    let env = TestEnv::with(Opts {
        single_attempt: true,
        sim: SimConfig {
            chunk_delay_ms: 1_000,
            ..SimConfig::default()
        },
        idle_ms: Some(200),
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    // The simulator sends the role chunk at once, then stalls longer than the idle timeout
    // before the first content. Nothing the client needs has been produced, so the stream is
    // not started: the stall is an ordinary (retryable, here single-attempt) upstream failure.
    let r = env.chat(&key, hi(true)).await;
    let id = header(&r, "x-tollgate-request-id").to_string();
    let err = expect_error(r, 504, "upstream_timeout").await;
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("provider 'sim'") && msg.contains("idle"),
        "{msg}"
    );
    let row = env.row(&id).await;
    assert_eq!(row["outcome"], "failed");
    assert_eq!(row["status"], 504);
    assert_eq!(row["error_code"], "upstream_timeout");
    assert_eq!(row["output_tokens"], 0);
    eventually("the upstream call is dropped", || async {
        env.sim.stats().in_flight == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_mid_stream_ends_with_an_error_and_bills_what_was_relayed() {
    // The simulator streams its preamble and three content chunks, then hangs.
    let env = TestEnv::with(Opts {
        single_attempt: true,
        sim: SimConfig {
            stall_after_chunks: Some(3),
            ..SimConfig::default()
        },
        idle_ms: Some(200),
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    let r = env.chat(&key, hi(true)).await;
    let id = header(&r, "x-tollgate-request-id").to_string();
    let events = read_stream(r).await;
    assert!(events.iter().all(|e| !e.is_done()));
    let (last, relayed) = events.split_last().unwrap();
    let err = last.json();
    assert_error_shape(&err);
    assert_eq!(err["error"]["code"], "upstream_timeout");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("provider 'sim'") && msg.contains("idle"),
        "{msg}"
    );
    let relayed_tokens = streamed_text(relayed).split_whitespace().count() as u64;
    assert_eq!(relayed_tokens, 3, "{relayed:?}");
    let row = env.row(&id).await;
    assert_eq!(row["outcome"], "failed");
    assert_eq!(row["status"], 200);
    assert_eq!(row["error_code"], "upstream_timeout");
    assert_eq!(row["usage_source"], "estimated");
    assert_eq!(row["output_tokens"], relayed_tokens);
    let input = row["input_tokens"].as_u64().unwrap();
    assert!(input > 0);
    assert_eq!(
        nanos(row["effective_cost"].as_str().unwrap()),
        gpt4o_mini_cost(input, 0, relayed_tokens)
    );
    eventually("the upstream call is dropped", || async {
        env.sim.stats().in_flight == 0
    })
    .await;
}
