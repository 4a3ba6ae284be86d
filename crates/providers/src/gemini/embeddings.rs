//! OpenAI Embeddings ↔ Gemini `batchEmbedContents` (`v1beta`).
//!
//! Request: `POST {base}/v1beta/models/{model}:batchEmbedContents` with
//! `{"requests":[{"model":"models/{model}","content":{"parts":[{"text":…}]},"outputDimensionality"?:…}]}`
//! — one request per input string, in order (the shape the python-genai SDK sends for the Gemini
//! API). `dimensions` → `outputDimensionality`. Token-array inputs (`[1,2,3]`, `[[1,2]]`) are
//! refused: they are OpenAI tokenizer ids, meaningless to Gemini, and decoding them would need the
//! OpenAI vocabulary.
//!
//! Response: `{"embeddings":[{"values":[…]}]}` → `{"object":"list","data":[{"object":"embedding",
//! "index":i,"embedding":…}],"model":…}`. `encoding_format: "base64"` is honoured — the OpenAI
//! Python SDK asks for it by default and decodes the string as packed little-endian `f32`s — by
//! encoding each value as a little-endian `f32` and the bytes as standard base64. With `float`
//! (the default) the numbers are copied as Gemini sent them.
//!
//! Usage: the Gemini API reports no token counts for embeddings, so usage is `None` (the gateway
//! then estimates it) and the body carries no `usage` object rather than invented zeros. If a
//! response does carry `usageMetadata.promptTokenCount`, it is used for both.

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tollgate_types::Usage;

/// How the client wants vectors encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Float,
    Base64,
}

/// A translated embeddings request.
#[derive(Debug)]
pub struct Prepared {
    pub wire: Value,
    pub encoding: Encoding,
    /// Number of inputs (and so of expected vectors).
    pub count: usize,
}

/// Translates an OpenAI embeddings body for upstream model `model`.
pub fn prepare(body: &Map<String, Value>, model: &str) -> Result<Prepared, String> {
    let inputs: Vec<&str> = match body.get("input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err("'input' is an empty array".into());
            }
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => out.push(s.as_str()),
                    Value::Number(_) | Value::Array(_) => {
                        return Err(
                            "token-array inputs are not supported by Gemini embeddings; \
                             send the input as text"
                                .into(),
                        );
                    }
                    _ => return Err("'input' items must be strings".into()),
                }
            }
            out
        }
        _ => return Err("'input' must be a string or an array of strings".into()),
    };
    let dimensions = match body.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(v) if v.is_u64() => Some(v.clone()),
        Some(_) => return Err("'dimensions' must be a positive integer".into()),
    };
    let encoding = match body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => Encoding::Float,
        Some("base64") => Encoding::Base64,
        Some(other) => return Err(format!("encoding_format '{other}' is not supported")),
    };
    // In the body the model is a resource name, not a URL segment: no percent-encoding.
    let resource = if model.contains('/') {
        model.to_string()
    } else {
        format!("models/{model}")
    };
    let requests: Vec<Value> = inputs
        .iter()
        .map(|text| {
            let mut r = Map::new();
            r.insert("model".into(), resource.clone().into());
            r.insert("content".into(), json!({ "parts": [{ "text": text }] }));
            if let Some(d) = &dimensions {
                r.insert("outputDimensionality".into(), d.clone());
            }
            Value::Object(r)
        })
        .collect();
    Ok(Prepared {
        wire: json!({ "requests": requests }),
        encoding,
        count: inputs.len(),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct BatchResponse {
    embeddings: Option<Vec<Embedding>>,
    usage_metadata: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Embedding {
    values: Option<Vec<Value>>,
}

/// Translates a `batchEmbedContents` response into the OpenAI body and usage.
pub fn to_canonical(
    raw: &[u8],
    model: &str,
    encoding: Encoding,
    expected: usize,
) -> Result<(Bytes, Option<Usage>), String> {
    let resp: BatchResponse =
        serde_json::from_slice(raw).map_err(|e| format!("response is not Gemini JSON: {e}"))?;
    let embeddings = resp.embeddings.unwrap_or_default();
    if embeddings.len() != expected {
        return Err(format!(
            "expected {expected} embeddings, got {}",
            embeddings.len()
        ));
    }
    let mut data = Vec::with_capacity(embeddings.len());
    for (i, e) in embeddings.into_iter().enumerate() {
        let values = e.values.unwrap_or_default();
        let embedding =
            match encoding {
                Encoding::Float => Value::Array(values),
                Encoding::Base64 => Value::String(base64_f32(&values).ok_or_else(|| {
                    format!("embedding {i} contains a value that is not a number")
                })?),
            };
        data.push(json!({ "object": "embedding", "index": i, "embedding": embedding }));
    }
    let prompt_tokens = resp.usage_metadata.as_ref().and_then(|u| {
        u.get("promptTokenCount")
            .or_else(|| u.get("totalTokenCount"))
            .and_then(Value::as_u64)
    });
    let mut body = Map::new();
    body.insert("object".into(), "list".into());
    body.insert("data".into(), Value::Array(data));
    body.insert("model".into(), model.into());
    if let Some(n) = prompt_tokens {
        body.insert(
            "usage".into(),
            json!({ "prompt_tokens": n, "total_tokens": n }),
        );
    }
    let usage = prompt_tokens.map(|n| Usage {
        input_tokens: n,
        ..Usage::default()
    });
    let bytes = serde_json::to_vec(&Value::Object(body))
        .map_err(|e| format!("encode canonical response: {e}"))?;
    Ok((Bytes::from(bytes), usage))
}

/// Little-endian `f32` bytes of `values`, base64 (standard alphabet, padded) — what the OpenAI
/// SDKs decode. `None` if a value is not a number.
pub fn base64_f32(values: &[Value]) -> Option<String> {
    let mut bytes = Vec::with_capacity(values.len() * 4);
    for v in values {
        let f = v.as_f64()? as f32;
        bytes.extend_from_slice(&f.to_le_bytes());
    }
    Some(base64::engine::general_purpose::STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn refuses_token_arrays_and_empty_input() {
        for input in [json!([1, 2, 3]), json!([[1, 2], [3]]), json!([]), json!(7)] {
            let e = prepare(&body(json!({"model":"m","input":input})), "m");
            assert!(e.is_err(), "{input}");
        }
        let e = prepare(&body(json!({"input":[1]})), "m").err().unwrap();
        assert!(e.contains("token-array"), "{e}");
    }

    #[test]
    fn base64_is_little_endian_f32() {
        // 1.0f32 = 0x3f800000 → bytes 00 00 80 3f → "AACAPw=="
        assert_eq!(base64_f32(&[json!(1.0)]).unwrap(), "AACAPw==");
        assert_eq!(base64_f32(&[json!("x")]), None);
    }

    #[test]
    fn count_mismatch_is_an_error() {
        let raw = br#"{"embeddings":[{"values":[0.1]}]}"#;
        assert!(to_canonical(raw, "m", Encoding::Float, 2).is_err());
        assert!(to_canonical(b"[]", "m", Encoding::Float, 1).is_err());
    }
}
