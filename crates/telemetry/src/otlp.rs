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
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram as PbHistogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
use prost::Message;
use tollgate_types::{LedgerRow, PolicyAction};

use crate::metrics::{Aggregates, Family, Histogram, Labels};
use crate::{AttemptSpan, RequestSpan, genai_provider, operation, wire};

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

/// Where a span's attributes go: straight into the span's bytes (`KeyValue`s, field 9).
struct Attrs<'a>(&'a mut Vec<u8>);

impl Attrs<'_> {
    fn s(&mut self, key: &str, v: &str) {
        wire::kv_str(self.0, SPAN_ATTRIBUTES, key, v);
    }

    fn int(&mut self, key: &str, v: u64) {
        wire::kv_int(
            self.0,
            SPAN_ATTRIBUTES,
            key,
            i64::try_from(v).unwrap_or(i64::MAX),
        );
    }

    fn bool(&mut self, key: &str, v: bool) {
        wire::kv_bool(self.0, SPAN_ATTRIBUTES, key, v);
    }

    /// The usage attributes of a row (only the non-zero subsets).
    fn usage(&mut self, row: &LedgerRow) {
        let u = &row.usage;
        self.int("gen_ai.usage.input_tokens", u.input_tokens);
        self.int("gen_ai.usage.output_tokens", u.output_tokens);
        if u.cached_input_tokens > 0 {
            self.int(
                "gen_ai.usage.cache_read.input_tokens",
                u.cached_input_tokens,
            );
        }
        if u.cache_write_input_tokens > 0 {
            self.int(
                "gen_ai.usage.cache_creation.input_tokens",
                u.cache_write_input_tokens,
            );
        }
        if u.reasoning_tokens > 0 {
            self.int("gen_ai.usage.reasoning.output_tokens", u.reasoning_tokens);
        }
    }
}

/// `Span.attributes`.
const SPAN_ATTRIBUTES: u32 = 9;

/// The fields every span has: ids, trace state, flags, name, kind, times.
struct Head<'a> {
    r: &'a RequestSpan,
    span_id: &'a [u8; 8],
    parent: Option<&'a [u8; 8]>,
    /// The name in up to two parts, joined by a space (`chat` `gpt-4o`).
    name: (&'a str, &'a str),
    kind: SpanKind,
    start: u64,
    end: u64,
}

fn head(out: &mut Vec<u8>, h: &Head<'_>) {
    wire::bytes(out, 1, &h.r.context.trace_id);
    wire::bytes(out, 2, h.span_id);
    if let Some(ts) = &h.r.context.tracestate {
        wire::bytes(out, 3, ts.as_bytes());
    }
    if let Some(p) = h.parent {
        wire::bytes(out, 4, p);
    }
    let (a, b) = h.name;
    let parts: &[&[u8]] = if b.is_empty() {
        &[a.as_bytes()]
    } else {
        &[a.as_bytes(), b" ", b.as_bytes()]
    };
    wire::bytes_parts(out, 5, parts);
    wire::uint(out, 6, h.kind as i32 as u64);
    wire::fixed64(out, 7, h.start);
    wire::fixed64(out, 8, h.end);
    wire::fixed32(out, 16, SAMPLED);
}

/// `Span.status` (always present, empty when unset, as the message types encode it).
fn status(out: &mut Vec<u8>, error: Option<&str>) {
    let (code, msg) = match error {
        Some(m) => (StatusCode::Error as i32 as u64, m),
        None => (0, ""),
    };
    let mut len = 0;
    if !msg.is_empty() {
        len += 1 + wire::varint_len(msg.len() as u64) + msg.len();
    }
    if code != 0 {
        len += 1 + wire::varint_len(code);
    }
    wire::len_prefix(out, 15, len);
    if !msg.is_empty() {
        wire::bytes(out, 2, msg.as_bytes());
    }
    wire::uint(out, 3, code);
}

fn server_span(out: &mut Vec<u8>, r: &RequestSpan) {
    let row = &r.row;
    let op = operation(&row.endpoint);
    let model = row.requested_model.as_deref().unwrap_or("");
    head(
        out,
        &Head {
            r,
            span_id: &r.span_id,
            parent: r.context.parent_span_id.as_ref(),
            name: (op, model),
            kind: SpanKind::Server,
            start: r.start_unix_nanos,
            end: r.end_unix_nanos,
        },
    );
    let mut a = Attrs(out);
    a.s("gen_ai.operation.name", op);
    a.s("http.request.method", "POST");
    a.s("url.path", &row.endpoint);
    a.int("http.response.status_code", u64::from(row.status));
    a.s("tollgate.request_id", &row.request_id);
    a.s("tollgate.outcome", row.outcome.as_str());
    a.bool("tollgate.stream", row.stream);
    a.int("tollgate.attempts", u64::from(row.attempts));
    a.s("tollgate.cost_usd", &row.effective_cost.to_usd_string());
    a.s("tollgate.usage_source", row.usage_source.as_str());
    if let Some(k) = r.provider_kind {
        a.s("gen_ai.provider.name", genai_provider(k));
    }
    if !model.is_empty() {
        a.s("gen_ai.request.model", model);
    }
    if let Some(m) = &row.served_model {
        a.s("gen_ai.response.model", m);
    }
    if row.status < 400 || row.usage.total_tokens() > 0 {
        a.usage(row);
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
            a.s(k, v);
        }
    }
    if row.saved_cost.nanos() > 0 {
        a.s("tollgate.saved_cost_usd", &row.saved_cost.to_usd_string());
    }
    if !row.policy_actions.is_empty() {
        a.s("tollgate.policy_actions", &row.policy_actions.to_string());
    }
    if let Some(d) = budget_decision(row) {
        a.s("tollgate.budget_decision", d);
    }
    let error = (row.status >= 400)
        .then_some(row.error_code.as_deref())
        .flatten();
    if let Some(e) = error {
        a.s("error.type", e);
    }
    status(
        out,
        if row.status >= 500 {
            Some(error.unwrap_or(""))
        } else {
            None
        },
    );
}

