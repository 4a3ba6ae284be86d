//! `POST /v1/chat/completions`: the canonical format itself, streaming and not.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use tollgate_cache::Entry;
use tollgate_ingress::openai::ChatRequest;
use tollgate_metering::{OpenAiRenderer, Renderer};
use tollgate_types::ApiError;

use crate::exchange::{self, Canonical, Endpoint, Hit};
use crate::gateway::Gateway;
use crate::http::WireFormat;
use crate::metrics::Route;
use crate::stages::budget::Shape;

pub(crate) struct Chat {
    /// The client set `stream_options.include_usage`.
    include_usage: bool,
}

impl Endpoint for Chat {
    const ROUTE: Route = Route::Chat;
    const FORMAT: WireFormat = WireFormat::OpenAi;
    const SHAPE: Shape = Shape::Chat;
    const CACHE: Option<&'static str> = Some("chat");
    const STREAMS: bool = true;

    fn parse(body: &[u8], _headers: &HeaderMap) -> Result<(Self, Canonical), ApiError> {
        let req = ChatRequest::parse(tollgate_ingress::parse_object(body)?)?;
        Ok((
            Chat {
                include_usage: req.include_usage,
            },
            Canonical {
                model: req.model,
                stream: req.stream,
                body: req.body,
            },
        ))
    }

    fn renderer(&self) -> Box<dyn Renderer> {
        Box::new(OpenAiRenderer {
            client_wants_usage: self.include_usage,
        })
    }

    /// The stored answer as is, or replayed as SSE (its usage chunk only when asked for).
    fn hit(&self, entry: &Entry, stream: bool) -> Result<Hit, ApiError> {
        match (stream, &entry.sse) {
            (true, Some(sse)) => {
                let mut frames = vec![sse.chunks.clone()];
                if self.include_usage
                    && let Some(u) = &sse.usage
                {
                    frames.push(u.clone());
                }
                frames.push(Bytes::from_static(tollgate_metering::meter::DONE_FRAME));
                Ok(Hit::Events(frames))
            }
            _ => Ok(Hit::Json(entry.body.clone())),
        }
    }
}

pub(crate) async fn handle(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    exchange::run::<Chat>(gw, headers, body).await
}
