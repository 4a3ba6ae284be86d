//! Stage 9c, the provider call of one attempt: the call an endpoint builds, made through the
//! candidate's adapter, with the answer checked against the shape that was asked for (once,
//! here, for every endpoint), and a stream held until its first meaningful item so it can
//! still fail over.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tollgate_providers::{
    ChatCall, ChatResponse, ChunkStream, EmbeddingsCall, EventStream, MessagesCall,
    MessagesResponse, UpstreamError,
};
use tollgate_types::{ApiError, ErrorCode, Usage};

use crate::stages::target::Candidate;

/// What one attempt asks of the provider.
pub(crate) enum Call {
    /// Canonical Chat Completions (every adapter).
    Chat(ChatCall),
    /// Native Anthropic Messages (adapters that speak it).
    Messages(MessagesCall),
    Embeddings(EmbeddingsCall),
}

/// A complete answer, in the shape of the call that produced it.
pub(crate) enum Reply {
    /// A canonical `chat.completion` body.
    Completion(Bytes),
    /// A native Anthropic Messages body.
    Message(Bytes),
    /// An OpenAI embeddings body.
    Embeddings(Bytes),
}

impl Reply {
    pub(crate) fn body(&self) -> &Bytes {
        match self {
            Reply::Completion(b) | Reply::Message(b) | Reply::Embeddings(b) => b,
        }
    }
}

pub(crate) struct Answer {
    pub(crate) reply: Reply,
    /// Provider-reported usage, `None` when the provider reported none.
    pub(crate) usage: Option<Usage>,
}

/// A stream that has started cleanly: canonical chunks, or native Anthropic events.
pub(crate) enum Started {
    Chunks(ChunkStream),
    Events(EventStream),
}

/// Why an attempt produced nothing to relay.
pub(crate) enum Miss {
    /// The provider failed; the dispatch rules decide whether another attempt follows.
    Upstream(UpstreamError),
    /// The answer cannot be used and retrying cannot help.
    Final(ApiError),
}

/// The provider answered in a shape other than the one asked for.
fn wrong_shape(cand: &Candidate, asked_stream: bool) -> Miss {
    let (asked, got) = if asked_stream {
        ("a streaming", "a complete answer")
    } else {
        ("a non-streaming", "a stream")
    };
    Miss::Final(ApiError::new(
        ErrorCode::UpstreamError,
        format!(
            "provider '{}' answered {asked} request with {got}",
            cand.deployment.provider_name
        ),
    ))
}

fn not_native(cand: &Candidate) -> Miss {
    Miss::Final(ApiError::internal(format!(
        "provider '{}' was sent a native Messages call it does not serve",
        cand.deployment.provider_name
    )))
}

/// Makes a non-streaming call.
pub(crate) async fn complete(cand: &Candidate, call: Call) -> Result<Answer, Miss> {
    let provider = &cand.deployment.provider;
    match call {
        Call::Chat(c) => match provider.chat(c).await {
            Ok(ChatResponse::Complete(c)) => Ok(Answer {
                reply: Reply::Completion(c.body),
                usage: c.usage,
            }),
            Ok(ChatResponse::Stream { .. }) => Err(wrong_shape(cand, false)),
            Err(e) => Err(Miss::Upstream(e)),
        },
        Call::Messages(c) => match provider.messages(c) {
            None => Err(not_native(cand)),
            Some(fut) => match fut.await {
                Ok(MessagesResponse::Complete(c)) => Ok(Answer {
                    reply: Reply::Message(c.body),
                    usage: c.usage,
                }),
                Ok(MessagesResponse::Stream { .. }) => Err(wrong_shape(cand, false)),
                Err(e) => Err(Miss::Upstream(e)),
            },
        },
        Call::Embeddings(c) => match provider.embeddings(c).await {
            Ok(c) => Ok(Answer {
                reply: Reply::Embeddings(c.body),
                usage: c.usage,
            }),
            Err(e) => Err(Miss::Upstream(e)),
        },
    }
}

