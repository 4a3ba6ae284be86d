//! `POST /v1/embeddings`.

use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::Value;
use tollgate_ingress::openai::EmbeddingsRequest;
use tollgate_metering::tokens::{self, Encoding};
use tollgate_providers::EmbeddingsCall;
use tollgate_types::{ApiError, Outcome, Usage, UsageSource};

use crate::Gateway;
use crate::budget::Shape;
use crate::dispatch::{self, Attempts, Dispatch};
use crate::metrics::Endpoint;
use crate::pipeline::{self, Format, Routed, reject};
use crate::ratelimit;
use crate::record::PendingRow;

pub async fn embeddings(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    let mut rec = PendingRow::open(&gw, Endpoint::Embeddings);
    let request_id = rec.request_id().to_string();
    let (req, d) = match admit(&gw, &mut rec, &headers, body).await {
        Ok(v) => v,
        Err(e) => return reject(rec, e, request_id, Outcome::Rejected, Format::OpenAi),
    };
    let first = d.preview(&gw);
    let limits =
        match ratelimit::admit_first(&gw, &mut rec, first.as_ref(), &req.body, Shape::Embeddings) {
            Ok(l) => l,
            Err(l) => return l.reject(rec, request_id, Format::OpenAi),
        };
    let input = req.body.get("input").cloned().unwrap_or(Value::Null);
    let mut attempts = Attempts::new(d, req.body);
    let g = gw.clone();
    let rid = request_id.clone();
    // Detached like non-streaming chat: the row and its cost survive a departing client.
    let resp = pipeline::detached(&gw, request_id, Format::OpenAi, move |gone| async move {
        loop {
            let (routed, attempt, p) = match attempts.next(&g, &mut rec, Shape::Embeddings).await {
                Ok(v) => v,
                Err(e) => return dispatch::give_up(rec, e, rid, Format::OpenAi),
            };
            let body = p.body;
            let t0 = Instant::now();
            match routed
                .deployment
                .provider
                .embeddings(EmbeddingsCall { body })
                .await
            {
                Ok(c) => {
                    let took = t0.elapsed();
                    attempt.success(Some(took), took, Instant::now());
                    attempts.succeeded(&routed);
                    let (usage, source) = match c.usage {
                        Some(u) => (u, UsageSource::Provider),
                        None => (estimate(&routed, &input), UsageSource::Estimated),
                    };
                    pipeline::settle_complete(&mut rec, usage, source, &routed, &gone);
                    let resp = pipeline::json_response(c.body, &rid, &routed, rec.row());
                    rec.finish();
                    return resp;
                }
                Err(e) => {
                    if let Err(api) = attempts.failed(&g, &routed, attempt, &e) {
                        return reject(rec, api, rid, Outcome::Failed, Format::OpenAi);
                    }
                }
            }
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
) -> Result<(EmbeddingsRequest, Dispatch), ApiError> {
    let key = pipeline::authenticate(gw, headers)?;
    pipeline::note_key(rec.row(), &key);
    let bytes = pipeline::read_body(body, gw.settings().max_body_bytes).await?;
    let req = EmbeddingsRequest::parse(tollgate_ingress::parse_object(&bytes)?)?;
    rec.row().requested_model = Some(req.model.clone());
    rec.row().attribution = tollgate_attribution::resolve(&key, headers, Some(&req.body))?;
    let dispatch = pipeline::route(
        gw,
        &key,
        rec.row(),
        &req.model,
        pipeline::RouteHints {
            headers,
            body: None,
            stream: false,
        },
    )?;
    Ok((req, dispatch))
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
