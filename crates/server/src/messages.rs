//! `POST /v1/messages`: the Anthropic Messages API as an ingress.
//!
//! Served by any deployment. An Anthropic deployment gets the client's body untouched (no
//! lossy round trip through the canonical format); any other is reached by translating to the
//! canonical request and back (`tollgate_ingress::anthropic`). Either way the request is
//! authenticated, attributed, priced, metered and recorded exactly like
//! `/v1/chat/completions`: no route bypasses the meter. Errors use the Anthropic shape.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

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
use crate::budget::Shape;
use crate::cache;
use crate::dispatch::{self, Attempts, Dispatch, Prepared};
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
    let (req, canonical, dispatch) = match admit(&gw, &mut rec, &headers, body).await {
        Ok(v) => v,
        Err(e) => return reject(rec, e, request_id, Outcome::Rejected, Format::Anthropic),
    };
    let forwarded: Vec<(String, String)> = FORWARDED_HEADERS
        .iter()
        .filter_map(|h| {
            let v = headers.get(*h)?.to_str().ok()?;
            Some(((*h).to_string(), v.to_string()))
        })
        .collect();
    let first = dispatch.preview(&gw);
    let limits =
        match ratelimit::admit_first(&gw, &mut rec, first.as_ref(), &canonical, Shape::Chat) {
            Ok(l) => l,
            Err(l) => return l.reject(rec, request_id, Format::Anthropic),
        };
    let fill = match &first {
        Some(first) => {
            let row = rec.row();
            match cache::lookup(
                &gw, row, &headers, "messages", &canonical, req.stream, first,
            ) {
                cache::Lookup::Hit(e) => {
                    let resp = serve_hit(&gw, rec, &e, first, &req, &request_id);
                    return limits.apply(resp);
                }
                cache::Lookup::Miss(fill) => Some(fill),
                cache::Lookup::Off | cache::Lookup::Bypass => None,
            }
        }
        None => None,
    };
    let ex = Exchange {
        req,
        forwarded,
        attempts: Attempts::new(dispatch, canonical),
        request_id,
        fill,
    };
    let resp = if ex.req.stream {
        stream(gw, rec, ex).await
    } else {
        let g = gw.clone();
        let rid = ex.request_id.clone();
        pipeline::detached(&gw, rid, Format::Anthropic, move |gone| {
            complete(g, rec, ex, gone)
        })
        .await
    };
    limits.apply(resp)
}

/// One Messages request across its attempts.
struct Exchange {
    req: MessagesRequest,
    /// Client headers forwarded to a native upstream.
    forwarded: Vec<(String, String)>,
    attempts: Attempts,
    request_id: String,
    /// Where a missed answer goes (stored in the canonical shape, so either ingress can be
    /// served from it).
    fill: Option<cache::Fill>,
}

impl Exchange {
    /// The native call for an Anthropic deployment: the client's body with the upstream model
    /// and the output cap admission settled on.
    fn native_call(&self, routed: &Routed, prepared: &Prepared, stream: bool) -> MessagesCall {
        let mut native_body = pipeline::upstream_body(self.req.body.clone(), routed);
        if let Some(cap) = prepared.clamped_to {
            // Messages requests always carry max_tokens; admission may have lowered it.
            native_body.insert("max_tokens".into(), cap.into());
        }
        MessagesCall {
            body: Arc::new(native_body),
            stream,
            headers: self.forwarded.clone(),
        }
    }
}

async fn admit(
    gw: &Gateway,
    rec: &mut PendingRow,
    headers: &HeaderMap,
    body: Body,
) -> Result<(MessagesRequest, Map<String, Value>, Dispatch), ApiError> {
    let key = pipeline::authenticate(gw, headers)?;
    pipeline::note_key(rec.row(), &key);
    let bytes = pipeline::read_body(body, gw.settings().max_body_bytes).await?;
    let req = MessagesRequest::parse(tollgate_ingress::parse_object(&bytes)?)?;
    rec.row().requested_model = Some(req.model.clone());
    rec.row().stream = req.stream;
    let canonical = anthropic::to_canonical(&req)?;
    rec.row().attribution = tollgate_attribution::resolve(&key, headers, Some(&canonical))?;
    let dispatch = pipeline::route(
        gw,
        &key,
        rec.row(),
        &req.model,
        pipeline::RouteHints {
            headers,
            body: Some(&canonical),
            stream: req.stream,
        },
    )?;
    Ok((req, canonical, dispatch))
}

