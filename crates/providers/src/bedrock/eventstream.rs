//! Incremental decoder for the AWS event-stream framing (`application/vnd.amazon.eventstream`),
//! the binary body of Bedrock `ConverseStream`.
//!
//! Each message is
//!
//! ```text
//! [total length u32 BE][headers length u32 BE][prelude CRC32 u32 BE]
//! [headers …][payload …][message CRC32 u32 BE]
//! ```
//!
//! where the prelude CRC covers the first 8 bytes and the message CRC every byte before it (CRC-32
//! IEEE, as in gzip). A header is `name_len u8, name, value_type u8, value`; Bedrock only sends
//! string headers (`:event-type`, `:message-type`, `:content-type`, `:exception-type`), but every
//! value type of the encoding is parsed so an unexpected one is skipped rather than misread.
//!
//! Bytes arrive in arbitrary TCP-sized pieces, so the decoder buffers until a whole message is
//! present, then hands it out without copying its payload. It never trusts a length before the
//! prelude CRC vouches for it, caps the message size, and reports corruption as an error — a
//! byte stream that has lost framing cannot be resynchronised, so the caller ends the stream.

use bytes::{Buf, Bytes, BytesMut};

/// Prelude (two lengths + CRC) plus the trailing message CRC.
const OVERHEAD: usize = 16;
const PRELUDE: usize = 12;

/// Largest message accepted. Bedrock events carry one token or one metadata object; a length
/// beyond this is corruption or abuse, and refusing it bounds the buffer.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Why the byte stream cannot be decoded any further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error(
        "event-stream prelude CRC mismatch (expected {expected:#010x}, computed {actual:#010x})"
    )]
    PreludeCrc { expected: u32, actual: u32 },
    #[error(
        "event-stream message CRC mismatch (expected {expected:#010x}, computed {actual:#010x})"
    )]
    MessageCrc { expected: u32, actual: u32 },
    #[error("event-stream message length {0} is out of range")]
    Length(u32),
    #[error("event-stream headers length {headers} does not fit a message of {total} bytes")]
    HeadersLength { headers: u32, total: u32 },
    #[error("malformed event-stream header: {0}")]
    Header(&'static str),
}

/// One decoded message. Only the headers an adapter reads are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    /// `:message-type`: `event`, `exception` or `error`.
    pub message_type: Option<String>,
    /// `:event-type`: the union member name of an event (`contentBlockDelta`, …).
    pub event_type: Option<String>,
    /// `:exception-type`: the modelled exception of an `exception` message.
    pub exception_type: Option<String>,
    /// `:content-type` of the payload.
    pub content_type: Option<String>,
    /// `:error-code` / `:error-message` of an unmodelled `error` message.
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub payload: Bytes,
}

impl Frame {
    pub fn is_event(&self) -> bool {
        self.message_type.as_deref().is_none_or(|t| t == "event")
    }
}

/// Buffers bytes and yields complete messages.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet part of a complete message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < PRELUDE {
            return Ok(None);
        }
        let total = be32(&self.buf[0..4]);
        let headers_len = be32(&self.buf[4..8]);
        let expected = be32(&self.buf[8..12]);
        let actual = crc32fast::hash(&self.buf[0..8]);
        if expected != actual {
            return Err(FrameError::PreludeCrc { expected, actual });
        }
        let total_usize = total as usize;
        if !(OVERHEAD..=MAX_MESSAGE_BYTES).contains(&total_usize) {
            return Err(FrameError::Length(total));
        }
        if headers_len as usize > total_usize - OVERHEAD {
            return Err(FrameError::HeadersLength {
                headers: headers_len,
                total,
            });
        }
        if self.buf.len() < total_usize {
            // Reserve once for the rest of this message instead of growing piecemeal.
            self.buf.reserve(total_usize - self.buf.len());
            return Ok(None);
        }
        let expected = be32(&self.buf[total_usize - 4..total_usize]);
        let actual = crc32fast::hash(&self.buf[..total_usize - 4]);
        if expected != actual {
            return Err(FrameError::MessageCrc { expected, actual });
        }
        let mut message = self.buf.split_to(total_usize).freeze();
        message.advance(PRELUDE);
        let headers = message.split_to(headers_len as usize);
        message.truncate(message.len() - 4);
        let mut frame = Frame {
            payload: message,
            ..Frame::default()
        };
        parse_headers(&headers, &mut frame)?;
        Ok(Some(frame))
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads `n` bytes at `*pos`, advancing it; `None` past the end.
fn take<'a>(b: &'a [u8], pos: &mut usize, n: usize) -> Option<&'a [u8]> {
    let end = pos.checked_add(n)?;
    let out = b.get(*pos..end)?;
    *pos = end;
    Some(out)
}

