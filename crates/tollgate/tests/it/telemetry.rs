//! OpenTelemetry over real HTTP: a gateway with `telemetry` on exports to an OTLP/HTTP receiver
//! on loopback (decoded with the OTLP protobuf messages); spans and metrics are checked against
//! the ledger rows of the same requests.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{Value as Json, json};

use crate::harness::*;

#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    metrics: Vec<ExportMetricsServiceRequest>,
    raw: Vec<u8>,
}

/// An OTLP/HTTP protobuf receiver: `/v1/traces` and `/v1/metrics`.
async fn collector() -> (String, Arc<Mutex<Received>>) {
    let got = Arc::new(Mutex::new(Received::default()));
    let (g1, g2) = (got.clone(), got.clone());
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            post(move |b: Bytes| async move {
                let mut g = g1.lock().unwrap();
                g.raw.extend_from_slice(&b);
                let req = ExportTraceServiceRequest::decode(b).unwrap();
                for rs in req.resource_spans {
                    for ss in rs.scope_spans {
                        g.spans.extend(ss.spans);
                    }
                }
                ""
            }),
        )
        .route(
            "/v1/metrics",
            post(move |b: Bytes| async move {
                let mut g = g2.lock().unwrap();
                g.raw.extend_from_slice(&b);
                g.metrics
                    .push(ExportMetricsServiceRequest::decode(b).unwrap());
                ""
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (format!("http://{addr}"), got)
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    find(&span.attributes, key)
}

fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|k| k.key == key)
        .and_then(|k| k.value.as_ref()?.value.as_ref())
}

