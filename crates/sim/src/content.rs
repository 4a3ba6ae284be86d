//! Deterministic content: the word vocabulary, hashing and the PRNG that turn a request into
//! the same answer every time, plus filling JSON schemas with plausible values and splitting
//! generated text into exact token pieces.
//!
//! Everything here is provider-neutral; [`crate::plan`] turns it into answers and the wire
//! modules (`openai`, `anthropic`, `gemini`, `bedrock`) decide how the pieces are framed.
//!
//! Why a fixed vocabulary: every word in [`VOCAB`] is exactly one token in both `o200k_base`
//! and `cl100k_base`, with or without its leading space, so a plain-text answer of `n` words is
//! exactly `n` completion tokens under either encoding. The gateway's local counter (used when
//! a stream is cut) and the sim's reported usage therefore agree to the token.

use std::borrow::Cow;

use serde_json::{Map, Value};
use tollgate_tokens::Encoding;

/// 128 words, each one token in o200k_base and cl100k_base, bare and with a leading space
/// (checked by a test). A power of two so a word is picked with a mask, without bias.
pub(crate) const VOCAB: [&str; 128] = [
    "the", "model", "answer", "data", "time", "system", "value", "result", "token", "simple",
    "test", "request", "response", "cost", "budget", "price", "team", "user", "level", "rate",
    "check", "point", "line", "small", "large", "fast", "quick", "good", "clear", "first", "last",
    "next", "early", "later", "open", "close", "start", "end", "plan", "work", "world", "light",
    "water", "river", "stone", "green", "blue", "red", "north", "south", "east", "west", "city",
    "road", "house", "field", "market", "table", "paper", "number", "signal", "stream", "window",
    "report", "count", "limit", "range", "order", "state", "place", "group", "power", "story",
    "music", "color", "energy", "future", "people", "bright", "deep", "fair", "fine", "free",
    "full", "great", "high", "kind", "long", "new", "old", "real", "safe", "short", "strong",
    "sure", "warm", "wide", "young", "able", "best", "better", "big", "black", "brown", "cold",
    "dark", "easy", "hard", "hot", "low", "main", "near", "nice", "rich", "right", "round",
    "sharp", "slow", "soft", "sweet", "thin", "tight", "wild", "year", "day", "week", "month",
    "hour",
];

/// 64-bit FNV-1a. Chosen because it is tiny, dependency-free and stable across runs and
/// platforms (std's `DefaultHasher` is randomly keyed per process).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub(crate) fn write_u64(&mut self, v: u64) {
        self.write(&v.to_le_bytes());
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0
    }

    /// Feeds a JSON value in a canonical walk (type tag, then contents), without serialising.
    /// Object keys are taken in the order sent, so reordering keys changes the answer; that is
    /// fine for a simulator and avoids sorting on the hot path.
    pub(crate) fn write_json(&mut self, v: &Value) {
        match v {
            Value::Null => self.write(b"n"),
            Value::Bool(b) => self.write(if *b { b"t" } else { b"f" }),
            Value::Number(n) => {
                self.write(b"#");
                self.write(n.to_string().as_bytes());
            }
            Value::String(s) => {
                self.write(b"s");
                self.write_u64(s.len() as u64);
                self.write(s.as_bytes());
            }
            Value::Array(items) => {
                self.write(b"[");
                self.write_u64(items.len() as u64);
                for i in items {
                    self.write_json(i);
                }
            }
            Value::Object(map) => {
                self.write(b"{");
                self.write_u64(map.len() as u64);
                for (k, v) in map {
                    self.write_u64(k.len() as u64);
                    self.write(k.as_bytes());
                    self.write_json(v);
                }
            }
        }
    }
}

/// FNV-1a of a JSON value (see [`Fnv1a::write_json`]).
pub(crate) fn hash_json(v: &Value) -> u64 {
    let mut h = Fnv1a::default();
    h.write_json(v);
    h.finish()
}

/// SplitMix64: a fast, well-mixed PRNG; good enough to pick words and is fully determined by
/// its seed.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// A uniformly random word of [`VOCAB`].
    pub(crate) fn word(&mut self) -> &'static str {
        VOCAB[(self.next_u64() & (VOCAB.len() as u64 - 1)) as usize]
    }

    /// A float in `[-1, 1)`.
    pub(crate) fn unit(&mut self) -> f32 {
        // 24 random bits: exactly representable in an f32 mantissa.
        let bits = (self.next_u64() >> 40) as u32;
        (bits as f32 / (1u32 << 23) as f32) - 1.0
    }
}

