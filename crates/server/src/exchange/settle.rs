//! Stage 11, settlement: usage and cost into the row, the attempt reported to its deployment's
//! breaker and EWMAs. Recording the row — which settles the budget reservation and the
//! rate-limit hold — is [`super::row::PendingRow`]'s.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use tollgate_metering::Settlement;
use tollgate_router::{Attempt, Failure};
use tollgate_tokens::{self as tokens, Encoding};
use tollgate_types::canonical::ResponsePeek;
use tollgate_types::{ErrorCode, ErrorOrigin, Outcome, PolicyAction, Usage, UsageSource};

use crate::exchange::row::{PendingRow, client_closed};
use crate::exchange::upstream::Reply;
use crate::stages::budget::Shape;
use crate::stages::target::Candidate;

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Usage counted locally for a complete answer that came without any (flagged `estimated`,
/// never zero): the prompt counted with the deployment's tokenizer — or the embeddings input —
/// and the answer's generated text.
pub(crate) fn local_usage(
    shape: Shape,
    cand: &Candidate,
    request: &Map<String, Value>,
    reply: &Reply,
) -> Usage {
    let prompt = prompt_usage(shape, cand, request);
    match shape {
        Shape::Embeddings => prompt,
        Shape::Chat => Usage {
            output_tokens: Encoding::for_model(&cand.deployment.model).count(&output_text(reply)),
            ..prompt
        },
    }
}

/// The prompt alone, counted locally: what a provider bills at least for a call it received
/// and then did not answer in time.
pub(crate) fn prompt_usage(shape: Shape, cand: &Candidate, request: &Map<String, Value>) -> Usage {
    let enc = Encoding::for_model(&cand.deployment.model);
    let input_tokens = match shape {
        Shape::Embeddings => {
            tokens::count_embedding_input(enc, request.get("input").unwrap_or(&Value::Null))
        }
        Shape::Chat => tokens::count_chat_prompt_map(enc, request),
    };
    Usage {
        input_tokens,
        ..Usage::default()
    }
}

/// The generated text of a complete answer.
fn output_text(reply: &Reply) -> String {
    match reply {
        Reply::Completion(b) => serde_json::from_slice::<ResponsePeek>(b)
            .map(|p| p.output_text())
            .unwrap_or_default(),
        Reply::Message(b) => message_text(b),
        Reply::Embeddings(_) => String::new(),
    }
}

/// The generated text of an Anthropic Messages body: text and thinking blocks, and tool
/// inputs as their JSON.
fn message_text(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return String::new();
    };
    v.get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|b| match b.get("type").and_then(Value::as_str) {
            Some("tool_use") => b.get("input").map(Value::to_string).unwrap_or_default(),
            Some("thinking") => b
                .get("thinking")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            _ => b
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        })
        .collect()
}

/// Settles a complete (non-streaming) answer into the row: usage, cost, latency to the
/// answer, and `cancelled` when the client left before it arrived.
pub(crate) fn complete(
    rec: &mut PendingRow,
    cand: &Candidate,
    usage: Usage,
    source: UsageSource,
    gone: &AtomicBool,
) {
    let started = rec.started();
    let row = rec.row();
    cand.bill(row, usage, source);
    row.ttft_us = Some(micros(started.elapsed()));
    if gone.load(Ordering::Acquire) {
        client_closed(row);
    } else {
        row.status = 200;
        row.outcome = Outcome::Ok;
    }
}

/// Tells a streamed attempt's breaker how the stream went: served (with its time to first
/// chunk and total time), failed upstream, or neither (cancelled by the client or a cap).
pub(crate) fn report_stream(attempt: Attempt, s: &Settlement, t0: Instant) {
    let now = Instant::now();
    match (s.outcome, &s.error) {
        (Outcome::Ok, _) => attempt.success(
            s.first_byte_at.map(|t| t.saturating_duration_since(t0)),
            now.saturating_duration_since(t0),
            now,
        ),
        (Outcome::Failed, Some(e)) if e.code.origin() == ErrorOrigin::Upstream => {
            attempt.failure(Failure::Transient, now)
        }
        _ => drop(attempt),
    }
}

/// Settles a finished, failed or abandoned stream into its row and records it.
pub(crate) fn stream(
    mut rec: PendingRow,
    cand: &Candidate,
    s: &Settlement,
    cut: &CancellationToken,
) {
    let started = rec.started();
    let row = rec.row();
    cand.bill(row, s.usage, s.usage_source);
    row.outcome = s.outcome;
    if s.cut_at_cap {
        row.policy_actions.push(PolicyAction::StreamCutAtCap);
    }
    row.ttft_us = s
        .first_byte_at
        .map(|t| micros(t.saturating_duration_since(started)));
    let code = match (&s.error, s.outcome) {
        (Some(e), _) => Some(e.code),
        (None, Outcome::Cancelled) if cut.is_cancelled() => Some(ErrorCode::ShuttingDown),
        (None, Outcome::Cancelled) => Some(ErrorCode::ClientClosedRequest),
        _ => None,
    };
    if let Some(code) = code {
        row.error_code = Some(code.as_str().into());
        row.error_origin = Some(code.origin().as_str().into());
    }
    rec.finish();
}
