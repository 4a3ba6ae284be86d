//! Request dispatch: parses the path into a [`Route`], applies what every data-plane route
//! shares (stats, in-flight accounting, body reading, pre-answer faults, usage accounting,
//! the paced and possibly cut stream) and hands the request to the wire-format module that
//! owns it: [`crate::openai`] (OpenAI and Azure OpenAI paths), [`crate::anthropic`]
//! (`/v1/messages`), [`crate::gemini`] (`/v1beta/models/{model}:{method}`) and
//! [`crate::bedrock`] (`/model/{modelId}/converse[-stream]`). Each module checks its own
//! auth headers and renders its own errors; the path alone decides which error shape
//! ([`Family`]) a 404, 405 or 413 uses.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;

use crate::config::{ConfigUpdateError, SimConfig};
use crate::content::mix64;
use crate::error::{AnthropicError, BedrockError, Family, GoogleError, OpenAiError};
use crate::faults::Fault;
use crate::http::{PacedBody, SimBody, SimError, json_response, stream_response};
use crate::plan::PromptUsage;
use crate::prompt_cache::PromptPrefixes;
use crate::server::Shared;
use crate::stats::{InFlight, add, bump};
use crate::{anthropic, bedrock, gemini, openai};

/// Request bodies above this are refused with 413 (far above any real chat request; bounds
/// memory per connection).
pub(crate) const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Which flavour of the OpenAI API a path belongs to: it decides auth and where the model
/// name comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `/v1/…`, `Authorization: Bearer`.
    OpenAi,
    /// `/openai/deployments/{deployment}/…?api-version=…`, `api-key` header; the deployment
    /// is the model.
    Azure { deployment: String },
    /// Azure's v1 surface `/openai/v1/…`: `api-key` or Bearer, model from the body.
    AzureV1,
}

/// An OpenAI-format endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    ChatCompletions,
    Embeddings,
    Models,
}

/// An Anthropic endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AnthropicEndpoint {
    /// `POST /v1/messages`.
    Messages,
    /// `POST /v1/messages/count_tokens`.
    CountTokens,
}

/// A Gemini model method (`/v1beta/models/{model}:{method}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GeminiMethod {
    GenerateContent,
    StreamGenerateContent,
    EmbedContent,
    BatchEmbedContents,
    CountTokens,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Api(Endpoint, Dialect),
    Anthropic(AnthropicEndpoint),
    /// A method on a Gemini model; the model as sent in the path (percent-decoded).
    Gemini(GeminiMethod, String),
    /// `GET /v1beta/models`.
    GeminiModels,
    /// Bedrock Converse (`stream`: ConverseStream) on a model id (percent-decoded).
    Bedrock {
        model: String,
        stream: bool,
    },
    SimConfig,
    SimStats,
    /// `POST /_sim/stats/reset`.
    SimStatsReset,
    /// `POST /_sim/prompt_cache/reset`.
    SimPromptCacheReset,
    /// `POST /v1/traces`, `POST /v1/metrics`: an OTLP/HTTP sink (the gateway's telemetry in
    /// benchmarks and the demo, with no collector to run).
    OtlpSink,
    NotFound(Family),
    MethodNotAllowed(Family),
}

impl Route {
    pub(crate) fn parse(method: &Method, path: &str) -> Route {
        let expect = |m: Method, r: Route, family: Family| {
            if *method == m {
                r
            } else {
                Route::MethodNotAllowed(family)
            }
        };
        match path {
            "/_sim/config" if *method == Method::GET || *method == Method::POST => Route::SimConfig,
            "/_sim/config" => Route::MethodNotAllowed(Family::OpenAi),
            "/_sim/stats" => expect(Method::GET, Route::SimStats, Family::OpenAi),
            "/_sim/stats/reset" => expect(Method::POST, Route::SimStatsReset, Family::OpenAi),
            "/_sim/prompt_cache/reset" => {
                expect(Method::POST, Route::SimPromptCacheReset, Family::OpenAi)
            }
            "/v1/traces" | "/v1/metrics" => expect(Method::POST, Route::OtlpSink, Family::OpenAi),
            "/v1/messages" => expect(
                Method::POST,
                Route::Anthropic(AnthropicEndpoint::Messages),
                Family::Anthropic,
            ),
            "/v1/messages/count_tokens" => expect(
                Method::POST,
                Route::Anthropic(AnthropicEndpoint::CountTokens),
                Family::Anthropic,
            ),
            _ if path.starts_with("/v1/messages/") => Route::NotFound(Family::Anthropic),
            _ => {
                if let Some(rest) = path.strip_prefix("/v1beta/") {
                    return Route::parse_gemini(method, rest);
                }
                // Gemini's stable surface: `/v1/models/{model}:{method}` (the colon tells it
                // apart from OpenAI's `/v1/models/{id}`).
                if let Some(rest) = path.strip_prefix("/v1/")
                    && rest.starts_with("models/")
                    && percent_decode(rest).contains(':')
                {
                    return Route::parse_gemini(method, rest);
                }
                if let Some(rest) = path.strip_prefix("/model/") {
                    return Route::parse_bedrock(method, rest);
                }
                Route::parse_openai(method, path)
            }
        }
    }

