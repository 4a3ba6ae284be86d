//! Requests and metrics → OTLP protobuf messages, with the GenAI semantic conventions' names
//! (v1.41, the last core release that carries them; kept in this one module so a rename is
//! one change).
//!
//! Server span (`SERVER`, `{operation} {requested model}`): `gen_ai.operation.name`,
//! `gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.response.model`,
//! `gen_ai.usage.input_tokens` (cached tokens included), `gen_ai.usage.output_tokens`,
//! `gen_ai.usage.cache_read.input_tokens`, `gen_ai.usage.cache_creation.input_tokens`,
//! `gen_ai.usage.reasoning.output_tokens`, `error.type`, `http.request.method`,
//! `http.response.status_code`, `url.path`, and `tollgate.*`: `request_id`, `tenant`, `team`,
//! `feature`, `user`, `key_id` (the key's id, never the key), `cost_usd` (decimal string),
//! `saved_cost_usd`, `usage_source`, `policy_actions`, `budget_decision`, `cache_status`,
//! `attempts`, `outcome`, `stream`. Status `ERROR` for 5xx answers.
//!
//! Attempt spans (`CLIENT`, `{operation} {upstream model}`, children of the server span):
//! `gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`,
//! `tollgate.provider`, `tollgate.deployment`, and `error.type` with status `ERROR` when the
//! call failed; the attempt that answered also carries the usage attributes.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram as PbHistogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span::SpanKind, status::StatusCode,
};
use tollgate_types::{LedgerRow, PolicyAction};

use crate::metrics::{Aggregates, Family, Histogram, Labels};
use crate::{AttemptSpan, RequestSpan, genai_provider, operation};

const SCOPE: &str = "tollgate";
/// W3C trace flags: sampled.
const SAMPLED: u32 = 1;

fn kv(key: &str, v: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, Value::StringValue(v.into()))
}

fn int(key: &str, v: u64) -> KeyValue {
    kv(key, Value::IntValue(i64::try_from(v).unwrap_or(i64::MAX)))
}

