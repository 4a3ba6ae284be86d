//! HTML for the dashboard: the one escaping function ([`esc`]), the page layout, tables and
//! the small formatting helpers every page shares, the error page, and the headers every
//! `/ui` answer carries.
//!
//! Pages are built as strings. Every piece of text that is not a literal of this crate goes
//! through [`esc`] — tenant names, features, tags, models, key names and ids are user input —
//! and attribute values are always double-quoted, so escaping `& < > " '` is enough in both
//! places. No page has an inline script or style attribute, so the content security policy
//! can refuse both (`default-src 'none'`).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// The stylesheet's URL (served by `ui::assets`).
pub(crate) const STYLESHEET: &str = "/ui/assets/tollgate.css";

/// The content security policy of every dashboard answer: nothing but this origin's
/// stylesheet and images (and the `data:` empty favicon), forms posting only here, never
/// framed.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Escapes text for HTML element content and double-quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query-string component (everything but RFC 3986's unreserved bytes).
pub(crate) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `?k=v&…` of the non-empty pairs (the empty string when none), encoded.
pub(crate) fn query(pairs: &[(&str, &str)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// A JSON value as escaped text: strings as they are, numbers as JSON writes them, `null` as
/// an em dash.
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".to_string(),
        Value::String(s) => esc(s),
        Value::Bool(b) => (if *b { "yes" } else { "no" }).to_string(),
        other => esc(&other.to_string()),
    }
}

