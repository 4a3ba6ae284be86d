//! Provider-neutral answer planning: given what a request asks for ([`Ask`]), decide every
//! choice's content deterministically — plain words, a JSON document, or tool calls — as token
//! pieces with exact token counts, plus why it stopped ([`Finish`]).
//!
//! Every wire module (`openai`, `anthropic`, `gemini`, `bedrock`) parses its own request
//! shape into an [`Ask`], calls [`plan_choices`], and renders the plan in its own framing. The
//! plan is computed once, before rendering, so a streamed and a non-streamed answer to the
//! same request carry the same content and the same usage, and usage is always the token
//! count of exactly what was sent.
//!
//! This module also owns the usage arithmetic the formats share: the prompt-token formula for
//! the parts-based shapes (Gemini, Bedrock), the `cached_prompt_tokens` split, and the stream
//! chunk grouping.

use std::borrow::Cow;

use serde_json::{Map, Value, json};
use tollgate_tokens::{Encoding, count_content};

use crate::config::SimConfig;
use crate::content::{
    Rng, Tokenized, fill_object_schema, fill_schema, mix64, sentence, tokenize, word_pieces,
};

/// A function tool the model may call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ToolDef<'a> {
    pub name: &'a str,
    /// JSON schema of the arguments (any case of `type` names: Gemini uses `STRING`, …).
    pub parameters: Option<&'a Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ToolChoice<'a> {
    Auto,
    None,
    /// Must call some tool (OpenAI `required`, Anthropic `any`, Gemini `ANY`, Bedrock `any`).
    Required,
    /// Must call this tool.
    Named(&'a str),
    /// Only these may be called.
    Allowed(Vec<&'a str>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ResponseFormat<'a> {
    Text,
    /// `{"answer":"<words>"}`.
    JsonObject,
    /// The schema's required properties filled in.
    JsonSchema(Option<&'a Value>),
}

/// What a request asks for, in provider-neutral terms.
#[derive(Debug)]
pub(crate) struct Ask<'a> {
    /// Encoding completion tokens are counted in ([`encoding_for`] the model).
    pub enc: Encoding,
    /// Hash of the conversation: the same conversation gives the same answer.
    pub seed: u64,
    /// Number of choices / candidates.
    pub n: u32,
    pub max_tokens: Option<u64>,
    pub tools: Vec<ToolDef<'a>>,
    pub tool_choice: ToolChoice<'a>,
    pub parallel_tool_calls: bool,
    pub format: ResponseFormat<'a>,
    /// Stop sequences (empty strings are ignored).
    pub stop: Vec<&'a str>,
    /// The text of the last turn when it is the user asking something: `None` when the last
    /// turn is not the user's or carries tool results (the model then answers in text).
    pub user_turn: Option<String>,
}

#[cfg(test)]
impl<'a> Ask<'a> {
    /// A text-only ask (no tools, no JSON, one choice).
    pub(crate) fn new(enc: Encoding, seed: u64) -> Self {
        Ask {
            enc,
            seed,
            n: 1,
            max_tokens: None,
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            parallel_tool_calls: true,
            format: ResponseFormat::Text,
            stop: Vec::new(),
            user_turn: None,
        }
    }
}

/// One tool call of a choice.
#[derive(Debug)]
pub(crate) struct ToolCallPlan {
    /// Seed of the call id; each format adds its own prefix ([`ToolCallPlan::id`]).
    pub id_seed: u64,
    pub name: String,
    /// The arguments JSON as token pieces.
    pub pieces: Vec<Cow<'static, str>>,
}

impl ToolCallPlan {
    /// The call id with a provider's prefix (`call_`, `toolu_`, `tooluse_`): deterministic, and
    /// made of `[a-zA-Z0-9_]` so it is valid in every format.
    pub(crate) fn id(&self, prefix: &str) -> String {
        format!(
            "{prefix}{:016x}{:08x}",
            self.id_seed,
            mix64(self.id_seed) as u32
        )
    }

    /// The arguments JSON text (possibly truncated by the token budget).
    pub(crate) fn arguments(&self) -> String {
        self.pieces.concat()
    }

    /// The arguments as an object, for formats that send them parsed (Anthropic `input`,
    /// Gemini `args`, Bedrock `input`). Arguments cut by the token budget do not parse; they
    /// become `{}` (the stop reason says the answer was cut).
    pub(crate) fn input(&self) -> Value {
        match serde_json::from_str::<Value>(&self.arguments()) {
            Ok(v @ Value::Object(_)) => v,
            _ => Value::Object(Map::new()),
        }
    }
}

#[derive(Debug)]
pub(crate) enum ChoiceBody {
    /// Text (plain words or a JSON document) as token pieces.
    Text(Vec<Cow<'static, str>>),
    ToolCalls(Vec<ToolCallPlan>),
}

/// Why a choice ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Finish {
    /// Natural end.
    Stop,
    /// Cut by the request's max tokens.
    Length,
    /// The answer is tool calls.
    ToolCalls,
    /// A stop sequence matched (the text ends just before it).
    StopSequence(String),
}

#[derive(Debug)]
pub(crate) struct ChoicePlan {
    pub index: u32,
    pub body: ChoiceBody,
    pub finish: Finish,
    /// Completion tokens of this choice: the token count of exactly what it contains.
    pub tokens: u64,
    /// Seed for per-token extras (logprobs).
    pub seed: u64,
}

impl ChoicePlan {
    /// Number of pieces (tokens, roughly) the body is made of.
    pub(crate) fn pieces_len(&self) -> usize {
        match &self.body {
            ChoiceBody::Text(p) => p.len(),
            ChoiceBody::ToolCalls(calls) => calls.iter().map(|c| c.pieces.len()).sum(),
        }
    }
}

/// The encoding usage is reported in: the model's own, `o200k_base` for unknown models (the
/// same choice the gateway's estimator makes; Claude and Gemini models land here).
pub(crate) fn encoding_for(model: &str) -> Encoding {
    match Encoding::for_model(model) {
        Encoding::Approximate => Encoding::O200k,
        e => e,
    }
}

/// Which tools a choice calls, or `None` to answer with text.
fn tools_to_call<'r, 'a>(ask: &'r Ask<'a>) -> Option<Vec<&'r ToolDef<'a>>> {
    if ask.tools.is_empty() || ask.tool_choice == ToolChoice::None {
        return None;
    }
    // After a tool result the model answers in text; tools are only called in reply to the
    // user.
    let text = ask.user_turn.as_deref()?;
    if let ToolChoice::Named(name) = ask.tool_choice {
        return ask.tools.iter().find(|t| t.name == name).map(|t| vec![t]);
    }
    let candidates: Vec<&ToolDef<'a>> = match &ask.tool_choice {
        ToolChoice::Allowed(names) => ask
            .tools
            .iter()
            .filter(|t| names.contains(&t.name))
            .collect(),
        _ => ask.tools.iter().collect(),
    };
    let first = *candidates.first()?;
    if ask.parallel_tool_calls {
        let mentioned: Vec<&ToolDef<'a>> = candidates
            .iter()
            .copied()
            .filter(|t| !t.name.is_empty() && text.contains(t.name))
            .collect();
        if mentioned.len() >= 2 {
            return Some(mentioned);
        }
    }
    Some(vec![first])
}

/// Decides every choice's content under the simulator's length knobs: `completion_tokens` is
/// the answer's length when the request sets no smaller max, and with `ignore_max_tokens` the
/// request's max is not honoured at all (an upstream that overruns `max_tokens`: the whole
/// answer is sent, with the stop reason and usage of an answer that ended by itself).
/// Deterministic: the same conversation (and choice index) gives the same answer.
pub(crate) fn plan_answers(ask: &Ask<'_>, cfg: &SimConfig) -> Vec<ChoicePlan> {
    let max_tokens = if cfg.ignore_max_tokens {
        None
    } else {
        ask.max_tokens
    };
    plan(ask, max_tokens, cfg.completion_tokens)
}

/// [`plan_answers`] with the request's max honoured and `default_len` as `completion_tokens`.
#[cfg(test)]
pub(crate) fn plan_choices(ask: &Ask<'_>, default_len: u32) -> Vec<ChoicePlan> {
    plan(ask, ask.max_tokens, default_len)
}

/// Plans every choice, truncated to `max_tokens` (when it is smaller than `default_len`).
fn plan(ask: &Ask<'_>, max_tokens: Option<u64>, default_len: u32) -> Vec<ChoicePlan> {
    let enc = ask.enc;
    let target = match max_tokens {
        Some(max) => max.min(u64::from(default_len)),
        None => u64::from(default_len),
    };
    let cut_by_max = max_tokens.is_some_and(|m| m < u64::from(default_len));
    let calls = tools_to_call(ask);

    (0..ask.n)
        .map(|index| {
            let seed = mix64(ask.seed ^ mix64(u64::from(index) + 1));
            let mut rng = Rng::new(seed);
            if let Some(tools) = &calls {
                return plan_tool_calls(enc, tools, max_tokens, index, seed, &mut rng);
            }
            let json_text = match ask.format {
                ResponseFormat::Text => None,
                ResponseFormat::JsonObject => {
                    let answer = sentence(&mut rng, target as usize);
                    Some(json!({ "answer": answer }).to_string())
                }
                ResponseFormat::JsonSchema(schema) => {
                    let v = match schema {
                        Some(s) => fill_schema(s, &mut rng),
                        None => Value::Object(Map::new()),
                    };
                    Some(v.to_string())
                }
            };
            let (pieces, tokens, finish) = match json_text {
                Some(text) => {
                    let Tokenized {
                        pieces,
                        tokens,
                        truncated,
                    } = tokenize(enc, &text, max_tokens);
                    let finish = if truncated {
                        Finish::Length
                    } else {
                        Finish::Stop
                    };
                    (pieces, tokens, finish)
                }
                None => {
                    let finish = if cut_by_max {
                        Finish::Length
                    } else {
                        Finish::Stop
                    };
                    (word_pieces(&mut rng, target as usize), target, finish)
                }
            };
            let (pieces, tokens, finish) = apply_stop(enc, pieces, tokens, finish, &ask.stop);
            ChoicePlan {
                index,
                body: ChoiceBody::Text(pieces),
                finish,
                tokens,
                seed,
            }
        })
        .collect()
}

/// Ends a text answer just before the earliest stop sequence it contains, the way a model
/// stops generating there (the stop text itself is not returned). Usage is recounted over the
/// kept text so it stays exact.
fn apply_stop(
    enc: Encoding,
    mut pieces: Vec<Cow<'static, str>>,
    tokens: u64,
    finish: Finish,
    stop: &[&str],
) -> (Vec<Cow<'static, str>>, u64, Finish) {
    if stop.iter().all(|s| s.is_empty()) {
        return (pieces, tokens, finish);
    }
    let text = pieces.concat();
    let Some((at, matched)) = stop
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s).map(|at| (at, *s)))
        .min_by_key(|(at, _)| *at)
    else {
        return (pieces, tokens, finish);
    };
    let mut kept = 0;
    let mut end = 0;
    for p in &pieces {
        if end + p.len() > at {
            break;
        }
        end += p.len();
        kept += 1;
    }
    pieces.truncate(kept + 1);
    if let Some(last) = pieces.get_mut(kept) {
        // `at` is where a match of a valid string starts, so it is a char boundary of `text`
        // and `at - end` one of this piece.
        let keep = at - end;
        if keep == 0 {
            pieces.truncate(kept);
        } else {
            *last = Cow::Owned(last[..keep].to_string());
        }
    }
    let tokens = enc.count(&text[..at]);
    (pieces, tokens, Finish::StopSequence(matched.to_string()))
}