    fn parse_openai(method: &Method, path: &str) -> Route {
        let expect = |m: Method, r: Route| {
            if *method == m {
                r
            } else {
                Route::MethodNotAllowed(Family::OpenAi)
            }
        };
        let not_found = Route::NotFound(Family::OpenAi);
        let (rest, dialect) = if let Some(rest) = path.strip_prefix("/v1/") {
            (rest, Dialect::OpenAi)
        } else if let Some(rest) = path.strip_prefix("/openai/v1/") {
            (rest, Dialect::AzureV1)
        } else if let Some(rest) = path.strip_prefix("/openai/deployments/") {
            let Some((deployment, rest)) = rest.split_once('/') else {
                return not_found;
            };
            if deployment.is_empty() {
                return not_found;
            }
            let dialect = Dialect::Azure {
                deployment: deployment.to_string(),
            };
            return match rest {
                "chat/completions" => {
                    expect(Method::POST, Route::Api(Endpoint::ChatCompletions, dialect))
                }
                "embeddings" => expect(Method::POST, Route::Api(Endpoint::Embeddings, dialect)),
                _ => not_found,
            };
        } else {
            return not_found;
        };
        match rest {
            "chat/completions" => {
                expect(Method::POST, Route::Api(Endpoint::ChatCompletions, dialect))
            }
            "embeddings" => expect(Method::POST, Route::Api(Endpoint::Embeddings, dialect)),
            "models" => expect(Method::GET, Route::Api(Endpoint::Models, dialect)),
            _ => not_found,
        }
    }

    /// `rest` is the path after `/v1beta/` (or `/v1/`): `models` or `models/{model}:{method}`.
    fn parse_gemini(method: &Method, rest: &str) -> Route {
        let family = Family::Google;
        if rest == "models" {
            return if *method == Method::GET {
                Route::GeminiModels
            } else {
                Route::MethodNotAllowed(family)
            };
        }
        let Some(target) = rest.strip_prefix("models/") else {
            return Route::NotFound(family);
        };
        // Clients may percent-encode the colon.
        let target = percent_decode(target);
        let Some((model, verb)) = target.rsplit_once(':') else {
            return Route::NotFound(family);
        };
        let m = match verb {
            "generateContent" => GeminiMethod::GenerateContent,
            "streamGenerateContent" => GeminiMethod::StreamGenerateContent,
            "embedContent" => GeminiMethod::EmbedContent,
            "batchEmbedContents" => GeminiMethod::BatchEmbedContents,
            "countTokens" => GeminiMethod::CountTokens,
            _ => return Route::NotFound(family),
        };
        if model.is_empty() || model.contains('/') {
            return Route::NotFound(family);
        }
        if *method != Method::POST {
            return Route::MethodNotAllowed(family);
        }
        Route::Gemini(m, model.to_string())
    }

    /// `rest` is the path after `/model/`: `{modelId}/converse` or `{modelId}/converse-stream`,
    /// the model id percent-encoded (`anthropic.claude-…-v1%3A0`, ARNs with `%2F`).
    fn parse_bedrock(method: &Method, rest: &str) -> Route {
        let family = Family::Bedrock;
        let Some((model, op)) = rest.rsplit_once('/') else {
            return Route::NotFound(family);
        };
        let stream = match op {
            "converse" => false,
            "converse-stream" => true,
            _ => return Route::NotFound(family),
        };
        if model.is_empty() || model.contains('/') {
            return Route::NotFound(family);
        }
        if *method != Method::POST {
            return Route::MethodNotAllowed(family);
        }
        Route::Bedrock {
            model: percent_decode(model),
            stream,
        }
    }

