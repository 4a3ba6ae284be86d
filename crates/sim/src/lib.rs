//! `tollgate-sim`: the built-in simulated upstream provider.
//!
//! A real HTTP server (hyper 1; HTTP/1.1 and HTTP/2 cleartext on one port) that speaks the
//! OpenAI wire format, used by the gateway's integration tests (in-process on
//! `127.0.0.1:0`), by `tollgate demo`, by benchmarks, and by `tollgate mock-provider --listen
//! ADDR`. It is built to never be the bottleneck of a benchmark: no per-request allocation
//! beyond the JSON it must produce, no locks on the request path.
//!
//! # Routes
//!
//! | route | notes |
//! |---|---|
//! | `POST /v1/chat/completions` | plain and `stream: true` (SSE) |
//! | `POST /v1/embeddings` | `input` string / strings / token ids; `dimensions`; `encoding_format: float \| base64` |
//! | `GET /v1/models` | a fixed list (gpt-4o, gpt-4o-mini, gpt-4.1, gpt-4.1-mini, text-embedding-3-small/-large) |
//! | `POST /openai/deployments/{deployment}/chat/completions?api-version=…` | Azure: `api-key` header, `api-version` required, the deployment is the model |
//! | `POST /openai/deployments/{deployment}/embeddings?api-version=…` | same |
//! | `/openai/v1/{chat/completions, embeddings, models}` | Azure v1 surface: `api-key` or Bearer, model from the body |
//! | `GET /_sim/stats` | [`SimStats`] as JSON |
//! | `GET /_sim/config`, `POST /_sim/config` | read, or partially update, the knobs (JSON fields of [`SimConfig`]; absent fields keep their value; unknown fields are a 400) |
//!
//! Anything else is a 404 (405 for a known path with the wrong method) with an OpenAI error
//! body. The control routes are unauthenticated: bind the simulator to a loopback address.
//!
//! # Knobs ([`SimConfig`]; CLI flag `--ttft-ms` etc., JSON field `ttft_ms` etc.)
//!
//! | knob | default | effect |
//! |---|---|---|
//! | `ttft_ms` | 0 | delay before the response headers (streams: before the first chunk), also applied to injected failures |
//! | `chunk_delay_ms` | 0 | delay between stream chunks |
//! | `chunks` | 0 | number of content chunks per streamed answer (per tool call for arguments); 0 = one chunk per token |
//! | `completion_tokens` | 16 | answer length in tokens when the request sets no `max_completion_tokens`/`max_tokens`; with one, the length is the smaller of the two |
//! | `fail_rate` | 0 | share of requests answered with `fail_status` and an OpenAI error body |
//! | `fail_status` | 500 | status of injected failures: 5xx → `type: server_error`; 429 → `type: rate_limit_error`, `code: rate_limit_exceeded` |
//! | `retry_after_secs` | none | `Retry-After` header on injected 429/503 |
//! | `hang_rate` | 0 | share of requests never answered (until the client disconnects) |
//! | `reset_rate` | 0 | share of requests whose connection is dropped with no response |
//! | `cut_rate` | 0 | share of streams cut after about half their frames: no finish chunk, no usage, no `[DONE]`, then the connection is aborted |
//! | `stream_usage` | true | when false, streams never carry the usage chunk even if `stream_options.include_usage` asks for it |
//! | `api_key` | none | when set, requests need `Authorization: Bearer <key>` (`api-key: <key>` on Azure deployment paths); otherwise 401 `invalid_api_key` |
//!
//! Faults apply to chat completions and embeddings that passed auth and validation (never to
//! `/v1/models` or control routes), and are exact rather than random: the `k`-th request
//! evaluated for a kind (0-based, one counter per kind) is faulted iff
//! `floor((k+1)·rate) > floor(k·rate)`, so `fail_rate: 0.3` fails exactly 3 of the first 10
//! requests (the 4th, 7th and 10th). Kinds are evaluated in the order reset, hang, fail, then
//! cut (streams only); a request taken by one kind is not counted by the later ones.
//! Replacing the configuration (either way) restarts the sequences. A failure is sent after
//! `ttft_ms`; a reset happens at once; a hung request ends when the client disconnects or the
//! simulator shuts down.
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
//! - **Deterministic**: words come from a fixed 128-word vocabulary, seeded by an FNV-1a hash
//!   of the messages (and the choice index when `n > 1`). Every word is one token in
//!   `o200k_base` and `cl100k_base`, so a text answer of `k` words is exactly `k` tokens.
//! - **Usage matches content**: `prompt_tokens` is
//!   [`count_chat_prompt`](tollgate_metering::tokens::count_chat_prompt) with the model's
//!   encoding (`o200k_base` for unknown models); `completion_tokens` is the token count of
//!   what the choices contain (summed over `n`), including tool-call argument text and JSON
//!   answers; `finish_reason` is `length` when the request's max cut the answer.
//!   `prompt_tokens_details.cached_tokens` and `completion_tokens_details.reasoning_tokens`
//!   are 0. Embeddings use
//!   [`count_embedding_input`](tollgate_metering::tokens::count_embedding_input).
//! - **Tools**: with function `tools`, `tool_choice` not `none` and a last message from the
//!   `user`, the answer is tool calls (`content: null`, `finish_reason: tool_calls`): the tool
//!   named by `tool_choice`; else every tool the last user message mentions by name when it
//!   mentions two or more and `parallel_tool_calls` is not false; else the first tool.
//!   Arguments fill each `required` property with a value of its type (string → a word,
//!   number/integer → 1, boolean → true, object → filled likewise, array → `[]`, enum → its
//!   first value, else null). After a `tool` message, the answer is text.
//! - `response_format: json_object` → `{"answer":"<words>"}`; `json_schema` → the schema's
//!   required properties filled as above. `logprobs`/`top_logprobs`, `n`, `seed` (accepted,
//!   ignored) and `system_fingerprint: "fp_sim"` are supported; `model` is echoed as sent.
//! - **Streams** follow OpenAI's framing exactly: a role chunk (`content: ""`, or
//!   `content: null` plus the first tool-call header), content or argument chunks, a chunk
//!   with `delta: {}` and the `finish_reason`, then — only with
//!   `stream_options.include_usage` — a `choices: []` chunk with the usage (and every
//!   earlier chunk carries `"usage": null`), then `data: [DONE]`.

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
mod router;
mod server;
mod stats;

pub use config::{ConfigUpdateError, SimConfig};
pub use server::{SimHandle, run, spawn};
pub use stats::SimStats;
