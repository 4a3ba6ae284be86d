//! `GET /v1/models` and `GET /v1/models/{id}`: the logical models this key may use.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tollgate_types::{ApiError, ErrorCode, Outcome};

use crate::Gateway;
use crate::metrics::Endpoint;
use crate::pipeline::{self, Format};
use crate::record::PendingRow;

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "tollgate"})
}

pub async fn list(State(gw): State<Gateway>, headers: HeaderMap) -> Response {
    answer(gw, headers, None)
}

pub async fn get(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    answer(gw, headers, Some(id))
}

fn answer(gw: Gateway, headers: HeaderMap, one: Option<String>) -> Response {
    let mut rec = PendingRow::open(&gw, Endpoint::Models);
    let request_id = rec.request_id().to_string();
    let key = match pipeline::authenticate(&gw, &headers) {
        Ok(k) => k,
        Err(e) => return pipeline::reject(rec, e, request_id, Outcome::Rejected, Format::OpenAi),
    };
    pipeline::note_key(rec.row(), &key);
    let allowed = |m: &str| key.models.is_empty() || key.models.iter().any(|k| k == m);
    let body = match one {
        None => json!({
            "object": "list",
            "data": gw.0.router.names().filter(|m| allowed(m)).map(model_object).collect::<Vec<_>>(),
        }),
        Some(id) => {
            rec.row().requested_model = Some(id.clone());
            if gw.0.router.get(&id).is_none() {
                let e = ApiError::new(
                    ErrorCode::ModelNotFound,
                    format!("the model '{id}' does not exist or is not configured"),
                )
                .with_param("model");
                return pipeline::reject(rec, e, request_id, Outcome::Rejected, Format::OpenAi);
            }
            if !allowed(&id) {
                let e = ApiError::new(
                    ErrorCode::ModelNotAllowed,
                    format!("this key may not use the model '{id}'"),
                )
                .with_param("model");
                return pipeline::reject(rec, e, request_id, Outcome::Rejected, Format::OpenAi);
            }
            model_object(&id)
        }
    };
    rec.row().status = 200;
    rec.finish();
    let mut resp = Json(body).into_response();
    if let Ok(v) = request_id.parse() {
        resp.headers_mut()
            .insert(crate::error::REQUEST_ID_HEADER, v);
    }
    resp
}
