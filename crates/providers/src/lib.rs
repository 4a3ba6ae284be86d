//! Provider adapters: the last stage before the network.
//!
//! Every adapter implements [`Provider`]. The gateway hands it a canonical request — an OpenAI
//! Chat Completions (or Embeddings) body, already rewritten for the deployment's upstream model —
//! and gets back a canonical answer: a complete OpenAI-shaped response with its [`Usage`], or a
//! stream of OpenAI `chat.completion.chunk` payloads. Adapters for OpenAI-shaped upstreams pass
//! bytes through untouched; adapters for other wire formats (Anthropic, Gemini, Bedrock) translate
//! in both directions inside their own module.
//!
//! **Architecture invariant:** this crate knows nothing about tenants, budgets, prices or the
//! ledger. It maps canonical ↔ wire, enforces the provider's timeouts, and reports usage and
//! errors with their origin and retryability ([`UpstreamError`]).
//!
//! One module per provider kind: [`openai`] (OpenAI and every OpenAI-compatible server),
//! [`azure`] (Azure OpenAI deployments), [`anthropic`] (Messages API, translated for chat and
//! passed through natively for `/v1/messages`), [`gemini`] (Google's Generative Language API)
//! and [`bedrock`] (Amazon Bedrock Converse, SigV4). [`Capabilities`] lets the gateway refuse
//! what an adapter cannot do before calling it.

pub mod anthropic;
pub mod azure;
pub mod bedrock;
pub mod error;
pub mod failure;
pub mod gemini;
pub mod http;
pub mod openai;
pub mod sse;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use futures_util::future::BoxFuture;
use serde_json::{Map, Value};
use tollgate_types::{ProviderKind, Usage};

pub use error::{TimeoutPhase, UpstreamError, UpstreamErrorKind};
pub use failure::FailureClass;

/// What an adapter can serve. The gateway checks these before routing a request to it, and the
/// conformance suite runs only the cases an adapter declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub chat: bool,
    pub streaming: bool,
    pub tools: bool,
    pub images: bool,
    pub json_schema: bool,
    pub embeddings: bool,
}

/// Timeouts for one upstream exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP (+TLS) connect.
    pub connect: Duration,
    /// From sending the request to receiving response headers.
    pub first_byte: Duration,
    /// Longest silence between two body chunks.
    pub idle: Duration,
    /// Whole exchange, streams included.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            total: Duration::from_secs(600),
        }
    }
}

/// Everything needed to build an adapter, resolved from config (secrets already interpolated).
#[derive(Clone)]
pub struct ProviderSettings {
    /// Name from config (`providers.<name>`); appears in errors and the ledger.
    pub name: String,
    pub kind: ProviderKind,
    /// Base URL following the provider SDK's convention (OpenAI: ends in `/v1`).
    pub base_url: String,
    pub api_key: Option<String>,
    /// Azure `api-version` query parameter.
    pub api_version: Option<String>,
    /// Extra static headers sent on every request.
    pub headers: Vec<(String, String)>,
    pub timeouts: Timeouts,
    /// AWS region (Bedrock).
    pub region: Option<String>,
    /// AWS SigV4 credentials (Bedrock).
    pub aws: Option<AwsCredentials>,
    /// Each model's output ceiling, for APIs that require a cap on every request.
    pub output_limits: OutputLimits,
}

/// A model's output ceiling by upstream model name, for adapters whose API requires a cap on
/// every request (Anthropic's `max_tokens`). Whoever assembles the adapters supplies it (the
/// binary reads the built-in model table, the same limits budget admission reserves for), so
/// this crate carries no model catalogue or price data of its own. The default knows no model.
#[derive(Clone, Default)]
pub struct OutputLimits(Option<Arc<LimitLookup>>);

type LimitLookup = dyn Fn(&str) -> Option<u64> + Send + Sync;

impl OutputLimits {
    pub fn new(lookup: impl Fn(&str) -> Option<u64> + Send + Sync + 'static) -> Self {
        OutputLimits(Some(Arc::new(lookup)))
    }

    /// The most output tokens `model` can produce, when known.
    pub fn max_output_tokens(&self, model: &str) -> Option<u64> {
        self.0.as_ref().and_then(|f| f(model))
    }
}

impl std::fmt::Debug for OutputLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "OutputLimits(lookup)"
        } else {
            "OutputLimits(none)"
        })
    }
}

/// Static AWS credentials for SigV4 signing.
#[derive(Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AwsCredentials(********)")
    }
}

impl ProviderSettings {
    /// Settings with only the essentials; other fields at their defaults.
    pub fn new(name: &str, kind: ProviderKind, base_url: &str) -> Self {
        ProviderSettings {
            name: name.to_string(),
            kind,
            base_url: base_url.to_string(),
            api_key: None,
            api_version: None,
            headers: Vec::new(),
            timeouts: Timeouts::default(),
            region: None,
            aws: None,
            output_limits: OutputLimits::default(),
        }
    }

    /// Every credential in these settings, for scrubbing provider text relayed to clients.
    pub fn secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = self.api_key.iter().cloned().collect();
        out.extend(self.headers.iter().map(|(_, v)| v.clone()));
        if let Some(a) = &self.aws {
            out.push(a.access_key_id.clone());
            out.push(a.secret_access_key.clone());
            out.extend(a.session_token.iter().cloned());
        }
        out.retain(|s| !s.is_empty());
        out
    }
}

