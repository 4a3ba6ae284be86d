//! The test harness: a simulated provider and a gateway, both in-process on ephemeral loopback
//! ports, assembled exactly the way `tollgate serve` does it (YAML → `Config::from_yaml_str` →
//! `tollgate::assemble::gateway_parts` → `Gateway::new` → `tollgate_server::serve`), each test
//! with its own temp-dir SQLite ledger, master key and HTTP client.
//!
//! Nothing here touches the process environment: `${VAR}` references in the YAML are resolved
//! from a map passed as the config's `EnvSource`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tollgate_config::Config;
use tollgate_server::ShutdownSummary;
use tollgate_sim::{SimConfig, SimHandle};
use tollgate_store::Store;

/// The admin credential of every test gateway (passed through `${TOLLGATE_MASTER_KEY}`).
pub const MASTER: &str = "it-master-0123456789abcdef";
/// The provider credential used when a test turns provider auth on.
pub const SIM_KEY: &str = "sk-sim-provider-7f3a9c2e-secret-kqzw";

/// Generous guard against hangs; never an assertion about speed.
pub const HANG_GUARD: Duration = Duration::from_secs(30);

/// What a test wants from its environment. `Default` gives an OpenAI-kind provider `sim`
/// without auth and the models `gpt-4o-mini`, `gpt-4o`, `text-embedding-3-small` and
/// `custom` (an upstream name with no price).
#[derive(Clone)]
pub struct Opts {
    pub sim: SimConfig,
    /// Set `api_key` on the provider (and the sim) to [`SIM_KEY`].
    pub provider_auth: bool,
    /// `providers.sim.timeouts.first_byte_ms`.
    pub first_byte_ms: Option<u64>,
    /// `providers.sim.timeouts.idle_ms`.
    pub idle_ms: Option<u64>,
    pub max_body_bytes: Option<u64>,
    pub shutdown_grace_secs: u64,
    /// `pricing.unknown_model: allow`.
    pub allow_unpriced: bool,
    /// Extra YAML under `providers:` (indented by 2). `{sim_root}` is replaced by
    /// `http://ADDR` of the simulator.
    pub extra_providers: String,
    /// Extra YAML under `models:` (indented by 2).
    pub extra_models: String,
    /// Extra variables for `${…}` interpolation.
    pub env: Vec<(String, String)>,
    /// Extra top-level YAML sections (e.g. `budgets:`), appended verbatim.
    pub extra_yaml: String,
    /// Extra YAML under `server:` (indented by 2).
    pub extra_server: String,
    /// Extra YAML under `storage:` (indented by 2).
    pub extra_storage: String,
    /// The default models make one upstream attempt and never open a breaker: for tests of
    /// how one upstream failure maps to the client (retries are `routing.rs`'s subject).
    pub single_attempt: bool,
}

/// Flow-mapping entries that give a model one attempt and a breaker that never opens.
pub const SINGLE_ATTEMPT: &str = "retry: {max_attempts: 1}, breaker: {enabled: false}";

impl Default for Opts {
    fn default() -> Self {
        Opts {
            sim: SimConfig::default(),
            provider_auth: false,
            first_byte_ms: None,
            idle_ms: None,
            max_body_bytes: None,
            shutdown_grace_secs: 30,
            allow_unpriced: false,
            extra_providers: String::new(),
            extra_models: String::new(),
            env: Vec::new(),
            extra_yaml: String::new(),
            extra_server: String::new(),
            extra_storage: String::new(),
            single_attempt: false,
        }
    }
}

/// A running gateway.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<ShutdownSummary>>>,
}

impl Running {
    /// Triggers a graceful shutdown without waiting for it.
    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for `serve` to return (after [`Running::trigger_shutdown`]).
    pub async fn join(&mut self) -> ShutdownSummary {
        let task = self.task.take().expect("gateway already joined");
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("serve did not return")
            .expect("serve task panicked")
            .expect("serve failed")
    }
}

pub struct TestEnv {
    pub sim: SimHandle,
    pub dir: TempDir,
    pub db: PathBuf,
    pub yaml: String,
    env: HashMap<String, String>,
    pub gw: Running,
    pub http: reqwest::Client,
}

