//! `tollgate-sim`: the built-in simulated upstream provider.
//!
//! A real HTTP server (hyper 1; HTTP/1.1 and HTTP/2 cleartext on one port) that speaks the
//! OpenAI (and Azure OpenAI), Anthropic Messages, Gemini and Bedrock Converse wire formats,
//! used by the gateway's integration tests (in-process on `127.0.0.1:0`), by `tollgate demo`,
//! by benchmarks, and by `tollgate mock-provider --listen ADDR`. It is built to never be the
//! bottleneck of a benchmark: no per-request allocation beyond the JSON it must produce, no
//! locks on the request path.
//!
//! # Routes
//!
//! | route | notes |
//! |---|---|
//! | `POST /v1/chat/completions` | OpenAI; plain and `stream: true` (SSE) |
//! | `POST /v1/embeddings` | OpenAI; `input` string / strings / token ids; `dimensions`; `encoding_format: float \| base64` |
//! | `GET /v1/models` | OpenAI; a fixed list (gpt-4o, gpt-4o-mini, gpt-4.1, gpt-4.1-mini, text-embedding-3-small/-large) |
//! | `POST /openai/deployments/{deployment}/chat/completions?api-version=…` | Azure: `api-key` header, `api-version` required, the deployment is the model |
//! | `POST /openai/deployments/{deployment}/embeddings?api-version=…` | same |
//! | `/openai/v1/{chat/completions, embeddings, models}` | Azure v1 surface: `api-key` or Bearer, model from the body |
//! | `POST /v1/messages` | Anthropic Messages; plain and `stream: true` (SSE with named events); `anthropic-version` required |
//! | `POST /v1/messages/count_tokens` | Anthropic; `{"input_tokens"}` as `/v1/messages` would report it (cached included) |
//! | `POST /v1beta/models/{model}:generateContent` | Gemini (also under `/v1/`; the colon may be sent as `%3A`) |
//! | `POST /v1beta/models/{model}:streamGenerateContent` | Gemini; `?alt=sse` → data-only SSE, otherwise one streamed JSON array |
//! | `POST /v1beta/models/{model}:embedContent`, `:batchEmbedContents` | Gemini embeddings (`outputDimensionality`, default 8) |
//! | `POST /v1beta/models/{model}:countTokens` | Gemini; `{"totalTokens"}` = the `promptTokenCount` generateContent would report |
//! | `GET /v1beta/models` | Gemini; a fixed list |
//! | `POST /model/{modelId}/converse` | Bedrock Converse; model id percent-encoded (`…-v1%3A0`) |
//! | `POST /model/{modelId}/converse-stream` | Bedrock ConverseStream: `application/vnd.amazon.eventstream` binary frames |
//! | `POST /v1/traces`, `POST /v1/metrics` | an OTLP/HTTP sink: accepts and discards exports, counted in `otlp_exports` (so a gateway's `telemetry` can point here in benchmarks and the demo) |
//! | `GET /_sim/stats` | [`SimStats`] as JSON: `requests` (every request that reached a non-control route, failed ones included), one counter per route, fault counters |
//! | `POST /_sim/stats/reset` | zeroes every counter but `in_flight` and returns the zeroed stats; changing the configuration does **not** reset them ([`SimHandle::reset_stats`] does the same in-process) |
//! | `POST /_sim/prompt_cache/reset` | empties the `prompt_cache` knob's memory (as if every prompt had expired) and returns `{"cleared": N}` prefixes; [`SimHandle::clear_prompt_cache`] does the same in-process |
//! | `GET /_sim/config`, `POST /_sim/config` | read, or partially update, the knobs (JSON fields of [`SimConfig`]; absent fields keep their value; unknown fields are a 400) |
//!
//! Anything else is a 404 (405 for a known path with the wrong method) in the error shape of
//! the family the path belongs to (`/v1/messages…` Anthropic, `/v1beta/…` Google, `/model/…`
//! Bedrock, else OpenAI). The control routes are unauthenticated: bind the simulator to a
//! loopback address. Each format's module documents its headers, validation rules, usage
//! formula and stream framing: `openai`, `anthropic`, `gemini`, `bedrock` (private modules;
//! see their `//!` docs in the source).
//!
//! # Knobs ([`SimConfig`]; CLI flag `--ttft-ms` etc., JSON field `ttft_ms` etc.)
//!
//! | knob | default | effect |
//! |---|---|---|
//! | `ttft_ms` | 0 | delay before the response headers (streams: before the first chunk), also applied to injected failures |
//! | `chunk_delay_ms` | 0 | delay between stream chunks / events / frames |
//! | `chunks` | 0 | number of content chunks per streamed answer (per tool call for arguments); 0 = one chunk per token |
//! | `completion_tokens` | 16 | answer length in tokens when the request sets no max (`max_completion_tokens`/`max_tokens`, Anthropic `max_tokens`, Gemini `maxOutputTokens`, Bedrock `inferenceConfig.maxTokens`); with one, the length is the smaller of the two |
//! | `ignore_max_tokens` | false | the request's max (any of the above) is not honoured: every answer — text, JSON or tool-call arguments, plain or streamed, in every format — is sent whole (`completion_tokens` long for text; stop sequences still apply), ends with the stop reason of an answer that finished by itself (OpenAI `stop`/`tool_calls`, Anthropic `end_turn`/`tool_use`, Gemini `STOP`, Bedrock `end_turn`/`tool_use`) and reports the whole answer in usage. An upstream that overruns `max_tokens`: with `completion_tokens` above a request's max, a stream passes its output cap, so the gateway's live cut at the budget's cap is what ends it. CLI `--ignore-max-tokens`; at run time `POST /_sim/config {"ignore_max_tokens": true}` |
//! | `cached_prompt_tokens` | 0 | that many prompt tokens (capped at the prompt) are reported as read from the provider's cache, each format with its own semantics: OpenAI `prompt_tokens_details.cached_tokens` and Gemini `cachedContentTokenCount` are **included** in `prompt_tokens`/`promptTokenCount`; Anthropic `cache_read_input_tokens` and Bedrock `cacheReadInputTokens` are **excluded** from `input_tokens`/`inputTokens` |
//! | `prompt_cache` | false | simulate the provider's automatic prompt cache, per simulator instance (so two instances are two deployments that do not share a cache): each generation request reports as cached the longest prefix of its prompt that an earlier request *to the same model on this simulator* sent within `prompt_cache_ttl_secs` — prefixes taken at message boundaries (the leading block of tools and, in Anthropic, Gemini and Bedrock, the system prompt; then each message/turn), rounded down to a multiple of 128 tokens and only from 1,024 tokens (OpenAI's documented rules) — in the same fields and with the same semantics as `cached_prompt_tokens`. A follow-up turn that extends an earlier prompt therefore reports the earlier prompt's message tokens as cached. At most 10,000 prefixes are remembered (least recently used evicted first); changing the configuration does not empty it (`POST /_sim/prompt_cache/reset` does). **When on, it replaces `cached_prompt_tokens`**, which is then ignored |
//! | `prompt_cache_ttl_secs` | 300 | how long a prefix stays cached after the last request that sent it (each use renews it); 0 = nothing is ever cached |
//! | `fail_rate` | 0 | share of requests answered with `fail_status` and the route's error body |
//! | `fail_status` | 500 | status of injected failures, typed per format: OpenAI 5xx `server_error`, 429 `rate_limit_error`/`rate_limit_exceeded`; Anthropic 529 `overloaded_error`, 429 `rate_limit_error`, 504 `timeout_error`, 5xx `api_error`; Google 429 `RESOURCE_EXHAUSTED`, 503 `UNAVAILABLE`, 500 `INTERNAL`; Bedrock 429 `ThrottlingException`, 503 `ServiceUnavailableException`, 500 `InternalServerException` |
//! | `retry_after_secs` | none | on injected 429/503 (and Anthropic 529): the `Retry-After` header (OpenAI, Anthropic), a `RetryInfo.retryDelay` detail (Google); Bedrock sends neither, as AWS does |
//! | `hang_rate` | 0 | share of requests never answered (until the client disconnects) |
//! | `reset_rate` | 0 | share of requests whose connection is dropped with no response |
//! | `cut_rate` | 0 | share of streams cut after about half their frames and before anything that marks the answer complete (OpenAI finish chunk, usage and `[DONE]`; Anthropic `message_delta`/`message_stop`; Gemini `finishReason`; Bedrock `messageStop`/`metadata`), then the connection is aborted |
//! | `context_window` | none | a generation request whose prompt tokens (as reported in usage) exceed it is refused with the format's real context-length error: OpenAI/Azure 400 `context_length_exceeded`; Anthropic 400 `invalid_request_error` "prompt is too long: N tokens > M maximum"; Gemini 400 `INVALID_ARGUMENT` "The input token count (N) exceeds the maximum number of tokens allowed (M)."; Bedrock 400 `ValidationException` "…Input is too long for requested model." Checked before every other fault, and does not advance their sequences |
//! | `content_filter_rate` | 0 | share of generation requests refused under content policy: OpenAI 400 `invalid_prompt`; Azure 400 `content_filter` with `innererror.code: ResponsibleAIPolicyViolation`; Anthropic 400 "Output blocked by content filtering policy"; Gemini HTTP 200 with no candidates and `promptFeedback.blockReason: SAFETY` (plain, SSE or array); Bedrock 400 `ValidationException` "…Output blocked by content filtering policy" |
//! | `stream_error_rate` | 0 | share of streams (not cut) that answer 200 and end with the format's in-stream error: OpenAI `data: {"error":{…"server_error"…}}` without `[DONE]`; Anthropic `event: error` `overloaded_error`; Gemini a `{"error":{"code":503,…"UNAVAILABLE"}}` element; Bedrock an exception frame `serviceUnavailableException`. Usage is not counted |
//! | `stream_error_after_chunks` | 0 | content chunks sent before that error, after the format's preamble (OpenAI role chunk, Anthropic `message_start`/`content_block_start`/`ping`, Bedrock `messageStart`); 0 = the error is the first thing in the body |
//! | `stall_after_chunks` | none | every stream sends its preamble and this many content chunks, then nothing more and never ends (an upstream hanging mid-answer); its usage is not counted |
//! | `fail_first` | 0 | the next N faultable requests after the configuration is set (by `--fail-first`, [`SimHandle::set_config`] or `POST /_sim/config`, which re-arms it) fail with `fail_status` and `retry_after_secs`, then requests succeed; taken before any rate |
//! | `stream_usage` | true | when false, OpenAI streams never carry the usage chunk even if `stream_options.include_usage` asks for it |
//! | `api_key` | none | when set, requests need it in their format's header: `Authorization: Bearer` (OpenAI), `api-key` (Azure deployments; v1 also Bearer), `x-api-key` (Anthropic; 401 `authentication_error`), `x-goog-api-key` or `?key=` (Gemini; 403 `PERMISSION_DENIED` when absent, 400 `API_KEY_INVALID` when wrong); Bedrock requires some `Authorization` (SigV4 is not verified) and checks only Bearer API keys against it |
//!
//! Faults apply to generation and embeddings requests that passed auth and validation, in
//! every format (never to model lists, token counting or control routes), and are exact
//! rather than random: the `k`-th request evaluated for a kind (0-based, one counter per
//! kind, shared by all formats) is faulted iff `floor((k+1)·rate) > floor(k·rate)`, so
//! `fail_rate: 0.3` fails exactly 3 of the first 10 requests (the 4th, 7th and 10th). The
//! `context_window` check comes first, then `fail_first`; kinds are then evaluated in the
//! order reset, hang, fail, content filter (generation only), then cut and stream error
//! (streams only); a request taken by one kind is not counted by the later ones. Replacing the configuration (either way)
//! restarts the sequences. A failure is sent after `ttft_ms` (before any stream byte: a plain
//! error response); a reset happens at once; a hung request ends when the client disconnects
//! or the simulator shuts down.
//!
//! # Running it
//!
//! In-process: [`spawn`] on `127.0.0.1:0`, then [`SimHandle::base_url`],
//! [`SimHandle::set_config`], [`SimHandle::stats`], [`SimHandle::shutdown`] (dropping the
//! handle also stops the server). Standalone: [`run`] with a listener and a shutdown future
//! (what `tollgate mock-provider` does; see `examples/mock_provider.rs`). Shutdown stops
//! accepting, closes idle connections, and gives in-flight responses up to one second.
//!
//! # Answers
//!
//! Every format shares one content engine (`plan`): a request is parsed into a
//! provider-neutral ask, the answer is planned once as token pieces, then rendered in the
//! format's framing, so streamed and plain answers agree and usage is exact.
//!
//! - **Deterministic**: words come from a fixed 128-word vocabulary, seeded by an FNV-1a hash
//!   of the conversation (and the choice/candidate index when `n`/`candidateCount` > 1).
//!   Every word is one token in `o200k_base` and `cl100k_base`, so a text answer of `k` words
//!   is exactly `k` tokens.
//! - **Usage matches content**: completion/output tokens are the token count (model's
//!   encoding, `o200k_base` for unknown models such as Claude and Gemini) of exactly what the
//!   answer contains, including tool-call argument JSON and JSON answers; the stop reason says
//!   when the request's max cut the answer. Prompt tokens use
//!   [`count_chat_prompt`](tollgate_tokens::count_chat_prompt) (OpenAI; Anthropic
//!   adds `system`) or the same per-turn accounting over parts (Gemini, Bedrock).
//!   Embeddings use
//!   [`count_embedding_input`](tollgate_tokens::count_embedding_input).
//! - **Tools**: with function tools, a tool choice other than none and a last turn where the
//!   user asks (not one carrying tool results), the answer is tool calls: the named tool;
//!   else every tool the last user turn mentions by name when it mentions two or more and
//!   parallel calls are allowed; else the first tool. Arguments fill each `required`
//!   property with a value of its type (string → a word, number/integer → 1, boolean →
//!   true, object → filled likewise, array → `[]`, enum → its first value, else null; type
//!   names in any case). After a tool result, the answer is text.
//! - **Stop sequences** (`stop`, `stop_sequences`, `stopSequences`) end a text answer just
//!   before the earliest match (Anthropic `stop_sequence`, Bedrock `stop_sequence`, OpenAI and
//!   Gemini a plain stop).
//! - **JSON**: OpenAI `response_format: json_object`, Gemini `responseMimeType:
//!   application/json` → `{"answer":"<words>"}`; a schema (`json_schema`, Anthropic
//!   `output_config.format`, Gemini `responseSchema`/`responseJsonSchema`) → its required
//!   properties filled as above. OpenAI `logprobs`/`top_logprobs`, `n`, `seed` (accepted,
//!   ignored) and `system_fingerprint: "fp_sim"` are supported; `model` is echoed as sent.
//! - **OpenAI streams** follow OpenAI's framing exactly: a role chunk (`content: ""`, or
//!   `content: null` plus the first tool-call header), content or argument chunks, a chunk
//!   with `delta: {}` and the `finish_reason`, then — only with
//!   `stream_options.include_usage` — a `choices: []` chunk with the usage (and every
//!   earlier chunk carries `"usage": null`), then `data: [DONE]`. The other formats' stream
//!   framings are documented in their modules.

mod anthropic;
mod bedrock;
mod config;
mod content;
mod error;
mod faults;
mod gemini;
mod http;
mod openai;
mod plan;
mod prompt_cache;
mod router;
mod server;
mod stats;

pub use config::{ConfigUpdateError, SimConfig};
pub use server::{SimHandle, run, spawn};
pub use stats::SimStats;
