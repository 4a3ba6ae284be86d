//! The admin API: what a key looks like from the outside, once and afterwards; the one list
//! shape with keyset pagination, the one delete shape and the guard, on every resource.

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
            "rotated_to",
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

async fn call(env: &TestEnv, m: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = env.http.request(m, env.url(path)).bearer_auth(MASTER);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Every page of `path` with `limit`, following `next_cursor`: the items' `field`.
async fn all_pages(env: &TestEnv, path: &str, limit: usize, field: &str) -> Vec<String> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{path}{sep}limit={limit}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = env.admin_get(&url).await;
        let mut keys: Vec<&str> = page
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["data", "next_cursor", "object"], "{url}: {page}");
        assert_eq!(page["object"], "list");
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= limit, "{url}: {page}");
        out.extend(data.iter().map(|d| d[field].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(data.len(), limit, "a short page before the last: {page}");
                cursor = Some(c.to_string());
            }
            None => break,
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_collection_has_one_list_shape_and_every_delete_one_answer() {
    use reqwest::Method;
    let mut env = TestEnv::start().await;
    // Created out of name order: lists are in their documented order, not insertion order.
    let names = ["delta", "alpha", "echo", "charlie", "bravo"];
    let mut key_ids = Vec::new();
    let mut token_ids = Vec::new();
    for n in names {
        let budget = json!({"name": n, "scope": {"tenant": n}, "limit_usd": "5",
                            "window": "month", "mode": "hard"});
        assert_eq!(
            call(&env, Method::POST, "/admin/v1/budgets", Some(budget))
                .await
                .0,
            201
        );
        let policy = json!({"name": n, "scope": {"tenant": n}, "budget": n, "mode": "shadow",
                            "steps": [{"when": {"utilization_pct": 50}, "then": ["block"]}]});
        assert_eq!(
            call(&env, Method::POST, "/admin/v1/policies", Some(policy))
                .await
                .0,
            201
        );
        key_ids.push(env.create_key(json!({"name": n})).await.1);
        let (st, token) = call(
            &env,
            Method::POST,
            "/admin/v1/tokens",
            Some(json!({"name": n, "role": "viewer"})),
        )
        .await;
        assert_eq!(st, 201, "{token}");
        token_ids.push(token["id"].as_str().unwrap().to_string());
    }
    let mut sorted: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    sorted.sort();
    for limit in [1, 2, 5, 7] {
        assert_eq!(
            all_pages(&env, "/admin/v1/budgets", limit, "name").await,
            sorted
        );
        assert_eq!(
            all_pages(&env, "/admin/v1/policies", limit, "name").await,
            sorted
        );
        // Keys and tokens: oldest first.
        assert_eq!(
            all_pages(&env, "/admin/v1/keys", limit, "id").await,
            key_ids
        );
        assert_eq!(
            all_pages(&env, "/admin/v1/tokens", limit, "id").await,
            token_ids
        );
    }
    // Requests and deployments page the same way.
    let key = env.key().await;
    for _ in 0..3 {
        let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]});
        assert_eq!(env.chat(&key, body).await.status(), 200);
    }
    let ids = all_pages(&env, "/admin/v1/requests", 2, "request_id").await;
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let deployments = all_pages(&env, "/admin/v1/deployments", 1, "deployment").await;
    assert_eq!(
        deployments.len(),
        all_pages(&env, "/admin/v1/deployments", 100, "deployment")
            .await
            .len()
    );
    assert!(!deployments.is_empty());
    let decisions = env.admin_get("/admin/v1/policies/decisions?limit=1").await;
    assert_eq!(decisions["object"], "list");
    assert!(decisions.get("next_cursor").is_some(), "{decisions}");

    // A page survives the deletion of the item its cursor names.
    let first = env.admin_get("/admin/v1/budgets?limit=2").await;
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    assert_eq!(
        call(&env, Method::DELETE, "/admin/v1/budgets/bravo", None).await,
        (
            200,
            json!({"id": "bravo", "object": "budget", "deleted": true})
        )
    );
    let next = env
        .admin_get(&format!("/admin/v1/budgets?limit=2&cursor={cursor}"))
        .await;
    let names: Vec<&str> = next["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["charlie", "delta"]);

    // One delete answer for every resource; a second delete is a 404 from the table.
    for (path, object, id) in [
        ("/admin/v1/policies/alpha", "policy", "alpha"),
        ("/admin/v1/budgets/alpha", "budget", "alpha"),
        (
            &format!("/admin/v1/keys/{}", key_ids[0]) as &str,
            "key",
            key_ids[0].as_str(),
        ),
        (
            &format!("/admin/v1/tokens/{}", token_ids[0]) as &str,
            "token",
            token_ids[0].as_str(),
        ),
    ] {
        assert_eq!(
            call(&env, Method::DELETE, path, None).await,
            (200, json!({"id": id, "object": object, "deleted": true})),
            "{path}"
        );
        let (st, v) = call(&env, Method::DELETE, path, None).await;
        assert_eq!(st, 404, "{path}: {v}");
        assert_eq!(v["error"]["code"], "not_found");
    }
    // Deleted from the store as well as from memory: a restart agrees with the lists.
    env.restart().await;
    let expect: Vec<String> = ["charlie", "delta", "echo"].map(String::from).to_vec();
    assert_eq!(
        all_pages(&env, "/admin/v1/budgets", 2, "name").await,
        expect
    );
    let expect: Vec<String> = ["bravo", "charlie", "delta", "echo"]
        .map(String::from)
        .to_vec();
    assert_eq!(
        all_pages(&env, "/admin/v1/policies", 3, "name").await,
        expect
    );

    // Bad page parameters are refused naming the parameter.
    for (q, param) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=x", "limit"),
        ("cursor=zz", "cursor"),
    ] {
        for path in [
            "/admin/v1/keys",
            "/admin/v1/tokens",
            "/admin/v1/budgets",
            "/admin/v1/policies",
            "/admin/v1/policies/decisions",
            "/admin/v1/requests",
            "/admin/v1/deployments",
            "/admin/v1/audit",
        ] {
            let (st, v) = call(&env, Method::GET, &format!("{path}?{q}"), None).await;
            assert_eq!(st, 400, "{path}?{q}: {v}");
            assert_eq!(v["error"]["param"], param, "{path}?{q}: {v}");
        }
    }

    // The guard: every admin route, every method, refuses a missing or wrong credential with
    // the table's 401 before the handler runs (nothing is created).
    for (m, p) in [
        (Method::GET, "/admin/v1/keys"),
        (Method::POST, "/admin/v1/keys"),
        (Method::GET, "/admin/v1/keys/x"),
        (Method::DELETE, "/admin/v1/keys/x"),
        (Method::POST, "/admin/v1/keys/x/rotate"),
        (Method::GET, "/admin/v1/tokens"),
        (Method::POST, "/admin/v1/tokens"),
        (Method::GET, "/admin/v1/tokens/x"),
        (Method::DELETE, "/admin/v1/tokens/x"),
        (Method::GET, "/admin/v1/audit"),
        (Method::GET, "/admin/v1/budgets"),
        (Method::POST, "/admin/v1/budgets"),
        (Method::PATCH, "/admin/v1/budgets/echo"),
        (Method::DELETE, "/admin/v1/budgets/echo"),
        (Method::GET, "/admin/v1/deployments"),
        (Method::GET, "/admin/v1/spend"),
        (Method::GET, "/admin/v1/requests"),
        (Method::GET, "/admin/v1/policies/decisions"),
    ] {
        for auth in [None, Some("wrong")] {
            let mut req = env
                .http
                .request(m.clone(), env.url(p))
                .json(&json!({"name": "x"}));
            if let Some(a) = auth {
                req = req.bearer_auth(a);
            }
            expect_error(req.send().await.unwrap(), 401, "invalid_api_key").await;
        }
    }
    assert_eq!(
        env.admin_get("/admin/v1/budgets/echo").await["name"],
        "echo"
    );
}
