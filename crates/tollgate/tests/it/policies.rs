//! Spend policies over real HTTP (docs/contracts.md §1 "Policy", §4 `x-tollgate-policy`,
//! `/admin/v1/policies`): graded ladders with hysteresis, shadow mode, alerts delivered once per
//! window, revenue-share triggers, and the admin API.
//!
//! Costs are exact: every request is the one-word prompt "hi" (8 prompt tokens on gpt-4o and
//! gpt-4o-mini) with an explicit `max_tokens`, and the simulator is told to answer up to 5,000
//! tokens, so it answers exactly `max_tokens`. gpt-4o costs 8 × 2,500 + t × 10,000 nano-USD,
//! gpt-4o-mini 8 × 150 + t × 600. Requests are sequential: when a policy is evaluated nothing is
//! reserved, so utilisation is settled spend ÷ limit exactly.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tollgate_sim::SimConfig;

use crate::harness::*;

const HI_TOKENS: u64 = 8;

fn gpt4o_cost(out: i64) -> i64 {
    8 * 2_500 + out * 10_000
}

fn mini_cost(out: i64) -> i64 {
    8 * 150 + out * 600
}

fn hi(model: &str, max_tokens: u64) -> Value {
    json!({"model": model, "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": "hi"}]})
}

/// Decimal USD of a nano-USD amount.
fn usd(nanos: i64) -> String {
    format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000)
}

fn opts(extra_yaml: String) -> Opts {
    Opts {
        sim: SimConfig {
            completion_tokens: 5_000,
            ..SimConfig::default()
        },
        extra_yaml,
        ..Opts::default()
    }
}

/// What one served or refused request showed.
struct Seen {
    status: u16,
    policy: Option<String>,
    served: Option<String>,
    request_id: String,
    body: Value,
    should_retry: Option<String>,
}

async fn send(env: &TestEnv, key: &str, body: Value) -> Seen {
    let r = env.chat(key, body).await;
    let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string());
    let policy = h("x-tollgate-policy");
    let served = h("x-tollgate-served-model");
    let should_retry = h("x-should-retry");
    let request_id = h("x-tollgate-request-id").expect("request id");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    Seen {
        status,
        policy,
        served,
        request_id,
        body,
        should_retry,
    }
}

/// Sends and expects a 200 with exactly `out` completion tokens served by `served`.
async fn ok(env: &TestEnv, key: &str, body: Value, served: &str, out: u64) -> Seen {
    let s = send(env, key, body).await;
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!(s.served.as_deref(), Some(served), "{}", s.body);
    assert_eq!(s.body["usage"]["prompt_tokens"], HI_TOKENS, "{}", s.body);
    assert_eq!(s.body["usage"]["completion_tokens"], out, "{}", s.body);
    s
}

/// Expects a well-formed `policy_blocked` refusal naming `policy`.
fn expect_blocked(s: &Seen, policy: &str) {
    assert_eq!(s.status, 429, "{}", s.body);
    assert_error_shape(&s.body);
    let e = &s.body["error"];
    assert_eq!(e["code"], "policy_blocked", "{e}");
    assert_eq!(e["type"], "insufficient_quota", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains(policy),
        "names the policy: {e}"
    );
    assert_eq!(s.should_retry.as_deref(), Some("false"));
    assert_eq!(s.policy, None, "a refusal serves nothing");
}

fn budget_yaml(name: &str, limit: i64, mode: &str) -> String {
    format!(
        "budgets:\n  - {{name: {name}, scope: {{tenant: acme}}, limit_usd: \"{}\", window: month, mode: {mode}}}\n",
        usd(limit)
    )
}

async fn send_admin(
    env: &TestEnv,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = env.http.request(method, env.url(path)).bearer_auth(MASTER);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("admin request");
    let status = r.status().as_u16();
    let v: Value = r.json().await.expect("admin json");
    (status, v)
}

async fn decisions(env: &TestEnv, policy: &str) -> Vec<Value> {
    env.admin_get(&format!(
        "/admin/v1/policies/decisions?policy={policy}&limit=100"
    ))
    .await["data"]
        .as_array()
        .unwrap()
        .clone()
}