/// Makes a streaming call and holds it until it has produced something the client must see
/// ([`start`]).
pub(crate) async fn stream(cand: &Candidate, call: Call) -> Result<Started, Miss> {
    let provider = &cand.deployment.provider;
    let started = match call {
        Call::Chat(c) => match provider.chat(c).await {
            Ok(ChatResponse::Stream { chunks, .. }) => {
                start(chunks, chunk_is_preamble).await.map(Started::Chunks)
            }
            Ok(ChatResponse::Complete(_)) => return Err(wrong_shape(cand, true)),
            Err(e) => Err(e),
        },
        Call::Messages(c) => match provider.messages(c) {
            None => return Err(not_native(cand)),
            Some(fut) => match fut.await {
                Ok(MessagesResponse::Stream { events, .. }) => {
                    start(events, event_is_preamble).await.map(Started::Events)
                }
                Ok(MessagesResponse::Complete(_)) => return Err(wrong_shape(cand, true)),
                Err(e) => Err(e),
            },
        },
        // Embeddings never stream; asking is a bug in the endpoint.
        Call::Embeddings(_) => {
            return Err(Miss::Final(ApiError::internal(
                "an embeddings call was made as a stream",
            )));
        }
    };
    started.map_err(Miss::Upstream)
}

/// Most items a stream's preamble may hold back (a provider sending more content-free
/// items than this is relayed anyway).
const MAX_PREAMBLE: usize = 16;

type Boxed<T> = std::pin::Pin<Box<dyn Stream<Item = Result<T, UpstreamError>> + Send>>;

/// Waits until a stream has produced something the client must see — content, a tool call,
/// a finish, usage — holding back the content-free preamble before it (OpenAI's role-only
/// chunk, Anthropic's `message_start` and `ping`). `Ok` with the stream restored (held items
/// first) when it started cleanly; `Err` when the upstream failed before that: the moment up
/// to which a stream can still fail over without the client noticing (Anthropic's in-stream
/// `overloaded_error` typically arrives right after `message_start`).
async fn start<T, S>(mut stream: S, is_preamble: fn(&T) -> bool) -> Result<Boxed<T>, UpstreamError>
where
    T: Send + 'static,
    S: Stream<Item = Result<T, UpstreamError>> + Send + Unpin + 'static,
{
    let mut held = Vec::new();
    loop {
        match stream.next().await {
            Some(Err(e)) => return Err(e),
            Some(Ok(item)) => {
                let preamble = is_preamble(&item);
                held.push(Ok(item));
                if !preamble || held.len() >= MAX_PREAMBLE {
                    break;
                }
            }
            None => break,
        }
    }
    Ok(Box::pin(futures_util::stream::iter(held).chain(stream)))
}

/// An OpenAI chunk carrying nothing the client needs yet: no content, refusal, reasoning,
/// tool call, finish reason, usage or error (the role-only opening chunk).
fn chunk_is_preamble(raw: &Bytes) -> bool {
    let Ok(p) = serde_json::from_slice::<tollgate_types::canonical::ChunkPeek<'_>>(raw) else {
        return false;
    };
    p.usage.is_none()
        && p.error.is_none()
        && p.choices.iter().flatten().all(|c| {
            c.finish_reason.is_none()
                && c.delta.as_ref().is_none_or(|d| {
                    d.content.as_deref().is_none_or(str::is_empty)
                        && d.refusal.is_none()
                        && d.reasoning_content.as_deref().is_none_or(str::is_empty)
                        && d.tool_calls.is_none()
                })
        })
}

/// An Anthropic event before the first content: `message_start` and `ping`.
fn event_is_preamble(e: &tollgate_providers::sse::Event) -> bool {
    matches!(e.event.as_deref(), Some("message_start" | "ping"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err() -> UpstreamError {
        UpstreamError {
            provider: "p".into(),
            kind: tollgate_providers::UpstreamErrorKind::InStream {
                message: "overloaded".into(),
                body: bytes::Bytes::new(),
            },
        }
    }

    #[tokio::test]
    async fn a_failure_after_only_the_preamble_can_still_fail_over() {
        let role = bytes::Bytes::from_static(
            br#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
        );
        let text =
            bytes::Bytes::from_static(br#"{"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#);
        assert!(chunk_is_preamble(&role));
        assert!(!chunk_is_preamble(&text));
        // Role chunk, then an error: nothing the client needs was produced — fail over.
        let s = futures_util::stream::iter(vec![Ok(role.clone()), Err(err())]);
        assert!(start(s, chunk_is_preamble).await.is_err());
        // Role chunk, content, then an error: started; every item is relayed in order.
        let s = futures_util::stream::iter(vec![Ok(role.clone()), Ok(text.clone()), Err(err())]);
        let out: Vec<_> = start(s, chunk_is_preamble).await.unwrap().collect().await;
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].as_ref().unwrap(), &role);
        assert_eq!(out[1].as_ref().unwrap(), &text);
        assert!(out[2].is_err());
        // An empty stream starts (and ends) cleanly.
        let s = futures_util::stream::iter(Vec::<Result<bytes::Bytes, UpstreamError>>::new());
        assert!(start(s, chunk_is_preamble).await.is_ok());
    }
}