fn plan_tool_calls(
    enc: Encoding,
    tools: &[&ToolDef<'_>],
    max_tokens: Option<u64>,
    index: u32,
    seed: u64,
    rng: &mut Rng,
) -> ChoicePlan {
    let mut remaining = max_tokens;
    let mut truncated_any = false;
    let mut total = 0u64;
    let mut calls = Vec::with_capacity(tools.len());
    for (k, tool) in tools.iter().enumerate() {
        if remaining == Some(0) {
            truncated_any = true;
            break;
        }
        let args = fill_object_schema(tool.parameters, rng).to_string();
        let t = tokenize(enc, &args, remaining);
        total += t.tokens;
        remaining = remaining.map(|r| r.saturating_sub(t.tokens));
        calls.push(ToolCallPlan {
            id_seed: mix64(seed ^ mix64(k as u64 + 0x5eed)),
            name: tool.name.to_string(),
            pieces: t.pieces,
        });
        if t.truncated {
            truncated_any = true;
            break;
        }
    }
    ChoicePlan {
        index,
        body: ChoiceBody::ToolCalls(calls),
        finish: if truncated_any {
            Finish::Length
        } else {
            Finish::ToolCalls
        },
        tokens: total,
        seed,
    }
}

/// Splits `n` pieces into at most `groups` runs of near-equal length (0 = one per piece).
pub(crate) fn group_ranges(n: usize, groups: u32) -> Vec<std::ops::Range<usize>> {
    let g = if groups == 0 {
        n
    } else {
        (groups as usize).min(n)
    };
    if g == 0 {
        return Vec::new();
    }
    let (base, extra) = (n / g, n % g);
    let mut out = Vec::with_capacity(g);
    let mut start = 0;
    for i in 0..g {
        let len = base + usize::from(i < extra);
        out.push(start..start + len);
        start += len;
    }
    out
}

/// The text of a message `content` in the OpenAI and Anthropic shapes: the string, or the
/// `text` of each block of an array, joined by spaces (used to see which tools the user
/// mentions).
pub(crate) fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// Framing tokens per turn and for priming the reply, as in OpenAI's chat accounting
/// (`tollgate_tokens::count_chat_prompt`), reused for the other shapes so every
/// format counts a conversation the same way.
pub(crate) const TOKENS_PER_TURN: u64 = 3;
pub(crate) const REPLY_PRIMING: u64 = 3;

/// Tokens of a list of parts / content blocks in the Gemini and Bedrock shapes: a part with a
/// `text` string counts as that text; any other part (function calls and responses, tool use
/// and results, inline data, cache points) counts as its JSON text, like non-text parts in
/// [`count_content`].
pub(crate) fn count_parts(enc: Encoding, parts: &[Value]) -> u64 {
    parts
        .iter()
        .map(|p| match p.get("text") {
            Some(Value::String(s)) => enc.count(s),
            _ => count_content(enc, p),
        })
        .sum()
}

/// Prompt tokens split into what the provider reports as read from its cache and the rest:
/// the `cached_prompt_tokens` knob capped at the prompt, or what the simulated prompt cache
/// holds of it (`crate::prompt_cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PromptUsage {
    /// Every prompt token, cached or not.
    pub total: u64,
    /// Of which read from the cache.
    pub cached: u64,
}