/// Starts a gateway from `yaml` (what `tollgate serve` does after loading the file).
pub async fn start_gateway(yaml: &str, env: &HashMap<String, String>) -> Running {
    tollgate_providers::http::install_crypto_provider();
    let loaded = Config::from_yaml_str(yaml, env)
        .unwrap_or_else(|e| panic!("test config invalid: {e}\n{yaml}"));
    let cfg = loaded.config;
    let parts = tollgate::assemble::gateway_parts(&cfg).expect("gateway parts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway");
    let addr = listener.local_addr().unwrap();
    let gw = tollgate_server::Gateway::new(parts).expect("gateway");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(tollgate_server::serve(listener, gw, async move {
        let _ = rx.await;
    }));
    Running {
        addr,
        stop: Some(tx),
        task: Some(task),
    }
}

impl TestEnv {
    pub async fn start() -> TestEnv {
        TestEnv::with(Opts::default()).await
    }

    pub async fn with(opts: Opts) -> TestEnv {
        let mut sim_cfg = opts.sim.clone();
        if opts.provider_auth {
            sim_cfg.api_key = Some(SIM_KEY.to_string());
        }
        let sim = tollgate_sim::spawn("127.0.0.1:0".parse().unwrap(), sim_cfg)
            .await
            .expect("spawn sim");
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("ledger.db");
        let yaml = config_yaml(&opts, &sim, &db);
        let mut env: HashMap<String, String> = HashMap::new();
        env.insert("TOLLGATE_MASTER_KEY".into(), MASTER.into());
        env.insert("SIM_API_KEY".into(), SIM_KEY.into());
        for (k, v) in &opts.env {
            env.insert(k.clone(), v.clone());
        }
        let gw = start_gateway(&yaml, &env).await;
        let http = reqwest::Client::builder()
            .timeout(HANG_GUARD)
            .build()
            .expect("client");
        TestEnv {
            sim,
            dir,
            db,
            yaml,
            env,
            gw,
            http,
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.gw.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gw.addr)
    }

    /// Stops the gateway gracefully and returns what `serve` reported.
    pub async fn stop(&mut self) -> ShutdownSummary {
        self.gw.trigger_shutdown();
        self.gw.join().await
    }

    /// Stops the gateway and starts a new one on the same config (same ledger file).
    pub async fn restart(&mut self) -> ShutdownSummary {
        let summary = self.stop().await;
        self.gw = start_gateway(&self.yaml, &self.env).await;
        summary
    }

    /// The ledger database, opened directly.
    pub fn store(&self) -> Store {
        Store::open(&format!("sqlite://{}", self.db.display())).expect("open store")
    }

    // ---- admin ------------------------------------------------------------------------------

    pub async fn admin_get(&self, path_and_query: &str) -> Value {
        let r = self
            .http
            .get(self.url(path_and_query))
            .bearer_auth(MASTER)
            .send()
            .await
            .expect("admin request");
        let status = r.status();
        let body: Value = r.json().await.expect("admin json");
        assert_eq!(status, 200, "GET {path_and_query}: {body}");
        body
    }

    /// Creates a virtual key; returns `(key, id)`.
    pub async fn create_key(&self, body: Value) -> (String, String) {
        let r = self
            .http
            .post(self.url("/admin/v1/keys"))
            .bearer_auth(MASTER)
            .json(&body)
            .send()
            .await
            .expect("create key");
        let status = r.status();
        let v: Value = r.json().await.expect("key json");
        assert_eq!(status, 201, "create key: {v}");
        let key = v["key"].as_str().expect("key in response").to_string();
        assert!(key.starts_with("tg-"), "{key}");
        (key, v["id"].as_str().unwrap().to_string())
    }

    /// A key with no restrictions, tenant `acme`.
    pub async fn key(&self) -> String {
        self.create_key(json!({"name": "test", "tenant": "acme", "team": "core"}))
            .await
            .0
    }

