//! The audit trail (`GET /admin/v1/audit`) and key rotation (`POST /admin/v1/keys/{id}/rotate`)
//! over real HTTP: every admin change leaves exactly one entry — who, when, what, before and
//! after, from which address — and never a secret; rotation hands out a new key at once and
//! lets the old one work out its grace period.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_store::{Actor, AuditFilter};

use crate::harness::*;

async fn call(env: &TestEnv, m: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = env.http.request(m, env.url(path)).bearer_auth(MASTER);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Every audit entry matching `query`, newest first, following the cursor.
async fn audit(env: &TestEnv, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = format!("/admin/v1/audit?limit=1000&{query}");
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let page = env.admin_get(&q).await;
        assert_eq!(page["object"], "list", "{page}");
        out.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

/// The one entry a change added (asserting it added exactly one).
async fn one_new_entry(env: &TestEnv, before: usize) -> Value {
    let all = audit(env, "").await;
    assert_eq!(all.len(), before + 1, "exactly one new entry: {all:#?}");
    all[0].clone()
}

fn assert_entry(e: &Value, action: &str, resource: &str) {
    assert_eq!(e["object"], "audit_entry", "{e}");
    assert_eq!(e["action"], action, "{e}");
    assert_eq!(e["resource_id"], resource, "{e}");
    assert_eq!(e["actor"], json!({"kind": "master"}), "{e}");
    let addr: SocketAddr = e["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address: {e}"))
        .parse()
        .unwrap();
    assert!(addr.ip().is_loopback(), "{e}");
    assert!(e["at"].as_str().unwrap().ends_with('Z'), "{e}");
    let now = jiff::Timestamp::now().as_millisecond();
    let at = e["at_ms"].as_i64().unwrap();
    assert!(at <= now && at > now - 60_000, "{e}");
}

/// A key's public view without the `key` (what GET answers).
fn public(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("key");
    v.as_object_mut().unwrap().remove("previous");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_change_leaves_one_audit_entry() {
    let env = TestEnv::start().await;
    assert!(audit(&env, "").await.is_empty());

    // key.create: no before, the public view after.
    let (st, created) = call(
        &env,
        Method::POST,
        "/admin/v1/keys",
        Some(json!({"name": "svc", "tenant": "acme", "team": "core",
                    "metadata": {"owner": "ops"}})),
    )
    .await;
    assert_eq!(st, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let e = one_new_entry(&env, 0).await;
    assert_entry(&e, "key.create", &id);
    assert_eq!(e["before"], Value::Null);
    assert_eq!(e["after"], public(created.clone()));

    // Reads and refused changes leave nothing.
    env.admin_get("/admin/v1/keys").await;
    env.admin_get(&format!("/admin/v1/keys/{id}")).await;
    let (st, _) = call(
        &env,
        Method::POST,
        "/admin/v1/keys",
        Some(json!({"name": "svc"})),
    )
    .await;
    assert_eq!(st, 409);
    let (st, _) = call(&env, Method::DELETE, "/admin/v1/keys/key_nope", None).await;
    assert_eq!(st, 404);
    assert_eq!(audit(&env, "").await.len(), 1);

    // key.rotate: the old key before and after (rotated to the successor, expiring).
    let (st, rotated) = call(
        &env,
        Method::POST,
        &format!("/admin/v1/keys/{id}/rotate"),
        Some(json!({"grace_secs": 600})),
    )
    .await;
    assert_eq!(st, 201, "{rotated}");
    let next_id = rotated["id"].as_str().unwrap().to_string();
    let e = one_new_entry(&env, 1).await;
    assert_entry(&e, "key.rotate", &id);
    assert_eq!(e["before"], public(created.clone()));
    let old_now = env.admin_get(&format!("/admin/v1/keys/{id}")).await;
    assert_eq!(e["after"], old_now);
    assert_eq!(e["after"]["rotated_to"], next_id.as_str());
    assert_eq!(rotated["previous"], old_now);

    // key.revoke: before and after.
    let before = env.admin_get(&format!("/admin/v1/keys/{next_id}")).await;
    let (st, _) = call(
        &env,
        Method::DELETE,
        &format!("/admin/v1/keys/{next_id}"),
        None,
    )
    .await;
    assert_eq!(st, 200);
    let e = one_new_entry(&env, 2).await;
    assert_entry(&e, "key.revoke", &next_id);
    assert_eq!(e["before"], before);
    let after = env.admin_get(&format!("/admin/v1/keys/{next_id}")).await;
    assert!(after["revoked_at"].is_string());
    assert_eq!(e["after"], after);

    // budget.create / update / delete: the definition before and after.
    let budget = json!({"name": "acme-month", "scope": {"tenant": "acme"}, "limit_usd": "5",
                        "window": "month", "mode": "hard"});
    let (st, v) = call(&env, Method::POST, "/admin/v1/budgets", Some(budget)).await;
    assert_eq!(st, 201, "{v}");
    let e = one_new_entry(&env, 3).await;
    assert_entry(&e, "budget.create", "acme-month");
    assert_eq!(e["before"], Value::Null);
    assert_eq!(e["after"]["limit_usd"], "5", "{e}");
    let created_def = e["after"].clone();
    let (st, v) = call(
        &env,
        Method::PATCH,
        "/admin/v1/budgets/acme-month",
        Some(json!({"limit_usd": "7"})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let e = one_new_entry(&env, 4).await;
    assert_entry(&e, "budget.update", "acme-month");
    assert_eq!(e["before"], created_def);
    assert_eq!(e["after"]["limit_usd"], "7", "{e}");
    let updated_def = e["after"].clone();

    // policy.create / update / delete. An alert webhook (often a credential itself) is
    // recorded as its origin and a fingerprint only.
    let hook = "https://hooks.example.com/services/T0/B0/webhook-token-s3cr3t";
    let policy = json!({"name": "ladder", "scope": {"tenant": "acme"}, "budget": "acme-month",
                        "mode": "shadow",
                        "steps": [{"when": {"utilization_pct": 50},
                                   "then": [{"alert": {"webhook": hook}}, "block"]}]});
    let (st, v) = call(&env, Method::POST, "/admin/v1/policies", Some(policy)).await;
    assert_eq!(st, 201, "{v}");
    let e = one_new_entry(&env, 5).await;
    assert_entry(&e, "policy.create", "ladder");
    assert_eq!(e["before"], Value::Null);
    assert_eq!(e["after"]["mode"], "shadow", "{e}");
    assert!(!e.to_string().contains("s3cr3t"), "{e}");
    let masked = e["after"]["steps"][0]["then"][0]["alert"]["webhook"]
        .as_str()
        .unwrap_or_else(|| panic!("{e}"));
    assert!(
        masked.starts_with("https://hooks.example.com/… (sha256 "),
        "{masked}"
    );
    let (st, v) = call(
        &env,
        Method::PATCH,
        "/admin/v1/policies/ladder",
        Some(json!({"mode": "enforce"})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let e = one_new_entry(&env, 6).await;
    assert_entry(&e, "policy.update", "ladder");
    assert_eq!(e["before"]["mode"], "shadow", "{e}");
    assert_eq!(e["after"]["mode"], "enforce", "{e}");
    let (st, _) = call(&env, Method::DELETE, "/admin/v1/policies/ladder", None).await;
    assert_eq!(st, 200);
    let e = one_new_entry(&env, 7).await;
    assert_entry(&e, "policy.delete", "ladder");
    assert_eq!(e["before"]["mode"], "enforce", "{e}");
    assert_eq!(e["after"], Value::Null);

    let (st, _) = call(&env, Method::DELETE, "/admin/v1/budgets/acme-month", None).await;
    assert_eq!(st, 200);
    let e = one_new_entry(&env, 8).await;
    assert_entry(&e, "budget.delete", "acme-month");
    assert_eq!(e["before"], updated_def);
    assert_eq!(e["after"], Value::Null);

    // A refused definition leaves nothing either.
    let (st, _) = call(
        &env,
        Method::POST,
        "/admin/v1/budgets",
        Some(json!({"name": "bad", "limit_usd": "-1", "window": "month"})),
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(audit(&env, "").await.len(), 9);

    // The entries are in the store's append-only table, ids newest first.
    let stored = env
        .store()
        .list_audit(&AuditFilter::default(), 100)
        .unwrap();
    assert_eq!(stored.len(), 9);
    let listed: Vec<i64> = audit(&env, "")
        .await
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, stored.iter().map(|r| r.id).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_entry_names_the_clients_socket_address() {
    let env = TestEnv::start().await;
    // One request on a socket whose local address we know.
    let mut tcp = tokio::net::TcpStream::connect(env.gw.addr).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let body = r#"{"name":"raw"}"#;
    let req = format!(
        "POST /admin/v1/keys HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {MASTER}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let entries = audit(&env, "action=key.create").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["address"], local.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_holds_no_secret() {
    let env = TestEnv::with(Opts {
        provider_auth: true,
        ..Opts::default()
    })
    .await;
    let mut plaintexts = Vec::new();
    let mut ids = Vec::new();
    for n in ["a", "b"] {
        let (key, id) = env
            .create_key(json!({"name": n, "tenant": "acme", "metadata": {"n": n}}))
            .await;
        plaintexts.push(key);
        ids.push(id);
    }
    let (st, rotated) = call(
        &env,
        Method::POST,
        &format!("/admin/v1/keys/{}/rotate", ids[0]),
        None,
    )
    .await;
    assert_eq!(st, 201);
    plaintexts.push(rotated["key"].as_str().unwrap().to_string());
    ids.push(rotated["id"].as_str().unwrap().to_string());
    let (st, _) = call(
        &env,
        Method::DELETE,
        &format!("/admin/v1/keys/{}", ids[1]),
        None,
    )
    .await;
    assert_eq!(st, 200);
    let text = serde_json::to_string(&audit(&env, "").await).unwrap();
    assert_eq!(audit(&env, "").await.len(), 4);
    for k in &plaintexts {
        assert!(!text.contains(k.as_str()), "a key in the audit trail");
    }
    let store = env.store();
    for id in &ids {
        let hash = store.get_key(id).unwrap().key_hash;
        assert!(!text.contains(&hash), "a key hash in the audit trail");
    }
    assert!(!text.contains("key_hash"));
    assert!(!text.contains("hash"));
    assert!(!text.contains(MASTER));
    assert!(!text.contains(SIM_KEY));
    // The same holds for the table itself, read directly.
    let raw = format!(
        "{:?}",
        store.list_audit(&AuditFilter::default(), 100).unwrap()
    );
    for k in &plaintexts {
        assert!(!raw.contains(k.as_str()));
    }
    assert!(!raw.contains("key_hash"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_filters_and_pages() {
    let env = TestEnv::start().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(env.create_key(json!({"name": format!("k{i}")})).await.1);
    }
    let (st, _) = call(
        &env,
        Method::DELETE,
        &format!("/admin/v1/keys/{}", ids[2]),
        None,
    )
    .await;
    assert_eq!(st, 200);
    let budget = json!({"name": "b", "scope": {}, "limit_usd": "1", "window": "day",
                        "mode": "soft"});
    assert_eq!(
        call(&env, Method::POST, "/admin/v1/budgets", Some(budget))
            .await
            .0,
        201
    );
    let all = audit(&env, "").await;
    assert_eq!(all.len(), 9);
    let entry_ids: Vec<i64> = all.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(
        entry_ids.windows(2).all(|w| w[0] > w[1]),
        "newest first: {entry_ids:?}"
    );
    assert_eq!(all[0]["action"], "budget.create");

    // Pages of every size cover the trail once, in order.
    for limit in [1, 2, 4, 9, 10] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = format!("/admin/v1/audit?limit={limit}");
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={c}"));
            }
            let page = env.admin_get(&q).await;
            let data = page["data"].as_array().unwrap();
            assert!(data.len() <= limit);
            seen.extend(data.iter().map(|e| e["id"].as_i64().unwrap()));
            match page["next_cursor"].as_str() {
                Some(c) => {
                    assert_eq!(data.len(), limit);
                    cursor = Some(c.to_string());
                }
                None => break,
            }
        }
        assert_eq!(seen, entry_ids, "limit {limit}");
    }

    // Filters.
    assert_eq!(audit(&env, "action=key.create").await.len(), 7);
    assert_eq!(audit(&env, "action=key.revoke").await.len(), 1);
    let by_key = audit(&env, &format!("resource_id={}", ids[2])).await;
    let actions: Vec<&str> = by_key
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["key.revoke", "key.create"]);
    assert_eq!(audit(&env, "actor=master").await.len(), 9);
    assert_eq!(audit(&env, "actor=cli").await.len(), 0);
    assert_eq!(audit(&env, "actor=token:tok_1").await.len(), 0);
    let t = all[4]["at_ms"].as_i64().unwrap();
    let from = audit(&env, &format!("from={t}")).await;
    assert!(from.iter().all(|e| e["at_ms"].as_i64().unwrap() >= t));
    assert!(from.len() >= 5);
    let to = audit(&env, &format!("to={t}")).await;
    assert!(to.iter().all(|e| e["at_ms"].as_i64().unwrap() < t));
    assert_eq!(from.len() + to.len(), 9);
    assert!(
        audit(&env, "from=2000-01-01&to=2000-01-02")
            .await
            .is_empty()
    );
    let combined = audit(&env, "action=key.create&actor=master&from=2000-01-01").await;
    assert_eq!(combined.len(), 7);

    // Bad filters and page parameters name themselves.
    for (q, param) in [
        ("actor=root", "actor"),
        ("actor=master:x", "actor"),
        ("from=yesterday", "from"),
        ("to=x", "to"),
        ("limit=0", "limit"),
        ("cursor=zz", "cursor"),
        ("cursor=6162", "cursor"),
    ] {
        let r = env
            .http
            .get(env.url(&format!("/admin/v1/audit?{q}")))
            .bearer_auth(MASTER)
            .send()
            .await
            .unwrap();
        let e = expect_error(r, 400, "invalid_request").await;
        assert_eq!(e["param"], param, "{q}");
    }
    // The guard covers it.
    let r = env
        .http
        .get(env.url("/admin/v1/audit"))
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "invalid_api_key").await;
}

fn chat_body() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_works_through_its_grace_and_its_successor_at_once() {
    let env = TestEnv::start().await;
    let (old_key, old_id) = env
        .create_key(json!({"name": "svc", "tenant": "acme", "team": "core",
                           "models": ["gpt-4o-mini"], "allow_tenant_header": true,
                           "metadata": {"owner": "ops"}}))
        .await;
    assert_eq!(env.chat(&old_key, chat_body()).await.status(), 200);
    let original = env.admin_get(&format!("/admin/v1/keys/{old_id}")).await;

    let (st, rotated) = call(
        &env,
        Method::POST,
        &format!("/admin/v1/keys/{old_id}/rotate"),
        Some(json!({"grace_secs": 1})),
    )
    .await;
    assert_eq!(st, 201, "{rotated}");
    let new_key = rotated["key"].as_str().unwrap().to_string();
    let new_id = rotated["id"].as_str().unwrap().to_string();
    assert!(new_key.starts_with("tg-") && new_key != old_key);
    assert_ne!(new_id, old_id);
    // The same definition under a new id and secret.
    for field in [
        "name",
        "tenant",
        "team",
        "models",
        "allow_tenant_header",
        "allowed_tenants",
        "allow_route_override",
        "metadata",
        "expires_at",
    ] {
        assert_eq!(rotated[field], original[field], "{field}");
    }
    assert!(new_key.starts_with(rotated["key_prefix"].as_str().unwrap()));
    assert_eq!(rotated["previous"]["rotated_to"], new_id.as_str());
    assert!(rotated["previous"]["expires_at"].is_string());
    // Shown once: GET never has it.
    let got = env.admin_get(&format!("/admin/v1/keys/{new_id}")).await;
    assert_eq!(got, public(rotated.clone()));

    // Both work at once, attributed alike.
    let r = env.chat(&new_key, chat_body()).await;
    assert_eq!(r.status(), 200);
    let new_row = env.row(header(&r, "x-tollgate-request-id")).await;
    let r = env.chat(&old_key, chat_body()).await;
    assert_eq!(r.status(), 200, "the old key works during its grace");
    let old_row = env.row(header(&r, "x-tollgate-request-id")).await;
    assert_eq!(new_row["key_id"], new_id.as_str());
    assert_eq!(old_row["key_id"], old_id.as_str());
    for f in ["key_name", "tenant", "team"] {
        assert_eq!(new_row[f], old_row[f], "{f}");
    }
    assert_eq!(new_row["key_name"], "svc");
    assert_eq!(new_row["tenant"], "acme");

    // After the grace: the old key is refused saying why; the new one still works.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = env.chat(&old_key, chat_body()).await;
    let e = expect_error(r, 401, "invalid_api_key").await;
    assert!(e["message"].as_str().unwrap().contains("expired"), "{e}");
    assert_eq!(env.chat(&new_key, chat_body()).await.status(), 200);
    // Still so after the index is reloaded (another key change) and after a restart of the
    // admin state.
    env.create_key(json!({"name": "other"})).await;
    let r = env.chat(&old_key, chat_body()).await;
    let e = expect_error(r, 401, "invalid_api_key").await;
    assert!(e["message"].as_str().unwrap().contains("expired"), "{e}");

    // The rotated key cannot be rotated again; the successor can (same name again).
    let (st, v) = call(
        &env,
        Method::POST,
        &format!("/admin/v1/keys/{old_id}/rotate"),
        None,
    )
    .await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["error"]["code"], "conflict");
    // Grace 0: the old key stops at once.
    let (st, third) = call(
        &env,
        Method::POST,
        &format!("/admin/v1/keys/{new_id}/rotate"),
        Some(json!({"grace_secs": 0})),
    )
    .await;
    assert_eq!(st, 201, "{third}");
    assert_eq!(third["name"], "svc");
    let r = env.chat(&new_key, chat_body()).await;
    let e = expect_error(r, 401, "invalid_api_key").await;
    assert!(e["message"].as_str().unwrap().contains("expired"), "{e}");
    let third_key = third["key"].as_str().unwrap();
    assert_eq!(env.chat(third_key, chat_body()).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_refuses_bad_grace_unknown_and_revoked_keys() {
    let env = TestEnv::start().await;
    let (_, id) = env.create_key(json!({"name": "svc"})).await;
    let path = format!("/admin/v1/keys/{id}/rotate");
    for body in [
        json!({"grace_secs": -1}),
        json!({"grace_secs": 1.5}),
        json!({"grace_secs": "60"}),
        json!({"grace_secs": 2_592_001}),
        json!({"grace_secs": u64::MAX}),
    ] {
        let r = env
            .http
            .post(env.url(&path))
            .bearer_auth(MASTER)
            .json(&body)
            .send()
            .await
            .unwrap();
        let e = expect_error(r, 400, "invalid_request").await;
        assert_eq!(e["param"], "grace_secs", "{body}");
    }
    let r = env
        .http
        .post(env.url(&path))
        .bearer_auth(MASTER)
        .json(&json!({"grace": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_error(r, 400, "invalid_request").await["param"],
        "grace"
    );
    let r = env
        .http
        .post(env.url(&path))
        .bearer_auth(MASTER)
        .body("{")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "invalid_json").await;
    // Nothing was rotated by a refused request.
    assert!(env.admin_get(&format!("/admin/v1/keys/{id}")).await["rotated_to"].is_null());
    assert_eq!(audit(&env, "action=key.rotate").await.len(), 0);

    // Unknown: 404; revoked: 409.
    let r = env
        .http
        .post(env.url("/admin/v1/keys/key_nope/rotate"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    let e = expect_error(r, 404, "not_found").await;
    assert!(e["message"].as_str().unwrap().contains("key_nope"), "{e}");
    assert_eq!(
        call(&env, Method::DELETE, &format!("/admin/v1/keys/{id}"), None)
            .await
            .0,
        200
    );
    let r = env
        .http
        .post(env.url(&path))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    let e = expect_error(r, 409, "conflict").await;
    assert!(e["message"].as_str().unwrap().contains("revoked"), "{e}");
    // An expired key: 409 too.
    let (_, expired) = env
        .create_key(json!({"name": "old", "expires_at_ms": 1_000_000_000_000i64}))
        .await;
    let (st, v) = call(
        &env,
        Method::POST,
        &format!("/admin/v1/keys/{expired}/rotate"),
        None,
    )
    .await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(audit(&env, "action=key.rotate").await.len(), 0);
    // The default grace is a day.
    let (_, fresh) = env.create_key(json!({"name": "fresh"})).await;
    let before = jiff::Timestamp::now().as_millisecond();
    let (st, v) = call(
        &env,
        Method::POST,
        &format!("/admin/v1/keys/{fresh}/rotate"),
        None,
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let until: jiff::Timestamp = v["previous"]["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let grace = until.as_millisecond() - before;
    assert!((86_390_000..=86_410_000).contains(&grace), "{grace}");
}

/// The binary with a clean environment and `USER` set.
fn tollgate(user: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    c.env_clear()
        .env("NO_COLOR", "1")
        .env("USER", user)
        .stdin(Stdio::null());
    c
}

#[test]
fn cli_key_changes_are_audited_as_the_cli_user() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "server:\n  listen: 127.0.0.1:0\nstorage:\n  ledger: sqlite://{}\n",
            db.display()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = tollgate("ann").args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{args:?}: {err}");
        (String::from_utf8_lossy(&out.stdout).trim().to_string(), err)
    };
    let (key, err) = run(&["keys", "create", "--name", "cli", "--config", cfg]);
    let id = err
        .split("created key ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_string();
    let (new_key, err) = run(&["keys", "rotate", &id, "--grace-secs", "0", "--config", cfg]);
    assert!(new_key.starts_with("tg-") && new_key != key, "{new_key}");
    assert!(err.contains("rotated"), "{err}");
    let store = tollgate_store::Store::open(&format!("sqlite://{}", db.display())).unwrap();
    let old = store.get_key(&id).unwrap();
    let new_id = old.rotated_to.clone().unwrap();
    assert!(old.expires_at_ms.is_some());
    assert_eq!(store.get_key(&new_id).unwrap().name, "cli");
    run(&["keys", "revoke", &new_id, "--config", cfg]);
    // Too long a grace is refused before anything changes.
    let out = tollgate("ann")
        .args([
            "keys",
            "rotate",
            &new_id,
            "--grace-secs",
            "9999999",
            "--config",
            cfg,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("grace"));

    let entries = store.list_audit(&AuditFilter::default(), 100).unwrap();
    let got: Vec<(&str, &str)> = entries
        .iter()
        .map(|r| (r.entry.action.as_str(), r.entry.resource_id.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("key.revoke", new_id.as_str()),
            ("key.rotate", id.as_str()),
            ("key.create", id.as_str())
        ]
    );
    for r in &entries {
        assert_eq!(
            r.entry.actor,
            Actor::Cli {
                user: Some("ann".into())
            }
        );
        assert_eq!(r.entry.address, None);
        let text = format!("{:?}", r.entry);
        assert!(!text.contains(&key) && !text.contains(&new_key));
        assert!(!text.contains("key_hash"));
    }
}
