//! The route table: every HTTP route Tollgate serves, in one place (`docs/openapi.yaml` lists
//! the same; `tests/sdk/test_openapi.py` keeps them in step).
//!
//! Layers, outermost first: catch-panic (a panic becomes an OpenAI-shaped 500, never a dropped
//! connection); on the admin routes, the admin guard (`admin::guard`: authentication and the
//! role check); on the dashboard (`/ui`), its security headers and session table, and on its
//! pages the session layer (`ui::session::require`: sign-in, CSRF token, role). Body limits
//! are enforced by the body reader so the 413 is OpenAI-shaped too. Unknown routes and wrong
//! methods answer in the OpenAI error shape (an HTML page under `/ui/`).

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tollgate_types::{ApiError, ErrorCode};

use crate::admin::budgets::Budgets;
use crate::admin::definitions::{self as defs};
use crate::admin::policies::{self, Policies};
use crate::admin::{self, audit, deployments, finance, keys, reports, stats, tokens};
use crate::endpoints::{chat, embeddings, messages, models};
use crate::gateway::Gateway;
use crate::http::error::ErrorResponse;
use crate::ops;
use crate::ui;

pub(crate) fn app(gw: Gateway) -> Router {
    let data_plane = Router::new()
        .route("/v1/chat/completions", post(chat::handle))
        .route("/v1/embeddings", post(embeddings::handle))
        .route("/v1/messages", post(messages::handle))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::get))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics));
    let admin = Router::new()
        .route("/admin/v1/keys", post(keys::create).get(keys::list))
        .route("/admin/v1/keys/{id}", get(keys::get).delete(keys::delete))
        .route("/admin/v1/keys/{id}/rotate", post(keys::rotate))
        .route("/admin/v1/tokens", post(tokens::create).get(tokens::list))
        .route(
            "/admin/v1/tokens/{id}",
            get(tokens::get).delete(tokens::delete),
        )
        .route("/admin/v1/audit", get(audit::list))
        .route(
            "/admin/v1/budgets",
            post(defs::create::<Budgets>).get(defs::list::<Budgets>),
        )
        .route(
            "/admin/v1/budgets/{name}",
            get(defs::get::<Budgets>)
                .patch(defs::patch::<Budgets>)
                .delete(defs::delete::<Budgets>),
        )
        .route(
            "/admin/v1/policies",
            post(defs::create::<Policies>).get(defs::list::<Policies>),
        )
        .route("/admin/v1/policies/decisions", get(policies::decisions))
        .route(
            "/admin/v1/policies/{name}",
            get(defs::get::<Policies>)
                .patch(defs::patch::<Policies>)
                .delete(defs::delete::<Policies>),
        )
        .route("/admin/v1/deployments", get(deployments::list))
        .route("/admin/v1/spend", get(reports::spend))
        .route("/admin/v1/requests", get(reports::requests))
        .route("/admin/v1/requests/{id}", get(reports::request))
        .route("/admin/v1/stats", get(stats::stats))
        .route("/admin/v1/exports/focus", get(finance::focus))
        .route("/admin/v1/margins", get(finance::margins))
        .route("/admin/v1/showback", get(finance::showback))
        .route("/admin/v1/allocations", get(finance::allocations))
        .route("/admin/v1/anomalies", get(finance::anomalies))
        .route_layer(axum::middleware::from_fn_with_state(
            gw.clone(),
            admin::guard,
        ));
    // The dashboard: the sign-in form and the stylesheet need no session; every page does.
    let pages = Router::new()
        .route("/ui/", get(ui::overview::page))
        .route("/ui/budgets", get(ui::budgets::page))
        .route("/ui/requests", get(ui::requests::list))
        .route("/ui/requests/{id}", get(ui::requests::one))
        .route("/ui/tenants", get(ui::tenants::page))
        .route("/ui/deployments", get(ui::deployments::page))
        .route("/ui/keys", get(ui::keys::page).post(ui::keys::create))
        .route("/ui/keys/{id}/revoke", post(ui::keys::revoke))
        .route("/ui/policies", get(ui::policies::page))
        .route("/ui/finance", get(ui::finance::page))
        .route("/ui/finance/focus", get(ui::finance::export))
        .route("/ui/logout", post(ui::auth::logout))
        .route("/ui/{*rest}", get(ui::fallback::not_found))
        .route_layer(axum::middleware::from_fn_with_state(
            gw.clone(),
            ui::session::require,
        ));
    let dashboard = Router::new()
        .route("/ui", get(ui::fallback::root))
        .route("/ui/login", get(ui::auth::form).post(ui::auth::login))
        .route("/ui/assets/tollgate.css", get(ui::assets::css))
        .merge(pages)
        .layer(axum::Extension(ui::session::Sessions::new()))
        .layer(axum::middleware::from_fn(ui::html::finish));
    data_plane
        .merge(admin)
        .merge(dashboard)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(gw)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
}

async fn not_found() -> Response {
    ErrorResponse(ApiError::new(ErrorCode::NotFound, "no such route")).into_response()
}

/// 405 for every router (axum adds the `Allow` header). The dashboard's paths get its page,
/// not the API's JSON: a browser shows it.
async fn method_not_allowed(uri: axum::http::Uri) -> Response {
    if uri.path() == "/ui" || uri.path().starts_with("/ui/") {
        return ui::html::method_not_allowed();
    }
    ErrorResponse(ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not support this HTTP method",
    ))
    .into_response()
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ErrorResponse(ApiError::internal("a request handler panicked")).into_response()
}
