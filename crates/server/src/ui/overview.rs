//! `GET /ui/?from=&to=&by=`: the overview — today's and this month's spend with the month's
//! forecast, the range's traffic (requests, error rate, p50/p95 latency and time to first
//! byte, cache hit rate and what it saved) from `GET /admin/v1/stats`, and spend over time
//! (hourly for ranges up to two days, else daily) stacked by tenant, model, provider or
//! feature from `GET /admin/v1/spend?group_by=hour,<by>`.

use std::collections::{BTreeMap, HashMap};

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;
use tollgate_types::NanoUsd;

use crate::admin::reports::spend_report;
use crate::admin::stats::stats_value;
use crate::gateway::{Gateway, now_ms};
use crate::ui::chart::{self, MAX_SERIES, Series};
use crate::ui::html::{self, Nav, esc, message, millis, percent, query, tile, usd};
use crate::ui::range::{self, DAY_MS, DefaultRange, HOUR_MS, Range};
use crate::ui::session::Session;

/// What the chart can stack by.
const STACKS: [&str; 4] = ["tenant", "model", "provider", "feature"];

pub(crate) async fn page(
    State(gw): State<Gateway>,
    Extension(session): Extension<Session>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let now = now_ms();
    let chrome = session.chrome();
    let r = Range::of(
        &q,
        DefaultRange::LastDay,
        gw.settings().max_report_range,
        now,
    );
    let by = q
        .get("by")
        .map(|b| b.trim().to_ascii_lowercase())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "tenant".to_string());
    let form = range::form("/ui/", &r, &[("by", &by)], now);
    let fail = |status: StatusCode, text: &str| {
        let body = format!("{form}{}", message("error", &esc(text)));
        html::respond(
            status,
            html::page("Overview", Nav::Overview, Some(&chrome), &body),
        )
    };
    let (from_ms, to_ms) = match &r.valid {
        Ok(v) => *v,
        Err(e) => {
            let (status, text) = range::shown(e);
            return fail(status, &text);
        }
    };
    if !STACKS.contains(&by.as_str()) {
        return fail(
            StatusCode::BAD_REQUEST,
            &format!("'by' must be one of {}", STACKS.join(", ")),
        );
    }
    let range_q: HashMap<String, String> = r
        .pairs()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let hourly = to_ms - from_ms <= 2 * DAY_MS;
    let bucket_dim = if hourly { "hour" } else { "day" };
    let mut spend_q = range_q.clone();
    spend_q.insert("group_by".into(), format!("{bucket_dim},{by}"));
    // Independent reads, on two blocking threads at once.
    let (stats, spend) =
        match tokio::try_join!(stats_value(&gw, &range_q, now), spend_report(&gw, &spend_q)) {
            Ok(v) => v,
            Err(e) => {
                let (status, text) = range::shown(&e);
                return fail(status, &text);
            }
        };

    let mut body = form;
    body.push_str(&tiles(&stats));
    body.push_str("<h2>Spend over time</h2><div class=\"switch\" aria-label=\"Stack by\"><span>Stack by:</span>");
    for s in STACKS {
        let href = format!(
            "/ui/{}",
            query(&[("from", &r.from), ("to", &r.to), ("by", s)])
        );
        let current = if s == by {
            " aria-current=\"true\""
        } else {
            ""
        };
        body.push_str(&format!(
            "<a href=\"{}\"{current} id=\"by-{s}\">{s}</a>",
            esc(&href)
        ));
    }
    body.push_str("</div>");
    let (buckets, labels) = bucket_keys(from_ms, to_ms, hourly);
    let series = series_of(&spend, bucket_dim, &by, &buckets);
    let caption = format!(
        "Spend per {} by {by}, {} to {} (UTC); total ${}",
        if hourly { "hour" } else { "day" },
        html::time_ms(from_ms),
        html::time_ms(to_ms),
        spend["total"]["cost_usd"].as_str().unwrap_or("0")
    );
    body.push_str(&chart::stacked_bars(
        "spend-chart",
        &caption,
        &labels,
        &series,
    ));
    html::respond(
        StatusCode::OK,
        html::page("Overview", Nav::Overview, Some(&chrome), &body),
    )
}

/// The tiles: the calendar figures, then the range's.
fn tiles(s: &Value) -> String {
    let c = &s["current"];
    let o = &s["outcomes"];
    let cache = &s["cache"];
    let mut h = String::from("<h2>Spend</h2><div class=\"grid\" id=\"spend-tiles\">");
    h.push_str(&tile("day", "Spend today (UTC)", &usd(&c["day_usd"]), ""));
    h.push_str(&tile(
        "month",
        "Spend this month",
        &usd(&c["month_usd"]),
        "",
    ));
    h.push_str(&tile(
        "forecast",
        "Forecast to month end",
        &usd(&c["month_forecast_usd"]),
        "linear, from the month so far",
    ));
    h.push_str(&tile("cost", "Spend in range", &usd(&s["cost_usd"]), ""));
    h.push_str("</div><h2>Traffic in range</h2><div class=\"grid\" id=\"traffic-tiles\">");
    h.push_str(&tile(
        "requests",
        "Requests",
        &html::text(&s["requests"]),
        "",
    ));
    h.push_str(&tile(
        "error_rate",
        "Error rate",
        &percent(&s["error_rate"]),
        &format!(
            "{} rejected · {} failed · {} cancelled",
            html::text(&o["rejected"]),
            html::text(&o["failed"]),
            html::text(&o["cancelled"])
        ),
    ));
    h.push_str(&tile(
        "latency_p50",
        "Latency p50",
        &millis(&s["latency_ms"]["p50"]),
        "served requests",
    ));
    h.push_str(&tile(
        "latency_p95",
        "Latency p95",
        &millis(&s["latency_ms"]["p95"]),
        "served requests",
    ));
    h.push_str(&tile(
        "ttft_p50",
        "Time to first token p50",
        &millis(&s["ttft_ms"]["p50"]),
        "",
    ));
    h.push_str(&tile(
        "ttft_p95",
        "Time to first token p95",
        &millis(&s["ttft_ms"]["p95"]),
        "",
    ));
    h.push_str(&tile(
        "cache_hit_rate",
        "Cache hit rate",
        &percent(&cache["hit_rate"]),
        &format!(
            "{} hits · {} misses",
            html::text(&cache["hits"]),
            html::text(&cache["misses"])
        ),
    ));
    h.push_str(&tile(
        "cache_saved",
        "Saved by the cache",
        &usd(&cache["saved_usd"]),
        "",
    ));
    h.push_str("</div>");
    h
}

