//! `POST /v1/embeddings`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::Value;
use tollgate_ingress::openai::EmbeddingsRequest;
use tollgate_metering::tokens::{self, Encoding};
use tollgate_providers::EmbeddingsCall;
use tollgate_types::{ApiError, ErrorCode, Outcome, Usage, UsageSource};

use crate::Gateway;
use crate::budget::{self, Shape};
use crate::metrics::Endpoint;
use crate::pipeline::{self, Format, Routed, reject};
use crate::ratelimit;
use crate::record::PendingRow;

pub async fn embeddings(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    let mut rec = PendingRow::open(&gw, Endpoint::Embeddings);
    let request_id = rec.request_id().to_string();
    let (req, routed) = match admit(&gw, &mut rec, &headers, body).await {
        Ok(v) => v,
        Err(e) => return reject(rec, e, request_id, Outcome::Rejected, Format::OpenAi),
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
        return reject(rec, e, request_id, Outcome::Rejected, Format::OpenAi);
    }
    let input = req.body.get("input").cloned().unwrap_or(Value::Null);
    let mut upstream = pipeline::upstream_body(req.body, &routed);
    let limits = match ratelimit::admit(&gw, &mut rec, &routed, &upstream, Shape::Embeddings) {
        Ok(l) => l,
        Err(l) => return l.reject(rec, request_id, Format::OpenAi),
    };
    match budget::admit(&gw, rec.row(), &routed, &mut upstream, Shape::Embeddings) {
        Ok(a) => {
            if let Some(r) = a.reservation {
                rec.hold(r);
            }
        }
        Err(e) => return reject(rec, e, request_id, Outcome::Rejected, Format::OpenAi),
    }
    let call = EmbeddingsCall {
        body: Arc::new(upstream),
    };
    let g = gw.clone();
    let rid = request_id.clone();
    // Detached like non-streaming chat: the row and its cost survive a departing client.
    let resp = pipeline::detached(&gw, request_id, Format::OpenAi, move |gone| async move {
        let provider = routed.deployment.provider.clone();
        match provider.embeddings(call).await {
            Ok(c) => {
                let (usage, source) = match c.usage {
                    Some(u) => (u, UsageSource::Provider),
                    None => (estimate(&routed, &input), UsageSource::Estimated),
                };
                pipeline::settle_complete(&mut rec, usage, source, &routed, &gone);
                let resp = pipeline::json_response(c.body, &rid, &routed, rec.row());
                rec.finish();
                resp
            }
            Err(e) => reject(
                rec,
                pipeline::upstream_error(&g, &e),
                rid,
                Outcome::Failed,
                Format::OpenAi,
            ),
        }
    })
    .await;
    limits.apply(resp)
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
    let routed = pipeline::route(gw, &key, rec.row(), &req.model)?;
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
