//! Reading the canonical wire format: OpenAI Chat Completions JSON.
//!
//! Every provider adapter answers in this format (OpenAI-family upstreams natively, others by
//! translation), so the metering and ledger stages only ever read one shape. These are *peek*
//! structs: they borrow the few fields Tollgate needs and ignore the rest, so a chunk is never
//! re-serialised on its way to the client.

use serde::Deserialize;

use crate::Usage;

/// The `usage` object of a chat completion, chunk or embeddings response.
#[derive(Debug, Default, Deserialize)]
pub struct WireUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    pub completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PromptDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
    #[serde(default)]
    pub cache_write_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CompletionDetails {
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

impl WireUsage {
    /// OpenAI semantics are already canonical: cached ⊆ prompt, reasoning ⊆ completion.
    pub fn to_usage(&self) -> Usage {
        let pd = self.prompt_tokens_details.as_ref();
        Usage {
            input_tokens: self.prompt_tokens,
            cached_input_tokens: pd.and_then(|d| d.cached_tokens).unwrap_or(0),
            cache_write_input_tokens: pd.and_then(|d| d.cache_write_tokens).unwrap_or(0),
            output_tokens: self.completion_tokens,
            reasoning_tokens: self
                .completion_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

/// Just the usage of a non-streaming response body.
#[derive(Debug, Default, Deserialize)]
pub struct ResponsePeek {
    #[serde(default)]
    pub usage: Option<WireUsage>,
    #[serde(default)]
    pub choices: Vec<ChoicePeek>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ChoicePeek {
    #[serde(default)]
    pub message: Option<MessagePeek>,
}

#[derive(Debug, Default, Deserialize)]
pub struct MessagePeek {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallPeek>>,
}

/// One streamed `chat.completion.chunk`, or an in-stream `{"error": …}` event.
#[derive(Debug, Default, Deserialize)]
pub struct ChunkPeek<'a> {
    #[serde(default)]
    pub choices: Option<Vec<ChunkChoicePeek<'a>>>,
    #[serde(default)]
    pub usage: Option<WireUsage>,
    #[serde(default, borrow)]
    pub error: Option<&'a serde_json::value::RawValue>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ChunkChoicePeek<'a> {
    #[serde(default, borrow)]
    pub delta: Option<DeltaPeek<'a>>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// Text fields are `Cow` because JSON strings with escapes cannot be borrowed.
#[derive(Debug, Default, Deserialize)]
pub struct DeltaPeek<'a> {
    #[serde(default, borrow)]
    pub content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub refusal: Option<std::borrow::Cow<'a, str>>,
    /// DeepSeek / vLLM reasoning text, billed as output.
    #[serde(default, borrow)]
    pub reasoning_content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub tool_calls: Option<Vec<ToolCallDeltaPeek<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ToolCallDeltaPeek<'a> {
    #[serde(default, borrow)]
    pub function: Option<FunctionDeltaPeek<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct FunctionDeltaPeek<'a> {
    #[serde(default, borrow)]
    pub name: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub arguments: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ToolCallPeek {
    #[serde(default)]
    pub function: Option<FunctionPeek>,
}

#[derive(Debug, Default, Deserialize)]
pub struct FunctionPeek {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub arguments: Option<String>,
}

impl ResponsePeek {
    /// All generated text of a non-streaming response (content + tool-call names/arguments),
    /// for estimating output tokens when the provider reported no usage.
    pub fn output_text(&self) -> String {
        let mut s = String::new();
        for c in &self.choices {
            if let Some(m) = &c.message {
                if let Some(t) = &m.content {
                    s.push_str(t);
                }
                for tc in m.tool_calls.iter().flatten() {
                    if let Some(f) = &tc.function {
                        s.push_str(f.name.as_deref().unwrap_or(""));
                        s.push_str(f.arguments.as_deref().unwrap_or(""));
                    }
                }
            }
        }
        s
    }
}

impl ChunkPeek<'_> {
    /// Appends the generated text this chunk carries to `out`.
    pub fn append_output_text(&self, out: &mut String) {
        for c in self.choices.iter().flatten() {
            if let Some(d) = &c.delta {
                for t in [&d.content, &d.refusal, &d.reasoning_content]
                    .into_iter()
                    .flatten()
                {
                    out.push_str(t);
                }
                for tc in d.tool_calls.iter().flatten() {
                    if let Some(f) = &tc.function {
                        out.push_str(f.name.as_deref().unwrap_or(""));
                        out.push_str(f.arguments.as_deref().unwrap_or(""));
                    }
                }
            }
        }
    }

    /// A usage-only chunk (`choices: []` plus `usage`), the one OpenAI sends last when
    /// `stream_options.include_usage` is set.
    pub fn is_usage_only(&self) -> bool {
        self.usage.is_some() && self.choices.as_ref().is_none_or(|c| c.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peeks_chunk() {
        let raw = r#"{"id":"x","choices":[{"index":0,"delta":{"content":"Hi \"there\"","tool_calls":[{"index":0,"function":{"arguments":"{\"a\""}}]},"finish_reason":null}],"usage":null}"#;
        let p: ChunkPeek<'_> = serde_json::from_str(raw).unwrap();
        let mut s = String::new();
        p.append_output_text(&mut s);
        assert_eq!(s, "Hi \"there\"{\"a\"");
        assert!(!p.is_usage_only());
        let u = r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":2}}}"#;
        let p: ChunkPeek<'_> = serde_json::from_str(u).unwrap();
        assert!(p.is_usage_only());
        let usage = p.usage.unwrap().to_usage();
        assert_eq!(usage.input_tokens, 5);
        assert_eq!(usage.cached_input_tokens, 2);
        let e = r#"{"error":{"message":"boom","type":"server_error"}}"#;
        let p: ChunkPeek<'_> = serde_json::from_str(e).unwrap();
        assert!(p.error.is_some());
    }
}
