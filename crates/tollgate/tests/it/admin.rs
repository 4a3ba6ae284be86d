//! The admin keys API: what a key looks like from the outside, once and afterwards.

use serde_json::{Value, json};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_shown_once_and_never_stored_in_clear() {
    let env = TestEnv::start().await;
    let r = env
        .http
        .post(env.url("/admin/v1/keys"))
        .bearer_auth(MASTER)
        .json(
            &json!({"name": "svc", "tenant": "acme", "team": "core", "models": ["gpt-4o-mini"],
                      "allow_tenant_header": true, "allowed_tenants": ["a", "b"],
                      "metadata": {"owner": "ops"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    let mut fields: Vec<&str> = created
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "allow_route_override",
            "allow_tenant_header",
            "allowed_tenants",
            "created_at",
            "expires_at",
            "id",
            "key",
            "key_prefix",
            "metadata",
            "models",
            "name",
            "revoked_at",
            "team",
            "tenant"
        ]
    );
    assert!(key.starts_with(created["key_prefix"].as_str().unwrap()));
    assert!(key.len() > created["key_prefix"].as_str().unwrap().len() + 16);
    assert_eq!(created["models"], json!(["gpt-4o-mini"]));
    assert_eq!(created["allowed_tenants"], json!(["a", "b"]));
    assert_eq!(created["metadata"], json!({"owner": "ops"}));
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(created["revoked_at"].is_null());

    // Afterwards: the same view without the key.
    let got = env.admin_get(&format!("/admin/v1/keys/{id}")).await;
    let mut expected = created.clone();
    expected.as_object_mut().unwrap().remove("key");
    assert_eq!(got, expected);
    let list = env.admin_get("/admin/v1/keys").await;
    assert_eq!(list["data"], json!([expected]));
    let text = serde_json::to_string(&list).unwrap() + &serde_json::to_string(&got).unwrap();
    assert!(!text.contains(&key));
    assert!(!text.contains("hash"));
    // Nor in the database.
    let stored = env.store().get_key(&id).unwrap();
    assert_ne!(stored.key_hash, key);
    assert!(!stored.key_hash.contains(&key));

    // Unknown id, duplicate active name, bad JSON.
    let r = env
        .http
        .get(env.url("/admin/v1/keys/key_nope"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "not_found").await;
    let r = env
        .http
        .post(env.url("/admin/v1/keys"))
        .bearer_auth(MASTER)
        .json(&json!({"name": "svc"}))
        .send()
        .await
        .unwrap();
    expect_error(r, 409, "conflict").await;
    let r = env
        .http
        .post(env.url("/admin/v1/keys"))
        .bearer_auth(MASTER)
        .header("content-type", "application/json")
        .body("{\"name\":")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "invalid_json").await;

    // Revoked keys are listed only on request, with their revocation time; the name is free
    // again.
    let r = env
        .http
        .delete(env.url(&format!("/admin/v1/keys/{id}")))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(env.admin_get("/admin/v1/keys").await["data"], json!([]));
    let all = env.admin_get("/admin/v1/keys?include_revoked=true").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 1);
    assert!(
        all["data"][0]["revoked_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let (again, _) = env.create_key(json!({"name": "svc"})).await;
    assert_ne!(again, key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_are_refused() {
    let env = TestEnv::start().await;
    let (key, id) = env
        .create_key(json!({"name": "old", "expires_at_ms": 1_000_000_000_000i64}))
        .await;
    assert_eq!(
        env.admin_get(&format!("/admin/v1/keys/{id}")).await["expires_at"],
        "2001-09-09T01:46:40Z"
    );
    let r = env
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    let id = header(&r, "x-tollgate-request-id").to_string();
    expect_error(r, 401, "invalid_api_key").await;
    assert_eq!(env.row(&id).await["outcome"], "rejected");
    // A key expiring in the future works.
    let far = jiff::Timestamp::now().as_millisecond() + 3_600_000;
    let (key, _) = env
        .create_key(json!({"name": "new", "expires_at_ms": far}))
        .await;
    let r = env
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
}