    /// Every ledger row matching `query` (e.g. `"outcome=failed"`), following the cursor.
    pub async fn rows(&self, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = format!("/admin/v1/requests?limit=1000&{query}");
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={c}"));
            }
            let page = self.admin_get(&q).await;
            out.extend(page["data"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
    }

    /// The ledger row of one request.
    pub async fn row(&self, request_id: &str) -> Value {
        let rows = self.rows("").await;
        let found: Vec<&Value> = rows
            .iter()
            .filter(|r| r["request_id"] == request_id)
            .collect();
        assert_eq!(found.len(), 1, "rows for {request_id}: {rows:#?}");
        found[0].clone()
    }

    /// Polls until `pred` holds for the rows matching `query` (rows written asynchronously,
    /// e.g. after a client disconnect).
    pub async fn wait_rows(&self, query: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            let rows = self.rows(query).await;
            if pred(&rows) {
                return rows;
            }
            assert!(Instant::now() < deadline, "rows never matched: {rows:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // ---- data plane -------------------------------------------------------------------------

    pub async fn chat(&self, key: &str, body: Value) -> reqwest::Response {
        self.chat_with(key, &[], &body).await
    }

    /// `POST /v1/chat/completions` with extra request headers.
    pub async fn chat_with(
        &self,
        key: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("chat request")
    }

    /// The Prometheus text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics request")
            .text()
            .await
            .expect("metrics body")
    }
}

/// The config every test gateway runs on.
fn config_yaml(opts: &Opts, sim: &SimHandle, db: &Path) -> String {
    let mut y = String::new();
    y.push_str("server:\n  listen: 127.0.0.1:0\n  master_key: ${TOLLGATE_MASTER_KEY}\n");
    y.push_str(&format!(
        "  shutdown_grace_secs: {}\n",
        opts.shutdown_grace_secs
    ));
    if let Some(b) = opts.max_body_bytes {
        y.push_str(&format!("  max_body_bytes: {b}\n"));
    }
    y.push_str(&opts.extra_server);
    y.push_str(&format!("storage:\n  ledger: sqlite://{}\n", db.display()));
    y.push_str(&opts.extra_storage);
    y.push_str("providers:\n  sim:\n    kind: openai\n");
    y.push_str(&format!("    base_url: {}\n", sim.base_url()));
    if opts.provider_auth {
        y.push_str("    api_key: ${SIM_API_KEY}\n");
    }
    let mut timeouts = Vec::new();
    if let Some(ms) = opts.first_byte_ms {
        timeouts.push(format!("first_byte_ms: {ms}"));
    }
    if let Some(ms) = opts.idle_ms {
        timeouts.push(format!("idle_ms: {ms}"));
    }
    if !timeouts.is_empty() {
        y.push_str(&format!("    timeouts: {{{}}}\n", timeouts.join(", ")));
    }
    y.push_str(
        &opts
            .extra_providers
            .replace("{sim_root}", &format!("http://{}", sim.addr)),
    );
    let extra = if opts.single_attempt {
        format!(", {SINGLE_ATTEMPT}")
    } else {
        String::new()
    };
    y.push_str("models:\n");
    for (name, upstream) in [
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o", "gpt-4o"),
        ("text-embedding-3-small", "text-embedding-3-small"),
        ("custom", "my-custom-llm"),
    ] {
        y.push_str(&format!(
            "  {name}: {{deployments: [{{provider: sim, model: {upstream}}}]{extra}}}\n"
        ));
    }
    y.push_str(&opts.extra_models);
    if opts.allow_unpriced {
        y.push_str("pricing:\n  unknown_model: allow\n");
    }
    y.push_str(&opts.extra_yaml);
    y
}

// ---- responses ------------------------------------------------------------------------------

/// A header as a string (panics when absent).
pub fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}: {:?}", r.headers()))
        .to_str()
        .unwrap()
}

/// Asserts the OpenAI error shape, the status and the code; returns the `error` object.
pub async fn expect_error(r: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status(), status, "status");
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let text = r.text().await.unwrap();
    assert_eq!(ct.as_deref(), Some("application/json"), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert_error_shape(&v);
    assert_eq!(v["error"]["code"], code, "{v}");
    v["error"].clone()
}

/// `{"error":{"message","type","param","code"}}` and nothing else.
pub fn assert_error_shape(v: &Value) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    assert_eq!(obj.len(), 1, "{v}");
    let e = v["error"]
        .as_object()
        .unwrap_or_else(|| panic!("no error object: {v}"));
    let mut keys: Vec<&str> = e.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message", "param", "type"], "{v}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["code"].is_string(), "{v}");
    assert!(e["param"].is_null() || e["param"].is_string(), "{v}");
}

/// One server-sent event as the client received it.
#[derive(Debug, Clone)]
pub struct Event {
    pub data: String,
    pub at: Instant,
}

impl Event {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|_| panic!("not JSON: {}", self.data))
    }
    pub fn is_done(&self) -> bool {
        self.data == "[DONE]"
    }
}

/// Incremental SSE reader over a response body.
pub struct Sse {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: Vec<u8>,
    pub ended_with_error: bool,
}

