//! `tollgate-tokens`: local token counting, shared by every part of Tollgate that needs a
//! token count without asking a provider.
//!
//! It owns the mapping from a model name to its tokenizer ([`Encoding`]), bounded counting of
//! text ([`Encoding::count`]), and the prompt accounting for the request shapes the gateway
//! sees: chat prompts ([`count_chat_prompt`], [`count_chat_prompt_map`]), one message
//! ([`count_chat_message`]), message content ([`count_content`]) and embedding inputs
//! ([`count_embedding_input`]).
//!
//! It is its own crate, with no dependency but the tokenizer and `serde_json`, because its users
//! sit in different places: the meter (`tollgate-metering`) estimates usage when a provider
//! reports none, budget and rate-limit admission estimate a request before it is routed, and
//! the simulated provider (`tollgate-sim`) reports usage with the same functions so estimates
//! and "provider" counts agree in tests. None of them should have to pull in the provider
//! adapters (and their HTTP client) to count tokens.
//!
//! Billing uses provider-reported usage whenever it exists; these counts are the fallback for
//! streams that end without usage (cut mid-way, client cancelled, an upstream that ignores
//! `stream_options.include_usage`), the live count against a budget's output cap, and the
//! admission estimate.
//!
//! Chat prompts follow OpenAI's published accounting for the `o200k`/`cl100k` families: three
//! tokens of framing per message, one more per `name`, three to prime the reply. Tool
//! definitions are counted as their JSON text, which over-counts slightly (safe for budgets).
//!
//! Counting untrusted text is on the request path, so it is bounded: text beyond
//! [`EXACT_COUNT_LIMIT_BYTES`] is counted as one token per byte — a strict upper bound for
//! byte-level BPE — instead of running the tokenizer over megabytes.

use serde_json::Value;

/// Texts longer than this are bounded (1 token per byte) instead of tokenised.
pub const EXACT_COUNT_LIMIT_BYTES: usize = 256 * 1024;

/// Fixed charge for one image part when estimating (OpenAI high-detail 1024², 4 tiles + base).
pub const IMAGE_TOKENS_ESTIMATE: u64 = 765;

/// Which tokenizer a model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `o200k_base`: gpt-4o, gpt-4.1, gpt-5, o-series.
    O200k,
    /// `cl100k_base`: gpt-4, gpt-3.5, text-embedding-3-*, ada-002.
    Cl100k,
    /// Any other model: counted with `o200k_base` and marked as an estimate by callers.
    Approximate,
}

impl Encoding {
    /// The encoding of an upstream model name (without a provider prefix).
    pub fn for_model(model: &str) -> Encoding {
        let m = model.rsplit('/').next().unwrap_or(model);
        let m = m.strip_prefix("ft:").unwrap_or(m);
        if m.starts_with("gpt-4o")
            || m.starts_with("gpt-4.1")
            || m.starts_with("gpt-4.5")
            || m.starts_with("gpt-5")
            || m.starts_with("chatgpt-4o")
            || m.starts_with("o1")
            || m.starts_with("o3")
            || m.starts_with("o4")
            || m.starts_with("gpt-oss")
        {
            Encoding::O200k
        } else if m.starts_with("gpt-4")
            || m.starts_with("gpt-3.5")
            || m.starts_with("gpt-35")
            || m.starts_with("text-embedding-3")
            || m.starts_with("text-embedding-ada-002")
        {
            Encoding::Cl100k
        } else {
            Encoding::Approximate
        }
    }

    /// True when counts under this encoding match what OpenAI bills.
    pub fn is_exact(self) -> bool {
        !matches!(self, Encoding::Approximate)
    }

