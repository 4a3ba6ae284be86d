//! Attribution: who a request is billed to lands in its ledger row.

use serde_json::{Value, json};

use crate::harness::*;

fn hi() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
}

async fn send(
    env: &TestEnv,
    key: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> reqwest::Response {
    let mut req = env
        .http
        .post(env.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_header_needs_a_key_that_allows_it() {
    let env = TestEnv::start().await;
    let (saas, saas_id) = env
        .create_key(
            json!({"name": "saas", "team": "platform", "allow_tenant_header": true,
                           "allowed_tenants": ["initech", "umbrella"]}),
        )
        .await;
    let (fixed, _) = env
        .create_key(json!({"name": "fixed", "tenant": "acme", "team": "growth"}))
        .await;

    // Allowed: the header's tenant lands in the row, the key's team too.
    let r = send(&env, &saas, &[("x-tollgate-tenant", "initech")], hi()).await;
    assert_eq!(r.status(), 200);
    let row = env.row(header(&r, "x-tollgate-request-id")).await;
    assert_eq!(row["tenant"], "initech");
    assert_eq!(row["team"], "platform");
    assert_eq!(row["key_id"], saas_id.as_str());
    assert_eq!(row["key_name"], "saas");

    // Streams too.
    let mut body = hi();
    body["stream"] = json!(true);
    let r = send(&env, &saas, &[("x-tollgate-tenant", "umbrella")], body).await;
    let id = header(&r, "x-tollgate-request-id").to_string();
    read_stream(r).await;
    assert_eq!(env.row(&id).await["tenant"], "umbrella");

    // Not in allowed_tenants: 400 naming the header.
    let r = send(&env, &saas, &[("x-tollgate-tenant", "globex")], hi()).await;
    let id = header(&r, "x-tollgate-request-id").to_string();
    let e = expect_error(r, 400, "invalid_request").await;
    assert_eq!(e["param"], "x-tollgate-tenant");
    assert_eq!(env.row(&id).await["outcome"], "rejected");

    // A key without allow_tenant_header: 400 naming the header, row rejected.
    let r = send(&env, &fixed, &[("x-tollgate-tenant", "globex")], hi()).await;
    let id = header(&r, "x-tollgate-request-id").to_string();
    let e = expect_error(r, 400, "invalid_request").await;
    assert_eq!(e["param"], "x-tollgate-tenant");
    assert!(
        e["message"].as_str().unwrap().contains("x-tollgate-tenant"),
        "{e}"
    );
    let row = env.row(&id).await;
    assert_eq!(row["outcome"], "rejected");
    assert_eq!(row["status"], 400);
    assert_eq!(row["key_name"], "fixed");
    // Without the header the key's own tenant applies.
    let r = send(&env, &fixed, &[], hi()).await;
    let row = env.row(header(&r, "x-tollgate-request-id")).await;
    assert_eq!(row["tenant"], "acme");
    assert_eq!(row["team"], "growth");

    // A SaaS key used without the header: unattributed, reported as such.
    let r = send(&env, &saas, &[], hi()).await;
    let row = env.row(header(&r, "x-tollgate-request-id")).await;
    assert!(row["tenant"].is_null());
    // That one, and the SaaS key's rejected request (its tenant header was refused).
    let unattributed = env.rows("tenant=(unattributed)").await;
    assert_eq!(unattributed.len(), 2);
    assert_eq!(
        unattributed
            .iter()
            .filter(|r| r["outcome"] == "rejected")
            .count(),
        1
    );
    let spend = env.admin_get("/admin/v1/spend?group_by=tenant").await;
    let tenants: Vec<&str> = spend["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["tenant"].as_str().unwrap())
        .collect();
    let mut sorted = tenants.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["(unattributed)", "acme", "initech", "umbrella"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_user_tags_and_body_user_land_in_the_row() {
    let env = TestEnv::start().await;
    let key = env.key().await;

    let r = send(
        &env,
        &key,
        &[
            ("x-tollgate-feature", "search"),
            ("x-tollgate-user", "u-42"),
            ("x-tollgate-tags", "env=prod, region=eu,beta"),
        ],
        hi(),
    )
    .await;
    assert_eq!(r.status(), 200);
    let row = env.row(header(&r, "x-tollgate-request-id")).await;
    assert_eq!(row["feature"], "search");
    assert_eq!(row["user"], "u-42");
    assert_eq!(
        row["tags"],
        json!({"env": "prod", "region": "eu", "beta": "true"})
    );
    assert_eq!(row["tenant"], "acme");

    // From the body: `user` and `metadata` (feature + tags).
    let mut body = hi();
    body["user"] = json!("body-user-7");
    body["metadata"] = json!({"feature": "summarize", "campaign": "spring"});
    let r = send(&env, &key, &[], body.clone()).await;
    assert_eq!(r.status(), 200);
    let row = env.row(header(&r, "x-tollgate-request-id")).await;
    assert_eq!(row["user"], "body-user-7");
    assert_eq!(row["feature"], "summarize");
    assert_eq!(row["tags"], json!({"campaign": "spring"}));

    // Headers win over the body.
    let r = send(
        &env,
        &key,
        &[
            ("x-tollgate-user", "header-user"),
            ("x-tollgate-feature", "chat"),
            ("x-tollgate-tags", "campaign=fall"),
        ],
        body,
    )
    .await;
    let row = env.row(header(&r, "x-tollgate-request-id")).await;
    assert_eq!(row["user"], "header-user");
    assert_eq!(row["feature"], "chat");
    assert_eq!(row["tags"], json!({"campaign": "fall"}));

    // Filters and reports by these dimensions.
    assert_eq!(env.rows("feature=search").await.len(), 1);
    assert_eq!(env.rows("user=body-user-7").await.len(), 1);
    let spend = env.admin_get("/admin/v1/spend?group_by=feature,user").await;
    assert_eq!(spend["data"].as_array().unwrap().len(), 3);

    // An invalid attribution value is a 400 naming the header.
    let r = send(
        &env,
        &key,
        &[("x-tollgate-feature", &"f".repeat(200))],
        hi(),
    )
    .await;
    let e = expect_error(r, 400, "invalid_request").await;
    assert_eq!(e["param"], "x-tollgate-feature");
}

/// A request refused after its key was resolved is still attributed to the key's tenant and
/// team, on every data-plane route alike (spend and request counts per tenant include it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_requests_keep_the_keys_attribution_on_every_route() {
    let env = TestEnv::start().await;
    let key = env.key().await; // tenant acme, team core
    for path in ["/v1/chat/completions", "/v1/embeddings"] {
        for (body, status, code) in [
            ("{not json", 400, "invalid_json"),
            (
                r#"{"model": "gpt-9", "messages": [{"role": "user", "content": "x"}], "input": "x"}"#,
                404,
                "model_not_found",
            ),
        ] {
            let r = env
                .http
                .post(env.url(path))
                .bearer_auth(&key)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let id = header(&r, "x-tollgate-request-id").to_string();
            expect_error(r, status, code).await;
            let row = env.row(&id).await;
            assert_eq!(row["endpoint"], path);
            assert_eq!(row["outcome"], "rejected");
            assert_eq!(row["key_name"], "test", "{path}: {row}");
            assert_eq!(row["tenant"], "acme", "{path}: {row}");
            assert_eq!(row["team"], "core", "{path}: {row}");
        }
    }
    assert_eq!(env.rows("tenant=acme&outcome=rejected").await.len(), 4);
}
