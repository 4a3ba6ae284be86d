//! The exporter against a real OTLP/HTTP endpoint on loopback: what it posts decodes as OTLP,
//! spans and metrics carry the GenAI names, a full queue counts drops, a dead collector
//! counts errors and never blocks `record`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tollgate_telemetry::*;
use tollgate_types::{LedgerRow, NanoUsd, ProviderKind};

#[derive(Default)]
struct Got {
    traces: Vec<ExportTraceServiceRequest>,
    metrics: Vec<ExportMetricsServiceRequest>,
    headers: Vec<String>,
}

async fn receiver() -> (String, Arc<Mutex<Got>>) {
    let got = Arc::new(Mutex::new(Got::default()));
    let (g1, g2) = (got.clone(), got.clone());
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            post(move |h: axum::http::HeaderMap, b: Bytes| async move {
                let mut g = g1.lock().unwrap();
                g.headers.push(
                    h.get("x-otlp-token")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default(),
                );
                g.traces.push(ExportTraceServiceRequest::decode(b).unwrap());
                ""
            }),
        )
        .route(
            "/v1/metrics",
            post(move |b: Bytes| async move {
                g2.lock()
                    .unwrap()
                    .metrics
                    .push(ExportMetricsServiceRequest::decode(b).unwrap());
                ""
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}"), got)
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn opts(endpoint: &str, queue: usize) -> TelemetryOptions {
    TelemetryOptions {
        endpoint: endpoint.into(),
        headers: vec![("x-otlp-token".into(), "secret-token".into())],
        sampling_ratio: 1.0,
        service_name: "tollgate-test".into(),
        metrics_interval: Duration::from_millis(100),
        queue,
    }
}

fn request(sampled: bool) -> RequestSpan {
    let mut row = LedgerRow::start("req_1".into(), 1_000, "/v1/chat/completions");
    row.requested_model = Some("gpt-4o-mini".into());
    row.served_model = Some("gpt-4o-mini".into());
    row.provider = Some("sim".into());
    row.status = 200;
    row.usage.input_tokens = 12;
    row.usage.output_tokens = 5;
    row.usage.cached_input_tokens = 4;
    row.effective_cost = NanoUsd(4_800);
    row.latency_us = 25_000;
    row.attribution.tenant = Some("acme".into());
    row.attribution.key_id = Some("key_1".into());
    let mut ctx = TraceContext::start(None, None, 1.0);
    ctx.sampled = sampled;
    RequestSpan {
        context: ctx,
        span_id: new_span_id(),
        start_unix_nanos: 1,
        end_unix_nanos: 2,
        provider_kind: Some(ProviderKind::Openai),
        attempts: vec![
            AttemptSpan {
                span_id: new_span_id(),
                start_unix_nanos: 1,
                end_unix_nanos: 2,
                provider_kind: ProviderKind::Openai,
                provider: "sim".into(),
                model: "gpt-4o-mini".into(),
                deployment: "sim/gpt-4o-mini".into(),
                error: Some("upstream_unavailable".into()),
            },
            AttemptSpan {
                span_id: new_span_id(),
                start_unix_nanos: 1,
                end_unix_nanos: 2,
                provider_kind: ProviderKind::Openai,
                provider: "sim".into(),
                model: "gpt-4o-mini".into(),
                deployment: "sim/gpt-4o-mini".into(),
                error: None,
            },
        ],
        row,
    }
}

fn attr<'a>(
    attrs: &'a [opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|k| k.key == key)
        .and_then(|k| k.value.as_ref()?.value.as_ref())
}

#[tokio::test]
async fn spans_and_metrics_reach_the_collector_in_otlp() {
    let (url, got) = receiver().await;
    let t = Telemetry::new(opts(&url, 16)).unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(t.clone().run(client(), stop.clone()));
    // What the server does with each finished request: observe it, then queue its span.
    for sampled in [true, false] {
        let r = request(sampled);
        t.aggregates()
            .lock()
            .unwrap()
            .observe_row(&r.row, r.provider_kind);
        t.record(r);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    run.await.unwrap();

    let g = got.lock().unwrap();
    let spans: Vec<_> = g
        .traces
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect();
    // The sampled request only: its server span and both attempts.
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let server = &spans[0];
    assert_eq!(server.name, "chat gpt-4o-mini");
    assert_eq!(server.kind, 2);
    assert_eq!(
        attr(&server.attributes, "gen_ai.usage.input_tokens"),
        Some(&Value::IntValue(12))
    );
    assert_eq!(
        attr(&server.attributes, "gen_ai.usage.cache_read.input_tokens"),
        Some(&Value::IntValue(4))
    );
    assert_eq!(
        attr(&server.attributes, "tollgate.cost_usd"),
        Some(&Value::StringValue("0.0000048".into()))
    );
    assert_eq!(
        attr(&server.attributes, "tollgate.tenant"),
        Some(&Value::StringValue("acme".into()))
    );
    for a in &spans[1..] {
        assert_eq!(a.kind, 3);
        assert_eq!(a.parent_span_id, server.span_id);
        assert_eq!(a.trace_id, server.trace_id);
    }
    assert_eq!(
        attr(&spans[1].attributes, "error.type"),
        Some(&Value::StringValue("upstream_unavailable".into()))
    );
    assert!(attr(&spans[2].attributes, "gen_ai.usage.output_tokens").is_some());
    assert!(g.headers.iter().all(|h| h == "secret-token"));

    // Metrics count both requests, sampled or not.
    let last = g.metrics.last().expect("metrics exported");
    let ms = &last.resource_metrics[0].scope_metrics[0].metrics;
    let names: Vec<&str> = ms.iter().map(|m| m.name.as_str()).collect();
    assert!(names.contains(&"gen_ai.client.token.usage"), "{names:?}");
    assert!(
        names.contains(&"gen_ai.client.operation.duration"),
        "{names:?}"
    );
    assert!(names.contains(&"tollgate.cost"), "{names:?}");
    let cost = ms.iter().find(|m| m.name == "tollgate.cost").unwrap();
    let Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Sum(sum)) = &cost.data else {
        panic!("cost is a sum")
    };
    assert_eq!(
        sum.data_points[0].value,
        Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(9_600))
    );
    assert_eq!(t.stats().spans_exported, 3);
    assert_eq!(t.stats().dropped, 0);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_and_a_dead_collector_counts_errors() {
    // Nothing listens here.
    let t = Telemetry::new(opts("http://127.0.0.1:9", 2)).unwrap();
    for _ in 0..5 {
        t.record(request(true));
    }
    assert_eq!(t.stats().dropped, 3);
    let stop = CancellationToken::new();
    stop.cancel();
    t.clone().run(client(), stop).await;
    assert!(t.stats().export_errors >= 1);
    assert_eq!(t.stats().spans_exported, 0);
}