    /// The error shape of a data-plane route.
    fn family(&self) -> Family {
        match self {
            Route::Anthropic(_) => Family::Anthropic,
            Route::Gemini(..) | Route::GeminiModels => Family::Google,
            Route::Bedrock { .. } => Family::Bedrock,
            Route::NotFound(f) | Route::MethodNotAllowed(f) => *f,
            Route::Api(..)
            | Route::SimConfig
            | Route::SimStats
            | Route::SimStatsReset
            | Route::SimPromptCacheReset
            | Route::OtlpSink => Family::OpenAi,
        }
    }
}

/// Decodes `%XX` escapes (a path segment); malformed escapes are kept as they are, and
/// invalid UTF-8 is replaced, so any input decodes without failing.
pub(crate) fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why a handler did not produce a normal answer.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A 4xx reply (auth, validation), already rendered in the route's error shape; counted
    /// as a client error. Boxed: errors are the rare path and keep `Result`s small.
    Client(Box<Response<SimBody>>),
    /// Drop the connection without a response.
    Abort(SimError),
}

impl From<OpenAiError> for Failure {
    fn from(e: OpenAiError) -> Self {
        Failure::Client(Box::new(e.into_response()))
    }
}

impl From<AnthropicError> for Failure {
    fn from(e: AnthropicError) -> Self {
        Failure::Client(Box::new(e.into_response()))
    }
}

impl From<GoogleError> for Failure {
    fn from(e: GoogleError) -> Self {
        Failure::Client(Box::new(e.into_response()))
    }
}

impl From<BedrockError> for Failure {
    fn from(e: BedrockError) -> Self {
        Failure::Client(Box::new(e.into_response()))
    }
}

/// What a handler gets besides the body: the config snapshot for this request, shared state,
/// and the in-flight guard (moved into a stream body when the answer streams).
pub(crate) struct Ctx {
    pub shared: Arc<Shared>,
    pub cfg: Arc<SimConfig>,
    pub in_flight: InFlight,
}

/// An injected failure reply to render in the route's own error shape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InjectedFailure {
    pub status: u16,
    pub retry_after_secs: Option<u64>,
}

/// Why a generation request is refused before it is answered (each format renders it in its
/// own shape).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refusal {
    /// `fail_first` / `fail_rate`: the `fail_status` error.
    Fail(InjectedFailure),
    /// `content_filter_rate`: the route's content-policy answer.
    ContentFilter,
    /// The prompt (`prompt` tokens) exceeds `context_window` (`window`).
    ContextWindow { prompt: u64, window: u32 },
}

impl Ctx {
    /// Decides and applies the pre-answer faults (reset, hang, fail) for an embeddings
    /// request. `Ok(Some(_))` means "answer with this injected failure".
    pub(crate) async fn pre_answer_fault(&self) -> Result<Option<InjectedFailure>, Failure> {
        match self.fault(false).await? {
            Some(Refusal::Fail(f)) => Ok(Some(f)),
            // Embeddings are never content-filtered nor checked against the context window.
            _ => Ok(None),
        }
    }

    /// The pre-answer refusal of a generation request whose prompt is `prompt_tokens` long:
    /// the context window first (a real provider checks it before anything else, and it does
    /// not advance the fault sequences), then the faults of [`crate::faults`].
    pub(crate) async fn generation_fault(
        &self,
        prompt_tokens: u64,
    ) -> Result<Option<Refusal>, Failure> {
        if let Some(window) = self.cfg.context_window
            && prompt_tokens > u64::from(window)
        {
            bump(&self.shared.stats.context_window_exceeded);
            self.ttft().await;
            return Ok(Some(Refusal::ContextWindow {
                prompt: prompt_tokens,
                window,
            }));
        }
        self.fault(true).await
    }

