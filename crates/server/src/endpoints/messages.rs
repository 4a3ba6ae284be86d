//! `POST /v1/messages`: the Anthropic Messages API as an ingress, errors in its shape.
//!
//! Served by any deployment. An Anthropic deployment gets the client's body untouched but for
//! the upstream model and the output cap admission settled on (no lossy round trip through
//! the canonical format), and its events are relayed as sent; any other is reached by
//! translating to the canonical request and back (`tollgate_ingress::anthropic`). Either way
//! the request goes through every stage of the exchange — priced, budgeted, metered (native
//! streams cut at the reserved cap like any other) and recorded.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value};
use tollgate_cache::Entry;
use tollgate_ingress::anthropic::{self, MessagesRequest, StreamTranslator};
use tollgate_metering::Renderer;
use tollgate_metering::anthropic::put_event;
use tollgate_providers::{ChatCall, MessagesCall};
use tollgate_types::canonical::ChunkPeek;
use tollgate_types::{ApiError, ProviderKind, Usage};

use crate::exchange::attempts::Prepared;
use crate::exchange::upstream::{Call, Reply};
use crate::exchange::{self, Canonical, Endpoint, Hit};
use crate::gateway::Gateway;
use crate::http::WireFormat;
use crate::metrics::Route;
use crate::stages::budget::Shape;
use crate::stages::target::Candidate;

/// Client headers of the Messages API forwarded to a native upstream.
const FORWARDED_HEADERS: [&str; 2] = ["anthropic-version", "anthropic-beta"];

pub(crate) struct Messages {
    /// The model as the client named it (echoed in translated answers).
    model: String,
    /// The client's body, for native upstreams.
    native: Map<String, Value>,
    forwarded: Vec<(String, String)>,
}

impl Endpoint for Messages {
    const ROUTE: Route = Route::Messages;
    const FORMAT: WireFormat = WireFormat::Anthropic;
    const SHAPE: Shape = Shape::Chat;
    const CACHE: Option<&'static str> = Some("messages");
    const STREAMS: bool = true;

    fn parse(body: &[u8], headers: &HeaderMap) -> Result<(Self, Canonical), ApiError> {
        let req = MessagesRequest::parse(tollgate_ingress::parse_object(body)?)?;
        let canonical = anthropic::to_canonical(&req)?;
        let forwarded = FORWARDED_HEADERS
            .iter()
            .filter_map(|h| {
                let v = headers.get(*h)?.to_str().ok()?;
                Some(((*h).to_string(), v.to_string()))
            })
            .collect();
        Ok((
            Messages {
                model: req.model.clone(),
                native: req.body,
                forwarded,
            },
            Canonical {
                model: req.model,
                stream: req.stream,
                body: canonical,
            },
        ))
    }

    fn call(&self, cand: &Candidate, prepared: &Prepared, stream: bool) -> Call {
        if cand.deployment.provider.kind() != ProviderKind::Anthropic {
            return Call::Chat(ChatCall {
                body: prepared.body.clone(),
                stream,
            });
        }
        let mut body = self.native.clone();
        body.insert("model".into(), Value::String(cand.deployment.model.clone()));
        if let Some(cap) = prepared.clamped_to {
            // Messages requests always carry max_tokens; admission may have lowered it.
            body.insert("max_tokens".into(), cap.into());
        }
        Call::Messages(MessagesCall {
            body: Arc::new(body),
            stream,
            headers: self.forwarded.clone(),
        })
    }

    fn respond(&self, reply: &Reply, usage: &Usage) -> Result<Bytes, ApiError> {
        match reply {
            Reply::Message(b) => Ok(b.clone()),
            Reply::Completion(b) => anthropic::response_from_canonical(b, &self.model, usage)
                .map(|v| Bytes::from(v.to_string())),
            Reply::Embeddings(_) => Err(ApiError::internal(
                "an embeddings answer reached /v1/messages",
            )),
        }
    }

    fn renderer(&self) -> Box<dyn Renderer> {
        Box::new(AnthropicRenderer(StreamTranslator::new(&self.model)))
    }

    /// The stored canonical answer translated like a live one: a Messages body, or its chunks
    /// replayed through the stream translator.
    fn hit(&self, entry: &Entry, stream: bool) -> Result<Hit, ApiError> {
        match (stream, &entry.sse) {
            (true, Some(sse)) => {
                let mut t = StreamTranslator::new(&self.model);
                let mut events = Vec::new();
                for frame in sse.chunks.split(|&b| b == b'\n') {
                    if let Some(data) = frame.strip_prefix(b"data: ") {
                        t.chunk(data, &mut events);
                    }
                }
                t.finish(Some(&entry.usage), &mut events);
                let mut out = BytesMut::new();
                put_events(&mut out, events);
                Ok(Hit::Events(vec![out.freeze()]))
            }
            _ => anthropic::response_from_canonical(&entry.body, &self.model, &entry.usage)
                .map(|v| Hit::Json(Bytes::from(v.to_string()))),
        }
    }
}

pub(crate) async fn handle(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    exchange::run::<Messages>(gw, headers, body).await
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
