//! `POST /v1/messages`: the Anthropic Messages API as an ingress.
//!
//! Served by any deployment. An Anthropic deployment gets the client's body untouched (no
//! lossy round trip through the canonical format); any other is reached by translating to the
//! canonical request and back (`tollgate_ingress::anthropic`). Either way the request is
//! authenticated, attributed, priced, metered and recorded exactly like
//! `/v1/chat/completions`: no route bypasses the meter. Errors use the Anthropic shape.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value};
use tollgate_ingress::anthropic::{self, MessagesRequest, StreamTranslator};
use tollgate_metering::anthropic::{MeteredEvents, put_event};
use tollgate_metering::tokens::{self, Encoding};
use tollgate_metering::{MeterOptions, MeteredStream, Renderer, Settlement};
use tollgate_providers::{ChatCall, ChatResponse, MessagesCall, MessagesResponse};
use tollgate_types::canonical::ChunkPeek;
use tollgate_types::{ApiError, ErrorCode, Outcome, ProviderKind, Usage, UsageSource};

use crate::Gateway;
use crate::budget::{self, Shape};
use crate::metrics::Endpoint;
use crate::pipeline::{self, Format, Routed, reject};
use crate::ratelimit;
use crate::record::PendingRow;
use crate::relay;

/// Client headers of the Messages API forwarded to a native upstream.
const FORWARDED_HEADERS: [&str; 2] = ["anthropic-version", "anthropic-beta"];

pub async fn messages(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    let mut rec = PendingRow::open(&gw, Endpoint::Messages);
    let request_id = rec.request_id().to_string();
    let (req, canonical, routed) = match admit(&gw, &mut rec, &headers, body).await {
        Ok(v) => v,
        Err(e) => return reject(rec, e, request_id, Outcome::Rejected, Format::Anthropic),
    };
    let mut canonical = pipeline::upstream_body(canonical, &routed);
    let limits = match ratelimit::admit(&gw, &mut rec, &routed, &canonical, Shape::Chat) {
        Ok(l) => l,
        Err(l) => return l.reject(rec, request_id, Format::Anthropic),
    };
    let admitted = budget::admit(&gw, rec.row(), &routed, &mut canonical, Shape::Chat);
    let (clamped_to, output_cap) = match admitted {
        Ok(a) => {
            let cap = a.reservation.and_then(|r| {
                rec.hold(r);
                budget::stream_output_cap(&canonical)
            });
            (a.clamped_to, cap)
        }
        Err(e) => return reject(rec, e, request_id, Outcome::Rejected, Format::Anthropic),
    };
    let canonical = Arc::new(canonical);
    if routed.deployment.provider.kind() == ProviderKind::Anthropic {
        let mut native_body = pipeline::upstream_body(req.body.clone(), &routed);
        if let Some(cap) = clamped_to {
            // Messages requests always carry max_tokens; admission may have lowered it.
            native_body.insert("max_tokens".into(), cap.into());
        }
        let call = MessagesCall {
            body: Arc::new(native_body),
            stream: req.stream,
            headers: FORWARDED_HEADERS
                .iter()
                .filter_map(|h| {
                    let v = headers.get(*h)?.to_str().ok()?;
                    Some(((*h).to_string(), v.to_string()))
                })
                .collect(),
        };
        limits.apply(native(gw, rec, req, call, canonical, routed, request_id).await)
    } else {
        limits.apply(translated(gw, rec, req, canonical, routed, output_cap, request_id).await)
    }
}

async fn admit(
    gw: &Gateway,
    rec: &mut PendingRow,
    headers: &HeaderMap,
    body: Body,
) -> Result<(MessagesRequest, Map<String, Value>, Routed), ApiError> {
    let key = pipeline::authenticate(gw, headers)?;
    pipeline::note_key(rec.row(), &key);
    let bytes = pipeline::read_body(body, gw.settings().max_body_bytes).await?;
    let req = MessagesRequest::parse(tollgate_ingress::parse_object(&bytes)?)?;
    rec.row().requested_model = Some(req.model.clone());
    rec.row().stream = req.stream;
    let canonical = anthropic::to_canonical(&req)?;
    rec.row().attribution = tollgate_attribution::resolve(&key, headers, Some(&canonical))?;
    let routed = pipeline::route(gw, &key, rec.row(), &req.model)?;
    pipeline::note_route(rec.row(), &routed);
    Ok((req, canonical, routed))
}

