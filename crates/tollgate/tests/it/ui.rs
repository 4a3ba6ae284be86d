//! The dashboard (`/ui/`) over real HTTP: sign-in and sign-out with the cookie's flags, the
//! sign-in limiter, CSRF, origin and viewer refusals (in the page and the API), bad filters
//! as `400` pages, HTML escaping of user input on every page, and page figures equal to the
//! admin API's for known traffic. (The real-browser suite is `tests/browser`.)

use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

use crate::harness::*;

/// A client that does not follow redirects, so each hop can be checked.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HANG_GUARD)
        .build()
        .unwrap()
}

fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

struct Page {
    status: u16,
    headers: HeaderMap,
    html: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
    fn set_cookie(&self) -> &str {
        self.headers
            .get(SET_COOKIE)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
    /// The session's CSRF token, from the page's sign-out form.
    fn csrf(&self) -> String {
        between(&self.html, "name=\"csrf\" value=\"", "\"").to_string()
    }
    /// The text of the element carrying `data-figure="name"` (first one).
    fn figure(&self, name: &str) -> String {
        figure_in(&self.html, name)
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> &'a str {
    let i = s
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} not in page:\n{s}"))
        + start.len();
    let j = s[i..].find(end).unwrap() + i;
    &s[i..j]
}

fn figure_in(html: &str, name: &str) -> String {
    let marker = format!("data-figure=\"{name}\">");
    between(html, &marker, "<").to_string()
}

async fn get(env: &TestEnv, cookie: Option<&str>, path: &str) -> Page {
    let mut req = client().get(env.url(path));
    if let Some(c) = cookie {
        req = req.header("cookie", format!("tollgate_session={c}"));
    }
    page(req.send().await.unwrap()).await
}

async fn post(
    env: &TestEnv,
    cookie: Option<&str>,
    path: &str,
    fields: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> Page {
    let mut req = client()
        .post(env.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(fields));
    if let Some(c) = cookie {
        req = req.header("cookie", format!("tollgate_session={c}"));
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    page(req.send().await.unwrap()).await
}

async fn page(r: reqwest::Response) -> Page {
    Page {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        html: r.text().await.unwrap(),
    }
}

/// Signs in with `credential`; returns the session cookie's value.
async fn sign_in(env: &TestEnv, credential: &str) -> String {
    let p = post(env, None, "/ui/login", &[("credential", credential)], &[]).await;
    assert_eq!(p.status, 303, "{}", p.html);
    let c = p.set_cookie();
    between(c, "tollgate_session=", ";").to_string()
}

async fn token(env: &TestEnv, role: &str) -> (String, String) {
    let r = env
        .http
        .post(env.url("/admin/v1/tokens"))
        .bearer_auth(MASTER)
        .json(&json!({"name": format!("ui-{role}"), "role": role}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    (
        v["token"].as_str().unwrap().to_string(),
        v["id"].as_str().unwrap().to_string(),
    )
}

fn assert_html(p: &Page) {
    assert_eq!(
        p.headers["content-type"], "text/html; charset=utf-8",
        "{}",
        p.html
    );
    let csp = p.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(p.headers["cache-control"], "no-store");
    assert!(
        !p.html.contains("<script") && !p.html.contains("style="),
        "no scripts, no inline styles"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_sets_a_strict_session_cookie_and_sign_out_ends_it() {
    let env = TestEnv::start().await;
    // No session: every page sends the browser to the sign-in form, remembering where to.
    let p = get(&env, None, "/ui/").await;
    assert_eq!((p.status, p.location()), (303, "/ui/login"));
    let p = get(&env, None, "/ui/requests?tenant=acme").await;
    assert_eq!(
        p.location(),
        "/ui/login?next=%2Fui%2Frequests%3Ftenant%3Dacme"
    );
    assert_eq!(get(&env, None, "/ui").await.location(), "/ui/");
    let form = get(&env, None, "/ui/login").await;
    assert_eq!(form.status, 200);
    assert_html(&form);
    assert!(form.html.contains("name=\"credential\"") && form.html.contains("type=\"password\""));
    let css = client()
        .get(env.url("/ui/assets/tollgate.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");

    // Sign in: an opaque 256-bit id in an HttpOnly, SameSite=Strict cookie on /ui; no Secure
    // over plain HTTP, Secure when a proxy says the request came over TLS.
    let p = post(
        &env,
        None,
        "/ui/login",
        &[("credential", MASTER), ("next", "/ui/requests?tenant=acme")],
        &[],
    )
    .await;
    assert_eq!((p.status, p.location()), (303, "/ui/requests?tenant=acme"));
    let set = p.set_cookie().to_string();
    let id = between(&set, "tollgate_session=", ";").to_string();
    assert_eq!(id.len(), 64);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!id.contains(MASTER));
    assert_eq!(
        set,
        format!("tollgate_session={id}; HttpOnly; SameSite=Strict; Path=/ui")
    );
    let tls = post(
        &env,
        None,
        "/ui/login",
        &[("credential", MASTER)],
        &[("x-forwarded-proto", "https")],
    )
    .await;
    assert!(
        tls.set_cookie().ends_with("; Secure"),
        "{}",
        tls.set_cookie()
    );
    // A foreign `next` is ignored.
    let p = post(
        &env,
        None,
        "/ui/login",
        &[("credential", MASTER), ("next", "https://evil.example/")],
        &[],
    )
    .await;
    assert_eq!(p.location(), "/ui/");

    let home = get(&env, Some(&id), "/ui/").await;
    assert_eq!(home.status, 200, "{}", home.html);
    assert_html(&home);
    assert!(home.html.contains("<h1>Overview</h1>"));
    assert!(
        home.html
            .contains("master key · <strong id=\"role\">admin</strong>")
    );
    assert_eq!(
        get(&env, Some(&id), "/ui/login").await.location(),
        "/ui/",
        "already signed in"
    );

    // Sign out needs the CSRF token like every change; then the cookie is cleared and the
    // old id is dead.
    let csrf = home.csrf();
    assert_eq!(csrf.len(), 64);
    assert_eq!(
        post(&env, Some(&id), "/ui/logout", &[], &[]).await.status,
        403
    );
    let out = post(&env, Some(&id), "/ui/logout", &[("csrf", &csrf)], &[]).await;
    assert_eq!((out.status, out.location()), (303, "/ui/login"));
    assert!(
        out.set_cookie().contains("tollgate_session=;") && out.set_cookie().contains("Max-Age=0")
    );
    let after = get(&env, Some(&id), "/ui/").await;
    assert_eq!(
        (after.status, after.location()),
        (303, "/ui/login?expired=1")
    );
    assert!(after.set_cookie().contains("Max-Age=0"));
    let notice = get(&env, None, "/ui/login?expired=1").await;
    assert!(notice.html.contains("Your session has ended"));
    // A made-up id is no session either.
    let fake = "ab".repeat(32);
    assert_eq!(get(&env, Some(&fake), "/ui/keys").await.status, 303);

    // A session opened with a token ends when the token is revoked.
    let (viewer, viewer_id) = token(&env, "viewer").await;
    let vs = sign_in(&env, &viewer).await;
    let page = get(&env, Some(&vs), "/ui/").await;
    assert_eq!(page.status, 200);
    assert!(page.html.contains(&format!(
        "token {viewer_id} · <strong id=\"role\">viewer</strong>"
    )));
    let r = env
        .http
        .delete(env.url(&format!("/admin/v1/tokens/{viewer_id}")))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        get(&env, Some(&vs), "/ui/").await.location(),
        "/ui/login?expired=1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_credential_gets_a_message_and_failures_are_rate_limited() {
    let env = TestEnv::start().await;
    let (key, _) = env.create_key(json!({"name": "app"})).await;
    let (tok, tok_id) = token(&env, "admin").await;
    env.http
        .delete(env.url(&format!("/admin/v1/tokens/{tok_id}")))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    let empty = post(&env, None, "/ui/login", &[("credential", "  ")], &[]).await;
    assert_eq!(empty.status, 400);
    assert!(
        empty
            .html
            .contains("Enter the master key or an admin token")
    );
    for (credential, says) in [
        (
            "wrong-master-key",
            "neither the master key nor a live admin token",
        ),
        (key.as_str(), "virtual keys are for /v1/"),
        (tok.as_str(), "the admin token has been revoked"),
        (
            "tga-000000000000000000000000000000000000000000000000",
            "neither the master key",
        ),
        ("<script>alert(1)</script>", "neither the master key"),
    ] {
        let p = post(&env, None, "/ui/login", &[("credential", credential)], &[]).await;
        assert_eq!(p.status, 401, "{credential}");
        assert_html(&p);
        assert!(
            p.html.contains("Wrong credential") && p.html.contains(says),
            "{}",
            p.html
        );
        assert!(p.set_cookie().is_empty());
        assert!(!p.html.contains(credential), "a credential is never echoed");
    }
    // Five failures in a minute: the address is refused, even with the right key.
    let p = post(&env, None, "/ui/login", &[("credential", MASTER)], &[]).await;
    assert_eq!(p.status, 429, "{}", p.html);
    assert!(p.html.contains("Too many failed sign-ins"));
    let wait: u64 = p.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert!(p.set_cookie().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_need_the_csrf_token_this_origin_and_the_admin_role() {
    let env = TestEnv::start().await;
    let admin = sign_in(&env, MASTER).await;
    let keys = get(&env, Some(&admin), "/ui/keys").await;
    assert_eq!(keys.status, 200);
    assert!(keys.html.contains("id=\"create-key\""));
    let csrf = keys.csrf();
    let count = |v: Value| v["data"].as_array().unwrap().len();
    let before = count(env.admin_get("/admin/v1/keys?include_revoked=true").await);

    for (fields, headers, why) in [
        (
            vec![("name", "k1")],
            vec![],
            "CSRF token is missing or wrong",
        ),
        (
            vec![("name", "k1"), ("csrf", "0000")],
            vec![],
            "CSRF token is missing or wrong",
        ),
        (
            vec![("name", "k1"), ("csrf", csrf.as_str())],
            vec![("origin", "http://evil.example")],
            "sent from another site",
        ),
    ] {
        let p = post(&env, Some(&admin), "/ui/keys", &fields, &headers).await;
        assert_eq!(p.status, 403, "{why}: {}", p.html);
        assert_html(&p);
        assert!(p.html.contains(why), "{}", p.html);
    }
    assert_eq!(
        count(env.admin_get("/admin/v1/keys?include_revoked=true").await),
        before
    );

    // The right token: the key is shown once, works, and is audited as the master key.
    let origin = env.base();
    let made = post(
        &env,
        Some(&admin),
        "/ui/keys",
        &[
            ("csrf", &csrf),
            ("name", "from-ui"),
            ("tenant", "acme"),
            ("models", "gpt-4o-mini"),
        ],
        &[("origin", origin.as_str())],
    )
    .await;
    assert_eq!(made.status, 200, "{}", made.html);
    let key = between(
        &made.html,
        "<code class=\"secret-value\" id=\"new-key\">",
        "<",
    )
    .to_string();
    assert!(key.starts_with("tg-"), "{key}");
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(env.chat(&key, body.clone()).await.status(), 200);
    let listed = get(&env, Some(&admin), "/ui/keys").await;
    assert!(
        listed.html.contains("from-ui") && !listed.html.contains(&key),
        "shown once"
    );
    let api = env.admin_get("/admin/v1/keys").await;
    let made_id = api["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "from-ui")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let audit = env.admin_get("/admin/v1/audit").await;
    let entry = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "key.create" && e["resource_id"] == made_id.as_str())
        .unwrap_or_else(|| panic!("{audit}"))
        .clone();
    assert_eq!(entry["actor"]["kind"], "master", "{entry}");
    // A bad key request is a 400 page naming the problem, the form refilled.
    let bad = post(
        &env,
        Some(&admin),
        "/ui/keys",
        &[("csrf", &csrf), ("name", "x"), ("models", "no-such-model")],
        &[],
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.html.contains("unknown model &#39;no-such-model&#39;"),
        "{}",
        bad.html
    );
    assert!(bad.html.contains("value=\"no-such-model\""));

    // A viewer sees the list and no forms, and every change is a 403 in the page and the API.
    let (viewer, _) = token(&env, "viewer").await;
    let vs = sign_in(&env, &viewer).await;
    let vkeys = get(&env, Some(&vs), "/ui/keys").await;
    assert_eq!(vkeys.status, 200);
    assert!(
        vkeys.html.contains("from-ui")
            && vkeys
                .html
                .contains("signed in as a <strong>viewer</strong>")
    );
    assert!(!vkeys.html.contains("id=\"create-key\"") && !vkeys.html.contains("data-revoke="));
    let vcsrf = vkeys.csrf();
    let keys_now = count(env.admin_get("/admin/v1/keys?include_revoked=true").await);
    for path in ["/ui/keys".to_string(), format!("/ui/keys/{made_id}/revoke")] {
        let p = post(
            &env,
            Some(&vs),
            &path,
            &[("csrf", &vcsrf), ("name", "viewer-key")],
            &[],
        )
        .await;
        assert_eq!(p.status, 403, "{path}");
        assert!(
            p.html.contains("a viewer may read but not change anything"),
            "{}",
            p.html
        );
    }
    assert_eq!(
        count(env.admin_get("/admin/v1/keys?include_revoked=true").await),
        keys_now
    );
    let api = env
        .http
        .delete(env.url(&format!("/admin/v1/keys/{made_id}")))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    expect_error(api, 403, "permission_denied").await;
    assert_eq!(
        env.chat(&key, body.clone()).await.status(),
        200,
        "still active"
    );
    // A viewer may sign out.
    assert_eq!(
        post(&env, Some(&vs), "/ui/logout", &[("csrf", &vcsrf)], &[])
            .await
            .status,
        303
    );

    // The admin revokes it from the page: redirected with a notice, the key stops working.
    let p = post(
        &env,
        Some(&admin),
        &format!("/ui/keys/{made_id}/revoke"),
        &[("csrf", &csrf)],
        &[],
    )
    .await;
    assert_eq!(p.status, 303, "{}", p.html);
    assert_eq!(p.location(), format!("/ui/keys?revoked={made_id}"));
    let notice = get(&env, Some(&admin), p.location()).await;
    assert!(notice.html.contains("revoked."));
    let r = env.chat(&key, body).await;
    expect_error(r, 401, "invalid_api_key").await;
    let again = post(
        &env,
        Some(&admin),
        &format!("/ui/keys/{made_id}/revoke"),
        &[("csrf", &csrf)],
        &[],
    )
    .await;
    assert_eq!(again.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_filters_and_unknown_pages_are_html_errors_not_500s() {
    let env = TestEnv::start().await;
    let s = sign_in(&env, MASTER).await;
    for (path, status, says) in [
        (
            "/ui/?from=yesterday",
            400,
            "&#39;from&#39; must be an RFC 3339 timestamp",
        ),
        (
            "/ui/?from=2026-01-02&to=2026-01-01",
            400,
            "&#39;from&#39; must be before &#39;to&#39;",
        ),
        (
            "/ui/?from=2000-01-01&to=2026-01-01",
            400,
            "longer than server.max_report_days",
        ),
        (
            "/ui/?by=colour",
            400,
            "&#39;by&#39; must be one of tenant, model, provider, feature",
        ),
        (
            "/ui/requests?outcome=bogus",
            400,
            "&#39;outcome&#39; must be ok, rejected, failed or cancelled",
        ),
        (
            "/ui/requests?cache_status=warm",
            400,
            "&#39;cache_status&#39; must be hit, miss, bypass or none",
        ),
        (
            "/ui/requests?from=2026-13-45",
            400,
            "&#39;from&#39; must be",
        ),
        ("/ui/requests?to=%3Cscript%3E", 400, "&#39;to&#39; must be"),
        ("/ui/requests?cursor=zz", 400, "invalid page cursor"),
        (
            "/ui/requests?limit=0",
            400,
            "&#39;limit&#39; must be an integer",
        ),
        ("/ui/tenants?to=soon", 400, "&#39;to&#39; must be"),
        ("/ui/finance?from=x", 400, "&#39;from&#39; must be"),
        (
            "/ui/finance/focus?from=x&to=y",
            400,
            "&#39;from&#39; must be",
        ),
        (
            "/ui/finance/focus?from=2026-01-01&to=2026-01-02&format=xlsx",
            400,
            "&#39;format&#39; must be csv or parquet",
        ),
        ("/ui/policies?cursor=zz", 400, "invalid page cursor"),
        ("/ui/deployments?cursor=zz", 400, "invalid page cursor"),
        ("/ui/requests/req_nope", 404, "no ledger row for request"),
        ("/ui/nowhere", 404, "the dashboard has no such page"),
    ] {
        let p = get(&env, Some(&s), path).await;
        assert_eq!(p.status, status, "{path}: {}", p.html);
        assert_html(&p);
        assert!(p.html.contains(says), "{path}: {}", p.html);
        assert!(p.html.contains("class=\"msg error\""), "{path}");
    }
    // A method a page does not take: a page too (not the API's JSON), naming what it takes.
    for path in ["/ui/login", "/ui/assets/tollgate.css"] {
        let p = page(client().put(env.url(path)).send().await.unwrap()).await;
        assert_eq!(p.status, 405, "{path}: {}", p.html);
        assert_html(&p);
        assert!(
            p.html.contains("does not take that kind of request"),
            "{path}"
        );
        assert!(
            p.headers["allow"].to_str().unwrap().contains("GET"),
            "{path}"
        );
    }
    // Every page says how long the server took, and nothing else.
    let p = get(&env, Some(&s), "/ui/budgets").await;
    let timing = p.headers["server-timing"].to_str().unwrap();
    assert!(
        timing.starts_with("app;dur=") && timing[8..].parse::<f64>().is_ok(),
        "{timing}"
    );
    // The values asked for stay in the form, escaped.
    let p = get(&env, Some(&s), "/ui/requests?outcome=%3Cb%3E&tenant=%22x").await;
    assert!(
        p.html.contains("<option value=\"&lt;b&gt;\" selected>")
            && p.html.contains("value=\"&quot;x\"")
    );
}

/// `<script>` in everything a client or an admin names: tenant, feature, tags, user, model,
/// key name, budget and policy scopes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_escapes_user_input() {
    let xss = "<script>alert(1)</script>";
    let env = TestEnv::with(Opts {
        extra_yaml: format!(
            "budgets:\n  - {{name: xss-budget, scope: {{tenant: \"{xss}\"}}, limit_usd: \"5\", window: day, mode: soft}}\n\
             policies:\n  - name: xss-policy\n    scope: {{tenant: \"{xss}\"}}\n    budget: xss-budget\n    mode: shadow\n    steps:\n      - when: {{utilization_pct: 1}}\n        then: [{{downgrade: {{gpt-4o: gpt-4o-mini}}}}]\n"
        ),
        ..Opts::default()
    })
    .await;
    let (key, key_id) = env
        .create_key(json!({"name": format!("key {xss}"), "team": xss, "allow_tenant_header": true}))
        .await;
    let headers = [
        ("x-tollgate-tenant", xss),
        ("x-tollgate-feature", xss),
        ("x-tollgate-user", xss),
        ("x-tollgate-tags", "k=<script>alert(2)</script>"),
    ];
    let ok = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(env.chat_with(&key, &headers, &ok).await.status(), 200);
    let unknown = json!({"model": xss, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(env.chat_with(&key, &headers, &unknown).await.status(), 404);
    let rows = env.rows("").await;
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().any(|r| r["requested_model"] == xss), "{rows:?}");

    let s = sign_in(&env, MASTER).await;
    let mut pages = vec![
        "/ui/".to_string(),
        "/ui/?by=model".into(),
        "/ui/?by=feature".into(),
        "/ui/budgets".into(),
        "/ui/requests".into(),
        format!("/ui/requests?tenant={}", enc(xss)),
        "/ui/tenants".into(),
        "/ui/deployments".into(),
        "/ui/keys".into(),
        "/ui/policies".into(),
        "/ui/finance".into(),
    ];
    for r in &rows {
        pages.push(format!(
            "/ui/requests/{}",
            r["request_id"].as_str().unwrap()
        ));
    }
    let escaped = "&lt;script&gt;alert(1)&lt;/script&gt;";
    for path in &pages {
        let p = get(&env, Some(&s), path).await;
        assert_eq!(p.status, 200, "{path}: {}", p.html);
        assert_html(&p);
        assert!(!p.html.contains("<script"), "{path} has a live <script>");
    }
    let seen = |path: &str| {
        let path = path.to_string();
        let env = &env;
        let s = s.clone();
        async move { get(env, Some(&s), &path).await.html }
    };
    assert!(seen("/ui/").await.contains(escaped), "tenant in the chart");
    assert!(seen("/ui/?by=model").await.contains("gpt-4o-mini"));
    assert!(
        seen("/ui/?by=feature").await.contains(escaped),
        "feature in the chart"
    );
    let budgets = seen("/ui/budgets").await;
    assert!(
        budgets.contains(&format!("tenant: {escaped}")),
        "budget scope"
    );
    let requests = seen("/ui/requests").await;
    assert!(requests.contains(escaped) && requests.contains(&format!("key {escaped}")));
    let tenants = seen("/ui/tenants").await;
    assert!(tenants.contains(&format!("data-tenant=\"{escaped}\"")));
    assert!(seen("/ui/keys").await.contains(&format!("key {escaped}")));
    assert!(
        seen("/ui/policies")
            .await
            .contains(&format!("tenant: {escaped}"))
    );
    for r in &rows {
        let id = r["request_id"].as_str().unwrap();
        let detail = seen(&format!("/ui/requests/{id}")).await;
        assert!(detail.contains(escaped), "tenant, feature, user, team");
        if r["outcome"] == "ok" {
            assert!(
                detail.contains("k=&lt;script&gt;alert(2)&lt;/script&gt;"),
                "tags: {detail}"
            );
        } else {
            assert!(detail.contains(&format!("data-field=\"requested_model\">{escaped}")));
        }
        assert!(detail.contains(&key_id));
    }
}

/// USD text (`$0.00123`) to nano-USD.
fn usd_nanos(s: &str) -> i64 {
    nanos(s.trim_start_matches('$'))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_figures_equal_the_admin_apis() {
    let env = TestEnv::with(Opts {
        extra_yaml: "cache:\n  models:\n    gpt-4o-mini: {ttl_secs: 300}\n\
                     budgets:\n  - {name: acme-day, scope: {tenant: acme}, limit_usd: \"0.5\", window: day, mode: hard}\n  - {name: org-month, scope: {}, limit_usd: \"100\", window: month, mode: soft}\n"
            .into(),
        ..Opts::default()
    })
    .await;
    let (acme, _) = env
        .create_key(json!({"name": "acme-app", "tenant": "acme"}))
        .await;
    let (globex, _) = env
        .create_key(json!({"name": "globex-app", "tenant": "globex"}))
        .await;
    for i in 0..6 {
        let (key, model) = if i % 2 == 0 {
            (&acme, "gpt-4o")
        } else {
            (&globex, "gpt-4o-mini")
        };
        let stream = i % 3 == 0;
        let body = json!({"model": model, "stream": stream, "temperature": 0, "messages": [{"role": "user", "content": format!("question {}", i % 4)}]});
        let r = env
            .chat_with(
                key,
                &[("x-tollgate-feature", if i < 3 { "search" } else { "chat" })],
                &body,
            )
            .await;
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await.unwrap();
    }
    // A cache hit (same question again) and a refusal.
    let again = json!({"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": "question 1"}]});
    let r = env.chat(&globex, again).await;
    assert_eq!(r.headers()["x-tollgate-cache"], "hit");
    let bad = json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(env.chat(&acme, bad).await.status(), 404);

    let now = jiff::Timestamp::now().as_millisecond();
    let hour = 3_600_000;
    let to = (now / hour + 1) * hour;
    let from = to - 24 * hour;
    let range = format!("from={from}&to={to}");
    let s = sign_in(&env, MASTER).await;

    // Overview tiles = GET /admin/v1/stats over the same range.
    let before = env.admin_get(&format!("/admin/v1/stats?{range}")).await;
    let ov = get(&env, Some(&s), &format!("/ui/?{range}")).await;
    let after = env.admin_get(&format!("/admin/v1/stats?{range}")).await;
    assert_eq!(ov.status, 200, "{}", ov.html);
    assert_eq!(before["requests"], 8);
    assert_eq!(before["outcomes"]["rejected"], 1);
    // Questions 1 (i = 1, 5, then once more) hit the cache after the first.
    assert_eq!(before["cache"]["hits"], 2);
    let pct = |v: &Value| format!("{:.1}%", v.as_f64().unwrap() * 100.0);
    let ms = |v: &Value| format!("{:.1} ms", v.as_f64().unwrap());
    assert_eq!(ov.figure("requests"), before["requests"].to_string());
    assert_eq!(ov.figure("error_rate"), pct(&before["error_rate"]));
    assert_eq!(
        ov.figure("cache_hit_rate"),
        pct(&before["cache"]["hit_rate"])
    );
    assert_eq!(
        ov.figure("cache_saved"),
        format!("${}", before["cache"]["saved_usd"].as_str().unwrap())
    );
    assert!(usd_nanos(&ov.figure("cache_saved")) > 0);
    assert_eq!(
        ov.figure("cost"),
        format!("${}", before["cost_usd"].as_str().unwrap())
    );
    for (fig, k, p) in [
        ("latency_p50", "latency_ms", "p50"),
        ("latency_p95", "latency_ms", "p95"),
        ("ttft_p50", "ttft_ms", "p50"),
        ("ttft_p95", "ttft_ms", "p95"),
    ] {
        assert_eq!(ov.figure(fig), ms(&before[k][p]), "{fig}");
    }
    assert_eq!(
        ov.figure("day"),
        format!("${}", before["current"]["day_usd"].as_str().unwrap())
    );
    assert_eq!(
        ov.figure("month"),
        format!("${}", before["current"]["month_usd"].as_str().unwrap())
    );
    // The forecast moves with the clock: the page's lies between the API's before and after.
    let forecast = usd_nanos(&ov.figure("forecast"));
    let f = |v: &Value| nanos(v["current"]["month_forecast_usd"].as_str().unwrap());
    assert!(
        f(&before) >= forecast && forecast >= f(&after),
        "{forecast}"
    );
    // The chart's total is the spend report's.
    let spend = env
        .admin_get(&format!("/admin/v1/spend?group_by=hour,tenant&{range}"))
        .await;
    assert!(ov.html.contains(&format!(
        "total ${}",
        spend["total"]["cost_usd"].as_str().unwrap()
    )));
    assert!(ov.html.contains(">acme</th>") && ov.html.contains(">globex</th>"));

    // Requests: the first page is the API's first page, row for row; the next link carries
    // the API's cursor.
    let api = env.admin_get("/admin/v1/requests?limit=3").await;
    let p = get(&env, Some(&s), "/ui/requests?limit=3").await;
    for r in api["data"].as_array().unwrap() {
        let id = r["request_id"].as_str().unwrap();
        assert!(p.html.contains(id), "{id}");
    }
    let cursor = api["next_cursor"].as_str().unwrap();
    assert!(p.html.contains(&format!("cursor={cursor}")), "{}", p.html);
    let p2 = get(
        &env,
        Some(&s),
        &format!("/ui/requests?limit=3&cursor={cursor}"),
    )
    .await;
    let api2 = env
        .admin_get(&format!("/admin/v1/requests?limit=3&cursor={cursor}"))
        .await;
    for r in api2["data"].as_array().unwrap() {
        assert!(p2.html.contains(r["request_id"].as_str().unwrap()));
    }
    // Filters: the same rows as the API with the same filters.
    let hits = env
        .admin_get("/admin/v1/requests?cache_status=hit&tenant=globex")
        .await;
    assert_eq!(hits["data"].as_array().unwrap().len(), 2);
    let p = get(
        &env,
        Some(&s),
        "/ui/requests?cache_status=hit&tenant=globex",
    )
    .await;
    assert_eq!(p.html.matches("href=\"/ui/requests/req_").count(), 2);
    for h in hits["data"].as_array().unwrap() {
        assert!(p.html.contains(h["request_id"].as_str().unwrap()));
    }

    // One request's page shows its row's fields.
    let row = &api["data"][0];
    let id = row["request_id"].as_str().unwrap();
    let one = env.admin_get(&format!("/admin/v1/requests/{id}")).await;
    assert_eq!(&one, row);
    let d = get(&env, Some(&s), &format!("/ui/requests/{id}")).await;
    let field =
        |name: &str| between(&d.html, &format!("data-field=\"{name}\">"), "</dd>").to_string();
    assert_eq!(
        field("effective_cost"),
        format!("${}", row["effective_cost"].as_str().unwrap())
    );
    assert_eq!(field("input_tokens"), row["input_tokens"].to_string());
    assert_eq!(field("output_tokens"), row["output_tokens"].to_string());
    assert_eq!(field("attempts"), row["attempts"].to_string());
    let us = row["latency_us"].as_u64().unwrap();
    assert_eq!(
        field("latency_us"),
        format!("{}.{:03} ms", us / 1000, us % 1000)
    );

    // Budgets: each figure is the budget view's.
    let b = get(&env, Some(&s), "/ui/budgets").await;
    for name in ["acme-day", "org-month"] {
        let before = env.admin_get(&format!("/admin/v1/budgets/{name}")).await;
        let section = between(&b.html, &format!("data-budget=\"{name}\""), "</section>");
        for (fig, k) in [
            ("limit", "limit"),
            ("spent", "spent"),
            ("reserved", "reserved"),
            ("remaining", "remaining"),
        ] {
            assert_eq!(
                figure_in(section, fig),
                format!("${}", before[k].as_str().unwrap()),
                "{name} {fig}"
            );
        }
        assert_eq!(
            figure_in(section, "utilization"),
            format!("{}%", before["utilization_pct"].as_str().unwrap())
        );
        assert!(nanos(before["spent"].as_str().unwrap()) > 0, "{before}");
    }

    // Tenants: spend and requests per tenant = the spend report grouped by tenant.
    let t = get(&env, Some(&s), &format!("/ui/tenants?{range}")).await;
    let by_tenant = env
        .admin_get(&format!("/admin/v1/spend?group_by=tenant&{range}"))
        .await;
    for line in by_tenant["data"].as_array().unwrap() {
        let tenant = line["tenant"].as_str().unwrap();
        let row = between(&t.html, &format!("data-tenant=\"{tenant}\""), "</tr>");
        assert!(
            row.contains(&format!(">${}<", line["cost_usd"].as_str().unwrap())),
            "{tenant}: {row}"
        );
        assert!(
            row.contains(&format!(">{}<", line["requests"])),
            "{tenant}: {row}"
        );
    }

    // Deployments: each breaker state as the API reports it.
    let dep = get(&env, Some(&s), "/ui/deployments").await;
    let api = env.admin_get("/admin/v1/deployments").await;
    let states: Vec<String> = api["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["health"]["state"].as_str().unwrap().replace('_', "-"))
        .collect();
    assert_eq!(
        dep.html.matches("data-figure=\"breaker\"").count(),
        states.len()
    );
    assert!(
        states
            .iter()
            .all(|st| dep.html.contains(&format!("data-figure=\"breaker\">{st}<")))
    );

    // Finance: showback total and the ledger total as the API has them.
    let fin = get(&env, Some(&s), &format!("/ui/finance?{range}")).await;
    assert_eq!(fin.status, 200, "{}", fin.html);
    let sb = env.admin_get(&format!("/admin/v1/showback?{range}")).await;
    assert_eq!(
        fin.figure("ledger-total"),
        format!("${}", sb["ledger_total_usd"].as_str().unwrap())
    );
    // The export link downloads the API's file, byte for byte.
    let file = client()
        .get(env.url(&format!(
            "/ui/finance/focus?{range}&version=1.2&dataset=cost&format=csv"
        )))
        .header("cookie", format!("tollgate_session={s}"))
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), 200);
    assert!(
        file.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    let ui_csv = file.text().await.unwrap();
    let api_csv = env
        .http
        .get(env.url(&format!(
            "/admin/v1/exports/focus?{range}&version=1.2&dataset=cost&format=csv"
        )))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(ui_csv, api_csv);
}

/// `tollgate demo` without `--serve` still runs to the end and exits by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_exits_by_itself_without_serve() {
    let out = tokio::task::spawn_blocking(|| crate::cli::run(&["demo", "--requests", "8"]))
        .await
        .unwrap();
    let stdout = crate::cli::text(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        crate::cli::text(&out.stderr)
    );
    assert!(
        stdout.contains("Done in") && stdout.contains("tollgate demo --serve"),
        "{stdout}"
    );
    assert!(!stdout.contains("Dashboard:"));
}

/// `tollgate demo --serve`: after the traffic the gateway keeps running, the dashboard URL
/// and a viewer token are printed, the pages show the demo's traffic to that viewer, and
/// SIGTERM (what Ctrl-C's SIGINT also does) stops it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serve_keeps_the_dashboard_up_until_stopped() {
    use std::io::BufRead;
    let mut child = crate::cli::tollgate()
        .args(["demo", "--serve", "--requests", "8"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let mut guard = crate::cli::ChildGuard(Some(child));
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (url, viewer, rx) = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        let mut url = None;
        loop {
            let line = rx
                .recv_timeout(HANG_GUARD)
                .unwrap_or_else(|_| panic!("no dashboard line: {seen:#?}"));
            seen.push(line.clone());
            if let Some(u) = line.strip_prefix("Dashboard: ") {
                url = Some(u.trim().to_string());
            }
            if let Some(u) = &url
                && line.trim().starts_with("tga-")
            {
                return (u.clone(), line.trim().to_string(), rx);
            }
        }
    })
    .await
    .unwrap();
    let base = url.strip_suffix("/ui/").unwrap().to_string();
    let http = client();
    let login = http
        .post(format!("{base}/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[("credential", &viewer)]))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let home = http
        .get(&url)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(home.status(), 200);
    let html = home.text().await.unwrap();
    assert!(html.contains("<strong id=\"role\">viewer</strong>"));
    let requests: u64 = figure_in(&html, "requests").parse().unwrap();
    assert!(
        requests > 8,
        "the demo's traffic is on the overview: {requests}"
    );
    let keys = http
        .get(format!("{base}/ui/keys"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let keys = keys.text().await.unwrap();
    assert!(keys.contains("acme-backend") && !keys.contains("id=\"create-key\""));

    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut child = guard.0.take().unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + HANG_GUARD;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "demo --serve did not stop"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0));
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(rest.iter().any(|l| l.starts_with("Done in")), "{rest:#?}");
}
