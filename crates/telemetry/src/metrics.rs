//! The GenAI metrics, aggregated from every finished request (sampled or not; the server
//! observes each row, and the exporter and Prometheus `/metrics` read the same aggregation):
//! cumulative histograms with the semantic conventions' advised bucket boundaries, and
//! Tollgate's cost counter in integer nano-USD.
//!
//! **Cardinality.** Labels are the operation, the provider kind, the requested and the served
//! model, and one of `gen_ai.token.type` or `error.type` — all bounded by the config (a
//! request that never reached a deployment, e.g. an unknown model, is not observed) and by the
//! error table. Never tenant, key or user: those are on spans and in the ledger. Past
//! [`MAX_SERIES`] label sets per metric a new set is counted under `otel.metric.overflow`.

use tollgate_types::{LedgerRow, ProviderKind};

use crate::{genai_provider, operation};

/// Label sets kept per metric before new ones go to the overflow series.
pub const MAX_SERIES: usize = 2_000;

/// `gen_ai.client.token.usage` buckets, `{token}`.
pub const TOKEN_BOUNDS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
/// `gen_ai.client.operation.duration` buckets, seconds.
pub const DURATION_BOUNDS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// `gen_ai.server.time_to_first_token` buckets, seconds.
pub const TTFT_BOUNDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// One series' attributes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Labels {
    pub operation: &'static str,
    pub provider: Option<&'static str>,
    pub request_model: Option<String>,
    pub response_model: Option<String>,
    /// `("gen_ai.token.type", "input")`, `("error.type", "upstream_timeout")`.
    pub extra: Option<(&'static str, String)>,
    /// The overflow series (`otel.metric.overflow: true`), which stands for every label set
    /// past the bound.
    pub overflow: bool,
}

/// A label set as observed: borrowed from the row, so finding an existing series allocates
/// nothing (observations run for every request).
#[derive(Debug, Clone, Copy, Hash)]
pub(crate) struct Key<'a> {
    operation: &'static str,
    provider: Option<&'static str>,
    request_model: Option<&'a str>,
    response_model: Option<&'a str>,
    extra: Option<(&'static str, &'a str)>,
}

impl Key<'_> {
    /// Every request hashes several keys; SipHash's flooding resistance buys nothing here
    /// (the label values come from the config, not from clients), so a fast fixed-seed hash.
    fn hash64(&self) -> u64 {
        use std::hash::BuildHasher;
        foldhash::fast::FixedState::with_seed(0).hash_one(self)
    }

    fn is(&self, l: &Labels) -> bool {
        !l.overflow
            && self.operation == l.operation
            && self.provider == l.provider
            && self.request_model == l.request_model.as_deref()
            && self.response_model == l.response_model.as_deref()
            && self.extra == l.extra.as_ref().map(|(k, v)| (*k, v.as_str()))
    }

    fn owned(&self) -> Labels {
        Labels {
            operation: self.operation,
            provider: self.provider,
            request_model: self.request_model.map(str::to_string),
            response_model: self.response_model.map(str::to_string),
            extra: self.extra.map(|(k, v)| (k, v.to_string())),
            overflow: false,
        }
    }
}

impl Labels {
    fn overflow() -> Labels {
        Labels {
            operation: "",
            provider: None,
            request_model: None,
            response_model: None,
            extra: None,
            overflow: true,
        }
    }
}

/// A cumulative explicit-bucket histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub bounds: &'static [f64],
    /// `bounds.len() + 1` counts: `(-∞, b0], (b0, b1], …, (bn, +∞)`.
    pub counts: Vec<u64>,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    fn record(&mut self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i] += 1;
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}

/// One metric's series, found by a hash of the borrowed label set.
#[derive(Debug, Clone)]
pub struct Family<T> {
    by_hash: std::collections::HashMap<u64, Vec<(Labels, T)>>,
    len: usize,
    overflow: Option<T>,
}

impl<T> Default for Family<T> {
    fn default() -> Self {
        Family {
            by_hash: std::collections::HashMap::new(),
            len: 0,
            overflow: None,
        }
    }
}

impl<T> Family<T> {
    pub(crate) fn entry(&mut self, key: Key<'_>, new: impl Fn() -> T) -> &mut T {
        let h = key.hash64();
        let known = self
            .by_hash
            .get(&h)
            .and_then(|v| v.iter().position(|(l, _)| key.is(l)));
        if known.is_none() && self.len >= MAX_SERIES {
            return self.overflow.get_or_insert_with(new);
        }
        let bucket = self.by_hash.entry(h).or_default();
        let i = match known {
            Some(i) => i,
            None => {
                bucket.push((key.owned(), new()));
                self.len += 1;
                bucket.len() - 1
            }
        };
        &mut bucket[i].1
    }

