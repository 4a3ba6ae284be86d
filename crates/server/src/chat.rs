//! `POST /v1/chat/completions`, streaming and not.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Map, Value};
use tollgate_ingress::openai::ChatRequest;
use tollgate_metering::tokens::{self, Encoding};
use tollgate_metering::{MeterOptions, MeteredStream, Settlement};
use tollgate_providers::{ChatCall, ChatResponse};
use tollgate_types::canonical::ResponsePeek;
use tollgate_types::{ApiError, ErrorCode, Outcome, Usage, UsageSource};

use crate::Gateway;
use crate::budget::{self, Shape};
use crate::cache;
use crate::metrics::Endpoint;
use crate::pipeline::{self, Format, Routed, reject};
use crate::record::PendingRow;
use crate::relay;

pub async fn chat(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    let mut rec = PendingRow::open(&gw, Endpoint::Chat);
    let request_id = rec.request_id().to_string();
    let (req, routed) = match admit(&gw, &mut rec, &headers, body).await {
        Ok(v) => v,
        Err(e) => return reject(rec, e, request_id, Outcome::Rejected, Format::OpenAi),
    };
    let row = rec.row();
    let mut fill = match cache::lookup(&gw, row, &headers, "chat", &req.body, req.stream, &routed) {
        cache::Lookup::Hit(e) => {
            let (s, u) = (req.stream, req.include_usage);
            return cache::serve_hit(&gw, rec, &e, &routed, s, u, &request_id);
        }
        cache::Lookup::Miss(fill) => Some(fill),
        cache::Lookup::Off | cache::Lookup::Bypass => None,
    };
    let mut upstream = pipeline::upstream_body(req.body, &routed);
    let admitted = budget::admit(&gw, rec.row(), &routed, &mut upstream, Shape::Chat);
    let output_cap = match admitted {
        Ok(a) => {
            if a.fitted {
                // Shortened to fit a budget: not the answer this key stands for.
                fill = None;
            }
            a.reservation.and_then(|r| {
                rec.hold(r);
                budget::stream_output_cap(&upstream)
            })
        }
        Err(e) => return reject(rec, e, request_id, Outcome::Rejected, Format::OpenAi),
    };
    let request = Arc::new(upstream);
    let call = ChatCall {
        body: request.clone(),
        stream: req.stream,
    };
    if req.stream {
        stream(
            gw,
            rec,
            call,
            routed,
            cache::stream_renderer(req.include_usage, fill),
            output_cap,
            request_id,
        )
        .await
    } else {
        complete(gw, rec, call, routed, request_id, fill).await
    }
}

/// Every check before the provider call. Fills the row as facts become known, so a rejected
/// request's row says how far it got.
async fn admit(
    gw: &Gateway,
    rec: &mut PendingRow,
    headers: &HeaderMap,
    body: Body,
) -> Result<(ChatRequest, Routed), ApiError> {
    let key = pipeline::authenticate(gw, headers)?;
    pipeline::note_key(rec.row(), &key);
    let bytes = pipeline::read_body(body, gw.settings().max_body_bytes).await?;
    let req = ChatRequest::parse(tollgate_ingress::parse_object(&bytes)?)?;
    rec.row().requested_model = Some(req.model.clone());
    rec.row().stream = req.stream;
    rec.row().attribution = tollgate_attribution::resolve(&key, headers, Some(&req.body))?;
    let routed = pipeline::route(gw, &key, rec.row(), &req.model)?;
    pipeline::note_route(rec.row(), &routed);
    Ok((req, routed))
}

/// Non-streaming: the exchange runs detached (see [`pipeline::detached`]).
async fn complete(
    gw: Gateway,
    mut rec: PendingRow,
    call: ChatCall,
    routed: Routed,
    request_id: String,
    fill: Option<cache::Fill>,
) -> Response {
    let g = gw.clone();
    let rid = request_id.clone();
    pipeline::detached(&gw, request_id, Format::OpenAi, move |gone| async move {
        let provider = routed.deployment.provider.clone();
        let request = call.body.clone();
        match provider.chat(call).await {
            Ok(ChatResponse::Complete(c)) => {
                let (usage, source) = match c.usage {
                    Some(u) => (u, UsageSource::Provider),
                    None => (
                        estimate_complete(&routed, &request, &c.body),
                        UsageSource::Estimated,
                    ),
                };
                pipeline::settle_complete(&mut rec, usage, source, &routed, &gone);
                if let Some(f) = fill {
                    f.complete(&c.body, rec.row());
                }
                let mut resp = pipeline::json_response(c.body, &rid, &routed, rec.row());
                cache::tag(resp.headers_mut(), rec.row());
                rec.finish();
                resp
            }
            Ok(ChatResponse::Stream { .. }) => {
                let e = ApiError::new(
                    ErrorCode::UpstreamError,
                    format!(
                        "provider '{}' answered a non-streaming request with a stream",
                        routed.deployment.provider_name
                    ),
                );
                reject(rec, e, rid, Outcome::Failed, Format::OpenAi)
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
    .await
}

/// Tokens of a complete answer that came without usage: prompt and output counted locally.
fn estimate_complete(routed: &Routed, request: &Map<String, Value>, body: &[u8]) -> Usage {
    let enc = Encoding::for_model(&routed.deployment.model);
    let output = serde_json::from_slice::<ResponsePeek>(body)
        .map(|p| enc.count(&p.output_text()))
        .unwrap_or(0);
    Usage {
        input_tokens: tokens::count_chat_prompt_map(enc, request),
        output_tokens: output,
        ..Usage::default()
    }
}

/// Streaming: headers go out once the provider has answered; chunks are relayed one by one
/// through the meter, which records the row when the stream ends, fails or is dropped.
async fn stream(
    gw: Gateway,
    mut rec: PendingRow,
    call: ChatCall,
    routed: Routed,
    (renderer, fill): (cache::CachingRenderer, Option<cache::StreamFill>),
    output_cap: Option<u64>,
    request_id: String,
) -> Response {
    let request = call.body.clone();
    let provider = routed.deployment.provider.clone();
    let (chunks, _upstream_id) = match provider.chat(call).await {
        Ok(ChatResponse::Stream {
            chunks,
            upstream_request_id,
        }) => (chunks, upstream_request_id),
        Ok(ChatResponse::Complete(_)) => {
            let e = ApiError::new(
                ErrorCode::UpstreamError,
                format!(
                    "provider '{}' answered a streaming request without a stream",
                    routed.deployment.provider_name
                ),
            );
            return reject(rec, e, request_id, Outcome::Failed, Format::OpenAi);
        }
        Err(e) => {
            let api = pipeline::upstream_error(&gw, &e);
            return reject(rec, api, request_id, Outcome::Failed, Format::OpenAi);
        }
    };
    rec.row().status = 200;
    let started = rec.started();
    let mut headers = HeaderMap::new();
    pipeline::routed_headers(&mut headers, &request_id, &routed, rec.row());
    cache::tag(&mut headers, rec.row());
    let opts = MeterOptions {
        encoding: Encoding::for_model(&routed.deployment.model),
        request,
        secrets: gw.0.secrets.clone(),
        output_cap,
    };
    let cut = gw.0.cut.clone();
    let metered = MeteredStream::new(chunks, opts, renderer, move |s: Settlement| {
        if let Some(f) = fill {
            f.settled(&s, &routed);
        }
        pipeline::settle_stream(rec, &s, &routed, started, &cut);
    });
    relay::sse_response(&gw, metered, headers, Format::OpenAi)
}