    async fn fault(&self, generation: bool) -> Result<Option<Refusal>, Failure> {
        let stats = &self.shared.stats;
        match self.shared.faults.decide(&self.cfg, generation) {
            Fault::None => Ok(None),
            Fault::Reset => {
                bump(&stats.faults_reset);
                Err(Failure::Abort(SimError::Reset))
            }
            Fault::Hang => {
                bump(&stats.faults_hang);
                // Never answers. Hyper drops this future when the client disconnects; on
                // shutdown the connection is dropped at once instead of holding it up.
                let mut stop = self.shared.shutdown.subscribe();
                let _ = stop.wait_for(|s| *s).await;
                Err(Failure::Abort(SimError::ShuttingDown))
            }
            Fault::Fail => {
                bump(&stats.faults_fail);
                self.ttft().await;
                Ok(Some(Refusal::Fail(InjectedFailure {
                    status: self.cfg.fail_status,
                    retry_after_secs: self.cfg.retry_after_secs,
                })))
            }
            Fault::ContentFilter => {
                bump(&stats.faults_content_filter);
                self.ttft().await;
                Ok(Some(Refusal::ContentFilter))
            }
        }
    }

    /// Waits the configured time to first token.
    pub(crate) async fn ttft(&self) {
        if self.cfg.ttft_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.cfg.ttft_ms)).await;
        }
    }

    /// The cached split of a prompt of `total` tokens: with `prompt_cache`, what this
    /// simulator's prompt cache holds of it (`prefixes` describes the prompt; it is only
    /// built when the knob is on), and the prompt is remembered; otherwise the
    /// `cached_prompt_tokens` knob.
    pub(crate) fn prompt_usage(
        &self,
        total: u64,
        prefixes: impl FnOnce() -> PromptPrefixes,
    ) -> PromptUsage {
        if !self.cfg.prompt_cache {
            return PromptUsage::new(total, self.cfg.cached_prompt_tokens);
        }
        let prompt = prefixes();
        let ttl = Duration::from_secs(self.cfg.prompt_cache_ttl_secs);
        let cached = self.shared.serve_prompt(&prompt, ttl, Instant::now());
        PromptUsage {
            total,
            cached: cached.min(total),
        }
    }

    /// Counts the usage of a complete answer in the stats.
    pub(crate) fn count_usage(&self, prompt: PromptUsage, completion: u64) {
        let stats = &self.shared.stats;
        add(&stats.prompt_tokens, prompt.total);
        add(&stats.cached_prompt_tokens, prompt.cached);
        add(&stats.completion_tokens, completion);
    }

    /// A complete JSON answer: counts its usage, then waits `ttft_ms` before the headers.
    pub(crate) async fn answer_json(
        &self,
        body: Vec<u8>,
        prompt: PromptUsage,
        completion: u64,
    ) -> Response<SimBody> {
        self.count_usage(prompt, completion);
        self.ttft().await;
        json_response(StatusCode::OK, body)
    }

    /// A streamed answer made of pre-rendered `frames`, paced by `chunk_delay_ms` after
    /// `ttft_ms`. When the stream is picked to be cut (`cut_rate`), it fails after about half
    /// its frames and never before frame `first_final` — the first frame that tells the
    /// client the answer is complete (finish reason, stop event) — so a cut stream never looks
    /// finished; its usage is not counted.
    ///
    /// When it is picked for an in-stream error instead (`stream_error_rate`), it keeps the
    /// frames before `first_content` (the format's preamble: role chunk, `message_start`, …)
    /// plus `stream_error_after_chunks` content frames (never reaching `first_final`), then
    /// sends `error_frame(first)` — `first` when nothing precedes it, which is always the case
    /// with `stream_error_after_chunks: 0` — and ends the body cleanly. Its usage is not
    /// counted either.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn answer_stream(
        self,
        mut frames: Vec<Bytes>,
        first_final: usize,
        first_content: usize,
        error_frame: impl FnOnce(bool) -> Bytes,
        content_type: &'static str,
        prompt: PromptUsage,
        completion: u64,
    ) -> Response<SimBody> {
        let stats = &self.shared.stats;
        bump(&stats.streams);
        let stall_after = self
            .cfg
            .stall_after_chunks
            .map(|n| first_content.saturating_add(n as usize).min(first_final));
        let cut_after = if self.shared.faults.cut(&self.cfg) {
            bump(&stats.streams_cut);
            // At least one frame when the stream has one to spare, but never the final one:
            // a single-frame answer (a whole Gemini function call) is cut right after the
            // headers.
            Some((frames.len() / 2).max(1).min(first_final))
        } else if self.shared.faults.stream_error(&self.cfg) {
            bump(&stats.streams_errored);
            let after = self.cfg.stream_error_after_chunks as usize;
            let keep = if after == 0 {
                0
            } else {
                first_content.saturating_add(after).min(first_final)
            };
            frames.truncate(keep);
            frames.push(error_frame(keep == 0));
            None
        } else {
            // A stalled answer is never delivered: its usage does not count.
            if stall_after.is_none() {
                self.count_usage(prompt, completion);
            }
            None
        };
        self.ttft().await;
        let body = PacedBody::new(
            frames,
            Duration::from_millis(self.cfg.chunk_delay_ms),
            cut_after,
            stall_after,
            self.in_flight,
        );
        stream_response(body, content_type)
    }
}