    fn tokenizer(self) -> &'static bpe_openai::Tokenizer {
        match self {
            Encoding::Cl100k => bpe_openai::cl100k_base(),
            Encoding::O200k | Encoding::Approximate => bpe_openai::o200k_base(),
        }
    }

    /// Tokens in `text` (bounded, see the module doc).
    pub fn count(self, text: &str) -> u64 {
        if text.is_empty() {
            return 0;
        }
        if text.len() > EXACT_COUNT_LIMIT_BYTES {
            return text.len() as u64;
        }
        self.tokenizer().count(text) as u64
    }
}

const TOKENS_PER_MESSAGE: u64 = 3;
const TOKENS_PER_NAME: u64 = 1;
const REPLY_PRIMING: u64 = 3;

/// [`count_chat_prompt`] over a body held as a map.
pub fn count_chat_prompt_map(enc: Encoding, body: &serde_json::Map<String, Value>) -> u64 {
    count_chat_prompt_parts(enc, body.get("messages"), body.get("tools"))
}

/// Prompt tokens of an OpenAI chat request body (`messages`, plus `tools` when present).
pub fn count_chat_prompt(enc: Encoding, body: &Value) -> u64 {
    count_chat_prompt_parts(enc, body.get("messages"), body.get("tools"))
}

fn count_chat_prompt_parts(enc: Encoding, messages: Option<&Value>, tools: Option<&Value>) -> u64 {
    let mut total = 0u64;
    if let Some(messages) = messages.and_then(Value::as_array) {
        for m in messages {
            total += count_chat_message(enc, m);
        }
        total += REPLY_PRIMING;
    }
    if let Some(tools) = tools.filter(|t| !t.is_null()) {
        total += count_json(enc, tools);
    }
    total
}

/// Tokens of one chat message as [`count_chat_prompt`] counts it, its framing included (a
/// prompt is the sum over its messages, plus the reply priming and the tools).
pub fn count_chat_message(enc: Encoding, m: &Value) -> u64 {
    let mut total = TOKENS_PER_MESSAGE;
    if let Some(obj) = m.as_object() {
        for (k, v) in obj {
            match k.as_str() {
                "content" => total += count_content(enc, v),
                "name" => {
                    total += TOKENS_PER_NAME + v.as_str().map_or(0, |s| enc.count(s));
                }
                "role" => total += v.as_str().map_or(0, |s| enc.count(s)),
                "tool_calls" | "function_call" => total += count_json(enc, v),
                "tool_call_id" => total += v.as_str().map_or(0, |s| enc.count(s)),
                _ => {}
            }
        }
    }
    total
}

/// Tokens of a message `content`: a string or an array of parts.
pub fn count_content(enc: Encoding, content: &Value) -> u64 {
    match content {
        Value::String(s) => enc.count(s),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => p
                    .get("text")
                    .and_then(Value::as_str)
                    .map_or(0, |s| enc.count(s)),
                Some("refusal") => p
                    .get("refusal")
                    .and_then(Value::as_str)
                    .map_or(0, |s| enc.count(s)),
                Some("image_url") => IMAGE_TOKENS_ESTIMATE,
                _ => count_json(enc, p),
            })
            .sum(),
        Value::Null => 0,
        other => count_json(enc, other),
    }
}

