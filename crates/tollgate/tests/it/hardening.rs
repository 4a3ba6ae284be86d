//! Hardening: what the gateway does when its own code fails, and when clients or the network
//! misbehave (slow, idle, too many) — over real sockets.

use serde_json::json;

use crate::harness::*;

/// A panic in the request path is answered `500 internal_error` in the OpenAI shape and
/// recorded as a failure of the gateway, never as a client that went away; the gateway keeps
/// serving. (The probe model exists in debug builds only.)
#[tokio::test]
async fn a_panic_is_a_500_and_a_failed_row_not_a_cancellation() {
    let env = TestEnv::start().await;
    let key = env.key().await;
    for stream in [false, true] {
        let r = env
            .chat(
                &key,
                json!({"model": "__tollgate_panic_probe__", "stream": stream,
                       "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        let e = expect_error(r, 500, "internal_error").await;
        assert_eq!(e["type"], "server_error", "{e}");
    }
    let rows = env
        .wait_rows("model=__tollgate_panic_probe__", |r| r.len() >= 2)
        .await;
    for row in &rows {
        assert_eq!(row["outcome"], "failed", "{row}");
        assert_eq!(row["error_code"], "internal_error", "{row}");
        assert_eq!(row["status"], 500, "{row}");
    }
    let r = env
        .chat(&key, json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "still there?"}]}))
        .await;
    assert_eq!(r.status(), 200);
}

/// A gateway with short limits, so the tests can watch them act.
async fn limited(server: &str, sim: tollgate_sim::SimConfig) -> TestEnv {
    TestEnv::with(Opts {
        extra_server: format!("  limits: {{{server}}}\n"),
        sim,
        ..Opts::default()
    })
    .await
}

/// Reads until EOF or `within`; true when the peer closed the connection.
async fn closed_within(s: &mut tokio::net::TcpStream, within: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

fn gauge(metrics: &str, name: &str) -> i64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

/// `n` distinct chat requests at once.
async fn concurrent_chats(env: &TestEnv, key: &str, n: usize) -> Vec<reqwest::Response> {
    let calls = (0..n).map(|i| {
        env.chat(
            key,
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": format!("q{i}")}]}),
        )
    });
    futures_util::future::join_all(calls).await
}

async fn chat_ok(env: &TestEnv, key: &str) {
    let r = env
        .chat(
            key,
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// Slowloris: clients that trickle a request's headers are closed at the header deadline;
/// clients that sit idle after a request are closed at the idle deadline; others are served
/// all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_idle_connections_are_closed_and_others_served() {
    use tokio::io::AsyncWriteExt;
    let env = limited(
        "header_read_timeout_secs: 1, idle_timeout_secs: 2",
        Default::default(),
    )
    .await;
    let key = env.key().await;
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = tokio::net::TcpStream::connect(env.gw.addr).await.unwrap();
        s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    let mut idle = Vec::new();
    for _ in 0..50 {
        let mut s = tokio::net::TcpStream::connect(env.gw.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        idle.push(s);
    }
    // Meanwhile, a normal client is served.
    chat_ok(&env, &key).await;
    let start = std::time::Instant::now();
    // One more byte a while later does not reset the header deadline.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for s in &mut slow {
        let _ = s.write_all(b"x").await;
    }
    for s in &mut slow {
        assert!(
            closed_within(s, std::time::Duration::from_secs(3)).await,
            "slow client not closed"
        );
    }
    let slow_closed_at = start.elapsed();
    assert!(
        slow_closed_at < std::time::Duration::from_secs(3),
        "{slow_closed_at:?}"
    );
    for s in &mut idle {
        assert!(
            closed_within(s, std::time::Duration::from_secs(4)).await,
            "idle client not closed"
        );
    }
    // A fresh connection: the test client's pooled one went idle too and may be closing now
    // (a client that reuses a connection as the server's idle timeout closes it must retry,
    // which is why the default idle timeout is longer than common client pool timeouts).
    let r = reqwest::Client::new()
        .post(env.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = env.metrics().await;
    assert!(
        gauge(&m, "tollgate_connections_closed_header_timeout_total") >= 200,
        "{m}"
    );
    assert!(
        gauge(&m, "tollgate_connections_closed_idle_total") >= 50,
        "{m}"
    );
}

/// A body that trickles in is answered `408 request_timeout` and recorded.
#[tokio::test]
async fn a_body_that_never_finishes_is_a_408_and_a_row() {
    use tokio::io::AsyncWriteExt;
    let env = limited("body_read_timeout_secs: 1", Default::default()).await;
    let key = env.key().await;
    let mut s = tokio::net::TcpStream::connect(env.gw.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"model\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while !String::from_utf8_lossy(&resp).contains("request_timeout") {
            match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => resp.extend_from_slice(&buf[..n]),
                other => panic!(
                    "no 408 before {other:?}: {}",
                    String::from_utf8_lossy(&resp)
                ),
            }
        }
    }
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let rows = env.wait_rows("status=408", |r| !r.is_empty()).await;
    assert_eq!(rows[0]["error_code"], "request_timeout", "{}", rows[0]);
}

/// Past `max_connections` a new connection gets one `503 overloaded` and is closed; once
/// connections close, new ones are served again.
#[tokio::test]
async fn connections_past_the_cap_get_a_503_and_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = limited("max_connections: 4", Default::default()).await;
    let key = env.key().await;
    // The test client's pooled connection may hold one slot: fill the rest with idle ones.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(env.gw.addr).await.unwrap());
    }
    let mut extra = tokio::net::TcpStream::connect(env.gw.addr).await.unwrap();
    extra
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        extra.read_to_string(&mut text),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.to_lowercase().contains("retry-after: 1"), "{text}");
    let body: serde_json::Value =
        serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    drop(held);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let http = reqwest::Client::new();
    let r = http
        .post(env.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = env.metrics().await;
    assert!(gauge(&m, "tollgate_connections_refused_total") >= 1, "{m}");
}

