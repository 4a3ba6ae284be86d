//! Client-facing errors: OpenAI shape, status, code, and (on data-plane routes) a ledger row.

use serde_json::{Value, json};

use crate::harness::*;

fn hi(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

/// The row of a rejected request, found by the request id the error response carried.
async fn rejected_row(env: &TestEnv, request_id: &str, status: u16, code: &str) -> Value {
    let row = env.row(request_id).await;
    assert_eq!(row["status"], status, "{row}");
    assert_eq!(row["outcome"], "rejected", "{row}");
    assert_eq!(row["error_code"], code, "{row}");
    assert_eq!(row["usage_source"], "none", "{row}");
    assert_eq!(row["effective_cost"], "0", "{row}");
    row
}

async fn post_raw(
    env: &TestEnv,
    key: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut req = env
        .http
        .post(env.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.unwrap()
}

/// Sends, checks the error, and checks its ledger row.
async fn check(env: &TestEnv, resp: reqwest::Response, status: u16, code: &str) -> (Value, Value) {
    let id = header(&resp, "x-tollgate-request-id").to_string();
    let err = expect_error(resp, status, code).await;
    let row = rejected_row(env, &id, status, code).await;
    (err, row)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_errors_and_revocation() {
    let env = TestEnv::start().await;
    let (key, key_id) = env
        .create_key(json!({"name": "soon-revoked", "tenant": "acme"}))
        .await;

    // Missing key.
    let (err, row) = check(
        &env,
        post_raw(&env, None, hi("gpt-4o-mini").to_string()).await,
        401,
        "invalid_api_key",
    )
    .await;
    assert_eq!(err["type"], "invalid_request_error");
    assert!(row["key_id"].is_null());
    // Wrong key, in both accepted headers.
    check(
        &env,
        post_raw(
            &env,
            Some("tg-not-a-real-key"),
            hi("gpt-4o-mini").to_string(),
        )
        .await,
        401,
        "invalid_api_key",
    )
    .await;
    let r = env
        .http
        .post(env.url("/v1/chat/completions"))
        .header("x-api-key", "tg-wrong")
        .json(&hi("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    check(&env, r, 401, "invalid_api_key").await;
    // x-api-key works for a good key.
    let r = env
        .http
        .post(env.url("/v1/chat/completions"))
        .header("x-api-key", &key)
        .json(&hi("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(env.chat(&key, hi("gpt-4o-mini")).await.status(), 200);

    // Revocation takes effect on the very next request.
    let r = env
        .http
        .delete(env.url(&format!("/admin/v1/keys/{key_id}")))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"id": key_id, "object": "key", "deleted": true})
    );
    let (err, _) = check(
        &env,
        env.chat(&key, hi("gpt-4o-mini")).await,
        401,
        "invalid_api_key",
    )
    .await;
    assert!(!err["message"].as_str().unwrap().contains(&key));
    // Revoking twice: 404.
    let r = env
        .http
        .delete(env.url(&format!("/admin/v1/keys/{key_id}")))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "not_found").await;

    assert_eq!(env.rows("outcome=rejected").await.len(), 4);
    assert_eq!(env.rows("outcome=ok").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_errors() {
    let env = TestEnv::with(Opts {
        max_body_bytes: Some(4096),
        ..Opts::default()
    })
    .await;
    let (limited, _) = env
        .create_key(json!({"name": "mini-only", "models": ["gpt-4o-mini"]}))
        .await;
    let key = env.key().await;

    // Invalid JSON.
    let (err, _) = check(
        &env,
        post_raw(&env, Some(&key), "{\"model\": ").await,
        400,
        "invalid_json",
    )
    .await;
    assert_eq!(err["type"], "invalid_request_error");
    check(
        &env,
        post_raw(&env, Some(&key), "").await,
        400,
        "invalid_json",
    )
    .await;
    check(
        &env,
        post_raw(&env, Some(&key), "[1,2]").await,
        400,
        "invalid_json",
    )
    .await;

    // Missing messages: 400 naming the parameter.
    let (err, row) = check(
        &env,
        env.chat(&key, json!({"model": "gpt-4o-mini"})).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(err["param"], "messages");
    assert_eq!(row["tenant"], "acme");
    let (err, _) = check(
        &env,
        env.chat(
            &key,
            json!({"messages": [{"role": "user", "content": "x"}]}),
        )
        .await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(err["param"], "model");

    // Body over server.max_body_bytes (4096).
    let big = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x".repeat(5000)}]});
    let (err, _) = check(&env, env.chat(&key, big).await, 413, "request_too_large").await;
    assert!(err["message"].as_str().unwrap().contains("4096"), "{err}");
    // Just under the limit is fine.
    let fits = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x".repeat(3900)}]});
    assert!(fits.to_string().len() < 4096);
    assert_eq!(env.chat(&key, fits).await.status(), 200);

    // Unknown model → 404; not allowed for the key → 403.
    let (err, row) = check(
        &env,
        env.chat(&key, hi("gpt-9")).await,
        404,
        "model_not_found",
    )
    .await;
    assert_eq!(err["param"], "model");
    assert!(err["message"].as_str().unwrap().contains("gpt-9"));
    assert_eq!(row["requested_model"], "gpt-9");
    let (err, _) = check(
        &env,
        env.chat(&limited, hi("gpt-4o")).await,
        403,
        "model_not_allowed",
    )
    .await;
    assert_eq!(err["type"], "permission_error");
    assert_eq!(env.chat(&limited, hi("gpt-4o-mini")).await.status(), 200);

    // An upstream model with no price (fail-closed): 400 naming the model, nothing sent upstream.
    let before = env.sim.stats().chat_completions;
    let (err, row) = check(
        &env,
        env.chat(&key, hi("custom")).await,
        400,
        "model_not_priced",
    )
    .await;
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("custom") && msg.contains("my-custom-llm"),
        "{msg}"
    );
    assert_eq!(row["error_origin"], "gateway");
    assert_eq!(env.sim.stats().chat_completions, before);

    assert_eq!(env.rows("outcome=ok").await.len(), 2);
    assert_eq!(env.rows("outcome=rejected").await.len(), 9);
    assert_eq!(env.rows("").await.len(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpriced_model_allowed_is_served_and_flagged() {
    let env = TestEnv::with(Opts {
        allow_unpriced: true,
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    let r = env.chat(&key, hi("custom")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-tollgate-served-model"), "my-custom-llm");
    assert_eq!(header(&r, "x-tollgate-cost-usd"), "0");
    let id = header(&r, "x-tollgate-request-id").to_string();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["model"], "my-custom-llm");
    let row = env.row(&id).await;
    assert_eq!(row["unpriced"], true);
    assert_eq!(row["outcome"], "ok");
    assert!(row["price_version"].is_null());
    assert_eq!(row["effective_cost"], "0");
    // Tokens are still recorded, so the spend can be priced later.
    assert_eq!(row["output_tokens"], v["usage"]["completion_tokens"]);
    assert_eq!(row["input_tokens"], v["usage"]["prompt_tokens"]);
    // Priced models are still priced.
    let r = env.chat(&key, hi("gpt-4o-mini")).await;
    let id = header(&r, "x-tollgate-request-id").to_string();
    assert_eq!(env.row(&id).await["unpriced"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_and_admin_errors() {
    let env = TestEnv::start().await;
    let key = env.key().await;

    let r = env
        .http
        .get(env.url("/v1/nope"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "not_found").await;
    let r = env.http.post(env.url("/")).send().await.unwrap();
    expect_error(r, 404, "not_found").await;
    let r = env
        .http
        .get(env.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    expect_error(r, 405, "method_not_allowed").await;
    let r = env
        .http
        .delete(env.url("/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    expect_error(r, 405, "method_not_allowed").await;

    for path in ["/admin/v1/keys", "/admin/v1/spend", "/admin/v1/requests"] {
        let r = env.http.get(env.url(path)).send().await.unwrap();
        expect_error(r, 401, "invalid_api_key").await;
        let r = env
            .http
            .get(env.url(path))
            .bearer_auth("wrong-master")
            .send()
            .await
            .unwrap();
        expect_error(r, 401, "invalid_api_key").await;
        // A virtual key is not the master key.
        let r = env
            .http
            .get(env.url(path))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        expect_error(r, 401, "invalid_api_key").await;
    }
    let r = env
        .http
        .post(env.url("/admin/v1/keys"))
        .bearer_auth("wrong-master")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "invalid_api_key").await;
    let keys = env.admin_get("/admin/v1/keys").await;
    assert_eq!(keys["data"].as_array().unwrap().len(), 1);

    // Bad admin input is a 400 naming the parameter.
    let r = env
        .http
        .post(env.url("/admin/v1/keys"))
        .bearer_auth(MASTER)
        .json(&json!({"name": "x", "models": ["no-such-model"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_error(r, 400, "invalid_request").await["param"],
        "models"
    );
    let r = env
        .http
        .get(env.url("/admin/v1/requests?outcome=bogus"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_error(r, 400, "invalid_request").await["param"],
        "outcome"
    );

    // Routes outside the data plane (unknown routes, admin) leave no ledger rows: the ledger
    // records requests to data-plane routes (LedgerRow docs), and none was made here.
    assert_eq!(env.rows("").await.len(), 0);
}
