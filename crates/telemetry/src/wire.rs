//! Protobuf wire format, just what spans need: varints, fixed-width integers, length-delimited
//! fields and the two `KeyValue` shapes, written into a `Vec<u8>` whose nested lengths the
//! caller computes. `prost`'s generated types would build a tree of owned strings per span
//! and measure every nested message again at each level while encoding; a span is written
//! once here. What it writes is checked by decoding it with those generated types (tests).
//!
//! Proto3 rules: a scalar or string field equal to its default is not written; a nested
//! message is written whenever it is present, even empty ([`len_prefix`]).

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

fn key(out: &mut Vec<u8>, field: u32, wire_type: u32) {
    varint(out, u64::from(field << 3 | wire_type));
}

pub(crate) fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes [`varint`] writes for `v`.
pub(crate) fn varint_len(v: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// A length-delimited field's key and length; the caller writes exactly `len` bytes next.
pub(crate) fn len_prefix(out: &mut Vec<u8>, field: u32, len: usize) {
    key(out, field, LEN);
    varint(out, len as u64);
}

/// A `bytes`, `string` or encoded-message field; nothing when empty.
pub(crate) fn bytes(out: &mut Vec<u8>, field: u32, v: &[u8]) {
    if !v.is_empty() {
        len_prefix(out, field, v.len());
        out.extend_from_slice(v);
    }
}

/// A `string` field given in parts (written back to back, as one value).
pub(crate) fn bytes_parts(out: &mut Vec<u8>, field: u32, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > 0 {
        len_prefix(out, field, len);
        for p in parts {
            out.extend_from_slice(p);
        }
    }
}

/// A `uint32`/`uint64`/enum field; nothing when 0.
pub(crate) fn uint(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        key(out, field, VARINT);
        varint(out, v);
    }
}

pub(crate) fn fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        key(out, field, FIXED64);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

pub(crate) fn fixed32(out: &mut Vec<u8>, field: u32, v: u32) {
    if v != 0 {
        key(out, field, FIXED32);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// A `KeyValue` (`key` = 1, `value` = 2) whose `AnyValue` holds one field of `value_len`
/// bytes after its key; returns after the `AnyValue`'s key and length, for the caller to
/// write the value field.
fn kv_head(out: &mut Vec<u8>, field: u32, k: &str, value_len: usize) {
    let any = 1 + value_len;
    let kv = 1 + varint_len(k.len() as u64) + k.len() + 1 + varint_len(any as u64) + any;
    len_prefix(out, field, kv);
    len_prefix(out, 1, k.len());
    out.extend_from_slice(k.as_bytes());
    len_prefix(out, 2, any);
}

/// A `KeyValue` with a `string_value` (`AnyValue` field 1, written even when empty: a oneof
/// member is present).
pub(crate) fn kv_str(out: &mut Vec<u8>, field: u32, k: &str, v: &str) {
    kv_head(out, field, k, varint_len(v.len() as u64) + v.len());
    len_prefix(out, 1, v.len());
    out.extend_from_slice(v.as_bytes());
}

/// A `KeyValue` with an `int_value` (`AnyValue` field 3, two's complement varint).
pub(crate) fn kv_int(out: &mut Vec<u8>, field: u32, k: &str, v: i64) {
    let v = v as u64;
    kv_head(out, field, k, varint_len(v));
    key(out, 3, VARINT);
    varint(out, v);
}

/// A `KeyValue` with a `bool_value` (`AnyValue` field 2).
pub(crate) fn kv_bool(out: &mut Vec<u8>, field: u32, k: &str, v: bool) {
    kv_head(out, field, k, 1);
    key(out, 2, VARINT);
    out.push(u8::from(v));
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use prost::Message;

    use super::*;

    #[test]
    fn varint_lengths() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
        }
    }

    /// Key-values written here decode, with the generated types, to what they say.
    #[test]
    fn key_values_decode() {
        let long = "x".repeat(300);
        for (k, v) in [
            ("a", Value::StringValue(String::new())),
            ("gen_ai.request.model", Value::StringValue("gpt-4o".into())),
            (long.as_str(), Value::StringValue(long.clone())),
            ("n", Value::IntValue(0)),
            ("n", Value::IntValue(i64::MAX)),
            ("n", Value::IntValue(-1)),
            ("b", Value::BoolValue(true)),
            ("b", Value::BoolValue(false)),
        ] {
            let mut out = Vec::new();
            match &v {
                Value::StringValue(s) => kv_str(&mut out, 1, k, s),
                Value::IntValue(i) => kv_int(&mut out, 1, k, *i),
                Value::BoolValue(b) => kv_bool(&mut out, 1, k, *b),
                _ => unreachable!(),
            }
            // Field 1 of a wrapper message: a length-delimited KeyValue.
            let mut inner = out.as_slice();
            let tag = prost::encoding::decode_varint(&mut inner).unwrap();
            assert_eq!(tag, 1 << 3 | 2);
            let len = prost::encoding::decode_varint(&mut inner).unwrap() as usize;
            assert_eq!(len, inner.len());
            let got = KeyValue::decode(inner).unwrap();
            let want = KeyValue {
                key: k.to_string(),
                value: Some(AnyValue { value: Some(v) }),
                ..Default::default()
            };
            assert_eq!(got, want);
            assert_eq!(
                want.encode_to_vec(),
                inner,
                "byte for byte as prost writes it"
            );
        }
    }
}
