//! The dashboard's one stylesheet, embedded in the binary (no files at run time, no build
//! step).

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const CSS: &str = include_str!("assets/tollgate.css");

/// `GET /ui/assets/tollgate.css` (no session needed: the sign-in page uses it too).
pub(crate) async fn css() -> Response {
    let mut resp = CSS.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}