/// Every bucket of `[from, to)`: the spend report's key (`2026-01-02T03:00:00Z` or
/// `2026-01-02`) and the chart's label.
fn bucket_keys(from_ms: i64, to_ms: i64, hourly: bool) -> (Vec<String>, Vec<String>) {
    let step = if hourly { HOUR_MS } else { DAY_MS };
    let mut t = from_ms.div_euclid(step) * step;
    let (mut keys, mut labels) = (Vec::new(), Vec::new());
    while t < to_ms && keys.len() < 1000 {
        let Ok(ts) = jiff::Timestamp::from_millisecond(t) else {
            break;
        };
        if hourly {
            keys.push(ts.strftime("%Y-%m-%dT%H:00:00Z").to_string());
            labels.push(ts.strftime("%m-%d %H:00").to_string());
        } else {
            keys.push(ts.strftime("%Y-%m-%d").to_string());
            labels.push(ts.strftime("%Y-%m-%d").to_string());
        }
        t += step;
    }
    (keys, labels)
}

/// The report's lines as series over `buckets`, the most expensive first; past
/// [`MAX_SERIES`], the rest summed as "other".
fn series_of(report: &Value, bucket_dim: &str, by: &str, buckets: &[String]) -> Vec<Series> {
    let index: HashMap<&str, usize> = buckets
        .iter()
        .enumerate()
        .map(|(i, b)| (b.as_str(), i))
        .collect();
    let mut per: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for line in report["data"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let (Some(bucket), Some(name)) = (line[bucket_dim].as_str(), line[by].as_str()) else {
            continue;
        };
        let Some(&i) = index.get(bucket) else {
            continue;
        };
        let cost = line["cost_usd"]
            .as_str()
            .and_then(|c| NanoUsd::parse_usd(c).ok())
            .map_or(0, NanoUsd::nanos);
        per.entry(name.to_string())
            .or_insert_with(|| vec![0; buckets.len()])[i] += cost;
    }
    let mut all: Vec<Series> = per
        .into_iter()
        .map(|(name, values)| Series { name, values })
        .collect();
    all.sort_by(|a, b| {
        let (ta, tb): (i64, i64) = (a.values.iter().sum(), b.values.iter().sum());
        tb.cmp(&ta).then_with(|| a.name.cmp(&b.name))
    });
    if all.len() > MAX_SERIES + 1 {
        let rest = all.split_off(MAX_SERIES);
        let mut other = vec![0; buckets.len()];
        for s in rest {
            for (o, v) in other.iter_mut().zip(s.values) {
                *o += v;
            }
        }
        all.push(Series {
            name: "other".to_string(),
            values: other,
        });
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn buckets_cover_the_range_and_series_keep_the_top_ones() {
        let from = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        let (keys, labels) = bucket_keys(from, from + 3 * HOUR_MS, true);
        assert_eq!(
            keys,
            [
                "2026-01-01T00:00:00Z",
                "2026-01-01T01:00:00Z",
                "2026-01-01T02:00:00Z"
            ]
        );
        assert_eq!(labels[1], "01-01 01:00");
        let (keys, _) = bucket_keys(from + HOUR_MS, from + 3 * DAY_MS, false);
        assert_eq!(keys, ["2026-01-01", "2026-01-02", "2026-01-03"]);

        let mut data = Vec::new();
        for t in 0..10 {
            data.push(json!({"hour": "2026-01-01T01:00:00Z", "tenant": format!("t{t}"), "cost_usd": format!("0.00000{t}")}));
        }
        data.push(json!({"hour": "1999-01-01T00:00:00Z", "tenant": "old", "cost_usd": "1"}));
        let report = json!({"data": data});
        let (keys, _) = bucket_keys(from, from + 3 * HOUR_MS, true);
        let s = series_of(&report, "hour", "tenant", &keys);
        assert_eq!(s.len(), MAX_SERIES + 1);
        assert_eq!(s[0].name, "t9");
        assert_eq!(s[0].values, [0, 9_000, 0]);
        assert_eq!(s[MAX_SERIES].name, "other");
        // t0, t1, t2 are summed: 0 + 1000 + 2000 nano-USD.
        assert_eq!(s[MAX_SERIES].values, [0, 3_000, 0]);
    }
}