impl PromptUsage {
    pub(crate) fn new(total: u64, cached_knob: u32) -> Self {
        PromptUsage {
            total,
            cached: u64::from(cached_knob).min(total),
        }
    }

    /// Prompt tokens not read from the cache (Anthropic `input_tokens`, Bedrock
    /// `inputTokens`).
    pub(crate) fn uncached(&self) -> u64 {
        self.total - self.cached
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups() {
        assert_eq!(group_ranges(5, 0).len(), 5);
        assert_eq!(group_ranges(5, 2), vec![0..3, 3..5]);
        assert_eq!(group_ranges(2, 9), vec![0..1, 1..2]);
        assert!(group_ranges(0, 3).is_empty());
    }

    fn text(p: &ChoicePlan) -> String {
        match &p.body {
            ChoiceBody::Text(pieces) => pieces.concat(),
            ChoiceBody::ToolCalls(_) => panic!("text expected"),
        }
    }

    #[test]
    fn stop_sequences_cut_before_the_match() {
        let ask = Ask::new(Encoding::O200k, 42);
        let full = text(&plan_choices(&ask, 12)[0]);
        let words: Vec<&str> = full.split(' ').collect();
        // Stop on the 5th word (with its leading space): 4 words remain.
        let stop = format!(" {}", words[4]);
        let first = full.find(&stop).unwrap();
        let mut ask = Ask::new(Encoding::O200k, 42);
        ask.stop = vec!["", &stop, "no such text"];
        let p = &plan_choices(&ask, 12)[0];
        assert_eq!(text(p), full[..first]);
        assert_eq!(p.finish, Finish::StopSequence(stop.clone()));
        assert_eq!(p.tokens, Encoding::O200k.count(&full[..first]));
        // A match inside a piece keeps the piece's prefix.
        let mut ask = Ask::new(Encoding::O200k, 42);
        let mid = &words[2][1..];
        ask.stop = vec![mid];
        let p = &plan_choices(&ask, 12)[0];
        let at = full.find(mid).unwrap();
        assert_eq!(text(p), full[..at]);
        assert_eq!(p.tokens, Encoding::O200k.count(&full[..at]));
        // At offset 0: empty answer.
        let mut ask = Ask::new(Encoding::O200k, 42);
        ask.stop = vec![words[0]];
        let p = &plan_choices(&ask, 12)[0];
        assert!(full.starts_with(words[0]));
        assert_eq!(p.tokens, 0);
        assert_eq!(text(p), "");
    }

    #[test]
    fn tool_plan_respects_budget() {
        let schema = json!({"type":"object","properties":{"city":{"type":"string"}},
            "required":["city"]});
        let mut ask = Ask::new(Encoding::O200k, 1);
        ask.tools = vec![ToolDef {
            name: "f",
            parameters: Some(&schema),
        }];
        ask.user_turn = Some("hi".into());
        ask.max_tokens = Some(2);
        let p = &plan_choices(&ask, 10)[0];
        assert_eq!(p.finish, Finish::Length);
        assert!(p.tokens <= 2);
        let ChoiceBody::ToolCalls(calls) = &p.body else {
            panic!("tool calls expected")
        };
        assert_eq!(calls[0].input(), json!({}));
        ask.max_tokens = None;
        let p = &plan_choices(&ask, 10)[0];
        assert_eq!(p.finish, Finish::ToolCalls);
        let ChoiceBody::ToolCalls(calls) = &p.body else {
            panic!("tool calls expected")
        };
        assert!(calls[0].input()["city"].is_string());
        assert!(calls[0].id("toolu_").starts_with("toolu_"));
        // No user turn (after a tool result): text.
        ask.user_turn = None;
        assert!(matches!(
            plan_choices(&ask, 10)[0].body,
            ChoiceBody::Text(_)
        ));
    }

    #[test]
    fn ignore_max_tokens_plans_the_whole_answer() {
        let mut ask = Ask::new(Encoding::O200k, 7);
        ask.max_tokens = Some(3);
        let honoured = SimConfig {
            completion_tokens: 12,
            ..SimConfig::default()
        };
        let p = &plan_answers(&ask, &honoured)[0];
        assert_eq!((p.tokens, &p.finish), (3, &Finish::Length));
        let ignored = SimConfig {
            ignore_max_tokens: true,
            ..honoured.clone()
        };
        let full = &plan_answers(&ask, &ignored)[0];
        assert_eq!((full.tokens, &full.finish), (12, &Finish::Stop));
        assert!(text(full).starts_with(&text(p)), "the same answer, not cut");
        // Tool arguments are not truncated either.
        let schema = json!({"type":"object","properties":{"city":{"type":"string"},
            "days":{"type":"integer"}},"required":["city","days"]});
        ask.tools = vec![ToolDef {
            name: "f",
            parameters: Some(&schema),
        }];
        ask.user_turn = Some("hi".into());
        ask.max_tokens = Some(1);
        assert_eq!(plan_answers(&ask, &honoured)[0].finish, Finish::Length);
        let p = &plan_answers(&ask, &ignored)[0];
        assert_eq!(p.finish, Finish::ToolCalls);
        assert!(p.tokens > 1);
    }

    #[test]
    fn cached_split() {
        assert_eq!(PromptUsage::new(10, 4).uncached(), 6);
        assert_eq!(PromptUsage::new(10, 40).cached, 10);
        assert_eq!(PromptUsage::new(10, 40).uncached(), 0);
    }
}
