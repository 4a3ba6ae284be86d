//! The listener and connection handling: hyper 1 with the hyper-util "auto" server (HTTP/1.1
//! and HTTP/2 cleartext on the same port), the shared state every request sees, and the
//! [`SimHandle`] used to control an in-process simulator.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio_util::task::TaskTracker;

use crate::config::SimConfig;
use crate::faults::FaultCounters;
use crate::prompt_cache::{PromptCache, PromptPrefixes};
use crate::stats::{SimStats, Stats};

/// How long connections get to finish in-flight responses after shutdown starts. Requests
/// left hanging by fault injection end at once; paced streams are cut at this deadline.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// State shared by all connections.
pub(crate) struct Shared {
    /// Swapped atomically by `set_config` / `POST /_sim/config`; each request loads one
    /// snapshot and uses it throughout, so a change never mixes two configurations.
    pub config: ArcSwap<SimConfig>,
    pub stats: Arc<Stats>,
    pub faults: FaultCounters,
    /// The `prompt_cache` knob's memory: one per simulator, like one deployment's cache. The
    /// only lock a request can take, and only with that knob on, for a hash-map lookup and
    /// a few inserts (never across an await).
    prompt_cache: Mutex<PromptCache>,
    /// Flips to `true` when shutdown starts (hung requests watch it).
    pub shutdown: watch::Sender<bool>,
}

impl Shared {
    fn new(cfg: SimConfig) -> Arc<Self> {
        let faults = FaultCounters::default();
        faults.reset(&cfg);
        Arc::new(Shared {
            config: ArcSwap::from_pointee(cfg),
            stats: Arc::new(Stats::default()),
            faults,
            prompt_cache: Mutex::new(PromptCache::default()),
            shutdown: watch::channel(false).0,
        })
    }

    /// Cached tokens of `prompt` in this simulator's prompt cache, which then remembers it
    /// ([`PromptCache::serve`]).
    pub(crate) fn serve_prompt(&self, prompt: &PromptPrefixes, ttl: Duration, now: Instant) -> u64 {
        // A poisoned lock only means another request panicked mid-update; the map is still
        // consistent enough for a simulator.
        let mut cache = self
            .prompt_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.serve(prompt, ttl, now)
    }

    /// Forgets every remembered prompt prefix; returns how many there were.
    pub(crate) fn clear_prompt_cache(&self) -> usize {
        let mut cache = self
            .prompt_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = cache.len();
        cache.clear();
        n
    }

    /// Replaces the configuration and restarts the fault sequences.
    pub(crate) fn set_config(&self, cfg: SimConfig) {
        self.faults.reset(&cfg);
        self.config.store(Arc::new(cfg));
    }
}

/// A simulator serving in the background. Dropping the handle stops the server too (without
/// waiting); [`SimHandle::shutdown`] stops it and waits until every connection has closed.
pub struct SimHandle {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.addr)
            .finish()
    }
}

impl SimHandle {
    /// The OpenAI base URL, `http://ADDR/v1` (Azure clients use [`SimHandle::origin`]).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `http://ADDR`: the base URL of the Azure, Anthropic (`/v1/messages`), Gemini
    /// (`/v1beta/models/…`) and Bedrock (`/model/…`) clients, which add their own paths.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Empties this simulator's prompt cache (what `POST /_sim/prompt_cache/reset` does), as
    /// if every remembered prompt had expired. Changing the configuration does not.
    pub fn clear_prompt_cache(&self) {
        self.shared.clear_prompt_cache();
    }

    /// Replaces every knob at runtime. Fault sequences restart from request 0.
    pub fn set_config(&self, cfg: SimConfig) {
        self.shared.set_config(cfg);
    }

    /// The current configuration.
    pub fn config(&self) -> SimConfig {
        SimConfig::clone(&self.shared.config.load())
    }

    pub fn stats(&self) -> SimStats {
        self.shared.stats.snapshot()
    }

    /// Zeroes every counter but `in_flight` (what `POST /_sim/stats/reset` does). Setting the
    /// configuration does not reset the counters.
    pub fn reset_stats(&self) {
        self.shared.stats.reset();
    }

    /// Stops accepting, lets in-flight responses finish (up to a short grace period) and
    /// waits for the server task to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "simulator ended with an error"),
            Err(e) => tracing::warn!(error = %e, "simulator task failed"),
        }
    }
}

/// Binds `listen` and serves in the background on the current tokio runtime.
pub async fn spawn(listen: SocketAddr, cfg: SimConfig) -> io::Result<SimHandle> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let shared = Shared::new(cfg);
    let (stop, stopped) = oneshot::channel::<()>();
    // The simulator is a test tool, never on the gateway's request path; and this task is
    // tracked: the handle keeps its JoinHandle, `shutdown` awaits it, dropping the handle
    // stops it.
    #[expect(
        clippy::disallowed_methods,
        reason = "the simulator's own server task, owned and awaited by SimHandle"
    )]
    let task = tokio::spawn(serve(listener, shared.clone(), async move {
        // Resolves on an explicit stop and when the handle is dropped.
        let _ = stopped.await;
    }));
    Ok(SimHandle {
        addr,
        shared,
        stop,
        task,
    })
}

/// Serves on `listener` until `shutdown` resolves (used by `tollgate mock-provider`).
pub async fn run(
    listener: TcpListener,
    cfg: SimConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve(listener, Shared::new(cfg), shutdown).await
}

async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let tracker = TaskTracker::new();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "simulated provider listening");
    }

    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Per-connection errors (peer reset before accept) are harmless; resource
                // exhaustion (EMFILE) is retried after a pause instead of spinning.
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
        };
        // Small SSE chunks must leave immediately, and Nagle would add latency to every
        // small response in benchmarks.
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let builder = builder.clone();
        tracker.spawn(async move {
            let mut stop = shared.shutdown.subscribe();
            let svc_shared = shared.clone();
            let service = service_fn(move |req| crate::router::handle(svc_shared.clone(), req));
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        // Injected resets and cuts end up here by design.
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                () = async { drop(stop.wait_for(|s| *s).await) } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
                }
            }
        });
    }

    drop(listener);
    shared.shutdown.send_replace(true);
    tracker.close();
    tracker.wait().await;
    Ok(())
}
