//! Cache keys: SHA-256 over a canonical, unambiguous encoding of everything that can change
//! an answer.
//!
//! The workspace builds `serde_json` with `preserve_order`, so a `Map` iterates in the client's
//! key order; the encoding sorts object keys at every depth, so `{"a":1,"b":2}` and
//! `{"b":2,"a":1}` are the same request. Every value is written with a type tag and every
//! string, number, array and object with a length or count prefix, so no two different inputs
//! can produce the same byte stream by concatenation (`["ab","c"]` vs `["a","bc"]`, a tenant
//! named `x|y` vs tenant `x` with model `y|…`).
//!
//! What goes in: a version tag, the namespace (tenant, key, or global), the endpoint family,
//! the model the client asked for and the logical model that will serve it (a spend policy may
//! have downgraded it), an output cap a policy imposed, and the request body minus
//! [`TRANSPORT_FIELDS`] — messages, tools, tool_choice, response_format and every sampling and
//! output parameter, including ones this build does not know about (an unknown field is
//! assumed to matter: a needless miss is cheap, a wrong hit is not).

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Body fields that change how an answer is delivered or labelled, never what it says.
/// `model` is excluded because the key carries the requested and served logical models
/// explicitly.
pub const TRANSPORT_FIELDS: &[&str] = &["model", "stream", "stream_options", "user", "metadata"];

/// Bumped whenever the encoding changes, so old and new keys can never collide.
const VERSION: &[u8] = b"tollgate-cache-v1";

/// A 32-byte SHA-256 cache key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CacheKey(pub [u8; 32]);

impl std::hash::Hash for CacheKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Already uniformly distributed: eight bytes are a perfect hash-table hash.
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(b));
    }
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

/// Whose answers a key can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace<'a> {
    /// The request's resolved attribution tenant.
    Tenant(&'a str),
    /// No tenant: the virtual key's id, so unattributed keys never share answers either.
    Key(&'a str),
    /// `scope: global` — every caller of the model shares answers.
    Global,
}

/// Everything a key is computed from.
#[derive(Debug, Clone, Copy)]
pub struct KeyInput<'a> {
    pub namespace: Namespace<'a>,
    /// Endpoint family, e.g. `chat` (a `/v1/messages` request translated to the canonical
    /// format is a different family: its answer is rendered differently).
    pub endpoint: &'a str,
    /// The logical model the client asked for.
    pub requested_model: &'a str,
    /// The logical model serving the request (differs after a policy downgrade or reroute).
    pub served_model: &'a str,
    /// An output cap a spend policy imposed, which the upstream body will carry.
    pub policy_cap: Option<u32>,
    /// The client's request body.
    pub body: &'a Map<String, Value>,
}

/// Computes the key of a request.
pub fn compute(input: &KeyInput<'_>) -> CacheKey {
    let mut h = Enc(Sha256::new());
    h.bytes(b'v', VERSION);
    match input.namespace {
        Namespace::Tenant(t) => h.bytes(b'T', t.as_bytes()),
        Namespace::Key(k) => h.bytes(b'K', k.as_bytes()),
        Namespace::Global => h.tag(b'G'),
    }
    h.bytes(b'e', input.endpoint.as_bytes());
    h.bytes(b'm', input.requested_model.as_bytes());
    h.bytes(b'M', input.served_model.as_bytes());
    match input.policy_cap {
        Some(c) => h.bytes(b'c', &c.to_le_bytes()),
        None => h.tag(b'C'),
    }
    let mut fields: Vec<(&String, &Value)> = input
        .body
        .iter()
        .filter(|(k, _)| !TRANSPORT_FIELDS.contains(&k.as_str()))
        .collect();
    fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
    h.object(&fields);
    CacheKey(h.0.finalize().into())
}

/// The canonical encoder, writing straight into the hasher (no intermediate buffer).
struct Enc(Sha256);

impl Enc {
    fn tag(&mut self, t: u8) {
        self.0.update([t]);
    }

    fn len(&mut self, n: usize) {
        self.0.update((n as u64).to_le_bytes());
    }

    fn bytes(&mut self, t: u8, b: &[u8]) {
        self.tag(t);
        self.len(b.len());
        self.0.update(b);
    }

    fn object(&mut self, sorted: &[(&String, &Value)]) {
        self.tag(b'o');
        self.len(sorted.len());
        for (k, v) in sorted {
            self.bytes(b's', k.as_bytes());
            self.value(v);
        }
    }

    fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.tag(b'n'),
            Value::Bool(true) => self.tag(b't'),
            Value::Bool(false) => self.tag(b'f'),
            // The number's JSON text: `0` and `0.0` are different keys, which only costs a
            // miss; equal texts are always the same number.
            Value::Number(n) => self.bytes(b'd', n.to_string().as_bytes()),
            Value::String(s) => self.bytes(b's', s.as_bytes()),
            Value::Array(a) => {
                self.tag(b'a');
                self.len(a.len());
                for x in a {
                    self.value(x);
                }
            }
            Value::Object(o) => {
                let mut fields: Vec<(&String, &Value)> = o.iter().collect();
                fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
                self.object(&fields);
            }
        }
    }
}