/// Non-streaming, on a detached task: native passthrough to an Anthropic deployment, or
/// translation through the canonical format for any other; retried per the dispatch rules.
async fn complete(
    gw: Gateway,
    mut rec: PendingRow,
    mut ex: Exchange,
    gone: Arc<AtomicBool>,
) -> Response {
    let rid = ex.request_id.clone();
    loop {
        let (routed, attempt, prepared) = match ex.attempts.next(&gw, &mut rec, Shape::Chat).await {
            Ok(v) => v,
            Err(e) => return dispatch::give_up(rec, e, rid, Format::Anthropic),
        };
        if prepared.fitted || !cache::fill_matches(ex.fill.as_ref(), &routed) {
            // Shortened to fit a budget, or served by a fallback model: not the answer the
            // cache key stands for.
            ex.fill = None;
        }
        let canonical = prepared.body.clone();
        let provider = routed.deployment.provider.clone();
        let t0 = Instant::now();
        // The answer as a Messages body, its usage, and (when it is to be cached) the same
        // answer in the canonical shape; or the upstream failure.
        type Answer = (Bytes, Usage, UsageSource, Option<Bytes>);
        let answer: Result<Answer, tollgate_providers::UpstreamError> =
            if provider.kind() == ProviderKind::Anthropic {
                let call = ex.native_call(&routed, &prepared, false);
                let Some(fut) = provider.messages(call) else {
                    return reject(
                        rec,
                        no_native(&routed),
                        rid,
                        Outcome::Failed,
                        Format::Anthropic,
                    );
                };
                match fut.await {
                    Ok(MessagesResponse::Complete(c)) => {
                        let canon = ex.fill.as_ref().and_then(|_| {
                            let created = jiff::Timestamp::now().as_second().max(0) as u64;
                            tollgate_providers::anthropic::response::to_chat_completion(
                                &c.body, created,
                            )
                            .ok()
                            .map(|(b, _)| Bytes::from(b))
                        });
                        Ok(match c.usage {
                            Some(u) => (c.body, u, UsageSource::Provider, canon),
                            None => {
                                let u = estimate(&routed, &canonical, &text_of_message(&c.body));
                                (c.body, u, UsageSource::Estimated, canon)
                            }
                        })
                    }
                    Ok(MessagesResponse::Stream { .. }) => {
                        let e = ApiError::new(
                            ErrorCode::UpstreamError,
                            "the provider streamed a non-streaming request",
                        );
                        return reject(rec, e, rid, Outcome::Failed, Format::Anthropic);
                    }
                    Err(e) => Err(e),
                }
            } else {
                let call = ChatCall {
                    body: canonical.clone(),
                    stream: false,
                };
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
                        match anthropic::response_from_canonical(&c.body, &ex.req.model, &usage) {
                            Ok(b) => Ok((Bytes::from(b.to_string()), usage, source, Some(c.body))),
                            Err(e) => {
                                return reject(rec, e, rid, Outcome::Failed, Format::Anthropic);
                            }
                        }
                    }
                    Ok(ChatResponse::Stream { .. }) => {
                        let e = ApiError::new(
                            ErrorCode::UpstreamError,
                            "the provider streamed a non-streaming request",
                        );
                        return reject(rec, e, rid, Outcome::Failed, Format::Anthropic);
                    }
                    Err(e) => Err(e),
                }
            };
        match answer {
            Ok((body, usage, source, canon)) => {
                let took = t0.elapsed();
                attempt.success(Some(took), took, Instant::now());
                ex.attempts.succeeded(&routed);
                pipeline::settle_complete(&mut rec, usage, source, &routed, &gone);
                if let (Some(f), Some(canon)) = (ex.fill.take(), canon) {
                    f.complete(&canon, rec.row());
                }
                let mut resp = pipeline::json_response(body, &rid, &routed, rec.row());
                cache::tag(resp.headers_mut(), rec.row());
                rec.finish();
                return resp;
            }
            Err(e) => {
                if let Err(api) = ex.attempts.failed(&gw, &routed, attempt, &e) {
                    return reject(rec, api, rid, Outcome::Failed, Format::Anthropic);
                }
            }
        }
    }
}

/// The first part of a stream, before anything was relayed: native events or canonical chunks.
enum Started {
    Native(tollgate_providers::EventStream),
    Translated(tollgate_providers::ChunkStream),
}

