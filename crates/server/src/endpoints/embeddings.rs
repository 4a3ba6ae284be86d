//! `POST /v1/embeddings`: priced by input tokens, never streamed or cached.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use tollgate_ingress::openai::EmbeddingsRequest;
use tollgate_providers::EmbeddingsCall;
use tollgate_types::ApiError;

use crate::exchange::attempts::Prepared;
use crate::exchange::upstream::Call;
use crate::exchange::{self, Canonical, Endpoint};
use crate::gateway::Gateway;
use crate::http::WireFormat;
use crate::metrics::Route;
use crate::stages::budget::Shape;
use crate::stages::target::Candidate;

pub(crate) struct Embeddings;

impl Endpoint for Embeddings {
    const ROUTE: Route = Route::Embeddings;
    const FORMAT: WireFormat = WireFormat::OpenAi;
    const SHAPE: Shape = Shape::Embeddings;
    const CACHE: Option<&'static str> = None;
    const STREAMS: bool = false;

    fn parse(body: &[u8], _headers: &HeaderMap) -> Result<(Self, Canonical), ApiError> {
        let req = EmbeddingsRequest::parse(tollgate_ingress::parse_object(body)?)?;
        Ok((
            Embeddings,
            Canonical {
                model: req.model,
                stream: false,
                body: req.body,
            },
        ))
    }

    fn call(&self, _cand: &Candidate, prepared: &Prepared, _stream: bool) -> Call {
        Call::Embeddings(EmbeddingsCall {
            body: prepared.body.clone(),
        })
    }
}

pub(crate) async fn handle(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    exchange::run::<Embeddings>(gw, headers, body).await
}