fn str_attr(span: &Span, key: &str) -> Option<String> {
    match attr(span, key) {
        Some(Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn int_attr(span: &Span, key: &str) -> Option<i64> {
    match attr(span, key) {
        Some(Value::IntValue(v)) => Some(*v),
        _ => None,
    }
}

async fn env_with(endpoint: &str, extra: &str, opts: Opts) -> TestEnv {
    TestEnv::with(Opts {
        extra_yaml: format!(
            "telemetry:\n  endpoint: {endpoint}\n  metrics_interval_secs: 1\n{extra}{}",
            opts.extra_yaml
        ),
        ..opts
    })
    .await
}

/// The server span of a request, by the `tollgate.request_id` attribute.
fn server_span<'a>(spans: &'a [Span], request_id: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.kind == 2 && str_attr(s, "tollgate.request_id").as_deref() == Some(request_id))
        .unwrap_or_else(|| panic!("no server span for {request_id}"))
}

fn children<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_follow_the_genai_conventions_and_match_the_ledger() {
    let (endpoint, got) = collector().await;
    let mut env = env_with(
        &endpoint,
        "",
        Opts {
            sim: tollgate_sim::SimConfig {
                cached_prompt_tokens: 4,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let key = env.key().await;
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let mut ids = Vec::new();
    for stream in [false, true] {
        let r = env
            .http
            .post(env.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .header("traceparent", format!("00-{client_trace}-{client_span}-01"))
            .header("tracestate", "vendor=abc")
            .header("x-tollgate-feature", "search")
            .json(&json!({"model": "gpt-4o-mini", "stream": stream,
                          "messages": [{"role": "user", "content": "trace me"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        ids.push(header(&r, "x-tollgate-request-id").to_string());
        let _ = r.bytes().await.unwrap();
    }
    // Without a traceparent: a new trace, sampled (ratio 1).
    let r = env
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    ids.push(header(&r, "x-tollgate-request-id").to_string());
    let _ = r.bytes().await.unwrap();
    let rows: Vec<Json> = {
        let mut v = Vec::new();
        for id in &ids {
            v.push(env.row(id).await);
        }
        v
    };
    env.stop().await;

    let g = got.lock().unwrap();
    for (i, (id, row)) in ids.iter().zip(&rows).enumerate() {
        let s = server_span(&g.spans, id);
        assert_eq!(s.name, "chat gpt-4o-mini");
        if i < 2 {
            assert_eq!(
                hex::encode(&s.trace_id),
                client_trace,
                "continues the client's trace"
            );
            assert_eq!(hex::encode(&s.parent_span_id), client_span);
            assert_eq!(s.trace_state, "vendor=abc");
        } else {
            assert!(s.parent_span_id.is_empty());
            assert_ne!(hex::encode(&s.trace_id), client_trace);
        }
        assert_eq!(
            str_attr(s, "gen_ai.operation.name").as_deref(),
            Some("chat")
        );
        assert_eq!(
            str_attr(s, "gen_ai.provider.name").as_deref(),
            Some("openai")
        );
        assert_eq!(
            str_attr(s, "gen_ai.request.model").as_deref(),
            Some("gpt-4o-mini")
        );
        assert_eq!(
            str_attr(s, "gen_ai.response.model").as_deref(),
            Some("gpt-4o-mini")
        );
        assert_eq!(
            int_attr(s, "gen_ai.usage.input_tokens"),
            row["input_tokens"].as_i64()
        );
        assert_eq!(
            int_attr(s, "gen_ai.usage.output_tokens"),
            row["output_tokens"].as_i64()
        );
        assert_eq!(int_attr(s, "gen_ai.usage.cache_read.input_tokens"), Some(4));
        assert_eq!(
            str_attr(s, "tollgate.cost_usd").as_deref(),
            row["effective_cost"].as_str()
        );
        assert_eq!(str_attr(s, "tollgate.tenant").as_deref(), Some("acme"));
        assert_eq!(
            str_attr(s, "tollgate.key_id"),
            row["key_id"].as_str().map(String::from)
        );
        assert_eq!(int_attr(s, "http.response.status_code"), Some(200));
        if i < 2 {
            assert_eq!(str_attr(s, "tollgate.feature").as_deref(), Some("search"));
        }
        let kids = children(&g.spans, s);
        assert_eq!(kids.len(), 1, "one upstream attempt");
        let a = kids[0];
        assert_eq!(a.kind, 3, "CLIENT");
        assert_eq!(
            str_attr(a, "tollgate.deployment").as_deref(),
            Some("sim/gpt-4o-mini")
        );
        assert!(a.start_time_unix_nano >= s.start_time_unix_nano);
        assert!(a.end_time_unix_nano <= s.end_time_unix_nano);
        assert_eq!(
            int_attr(a, "gen_ai.usage.output_tokens"),
            row["output_tokens"].as_i64()
        );
    }
    // The key itself is never exported.
    assert!(!String::from_utf8_lossy(&g.raw).contains(&key));
    // Metrics: token usage and duration per model, TTFT for the stream, the cost counter.
    let last = g.metrics.last().expect("metrics were exported");
    let names: Vec<&str> = last.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    for want in [
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.duration",
        "gen_ai.server.time_to_first_token",
        "tollgate.cost",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let cost = last.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .find(|m| m.name == "tollgate.cost")
        .unwrap();
    let Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Sum(sum)) = &cost.data else {
        panic!("tollgate.cost is a sum")
    };
    let exported: i64 = sum
        .data_points
        .iter()
        .map(|p| match p.value {
            Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(v)) => v,
            _ => 0,
        })
        .sum();
    let ledger: i64 = rows
        .iter()
        .map(|r| nanos(r["effective_cost"].as_str().unwrap()))
        .sum();
    assert_eq!(exported, ledger, "the cost metric equals the ledger");
    // No tenant, key or user label on any metric.
    for m in &last.resource_metrics[0].scope_metrics[0].metrics {
        let text = format!("{m:?}");
        assert!(
            !text.contains("tollgate.tenant") && !text.contains("key_id"),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_shows_as_two_attempts_and_a_budget_refusal_as_an_error_span() {
    let (endpoint, got) = collector().await;
    let mut env = env_with(
        &endpoint,
        "",
        Opts {
            sim: tollgate_sim::SimConfig {
                fail_first: 1,
                fail_status: 503,
                ..Default::default()
            },
            extra_yaml: "budgets:\n  - {name: tiny, scope: {tenant: acme, feature: big}, limit_usd: \"0.000001\", window: month, mode: hard}\n".into(),
            ..Default::default()
        },
    )
    .await;
    let key = env.key().await;
    let r = env
        .chat(
            &key,
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "retry"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let retried = header(&r, "x-tollgate-request-id").to_string();
    let _ = r.bytes().await.unwrap();
    let r = env
        .chat_with(
            &key,
            &[("x-tollgate-feature", "big")],
            &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "too big"}]}),
        )
        .await;
    let refused = header(&r, "x-tollgate-request-id").to_string();
    expect_error(r, 429, "budget_exceeded").await;
    env.stop().await;

    let g = got.lock().unwrap();
    let s = server_span(&g.spans, &retried);
    let mut kids = children(&g.spans, s);
    kids.sort_by_key(|k| k.start_time_unix_nano);
    assert_eq!(kids.len(), 2, "{kids:#?}");
    assert_eq!(
        str_attr(kids[0], "error.type").as_deref(),
        Some("upstream_unavailable")
    );
    assert_eq!(kids[0].status.as_ref().unwrap().code, 2, "ERROR");
    assert_eq!(str_attr(kids[1], "error.type"), None);
    assert_eq!(int_attr(s, "tollgate.attempts"), Some(2));

    let b = server_span(&g.spans, &refused);
    assert_eq!(int_attr(b, "http.response.status_code"), Some(429));
    assert_eq!(
        str_attr(b, "error.type").as_deref(),
        Some("budget_exceeded")
    );
    assert_eq!(
        str_attr(b, "tollgate.budget_decision").as_deref(),
        Some("blocked")
    );
    assert!(children(&g.spans, b).is_empty(), "no upstream call");
}

/// `propagate_to_upstream`: the provider receives a `traceparent` naming the attempt's own
/// client span (not the client's header passed through).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_sees_the_attempt_span_as_its_parent() {
    let (endpoint, got) = collector().await;
    let (rec_addr, recorded) = spawn_recorder(false).await;
    let mut env = env_with(
        &endpoint,
        "  propagate_to_upstream: true\n",
        Opts {
            extra_providers: format!(
                "  rec:\n    kind: openai\n    base_url: http://{rec_addr}/v1\n"
            ),
            extra_models: "  recorded: {deployments: [{provider: rec, model: gpt-4o-mini}]}\n"
                .into(),
            ..Default::default()
        },
    )
    .await;
    let key = env.key().await;
    let client_trace = "0af7651916cd43dd8448eb211c80319c";
    let r = env
        .http
        .post(env.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header(
            "traceparent",
            format!("00-{client_trace}-b7ad6b7169203331-01"),
        )
        .json(&json!({"model": "recorded", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = header(&r, "x-tollgate-request-id").to_string();
    env.stop().await;

    let seen = recorded.lock().unwrap().headers[0]["traceparent"].clone();
    let g = got.lock().unwrap();
    let s = server_span(&g.spans, &id);
    let a = children(&g.spans, s)[0];
    assert_eq!(
        seen,
        format!("00-{client_trace}-{}-01", hex::encode(&a.span_id)),
        "the provider's parent is the attempt span"
    );
}

/// Telemetry off (no section): nothing is exported and the request path is unchanged; a
/// collector that is down never fails or slows a request, and failed exports are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_never_fails_a_request() {
    let mut env = env_with("http://127.0.0.1:9", "", Opts::default()).await;
    let key = env.key().await;
    for _ in 0..5 {
        let r = env
            .chat(
                &key,
                json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let m = env.metrics().await;
    assert!(m.contains("tollgate_telemetry_export_errors_total"), "{m}");
    let errors: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("tollgate_telemetry_export_errors_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(errors >= 1, "{m}");
    env.stop().await;
}