/// The SplitMix64 finaliser; also used to derive sub-seeds.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `n` words as token pieces: the first bare, the rest with their leading space, so the
/// concatenation is a sentence whose token count is exactly `n`.
pub(crate) fn word_pieces(rng: &mut Rng, n: usize) -> Vec<Cow<'static, str>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let w = rng.word();
        if i == 0 {
            out.push(Cow::Borrowed(w));
        } else {
            out.push(Cow::Owned(format!(" {w}")));
        }
    }
    out
}

/// `n` words joined by spaces, for use inside JSON strings.
pub(crate) fn sentence(rng: &mut Rng, n: usize) -> String {
    let mut s = String::with_capacity(n * 7);
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(rng.word());
    }
    s
}

const MAX_SCHEMA_DEPTH: usize = 8;

/// A value conforming (loosely) to a JSON schema: every `required` property of an object is
/// filled; strings get a word, numbers and integers `1`, booleans `true`, nested objects are
/// filled the same way, arrays are empty, `enum`/`const` take their first allowed value, and
/// anything else is `null`. Bounded in depth so a hostile schema cannot recurse forever.
pub(crate) fn fill_schema(schema: &Value, rng: &mut Rng) -> Value {
    fill_schema_at(schema, rng, 0)
}

/// Like [`fill_schema`] but always returns an object (tool arguments must be one).
pub(crate) fn fill_object_schema(schema: Option<&Value>, rng: &mut Rng) -> Value {
    match schema.map(|s| fill_schema_at(s, rng, 0)) {
        Some(v @ Value::Object(_)) => v,
        _ => Value::Object(Map::new()),
    }
}

fn fill_schema_at(schema: &Value, rng: &mut Rng, depth: usize) -> Value {
    if depth > MAX_SCHEMA_DEPTH {
        return Value::Null;
    }
    let Some(obj) = schema.as_object() else {
        return Value::Null;
    };
    if let Some(c) = obj.get("const") {
        return c.clone();
    }
    if let Some(first) = obj
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = obj
            .get(key)
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            return fill_schema_at(first, rng, depth + 1);
        }
    }
    let ty = match obj.get("type") {
        Some(Value::String(t)) => Some(t.as_str()),
        // `["string", "null"]`: the first non-null type.
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| !t.eq_ignore_ascii_case("null")),
        _ => None,
    };
    let ty = ty.or_else(|| obj.contains_key("properties").then_some("object"));
    // Gemini's OpenAPI-subset schemas spell types in upper case (`STRING`, `OBJECT`).
    let is = |name: &str| ty.is_some_and(|t| t.eq_ignore_ascii_case(name));
    if is("string") {
        Value::String(rng.word().to_string())
    } else if is("number") || is("integer") {
        Value::from(1)
    } else if is("boolean") {
        Value::Bool(true)
    } else if is("array") {
        Value::Array(Vec::new())
    } else if is("object") {
        let mut out = Map::new();
        let props = obj.get("properties").and_then(Value::as_object);
        if let Some(required) = obj.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                let v = props
                    .and_then(|p| p.get(name))
                    .map_or(Value::Null, |s| fill_schema_at(s, rng, depth + 1));
                out.insert(name.to_string(), v);
            }
        }
        Value::Object(out)
    } else {
        Value::Null
    }
}

/// A deterministic unit vector of `dims` floats for `seed` (the hash of one embedding input):
/// the same input always embeds the same way, whatever else is in the batch.
pub(crate) fn unit_vector(seed: u64, dims: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut v: Vec<f32> = (0..dims).map(|_| rng.unit()).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x /= norm;
        }
    }
    v
}

/// FNV-1a of a string (embedding inputs).
pub(crate) fn hash_str(s: &str) -> u64 {
    let mut h = Fnv1a::default();
    h.write(s.as_bytes());
    h.finish()
}

/// The tokenizer behind an encoding (`tollgate-tokens` keeps its own mapping private).
fn tokenizer(enc: Encoding) -> &'static bpe_openai::Tokenizer {
    match enc {
        Encoding::Cl100k => bpe_openai::cl100k_base(),
        Encoding::O200k | Encoding::Approximate => bpe_openai::o200k_base(),
    }
}

/// Text split into token pieces, possibly truncated to a token budget.
#[derive(Debug, Clone)]
pub(crate) struct Tokenized {
    /// Decoded pieces; concatenated they give the (possibly truncated) text. A piece is one
    /// token, except where a multi-byte character spans tokens: those are merged so every
    /// piece is valid UTF-8.
    pub pieces: Vec<Cow<'static, str>>,
    /// Exact token count of the text the pieces make up.
    pub tokens: u64,
    /// True when the text was cut to fit `max_tokens`.
    pub truncated: bool,
}

