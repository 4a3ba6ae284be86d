//! Signing in and out: `GET /ui/login` (the form), `POST /ui/login` (the master key or an
//! admin token, authenticated by the admin guard's own function, rate-limited per client
//! address), `POST /ui/logout` (behind the session layer, so with the CSRF token).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use crate::admin::authenticate_credential;
use crate::gateway::{Gateway, now_ms};
use crate::ui::html::{self, Nav, esc, message, page, respond};
use crate::ui::session::{
    COOKIE, Form, LOGIN_FAILURES, LOGIN_WINDOW, Sessions, actor_valid, cookie, over_tls, safe_next,
    same_origin, set_cookie,
};

/// The sign-in form, with an optional message above it.
fn form_page(status: StatusCode, next: &str, notice: Option<(&str, String)>) -> Response {
    let mut body = String::new();
    if let Some((kind, text)) = notice {
        body.push_str(&message(kind, &text));
    }
    body.push_str(&format!(
        "<form class=\"card signin\" method=\"post\" action=\"/ui/login\">\
         <input type=\"text\" name=\"username\" value=\"tollgate\" autocomplete=\"username\" hidden>\
         <label for=\"credential\">Master key or admin token</label>\
         <input type=\"password\" id=\"credential\" name=\"credential\" autocomplete=\"current-password\" required autofocus>\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <button type=\"submit\" id=\"sign-in\">Sign in</button></form>\
         <p class=\"hint\">An admin may change keys; a <strong>viewer</strong> token \
         (<code>POST /admin/v1/tokens</code> with <code>\"role\": \"viewer\"</code>) reads every page and changes nothing. \
         <code>tollgate demo --serve</code> prints a ready viewer token.</p>",
        esc(next)
    ));
    respond(status, page("Sign in", Nav::None, None, &body))
}

/// `GET /ui/login`: the form (or straight on, when the browser already has a session).
pub(crate) async fn form(
    State(gw): State<Gateway>,
    Extension(sessions): Extension<Arc<Sessions>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let next = safe_next(q.get("next").map(String::as_str));
    if let Some(id) = cookie(&headers, COOKIE)
        && sessions
            .get(&id, Instant::now(), |a| actor_valid(&gw, a))
            .is_some()
    {
        return html::redirect(&next);
    }
    let notice = q.contains_key("expired").then(|| {
        (
            "notice",
            "Your session has ended (signed out, idle too long, or its token was revoked): sign in again."
                .to_string(),
        )
    });
    form_page(StatusCode::OK, &next, notice)
}

/// `POST /ui/login`.
pub(crate) async fn login(
    State(gw): State<Gateway>,
    Extension(sessions): Extension<Arc<Sessions>>,
    req: Request,
) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let now = Instant::now();
    let secure = over_tls(req.headers());
    if !same_origin(req.headers()) {
        return form_page(
            StatusCode::FORBIDDEN,
            "/ui/",
            Some((
                "error",
                "This sign-in was sent from another site.".to_string(),
            )),
        );
    }
    if let Err(wait) = sessions.sign_in_allowed(ip, now) {
        let secs = wait.as_secs().max(1);
        let mut resp = form_page(
            StatusCode::TOO_MANY_REQUESTS,
            "/ui/",
            Some((
                "error",
                format!(
                    "Too many failed sign-ins from this address ({LOGIN_FAILURES} in {} s): try again in {secs} s.",
                    LOGIN_WINDOW.as_secs()
                ),
            )),
        );
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    let bytes = match crate::http::body::read(
        req.into_body(),
        16 * 1024,
        gw.settings().limits.body_read_timeout,
    )
    .await
    {
        Ok(b) => b,
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            return form_page(status, "/ui/", Some(("error", esc(&e.message))));
        }
    };
    let f = Form::parse(&bytes);
    let next = safe_next(f.get("next"));
    let Some(credential) = f.get("credential") else {
        return form_page(
            StatusCode::BAD_REQUEST,
            &next,
            Some((
                "error",
                "Enter the master key or an admin token.".to_string(),
            )),
        );
    };
    match authenticate_credential(&gw, credential) {
        Ok((role, actor)) => {
            sessions.sign_in_succeeded(ip);
            let (id, _) = sessions.open(role, actor, now);
            tracing::info!(at_ms = now_ms(), client = %ip, "dashboard sign-in");
            let mut resp = html::redirect(&next);
            if let Ok(v) = HeaderValue::from_str(&set_cookie(Some(&id), secure)) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        Err(e) => {
            sessions.sign_in_failed(ip, now);
            tracing::warn!(client = %ip, "dashboard sign-in refused");
            form_page(
                StatusCode::UNAUTHORIZED,
                &next,
                Some(("error", format!("Wrong credential: {}.", esc(&e.message)))),
            )
        }
    }
}

/// `POST /ui/logout`: ends the session, clears the cookie, back to the sign-in form.
pub(crate) async fn logout(
    Extension(sessions): Extension<Arc<Sessions>>,
    headers: HeaderMap,
    _body: Body,
) -> Response {
    if let Some(id) = cookie(&headers, COOKIE) {
        sessions.close(&id);
    }
    let mut resp = html::redirect("/ui/login");
    if let Ok(v) = HeaderValue::from_str(&set_cookie(None, over_tls(&headers))) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}