impl std::fmt::Debug for ProviderSettings {
    // Hand-written so the API key can never reach a log line through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "********"))
            .field("api_version", &self.api_version)
            .field("timeouts", &self.timeouts)
            .field("region", &self.region)
            .field("aws", &self.aws)
            .finish()
    }
}

/// A canonical chat call: an OpenAI Chat Completions body whose `model` is already the upstream
/// model name. Adapters may add what their wire needs (e.g. `stream_options.include_usage`).
#[derive(Debug, Clone)]
pub struct ChatCall {
    pub body: Arc<Map<String, Value>>,
    pub stream: bool,
}

/// A canonical embeddings call (OpenAI Embeddings body, `model` already upstream).
#[derive(Debug, Clone)]
pub struct EmbeddingsCall {
    pub body: Arc<Map<String, Value>>,
}

/// A complete, successful upstream answer in canonical (OpenAI) form.
#[derive(Debug, Clone)]
pub struct Completion {
    /// Response body to send to the client as is.
    pub body: Bytes,
    /// Provider-reported usage, normalised; `None` when the provider reported none.
    pub usage: Option<Usage>,
    /// The provider's own request id, for support tickets.
    pub upstream_request_id: Option<String>,
}

/// One OpenAI `chat.completion.chunk` JSON payload (no SSE framing).
pub type Chunk = Bytes;

/// Canonical chunk stream. Ends after the upstream's end-of-stream marker; an error item ends it
/// early (cut connection, idle timeout, in-stream provider error translated by the adapter).
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, UpstreamError>> + Send>>;

/// A chat answer: complete, or streaming (response headers received, body not yet).
pub enum ChatResponse {
    Complete(Completion),
    Stream {
        chunks: ChunkStream,
        upstream_request_id: Option<String>,
    },
}

/// A native Anthropic Messages call (`POST /v1/messages` served by an Anthropic deployment):
/// the client's body, `model` already upstream, passed through without a lossy round trip
/// through the canonical format.
#[derive(Debug, Clone)]
pub struct MessagesCall {
    pub body: Arc<Map<String, Value>>,
    pub stream: bool,
    /// Client headers the Messages API defines (`anthropic-version`, `anthropic-beta`), to be
    /// forwarded as sent.
    pub headers: Vec<(String, String)>,
}

/// Raw server-sent events of a native stream (Anthropic event names and payloads as sent).
pub type EventStream = Pin<Box<dyn Stream<Item = Result<sse::Event, UpstreamError>> + Send>>;

/// The answer to a [`MessagesCall`].
pub enum MessagesResponse {
    /// An Anthropic Messages JSON body, with its usage normalised to canonical semantics.
    Complete(Completion),
    Stream {
        events: EventStream,
        upstream_request_id: Option<String>,
    },
}

/// The one interface every provider adapter implements.
///
/// Methods return boxed futures so adapters can live behind `Arc<dyn Provider>` and be chosen
/// per request by the router.
pub trait Provider: Send + Sync {
    /// Name from config, for errors and the ledger.
    fn name(&self) -> &str;
    fn kind(&self) -> ProviderKind;
    fn capabilities(&self) -> Capabilities;
    /// Chat Completions, streaming when `call.stream`.
    fn chat(&self, call: ChatCall) -> BoxFuture<'_, Result<ChatResponse, UpstreamError>>;
    /// Embeddings.
    fn embeddings(&self, call: EmbeddingsCall) -> BoxFuture<'_, Result<Completion, UpstreamError>>;
    /// Native Anthropic Messages. `None` for adapters that do not speak it natively; the
    /// gateway then translates through [`Provider::chat`].
    fn messages(
        &self,
        call: MessagesCall,
    ) -> Option<BoxFuture<'_, Result<MessagesResponse, UpstreamError>>> {
        let _ = call;
        None
    }
}

/// Builds the adapter for a provider from its settings.
pub fn build(settings: ProviderSettings) -> Result<Arc<dyn Provider>, BuildError> {
    match settings.kind {
        ProviderKind::Openai => Ok(Arc::new(openai::OpenAi::new(settings)?)),
        ProviderKind::Azure => Ok(Arc::new(azure::new(settings)?)),
        ProviderKind::Anthropic => Ok(Arc::new(anthropic::Anthropic::new(settings)?)),
        ProviderKind::Gemini => Ok(Arc::new(gemini::Gemini::new(settings)?)),
        ProviderKind::Bedrock => Ok(Arc::new(bedrock::Bedrock::new(settings)?)),
    }
}

/// Why an adapter could not be built (a startup error, never a request error).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("provider kind '{}' is not supported by this build yet", .0.as_str())]
    Unsupported(ProviderKind),
    #[error("invalid base_url '{url}': {reason}")]
    BaseUrl { url: String, reason: String },
    #[error("invalid header '{0}'")]
    Header(String),
    #[error("HTTP client: {0}")]
    Client(String),
    /// Settings that cannot work together (e.g. no credentials at all).
    #[error("invalid provider settings: {0}")]
    Settings(String),
}
