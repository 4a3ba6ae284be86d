//! Shared helpers for the integration tests: spawn a simulator, talk real HTTP to it.
#![allow(dead_code)]

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
pub use tollgate_sim::{SimConfig, SimHandle};

pub async fn sim(cfg: SimConfig) -> SimHandle {
    tollgate_sim::spawn("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .unwrap()
}

/// reqwest refuses to build a client (even for plain http) without a rustls provider.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn client() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
}

pub async fn post_json(url: &str, body: &Value) -> Reply {
    let resp = client().post(url).json_body(body).send().await.unwrap();
    reply(resp).await
}

pub async fn reply(resp: reqwest::Response) -> Reply {
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
pub trait JsonBody {
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
pub struct Sse {
    pub status: StatusCode,
    pub content_type: String,
    pub data: Vec<String>,
    pub errored: bool,
    /// Number of body reads that delivered data (to observe per-chunk flushing).
    pub reads: usize,
}

impl Sse {
    /// Parsed JSON chunks (everything but `[DONE]`).
    pub fn chunks(&self) -> Vec<Value> {
        self.data
            .iter()
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    pub fn done(&self) -> bool {
        self.data.last().map(String::as_str) == Some("[DONE]")
    }

    /// Concatenated `delta.content` of choice `index`.
    pub fn content(&self, index: u64) -> String {
        self.chunks()
            .iter()
            .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
            .filter(|c| c["index"] == index)
            .filter_map(|c| c["delta"]["content"].as_str().map(str::to_string))
            .collect()
    }
}

pub async fn stream(url: &str, body: &Value) -> Sse {
    let resp = client().post(url).json_body(body).send().await.unwrap();
    read_sse(resp).await
}

pub async fn read_sse(resp: reqwest::Response) -> Sse {
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

pub fn chat_url(h: &SimHandle) -> String {
    format!("{}/chat/completions", h.base_url())
}