/// The hyper service: one request in, one response (or a dropped connection) out.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<SimBody>, SimError> {
    let route = Route::parse(req.method(), req.uri().path());
    let family = route.family();
    let mut resp = match route {
        Route::SimStats => {
            let body = serde_json::to_vec(&shared.stats.snapshot()).unwrap_or_default();
            json_response(StatusCode::OK, body)
        }
        Route::SimStatsReset => {
            shared.stats.reset();
            let body = serde_json::to_vec(&shared.stats.snapshot()).unwrap_or_default();
            json_response(StatusCode::OK, body)
        }
        Route::SimPromptCacheReset => {
            let cleared = shared.clear_prompt_cache();
            let body =
                serde_json::to_vec(&serde_json::json!({ "cleared": cleared })).unwrap_or_default();
            json_response(StatusCode::OK, body)
        }
        Route::SimConfig => control_config(&shared, req).await?,
        Route::OtlpSink => {
            // The body is read (so the sender's request completes) and discarded; an empty
            // Export*ServiceResponse is zero bytes of protobuf.
            let _ = read_body(req, Family::OpenAi).await;
            bump(&shared.stats.otlp_exports);
            let mut r = json_response(StatusCode::OK, Vec::new());
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/x-protobuf"),
            );
            r
        }
        Route::NotFound(f) | Route::MethodNotAllowed(f) => {
            bump(&shared.stats.requests);
            bump(&shared.stats.unknown_routes);
            bump(&shared.stats.client_errors);
            let (m, p) = (req.method().as_str(), req.uri().path());
            if matches!(route, Route::NotFound(_)) {
                f.not_found(m, p)
            } else {
                f.method_not_allowed(m, p)
            }
        }
        route => {
            let stats = &shared.stats;
            bump(&stats.requests);
            bump(match &route {
                Route::Api(Endpoint::ChatCompletions, _) => &stats.chat_completions,
                Route::Api(Endpoint::Embeddings, _) => &stats.embeddings,
                Route::Api(Endpoint::Models, _) => &stats.models,
                Route::Anthropic(AnthropicEndpoint::Messages) => &stats.messages,
                Route::Anthropic(AnthropicEndpoint::CountTokens) => &stats.messages_count_tokens,
                Route::Gemini(m, _) => match m {
                    GeminiMethod::GenerateContent => &stats.generate_content,
                    GeminiMethod::StreamGenerateContent => &stats.stream_generate_content,
                    GeminiMethod::EmbedContent => &stats.embed_content,
                    GeminiMethod::BatchEmbedContents => &stats.batch_embed_contents,
                    GeminiMethod::CountTokens => &stats.count_tokens,
                },
                Route::GeminiModels => &stats.gemini_models,
                Route::Bedrock { stream: false, .. } => &stats.converse,
                Route::Bedrock { stream: true, .. } => &stats.converse_stream,
                // Handled above; never reached.
                Route::SimConfig
                | Route::SimStats
                | Route::SimStatsReset
                | Route::SimPromptCacheReset
                | Route::OtlpSink
                | Route::NotFound(_) => &stats.unknown_routes,
                Route::MethodNotAllowed(_) => &stats.unknown_routes,
            });
            let ctx = Ctx {
                in_flight: InFlight::new(shared.stats.clone()),
                cfg: shared.config.load_full(),
                shared: shared.clone(),
            };
            match api(ctx, route, req).await {
                Ok(r) => r,
                Err(Failure::Client(r)) => {
                    bump(&shared.stats.client_errors);
                    *r
                }
                Err(Failure::Abort(e)) => return Err(e),
            }
        }
    };
    if let Ok(v) = HeaderValue::from_str(&format!("req_{:016x}", next_id())) {
        // Anthropic's own request-id header, besides the generic one every route gets.
        if family == Family::Anthropic {
            resp.headers_mut().insert("request-id", v.clone());
        }
        resp.headers_mut().insert("x-request-id", v);
    }
    Ok(resp)
}

