//! The route table and the outer layers.
//!
//! Layers, outermost first: catch-panic (a panic becomes an OpenAI-shaped 500, never a dropped
//! connection). Body limits are enforced by the handlers' body reader so the 413 is
//! OpenAI-shaped too. Unknown routes and wrong methods answer in the OpenAI error shape.

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tollgate_types::{ApiError, ErrorCode};

use crate::error::ErrorResponse;
use crate::{Gateway, admin, chat, embeddings, health, messages, models};

pub fn app(gw: Gateway) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(chat::chat))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/messages", post(messages::messages))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::get))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route(
            "/admin/v1/keys",
            post(admin::create_key).get(admin::list_keys),
        )
        .route(
            "/admin/v1/keys/{id}",
            get(admin::get_key).delete(admin::revoke_key),
        )
        .route(
            "/admin/v1/budgets",
            post(admin::create_budget).get(admin::list_budgets),
        )
        .route(
            "/admin/v1/budgets/{name}",
            get(admin::get_budget)
                .patch(admin::patch_budget)
                .delete(admin::delete_budget),
        )
        .route(
            "/admin/v1/policies",
            post(admin::create_policy).get(admin::list_policies),
        )
        .route("/admin/v1/policies/decisions", get(admin::policy_decisions))
        .route(
            "/admin/v1/policies/{name}",
            get(admin::get_policy)
                .patch(admin::patch_policy)
                .delete(admin::delete_policy),
        )
        .route("/admin/v1/deployments", get(admin::deployments))
        .route("/admin/v1/spend", get(admin::spend))
        .route("/admin/v1/requests", get(admin::requests))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    api.with_state(gw)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
}

async fn not_found() -> Response {
    ErrorResponse::new(ApiError::new(ErrorCode::NotFound, "no such route")).into_response()
}

async fn method_not_allowed() -> Response {
    ErrorResponse::new(ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not support this HTTP method",
    ))
    .into_response()
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    let mut r = ErrorResponse::new(ApiError::new(ErrorCode::InternalError, "internal error"))
        .into_response();
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r
}
