//! The time range of the pages that have one (`?from=&to=`): defaults, validation by the
//! admin API's own range check (so a bad date is the API's message, shown on the page), and
//! the range form with its presets.

use std::collections::HashMap;

use axum::http::StatusCode;
use tollgate_types::{ApiError, ErrorCode};

use crate::admin::reports;
use crate::ui::html::{esc, input_time, query};

pub(crate) const HOUR_MS: i64 = 3_600_000;
pub(crate) const DAY_MS: i64 = 24 * HOUR_MS;

/// What a page shows when the URL names no range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DefaultRange {
    /// The 24 whole hours up to the end of the current one.
    LastDay,
    /// From the start of the UTC month to the end of the current hour.
    MonthToDate,
}

/// A page's range: the text of the two fields (as typed, for the form) and, when valid, the
/// instants.
#[derive(Debug, Clone)]
pub(crate) struct Range {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) valid: Result<(i64, i64), ApiError>,
}

impl Range {
    /// The range of `q` (defaults filled in), checked like the admin API checks it.
    pub(crate) fn of(
        q: &HashMap<String, String>,
        default: DefaultRange,
        max: std::time::Duration,
        now_ms: i64,
    ) -> Range {
        let end = now_ms.div_euclid(HOUR_MS) * HOUR_MS + HOUR_MS;
        let start = match default {
            DefaultRange::LastDay => end - DAY_MS,
            DefaultRange::MonthToDate => tollgate_policy::window::bounds(
                tollgate_policy::Window::Month,
                &jiff::tz::TimeZone::UTC,
                now_ms,
            )
            .map_or(end - 30 * DAY_MS, |(s, _)| s),
        };
        let given = |k: &str| {
            q.get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let from = given("from").unwrap_or_else(|| input_time(start));
        let to = given("to").unwrap_or_else(|| input_time(end));
        let checked = HashMap::from([
            ("from".to_string(), from.clone()),
            ("to".to_string(), to.clone()),
        ]);
        Range {
            valid: reports::range(&checked, max),
            from,
            to,
        }
    }

    /// The `from`/`to` pairs of this range, for links and API queries.
    pub(crate) fn pairs(&self) -> [(&'static str, &str); 2] {
        [("from", self.from.as_str()), ("to", self.to.as_str())]
    }
}

/// The status and plain-text message an API error is shown with on a page (an internal
/// error's cause goes to the log, never to the page).
pub(crate) fn shown(e: &ApiError) -> (StatusCode, String) {
    if e.code == ErrorCode::InternalError {
        tracing::error!(message = %e.message, cause = e.cause.as_deref().unwrap_or("-"), "dashboard: internal error");
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error: the gateway's log has the cause".to_string(),
        );
    }
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    (status, e.message.clone())
}

/// The range form of `action`, keeping `keep` (other parameters of the page) as hidden
/// fields, with presets for the last day, week and month.
pub(crate) fn form(action: &str, r: &Range, keep: &[(&str, &str)], now_ms: i64) -> String {
    let mut h = format!(
        "<form class=\"filters\" method=\"get\" action=\"{action}\" id=\"range\">\
         <label>From <input type=\"text\" name=\"from\" value=\"{}\" placeholder=\"YYYY-MM-DD or RFC 3339\"></label>\
         <label>To <input type=\"text\" name=\"to\" value=\"{}\" placeholder=\"YYYY-MM-DD or RFC 3339\"></label>",
        esc(&r.from),
        esc(&r.to)
    );
    for (k, v) in keep.iter().filter(|(_, v)| !v.is_empty()) {
        h.push_str(&format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            esc(k),
            esc(v)
        ));
    }
    h.push_str("<button type=\"submit\">Show</button></form>");
    let end = now_ms.div_euclid(HOUR_MS) * HOUR_MS + HOUR_MS;
    h.push_str("<div class=\"switch\" aria-label=\"Presets\"><span>Presets:</span>");
    for (label, days) in [("Last 24 h", 1), ("Last 7 days", 7), ("Last 30 days", 30)] {
        let from = input_time(end - days * DAY_MS);
        let to = input_time(end);
        let mut pairs: Vec<(&str, &str)> = vec![("from", &from), ("to", &to)];
        pairs.extend(keep.iter().copied());
        h.push_str(&format!(
            "<a href=\"{action}{}\">{label}</a>",
            esc(&query(&pairs))
        ));
    }
    h.push_str("</div>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_bad_dates_and_long_ranges() {
        let now = 1_767_323_045_000; // 2026-01-02T03:04:05Z
        let max = std::time::Duration::from_secs(400 * 86_400);
        let r = Range::of(&HashMap::new(), DefaultRange::LastDay, max, now);
        assert_eq!(
            (r.from.as_str(), r.to.as_str()),
            ("2026-01-01T04:00:00Z", "2026-01-02T04:00:00Z")
        );
        assert!(r.valid.is_ok());
        let r = Range::of(&HashMap::new(), DefaultRange::MonthToDate, max, now);
        assert_eq!(r.from, "2026-01-01T00:00:00Z");
        let q = HashMap::from([("from".to_string(), "yesterday".to_string())]);
        let r = Range::of(&q, DefaultRange::LastDay, max, now);
        assert_eq!(r.from, "yesterday");
        let e = r.valid.unwrap_err();
        assert_eq!(shown(&e).0, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("'from' must be"), "{}", e.message);
        let q = HashMap::from([
            ("from".to_string(), "2020-01-01".to_string()),
            ("to".to_string(), "2026-01-01".to_string()),
        ]);
        assert!(
            Range::of(&q, DefaultRange::LastDay, max, now)
                .valid
                .is_err()
        );
    }
}