/// Whether the request samples: `temperature` above 0, or absent (OpenAI's default is 1).
/// Such answers differ call to call, so they bypass the cache unless the model's config says
/// `cache_nondeterministic: true`.
pub fn is_nondeterministic(body: &Map<String, Value>) -> bool {
    match body.get("temperature") {
        None | Some(Value::Null) => true,
        Some(v) => v.as_f64().is_none_or(|t| t > 0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn key_of(ns: Namespace<'_>, body: &Map<String, Value>) -> CacheKey {
        compute(&KeyInput {
            namespace: ns,
            endpoint: "chat",
            requested_model: "gpt-4o-mini",
            served_model: "gpt-4o-mini",
            policy_cap: None,
            body,
        })
    }

    fn base() -> Value {
        json!({
            "model": "gpt-4o-mini",
            "temperature": 0,
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "number"}}}}},
        })
    }

    #[test]
    fn key_order_does_not_matter_at_any_depth() {
        let a = obj(base());
        let b = obj(json!({
            "response_format": {"json_schema": {"schema": {"properties": {"b": {"type": "number"}, "a": {"type": "string"}}, "type": "object"}, "name": "x"}, "type": "json_schema"},
            "messages": [{"content": "hi", "role": "user"}],
            "temperature": 0,
            "model": "gpt-4o-mini",
        }));
        assert_eq!(
            key_of(Namespace::Tenant("acme"), &a),
            key_of(Namespace::Tenant("acme"), &b)
        );
    }

    #[test]
    fn transport_fields_are_excluded() {
        let a = obj(base());
        let mut b = a.clone();
        b.insert("stream".into(), json!(true));
        b.insert("stream_options".into(), json!({"include_usage": true}));
        b.insert("user".into(), json!("u-1"));
        b.insert("metadata".into(), json!({"k": "v"}));
        b.insert("model".into(), json!("something-else"));
        assert_eq!(key_of(Namespace::Global, &a), key_of(Namespace::Global, &b));
    }

    #[test]
    fn answer_changing_fields_change_the_key() {
        let a = obj(base());
        let k = key_of(Namespace::Global, &a);
        for (field, v) in [
            ("temperature", json!(0.0)),
            ("top_p", json!(0.5)),
            ("n", json!(2)),
            ("stop", json!(["x"])),
            ("seed", json!(7)),
            ("max_tokens", json!(10)),
            ("max_completion_tokens", json!(10)),
            ("presence_penalty", json!(0.1)),
            ("frequency_penalty", json!(0.1)),
            ("logit_bias", json!({"50256": -100})),
            ("logprobs", json!(true)),
            ("top_logprobs", json!(2)),
            ("reasoning_effort", json!("low")),
            ("modalities", json!(["text"])),
            (
                "tools",
                json!([{"type": "function", "function": {"name": "f"}}]),
            ),
            ("tool_choice", json!("required")),
            ("parallel_tool_calls", json!(false)),
            ("some_future_field", json!(1)),
        ] {
            let mut b = a.clone();
            b.insert(field.into(), v);
            assert_ne!(
                k,
                key_of(Namespace::Global, &b),
                "{field} must be in the key"
            );
        }
        let mut b = a.clone();
        b.insert(
            "messages".into(),
            json!([{"role": "user", "content": "hi!"}]),
        );
        assert_ne!(k, key_of(Namespace::Global, &b));
    }

    #[test]
    fn namespaces_never_share_keys() {
        let a = obj(base());
        let keys = [
            key_of(Namespace::Tenant("acme"), &a),
            key_of(Namespace::Tenant("globex"), &a),
            key_of(Namespace::Key("acme"), &a),
            key_of(Namespace::Global, &a),
        ];
        for i in 0..keys.len() {
            for j in i + 1..keys.len() {
                assert_ne!(keys[i], keys[j], "{i} vs {j}");
            }
        }
    }

    #[test]
    fn models_and_policy_cap_are_in_the_key() {
        let a = obj(base());
        let mk = |req: &str, served: &str, cap| {
            compute(&KeyInput {
                namespace: Namespace::Global,
                endpoint: "chat",
                requested_model: req,
                served_model: served,
                policy_cap: cap,
                body: &a,
            })
        };
        let k = mk("a", "a", None);
        assert_ne!(k, mk("a", "b", None));
        assert_ne!(k, mk("b", "a", None));
        assert_ne!(k, mk("a", "a", Some(10)));
        // Concatenation ambiguity: ("ab","c") vs ("a","bc").
        assert_ne!(mk("ab", "c", None), mk("a", "bc", None));
    }

    #[test]
    fn no_concatenation_ambiguity_in_values() {
        let a = obj(
            json!({"messages": [{"role": "user", "content": "ab"}, {"role": "user", "content": "c"}]}),
        );
        let b = obj(
            json!({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "bc"}]}),
        );
        assert_ne!(key_of(Namespace::Global, &a), key_of(Namespace::Global, &b));
        let a = obj(json!({"stop": ["1"]}));
        let b = obj(json!({"stop": [1]}));
        assert_ne!(key_of(Namespace::Global, &a), key_of(Namespace::Global, &b));
        let a = obj(json!({"x": null}));
        let b = obj(json!({}));
        assert_ne!(key_of(Namespace::Global, &a), key_of(Namespace::Global, &b));
    }

    #[test]
    fn determinism() {
        assert!(is_nondeterministic(&obj(json!({}))));
        assert!(is_nondeterministic(&obj(json!({"temperature": null}))));
        assert!(is_nondeterministic(&obj(json!({"temperature": 0.2}))));
        assert!(is_nondeterministic(&obj(json!({"temperature": "0"}))));
        assert!(!is_nondeterministic(&obj(json!({"temperature": 0}))));
        assert!(!is_nondeterministic(&obj(json!({"temperature": 0.0}))));
    }
}
