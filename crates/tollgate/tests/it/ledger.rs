//! The ledger under concurrency (one row per request, exact totals), admin reports and
//! paging, restarts and graceful shutdown.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use tollgate_sim::SimConfig;
use tollgate_store::{Page, RowFilter};

use crate::harness::*;

fn cost_of(rows: &[Value]) -> i64 {
    rows.iter()
        .map(|r| nanos(r["effective_cost"].as_str().unwrap()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_one_row_each_and_exact_totals() {
    let env = TestEnv::start().await;
    let (acme, acme_id) = env
        .create_key(json!({"name": "acme-app", "tenant": "acme"}))
        .await;
    let (globex, globex_id) = env
        .create_key(json!({"name": "globex-app", "tenant": "globex", "models": ["gpt-4o-mini"]}))
        .await;

    // The plan: (key, model, stream, include_usage). One request in five names an unknown
    // model (rejected), for both keys; a third stream; some streams ask for usage.
    let plan: Vec<(usize, &str, bool, bool)> = (0..200)
        .map(|i| {
            let k = i % 2;
            let model = if i % 10 >= 8 {
                "nope"
            } else if k == 0 && i % 4 == 0 {
                "gpt-4o"
            } else {
                "gpt-4o-mini"
            };
            (k, model, i % 3 == 0, i % 6 == 0)
        })
        .collect();
    let keys = [acme.clone(), globex.clone()];
    let tasks: Vec<_> = plan
        .iter()
        .enumerate()
        .map(|(i, &(k, model, stream, usage))| {
            let http = env.http.clone();
            let url = env.url("/v1/chat/completions");
            let key = keys[k].clone();
            let mut body = json!({"model": model, "stream": stream,
                "messages": [{"role": "user", "content": format!("request number {i}")}]});
            if usage {
                body["stream_options"] = json!({"include_usage": true});
            }
            tokio::spawn(async move {
                let r = http
                    .post(url)
                    .bearer_auth(key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let id = r
                    .headers()
                    .get("x-tollgate-request-id")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                let text = r.text().await.unwrap();
                if stream && status == 200 {
                    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
                }
                (status, id)
            })
        })
        .collect();
    let mut ids = BTreeSet::new();
    let mut statuses = BTreeMap::new();
    for t in tasks {
        let (status, id) = t.await.unwrap();
        *statuses.entry(status).or_insert(0) += 1;
        assert!(ids.insert(id));
    }
    let rejected = plan.iter().filter(|p| p.1 == "nope").count();
    let rejected_acme = plan.iter().filter(|p| p.1 == "nope" && p.0 == 0).count();
    assert_eq!((rejected, rejected_acme), (40, 20));
    assert_eq!(
        statuses,
        BTreeMap::from([(200, 200 - rejected), (404, rejected)])
    );

    // Exactly one row per request.
    let rows = env.rows("").await;
    assert_eq!(rows.len(), 200);
    let row_ids: BTreeSet<String> = rows
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(row_ids, ids);
    assert!(
        rows.iter()
            .filter(|r| r["outcome"] == "ok")
            .all(|r| r["usage_source"] == "provider" && r["output_tokens"] == 16)
    );

    // Invariant 5: the report equals the sum of the rows, to the nano-dollar.
    let total_rows = cost_of(&rows);
    assert!(total_rows > 0);
    let spend = env.admin_get("/admin/v1/spend").await;
    assert_eq!(spend["object"], "spend_report");
    assert_eq!(spend["total"]["requests"], 200);
    assert_eq!(
        nanos(spend["total"]["cost_usd"].as_str().unwrap()),
        total_rows
    );
    assert_eq!(spend["data"].as_array().unwrap().len(), 1);

    // group_by=key,model: shape, counts per group from the plan, exact sums per group.
    let by = env.admin_get("/admin/v1/spend?group_by=key,model").await;
    assert_eq!(by["group_by"], json!(["key", "model"]));
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    for &(k, model, _, _) in &plan {
        let id = if k == 0 { &acme_id } else { &globex_id };
        *expected.entry((id.clone(), model.to_string())).or_insert(0) += 1;
    }
    let data = by["data"].as_array().unwrap();
    assert_eq!(data.len(), expected.len());
    let mut sum = 0i64;
    for g in data {
        let obj = g.as_object().unwrap();
        for field in [
            "key_id",
            "key_name",
            "model",
            "requests",
            "input_tokens",
            "cached_input_tokens",
            "cache_write_input_tokens",
            "output_tokens",
            "reasoning_tokens",
            "list_cost_usd",
            "cost_usd",
            "estimated_rows",
        ] {
            assert!(obj.contains_key(field), "{field} missing in {g}");
        }
        let key_id = g["key_id"].as_str().unwrap().to_string();
        let model = g["model"].as_str().unwrap().to_string();
        assert_eq!(
            g["key_name"],
            if key_id == acme_id {
                "acme-app"
            } else {
                "globex-app"
            }
        );
        assert_eq!(
            g["requests"],
            expected[&(key_id.clone(), model.clone())],
            "{g}"
        );
        let group_rows: Vec<Value> = rows
            .iter()
            .filter(|r| r["key_id"] == key_id.as_str() && r["requested_model"] == model.as_str())
            .cloned()
            .collect();
        let c = nanos(g["cost_usd"].as_str().unwrap());
        assert_eq!(c, cost_of(&group_rows), "{g}");
        if model == "nope" {
            assert_eq!(c, 0);
        }
        sum += c;
    }
    assert_eq!(sum, total_rows);
    assert_eq!(nanos(by["total"]["cost_usd"].as_str().unwrap()), total_rows);

    // Filters.
    assert_eq!(env.rows("tenant=acme").await.len(), 100);
    assert_eq!(env.rows("tenant=globex").await.len(), 100);
    assert_eq!(env.rows("outcome=rejected").await.len(), rejected);
    assert_eq!(env.rows("outcome=ok").await.len(), 200 - rejected);
    let acme_rejected = env.rows("tenant=acme&outcome=rejected").await;
    assert_eq!(acme_rejected.len(), rejected_acme);
    assert!(
        acme_rejected
            .iter()
            .all(|r| r["tenant"] == "acme" && r["outcome"] == "rejected")
    );
    assert_eq!(env.rows(&format!("key_id={globex_id}")).await.len(), 100);
    let gpt4o = plan.iter().filter(|p| p.1 == "gpt-4o").count();
    assert_eq!(gpt4o, 40);
    assert_eq!(env.rows("model=gpt-4o").await.len(), gpt4o);
    let acme_spend = env.admin_get("/admin/v1/spend?tenant=acme").await;
    assert_eq!(
        nanos(acme_spend["total"]["cost_usd"].as_str().unwrap()),
        cost_of(&env.rows("tenant=acme").await)
    );

    // Cursor paging covers every row exactly once, newest first.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut q = "/admin/v1/requests?limit=37".to_string();
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let page = env.admin_get(&q).await;
        pages += 1;
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 37);
        paged.extend(
            data.iter()
                .map(|r| r["request_id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 20, "paging does not end");
    }
    assert_eq!(pages, 6);
    assert_eq!(paged.len(), 200);
    let unique: BTreeSet<String> = paged.iter().cloned().collect();
    assert_eq!(unique, ids);
    assert!(
        paged.windows(2).all(|w| w[0] > w[1]),
        "not in descending id order"
    );
    // Paging with a filter.
    let mut filtered = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut q = "/admin/v1/requests?limit=7&outcome=rejected".to_string();
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let page = env.admin_get(&q).await;
        filtered += page["data"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(filtered, rejected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_rows_and_keys() {
    let mut env = TestEnv::start().await;
    let (key, key_id) = env
        .create_key(json!({"name": "durable", "tenant": "acme"}))
        .await;
    for stream in [false, true, false] {
        let r = env
            .chat(
                &key,
                json!({"model": "gpt-4o-mini", "stream": stream,
                       "messages": [{"role": "user", "content": "persist me"}]}),
            )
            .await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let before = env.rows("").await;
    assert_eq!(before.len(), 3);
    let spend_before = env.admin_get("/admin/v1/spend").await;

    let summary = env.restart().await;
    assert_eq!(summary.rows_written, 3);
    assert_eq!(summary.rows_spilled, 0);
    assert!(!summary.cut_in_flight);

    // A new process on the same file: same rows, same keys, the old key still works.
    assert_eq!(env.rows("").await, before);
    assert_eq!(env.admin_get("/admin/v1/spend").await, spend_before);
    let keys = env.admin_get("/admin/v1/keys").await;
    let ids: Vec<&str> = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [key_id.as_str()]);
    let r = env
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "again"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(env.rows("").await.len(), 4);
    let summary = env.stop().await;
    assert_eq!(summary.rows_written, 1);
    let (count, total) = env.store().totals(&RowFilter::default()).unwrap();
    assert_eq!(count, 4);
    assert!(total.nanos() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_in_flight_streams() {
    let mut env = TestEnv::with(Opts {
        sim: SimConfig {
            chunk_delay_ms: 40,
            completion_tokens: 15,
            ..SimConfig::default()
        },
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    let r = env
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "stream": true,
                   "messages": [{"role": "user", "content": "a slow one"}]}),
        )
        .await;
    let id = header(&r, "x-tollgate-request-id").to_string();
    let mut sse = Sse::new(r);
    let mut events = vec![sse.next().await.expect("first chunk")];

    env.gw.trigger_shutdown();
    while let Some(e) = sse.next().await {
        events.push(e);
    }
    assert!(!sse.ended_with_error, "the stream was cut by the shutdown");
    assert!(events.last().unwrap().is_done(), "{events:#?}");
    assert_eq!(streamed_text(&events).split_whitespace().count(), 15);

    let summary = env.gw.join().await;
    assert_eq!(summary.rows_written, 1);
    assert_eq!(summary.rows_spilled, 0);
    assert!(!summary.cut_in_flight);
    // The row was written before serve returned.
    let (rows, next) = env
        .store()
        .list_requests(&RowFilter::default(), Page::first(10))
        .unwrap();
    assert!(next.is_none());
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].request_id, id);
    assert_eq!(rows[0].outcome, tollgate_types::Outcome::Ok);
    assert_eq!(rows[0].usage.output_tokens, 15);
    assert_eq!(rows[0].usage_source, tollgate_types::UsageSource::Provider);
}

/// A stream still running when the grace period ends is cut, and its row (billed for what was
/// relayed) is written before `serve` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_over_cuts_streams_and_records_them() {
    const FULL: u64 = 2000;
    let mut env = TestEnv::with(Opts {
        sim: SimConfig {
            chunk_delay_ms: 25,
            completion_tokens: FULL as u32,
            ..SimConfig::default()
        },
        shutdown_grace_secs: 1,
        ..Opts::default()
    })
    .await;
    let key = env.key().await;
    let r = env
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "stream": true,
                   "messages": [{"role": "user", "content": "a very long one"}]}),
        )
        .await;
    let id = header(&r, "x-tollgate-request-id").to_string();
    let mut sse = Sse::new(r);
    for _ in 0..3 {
        sse.next().await.expect("a chunk");
    }
    env.gw.trigger_shutdown();
    let summary = env.gw.join().await;
    assert!(summary.cut_in_flight);
    assert_eq!(
        summary.rows_written, 1,
        "the cut stream's row was not written before serve returned"
    );
    assert_eq!(summary.rows_spilled, 0);

    // The client's stream ends with a shutting_down error event, without [DONE].
    let mut rest = Vec::new();
    while let Some(e) = sse.next().await {
        rest.push(e);
    }
    assert!(!sse.ended_with_error, "the body ended cleanly");
    assert!(rest.iter().all(|e| !e.is_done()));
    let last = rest.last().expect("an error event").json();
    assert_error_shape(&last);
    assert_eq!(last["error"]["code"], "shutting_down");
    eventually("the upstream call is cancelled", || async {
        env.sim.stats().in_flight == 0
    })
    .await;

    let (rows, _) = env
        .store()
        .list_requests(&RowFilter::default(), Page::first(10))
        .unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.request_id, id);
    assert_eq!(row.outcome, tollgate_types::Outcome::Cancelled);
    assert_eq!(row.error_code.as_deref(), Some("shutting_down"));
    assert_eq!(row.error_origin.as_deref(), Some("gateway"));
    assert_eq!(row.usage_source, tollgate_types::UsageSource::Estimated);
    assert!((2..FULL).contains(&row.usage.output_tokens));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_time_windows_and_bad_parameters() {
    let env = TestEnv::start().await;
    let key = env.key().await;
    let before = jiff::Timestamp::now().as_millisecond() - 1;
    for _ in 0..3 {
        let r = env
            .chat(
                &key,
                json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    let after = jiff::Timestamp::now().as_millisecond() + 1;
    let all = env.admin_get("/admin/v1/spend").await;
    assert_eq!(all["total"]["requests"], 3);
    let inside = env
        .admin_get(&format!("/admin/v1/spend?from={before}&to={after}"))
        .await;
    assert_eq!(inside["total"], all["total"]);
    let later = env
        .admin_get(&format!("/admin/v1/spend?from={after}"))
        .await;
    assert_eq!(later["total"]["requests"], 0);
    assert_eq!(later["total"]["cost_usd"], "0");
    assert_eq!(later["data"], json!([]));
    let earlier = env.admin_get("/admin/v1/spend?to=2020-01-01").await;
    assert_eq!(earlier["total"]["requests"], 0);
    assert_eq!(env.rows(&format!("from={after}")).await.len(), 0);
    assert_eq!(
        env.rows(&format!("from={before}&to={after}")).await.len(),
        3
    );

    for (q, param) in [
        ("/admin/v1/spend?group_by=tenant,bogus", "group_by"),
        ("/admin/v1/spend?from=yesterday", "from"),
        ("/admin/v1/requests?limit=abc", "limit"),
        ("/admin/v1/requests?status=abc", "status"),
    ] {
        let r = env
            .http
            .get(env.url(q))
            .bearer_auth(MASTER)
            .send()
            .await
            .unwrap();
        let e = expect_error(r, 400, "invalid_request").await;
        assert_eq!(e["param"], param, "{q}");
    }
    let r = env
        .http
        .get(env.url("/admin/v1/requests?cursor=not-a-cursor"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