async fn api(ctx: Ctx, route: Route, req: Request<Incoming>) -> Result<Response<SimBody>, Failure> {
    match route {
        Route::Api(endpoint, dialect) => {
            check_auth(&ctx.cfg, &dialect, req.headers())?;
            if let Dialect::Azure { .. } = dialect {
                check_api_version(req.uri())?;
            }
            match endpoint {
                Endpoint::Models => Ok(openai::models()),
                Endpoint::ChatCompletions => {
                    let body = read_body(req, Family::OpenAi).await?;
                    openai::chat(ctx, &dialect, body).await
                }
                Endpoint::Embeddings => {
                    let body = read_body(req, Family::OpenAi).await?;
                    openai::embeddings(ctx, &dialect, body).await
                }
            }
        }
        Route::Anthropic(endpoint) => {
            anthropic::check_headers(&ctx.cfg, req.headers())?;
            let body = read_body(req, Family::Anthropic).await?;
            match endpoint {
                AnthropicEndpoint::Messages => anthropic::messages(ctx, body).await,
                AnthropicEndpoint::CountTokens => anthropic::count_tokens(ctx, body),
            }
        }
        Route::Gemini(method, model) => {
            gemini::check_auth(&ctx.cfg, req.headers(), req.uri())?;
            let sse = query_param(req.uri(), "alt") == Some("sse");
            let body = read_body(req, Family::Google).await?;
            gemini::handle(ctx, method, &model, sse, body).await
        }
        Route::GeminiModels => {
            gemini::check_auth(&ctx.cfg, req.headers(), req.uri())?;
            Ok(gemini::models())
        }
        Route::Bedrock { model, stream } => {
            bedrock::check_auth(&ctx.cfg, req.headers())?;
            let body = read_body(req, Family::Bedrock).await?;
            bedrock::converse(ctx, &model, stream, body).await
        }
        Route::SimConfig
        | Route::SimStats
        | Route::SimStatsReset
        | Route::SimPromptCacheReset
        | Route::OtlpSink
        | Route::NotFound(_)
        | Route::MethodNotAllowed(_) => Err(Failure::Client(Box::new(
            Family::OpenAi.not_found(req.method().as_str(), req.uri().path()),
        ))),
    }
}

/// The first value of query parameter `name` (not percent-decoded: the values the simulator
/// reads are plain tokens).
pub(crate) fn query_param<'u>(uri: &'u Uri, name: &str) -> Option<&'u str> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