fn parse_headers(b: &[u8], frame: &mut Frame) -> Result<(), FrameError> {
    let truncated = FrameError::Header("truncated");
    let mut pos = 0;
    while pos < b.len() {
        let name_len = take(b, &mut pos, 1).ok_or(truncated.clone())?[0] as usize;
        let name = take(b, &mut pos, name_len).ok_or(truncated.clone())?;
        let value_type = take(b, &mut pos, 1).ok_or(truncated.clone())?[0];
        // Fixed-size values are skipped; byte arrays and strings carry a u16 length.
        let fixed = match value_type {
            0 | 1 => Some(0), // bool true / false: no value bytes
            2 => Some(1),     // byte
            3 => Some(2),     // short
            4 => Some(4),     // integer
            5 | 8 => Some(8), // long, timestamp (ms since epoch)
            9 => Some(16),    // uuid
            6 | 7 => None,    // byte array, string
            _ => return Err(FrameError::Header("unknown value type")),
        };
        if let Some(n) = fixed {
            take(b, &mut pos, n).ok_or(truncated.clone())?;
            continue;
        }
        let len = take(b, &mut pos, 2).ok_or(truncated.clone())?;
        let len = u16::from_be_bytes([len[0], len[1]]) as usize;
        let value = take(b, &mut pos, len).ok_or(truncated.clone())?;
        if value_type != 7 {
            continue;
        }
        let slot = match name {
            b":message-type" => &mut frame.message_type,
            b":event-type" => &mut frame.event_type,
            b":exception-type" => &mut frame.exception_type,
            b":content-type" => &mut frame.content_type,
            b":error-code" => &mut frame.error_code,
            b":error-message" => &mut frame.error_message,
            _ => continue,
        };
        *slot = Some(String::from_utf8_lossy(value).into_owned());
    }
    Ok(())
}