/// A JSON value as short plain text (not escaped): `{a: 1, b: [x, y]}` without quotes, for
/// scopes, policy steps and actions.
pub(crate) fn compact(v: &Value) -> String {
    match v {
        Value::Null => "—".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(compact).collect::<Vec<_>>().join(", "),
        Value::Object(m) if m.is_empty() => "{} (everything)".to_string(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| match v {
                Value::Object(_) => format!("{k}: {{{}}}", compact(v)),
                Value::Array(_) => format!("{k}: [{}]", compact(v)),
                _ => format!("{k}: {}", compact(v)),
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// A USD amount from the API (a decimal string) as `$0.0123`; `null` as an em dash.
pub(crate) fn usd(v: &Value) -> String {
    match v {
        Value::String(s) => format!("${}", esc(s)),
        Value::Null => "—".to_string(),
        other => format!("${}", text(other)),
    }
}

/// Milliseconds from the API (one decimal) as `12.3 ms`.
pub(crate) fn millis(v: &Value) -> String {
    match v.as_f64() {
        Some(ms) => format!("{ms:.1} ms"),
        None => "—".to_string(),
    }
}

/// A ratio from the API (0..1) as a percentage with one decimal.
pub(crate) fn percent(v: &Value) -> String {
    match v.as_f64() {
        Some(r) => format!("{:.1}%", r * 100.0),
        None => "—".to_string(),
    }
}

/// Unix milliseconds as `2026-01-02 03:04:05Z` (UTC).
pub(crate) fn time_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// An RFC 3339 time from the API as `2026-01-02 03:04:05Z`; other values as text.
pub(crate) fn time(v: &Value) -> String {
    match v.as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok()) {
        Some(t) => time_ms(t.as_millisecond()),
        None => text(v),
    }
}

/// An instant as a form field's value: RFC 3339 UTC to the second (what `parse_time` reads).
pub(crate) fn input_time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// One column of a [`table`]: its heading and whether it holds numbers (right-aligned).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Col(pub(crate) &'static str, pub(crate) bool);

/// A table (cells are markup, already escaped) in a horizontally scrolling box, so a phone
/// can read it; `empty` is shown instead when there are no rows.
pub(crate) fn table(id: &str, cols: &[Col], rows: &[Vec<String>], empty: &str) -> String {
    if rows.is_empty() {
        return format!("<p class=\"empty\" id=\"{}\">{}</p>", esc(id), esc(empty));
    }
    let mut h = format!(
        "<div class=\"scroll\"><table id=\"{}\"><thead><tr>",
        esc(id)
    );
    for c in cols {
        let class = if c.1 { " class=\"num\"" } else { "" };
        h.push_str(&format!("<th scope=\"col\"{class}>{}</th>", esc(c.0)));
    }
    h.push_str("</tr></thead><tbody>");
    for r in rows {
        h.push_str("<tr>");
        for (i, cell) in r.iter().enumerate() {
            let num = cols.get(i).is_some_and(|c| c.1);
            let class = if num { " class=\"num\"" } else { "" };
            h.push_str(&format!("<td{class}>{cell}</td>"));
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table></div>");
    h
}

/// A labelled figure for the tile grids: `data-figure` names it for tests and scripts.
pub(crate) fn tile(figure: &str, label: &str, value: &str, note: &str) -> String {
    let note = if note.is_empty() {
        String::new()
    } else {
        format!("<span class=\"note\">{note}</span>")
    };
    format!(
        "<div class=\"tile\"><span class=\"label\">{}</span><span class=\"value\" data-figure=\"{}\">{value}</span>{note}</div>",
        esc(label),
        esc(figure),
    )
}

/// A message box: `kind` is `error`, `notice` or `secret`.
pub(crate) fn message(kind: &str, text_html: &str) -> String {
    let role = if kind == "error" { "alert" } else { "status" };
    format!("<div class=\"msg {kind}\" role=\"{role}\">{text_html}</div>")
}

/// The dashboard's sections, in navigation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Overview,
    Budgets,
    Requests,
    Tenants,
    Deployments,
    Keys,
    Policies,
    Finance,
    /// Pages outside the sections (sign-in, errors).
    None,
}

const SECTIONS: &[(Nav, &str, &str)] = &[
    (Nav::Overview, "/ui/", "Overview"),
    (Nav::Budgets, "/ui/budgets", "Budgets"),
    (Nav::Requests, "/ui/requests", "Requests"),
    (Nav::Tenants, "/ui/tenants", "Tenants"),
    (Nav::Deployments, "/ui/deployments", "Deployments"),
    (Nav::Keys, "/ui/keys", "Keys"),
    (Nav::Policies, "/ui/policies", "Policies"),
    (Nav::Finance, "/ui/finance", "Finance"),
];

/// Who is signed in, for the page header: a label (`master key`, `token tok_…`), the role,
/// and the session's CSRF token for the sign-out form.
#[derive(Debug, Clone)]
pub(crate) struct Chrome {
    pub(crate) who: String,
    pub(crate) role: &'static str,
    pub(crate) csrf: String,
}

/// The hidden CSRF field every mutating form carries.
pub(crate) fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

/// A whole page: header with navigation and sign-out (when signed in), the title, the body.
pub(crate) fn page(title: &str, nav: Nav, chrome: Option<&Chrome>, body: &str) -> String {
    let mut h = String::with_capacity(body.len() + 2048);
    h.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    h.push_str(&format!("<title>{} · Tollgate</title>", esc(title)));
    h.push_str("<link rel=\"icon\" href=\"data:,\">");
    h.push_str(&format!("<link rel=\"stylesheet\" href=\"{STYLESHEET}\">"));
    h.push_str("</head><body><header class=\"top\"><a class=\"brand\" href=\"/ui/\">Tollgate</a>");
    if let Some(c) = chrome {
        h.push_str("<nav aria-label=\"Sections\"><ul>");
        for (n, href, label) in SECTIONS {
            let current = if *n == nav {
                " aria-current=\"page\""
            } else {
                ""
            };
            h.push_str(&format!("<li><a href=\"{href}\"{current}>{label}</a></li>"));
        }
        h.push_str("</ul></nav>");
        h.push_str(&format!(
            "<form class=\"who\" method=\"post\" action=\"/ui/logout\"><span id=\"who\">{} · <strong id=\"role\">{}</strong></span>{}<button type=\"submit\" id=\"sign-out\">Sign out</button></form>",
            esc(&c.who),
            c.role,
            csrf_field(&c.csrf)
        ));
    }
    h.push_str("</header><main id=\"main\">");
    h.push_str(&format!("<h1>{}</h1>", esc(title)));
    h.push_str(body);
    h.push_str("</main><footer>Tollgate · every figure on this page comes from the admin API's own queries</footer></body></html>");
    h
}

/// An HTML answer with the dashboard's headers.
pub(crate) fn respond(status: StatusCode, html: String) -> Response {
    let mut resp = (status, html).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

/// An error page: the status, a heading and the message (plain text, escaped here).
pub(crate) fn error_page(
    status: StatusCode,
    chrome: Option<&Chrome>,
    title: &str,
    text_plain: &str,
) -> Response {
    let back = if chrome.is_some() {
        "<p><a href=\"/ui/\">Back to the overview</a></p>"
    } else {
        "<p><a href=\"/ui/login\">Sign in</a></p>"
    };
    let body = format!("{}{back}", message("error", &esc(text_plain)));
    respond(status, page(title, Nav::None, chrome, &body))
}

/// The heading an error status gets on its page.
pub(crate) fn status_title(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "Bad request",
        401 => "Not signed in",
        403 => "Not allowed",
        404 => "Not found",
        413 => "Too large",
        429 => "Too many attempts",
        500..=599 => "Something went wrong",
        _ => "Error",
    }
}

/// A 303 redirect (after a form, or to the sign-in page).
pub(crate) fn redirect(to: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// The headers of every `/ui` answer (set unless a handler set them): the content security
/// policy, no caching of pages that show spend and keys, no MIME sniffing, no framing, no
/// referrer outside this origin.
pub(crate) fn security_headers(h: &mut HeaderMap) {
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
    ];
    for (name, value) in fixed {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    }
}

/// The page for a method a dashboard path does not take (the router's 405 fallback, which
/// runs outside [`finish`], so it sets the security headers itself).
pub(crate) fn method_not_allowed() -> Response {
    let mut resp = error_page(
        StatusCode::METHOD_NOT_ALLOWED,
        None,
        "Not allowed",
        "This page does not take that kind of request.",
    );
    security_headers(resp.headers_mut());
    resp
}

/// The layer around every `/ui` answer: [`security_headers`], and a
/// `Server-Timing: app;dur=<ms>` header, the handler's own time, which `bench/dashboard.py`
/// reads so the page figures are the server's and not the socket's. It names only a duration,
/// nothing about the data.
pub(crate) async fn finish(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let mut resp = next.run(req).await;
    security_headers(resp.headers_mut());
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={ms:.1}")) {
        resp.headers_mut().insert("server-timing", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_attributes() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(esc("plain tenant-1"), "plain tenant-1");
        assert_eq!(text(&Value::String("<b>".into())), "&lt;b&gt;");
        assert_eq!(usd(&Value::String("<1>".into())), "$&lt;1&gt;");
        let v = serde_json::json!({"when": {"utilization_pct": 50}, "then": [{"downgrade": {"a": "b"}}, "block"]});
        assert_eq!(
            compact(&v),
            "when: {utilization_pct: 50}, then: [downgrade: {a: b}, block]"
        );
        assert_eq!(compact(&serde_json::json!({})), "{} (everything)");
    }

    #[test]
    fn queries_are_encoded_and_skip_empty_values() {
        assert_eq!(
            query(&[("tenant", "a&b c"), ("model", ""), ("x", "é")]),
            "?tenant=a%26b%20c&x=%C3%A9"
        );
        assert_eq!(query(&[("a", "")]), "");
    }

    #[test]
    fn pages_carry_no_inline_script_or_style() {
        let c = Chrome {
            who: "<x>".into(),
            role: "admin",
            csrf: "t\"".into(),
        };
        let p = page("<T>", Nav::Overview, Some(&c), "");
        assert!(!p.contains("<script") && !p.contains("style="), "{p}");
        assert!(p.contains("&lt;T&gt;") && p.contains("&lt;x&gt;") && p.contains("t&quot;"));
        assert!(p.contains("aria-current=\"page\""));
    }
}