fn attempt_span(out: &mut Vec<u8>, r: &RequestSpan, t: &AttemptSpan, answered: bool) {
    let op = operation(&r.row.endpoint);
    head(
        out,
        &Head {
            r,
            span_id: &t.span_id,
            parent: Some(&r.span_id),
            name: (op, &t.model),
            kind: SpanKind::Client,
            start: t.start_unix_nanos,
            end: t.end_unix_nanos,
        },
    );
    let mut a = Attrs(out);
    a.s("gen_ai.operation.name", op);
    a.s("gen_ai.provider.name", genai_provider(t.provider_kind));
    a.s("gen_ai.request.model", &t.model);
    a.s("tollgate.provider", &t.provider);
    a.s("tollgate.deployment", &t.deployment);
    if answered {
        a.s("gen_ai.response.model", &t.model);
        a.usage(&r.row);
    }
    if let Some(e) = &t.error {
        a.s("error.type", e);
    }
    status(out, t.error.as_deref());
}

/// Buffers [`traces`] reuses from one batch to the next (a batch is up to a few hundred KiB,
/// so fresh ones would cost page faults on every export).
#[derive(Default)]
pub struct Scratch {
    spans: Vec<u8>,
    one: Vec<u8>,
}

/// One `ExportTraceServiceRequest` for a batch of sampled requests, encoded. Written straight
/// from the rows into protobuf bytes (no message tree, no copied attribute strings): every
/// nested length is known when it is written, except a span's, which is written to a reused
/// scratch buffer first.
pub fn traces(service: &str, batch: &[RequestSpan], scratch: &mut Scratch) -> Vec<u8> {
    let Scratch { spans, one } = scratch;
    spans.clear();
    one.clear();
    let push = |spans: &mut Vec<u8>, one: &mut Vec<u8>| {
        wire::len_prefix(spans, 2, one.len());
        spans.extend_from_slice(one);
        one.clear();
    };
    for r in batch {
        server_span(one, r);
        push(spans, one);
        let last = r.attempts.len().saturating_sub(1);
        for (i, t) in r.attempts.iter().enumerate() {
            let answered = i == last && t.error.is_none() && r.row.status < 400;
            attempt_span(one, r, t, answered);
            push(spans, one);
        }
    }
    let spans = &*spans;
    let resource = resource(service).encode_to_vec();
    let scope = scope().encode_to_vec();
    let scope_spans = 1 + wire::varint_len(scope.len() as u64) + scope.len() + spans.len();
    let resource_spans = 1
        + wire::varint_len(resource.len() as u64)
        + resource.len()
        + 1
        + wire::varint_len(scope_spans as u64)
        + scope_spans;
    let mut out = Vec::with_capacity(resource_spans + 8);
    wire::len_prefix(&mut out, 1, resource_spans);
    wire::bytes(&mut out, 1, &resource);
    wire::len_prefix(&mut out, 2, scope_spans);
    wire::bytes(&mut out, 1, &scope);
    out.extend_from_slice(spans);
    out
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

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use tollgate_types::{NanoUsd, ProviderKind};

    use super::*;
    use crate::TraceContext;

    fn attrs(span: &opentelemetry_proto::tonic::trace::v1::Span) -> Vec<(String, Value)> {
        span.attributes
            .iter()
            .map(|kv| {
                let v = kv.value.clone().and_then(|v| v.value).unwrap();
                (kv.key.clone(), v)
            })
            .collect()
    }

    /// The hand-written encoding decodes, with the generated types, to the whole span tree:
    /// resource, scope, ids, names, kinds, times, trace state, every attribute, statuses.
    #[test]
    fn spans_decode_with_the_generated_types() {
        let mut row = LedgerRow::start("req_1".into(), 1_000, "/v1/chat/completions");
        row.requested_model = Some("gpt-4o".into());
        row.served_model = Some("gpt-4o-2024".into());
        row.status = 502;
        row.error_code = Some("upstream_unavailable".into());
        row.usage.input_tokens = 12;
        row.usage.cache_write_input_tokens = 3;
        row.effective_cost = NanoUsd(4_800);
        row.saved_cost = NanoUsd(7);
        row.attribution.tenant = Some("<script>".into());
        row.stream = true;
        row.policy_actions = tollgate_types::PolicyActions::parse("cap_max_tokens=120");
        let context = TraceContext {
            trace_id: [7; 16],
            parent_span_id: Some([9; 8]),
            sampled: true,
            tracestate: Some("k=v".into()),
        };
        let attempt = |error: Option<&str>| AttemptSpan {
            span_id: [3; 8],
            start_unix_nanos: 10,
            end_unix_nanos: 20,
            provider_kind: ProviderKind::Anthropic,
            provider: "claude".into(),
            model: "claude-x".into(),
            deployment: "claude/claude-x".into(),
            error: error.map(String::from),
        };
        let r = RequestSpan {
            context,
            span_id: [1; 8],
            start_unix_nanos: 5,
            end_unix_nanos: 30,
            provider_kind: Some(ProviderKind::Anthropic),
            attempts: vec![attempt(Some("upstream_timeout")), attempt(None)],
            row,
        };
        let mut scratch = Scratch::default();
        let bytes = traces("svc", std::slice::from_ref(&r), &mut scratch);
        let req = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(req.resource_spans.len(), 1);
        let rs = &req.resource_spans[0];
        assert_eq!(rs.resource, Some(resource("svc")));
        assert_eq!(rs.scope_spans.len(), 1);
        assert_eq!(rs.scope_spans[0].scope, Some(scope()));
        let spans = &rs.scope_spans[0].spans;
        assert_eq!(spans.len(), 3);
        let server = &spans[0];
        assert_eq!(server.name, "chat gpt-4o");
        assert_eq!(server.kind, SpanKind::Server as i32);
        assert_eq!(server.trace_id, [7; 16]);
        assert_eq!(server.span_id, [1; 8]);
        assert_eq!(server.parent_span_id, [9; 8]);
        assert_eq!(server.trace_state, "k=v");
        assert_eq!(server.flags, SAMPLED);
        assert_eq!(
            (server.start_time_unix_nano, server.end_time_unix_nano),
            (5, 30)
        );
        let status = server.status.clone().unwrap();
        assert_eq!(status.code, StatusCode::Error as i32);
        assert_eq!(status.message, "upstream_unavailable");
        let a = attrs(server);
        let get = |k: &str| a.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let str_of = |k: &str| match get(k) {
            Some(Value::StringValue(s)) => s,
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(str_of("gen_ai.provider.name"), "anthropic");
        assert_eq!(str_of("gen_ai.response.model"), "gpt-4o-2024");
        assert_eq!(str_of("tollgate.tenant"), "<script>");
        assert_eq!(str_of("tollgate.cost_usd"), "0.0000048");
        assert_eq!(str_of("tollgate.saved_cost_usd"), "0.000000007");
        assert_eq!(str_of("tollgate.policy_actions"), "cap_max_tokens=120");
        assert_eq!(str_of("tollgate.budget_decision"), "fitted");
        assert_eq!(str_of("error.type"), "upstream_unavailable");
        assert_eq!(get("tollgate.stream"), Some(Value::BoolValue(true)));
        assert_eq!(get("http.response.status_code"), Some(Value::IntValue(502)));
        assert_eq!(
            get("gen_ai.usage.cache_creation.input_tokens"),
            Some(Value::IntValue(3))
        );
        assert_eq!(get("gen_ai.usage.cache_read.input_tokens"), None);
        for (i, t) in spans[1..].iter().enumerate() {
            assert_eq!(t.name, "chat claude-x");
            assert_eq!(t.kind, SpanKind::Client as i32);
            assert_eq!(t.parent_span_id, [1; 8]);
            assert_eq!(t.trace_state, "k=v");
            let failed = i == 0;
            let st = t.status.clone().unwrap();
            assert_eq!(st.code != 0, failed);
            let names: Vec<String> = attrs(t).into_iter().map(|(k, _)| k).collect();
            assert_eq!(names.contains(&"error.type".to_string()), failed);
            // The request failed (502): no attempt carries the answer's usage.
            assert!(!names.contains(&"gen_ai.usage.input_tokens".to_string()));
        }
        // A served request without a client parent: no parent id, an empty (unset) status.
        let mut ok = r.clone();
        ok.row.status = 200;
        ok.row.error_code = None;
        ok.context.parent_span_id = None;
        ok.context.tracestate = None;
        let req = ExportTraceServiceRequest::decode(traces("svc", &[ok], &mut scratch).as_slice())
            .unwrap();
        let spans = &req.resource_spans[0].scope_spans[0].spans;
        assert!(spans[0].parent_span_id.is_empty());
        assert_eq!(spans[0].status, Some(Default::default()));
        assert!(
            attrs(&spans[2])
                .iter()
                .any(|(k, _)| k == "gen_ai.usage.input_tokens")
        );
        // An empty batch is still a valid request.
        let empty =
            ExportTraceServiceRequest::decode(traces("svc", &[], &mut scratch).as_slice()).unwrap();
        assert!(empty.resource_spans[0].scope_spans[0].spans.is_empty());
    }
}