/// Encodes one message with string headers: the inverse of [`Decoder`], for tests and the
/// simulated upstream.
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = (OVERHEAD + h.len() + payload.len()) as u32;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event(kind: &str, payload: &str) -> Vec<u8> {
        encode(
            &[
                (":event-type", kind),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.as_bytes(),
        )
    }

    fn decode_all(parts: &[&[u8]]) -> Result<Vec<Frame>, FrameError> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for p in parts {
            d.push(p);
            while let Some(f) = d.next_frame()? {
                out.push(f);
            }
        }
        Ok(out)
    }

    #[test]
    fn known_answer_frame() {
        // An empty message: total 16, no headers, CRC32("\0\0\0\x10\0\0\0\0") = 0x05c248eb.
        let bytes = encode(&[], b"");
        assert_eq!(
            &bytes[..12],
            b"\x00\x00\x00\x10\x00\x00\x00\x00\x05\xc2\x48\xeb"
        );
        let frames = decode_all(&[&bytes]).unwrap();
        assert_eq!(frames, vec![Frame::default()]);
    }

    #[test]
    fn decodes_headers_and_payload() {
        let bytes = event("contentBlockDelta", r#"{"delta":{"text":"Hi"}}"#);
        let f = decode_all(&[&bytes]).unwrap().remove(0);
        assert_eq!(f.event_type.as_deref(), Some("contentBlockDelta"));
        assert_eq!(f.message_type.as_deref(), Some("event"));
        assert_eq!(f.content_type.as_deref(), Some("application/json"));
        assert_eq!(&f.payload[..], br#"{"delta":{"text":"Hi"}}"#);
        assert!(f.is_event());
    }

    #[test]
    fn skips_non_string_headers() {
        // Hand-built headers: a bool, a long, a uuid and a byte array before the string.
        let mut h = Vec::new();
        for (name, ty, value) in [
            ("b", 0u8, vec![]),
            ("l", 5, vec![0; 8]),
            ("u", 9, vec![7; 16]),
            ("a", 6, vec![0, 2, 9, 9]),
            (":event-type", 7, [&[0u8, 4][..], b"ping"].concat()),
        ] {
            h.push(name.len() as u8);
            h.extend_from_slice(name.as_bytes());
            h.push(ty);
            h.extend_from_slice(&value);
        }
        let total = (16 + h.len()) as u32;
        let mut m = [total.to_be_bytes(), (h.len() as u32).to_be_bytes()].concat();
        m.extend_from_slice(&crc32fast::hash(&m).to_be_bytes());
        m.extend_from_slice(&h);
        m.extend_from_slice(&crc32fast::hash(&m).to_be_bytes());
        let f = decode_all(&[&m]).unwrap().remove(0);
        assert_eq!(f.event_type.as_deref(), Some("ping"));
        assert!(f.payload.is_empty());
    }

    #[test]
    fn crc_mismatches_are_errors() {
        let mut bytes = event("messageStart", r#"{"role":"assistant"}"#);
        let last = bytes.len() - 6;
        bytes[last] ^= 0x01;
        assert!(matches!(
            decode_all(&[&bytes]),
            Err(FrameError::MessageCrc { .. })
        ));
        let mut bytes = event("messageStart", r#"{"role":"assistant"}"#);
        bytes[3] ^= 0x01;
        assert!(matches!(
            decode_all(&[&bytes]),
            Err(FrameError::PreludeCrc { .. })
        ));
    }

    #[test]
    fn huge_or_tiny_lengths_are_refused_before_buffering() {
        for total in [0u32, 15, u32::MAX, (MAX_MESSAGE_BYTES + 1) as u32] {
            let mut m = [total.to_be_bytes(), 0u32.to_be_bytes()].concat();
            m.extend_from_slice(&crc32fast::hash(&m).to_be_bytes());
            assert_eq!(decode_all(&[&m]), Err(FrameError::Length(total)));
        }
        let mut m = [20u32.to_be_bytes(), 5u32.to_be_bytes()].concat();
        m.extend_from_slice(&crc32fast::hash(&m).to_be_bytes());
        assert!(matches!(
            decode_all(&[&m]),
            Err(FrameError::HeadersLength { .. })
        ));
    }

    #[test]
    fn truncated_headers_are_errors() {
        // Headers length claims 3 bytes: a name length of 9 with only 2 name bytes.
        let h = [9u8, b'a', b'b'];
        let total = (16 + h.len()) as u32;
        let mut m = [total.to_be_bytes(), 3u32.to_be_bytes()].concat();
        m.extend_from_slice(&crc32fast::hash(&m).to_be_bytes());
        m.extend_from_slice(&h);
        m.extend_from_slice(&crc32fast::hash(&m).to_be_bytes());
        assert_eq!(decode_all(&[&m]), Err(FrameError::Header("truncated")));
    }

    proptest! {
        /// However the bytes are split across reads, the decoded frames are the same.
        #[test]
        fn split_invariant(
            payloads in proptest::collection::vec("[ -~]{0,40}", 1..6),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let input: Vec<u8> = payloads
                .iter()
                .enumerate()
                .flat_map(|(i, p)| event(if i % 2 == 0 { "a" } else { "contentBlockDelta" }, p))
                .collect();
            let whole = decode_all(&[&input]).unwrap();
            prop_assert_eq!(whole.len(), payloads.len());
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            cuts.sort_unstable();
            let mut parts = Vec::new();
            let mut last = 0;
            for c in cuts {
                parts.push(&input[last..c]);
                last = c;
            }
            parts.push(&input[last..]);
            prop_assert_eq!(decode_all(&parts).unwrap(), whole);
        }

        /// Arbitrary bytes never panic: they decode, wait for more, or fail.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_all(&[&bytes]);
        }

        /// Garbage that passes the prelude CRC (so lengths are trusted) never panics either.
        #[test]
        fn valid_prelude_garbage_never_panics(
            headers_len in 0u32..64,
            body in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let total = (16 + body.len()) as u32;
            let mut m = [total.to_be_bytes(), headers_len.to_be_bytes()].concat();
            m.extend_from_slice(&crc32fast::hash(&m).to_be_bytes());
            m.extend_from_slice(&body);
            m.extend_from_slice(&crc32fast::hash(&m).to_be_bytes());
            let _ = decode_all(&[&m]);
        }
    }
}