    /// Every series, the overflow one last.
    pub fn series(&self) -> Vec<(Labels, &T)> {
        let mut out: Vec<(Labels, &T)> = self
            .by_hash
            .values()
            .flatten()
            .map(|(l, v)| (l.clone(), v))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(o) = &self.overflow {
            out.push((Labels::overflow(), o));
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0 && self.overflow.is_none()
    }
}

/// Every metric the exporter sends.
#[derive(Debug, Clone, Default)]
pub struct Aggregates {
    pub token_usage: Family<Histogram>,
    pub duration: Family<Histogram>,
    pub ttft: Family<Histogram>,
    /// `tollgate.cost`: settled cost, nano-USD.
    pub cost: Family<i64>,
}

impl Aggregates {
    pub fn is_empty(&self) -> bool {
        self.duration.is_empty()
    }

    /// Adds one finished request's row; `provider_kind` is the kind of the provider that
    /// served it (or was last tried).
    pub fn observe_row(&mut self, row: &LedgerRow, provider_kind: Option<ProviderKind>) {
        if row.provider.is_none() {
            return;
        }
        let base = Key {
            operation: operation(&row.endpoint),
            provider: provider_kind.map(genai_provider),
            request_model: row.requested_model.as_deref(),
            response_model: row.served_model.as_deref(),
            extra: None,
        };
        let error = if row.status >= 400 {
            row.error_code.as_deref().map(|e| ("error.type", e))
        } else {
            None
        };
        self.duration
            .entry(
                Key {
                    extra: error,
                    ..base
                },
                || Histogram::new(DURATION_BOUNDS),
            )
            .record(row.latency_us as f64 / 1e6);
        if row.stream
            && let Some(t) = row.ttft_us
        {
            self.ttft
                .entry(base, || Histogram::new(TTFT_BOUNDS))
                .record(t as f64 / 1e6);
        }
        for (kind, n) in [
            ("input", row.usage.input_tokens),
            ("output", row.usage.output_tokens),
        ] {
            if n > 0 {
                self.token_usage
                    .entry(
                        Key {
                            extra: Some(("gen_ai.token.type", kind)),
                            ..base
                        },
                        || Histogram::new(TOKEN_BOUNDS),
                    )
                    .record(n as f64);
            }
        }
        if row.effective_cost.nanos() > 0 {
            let c = self.cost.entry(base, || 0);
            *c = c.saturating_add(row.effective_cost.nanos());
        }
    }
}

/// Prometheus names of the GenAI metrics: the OTLP names translated the OpenTelemetry way
/// (dots to underscores, the unit as a suffix, `_total` on counters), so a dashboard built on
/// either finds the same series.
pub const PROMETHEUS_NAMES: [(&str, &str); 4] = [
    ("gen_ai.client.token.usage", "gen_ai_client_token_usage"),
    (
        "gen_ai.client.operation.duration",
        "gen_ai_client_operation_duration_seconds",
    ),
    (
        "gen_ai.server.time_to_first_token",
        "gen_ai_server_time_to_first_token_seconds",
    ),
    ("tollgate.cost", "tollgate_genai_cost_nano_usd_total"),
];

/// A label value in the exposition format: backslash, quote and newline escaped.
fn prom_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `{a="b",…}` of a series, with `extra` (the `le` of a bucket) last.
fn prom_labels(l: &Labels, extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = Vec::new();
    if l.overflow {
        parts.push("otel_metric_overflow=\"true\"".into());
    } else {
        parts.push(format!("gen_ai_operation_name=\"{}\"", l.operation));
        if let Some(p) = l.provider {
            parts.push(format!("gen_ai_provider_name=\"{p}\""));
        }
        for (k, v) in [
            ("gen_ai_request_model", &l.request_model),
            ("gen_ai_response_model", &l.response_model),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k}=\"{}\"", prom_value(v)));
            }
        }
        if let Some((k, v)) = &l.extra {
            parts.push(format!("{}=\"{}\"", k.replace('.', "_"), prom_value(v)));
        }
    }
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    format!("{{{}}}", parts.join(","))
}

