//! `GET /v1/models` and `GET /v1/models/{id}`: the logical models this key may use, answered
//! by the gateway itself (authenticated and recorded like every data-plane request, at no
//! cost).

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

use crate::exchange;
use crate::gateway::Gateway;
use crate::metrics::Route;
use crate::stages::auth;

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "tollgate"})
}

pub(crate) async fn list(State(gw): State<Gateway>, headers: HeaderMap) -> Response {
    exchange::local(&gw, Route::Models, &headers, |key, _row| {
        let data: Vec<Value> =
            gw.0.router
                .names()
                .filter(|m| auth::allows_model(key, m))
                .map(model_object)
                .collect();
        Ok(json!({"object": "list", "data": data}))
    })
}

pub(crate) async fn get(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    exchange::local(&gw, Route::Models, &headers, |key, row| {
        tollgate_ingress::check_model_len(&id)?;
        row.requested_model = Some(id.clone());
        if gw.0.router.get(&id).is_none() {
            return Err(auth::model_not_found(&id));
        }
        if !auth::allows_model(key, &id) {
            return Err(auth::model_not_allowed(&id));
        }
        Ok(model_object(&id))
    })
}