fn resource(service: &str) -> Resource {
    Resource {
        attributes: vec![
            s("service.name", service),
            s("service.version", env!("CARGO_PKG_VERSION")),
            s("telemetry.sdk.name", "tollgate"),
            s("telemetry.sdk.language", "rust"),
        ],
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: SCOPE.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

/// The usage attributes of a row (only the non-zero subsets).
fn usage(out: &mut Vec<KeyValue>, row: &LedgerRow) {
    let u = &row.usage;
    out.push(int("gen_ai.usage.input_tokens", u.input_tokens));
    out.push(int("gen_ai.usage.output_tokens", u.output_tokens));
    if u.cached_input_tokens > 0 {
        out.push(int(
            "gen_ai.usage.cache_read.input_tokens",
            u.cached_input_tokens,
        ));
    }
    if u.cache_write_input_tokens > 0 {
        out.push(int(
            "gen_ai.usage.cache_creation.input_tokens",
            u.cache_write_input_tokens,
        ));
    }
    if u.reasoning_tokens > 0 {
        out.push(int(
            "gen_ai.usage.reasoning.output_tokens",
            u.reasoning_tokens,
        ));
    }
}

/// What budgets did to the request, in one word: `blocked`, `fitted`, `reserved` (admitted
/// with a reservation is not visible in the row, so only the first two are certain), or none.
fn budget_decision(row: &LedgerRow) -> Option<&'static str> {
    let mut fitted = false;
    for a in row.policy_actions.iter() {
        match a {
            PolicyAction::BudgetBlock(_) => return Some("blocked"),
            PolicyAction::CapMaxTokens(_) => fitted = true,
            _ => {}
        }
    }
    fitted.then_some("fitted")
}

fn server_span(r: &RequestSpan) -> Span {
    let row = &r.row;
    let op = operation(&row.endpoint);
    let model = row.requested_model.as_deref().unwrap_or("");
    let mut a = vec![
        s("gen_ai.operation.name", op),
        s("http.request.method", "POST"),
        s("url.path", row.endpoint.clone()),
        int("http.response.status_code", u64::from(row.status)),
        s("tollgate.request_id", row.request_id.clone()),
        s("tollgate.outcome", row.outcome.as_str()),
        kv("tollgate.stream", Value::BoolValue(row.stream)),
        int("tollgate.attempts", u64::from(row.attempts)),
        s("tollgate.cost_usd", row.effective_cost.to_usd_string()),
        s("tollgate.usage_source", row.usage_source.as_str()),
    ];
    if let Some(k) = r.provider_kind {
        a.push(s("gen_ai.provider.name", genai_provider(k)));
    }
    if !model.is_empty() {
        a.push(s("gen_ai.request.model", model));
    }
    if let Some(m) = &row.served_model {
        a.push(s("gen_ai.response.model", m.clone()));
    }
    if row.status < 400 || row.usage.total_tokens() > 0 {
        usage(&mut a, row);
    }
    let at = &row.attribution;
    for (k, v) in [
        ("tollgate.tenant", &at.tenant),
        ("tollgate.team", &at.team),
        ("tollgate.feature", &at.feature),
        ("tollgate.user", &at.user),
        ("tollgate.key_id", &at.key_id),
        ("tollgate.cache_status", &row.cache_status),
        ("tollgate.deployment", &row.deployment),
    ] {
        if let Some(v) = v {
            a.push(s(k, v.clone()));
        }
    }
    if row.saved_cost.nanos() > 0 {
        a.push(s("tollgate.saved_cost_usd", row.saved_cost.to_usd_string()));
    }
    if !row.policy_actions.is_empty() {
        a.push(s("tollgate.policy_actions", row.policy_actions.to_string()));
    }
    if let Some(d) = budget_decision(row) {
        a.push(s("tollgate.budget_decision", d));
    }
    let error = (row.status >= 400)
        .then(|| row.error_code.clone())
        .flatten();
    if let Some(e) = &error {
        a.push(s("error.type", e.clone()));
    }
    Span {
        trace_id: r.context.trace_id.to_vec(),
        span_id: r.span_id.to_vec(),
        trace_state: r.context.tracestate.clone().unwrap_or_default(),
        parent_span_id: r
            .context
            .parent_span_id
            .map(|p| p.to_vec())
            .unwrap_or_default(),
        flags: SAMPLED,
        name: if model.is_empty() {
            op.to_string()
        } else {
            format!("{op} {model}")
        },
        kind: SpanKind::Server as i32,
        start_time_unix_nano: r.start_unix_nanos,
        end_time_unix_nano: r.end_unix_nanos,
        attributes: a,
        status: Some(match (row.status >= 500, &error) {
            (true, e) => Status {
                code: StatusCode::Error as i32,
                message: e.clone().unwrap_or_default(),
            },
            _ => Status::default(),
        }),
        ..Default::default()
    }
}

fn attempt_span(r: &RequestSpan, t: &AttemptSpan, answered: bool) -> Span {
    let op = operation(&r.row.endpoint);
    let mut a = vec![
        s("gen_ai.operation.name", op),
        s("gen_ai.provider.name", genai_provider(t.provider_kind)),
        s("gen_ai.request.model", t.model.clone()),
        s("tollgate.provider", t.provider.clone()),
        s("tollgate.deployment", t.deployment.clone()),
    ];
    if answered {
        a.push(s("gen_ai.response.model", t.model.clone()));
        usage(&mut a, &r.row);
    }
    if let Some(e) = &t.error {
        a.push(s("error.type", e.clone()));
    }
    Span {
        trace_id: r.context.trace_id.to_vec(),
        span_id: t.span_id.to_vec(),
        trace_state: r.context.tracestate.clone().unwrap_or_default(),
        parent_span_id: r.span_id.to_vec(),
        flags: SAMPLED,
        name: format!("{op} {}", t.model),
        kind: SpanKind::Client as i32,
        start_time_unix_nano: t.start_unix_nanos,
        end_time_unix_nano: t.end_unix_nanos,
        attributes: a,
        status: Some(match &t.error {
            Some(e) => Status {
                code: StatusCode::Error as i32,
                message: e.clone(),
            },
            None => Status::default(),
        }),
        ..Default::default()
    }
}

/// One export request for a batch of sampled requests.
pub fn traces(service: &str, batch: &[RequestSpan]) -> ExportTraceServiceRequest {
    let mut spans = Vec::with_capacity(batch.len() * 2);
    for r in batch {
        spans.push(server_span(r));
        let last = r.attempts.len().saturating_sub(1);
        for (i, t) in r.attempts.iter().enumerate() {
            let answered = i == last && t.error.is_none() && r.row.status < 400;
            spans.push(attempt_span(r, t, answered));
        }
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource(service)),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope()),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn labels(l: &Labels) -> Vec<KeyValue> {
    if l.overflow {
        return vec![kv("otel.metric.overflow", Value::BoolValue(true))];
    }
    let mut a = vec![s("gen_ai.operation.name", l.operation)];
    if let Some(p) = l.provider {
        a.push(s("gen_ai.provider.name", p));
    }
    if let Some(m) = &l.request_model {
        a.push(s("gen_ai.request.model", m.clone()));
    }
    if let Some(m) = &l.response_model {
        a.push(s("gen_ai.response.model", m.clone()));
    }
    if let Some((k, v)) = &l.extra {
        a.push(s(k, v.clone()));
    }
    a
}

fn histogram(
    name: &str,
    unit: &str,
    description: &str,
    f: &Family<Histogram>,
    start: u64,
    now: u64,
) -> Metric {
    let points = f
        .series()
        .into_iter()
        .map(|(l, h)| HistogramDataPoint {
            attributes: labels(&l),
            start_time_unix_nano: start,
            time_unix_nano: now,
            count: h.count,
            sum: Some(h.sum),
            bucket_counts: h.counts.clone(),
            explicit_bounds: h.bounds.to_vec(),
            min: (h.count > 0).then_some(h.min),
            max: (h.count > 0).then_some(h.max),
            ..Default::default()
        })
        .collect();
    Metric {
        name: name.into(),
        description: description.into(),
        unit: unit.into(),
        data: Some(Data::Histogram(PbHistogram {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    }
}

/// One export request with every metric's cumulative state since `start`.
pub fn metrics(
    service: &str,
    agg: &Aggregates,
    start: u64,
    now: u64,
) -> ExportMetricsServiceRequest {
    let mut metrics = vec![
        histogram(
            "gen_ai.client.token.usage",
            "{token}",
            "Tokens per request, by type (input includes cached tokens).",
            &agg.token_usage,
            start,
            now,
        ),
        histogram(
            "gen_ai.client.operation.duration",
            "s",
            "Time from the request's arrival to its last byte.",
            &agg.duration,
            start,
            now,
        ),
        histogram(
            "gen_ai.server.time_to_first_token",
            "s",
            "Time from a streamed request's arrival to its first content.",
            &agg.ttft,
            start,
            now,
        ),
    ];
    metrics.retain(|m| match &m.data {
        Some(Data::Histogram(h)) => !h.data_points.is_empty(),
        _ => true,
    });
    if !agg.cost.is_empty() {
        metrics.push(Metric {
            name: "tollgate.cost".into(),
            description: "Settled cost of requests, in nano-USD (integer: exact).".into(),
            unit: "n[USD]".into(),
            data: Some(Data::Sum(Sum {
                data_points: agg
                    .cost
                    .series()
                    .into_iter()
                    .map(|(l, c)| NumberDataPoint {
                        attributes: labels(&l),
                        start_time_unix_nano: start,
                        time_unix_nano: now,
                        value: Some(number_data_point::Value::AsInt(*c)),
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        });
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource(service)),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}