fn check_auth(cfg: &SimConfig, dialect: &Dialect, headers: &HeaderMap) -> Result<(), OpenAiError> {
    let Some(key) = cfg.api_key.as_deref() else {
        return Ok(());
    };
    let bearer = || bearer_token(headers);
    let api_key = || headers.get("api-key").and_then(|v| v.to_str().ok());
    // A plain comparison: this is a test double holding a throwaway key, not a secret store.
    let ok = match dialect {
        Dialect::OpenAi => bearer() == Some(key),
        // Classic Azure deployment paths take the key only in `api-key` (a key sent as a
        // Bearer token there would be treated as an Entra token and fail), so a gateway that
        // sends the wrong header is caught.
        Dialect::Azure { .. } => api_key() == Some(key),
        Dialect::AzureV1 => api_key() == Some(key) || bearer() == Some(key),
    };
    if ok {
        Ok(())
    } else {
        Err(OpenAiError::invalid_api_key())
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

fn check_api_version(uri: &Uri) -> Result<(), OpenAiError> {
    let present = uri.query().is_some_and(|q| {
        q.split('&').any(|kv| {
            kv.strip_prefix("api-version=")
                .is_some_and(|v| !v.is_empty())
        })
    });
    if present {
        Ok(())
    } else {
        Err(OpenAiError::invalid(
            "Missing required query parameter 'api-version'.",
            Some("api-version"),
        )
        .with_code("missing_required_parameter"))
    }
}

async fn read_body(req: Request<Incoming>, family: Family) -> Result<Bytes, Failure> {
    match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => {
            Err(Failure::Client(Box::new(family.too_large(MAX_BODY_BYTES))))
        }
        Err(e) => Err(Failure::Abort(SimError::Body(e))),
    }
}

/// `GET /_sim/config` returns the configuration; `POST` overlays a partial JSON object on it.
async fn control_config(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Response<SimBody>, SimError> {
    // Serialises concurrent updates so two scripts posting different fields both land.
    static UPDATE: Mutex<()> = Mutex::new(());
    if req.method() == Method::POST {
        let body = match read_body(req, Family::OpenAi).await {
            Ok(b) => b,
            Err(Failure::Client(r)) => return Ok(*r),
            Err(Failure::Abort(e)) => return Err(e),
        };
        let patch: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return Ok(OpenAiError::invalid_json().into_response()),
        };
        let result = {
            let _guard = UPDATE.lock().unwrap_or_else(|p| p.into_inner());
            let merged = shared.config.load().merged(&patch);
            if let Ok(cfg) = &merged {
                shared.set_config(cfg.clone());
            }
            merged
        };
        if let Err(e) = result {
            let param = match &e {
                ConfigUpdateError::NotAnObject => None,
                ConfigUpdateError::Invalid(_) => Some("config"),
            };
            return Ok(OpenAiError::invalid(e.to_string(), param).into_response());
        }
    }
    let cfg = shared.config.load();
    let body = serde_json::to_vec(&**cfg).unwrap_or_default();
    Ok(json_response(StatusCode::OK, body))
}

/// A fresh pseudo-random id (for `x-request-id`, `chatcmpl-…`): a per-process random-ish
/// seed mixed with a counter, so ids are unique within a run and differ between runs.
pub(crate) fn next_id() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id())
    });
    mix64(seed ^ mix64(COUNTER.fetch_add(1, Ordering::Relaxed)))
}

