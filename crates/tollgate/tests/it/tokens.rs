//! Admin tokens (`/admin/v1/tokens`) over real HTTP: shown once and never again; a viewer
//! reads every admin route and changes nothing; an admin token changes things and the audit
//! trail names it; revoked, expired and unknown tokens are refused; a token stored by another
//! process is honoured within a second; tokens and virtual keys never cross planes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_attribution::tokens;
use tollgate_store::{Actor, Audit, TokenAudit, TokenRole};

use crate::harness::*;

/// A request with `credential` as the bearer; `(status, body)`.
async fn call_as(
    env: &TestEnv,
    credential: &str,
    m: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = env.http.request(m, env.url(path)).bearer_auth(credential);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Creates a token as `by`; returns the whole answer (with `token`).
async fn create_token(env: &TestEnv, by: &str, body: Value) -> Value {
    let (st, v) = call_as(env, by, Method::POST, "/admin/v1/tokens", Some(body)).await;
    assert_eq!(st, 201, "{v}");
    v
}

fn text(v: &Value) -> String {
    serde_json::to_string(v).unwrap()
}

/// The view without the one-time `token`.
fn public(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("token");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_shown_once_and_never_again() {
    let env = TestEnv::start().await;
    let admin = create_token(&env, MASTER, json!({"name": "ops", "role": "admin"})).await;
    let viewer = create_token(
        &env,
        MASTER,
        json!({"name": "dashboard", "role": "viewer", "expires_in_secs": 3600}),
    )
    .await;
    let mut fields: Vec<&str> = admin
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "created_at",
            "expires_at",
            "id",
            "name",
            "revoked_at",
            "role",
            "token",
            "token_prefix"
        ]
    );
    let plain: Vec<String> = [&admin, &viewer]
        .iter()
        .map(|v| v["token"].as_str().unwrap().to_string())
        .collect();
    for (v, t) in [&admin, &viewer].iter().zip(&plain) {
        assert!(t.starts_with("tga-") && t.len() == 52, "{t}");
        assert!(t.starts_with(v["token_prefix"].as_str().unwrap()), "{v}");
        assert!(v["id"].as_str().unwrap().starts_with("tok_"), "{v}");
        assert!(v["created_at"].as_str().unwrap().ends_with('Z'), "{v}");
        assert!(v["revoked_at"].is_null(), "{v}");
    }
    assert_eq!(admin["role"], "admin");
    assert_eq!(admin["expires_at"], Value::Null);
    assert_eq!(viewer["role"], "viewer");
    let expires = viewer["expires_at"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_millisecond();
    let now = jiff::Timestamp::now().as_millisecond();
    assert!(
        (now + 3_540_000..=now + 3_600_000).contains(&expires),
        "{viewer}"
    );

    // Afterwards: the same view without the token, in GET, the list and the audit trail.
    let id = admin["id"].as_str().unwrap();
    let got = env.admin_get(&format!("/admin/v1/tokens/{id}")).await;
    assert_eq!(got, public(admin.clone()));
    let list = env.admin_get("/admin/v1/tokens").await;
    assert_eq!(
        list["data"],
        json!([public(admin.clone()), public(viewer.clone())])
    );
    let audit = env.admin_get("/admin/v1/audit?action=token.create").await;
    let entries = audit["data"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{audit}");
    assert_eq!(entries[0]["resource_id"], viewer["id"]);
    assert_eq!(entries[0]["actor"], json!({"kind": "master"}));
    assert_eq!(entries[0]["before"], Value::Null);
    assert_eq!(entries[0]["after"], public(viewer.clone()));
    assert_eq!(entries[1]["after"], public(admin.clone()));

    // The secrets check: no plaintext (nor its secret part, nor its hash) in any body after
    // the creating one, nor in the database.
    let stored = env.store().get_admin_token(id).unwrap();
    let bodies = [
        text(&got),
        text(&list),
        text(&audit),
        text(&env.admin_get("/admin/v1/audit").await),
        text(&env.admin_get("/admin/v1/tokens?include_revoked=true").await),
    ];
    for t in &plain {
        for b in &bodies {
            assert!(!b.contains(t.as_str()), "{b}");
            assert!(!b.contains(&t[10..]), "the secret part: {b}");
            assert!(!b.contains(&stored.token_hash), "the hash: {b}");
            assert!(!b.contains("hash"), "{b}");
        }
    }
    assert_ne!(stored.token_hash, plain[0]);
    assert!(!stored.token_hash.contains(&plain[0][4..]));

    // Unknown id; a second revoke; bad bodies name their parameter.
    let (st, v) = call_as(&env, MASTER, Method::GET, "/admin/v1/tokens/tok_nope", None).await;
    assert_eq!((st, &v["error"]["code"]), (404, &json!("not_found")), "{v}");
    for (body, param) in [
        (json!({"role": "admin"}), "name"),
        (json!({"name": "", "role": "viewer"}), "name"),
        (json!({"name": "x"}), "role"),
        (json!({"name": "x", "role": "owner"}), "role"),
        (
            json!({"name": "x", "role": "viewer", "expires_in_secs": 0}),
            "expires_in_secs",
        ),
        (
            json!({"name": "x", "role": "viewer", "expires_in_secs": "1h"}),
            "expires_in_secs",
        ),
        (
            json!({"name": "x", "role": "viewer", "tenant": "a"}),
            "tenant",
        ),
    ] {
        let r = env
            .http
            .post(env.url("/admin/v1/tokens"))
            .bearer_auth(MASTER)
            .json(&body)
            .send()
            .await
            .unwrap();
        let e = expect_error(r, 400, "invalid_request").await;
        assert_eq!(e["param"], param, "{body}: {e}");
    }
    let r = env
        .http
        .post(env.url("/admin/v1/tokens"))
        .bearer_auth(MASTER)
        .header("content-type", "application/json")
        .body("{\"name\":")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "invalid_json").await;
    assert_eq!(
        env.admin_get("/admin/v1/tokens").await["data"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "nothing created by a refused request"
    );
}

/// Every admin route's path, from the route table itself, so a new route cannot be missed.
fn routed_admin_paths() -> BTreeSet<String> {
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../server/src/routes.rs"
    ))
    .unwrap();
    src.split('"')
        .filter(|s| s.starts_with("/admin/v1/"))
        .map(String::from)
        .collect()
}