/// Tokens of the `input` of an embeddings request (string, strings, token ids, or arrays of ids).
pub fn count_embedding_input(enc: Encoding, input: &Value) -> u64 {
    match input {
        Value::String(s) => enc.count(s),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => enc.count(s),
                Value::Number(_) => 1,
                Value::Array(ids) => ids.len() as u64,
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

fn count_json(enc: Encoding, v: &Value) -> u64 {
    match serde_json::to_string(v) {
        Ok(s) => enc.count(&s),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodings_by_model() {
        assert_eq!(Encoding::for_model("gpt-4o-mini"), Encoding::O200k);
        assert_eq!(Encoding::for_model("openai/gpt-5"), Encoding::O200k);
        assert_eq!(Encoding::for_model("gpt-4-turbo"), Encoding::Cl100k);
        assert_eq!(
            Encoding::for_model("text-embedding-3-small"),
            Encoding::Cl100k
        );
        assert_eq!(
            Encoding::for_model("claude-sonnet-4-5"),
            Encoding::Approximate
        );
    }

    #[test]
    fn known_counts() {
        // "hello world" is two tokens in both OpenAI encodings.
        assert_eq!(Encoding::O200k.count("hello world"), 2);
        assert_eq!(Encoding::Cl100k.count("hello world"), 2);
        assert_eq!(Encoding::O200k.count(""), 0);
    }

    #[test]
    fn chat_prompt_framing() {
        let body = json!({"messages":[{"role":"user","content":"hello world"}]});
        // 3 framing + "user"(1) + 2 content + 3 priming
        assert_eq!(count_chat_prompt(Encoding::O200k, &body), 9);
    }

    #[test]
    fn oversized_text_is_bounded_not_tokenised() {
        let big = "a".repeat(EXACT_COUNT_LIMIT_BYTES + 1);
        assert_eq!(Encoding::O200k.count(&big), big.len() as u64);
    }

    #[test]
    fn embedding_inputs() {
        let enc = Encoding::Cl100k;
        assert_eq!(count_embedding_input(enc, &json!("hello world")), 2);
        assert_eq!(
            count_embedding_input(enc, &json!(["hello world", "hello"])),
            3
        );
        assert_eq!(count_embedding_input(enc, &json!([1, 2, 3])), 3);
        assert_eq!(count_embedding_input(enc, &json!([[1, 2], [3]])), 3);
        assert_eq!(count_embedding_input(enc, &json!(null)), 0);
    }

    #[test]
    fn a_prompt_is_the_sum_of_its_messages_plus_priming() {
        let enc = Encoding::O200k;
        let messages = json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "name": "ann", "content": [
                {"type": "text", "text": "hello world"},
                {"type": "image_url", "image_url": {"url": "https://example.invalid/a.png"}},
            ]},
        ]);
        let body = json!({ "messages": messages });
        let per_message: u64 = messages
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| count_chat_message(enc, m))
            .sum();
        assert_eq!(count_chat_prompt(enc, &body), per_message + REPLY_PRIMING);
        let map = body.as_object().cloned().unwrap_or_default();
        assert_eq!(
            count_chat_prompt_map(enc, &map),
            per_message + REPLY_PRIMING
        );
        // The image part is the fixed estimate.
        assert!(per_message > IMAGE_TOKENS_ESTIMATE);
    }

    proptest::proptest! {
        /// Byte-level BPE: every token covers at least one byte, so a count never exceeds the
        /// byte length — on either side of the exact-count limit.
        #[test]
        fn count_never_exceeds_bytes(text in "\\PC{0,200}") {
            for enc in [Encoding::O200k, Encoding::Cl100k, Encoding::Approximate] {
                let n = enc.count(&text);
                proptest::prop_assert!(n <= text.len() as u64);
                proptest::prop_assert_eq!(n == 0, text.is_empty());
            }
        }

        /// A prompt is the sum of its messages (framing included) plus the reply priming,
        /// whatever the texts.
        #[test]
        fn prompt_is_additive(texts in proptest::collection::vec("\\PC{0,40}", 0..6)) {
            let enc = Encoding::O200k;
            let messages: Vec<Value> = texts
                .iter()
                .map(|t| json!({"role": "user", "content": t}))
                .collect();
            let expected: u64 = messages.iter().map(|m| count_chat_message(enc, m)).sum::<u64>()
                + REPLY_PRIMING;
            let per_text: u64 = texts.iter().map(|t| enc.count(t)).sum();
            proptest::prop_assert_eq!(count_chat_prompt(enc, &json!({ "messages": messages })), expected);
            proptest::prop_assert_eq!(
                expected,
                per_text + texts.len() as u64 * (TOKENS_PER_MESSAGE + 1) + REPLY_PRIMING
            );
        }
    }
}