impl Sse {
    pub fn new(r: reqwest::Response) -> Sse {
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-type"), "text/event-stream");
        Sse {
            body: Box::pin(r.bytes_stream()),
            buf: Vec::new(),
            ended_with_error: false,
        }
    }

    /// The next event, or `None` at the end of the body.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = self.buf.drain(..pos + 2).collect();
                let text = String::from_utf8(frame).expect("utf-8 frame");
                let data: Vec<&str> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if data.is_empty() {
                    continue;
                }
                return Some(Event {
                    data: data.join("\n"),
                    at: Instant::now(),
                });
            }
            match tokio::time::timeout(HANG_GUARD, self.body.next())
                .await
                .expect("stream stalled")
            {
                Some(Ok(b)) => self.buf.extend_from_slice(&b),
                Some(Err(_)) => {
                    self.ended_with_error = true;
                    return None;
                }
                None => {
                    assert!(
                        self.buf.iter().all(|b| b.is_ascii_whitespace()),
                        "trailing partial frame: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    );
                    return None;
                }
            }
        }
    }

    pub async fn collect(mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(e) = self.next().await {
            out.push(e);
        }
        out
    }
}

/// Reads a whole stream.
pub async fn read_stream(r: reqwest::Response) -> Vec<Event> {
    Sse::new(r).collect().await
}

/// The text content of a streamed answer (choice 0).
pub fn streamed_text(events: &[Event]) -> String {
    let mut s = String::new();
    for e in events.iter().filter(|e| !e.is_done()) {
        let v = e.json();
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            s.push_str(c);
        }
    }
    s
}

// ---- money ----------------------------------------------------------------------------------

/// Exact nano-USD from a decimal USD string (`"0.00000315"`), independently of the product's
/// own parser.
pub fn nanos(usd: &str) -> i64 {
    let (whole, frac) = usd.split_once('.').unwrap_or((usd, ""));
    assert!(frac.len() <= 9, "more than 9 decimals: {usd}");
    let whole: i64 = whole.parse().unwrap_or_else(|_| panic!("bad USD {usd}"));
    let frac_n: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().unwrap()
    };
    whole * 1_000_000_000 + frac_n
}

/// gpt-4o-mini's built-in price, by hand: input $0.15/1M = 150 nano-USD per token, cached
/// input $0.075/1M = 75, output $0.60/1M = 600.
pub fn gpt4o_mini_cost(input: u64, cached: u64, output: u64) -> i64 {
    ((input - cached) * 150 + cached * 75 + output * 600) as i64
}

// ---- a recording upstream -------------------------------------------------------------------

/// What the recording upstream saw.
#[derive(Default, Debug, Clone)]
pub struct Recorded {
    pub bodies: Vec<Value>,
    pub headers: Vec<HashMap<String, String>>,
}

/// An OpenAI-compatible upstream that records every request and answers with a fixed
/// completion (or, in `echo_key_401` mode, a 401 quoting the credential it was sent, as real
/// providers do).
pub async fn spawn_recorder(echo_key_401: bool) -> (SocketAddr, Arc<Mutex<Recorded>>) {
    use axum::http::{HeaderMap, StatusCode};
    let rec = Arc::new(Mutex::new(Recorded::default()));
    let r2 = rec.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |headers: HeaderMap, body: bytes::Bytes| {
            let rec = r2.clone();
            async move {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let hs = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                {
                    let mut r = rec.lock().unwrap();
                    r.bodies.push(v.clone());
                    r.headers.push(hs);
                }
                if echo_key_401 {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let key = auth.strip_prefix("Bearer ").unwrap_or(&auth).to_string();
                    let msg = format!(
                        "Incorrect API key provided: {key}. You can find your API key at https://example.invalid."
                    );
                    return (
                        StatusCode::UNAUTHORIZED,
                        [("content-type", "application/json")],
                        json!({"error": {"message": msg, "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}).to_string(),
                    );
                }
                let answer = json!({
                    "id": "chatcmpl-rec",
                    "object": "chat.completion",
                    "created": 1,
                    "model": v["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "recorded"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100,
                              "prompt_tokens_details": {"cached_tokens": 400}},
                });
                (
                    StatusCode::OK,
                    [("content-type", "application/json")],
                    answer.to_string(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, rec)
}

/// Polls `f` until it returns true (hang guard only).
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + HANG_GUARD;
    while !f().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
