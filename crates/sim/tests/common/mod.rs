//! Shared helpers for the integration tests: spawn a simulator, talk real HTTP to it.
#![allow(dead_code)]

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
pub(crate) use tollgate_sim::{SimConfig, SimHandle};

pub(crate) async fn sim(cfg: SimConfig) -> SimHandle {
    tollgate_sim::spawn("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .unwrap()
}

/// reqwest refuses to build a client (even for plain http) without a rustls provider.
pub(crate) fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub(crate) fn client() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
}

pub(crate) async fn post_json(url: &str, body: &Value) -> Reply {
    let resp = client().post(url).json_body(body).send().await.unwrap();
    reply(resp).await
}

pub(crate) async fn reply(resp: reqwest::Response) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    Reply {
        status,
        headers,
        json,
    }
}

/// Sets a JSON body without needing reqwest's `json` feature.
pub(crate) trait JsonBody {
    fn json_body(self, v: &Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, v: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(serde_json::to_vec(v).unwrap())
    }
}

/// A streamed response read to its end: the `data:` payloads in order and whether the body
/// ended with a transport error (a cut stream).
pub(crate) struct Sse {
    pub status: StatusCode,
    pub content_type: String,
    pub data: Vec<String>,
    pub errored: bool,
    /// Number of body reads that delivered data (to observe per-chunk flushing).
    pub reads: usize,
}

impl Sse {
    /// Parsed JSON chunks (everything but `[DONE]`).
    pub(crate) fn chunks(&self) -> Vec<Value> {
        self.data
            .iter()
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    pub(crate) fn done(&self) -> bool {
        self.data.last().map(String::as_str) == Some("[DONE]")
    }

    /// Concatenated `delta.content` of choice `index`.
    pub(crate) fn content(&self, index: u64) -> String {
        self.chunks()
            .iter()
            .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
            .filter(|c| c["index"] == index)
            .filter_map(|c| c["delta"]["content"].as_str().map(str::to_string))
            .collect()
    }
}

pub(crate) async fn stream(url: &str, body: &Value) -> Sse {
    let resp = client().post(url).json_body(body).send().await.unwrap();
    read_sse(resp).await
}

pub(crate) async fn read_sse(resp: reqwest::Response) -> Sse {
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut body = resp.bytes_stream();
    let mut buf = Vec::new();
    let mut errored = false;
    let mut reads = 0;
    while let Some(item) = body.next().await {
        match item {
            Ok(b) => {
                reads += 1;
                buf.extend_from_slice(&b);
            }
            Err(_) => {
                errored = true;
                break;
            }
        }
    }
    let text = String::from_utf8(buf).unwrap();
    let mut data = Vec::new();
    for event in text.split("\n\n") {
        if event.is_empty() {
            continue;
        }
        let payload = event
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("bad SSE event {event:?}"));
        data.push(payload.to_string());
    }
    Sse {
        status,
        content_type,
        data,
        errored,
        reads,
    }
}

pub(crate) fn chat_url(h: &SimHandle) -> String {
    format!("{}/chat/completions", h.base_url())
}

/// A response body read to its end, whatever its framing: the bytes received and whether the
/// body ended with a transport error (a cut stream).
pub(crate) struct Raw {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
    pub errored: bool,
}

impl Raw {
    pub(crate) fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.bytes)))
    }
}

pub(crate) async fn read_raw(resp: reqwest::Response) -> Raw {
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut body = resp.bytes_stream();
    let mut bytes = Vec::new();
    let mut errored = false;
    while let Some(item) = body.next().await {
        match item {
            Ok(b) => bytes.extend_from_slice(&b),
            Err(_) => {
                errored = true;
                break;
            }
        }
    }
    Raw {
        status,
        headers,
        bytes,
        errored,
    }
}

/// POSTs JSON with extra headers and reads the whole body.
pub(crate) async fn post_raw(url: &str, headers: &[(&str, &str)], body: &Value) -> Raw {
    let mut req = client().post(url).json_body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    read_raw(req.send().await.unwrap()).await
}

/// Named SSE events (`event: NAME` / `data: JSON`), as Anthropic sends them.
pub(crate) fn named_events(raw: &Raw) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(&raw.bytes).unwrap();
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e
                .strip_prefix("event: ")
                .and_then(|e| e.split_once("\ndata: "))
                .unwrap_or_else(|| panic!("bad SSE event {e:?}"));
            (name.to_string(), serde_json::from_str(data).unwrap())
        })
        .collect()
}

/// CRC-32 (IEEE), computed bit by bit: an independent check of the simulator's table.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for b in bytes {
        c ^= u32::from(*b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// One decoded AWS event-stream message.
#[derive(Debug)]
pub(crate) struct EventMessage {
    pub headers: Vec<(String, String)>,
    pub payload: Value,
}

impl EventMessage {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no header {name}"))
    }

    pub(crate) fn event_type(&self) -> &str {
        self.header(":event-type")
    }
}

/// Decodes AWS event-stream messages, checking both CRCs of each. Returns the messages and
/// the number of trailing bytes that do not form a complete message.
pub(crate) fn decode_event_stream(mut bytes: &[u8]) -> (Vec<EventMessage>, usize) {
    let mut out = Vec::new();
    while bytes.len() >= 16 {
        let total = u32::from_be_bytes(bytes[0..4].try_into().unwrap()) as usize;
        if bytes.len() < total {
            break;
        }
        let headers_len = u32::from_be_bytes(bytes[4..8].try_into().unwrap()) as usize;
        let prelude_crc = u32::from_be_bytes(bytes[8..12].try_into().unwrap());
        assert_eq!(prelude_crc, crc32(&bytes[0..8]), "prelude CRC");
        let msg_crc = u32::from_be_bytes(bytes[total - 4..total].try_into().unwrap());
        assert_eq!(msg_crc, crc32(&bytes[..total - 4]), "message CRC");
        let mut h = &bytes[12..12 + headers_len];
        let mut headers = Vec::new();
        while !h.is_empty() {
            let n = h[0] as usize;
            let name = std::str::from_utf8(&h[1..1 + n]).unwrap().to_string();
            assert_eq!(h[1 + n], 7, "string header");
            let len = u16::from_be_bytes([h[2 + n], h[3 + n]]) as usize;
            let value = std::str::from_utf8(&h[4 + n..4 + n + len])
                .unwrap()
                .to_string();
            headers.push((name, value));
            h = &h[4 + n + len..];
        }
        let payload = serde_json::from_slice(&bytes[12 + headers_len..total - 4]).unwrap();
        out.push(EventMessage { headers, payload });
        bytes = &bytes[total..];
    }
    (out, bytes.len())
}

/// Merges `extra`'s fields into `base` (test bodies).
pub(crate) fn merged(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

/// About `chars` characters of varied prose, tagged so different tags never share a prefix
/// (long enough prompts for the `prompt_cache` knob, which caches from 1,024 tokens).
pub(crate) fn long_text(tag: &str, chars: usize) -> String {
    const WORDS: [&str; 12] = [
        "ledger", "budget", "forecast", "tenant", "invoice", "quarter", "margin", "routing",
        "cache", "provider", "latency", "policy",
    ];
    let mut s = format!("[{tag}] ");
    let mut i = 0usize;
    while s.len() < chars {
        s.push_str(WORDS[(i * 7 + i / 12) % WORDS.len()]);
        s.push_str(if i % 9 == 8 { ". " } else { " " });
        i += 1;
    }
    s
}