/// Every admin `GET` (with the parameters its report needs) and every admin mutation (with
/// a valid body), as `(method, path template, body)`; `{key}`, `{token}` are filled in.
fn admin_routes(today: &str, tomorrow: &str) -> Vec<(Method, String, Option<Value>)> {
    let range = format!("from={today}&to={tomorrow}");
    let budget = json!({"name": "b2", "scope": {"tenant": "acme"}, "limit_usd": "5",
                        "window": "month", "mode": "hard"});
    let policy = json!({"name": "p2", "scope": {"tenant": "acme"}, "budget": "b2",
                        "mode": "shadow",
                        "steps": [{"when": {"utilization_pct": 50}, "then": ["block"]}]});
    let g = |p: &str| (Method::GET, p.to_string(), None);
    vec![
        g("/admin/v1/keys"),
        g("/admin/v1/keys/{key}"),
        g("/admin/v1/tokens"),
        g("/admin/v1/tokens/{token}"),
        g("/admin/v1/audit"),
        g("/admin/v1/budgets"),
        g("/admin/v1/budgets/b1"),
        g("/admin/v1/policies"),
        g("/admin/v1/policies/decisions"),
        g("/admin/v1/policies/p1"),
        g("/admin/v1/deployments"),
        g("/admin/v1/spend"),
        g("/admin/v1/requests"),
        g("/admin/v1/requests/{request}"),
        g(&format!("/admin/v1/stats?{range}")),
        g(&format!("/admin/v1/exports/focus?{range}")),
        g(&format!("/admin/v1/margins?{range}")),
        g(&format!("/admin/v1/showback?{range}")),
        g("/admin/v1/allocations"),
        g(&format!("/admin/v1/anomalies?{range}")),
        // Mutations, in an order an admin can run them all in.
        (
            Method::POST,
            "/admin/v1/keys".into(),
            Some(json!({"name": "made-by-token"})),
        ),
        (
            Method::POST,
            "/admin/v1/keys/{key}/rotate".into(),
            Some(json!({"grace_secs": 0})),
        ),
        (Method::DELETE, "/admin/v1/keys/{key}".into(), None),
        (
            Method::POST,
            "/admin/v1/tokens".into(),
            Some(json!({"name": "second", "role": "admin"})),
        ),
        (Method::DELETE, "/admin/v1/tokens/{token}".into(), None),
        (Method::POST, "/admin/v1/budgets".into(), Some(budget)),
        (
            Method::PATCH,
            "/admin/v1/budgets/b1".into(),
            Some(json!({"limit_usd": "7"})),
        ),
        (Method::POST, "/admin/v1/policies".into(), Some(policy)),
        (
            Method::PATCH,
            "/admin/v1/policies/p1".into(),
            Some(json!({"mode": "enforce"})),
        ),
        (Method::DELETE, "/admin/v1/policies/p1".into(), None),
        (Method::DELETE, "/admin/v1/budgets/b1".into(), None),
    ]
}