/// Unix seconds now (for `created`).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let p = |m: Method, path: &str| Route::parse(&m, path);
        assert_eq!(
            p(Method::POST, "/v1/chat/completions"),
            Route::Api(Endpoint::ChatCompletions, Dialect::OpenAi)
        );
        assert_eq!(
            p(Method::GET, "/v1/chat/completions"),
            Route::MethodNotAllowed(Family::OpenAi)
        );
        assert_eq!(
            p(Method::GET, "/v1/models"),
            Route::Api(Endpoint::Models, Dialect::OpenAi)
        );
        assert_eq!(
            p(Method::POST, "/openai/deployments/gpt-4o/chat/completions"),
            Route::Api(
                Endpoint::ChatCompletions,
                Dialect::Azure {
                    deployment: "gpt-4o".into()
                }
            )
        );
        assert_eq!(
            p(Method::POST, "/openai/deployments/e/embeddings"),
            Route::Api(
                Endpoint::Embeddings,
                Dialect::Azure {
                    deployment: "e".into()
                }
            )
        );
        assert_eq!(
            p(Method::POST, "/openai/deployments//chat/completions"),
            Route::NotFound(Family::OpenAi)
        );
        assert_eq!(
            p(Method::POST, "/openai/v1/embeddings"),
            Route::Api(Endpoint::Embeddings, Dialect::AzureV1)
        );
        let nf = Route::NotFound(Family::OpenAi);
        assert_eq!(p(Method::POST, "/v1/nope"), nf);
        assert_eq!(p(Method::POST, "/"), nf);
        assert_eq!(p(Method::POST, "/_sim/config"), Route::SimConfig);
        assert_eq!(
            p(Method::POST, "/_sim/stats"),
            Route::MethodNotAllowed(Family::OpenAi)
        );
        // OpenAI's model retrieval is not simulated and must not be taken for Gemini.
        assert_eq!(p(Method::GET, "/v1/models/gpt-4o"), nf);
    }

    #[test]
    fn anthropic_routes() {
        let p = |m: Method, path: &str| Route::parse(&m, path);
        assert_eq!(
            p(Method::POST, "/v1/messages"),
            Route::Anthropic(AnthropicEndpoint::Messages)
        );
        assert_eq!(
            p(Method::POST, "/v1/messages/count_tokens"),
            Route::Anthropic(AnthropicEndpoint::CountTokens)
        );
        assert_eq!(
            p(Method::GET, "/v1/messages"),
            Route::MethodNotAllowed(Family::Anthropic)
        );
        assert_eq!(
            p(Method::POST, "/v1/messages/batches"),
            Route::NotFound(Family::Anthropic)
        );
    }

    #[test]
    fn gemini_routes() {
        let p = |m: Method, path: &str| Route::parse(&m, path);
        let g = |m: GeminiMethod, model: &str| Route::Gemini(m, model.to_string());
        assert_eq!(
            p(
                Method::POST,
                "/v1beta/models/gemini-2.5-flash:generateContent"
            ),
            g(GeminiMethod::GenerateContent, "gemini-2.5-flash")
        );
        assert_eq!(
            p(
                Method::POST,
                "/v1beta/models/gemini-2.5-flash%3AstreamGenerateContent"
            ),
            g(GeminiMethod::StreamGenerateContent, "gemini-2.5-flash")
        );
        assert_eq!(
            p(Method::POST, "/v1/models/gemini-2.5-flash:embedContent"),
            g(GeminiMethod::EmbedContent, "gemini-2.5-flash")
        );
        assert_eq!(
            p(Method::POST, "/v1beta/models/e:batchEmbedContents"),
            g(GeminiMethod::BatchEmbedContents, "e")
        );
        assert_eq!(
            p(Method::POST, "/v1beta/models/e:countTokens"),
            g(GeminiMethod::CountTokens, "e")
        );
        assert_eq!(p(Method::GET, "/v1beta/models"), Route::GeminiModels);
        let nf = Route::NotFound(Family::Google);
        assert_eq!(p(Method::POST, "/v1beta/models/x:nope"), nf);
        assert_eq!(p(Method::POST, "/v1beta/models/:generateContent"), nf);
        assert_eq!(p(Method::POST, "/v1beta/models/x"), nf);
        assert_eq!(p(Method::POST, "/v1beta/other"), nf);
        assert_eq!(
            p(Method::GET, "/v1beta/models/x:generateContent"),
            Route::MethodNotAllowed(Family::Google)
        );
    }

    #[test]
    fn bedrock_routes() {
        let p = |m: Method, path: &str| Route::parse(&m, path);
        assert_eq!(
            p(
                Method::POST,
                "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
            ),
            Route::Bedrock {
                model: "anthropic.claude-3-5-sonnet-20240620-v1:0".into(),
                stream: false
            }
        );
        assert_eq!(
            p(
                Method::POST,
                "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x/converse-stream"
            ),
            Route::Bedrock {
                model: "arn:aws:bedrock:us-east-1:1:inference-profile/us.x".into(),
                stream: true
            }
        );
        let nf = Route::NotFound(Family::Bedrock);
        assert_eq!(p(Method::POST, "/model/x/invoke"), nf);
        assert_eq!(p(Method::POST, "/model//converse"), nf);
        assert_eq!(p(Method::POST, "/model/a/b/converse"), nf);
        assert_eq!(
            p(Method::GET, "/model/x/converse"),
            Route::MethodNotAllowed(Family::Bedrock)
        );
    }

    #[test]
    fn percent_decoding_never_fails() {
        assert_eq!(percent_decode("a%3Ab"), "a:b");
        assert_eq!(percent_decode("a%3ab%2F"), "a:b/");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("%FF"), "\u{fffd}");
    }

    #[test]
    fn query_params() {
        let u: Uri = "/x?alt=sse&key=k".parse().unwrap();
        assert_eq!(query_param(&u, "alt"), Some("sse"));
        assert_eq!(query_param(&u, "key"), Some("k"));
        assert_eq!(query_param(&u, "nope"), None);
        let u: Uri = "/x?alt".parse().unwrap();
        assert_eq!(query_param(&u, "alt"), Some(""));
    }

    #[test]
    fn api_version_required() {
        let u: Uri = "/x?api-version=2024-10-21".parse().unwrap();
        assert!(check_api_version(&u).is_ok());
        let u: Uri = "/x?foo=1&api-version=".parse().unwrap();
        assert!(check_api_version(&u).is_err());
        let u: Uri = "/x".parse().unwrap();
        assert!(check_api_version(&u).is_err());
    }
}
