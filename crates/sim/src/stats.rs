//! Counters the simulator keeps about itself ([`SimStats`]), readable through
//! [`crate::SimHandle::stats`] and `GET /_sim/stats`. Tests of the gateway compare these with
//! what the gateway recorded (attempts, retries, tokens).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// A snapshot of the simulator's counters. Control requests (`/_sim/…`) are not counted.
///
/// Absent fields deserialise as 0, so a client built against an older simulator still reads
/// a newer one's `/_sim/stats` and vice versa.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimStats {
    /// Every request on a non-control route, whatever its outcome.
    pub requests: u64,
    /// `POST …/chat/completions` (OpenAI and Azure paths).
    pub chat_completions: u64,
    /// `POST …/embeddings` (OpenAI and Azure paths).
    pub embeddings: u64,
    /// `GET …/models` (OpenAI and Azure paths).
    pub models: u64,
    /// `POST /v1/messages` (Anthropic).
    pub messages: u64,
    /// `POST /v1/messages/count_tokens` (Anthropic).
    pub messages_count_tokens: u64,
    /// `POST /v1beta/models/{model}:generateContent` (Gemini).
    pub generate_content: u64,
    /// `POST /v1beta/models/{model}:streamGenerateContent` (Gemini).
    pub stream_generate_content: u64,
    /// `POST /v1beta/models/{model}:embedContent` (Gemini).
    pub embed_content: u64,
    /// `POST /v1beta/models/{model}:batchEmbedContents` (Gemini).
    pub batch_embed_contents: u64,
    /// `POST /v1beta/models/{model}:countTokens` (Gemini).
    pub count_tokens: u64,
    /// `GET /v1beta/models` (Gemini).
    pub gemini_models: u64,
    /// `POST /model/{modelId}/converse` (Bedrock).
    pub converse: u64,
    /// `POST /model/{modelId}/converse-stream` (Bedrock).
    pub converse_stream: u64,
    /// Requests to routes that do not exist (or with the wrong method).
    pub unknown_routes: u64,
    /// OTLP/HTTP exports received on `/v1/traces` and `/v1/metrics` (the collector stand-in;
    /// not counted in `requests`).
    pub otlp_exports: u64,
    /// Requests refused with a 4xx before any answer: auth, validation, unknown route.
    pub client_errors: u64,
    /// Streamed answers started (cut ones included).
    pub streams: u64,
    /// Connections reset without a response.
    pub faults_reset: u64,
    /// Requests left hanging.
    pub faults_hang: u64,
    /// Requests answered with the `fail_status` error.
    pub faults_fail: u64,
    /// Streams cut mid-way.
    pub streams_cut: u64,
    /// Streams ended by an injected in-stream error event (`stream_error_rate`).
    pub streams_errored: u64,
    /// Requests refused with the content-policy answer (`content_filter_rate`).
    pub faults_content_filter: u64,
    /// Requests refused because the prompt exceeded `context_window`.
    pub context_window_exceeded: u64,
    /// Data-plane requests currently being served (a stream counts until its body ends or the
    /// client goes away).
    pub in_flight: u64,
    /// Prompt tokens of complete answers (not counting failed, hung, reset or cut requests),
    /// counted when the answer is produced, whether or not the client reads all of it.
    pub prompt_tokens: u64,
    /// Of `prompt_tokens`, those reported as read from the provider's cache (the
    /// `cached_prompt_tokens` knob capped at each prompt, or the `prompt_cache` knob's hits).
    pub cached_prompt_tokens: u64,
    /// Completion tokens of complete answers, as reported in their usage.
    pub completion_tokens: u64,
}

/// Live counters behind [`SimStats`].
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub requests: AtomicU64,
    pub chat_completions: AtomicU64,
    pub embeddings: AtomicU64,
    pub models: AtomicU64,
    pub messages: AtomicU64,
    pub messages_count_tokens: AtomicU64,
    pub generate_content: AtomicU64,
    pub stream_generate_content: AtomicU64,
    pub embed_content: AtomicU64,
    pub batch_embed_contents: AtomicU64,
    pub count_tokens: AtomicU64,
    pub gemini_models: AtomicU64,
    pub converse: AtomicU64,
    pub converse_stream: AtomicU64,
    pub unknown_routes: AtomicU64,
    pub otlp_exports: AtomicU64,
    pub client_errors: AtomicU64,
    pub streams: AtomicU64,
    pub faults_reset: AtomicU64,
    pub faults_hang: AtomicU64,
    pub faults_fail: AtomicU64,
    pub streams_cut: AtomicU64,
    pub streams_errored: AtomicU64,
    pub faults_content_filter: AtomicU64,
    pub context_window_exceeded: AtomicU64,
    pub in_flight: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub cached_prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
}

/// Relaxed everywhere: these are independent counters read for reporting, never used to
/// synchronise memory.
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Stats {
    pub(crate) fn snapshot(&self) -> SimStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SimStats {
            requests: g(&self.requests),
            chat_completions: g(&self.chat_completions),
            embeddings: g(&self.embeddings),
            models: g(&self.models),
            messages: g(&self.messages),
            messages_count_tokens: g(&self.messages_count_tokens),
            generate_content: g(&self.generate_content),
            stream_generate_content: g(&self.stream_generate_content),
            embed_content: g(&self.embed_content),
            batch_embed_contents: g(&self.batch_embed_contents),
            count_tokens: g(&self.count_tokens),
            gemini_models: g(&self.gemini_models),
            converse: g(&self.converse),
            converse_stream: g(&self.converse_stream),
            unknown_routes: g(&self.unknown_routes),
            otlp_exports: g(&self.otlp_exports),
            client_errors: g(&self.client_errors),
            streams: g(&self.streams),
            faults_reset: g(&self.faults_reset),
            faults_hang: g(&self.faults_hang),
            faults_fail: g(&self.faults_fail),
            streams_cut: g(&self.streams_cut),
            streams_errored: g(&self.streams_errored),
            faults_content_filter: g(&self.faults_content_filter),
            context_window_exceeded: g(&self.context_window_exceeded),
            in_flight: g(&self.in_flight),
            prompt_tokens: g(&self.prompt_tokens),
            cached_prompt_tokens: g(&self.cached_prompt_tokens),
            completion_tokens: g(&self.completion_tokens),
        }
    }
}

impl Stats {
    /// Zeroes every counter except `in_flight`, which tracks live requests rather than
    /// counting past ones.
    pub(crate) fn reset(&self) {
        for c in [
            &self.requests,
            &self.chat_completions,
            &self.embeddings,
            &self.models,
            &self.messages,
            &self.messages_count_tokens,
            &self.generate_content,
            &self.stream_generate_content,
            &self.embed_content,
            &self.batch_embed_contents,
            &self.count_tokens,
            &self.gemini_models,
            &self.converse,
            &self.converse_stream,
            &self.unknown_routes,
            &self.otlp_exports,
            &self.client_errors,
            &self.streams,
            &self.faults_reset,
            &self.faults_hang,
            &self.faults_fail,
            &self.streams_cut,
            &self.streams_errored,
            &self.faults_content_filter,
            &self.context_window_exceeded,
            &self.prompt_tokens,
            &self.cached_prompt_tokens,
            &self.completion_tokens,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// Counts one request as in flight for as long as it lives. Dropped when the handler future
/// finishes or is dropped (client gone), or — for streams — moved into the body and dropped
/// when the body ends, so hung and cut requests are accounted for correctly.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Stats>);

impl InFlight {
    pub(crate) fn new(stats: Arc<Stats>) -> Self {
        bump(&stats.in_flight);
        InFlight(stats)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