async fn level(env: &TestEnv, policy: &str) -> u64 {
    let v = env.admin_get(&format!("/admin/v1/policies/{policy}")).await;
    v["state"]["level"]
        .as_u64()
        .unwrap_or_else(|| panic!("no state.level: {v}"))
}

// ---- a webhook receiver -------------------------------------------------------------------

pub(crate) type Hooks = Arc<Mutex<Vec<(String, Value)>>>;

/// A local HTTP server recording every POST as (path, JSON body); answers 200.
pub(crate) async fn spawn_webhook() -> (String, Hooks) {
    let got: Hooks = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let app = axum::Router::new().fallback(axum::routing::post(
        move |uri: axum::http::Uri, body: bytes::Bytes| {
            let g = g.clone();
            async move {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                g.lock().unwrap().push((uri.path().to_string(), v));
                "ok"
            }
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), got)
}

pub(crate) async fn wait_hooks(hooks: &Hooks, n: usize) -> Vec<(String, Value)> {
    eventually(&format!("{n} webhook deliveries"), || async {
        hooks.lock().unwrap().len() >= n
    })
    .await;
    hooks.lock().unwrap().clone()
}

// ---- the graded ladder ----------------------------------------------------------------------

/// Limit of the ladder's budget: $0.01.
const L: i64 = 10_000_000;
/// The ladder's output cap (two capped gpt-4o-mini answers overshoot the limit).
const CAP: u64 = 1_500;

fn ladder_yaml(hook: &str) -> String {
    let mut y = budget_yaml("acme-monthly", L, "soft");
    y.push_str(&format!(
        "policies:\n\
         \x20 - name: acme-ladder\n\
         \x20   scope: {{tenant: acme}}\n\
         \x20   budget: acme-monthly\n\
         \x20   mode: enforce\n\
         \x20   hysteresis_pct: 5\n\
         \x20   steps:\n\
         \x20     - when: {{utilization_pct: 50}}\n\
         \x20       then: [{{alert: {{webhook: \"{hook}/ladder/1\"}}}}]\n\
         \x20     - when: {{utilization_pct: 70}}\n\
         \x20       then: [{{downgrade: {{gpt-4o: gpt-4o-mini}}}}]\n\
         \x20     - when: {{utilization_pct: 85}}\n\
         \x20       then: [{{cap_max_tokens: {CAP}}}]\n\
         \x20     - when: {{utilization_pct: 100}}\n\
         \x20       then: [{{alert: {{webhook: \"{hook}/ladder/4\"}}}}, block]\n"
    ));
    y
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graded_ladder_alerts_downgrades_caps_then_blocks() {
    let (hook, hooks) = spawn_webhook().await;
    let env = TestEnv::with(opts(ladder_yaml(&hook))).await;
    let key = env.key().await;
    const DOWN: &str = "acme-ladder/2:downgrade=gpt-4o->gpt-4o-mini";
    let cap_note = format!("acme-ladder/3:cap_max_tokens={CAP}");
    let both = format!("{DOWN},{cap_note}");

    // (request, served model, completion tokens, x-tollgate-policy, spend after)
    let mut spent = 0;
    let mut ids = Vec::new();
    // 1. 0 % → nothing in force. Spend → 50 %.
    let s = ok(&env, &key, hi("gpt-4o", 498), "gpt-4o", 498).await;
    assert_eq!(s.policy, None);
    spent += gpt4o_cost(498);
    assert_eq!(spent * 100, 50 * L);
    ids.push((s.request_id, "".to_string(), "gpt-4o", gpt4o_cost(498)));
    // 2. 50 % → step 1 (alert only: nothing applied to the request). Spend → 70 %.
    let s = ok(&env, &key, hi("gpt-4o", 198), "gpt-4o", 198).await;
    assert_eq!(s.policy, None, "an alert is not applied to the request");
    spent += gpt4o_cost(198);
    assert_eq!(spent * 100, 70 * L);
    ids.push((s.request_id, "".to_string(), "gpt-4o", gpt4o_cost(198)));
    assert_eq!(level(&env, "acme-ladder").await, 1);
    // 3. 70 % → step 2: gpt-4o is served as gpt-4o-mini. Spend → 85 %.
    let s = ok(&env, &key, hi("gpt-4o", 2_498), "gpt-4o-mini", 2_498).await;
    assert_eq!(s.policy.as_deref(), Some(DOWN));
    assert_eq!(s.body["model"], "gpt-4o-mini");
    spent += mini_cost(2_498);
    assert_eq!(spent * 100, 85 * L);
    ids.push((
        s.request_id,
        DOWN.to_string(),
        "gpt-4o-mini",
        mini_cost(2_498),
    ));
    assert_eq!(level(&env, "acme-ladder").await, 2);
    // 4.–5. ≥ 85 % → step 3: downgraded *and* capped (the ladder is cumulative). The second
    // capped answer overshoots the (soft) limit.
    for i in 0..2 {
        let s = ok(&env, &key, hi("gpt-4o", 4_000), "gpt-4o-mini", CAP).await;
        assert_eq!(s.policy.as_deref(), Some(both.as_str()));
        spent += mini_cost(CAP as i64);
        // The second one exceeds the soft budget: noted too (not in the header).
        let notes = if i == 0 {
            both.clone()
        } else {
            format!("{both},soft_exceeded=acme-monthly")
        };
        ids.push((s.request_id, notes, "gpt-4o-mini", mini_cost(CAP as i64)));
        assert_eq!(level(&env, "acme-ladder").await, 3);
    }
    assert!(spent >= L && spent - mini_cost(CAP as i64) < L);
    // 6.–7. ≥ 100 % → step 4: blocked, whatever the model.
    for model in ["gpt-4o", "gpt-4o-mini"] {
        let s = send(&env, &key, hi(model, 16)).await;
        expect_blocked(&s, "acme-ladder");
        let msg = s.body["error"]["message"].as_str().unwrap();
        assert!(msg.contains("step 4"), "{msg}");
        ids.push((s.request_id, "acme-ladder/4:block".to_string(), "", 0));
    }
    assert_eq!(level(&env, "acme-ladder").await, 4);

    // One row per request, recording exactly what applied.
    let rows = env.rows("tenant=acme").await;
    assert_eq!(rows.len(), ids.len());
    for (id, actions, served, cost) in &ids {
        let row = env.row(id).await;
        assert_eq!(row["policy_actions"].as_str().unwrap(), actions, "{row}");
        assert_eq!(
            nanos(row["effective_cost"].as_str().unwrap()),
            *cost,
            "{row}"
        );
        if served.is_empty() {
            assert_eq!(row["status"], 429, "{row}");
            assert_eq!(row["error_code"], "policy_blocked", "{row}");
        } else {
            assert_eq!(row["status"], 200, "{row}");
            assert_eq!(row["served_model"], *served, "{row}");
        }
    }
    let b = env.admin_get("/admin/v1/budgets/acme-monthly").await;
    assert_eq!(nanos(b["spent"].as_str().unwrap()), spent, "{b}");

    // The decision log: one level change per step, newest first, and the two alerts.
    let log = decisions(&env, "acme-ladder").await;
    let changes: Vec<(u64, u64)> = log
        .iter()
        .filter(|e| e["kind"] == "level_change")
        .map(|e| {
            (
                e["from_level"].as_u64().unwrap(),
                e["to_level"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(changes, [(3, 4), (2, 3), (1, 2), (0, 1)], "{log:#?}");
    let seqs: Vec<u64> = log.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    for e in &log {
        assert_eq!(e["shadow"], false, "{e}");
    }
    // The block's and the cap's entries counted the requests they were applied to.
    let to = |l: u64| {
        log.iter()
            .find(|e| e["kind"] == "level_change" && e["to_level"] == l)
            .unwrap()
    };
    assert!(
        to(3)["reason"]
            .as_str()
            .unwrap()
            .contains("utilization 85% ≥ 85% of acme-monthly"),
        "{}",
        to(3)
    );
    let block = to(4)["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "block")
        .unwrap()
        .clone();
    assert_eq!(block["applied"], 2, "{log:#?}");

    // Both alerts delivered, in order, each once (the alert sender is FIFO: a repeat of step 1
    // would have arrived before step 4's).
    let got = wait_hooks(&hooks, 2).await;
    let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["/ladder/1", "/ladder/4"], "{got:#?}");
    assert_eq!(got[0].1["policy"], "acme-ladder");
    assert_eq!(got[0].1["step"], 1);
    assert_eq!(got[1].1["step"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_is_delivered_once_per_window() {
    let (hook, hooks) = spawn_webhook().await;
    let mut y = budget_yaml("acme-monthly", L, "soft");
    y.push_str(&format!(
        "policies:\n\
         \x20 - name: watch\n\
         \x20   scope: {{tenant: acme}}\n\
         \x20   budget: acme-monthly\n\
         \x20   mode: enforce\n\
         \x20   steps:\n\
         \x20     - when: {{utilization_pct: 10}}\n\
         \x20       then: [{{alert: {{webhook: \"{hook}/watch/10\"}}}}]\n\
         \x20     - when: {{utilization_pct: 90}}\n\
         \x20       then: [{{alert: {{webhook: \"{hook}/watch/90\"}}}}]\n"
    ));
    let env = TestEnv::with(opts(y)).await;
    let key = env.key().await;
    // 10 % exactly: 1,000,000 = 1,200 + 600 × 1,664.666… — use gpt-4o: 20,000 + 98 × 10,000.
    ok(&env, &key, hi("gpt-4o", 98), "gpt-4o", 98).await;
    // Level 1 reached on this request; the alert goes out.
    ok(&env, &key, hi("gpt-4o-mini", 1), "gpt-4o-mini", 1).await;
    let got = wait_hooks(&hooks, 1).await;
    assert_eq!(got[0].0, "/watch/10");
    let p = &got[0].1;
    assert_eq!(p["policy"], "watch", "{p}");
    assert_eq!(p["step"], 1, "{p}");
    assert_eq!(p["trigger"], json!({"utilization_pct": 10}), "{p}");
    assert_eq!(p["shadow"], false, "{p}");
    assert!(
        p["reason"].as_str().unwrap().contains("watch step 1"),
        "{p}"
    );
    // More requests at the same level: no new alert.
    for _ in 0..5 {
        ok(&env, &key, hi("gpt-4o-mini", 1), "gpt-4o-mini", 1).await;
    }
    assert_eq!(level(&env, "watch").await, 1);
    // Up to 90 %: the sentinel step fires; delivery is FIFO, so a repeat of step 1 would have
    // arrived before it.
    let spent: i64 = gpt4o_cost(98) + 6 * mini_cost(1);
    let to_90 = 9 * L / 10 - spent; // in gpt-4o: 20,000 + t × 10,000
    let t = (to_90 - 20_000 + 9_999) / 10_000;
    ok(&env, &key, hi("gpt-4o", t as u64), "gpt-4o", t as u64).await;
    ok(&env, &key, hi("gpt-4o-mini", 1), "gpt-4o-mini", 1).await;
    let got = wait_hooks(&hooks, 2).await;
    let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["/watch/10", "/watch/90"], "{got:#?}");
    assert_eq!(got[1].1["step"], 2);
    assert_eq!(got[1].1["level"], 2);
    // The decision log records each alert once.
    let alerts: Vec<u64> = decisions(&env, "watch")
        .await
        .iter()
        .filter(|e| e["kind"] == "alert")
        .map(|e| e["actions"][0]["step"].as_u64().unwrap())
        .collect();
    assert_eq!(alerts, [2, 1]);
}

// ---- hysteresis -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hysteresis_holds_a_level_within_the_margin_and_steps_down_below_it() {
    let mut y = budget_yaml("acme-monthly", L, "soft");
    y.push_str(
        "policies:\n\
         \x20 - name: cheaper\n\
         \x20   scope: {tenant: acme}\n\
         \x20   budget: acme-monthly\n\
         \x20   mode: enforce\n\
         \x20   hysteresis_pct: 5\n\
         \x20   steps:\n\
         \x20     - when: {utilization_pct: 50}\n\
         \x20       then: [{downgrade: {gpt-4o: gpt-4o-mini}}]\n",
    );
    let env = TestEnv::with(opts(y)).await;
    let key = env.key().await;
    const DOWN: &str = "cheaper/1:downgrade=gpt-4o->gpt-4o-mini";
    let patch_limit = |limit: i64| {
        let env = &env;
        async move {
            let (st, v) = send_admin(
                env,
                reqwest::Method::PATCH,
                "/admin/v1/budgets/acme-monthly",
                Some(json!({"limit_usd": usd(limit)})),
            )
            .await;
            assert_eq!(st, 200, "{v}");
            assert_eq!(nanos(v["limit"].as_str().unwrap()), limit, "{v}");
        }
    };

    // → 50 %.
    ok(&env, &key, hi("gpt-4o", 498), "gpt-4o", 498).await;
    // 50 %: downgraded. → 5,600,000 (56 %).
    let s = ok(&env, &key, hi("gpt-4o", 998), "gpt-4o-mini", 998).await;
    assert_eq!(s.policy.as_deref(), Some(DOWN));
    let spent = gpt4o_cost(498) + mini_cost(998);
    assert_eq!(spent, 5_600_000);

    // Limit $0.012: 46.67 % — below 50 %, within the 5-point margin: the level holds.
    patch_limit(12_000_000).await;
    let s = ok(&env, &key, hi("gpt-4o", 1), "gpt-4o-mini", 1).await;
    assert_eq!(s.policy.as_deref(), Some(DOWN), "held within the margin");
    let spent = spent + mini_cost(1);
    assert_eq!(level(&env, "cheaper").await, 1);
    // 5,601,800 ÷ 12,450,000 = 44.99 % — below the margin (45 %): the level steps down.
    assert!(spent * 10_000 / 12_450_000 < 4_500);
    assert!(spent * 10_000 / 12_000_000 >= 4_500);
    patch_limit(12_450_000).await;
    let s = ok(&env, &key, hi("gpt-4o", 1), "gpt-4o", 1).await;
    assert_eq!(s.policy, None, "the downgrade stopped");
    assert_eq!(level(&env, "cheaper").await, 0);
    let row = env.row(&s.request_id).await;
    assert_eq!(row["policy_actions"], "", "{row}");
    assert_eq!(row["served_model"], "gpt-4o", "{row}");

    let log = decisions(&env, "cheaper").await;
    assert_eq!(log.len(), 2, "{log:#?}");
    assert_eq!(
        (log[0]["from_level"].as_u64(), log[0]["to_level"].as_u64()),
        (Some(1), Some(0))
    );
    let reason = log[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("cheaper left step 1") && reason.contains("44.99%"),
        "{reason}"
    );
    assert_eq!(
        (log[1]["from_level"].as_u64(), log[1]["to_level"].as_u64()),
        (Some(0), Some(1))
    );
}

// ---- shadow ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_policy_never_blocks_until_turned_on() {
    let mut y = budget_yaml("acme-monthly", L, "soft");
    y.push_str(
        "policies:\n\
         \x20 - name: trial-stop\n\
         \x20   scope: {tenant: acme}\n\
         \x20   budget: acme-monthly\n\
         \x20   mode: shadow\n\
         \x20   steps:\n\
         \x20     - when: {utilization_pct: 10}\n\
         \x20       then: [block]\n",
    );
    let env = TestEnv::with(opts(y)).await;
    let key = env.key().await;
    // → 10 %.
    ok(&env, &key, hi("gpt-4o", 98), "gpt-4o", 98).await;
    // Would block, never does.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let s = ok(&env, &key, hi("gpt-4o", 1), "gpt-4o", 1).await;
        assert_eq!(s.policy, None, "a shadow decision is not shown as applied");
        ids.push(s.request_id);
    }
    for id in &ids {
        let row = env.row(id).await;
        assert_eq!(row["status"], 200, "{row}");
        assert_eq!(row["policy_actions"], "shadow:trial-stop/1:block", "{row}");
    }
    let log = decisions(&env, "trial-stop").await;
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(log[0]["kind"], "level_change");
    assert_eq!(log[0]["to_level"], 1);
    assert_eq!(log[0]["shadow"], true);
    assert_eq!(
        log[0]["actions"][0]["applied"], 3,
        "would-have-applied count"
    );

    // PATCH {"mode":"enforce"} turns it on: the next request is refused.
    let (st, v) = send_admin(
        &env,
        reqwest::Method::PATCH,
        "/admin/v1/policies/trial-stop",
        Some(json!({"mode": "enforce"})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["mode"], "enforce");
    assert_eq!(v["state"]["level"], 1, "the level is kept: {v}");
    let s = send(&env, &key, hi("gpt-4o", 1)).await;
    expect_blocked(&s, "trial-stop");
    let row = env.row(&s.request_id).await;
    assert_eq!(row["policy_actions"], "trial-stop/1:block", "{row}");
}

// ---- revenue share --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revenue_share_trigger_fires_when_spend_crosses_the_share() {
    // Revenue $0.1 a month; a month budget's window revenue is exactly that: 5 % of it is
    // 5,000,000 nano-USD.
    let mut y = budget_yaml("acme-monthly", 1_000_000_000, "soft");
    y.push_str(
        "tenants:\n  acme: {revenue_usd_per_month: \"0.1\"}\n\
         policies:\n\
         \x20 - name: margin\n\
         \x20   scope: {tenant: acme}\n\
         \x20   budget: acme-monthly\n\
         \x20   mode: enforce\n\
         \x20   steps:\n\
         \x20     - when: {revenue_share_pct: 5}\n\
         \x20       then: [block]\n",
    );
    let env = TestEnv::with(opts(y)).await;
    let key = env.key().await;
    const SHARE: i64 = 5_000_000;
    // → 4,990,000.
    ok(&env, &key, hi("gpt-4o", 497), "gpt-4o", 497).await;
    // → 4,999,000: 1,000 nano-USD short of the share (4.999 %).
    ok(&env, &key, hi("gpt-4o-mini", 13), "gpt-4o-mini", 13).await;
    let spent = gpt4o_cost(497) + mini_cost(13);
    assert_eq!(spent, SHARE - 1_000);
    // Below the share: served. → 5,000,800.
    let s = ok(&env, &key, hi("gpt-4o-mini", 1), "gpt-4o-mini", 1).await;
    assert_eq!(s.policy, None);
    assert_eq!(level(&env, "margin").await, 0);
    // Crossed: blocked.
    let s = send(&env, &key, hi("gpt-4o-mini", 1)).await;
    expect_blocked(&s, "margin");
    let msg = s.body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("AI cost 5% of tenant acme's revenue"), "{msg}");
    assert_eq!(level(&env, "margin").await, 1);
    // Another tenant is not in scope.
    let (other, _) = env
        .create_key(json!({"name": "other", "tenant": "globex"}))
        .await;
    ok(&env, &other, hi("gpt-4o-mini", 1), "gpt-4o-mini", 1).await;
}

// ---- the admin API --------------------------------------------------------------------------

fn def(name: &str, mode: &str) -> Value {
    json!({"name": name, "scope": {"tenant": "acme"}, "budget": "acme-monthly", "mode": mode,
           "hysteresis_pct": 5,
           "steps": [
               {"when": {"utilization_pct": 10}, "then": [{"cap_max_tokens": 3}]},
               {"when": {"utilization_pct": 20}, "then": ["block"]}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_policies_crud_decisions_and_restart() {
    use reqwest::Method;
    let mut env = TestEnv::with(opts(budget_yaml("acme-monthly", L, "soft"))).await;
    let key = env.key().await;

    // Master key required, on every route.
    for (m, p) in [
        (Method::GET, "/admin/v1/policies"),
        (Method::POST, "/admin/v1/policies"),
        (Method::GET, "/admin/v1/policies/p"),
        (Method::PATCH, "/admin/v1/policies/p"),
        (Method::DELETE, "/admin/v1/policies/p"),
        (Method::GET, "/admin/v1/policies/decisions"),
    ] {
        for auth in [None, Some(key.as_str()), Some("wrong")] {
            let mut req = env
                .http
                .request(m.clone(), env.url(p))
                .json(&def("p", "enforce"));
            if let Some(a) = auth {
                req = req.bearer_auth(a);
            }
            let r = req.send().await.unwrap();
            expect_error(r, 401, "invalid_api_key").await;
        }
    }
    assert!(
        env.admin_get("/admin/v1/policies").await["data"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Create: 201 with the definition and its state; 409 on a duplicate.
    let (st, v) = send_admin(
        &env,
        Method::POST,
        "/admin/v1/policies",
        Some(def("cap", "shadow")),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["name"], "cap");
    assert_eq!(v["mode"], "shadow");
    assert_eq!(v["steps"], def("cap", "shadow")["steps"]);
    assert_eq!(v["state"]["level"], 0, "{v}");
    assert_eq!(v["state"]["instance"], "tenant=acme", "{v}");
    let (st, v) = send_admin(
        &env,
        Method::POST,
        "/admin/v1/policies",
        Some(def("cap", "enforce")),
    )
    .await;
    assert_eq!(st, 409, "{v}");
    assert_error_shape(&v);
    assert_eq!(v["error"]["code"], "conflict", "{v}");

    // 400 naming the field.
    let mut bad = def("bad", "enforce");
    bad["steps"][1]["when"]["utilization_pct"] = json!(5);
    let (st, v) = send_admin(&env, Method::POST, "/admin/v1/policies", Some(bad)).await;
    assert_eq!(st, 400, "{v}");
    assert_error_shape(&v);
    assert_eq!(v["error"]["param"], "steps[1].when.utilization_pct", "{v}");
    let mut bad = def("bad", "enforce");
    bad["steps"][0]["then"][0] = json!({"cap_max_tokens": 3, "block": true});
    let (st, v) = send_admin(&env, Method::POST, "/admin/v1/policies", Some(bad)).await;
    assert_eq!(st, 400, "{v}");
    let mut bad = def("bad", "enforce");
    bad["mode"] = json!("loud");
    let (st, v) = send_admin(&env, Method::POST, "/admin/v1/policies", Some(bad)).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["param"], "mode", "{v}");
    let (st, v) = send_admin(&env, Method::GET, "/admin/v1/policies/bad", None).await;
    assert_eq!(st, 404, "{v}");

    // A second policy, to delete later.
    let (st, v) = send_admin(
        &env,
        Method::POST,
        "/admin/v1/policies",
        Some(def("doomed", "enforce")),
    )
    .await;
    assert_eq!(st, 201, "{v}");

    // Drive `cap` (shadow) and `doomed` (enforce) to level 1: 10 % of $0.01.
    ok(&env, &key, hi("gpt-4o", 98), "gpt-4o", 98).await;
    let s = ok(&env, &key, hi("gpt-4o-mini", 16), "gpt-4o-mini", 3).await;
    assert_eq!(s.policy.as_deref(), Some("doomed/1:cap_max_tokens=3"));
    assert_eq!(level(&env, "cap").await, 1);

    // PATCH: turn `cap` on; a bad patch names the field; a rename is refused.
    let (st, v) = send_admin(
        &env,
        Method::PATCH,
        "/admin/v1/policies/cap",
        Some(json!({"hysteresis_pct": 200})),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["param"], "hysteresis_pct", "{v}");
    let (st, v) = send_admin(
        &env,
        Method::PATCH,
        "/admin/v1/policies/cap",
        Some(json!({"name": "other"})),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = send_admin(
        &env,
        Method::PATCH,
        "/admin/v1/policies/nope",
        Some(json!({"mode": "enforce"})),
    )
    .await;
    assert_eq!(st, 404, "{v}");
    let (st, v) = send_admin(
        &env,
        Method::PATCH,
        "/admin/v1/policies/cap",
        Some(json!({"mode": "enforce"})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["mode"], "enforce");
    assert_eq!(v["state"]["level"], 1);

    // DELETE `doomed`; the next request is capped by `cap` alone (name order: cap < doomed).
    let (st, v) = send_admin(&env, Method::DELETE, "/admin/v1/policies/doomed", None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["deleted"], true);
    let (st, _) = send_admin(&env, Method::DELETE, "/admin/v1/policies/doomed", None).await;
    assert_eq!(st, 404);
    let s = ok(&env, &key, hi("gpt-4o-mini", 16), "gpt-4o-mini", 3).await;
    assert_eq!(s.policy.as_deref(), Some("cap/1:cap_max_tokens=3"));

    // Decision log: level changes newest first, filtered by policy.
    let log = decisions(&env, "cap").await;
    assert!(log.iter().all(|e| e["policy"] == "cap"));
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(log[0]["shadow"], true, "logged while in shadow: {log:#?}");
    // → 20 %: every request in scope is capped at 3 tokens now, so lower the budget's limit
    // to exactly 5 × the spend: `cap` climbs to level 2 (block).
    let spent = gpt4o_cost(98) + 2 * mini_cost(3);
    assert_eq!(spent, 1_006_000);
    let (st, v) = send_admin(
        &env,
        Method::PATCH,
        "/admin/v1/budgets/acme-monthly",
        Some(json!({"limit_usd": usd(spent * 5)})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(nanos(v["spent"].as_str().unwrap()), spent, "{v}");
    let s = send(&env, &key, hi("gpt-4o-mini", 1)).await;
    expect_blocked(&s, "cap");
    let all = env
        .admin_get("/admin/v1/policies/decisions?limit=100")
        .await["data"]
        .as_array()
        .unwrap()
        .clone();
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    assert_eq!(all[0]["policy"], "cap");
    assert_eq!(
        (all[0]["from_level"].as_u64(), all[0]["to_level"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(all[0]["shadow"], false);
    assert!(all.iter().any(|e| e["policy"] == "doomed"), "{all:#?}");
    let limited = env
        .admin_get("/admin/v1/policies/decisions?policy=cap&limit=1")
        .await;
    assert_eq!(limited["data"].as_array().unwrap().len(), 1);
    assert_eq!(limited["data"][0]["to_level"], 2);

    // Stored definitions survive a restart (with the PATCH applied); the deleted one stays
    // deleted.
    env.restart().await;
    let list = env.admin_get("/admin/v1/policies").await;
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cap"], "{list}");
    let v = env.admin_get("/admin/v1/policies/cap").await;
    assert_eq!(v["mode"], "enforce", "{v}");
    assert_eq!(v["hysteresis_pct"], 5, "{v}");
    // Still over 20 % after the restart (counters rebuilt from the ledger): blocked again.
    let s = send(&env, &key, hi("gpt-4o-mini", 1)).await;
    expect_blocked(&s, "cap");
    assert_eq!(level(&env, "cap").await, 2);
}

// ---- restart ----------------------------------------------------------------------------------

/// A burn-rate trigger reads the last hour's spend: a restart refills it from the ledger, so
/// a tenant blocked for burning too fast is still blocked after the gateway restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burn_rate_trigger_survives_a_restart() {
    let y = "policies:\n\
         \x20 - name: burn\n\
         \x20   scope: {tenant: acme}\n\
         \x20   mode: enforce\n\
         \x20   steps:\n\
         \x20     - when: {burn_rate: {usd_per_hour: \"0.00002\", minutes: 60}}\n\
         \x20       then: [block]\n"
        .to_string();
    let mut env = TestEnv::with(opts(y)).await;
    let key = env.key().await;
    // One answer of 100 tokens: about $0.00006 in the last hour, past $0.00002 an hour.
    ok(&env, &key, hi("gpt-4o-mini", 100), "gpt-4o-mini", 100).await;
    expect_blocked(&send(&env, &key, hi("gpt-4o-mini", 1)).await, "burn");
    env.restart().await;
    expect_blocked(&send(&env, &key, hi("gpt-4o-mini", 1)).await, "burn");
}
