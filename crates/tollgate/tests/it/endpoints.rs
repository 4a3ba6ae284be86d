//! Embeddings, models, and the ops endpoints.

use serde_json::{Value, json};

use crate::harness::*;

/// Standard base64 (with padding) → bytes; tiny and independent of any crate.
fn b64decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64 char") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_float_and_base64_are_billed() {
    let env = TestEnv::start().await;
    let key = env.key().await;
    let post = |body: Value| {
        env.http
            .post(env.url("/v1/embeddings"))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };
    let input = json!(["the quick brown fox", "jumps over the lazy dog"]);

    let r = post(json!({"model": "text-embedding-3-small", "input": input, "dimensions": 16}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "x-tollgate-served-model"),
        "text-embedding-3-small"
    );
    assert_eq!(header(&r, "x-tollgate-provider"), "sim");
    let id = header(&r, "x-tollgate-request-id").to_string();
    let cost = nanos(header(&r, "x-tollgate-cost-usd"));
    let float: Value = r.json().await.unwrap();
    assert_eq!(float["object"], "list");
    assert_eq!(float["model"], "text-embedding-3-small");
    let data = float["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["index"], i);
        // `dimensions` reached the upstream.
        assert_eq!(d["embedding"].as_array().unwrap().len(), 16);
    }
    let tokens = float["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(tokens > 0);
    // text-embedding-3-small: $0.02 per 1M input tokens = 20 nano-USD per token.
    assert_eq!(cost, tokens as i64 * 20);
    let row = env.row(&id).await;
    assert_eq!(row["endpoint"], "/v1/embeddings");
    assert_eq!(row["outcome"], "ok");
    assert_eq!(row["usage_source"], "provider");
    assert_eq!(row["input_tokens"], tokens);
    assert_eq!(row["output_tokens"], 0);
    assert_eq!(row["tenant"], "acme");
    assert_eq!(
        nanos(row["effective_cost"].as_str().unwrap()),
        tokens as i64 * 20
    );

    // base64: the same vectors, packed little-endian f32.
    let r = post(
        json!({"model": "text-embedding-3-small", "input": input, "dimensions": 16,
                        "encoding_format": "base64"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let b64: Value = r.json().await.unwrap();
    for (i, d) in b64["data"].as_array().unwrap().iter().enumerate() {
        let bytes = b64decode(d["embedding"].as_str().expect("base64 string"));
        assert_eq!(bytes.len(), 16 * 4);
        let floats: Vec<f64> = bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect();
        let expected: Vec<f64> = data[i]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32 as f64)
            .collect();
        assert_eq!(floats, expected);
    }
    assert_eq!(env.rows("outcome=ok").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_lists_only_what_the_key_may_use() {
    let env = TestEnv::start().await;
    let (limited, _) = env
        .create_key(json!({"name": "limited", "models": ["gpt-4o-mini", "text-embedding-3-small"]}))
        .await;
    let open = env.key().await;
    let ids = |v: &Value| -> Vec<String> {
        let mut ids: Vec<String> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                assert_eq!(m["object"], "model");
                m["id"].as_str().unwrap().to_string()
            })
            .collect();
        ids.sort();
        ids
    };
    let get = |key: &str, path: &str| {
        env.http
            .get(env.url(path))
            .bearer_auth(key.to_string())
            .send()
    };

    let r = get(&limited, "/v1/models").await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(ids(&v), ["gpt-4o-mini", "text-embedding-3-small"]);

    let v: Value = get(&open, "/v1/models")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ids(&v),
        ["custom", "gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]
    );

    let r = get(&limited, "/v1/models/gpt-4o-mini").await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["id"], "gpt-4o-mini");
    assert_eq!(v["object"], "model");
    // Configured but not allowed for this key: 403, as on the completion routes
    // (docs/contracts.md §5 "unknown model: 404; model not allowed for the key: 403").
    let e = expect_error(
        get(&limited, "/v1/models/gpt-4o").await.unwrap(),
        403,
        "model_not_allowed",
    )
    .await;
    assert_eq!(e["param"], "model");
    expect_error(
        get(&open, "/v1/models/nope").await.unwrap(),
        404,
        "model_not_found",
    )
    .await;
    let r = env.http.get(env.url("/v1/models")).send().await.unwrap();
    expect_error(r, 401, "invalid_api_key").await;

    let rows = env.rows("").await;
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r["endpoint"] == "/v1/models"));
    assert_eq!(env.rows("outcome=ok").await.len(), 3);
    assert_eq!(env.rows("outcome=rejected").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics() {
    let env = TestEnv::start().await;
    let r = env.http.get(env.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    let r = env.http.get(env.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ready = r.json::<Value>().await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    // How near the limits the process is: this client's connection is open, the
    // file-descriptor limit was read (and raised) at start-up.
    assert!(
        ready["connections"]["open"].as_i64().unwrap() >= 1,
        "{ready}"
    );
    assert!(
        ready["connections"]["max"].as_u64().unwrap() >= 16,
        "{ready}"
    );
    assert!(
        ready["requests_in_flight"]["max"].as_u64().unwrap() >= 16,
        "{ready}"
    );
    let fds = &ready["file_descriptors"];
    assert!(fds["open"].as_u64().unwrap() > 3, "{ready}");
    assert!(
        fds["limit"].as_u64().unwrap() >= fds["open"].as_u64().unwrap(),
        "{ready}"
    );

    let key = env.key().await;
    let r = env
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = env
        .chat(
            &key,
            json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 404);

    let r = env.http.get(env.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/plain"));
    let text = r.text().await.unwrap();
    assert!(
        text.contains("# TYPE tollgate_requests_total counter"),
        "{text}"
    );
    for (line, want) in [
        (
            r#"tollgate_requests_total{endpoint="/v1/chat/completions",outcome="ok"}"#,
            "1",
        ),
        (
            r#"tollgate_requests_total{endpoint="/v1/chat/completions",outcome="rejected"}"#,
            "1",
        ),
        (
            r#"tollgate_requests_total{endpoint="/v1/chat/completions",outcome="failed"}"#,
            "0",
        ),
        (
            r#"tollgate_requests_total{endpoint="/v1/embeddings",outcome="ok"}"#,
            "0",
        ),
        ("tollgate_requests_in_flight", "0"),
    ] {
        let got = text
            .lines()
            .find_map(|l| l.strip_prefix(line).map(str::trim))
            .unwrap_or_else(|| panic!("no {line} in\n{text}"));
        assert_eq!(got, want, "{line}");
    }
    // The GenAI histograms under the OTLP names' Prometheus spelling, telemetry off: the
    // served request once; the unknown model (no deployment) not at all.
    for family in [
        "gen_ai_client_operation_duration_seconds histogram",
        "gen_ai_client_token_usage histogram",
        "gen_ai_server_time_to_first_token_seconds histogram",
        "tollgate_genai_cost_nano_usd_total counter",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family}")),
            "{family}\n{text}"
        );
    }
    let count = text
        .lines()
        .find(|l| {
            l.starts_with("gen_ai_client_operation_duration_seconds_count{")
                && l.contains(r#"gen_ai_operation_name="chat""#)
                && l.contains(r#"gen_ai_request_model="gpt-4o-mini""#)
        })
        .unwrap_or_else(|| panic!("no duration count in\n{text}"));
    assert!(count.ends_with(" 1"), "{count}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("gen_ai_client_token_usage_bucket{")
                && l.contains(r#"gen_ai_token_type="input""#)),
        "{text}"
    );
    assert!(!text.contains(r#"gen_ai_request_model="nope""#), "{text}");
    // Bounded labels only: never a tenant, key, user or request id.
    for l in text.lines().filter(|l| l.starts_with("gen_ai_")) {
        for banned in ["tenant", "key_id", "user", "request_id"] {
            assert!(!l.contains(banned), "{l}");
        }
    }
}