/// Streaming: each attempt is held until its first event/chunk so a failure before it fails
/// over; then the stream is relayed through the meter.
async fn stream(gw: Gateway, mut rec: PendingRow, mut ex: Exchange) -> Response {
    let rid = ex.request_id.clone();
    loop {
        let (routed, attempt, prepared) = match ex.attempts.next(&gw, &mut rec, Shape::Chat).await {
            Ok(v) => v,
            Err(e) => return dispatch::give_up(rec, e, rid, Format::Anthropic),
        };
        if prepared.fitted || !cache::fill_matches(ex.fill.as_ref(), &routed) {
            // Shortened to fit a budget, or served by a fallback model: not the answer the
            // cache key stands for.
            ex.fill = None;
        }
        let provider = routed.deployment.provider.clone();
        let t0 = Instant::now();
        let started = if provider.kind() == ProviderKind::Anthropic {
            let call = ex.native_call(&routed, &prepared, true);
            let Some(fut) = provider.messages(call) else {
                return reject(
                    rec,
                    no_native(&routed),
                    rid,
                    Outcome::Failed,
                    Format::Anthropic,
                );
            };
            match fut.await {
                Ok(MessagesResponse::Stream { events, .. }) => {
                    dispatch::start_stream(events, dispatch::event_is_preamble)
                        .await
                        .map(Started::Native)
                }
                Ok(MessagesResponse::Complete(_)) => {
                    let e = ApiError::new(
                        ErrorCode::UpstreamError,
                        "the provider answered a stream request without a stream",
                    );
                    return reject(rec, e, rid, Outcome::Failed, Format::Anthropic);
                }
                Err(e) => Err(e),
            }
        } else {
            let call = ChatCall {
                body: prepared.body.clone(),
                stream: true,
            };
            match provider.chat(call).await {
                Ok(ChatResponse::Stream { chunks, .. }) => {
                    dispatch::start_stream(chunks, dispatch::chunk_is_preamble)
                        .await
                        .map(Started::Translated)
                }
                Ok(ChatResponse::Complete(_)) => {
                    let e = ApiError::new(
                        ErrorCode::UpstreamError,
                        "the provider answered a stream request without a stream",
                    );
                    return reject(rec, e, rid, Outcome::Failed, Format::Anthropic);
                }
                Err(e) => Err(e),
            }
        };
        let started_stream = match started {
            Ok(s) => s,
            Err(e) => {
                if let Err(api) = ex.attempts.failed(&gw, &routed, attempt, &e) {
                    return reject(rec, api, rid, Outcome::Failed, Format::Anthropic);
                }
                continue;
            }
        };
        ex.attempts.succeeded(&routed);
        rec.row().status = 200;
        let started = rec.started();
        let mut headers = HeaderMap::new();
        pipeline::routed_headers(&mut headers, &rid, &routed, rec.row());
        cache::tag(&mut headers, rec.row());
        let cut = gw.0.cut.clone();
        let canonical = prepared.body.clone();
        return match started_stream {
            Started::Native(events) => {
                let metered = MeteredEvents::new(
                    events,
                    meter_options(&gw, &routed, canonical, None),
                    move |s: Settlement| {
                        pipeline::report_stream(attempt, &s, t0);
                        pipeline::settle_stream(rec, &s, &routed, started, &cut);
                    },
                );
                relay::sse_response(&gw, metered, headers, Format::Anthropic)
            }
            Started::Translated(chunks) => {
                let (renderer, fill) = cache::caching(
                    AnthropicRenderer(StreamTranslator::new(&ex.req.model)),
                    ex.fill.take(),
                );
                let metered = MeteredStream::new(
                    chunks,
                    meter_options(&gw, &routed, canonical, prepared.output_cap),
                    renderer,
                    move |s: Settlement| {
                        pipeline::report_stream(attempt, &s, t0);
                        if let Some(f) = fill {
                            f.settled(&s, &routed);
                        }
                        pipeline::settle_stream(rec, &s, &routed, started, &cut);
                    },
                );
                relay::sse_response(&gw, metered, headers, Format::Anthropic)
            }
        };
    }
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

/// Answers a cache hit in the Messages shape: the stored canonical answer translated like a
/// live one — a Messages body, or its chunks replayed through the stream translator.
fn serve_hit(
    gw: &Gateway,
    mut rec: PendingRow,
    entry: &tollgate_cache::Entry,
    routed: &Routed,
    req: &MessagesRequest,
    request_id: &str,
) -> Response {
    let headers = cache::hit_row(&mut rec, entry, routed, request_id);
    let replay = if req.stream { entry.sse.as_ref() } else { None };
    let resp = match replay {
        Some(sse) => {
            let mut t = StreamTranslator::new(&req.model);
            let mut events = Vec::new();
            for frame in sse.chunks.split(|&b| b == b'\n') {
                if let Some(data) = frame.strip_prefix(b"data: ") {
                    t.chunk(data, &mut events);
                }
            }
            t.finish(Some(&entry.usage), &mut events);
            let mut out = BytesMut::new();
            put_events(&mut out, events);
            let frames =
                futures_util::stream::iter([Ok::<_, std::convert::Infallible>(out.freeze())]);
            relay::sse_response(gw, frames, headers, Format::Anthropic)
        }
        None => match anthropic::response_from_canonical(&entry.body, &req.model, &entry.usage) {
            Ok(body) => cache::hit_json(Bytes::from(body.to_string()), headers),
            Err(e) => {
                // The stored answer was checked when it was stored; this would be a bug.
                tracing::error!(error = %e, "a cached answer could not be translated");
                let resp = Format::Anthropic.error(e, request_id.to_string());
                rec.finish();
                return resp;
            }
        },
    };
    rec.finish();
    resp
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
