//! The GenAI metrics, aggregated in the exporter task from every finished request (sampled or
//! not): cumulative histograms with the semantic conventions' advised bucket boundaries, and
//! Tollgate's cost counter in integer nano-USD.
//!
//! **Cardinality.** Labels are the operation, the provider kind, the requested and the served
//! model, and one of `gen_ai.token.type` or `error.type` — all bounded by the config (a
//! request that never reached a deployment, e.g. an unknown model, is not observed) and by the
//! error table. Never tenant, key or user: those are on spans and in the ledger. Past
//! [`MAX_SERIES`] label sets per metric a new set is counted under `otel.metric.overflow`.

use std::collections::BTreeMap;

use crate::{RequestSpan, genai_provider, operation};

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

/// One metric's series.
#[derive(Debug, Clone)]
pub struct Family<T> {
    pub series: BTreeMap<Labels, T>,
}

impl<T> Default for Family<T> {
    fn default() -> Self {
        Family {
            series: BTreeMap::new(),
        }
    }
}

impl<T> Family<T> {
    fn entry(&mut self, labels: Labels, new: impl Fn() -> T) -> &mut T {
        let key = if self.series.contains_key(&labels) || self.series.len() < MAX_SERIES {
            labels
        } else {
            Labels::overflow()
        };
        self.series.entry(key).or_insert_with(new)
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
        self.duration.series.is_empty()
    }

    /// Adds one finished request.
    pub fn observe(&mut self, s: &RequestSpan) {
        let row = &s.row;
        if row.provider.is_none() {
            return;
        }
        let base = Labels {
            operation: operation(&row.endpoint),
            provider: s.provider_kind.map(genai_provider),
            request_model: row.requested_model.clone(),
            response_model: row.served_model.clone(),
            extra: None,
            overflow: false,
        };
        let error = (row.status >= 400)
            .then(|| row.error_code.clone())
            .flatten()
            .map(|e| ("error.type", e));
        self.duration
            .entry(
                Labels {
                    extra: error,
                    ..base.clone()
                },
                || Histogram::new(DURATION_BOUNDS),
            )
            .record(row.latency_us as f64 / 1e6);
        if row.stream
            && let Some(t) = row.ttft_us
        {
            self.ttft
                .entry(base.clone(), || Histogram::new(TTFT_BOUNDS))
                .record(t as f64 / 1e6);
        }
        for (kind, n) in [
            ("input", row.usage.input_tokens),
            ("output", row.usage.output_tokens),
        ] {
            if n > 0 {
                self.token_usage
                    .entry(
                        Labels {
                            extra: Some(("gen_ai.token.type", kind.to_string())),
                            ..base.clone()
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
    fn series_past_the_bound_go_to_overflow() {
        let mut f: Family<u64> = Family::default();
        for i in 0..MAX_SERIES + 10 {
            *f.entry(
                Labels {
                    request_model: Some(format!("m{i}")),
                    overflow: false,
                    ..Labels::overflow()
                },
                || 0,
            ) += 1;
        }
        assert_eq!(f.series.len(), MAX_SERIES + 1);
        assert_eq!(f.series[&Labels::overflow()], 10);
    }
}