/// Past `max_in_flight` requests are shed with `503 overloaded` and `Retry-After`, counted,
/// and recorded in the ledger; the ones admitted complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_in_flight_limit_are_shed_and_recorded() {
    let env = limited(
        "max_in_flight: 3",
        tollgate_sim::SimConfig {
            ttft_ms: 400,
            ..Default::default()
        },
    )
    .await;
    let key = env.key().await;
    let resps = concurrent_chats(&env, &key, 12).await;
    let mut ok = 0;
    let mut shed = 0;
    for r in resps {
        match r.status().as_u16() {
            200 => ok += 1,
            503 => {
                assert_eq!(r.headers()["retry-after"], "1");
                let e = expect_error(r, 503, "overloaded").await;
                assert!(
                    e["message"]
                        .as_str()
                        .unwrap()
                        .contains("3 requests in flight"),
                    "{e}"
                );
                shed += 1;
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert!(ok >= 3 && shed >= 1, "ok {ok}, shed {shed}");
    assert_eq!(ok + shed, 12);
    let rows = env.wait_rows("status=503", |r| r.len() >= shed).await;
    assert!(rows.iter().all(|r| r["error_code"] == "overloaded"));
    let m = env.metrics().await;
    assert_eq!(
        gauge(&m, "tollgate_requests_shed_total"),
        shed as i64,
        "{m}"
    );
}

/// Requests without `max_tokens` reserve a default cap, not the model's whole output window,
/// so a handful in flight cannot lock a small budget; an absurd `max_tokens` reserves no more
/// than the model accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncapped_requests_do_not_starve_a_small_budget() {
    let env = TestEnv::with(Opts {
        extra_yaml: "budgets:\n  - {name: small, scope: {tenant: acme}, limit_usd: \"0.05\", window: month, mode: hard}\n".into(),
        sim: tollgate_sim::SimConfig {
            ttft_ms: 300,
            ..Default::default()
        },
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    // gpt-4o-mini: $0.60 per 1M output tokens. The whole 16,384-token window would reserve
    // ~$0.0098 each (five fill the budget); the 4,096 default reserves ~$0.0025.
    for r in concurrent_chats(&env, &key, 12).await {
        assert_eq!(r.status(), 200);
        assert!(
            r.headers().get("x-tollgate-policy").is_none(),
            "{:?}",
            r.headers()
        );
    }
    let r = env
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "max_tokens": 10_000_000,
                           "messages": [{"role": "user", "content": "long"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("x-tollgate-policy").is_none(),
        "fitted as if 10M tokens were possible: {:?}",
        r.headers()
    );
}

/// A megabyte model name is refused, not stored in the row or echoed back.
#[tokio::test]
async fn a_huge_model_name_is_refused_and_not_stored() {
    let env = TestEnv::start().await;
    let key = env.key().await;
    let huge = "m".repeat(1 << 20);
    let r = env
        .chat(
            &key,
            json!({"model": huge, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    let e = expect_error(r, 400, "invalid_request").await;
    assert_eq!(e["param"], "model");
    assert!(e["message"].as_str().unwrap().len() < 200, "{e}");
    let r = env
        .http
        .get(env.url(&format!("/v1/models/{}", "m".repeat(5000))))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let rows = env.wait_rows("status=400", |r| r.len() >= 2).await;
    for row in rows {
        assert!(
            row.to_string().len() < 4096,
            "a row holds the name: {} bytes",
            row.to_string().len()
        );
    }
}

/// With `server.metrics_auth`, `/metrics` (which shows spend totals) needs that bearer token.
#[tokio::test]
async fn metrics_can_require_a_token() {
    let env = TestEnv::with(Opts {
        extra_server: "  metrics_auth: ${METRICS_TOKEN}\n".into(),
        env: vec![("METRICS_TOKEN".into(), "scrape-me-0123456789".into())],
        ..Opts::default()
    })
    .await;
    let get = |auth: Option<&'static str>| {
        let mut r = env.http.get(env.url("/metrics"));
        if let Some(a) = auth {
            r = r.bearer_auth(a);
        }
        r.send()
    };
    expect_error(get(None).await.unwrap(), 401, "invalid_api_key").await;
    expect_error(get(Some("wrong")).await.unwrap(), 401, "invalid_api_key").await;
    let r = get(Some("scrape-me-0123456789")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("tollgate_requests_in_flight")
    );
}

/// `storage.durability: strict`: an answer — complete, streamed or refused — is finished only
/// once its row is in the database, so a crash right after can never lose a row the client
/// saw; and a provider is called only once the request's provisional row is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_durability_writes_the_row_before_the_answer_ends() {
    let env = TestEnv::with(Opts {
        extra_storage: "  durability: strict\n".into(),
        ..Default::default()
    })
    .await;
    let key = env.key().await;
    let store = env.store();
    for i in 0..20 {
        let stream = i % 2 == 1;
        let r = env
            .chat(
                &key,
                json!({"model": "gpt-4o-mini", "stream": stream,
                "messages": [{"role": "user", "content": format!("durable {i}")}]}),
            )
            .await;
        assert_eq!(r.status(), 200);
        let id = header(&r, "x-tollgate-request-id").to_string();
        let _ = r.bytes().await.unwrap();
        // No flush, no wait: the row must already be there.
        let row = store.get_request(&id).unwrap();
        assert!(
            row.is_some(),
            "request {i} (stream={stream}) answered before its row was written"
        );
    }
    let r = env
        .chat(
            &key,
            json!({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    let id = header(&r, "x-tollgate-request-id").to_string();
    expect_error(r, 404, "model_not_found").await;
    assert!(store.get_request(&id).unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_durability_commits_the_provisional_row_before_the_call() {
    let env = TestEnv::with(Opts {
        extra_storage: "  durability: strict\n".into(),
        sim: tollgate_sim::SimConfig {
            hang_rate: 1.0,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let key = env.key().await;
    let store = env.store();
    let (http, url, k) = (
        env.http.clone(),
        env.url("/v1/chat/completions"),
        key.clone(),
    );
    let call = tokio::spawn(async move {
        http.post(url)
            .bearer_auth(k)
            .json(
                &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hang"}]}),
            )
            .send()
            .await
    });
    eventually("the provider got the call", || async {
        env.sim.stats().chat_completions == 1
    })
    .await;
    assert_eq!(
        store.intent_count().unwrap(),
        1,
        "called before the provisional row was committed"
    );
    call.abort();
}