fn meter_options(
    gw: &Gateway,
    routed: &Routed,
    canonical: Arc<Map<String, Value>>,
    output_cap: Option<u64>,
) -> MeterOptions {
    MeterOptions {
        encoding: Encoding::for_model(&routed.deployment.model),
        request: canonical,
        secrets: gw.0.secrets.clone(),
        output_cap,
    }
}

fn estimate(routed: &Routed, canonical: &Map<String, Value>, output: &str) -> Usage {
    let enc = Encoding::for_model(&routed.deployment.model);
    Usage {
        input_tokens: tokens::count_chat_prompt_map(enc, canonical),
        output_tokens: enc.count(output),
        ..Usage::default()
    }
}

/// Native passthrough to an Anthropic deployment.
async fn native(
    gw: Gateway,
    mut rec: PendingRow,
    req: MessagesRequest,
    call: MessagesCall,
    canonical: Arc<Map<String, Value>>,
    routed: Routed,
    request_id: String,
) -> Response {
    let provider = routed.deployment.provider.clone();
    if !req.stream {
        let g = gw.clone();
        let rid = request_id.clone();
        return pipeline::detached(&gw, request_id, Format::Anthropic, move |gone| async move {
            let result = match provider.messages(call) {
                Some(fut) => fut.await,
                None => {
                    return reject(
                        rec,
                        no_native(&routed),
                        rid,
                        Outcome::Failed,
                        Format::Anthropic,
                    );
                }
            };
            match result {
                Ok(MessagesResponse::Complete(c)) => {
                    let (usage, source) = match c.usage {
                        Some(u) => (u, UsageSource::Provider),
                        None => (
                            estimate(&routed, &canonical, &text_of_message(&c.body)),
                            UsageSource::Estimated,
                        ),
                    };
                    pipeline::settle_complete(&mut rec, usage, source, &routed, &gone);
                    let resp = pipeline::json_response(c.body, &rid, &routed, rec.row());
                    rec.finish();
                    resp
                }
                Ok(MessagesResponse::Stream { .. }) => {
                    let e = ApiError::new(
                        ErrorCode::UpstreamError,
                        "the provider streamed a non-streaming request",
                    );
                    reject(rec, e, rid, Outcome::Failed, Format::Anthropic)
                }
                Err(e) => reject(
                    rec,
                    pipeline::upstream_error(&g, &e),
                    rid,
                    Outcome::Failed,
                    Format::Anthropic,
                ),
            }
        })
        .await;
    }
    let result = match provider.messages(call) {
        Some(fut) => fut.await,
        None => {
            return reject(
                rec,
                no_native(&routed),
                request_id,
                Outcome::Failed,
                Format::Anthropic,
            );
        }
    };
    let events = match result {
        Ok(MessagesResponse::Stream { events, .. }) => events,
        Ok(MessagesResponse::Complete(_)) => {
            let e = ApiError::new(
                ErrorCode::UpstreamError,
                "the provider answered a stream request without a stream",
            );
            return reject(rec, e, request_id, Outcome::Failed, Format::Anthropic);
        }
        Err(e) => {
            let api = pipeline::upstream_error(&gw, &e);
            return reject(rec, api, request_id, Outcome::Failed, Format::Anthropic);
        }
    };
    rec.row().status = 200;
    let started = rec.started();
    let mut headers = HeaderMap::new();
    pipeline::routed_headers(&mut headers, &request_id, &routed, rec.row());
    let cut = gw.0.cut.clone();
    let metered = MeteredEvents::new(
        events,
        meter_options(&gw, &routed, canonical, None),
        move |s: Settlement| {
            pipeline::settle_stream(rec, &s, &routed, started, &cut);
        },
    );
    relay::sse_response(&gw, metered, headers, Format::Anthropic)
}

fn no_native(routed: &Routed) -> ApiError {
    ApiError::new(
        ErrorCode::InternalError,
        format!(
            "provider '{}' does not serve the Messages API natively",
            routed.deployment.provider_name
        ),
    )
}

/// Generated text of a Messages response, for an estimate when it carries no usage.
fn text_of_message(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return String::new();
    };
    v.get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|b| match b.get("type").and_then(Value::as_str) {
            Some("tool_use") => b.get("input").map(Value::to_string).unwrap_or_default(),
            _ => b
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        })
        .collect()
}

