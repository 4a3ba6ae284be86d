//! W3C Trace Context: the `traceparent` a client sends is continued (its trace id, its span as
//! our server span's parent, its sampled flag); without one a trace starts here and is sampled
//! by its id, so every replica decides the same for the same trace.

/// A request's place in a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// The client's span, when the client sent a `traceparent`.
    pub parent_span_id: Option<[u8; 8]>,
    /// Whether the spans of this request are exported (metrics always are).
    pub sampled: bool,
    /// The client's `tracestate`, passed on unchanged (bounded; dropped when too long).
    pub tracestate: Option<String>,
}

/// Longest `tracestate` kept (the spec's limit is 32 members of up to 256 bytes; 512 bytes
/// covers real use, and the value is stored in every exported span).
const MAX_TRACESTATE: usize = 512;

impl TraceContext {
    /// Continues the client's trace, or starts one sampled with probability `ratio`.
    pub fn start(traceparent: Option<&str>, tracestate: Option<&str>, ratio: f64) -> Self {
        if let Some((trace_id, parent, sampled)) = traceparent.and_then(parse_traceparent) {
            return TraceContext {
                trace_id,
                parent_span_id: Some(parent),
                sampled,
                tracestate: tracestate
                    .filter(|s| s.len() <= MAX_TRACESTATE && s.is_ascii())
                    .map(str::to_string),
            };
        }
        let trace_id = new_trace_id();
        TraceContext {
            sampled: sample(&trace_id, ratio),
            trace_id,
            parent_span_id: None,
            tracestate: None,
        }
    }
}

/// Parses a `traceparent` header: `version-traceid-parentid-flags`, lowercase hex. Version
/// `ff`, all-zero ids and malformed values are invalid (a new trace starts). A future version
/// is read by its first four fields, as the spec asks.
pub fn parse_traceparent(s: &str) -> Option<([u8; 16], [u8; 8], bool)> {
    let s = s.trim();
    let mut parts = s.split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    if version.len() != 2 || version == "ff" || !is_lower_hex(version) {
        return None;
    }
    if version == "00" && (parts.next().is_some() || s.len() != 55) {
        return None;
    }
    if trace.len() != 32 || parent.len() != 16 || flags.len() != 2 {
        return None;
    }
    if !is_lower_hex(trace) || !is_lower_hex(parent) || !is_lower_hex(flags) {
        return None;
    }
    let mut t = [0u8; 16];
    let mut p = [0u8; 8];
    let mut f = [0u8; 1];
    hex::decode_to_slice(trace, &mut t).ok()?;
    hex::decode_to_slice(parent, &mut p).ok()?;
    hex::decode_to_slice(flags, &mut f).ok()?;
    if t == [0; 16] || p == [0; 8] {
        return None;
    }
    Some((t, p, f[0] & 1 == 1))
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The `traceparent` naming `span_id` in `trace_id`.
pub fn format_traceparent(trace_id: &[u8; 16], span_id: &[u8; 8], sampled: bool) -> String {
    format!(
        "00-{}-{}-{}",
        hex::encode(trace_id),
        hex::encode(span_id),
        if sampled { "01" } else { "00" }
    )
}

/// A random, non-zero span id.
pub fn new_span_id() -> [u8; 8] {
    loop {
        let id: [u8; 8] = rand::random();
        if id != [0; 8] {
            return id;
        }
    }
}

/// A random, non-zero trace id.
pub fn new_trace_id() -> [u8; 16] {
    loop {
        let id: [u8; 16] = rand::random();
        if id != [0; 16] {
            return id;
        }
    }
}

/// The trace-id-ratio rule: sampled when the id's low 8 bytes, read as an integer, fall below
/// `ratio` × 2⁶⁴. Deterministic per trace.
fn sample(trace_id: &[u8; 16], ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio.is_nan() || ratio <= 0.0 {
        return false;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    let x = u64::from_be_bytes(low);
    // ratio in (0, 1): the threshold fits in u64.
    let threshold = (ratio * (u64::MAX as f64)) as u64;
    x < threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_example_and_refuses_bad_ones() {
        let (t, p, s) =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(hex::encode(t), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(p), "00f067aa0ba902b7");
        assert!(s);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        // A future version is read by its first four fields.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what")
                .is_some()
        );
    }

    #[test]
    fn round_trips_and_samples_by_ratio() {
        let (t, s) = (new_trace_id(), new_span_id());
        let h = format_traceparent(&t, &s, true);
        assert_eq!(parse_traceparent(&h), Some((t, s, true)));
        assert!(TraceContext::start(None, None, 1.0).sampled);
        assert!(!TraceContext::start(None, None, 0.0).sampled);
        let n = (0..20_000)
            .filter(|_| TraceContext::start(None, None, 0.25).sampled)
            .count();
        assert!((4_000..6_000).contains(&n), "{n}");
        // The client's decision wins.
        let c = TraceContext::start(Some(&format_traceparent(&t, &s, false)), Some("k=v"), 1.0);
        assert!(!c.sampled);
        assert_eq!(c.parent_span_id, Some(s));
        assert_eq!(c.tracestate.as_deref(), Some("k=v"));
    }
}