/// Tokenizes `text` with `enc`, keeping at most `max_tokens` tokens.
pub(crate) fn tokenize(enc: Encoding, text: &str, max_tokens: Option<u64>) -> Tokenized {
    let tok = tokenizer(enc);
    let mut ids = tok.encode(text);
    let mut truncated = false;
    if let Some(max) = max_tokens {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        if ids.len() > max {
            ids.truncate(max);
            truncated = true;
        }
    }
    let mut pieces: Vec<Cow<'static, str>> = Vec::with_capacity(ids.len());
    let mut start = 0;
    for end in 1..=ids.len() {
        if let Some(s) = tok.decode(&ids[start..end]) {
            pieces.push(Cow::Owned(s));
            start = end;
        }
    }
    // A truncation inside a multi-byte character leaves an undecodable tail; it is dropped
    // rather than emitted as invalid UTF-8.
    if !truncated {
        // Count with the metering crate so usage matches the gateway's own count exactly
        // (including its bound for oversized text).
        let tokens = enc.count(text);
        return Tokenized {
            pieces,
            tokens,
            truncated,
        };
    }
    // Re-encoding a truncated prefix is not guaranteed to give the same number of tokens, and
    // reported usage must be the count of the text actually sent and never exceed the budget:
    // recount, dropping trailing pieces until it fits.
    let max = max_tokens.unwrap_or(u64::MAX);
    let mut text: String = pieces.concat();
    let mut tokens = enc.count(&text);
    while tokens > max {
        let Some(last) = pieces.pop() else { break };
        text.truncate(text.len() - last.len());
        tokens = enc.count(&text);
    }
    Tokenized {
        pieces,
        tokens,
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_word_is_one_token_in_both_encodings() {
        for w in VOCAB {
            let spaced = format!(" {w}");
            for enc in [Encoding::O200k, Encoding::Cl100k] {
                assert_eq!(enc.count(w), 1, "{w:?} under {enc:?}");
                assert_eq!(enc.count(&spaced), 1, "{spaced:?} under {enc:?}");
            }
        }
        let mut sorted = VOCAB.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), VOCAB.len(), "duplicate words");
    }

    #[test]
    fn sentences_count_as_their_words() {
        for seed in 0..200u64 {
            let mut rng = Rng::new(seed);
            let n = (seed % 40) as usize;
            let text: String = word_pieces(&mut rng, n).concat();
            assert_eq!(Encoding::O200k.count(&text), n as u64, "{text:?}");
            assert_eq!(Encoding::Cl100k.count(&text), n as u64, "{text:?}");
        }
    }

    #[test]
    fn schema_filling() {
        let schema = json!({"type":"object","properties":{
            "city":{"type":"string"},"n":{"type":"integer"},"x":{"type":"number"},
            "ok":{"type":"boolean"},"unit":{"enum":["c","f"]},"opt":{"type":"string"},
            "nested":{"type":"object","properties":{"a":{"type":["string","null"]}},"required":["a"]},
            "list":{"type":"array"},"any":{}},
            "required":["city","n","x","ok","unit","nested","list","any","missing"]});
        let v = fill_schema(&schema, &mut Rng::new(1));
        assert!(v["city"].is_string());
        assert_eq!(v["n"], 1);
        assert_eq!(v["x"], 1);
        assert_eq!(v["ok"], true);
        assert_eq!(v["unit"], "c");
        assert!(v.get("opt").is_none());
        assert!(v["nested"]["a"].is_string());
        assert_eq!(v["list"], json!([]));
        assert!(v["any"].is_null());
        assert!(v["missing"].is_null());
        // Deep recursion is bounded.
        let mut deep = json!({"type":"string"});
        for _ in 0..100 {
            deep = json!({"type":"object","properties":{"a":deep},"required":["a"]});
        }
        let _ = fill_schema(&deep, &mut Rng::new(1));
        assert_eq!(fill_object_schema(None, &mut Rng::new(1)), json!({}));
    }

    #[test]
    fn tokenize_truncates_on_char_boundaries() {
        let t = tokenize(Encoding::O200k, "{\"answer\":\"the model\"}", None);
        assert_eq!(
            t.tokens,
            Encoding::O200k.count("{\"answer\":\"the model\"}")
        );
        assert_eq!(t.pieces.concat(), "{\"answer\":\"the model\"}");
        assert!(!t.truncated);
        let t = tokenize(Encoding::O200k, "{\"answer\":\"the model\"}", Some(2));
        assert_eq!(t.tokens, 2);
        assert!(t.truncated);
        assert_eq!(Encoding::O200k.count(&t.pieces.concat()), 2);
        let t = tokenize(Encoding::O200k, "日本語のテキスト", Some(1));
        assert!(t.tokens <= 1);
    }

    #[test]
    fn hashing_is_stable() {
        assert_eq!(
            hash_json(&json!({"a":[1,"x"]})),
            hash_json(&json!({"a":[1,"x"]}))
        );
        assert_ne!(hash_json(&json!("ab")), hash_json(&json!(["a", "b"])));
    }
}