impl Aggregates {
    /// The GenAI metrics in the Prometheus text format, appended to `out`: the three
    /// histograms (cumulative buckets, `_sum`, `_count`) and the cost counter, under
    /// [`PROMETHEUS_NAMES`], with the same bounded labels as over OTLP.
    pub fn prometheus(&self, out: &mut String) {
        use std::fmt::Write;
        let histograms = [
            (
                PROMETHEUS_NAMES[0].1,
                "Tokens per request, by type (input includes cached tokens).",
                &self.token_usage,
            ),
            (
                PROMETHEUS_NAMES[1].1,
                "Time from the request's arrival to its last byte.",
                &self.duration,
            ),
            (
                PROMETHEUS_NAMES[2].1,
                "Time from a streamed request's arrival to its first content.",
                &self.ttft,
            ),
        ];
        for (name, help, family) in histograms {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} histogram");
            for (l, h) in family.series() {
                let mut cumulative = 0;
                for (i, n) in h.counts.iter().enumerate() {
                    cumulative += n;
                    let le = h
                        .bounds
                        .get(i)
                        .map_or("+Inf".to_string(), |b| b.to_string());
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {cumulative}",
                        prom_labels(&l, Some(("le", &le)))
                    );
                }
                let labels = prom_labels(&l, None);
                let _ = writeln!(out, "{name}_sum{labels} {}", h.sum);
                let _ = writeln!(out, "{name}_count{labels} {}", h.count);
            }
        }
        let name = PROMETHEUS_NAMES[3].1;
        let _ = writeln!(
            out,
            "# HELP {name} Settled cost of requests by model, in nano-USD (integer: exact)."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for (l, c) in self.cost.series() {
            let _ = writeln!(out, "{name}{} {c}", prom_labels(&l, None));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_inclusive() {
        let mut h = Histogram::new(&[1.0, 4.0]);
        for v in [0.5, 1.0, 1.5, 4.0, 9.0] {
            h.record(v);
        }
        assert_eq!(h.counts, vec![2, 2, 1]);
        assert_eq!(h.count, 5);
        assert_eq!((h.min, h.max), (0.5, 9.0));
    }

    #[test]
    fn prometheus_text_follows_the_otlp_names_and_labels() {
        let mut row = LedgerRow::start("r".into(), 0, "/v1/chat/completions");
        row.provider = Some("sim".into());
        row.requested_model = Some("gpt-4o".into());
        row.served_model = Some("we\"ird\\model".into());
        row.usage.input_tokens = 10;
        row.latency_us = 250_000;
        row.effective_cost = tollgate_types::NanoUsd(42);
        let mut agg = Aggregates::default();
        agg.observe_row(&row, Some(ProviderKind::Openai));
        let mut text = String::new();
        agg.prometheus(&mut text);
        let base = r#"gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o",gen_ai_response_model="we\"ird\\model""#;
        for line in [
            "# TYPE gen_ai_client_operation_duration_seconds histogram".to_string(),
            format!("gen_ai_client_operation_duration_seconds_bucket{{{base},le=\"0.16\"}} 0"),
            format!("gen_ai_client_operation_duration_seconds_bucket{{{base},le=\"0.32\"}} 1"),
            format!("gen_ai_client_operation_duration_seconds_bucket{{{base},le=\"+Inf\"}} 1"),
            format!("gen_ai_client_operation_duration_seconds_count{{{base}}} 1"),
            format!("gen_ai_client_operation_duration_seconds_sum{{{base}}} 0.25"),
            format!(
                "gen_ai_client_token_usage_bucket{{{base},gen_ai_token_type=\"input\",le=\"16\"}} 1"
            ),
            format!("tollgate_genai_cost_nano_usd_total{{{base}}} 42"),
            "# TYPE gen_ai_server_time_to_first_token_seconds histogram".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
    }

    #[test]
    fn series_past_the_bound_go_to_overflow() {
        let mut f: Family<u64> = Family::default();
        let names: Vec<String> = (0..MAX_SERIES + 10).map(|i| format!("m{i}")).collect();
        for round in 0..2 {
            for n in &names {
                *f.entry(
                    Key {
                        operation: "chat",
                        provider: None,
                        request_model: Some(n),
                        response_model: None,
                        extra: None,
                    },
                    || 0,
                ) += 1;
            }
            let all = f.series();
            assert_eq!(all.len(), MAX_SERIES + 1, "round {round}");
            assert_eq!(*all.last().unwrap().1, 10 * (round + 1));
            assert!(all.last().unwrap().0.overflow);
            assert!(all[..MAX_SERIES].iter().all(|(_, v)| **v == round + 1));
        }
    }
}
