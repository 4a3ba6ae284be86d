//! `/ui` without its slash, and dashboard paths that name no page (an HTML `404`, not the
//! API's JSON one).

use axum::Extension;
use axum::http::StatusCode;
use axum::response::Response;

use crate::ui::html;
use crate::ui::session::Session;

/// `GET /ui` → `/ui/`.
pub(crate) async fn root() -> Response {
    html::redirect("/ui/")
}

/// Any other `/ui/…` path.
pub(crate) async fn not_found(Extension(session): Extension<Session>) -> Response {
    html::error_page(
        StatusCode::NOT_FOUND,
        Some(&session.chrome()),
        "Not found",
        "the dashboard has no such page",
    )
}