/// What the admin API holds: the audit trail and every collection.
async fn snapshot(env: &TestEnv) -> Vec<Value> {
    let mut out = Vec::new();
    for p in [
        "/admin/v1/audit",
        "/admin/v1/keys?include_revoked=true",
        "/admin/v1/tokens?include_revoked=true",
        "/admin/v1/budgets",
        "/admin/v1/policies",
    ] {
        out.push(env.admin_get(p).await);
    }
    out
}

fn day(offset_days: i64) -> String {
    let t = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * offset_days);
    t.strftime("%Y-%m-%d").to_string()
}

/// A gateway with one of each resource: key, budget `b1`, policy `p1`, a served request.
async fn populated() -> (TestEnv, String, String) {
    let env = TestEnv::start().await;
    let (key, key_id) = env
        .create_key(json!({"name": "svc", "tenant": "acme"}))
        .await;
    let budget = json!({"name": "b1", "scope": {"tenant": "acme"}, "limit_usd": "5",
                        "window": "month", "mode": "hard"});
    assert_eq!(
        call_as(
            &env,
            MASTER,
            Method::POST,
            "/admin/v1/budgets",
            Some(budget)
        )
        .await
        .0,
        201
    );
    let policy = json!({"name": "p1", "scope": {"tenant": "acme"}, "budget": "b1",
                        "mode": "shadow",
                        "steps": [{"when": {"utilization_pct": 50}, "then": ["block"]}]});
    assert_eq!(
        call_as(
            &env,
            MASTER,
            Method::POST,
            "/admin/v1/policies",
            Some(policy)
        )
        .await
        .0,
        201
    );
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(env.chat(&key, body).await.status(), 200);
    (env, key, key_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_reads_every_admin_route_and_changes_nothing() {
    let (env, _key, key_id) = populated().await;
    let viewer = create_token(&env, MASTER, json!({"name": "dash", "role": "viewer"})).await;
    let vt = viewer["token"].as_str().unwrap();
    let vid = viewer["id"].as_str().unwrap();
    let routes = admin_routes(&day(0), &day(1));

    // The list covers the route table.
    let listed: BTreeSet<String> = routes
        .iter()
        .map(|(_, p, _)| {
            p.split('?')
                .next()
                .unwrap()
                .replace("{key}", "{id}")
                .replace("{token}", "{id}")
                .replace("{request}", "{id}")
                .replace("/b1", "/{name}")
                .replace("/p1", "/{name}")
        })
        .collect();
    assert_eq!(listed, routed_admin_paths());

    let rid = env.rows("").await[0]["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let fill = |p: &str| {
        p.replace("{key}", &key_id)
            .replace("{token}", vid)
            .replace("{request}", &rid)
    };
    let before = snapshot(&env).await;
    for (m, p, body) in &routes {
        let path = fill(p);
        let (st, v) = call_as(&env, vt, m.clone(), &path, body.clone()).await;
        if *m == Method::GET {
            assert_eq!(st, 200, "a viewer reads {path}: {v}");
        } else {
            assert_eq!(st, 403, "{m} {path}: {v}");
            assert_eq!(v["error"]["code"], "permission_denied", "{v}");
            assert_eq!(v["error"]["type"], "permission_error", "{v}");
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("viewer may read"),
                "{v}"
            );
        }
    }
    // Its own revocation included: still a viewer, still valid, nothing changed.
    assert_eq!(snapshot(&env).await, before);
    let (st, _) = call_as(&env, vt, Method::GET, "/admin/v1/tokens", None).await;
    assert_eq!(st, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_token_changes_everything_and_the_audit_trail_names_it() {
    let (env, _key, key_id) = populated().await;
    let admin = create_token(&env, MASTER, json!({"name": "ops", "role": "admin"})).await;
    let at = admin["token"].as_str().unwrap();
    let aid = admin["id"].as_str().unwrap().to_string();
    // A token for the admin token to revoke (not itself, which it may also do).
    let victim = create_token(&env, MASTER, json!({"name": "old", "role": "viewer"})).await;
    let victim_id = victim["id"].as_str().unwrap();
    let audited_before = env.admin_get("/admin/v1/audit").await["data"]
        .as_array()
        .unwrap()
        .len();

    let rid = env.rows("").await[0]["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut key_id = key_id;
    let mut changes = 0;
    for (m, p, body) in admin_routes(&day(0), &day(1)) {
        let path = p
            .replace("{key}", &key_id)
            .replace("{token}", victim_id)
            .replace("{request}", &rid);
        let (st, v) = call_as(&env, at, m.clone(), &path, body).await;
        assert!((200..300).contains(&st), "{m} {path}: {st} {v}");
        if m == Method::GET {
            continue;
        }
        changes += 1;
        if path == "/admin/v1/keys/".to_string() + &key_id + "/rotate" {
            // Later key routes act on the successor.
            key_id = v["id"].as_str().unwrap().to_string();
        }
        if path == "/admin/v1/tokens" {
            // An admin token may create another admin token (audited as itself); it works.
            assert_eq!(v["role"], "admin");
            let second = v["token"].as_str().unwrap();
            let (st, _) = call_as(&env, second, Method::GET, "/admin/v1/keys", None).await;
            assert_eq!(st, 200);
        }
    }
    // One entry per change, each naming the token.
    let mine = env
        .admin_get(&format!("/admin/v1/audit?actor=token:{aid}"))
        .await;
    let entries = mine["data"].as_array().unwrap();
    assert_eq!(entries.len(), changes, "{mine}");
    for e in entries {
        assert_eq!(e["actor"], json!({"kind": "token", "id": aid}), "{e}");
    }
    let actions: BTreeSet<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains("token.create") && actions.contains("token.revoke"));
    let all = env.admin_get("/admin/v1/audit").await;
    assert_eq!(
        all["data"].as_array().unwrap().len(),
        audited_before + changes
    );
    assert!(!text(&all).contains(at), "no plaintext token in the trail");
    // The revoked token is refused now.
    let (st, v) = call_as(
        &env,
        victim["token"].as_str().unwrap(),
        Method::GET,
        "/admin/v1/keys",
        None,
    )
    .await;
    assert_eq!(st, 401, "{v}");
    assert_eq!(v["error"]["message"], "the admin token has been revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_expired_and_unknown_tokens_are_refused() {
    let env = TestEnv::start().await;
    let t = create_token(&env, MASTER, json!({"name": "short", "role": "admin"})).await;
    let token = t["token"].as_str().unwrap().to_string();
    let id = t["id"].as_str().unwrap().to_string();
    assert_eq!(
        call_as(&env, &token, Method::GET, "/admin/v1/keys", None)
            .await
            .0,
        200
    );
    let (st, v) = call_as(
        &env,
        MASTER,
        Method::DELETE,
        &format!("/admin/v1/tokens/{id}"),
        None,
    )
    .await;
    assert_eq!(
        (st, v),
        (200, json!({"id": id, "object": "token", "deleted": true}))
    );
    let (st, v) = call_as(
        &env,
        MASTER,
        Method::DELETE,
        &format!("/admin/v1/tokens/{id}"),
        None,
    )
    .await;
    assert_eq!((st, &v["error"]["code"]), (404, &json!("not_found")), "{v}");
    let revoked = env.admin_get(&format!("/admin/v1/tokens/{id}")).await;
    assert!(revoked["revoked_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(env.admin_get("/admin/v1/tokens").await["data"], json!([]));
    assert_eq!(
        env.admin_get("/admin/v1/tokens?include_revoked=true").await["data"],
        json!([revoked])
    );

    // Expired: issued by another process, already past its expiry.
    let now = jiff::Timestamp::now().as_millisecond();
    let expired = tokens::issue("stale", TokenRole::Admin, Some(now - 1_000), now - 60_000);
    env.store()
        .insert_admin_token(&expired.record, None)
        .unwrap();
    // A one-second token made through the API expires too.
    let brief = create_token(
        &env,
        MASTER,
        json!({"name": "brief", "role": "viewer", "expires_in_secs": 1}),
    )
    .await;
    let brief = brief["token"].as_str().unwrap().to_string();
    assert_eq!(
        call_as(&env, &brief, Method::GET, "/admin/v1/keys", None)
            .await
            .0,
        200
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    let mut wrong = token.clone();
    wrong.pop();
    wrong.push(if token.ends_with('0') { '1' } else { '0' });
    for (credential, message) in [
        (token.as_str(), "the admin token has been revoked"),
        (expired.token.as_str(), "the admin token has expired"),
        (brief.as_str(), "the admin token has expired"),
        (
            wrong.as_str(),
            "invalid admin credential: neither the master key nor a live admin token",
        ),
        (
            "tga-0000",
            "invalid admin credential: neither the master key nor a live admin token",
        ),
    ] {
        for (m, p) in [
            (Method::GET, "/admin/v1/keys"),
            (Method::POST, "/admin/v1/tokens"),
        ] {
            let r = env
                .http
                .request(m.clone(), env.url(p))
                .bearer_auth(credential)
                .json(&json!({"name": "x", "role": "admin"}))
                .send()
                .await
                .unwrap();
            let e = expect_error(r, 401, "invalid_api_key").await;
            assert_eq!(e["message"], message, "{m} {p} with {credential}");
        }
    }
    // `x-api-key` works for admin tokens as for the master key.
    let live = create_token(&env, MASTER, json!({"name": "hdr", "role": "viewer"})).await;
    let r = env
        .http
        .get(env.url("/admin/v1/keys"))
        .header("x-api-key", live["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        env.admin_get("/admin/v1/tokens").await["data"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "the refused creations made nothing: stale, brief (expired, not revoked) and hdr"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_stored_or_revoked_by_another_process_take_effect_within_a_second() {
    let env = TestEnv::start().await;
    // Another process (the store opened on the same file) issues an admin token.
    let other = env.store();
    let now = jiff::Timestamp::now().as_millisecond();
    let issued = tokens::issue("from-elsewhere", TokenRole::Admin, None, now);
    let audit = TokenAudit {
        audit: Audit {
            actor: Actor::Cli {
                user: Some("ops".into()),
            },
            address: None,
            at_ms: now,
        },
        view: |t| json!({"id": t.id, "role": t.role.as_str()}),
    };
    let start = Instant::now();
    other
        .insert_admin_token(&issued.record, Some(&audit))
        .unwrap();
    let wait_for = |want: u16| {
        let env = &env;
        let token = issued.token.clone();
        async move {
            loop {
                let (st, _) = call_as(env, &token, Method::GET, "/admin/v1/keys", None).await;
                if st == want {
                    return;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "never answered {want}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for(200).await;
    let accepted = start.elapsed();
    assert!(
        accepted < Duration::from_secs(1),
        "accepted after {accepted:?}"
    );

    // It is an admin: it can create a key, audited as itself.
    let (st, v) = call_as(
        &env,
        &issued.token,
        Method::POST,
        "/admin/v1/keys",
        Some(json!({"name": "k"})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let e = env.admin_get("/admin/v1/audit?action=key.create").await;
    assert_eq!(
        e["data"][0]["actor"],
        json!({"kind": "token", "id": issued.record.id})
    );

    // Revoked by the other process: refused within a second.
    let start = Instant::now();
    assert!(
        other
            .revoke_admin_token(
                &issued.record.id,
                jiff::Timestamp::now().as_millisecond(),
                None
            )
            .unwrap()
    );
    let start_revoke = start;
    let token = issued.token.clone();
    loop {
        let (st, _) = call_as(&env, &token, Method::GET, "/admin/v1/keys", None).await;
        if st == 401 {
            break;
        }
        assert!(
            start_revoke.elapsed() < Duration::from_secs(5),
            "never refused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = start_revoke.elapsed();
    assert!(
        refused < Duration::from_secs(1),
        "refused after {refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_virtual_keys_never_cross_planes() {
    let env = TestEnv::start().await;
    let (key, _) = env.create_key(json!({"name": "svc"})).await;
    let admin = create_token(&env, MASTER, json!({"name": "ops", "role": "admin"})).await;
    let viewer = create_token(&env, MASTER, json!({"name": "v", "role": "viewer"})).await;
    let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]});
    for t in [&admin, &viewer] {
        let r = env.chat(t["token"].as_str().unwrap(), chat.clone()).await;
        let id = header(&r, "x-tollgate-request-id").to_string();
        let e = expect_error(r, 401, "invalid_api_key").await;
        assert!(
            e["message"].as_str().unwrap().contains("admin tokens"),
            "{e}"
        );
        // Refused like any bad key: one rejected row, no key.
        let row = env.row(&id).await;
        assert_eq!(row["outcome"], "rejected");
        assert!(row["key_id"].is_null(), "{row}");
    }
    // Nor is the master key a virtual key.
    let r = env.chat(MASTER, chat.clone()).await;
    expect_error(r, 401, "invalid_api_key").await;
    // A virtual key opens no admin route, not even a read.
    for (m, p) in [
        (Method::GET, "/admin/v1/keys"),
        (Method::GET, "/admin/v1/tokens"),
        (Method::POST, "/admin/v1/tokens"),
    ] {
        let r = env
            .http
            .request(m, env.url(p))
            .bearer_auth(&key)
            .json(&json!({"name": "x", "role": "admin"}))
            .send()
            .await
            .unwrap();
        let e = expect_error(r, 401, "invalid_api_key").await;
        assert!(
            e["message"].as_str().unwrap().contains("virtual keys"),
            "{e}"
        );
    }
    // The key still works where it belongs.
    assert_eq!(env.chat(&key, chat).await.status(), 200);
    assert_eq!(
        env.admin_get("/admin/v1/tokens").await["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}