/// Any other deployment: translate to the canonical request and back.
async fn translated(
    gw: Gateway,
    mut rec: PendingRow,
    req: MessagesRequest,
    canonical: Arc<Map<String, Value>>,
    routed: Routed,
    output_cap: Option<u64>,
    request_id: String,
) -> Response {
    let provider = routed.deployment.provider.clone();
    let call = ChatCall {
        body: canonical.clone(),
        stream: req.stream,
    };
    if !req.stream {
        let g = gw.clone();
        let rid = request_id.clone();
        let model = req.model.clone();
        return pipeline::detached(&gw, request_id, Format::Anthropic, move |gone| async move {
            match provider.chat(call).await {
                Ok(ChatResponse::Complete(c)) => {
                    let (usage, source) = match c.usage {
                        Some(u) => (u, UsageSource::Provider),
                        None => {
                            let text = serde_json::from_slice::<
                                tollgate_types::canonical::ResponsePeek,
                            >(&c.body)
                            .map(|p| p.output_text())
                            .unwrap_or_default();
                            (estimate(&routed, &canonical, &text), UsageSource::Estimated)
                        }
                    };
                    let body = match anthropic::response_from_canonical(&c.body, &model, &usage) {
                        Ok(b) => Bytes::from(b.to_string()),
                        Err(e) => return reject(rec, e, rid, Outcome::Failed, Format::Anthropic),
                    };
                    pipeline::settle_complete(&mut rec, usage, source, &routed, &gone);
                    let resp = pipeline::json_response(body, &rid, &routed, rec.row());
                    rec.finish();
                    resp
                }
                Ok(ChatResponse::Stream { .. }) => {
                    let e = ApiError::new(
                        ErrorCode::UpstreamError,
                        "the provider streamed a non-streaming request",
                    );
                    reject(rec, e, rid, Outcome::Failed, Format::Anthropic)
                }
                Err(e) => reject(
                    rec,
                    pipeline::upstream_error(&g, &e),
                    rid,
                    Outcome::Failed,
                    Format::Anthropic,
                ),
            }
        })
        .await;
    }
    let chunks = match provider.chat(call).await {
        Ok(ChatResponse::Stream { chunks, .. }) => chunks,
        Ok(ChatResponse::Complete(_)) => {
            let e = ApiError::new(
                ErrorCode::UpstreamError,
                "the provider answered a stream request without a stream",
            );
            return reject(rec, e, request_id, Outcome::Failed, Format::Anthropic);
        }
        Err(e) => {
            let api = pipeline::upstream_error(&gw, &e);
            return reject(rec, api, request_id, Outcome::Failed, Format::Anthropic);
        }
    };
    rec.row().status = 200;
    let started = rec.started();
    let mut headers = HeaderMap::new();
    pipeline::routed_headers(&mut headers, &request_id, &routed, rec.row());
    let cut = gw.0.cut.clone();
    let renderer = AnthropicRenderer(StreamTranslator::new(&req.model));
    let metered = MeteredStream::new(
        chunks,
        meter_options(&gw, &routed, canonical, output_cap),
        renderer,
        move |s: Settlement| {
            pipeline::settle_stream(rec, &s, &routed, started, &cut);
        },
    );
    relay::sse_response(&gw, metered, headers, Format::Anthropic)
}

/// Renders canonical chunks as Messages stream events.
struct AnthropicRenderer(StreamTranslator);

fn put_events(out: &mut BytesMut, events: Vec<(&'static str, Value)>) {
    for (name, data) in events {
        put_event(out, name, data.to_string().as_bytes());
    }
}

impl Renderer for AnthropicRenderer {
    fn chunk(&mut self, raw: &[u8], _peek: Option<&ChunkPeek<'_>>, out: &mut BytesMut) {
        let mut events = Vec::new();
        self.0.chunk(raw, &mut events);
        put_events(out, events);
    }

    fn error(&mut self, error: &ApiError, out: &mut BytesMut) {
        let mut events = Vec::new();
        self.0.error(error, &mut events);
        put_events(out, events);
    }

    fn done(&mut self, usage: Option<&Usage>, out: &mut BytesMut) {
        let mut events = Vec::new();
        self.0.finish(usage, &mut events);
        put_events(out, events);
    }

    fn cut(&mut self, usage: &Usage, out: &mut BytesMut) {
        let mut events = Vec::new();
        self.0.stop_at_max_tokens();
        self.0.finish(Some(usage), &mut events);
        put_events(out, events);
    }
}
