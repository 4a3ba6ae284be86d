//! `GET /ui/keys`: virtual keys as `GET /admin/v1/keys` lists them; for admins, a form to
//! create one (`POST /ui/keys`, shown once, through the admin API's own `create_key`) and a
//! revoke button per active key (`POST /ui/keys/{id}/revoke`, through `revoke_key`). Both
//! changes are audited as the session's actor. A viewer sees the list only (and the session
//! layer refuses its posts).

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;
use tollgate_attribution::keys::NewKey;

use crate::admin::keys::{create_key, list_value, revoke_key};
use crate::admin::list::MAX_LIMIT;
use crate::gateway::Gateway;
use crate::ui::html::{self, Col, Nav, csrf_field, esc, message, query, table, text, time};
use crate::ui::range;
use crate::ui::session::{Form, Session};

pub(crate) async fn page(
    State(gw): State<Gateway>,
    Extension(session): Extension<Session>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut notice = String::new();
    if let Some(id) = q.get("revoked").filter(|v| !v.is_empty()) {
        notice = message(
            "notice",
            &format!("Key <span class=\"mono\">{}</span> revoked.", esc(id)),
        );
    }
    render(&gw, &session, &q, StatusCode::OK, &notice, &Form::default()).await
}

/// The page with `top` (a message) above the list; `form` refills the creation form.
async fn render(
    gw: &Gateway,
    session: &Session,
    q: &HashMap<String, String>,
    status: StatusCode,
    top: &str,
    form: &Form,
) -> Response {
    let chrome = session.chrome();
    let include = crate::admin::list::include_revoked(q);
    let mut api_q = HashMap::from([("limit".to_string(), MAX_LIMIT.to_string())]);
    if include {
        api_q.insert("include_revoked".into(), "true".into());
    }
    if let Some(c) = q.get("cursor").filter(|c| !c.is_empty()) {
        api_q.insert("cursor".into(), c.clone());
    }
    let list = match list_value(gw, &api_q).await {
        Ok(v) => v,
        Err(e) => {
            let (status, msg) = range::shown(&e);
            return html::error_page(status, Some(&chrome), html::status_title(status), &msg);
        }
    };
    let mut body = top.to_string();
    if session.is_admin() {
        body.push_str(&create_form(&chrome.csrf, form));
    } else {
        body.push_str(&message(
            "notice",
            "You are signed in as a <strong>viewer</strong>: keys are listed here, but only an admin can create or revoke them.",
        ));
    }
    body.push_str(&format!(
        "<h2>Keys</h2><div class=\"switch\"><a href=\"/ui/keys\"{}>Active</a><a href=\"/ui/keys?include_revoked=true\"{} id=\"show-revoked\">Include revoked</a></div>",
        if include { "" } else { " aria-current=\"true\"" },
        if include { " aria-current=\"true\"" } else { "" },
    ));
    let rows: Vec<Vec<String>> = list["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|k| row(k, session, &chrome.csrf))
        .collect();
    body.push_str(&table(
        "keys",
        &[
            Col("Name", false),
            Col("Id", false),
            Col("Prefix", false),
            Col("Tenant", false),
            Col("Team", false),
            Col("Models", false),
            Col("Created (UTC)", false),
            Col("Expires", false),
            Col("Status", false),
            Col("", false),
        ],
        &rows,
        "No keys.",
    ));
    if let Some(next) = list["next_cursor"].as_str() {
        let inc = if include { "true" } else { "" };
        body.push_str(&format!(
            "<nav class=\"pager\"><a href=\"/ui/keys{}\">More →</a></nav>",
            esc(&query(&[("include_revoked", inc), ("cursor", next)]))
        ));
    }
    html::respond(status, html::page("Keys", Nav::Keys, Some(&chrome), &body))
}

fn create_form(csrf: &str, f: &Form) -> String {
    let v = |k: &str| esc(f.get(k).unwrap_or(""));
    let checked = if f.get("allow_tenant_header").is_some() {
        " checked"
    } else {
        ""
    };
    format!(
        "<h2>Create a key</h2><form class=\"stack card\" method=\"post\" action=\"/ui/keys\" id=\"create-key\">{}\
         <label>Name <input type=\"text\" name=\"name\" value=\"{}\" required></label>\
         <label>Tenant (default attribution) <input type=\"text\" name=\"tenant\" value=\"{}\"></label>\
         <label>Team <input type=\"text\" name=\"team\" value=\"{}\"></label>\
         <label>Models (comma-separated; empty = all) <input type=\"text\" name=\"models\" value=\"{}\"></label>\
         <label class=\"check\"><input type=\"checkbox\" name=\"allow_tenant_header\" value=\"true\"{checked}> May set the tenant per request (x-tollgate-tenant)</label>\
         <label>Allowed tenants for the header (comma-separated; empty = any) <input type=\"text\" name=\"allowed_tenants\" value=\"{}\"></label>\
         <div><button type=\"submit\" id=\"create-key-submit\">Create key</button></div></form>",
        csrf_field(csrf),
        v("name"),
        v("tenant"),
        v("team"),
        v("models"),
        v("allowed_tenants"),
    )
}

fn row(k: &Value, session: &Session, csrf: &str) -> Vec<String> {
    let id = k["id"].as_str().unwrap_or("");
    let status = if !k["revoked_at"].is_null() {
        "<span class=\"pill bad\">revoked</span>".to_string()
    } else if !k["rotated_to"].is_null() {
        format!(
            "<span class=\"pill warn\">rotated</span> → {}",
            text(&k["rotated_to"])
        )
    } else {
        "<span class=\"pill ok\">active</span>".to_string()
    };
    let action = if session.is_admin() && k["revoked_at"].is_null() {
        format!(
            "<form class=\"inline\" method=\"post\" action=\"/ui/keys/{}/revoke\">{}<button type=\"submit\" class=\"danger\" data-revoke=\"{}\">Revoke</button></form>",
            html::url_encode(id),
            csrf_field(csrf),
            esc(id)
        )
    } else {
        String::new()
    };
    let models = match k["models"].as_array() {
        Some(m) if !m.is_empty() => m.iter().map(text).collect::<Vec<_>>().join(", "),
        _ => "all".to_string(),
    };
    vec![
        text(&k["name"]),
        format!("<span class=\"mono\">{}</span>", esc(id)),
        format!("<span class=\"mono\">{}…</span>", text(&k["key_prefix"])),
        text(&k["tenant"]),
        text(&k["team"]),
        models,
        time(&k["created_at"]),
        time(&k["expires_at"]),
        status,
        action,
    ]
}

/// Comma-separated values, trimmed, empties dropped.
fn list_of(s: Option<&str>) -> Vec<String> {
    s.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect()
}

/// `POST /ui/keys` (the session layer checked the CSRF token and the admin role).
pub(crate) async fn create(
    State(gw): State<Gateway>,
    Extension(session): Extension<Session>,
    Extension(form): Extension<Form>,
) -> Response {
    let new = NewKey {
        name: form.get("name").unwrap_or("").to_string(),
        tenant: form.get("tenant").map(str::to_string),
        team: form.get("team").map(str::to_string),
        models: list_of(form.get("models")),
        allow_tenant_header: form.get("allow_tenant_header").is_some(),
        allowed_tenants: list_of(form.get("allowed_tenants")),
        ..NewKey::default()
    };
    let q = HashMap::new();
    match create_key(&gw, &session.caller(), new).await {
        Ok(created) => {
            let top = message(
                "secret",
                &format!(
                    "Key <strong>{}</strong> created (id <span class=\"mono\">{}</span>). Copy it now: it is shown once and never again.<code class=\"secret-value\" id=\"new-key\">{}</code>",
                    text(&created["name"]),
                    text(&created["id"]),
                    text(&created["key"])
                ),
            );
            render(&gw, &session, &q, StatusCode::OK, &top, &Form::default()).await
        }
        Err(e) => {
            let (status, msg) = range::shown(&e);
            let top = message("error", &esc(&msg));
            render(&gw, &session, &q, status, &top, &form).await
        }
    }
}

/// `POST /ui/keys/{id}/revoke`.
pub(crate) async fn revoke(
    State(gw): State<Gateway>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    match revoke_key(&gw, &session.caller(), &id).await {
        Ok(()) => html::redirect(&format!("/ui/keys{}", query(&[("revoked", &id)]))),
        Err(e) => {
            let (status, msg) = range::shown(&e);
            let top = message("error", &esc(&msg));
            render(
                &gw,
                &session,
                &HashMap::new(),
                status,
                &top,
                &Form::default(),
            )
            .await
        }
    }
}
