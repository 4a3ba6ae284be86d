//! `POST /v1/embeddings`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tollgate_ingress::openai::EmbeddingsRequest;
use tollgate_metering::tokens::{self, Encoding};
use tollgate_providers::EmbeddingsCall;
use tollgate_types::{ApiError, ErrorCode, Outcome, Usage, UsageSource};

use crate::Gateway;
use crate::chat::reject;
use crate::error::ErrorResponse;
use crate::metrics::Endpoint;
use crate::pipeline::{self, Routed};
use crate::record::PendingRow;

pub async fn embeddings(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    let mut rec = PendingRow::open(&gw, Endpoint::Embeddings);
    let request_id = rec.request_id().to_string();
    let (req, routed) = match admit(&gw, &mut rec, &headers, body).await {
        Ok(v) => v,
        Err(e) => return reject(rec, e, request_id, Outcome::Rejected),
    };
    if !routed.deployment.provider.capabilities().embeddings {
        let e = ApiError::new(
            ErrorCode::EndpointNotSupported,
            format!(
                "the model '{}' is served by provider '{}', which has no embeddings endpoint",
                req.model, routed.deployment.provider_name
            ),
        )
        .with_param("model");
        return reject(rec, e, request_id, Outcome::Rejected);
    }
    let input = req.body.get("input").cloned().unwrap_or(Value::Null);
    let call = EmbeddingsCall {
        body: Arc::new(pipeline::upstream_body(req.body, &routed)),
    };
    let secrets = gw.0.secrets.clone();
    // Detached like non-streaming chat: the row and its cost survive a departing client.
    let task = gw.tasks().spawn(async move {
        let provider = routed.deployment.provider.clone();
        match provider.embeddings(call).await {
            Ok(c) => {
                let (usage, source) = match c.usage {
                    Some(u) => (u, UsageSource::Provider),
                    None => (estimate(&routed, &input), UsageSource::Estimated),
                };
                let started = rec.started();
                let row = rec.row();
                pipeline::settle_usage(row, usage, source, &routed);
                row.status = 200;
                row.outcome = Outcome::Ok;
                row.ttft_us = Some(started.elapsed().as_micros() as u64);
                let resp = pipeline::json_response(c.body, &request_id, &routed, rec.row());
                rec.finish();
                resp
            }
            Err(e) => {
                let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
                reject(rec, e.to_api_error(&secrets), request_id, Outcome::Failed)
            }
        }
    });
    match task.await {
        Ok(resp) => resp,
        Err(join) => {
            tracing::error!(error = %join, "embeddings task failed");
            ErrorResponse::new(ApiError::new(ErrorCode::InternalError, "internal error"))
                .into_response()
        }
    }
}

async fn admit(
    gw: &Gateway,
    rec: &mut PendingRow,
    headers: &HeaderMap,
    body: Body,
) -> Result<(EmbeddingsRequest, Routed), ApiError> {
    let key = pipeline::authenticate(gw, headers)?;
    pipeline::note_key(rec.row(), &key);
    let bytes = pipeline::read_body(body, gw.settings().max_body_bytes).await?;
    let req = EmbeddingsRequest::parse(tollgate_ingress::parse_object(&bytes)?)?;
    rec.row().requested_model = Some(req.model.clone());
    rec.row().attribution = tollgate_attribution::resolve(&key, headers, Some(&req.body))?;
    let routed = pipeline::route(gw, &key, &req.model)?;
    pipeline::note_route(rec.row(), &routed);
    Ok((req, routed))
}

fn estimate(routed: &Routed, input: &Value) -> Usage {
    Usage {
        input_tokens: tokens::count_embedding_input(
            Encoding::for_model(&routed.deployment.model),
            input,
        ),
        ..Usage::default()
    }
}
