//! Request dispatch: parses the path into a [`Route`], applies what every data-plane route
//! shares (stats, in-flight accounting, auth, body reading, pre-answer faults) and hands the
//! request to the wire-format module that owns it. Today that is [`crate::openai`] (which also
//! serves the Azure OpenAI paths); Anthropic (`/v1/messages`) and Gemini
//! (`/v1beta/models/…:generateContent`) shapes slot in as sibling modules with their own
//! [`Route`] variants.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;

use crate::config::{ConfigUpdateError, SimConfig};
use crate::content::mix64;
use crate::error::OpenAiError;
use crate::faults::Fault;
use crate::http::{SimBody, SimError, json_response};
use crate::openai;
use crate::server::Shared;
use crate::stats::{InFlight, bump};

/// Request bodies above this are refused with 413 (far above any real chat request; bounds
/// memory per connection).
pub(crate) const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Which flavour of the OpenAI API a path belongs to: it decides auth and where the model
/// name comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `/v1/…`, `Authorization: Bearer`.
    OpenAi,
    /// `/openai/deployments/{deployment}/…?api-version=…`, `api-key` header; the deployment
    /// is the model.
    Azure { deployment: String },
    /// Azure's v1 surface `/openai/v1/…`: `api-key` or Bearer, model from the body.
    AzureV1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    ChatCompletions,
    Embeddings,
    Models,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Api(Endpoint, Dialect),
    SimConfig,
    SimStats,
    NotFound,
    MethodNotAllowed,
}

impl Route {
    pub(crate) fn parse(method: &Method, path: &str) -> Route {
        let expect = |m: Method, r: Route| {
            if *method == m {
                r
            } else {
                Route::MethodNotAllowed
            }
        };
        match path {
            "/_sim/config" if *method == Method::GET || *method == Method::POST => Route::SimConfig,
            "/_sim/config" => Route::MethodNotAllowed,
            "/_sim/stats" => expect(Method::GET, Route::SimStats),
            _ => {
                let (rest, dialect) = if let Some(rest) = path.strip_prefix("/v1/") {
                    (rest, Dialect::OpenAi)
                } else if let Some(rest) = path.strip_prefix("/openai/v1/") {
                    (rest, Dialect::AzureV1)
                } else if let Some(rest) = path.strip_prefix("/openai/deployments/") {
                    let Some((deployment, rest)) = rest.split_once('/') else {
                        return Route::NotFound;
                    };
                    if deployment.is_empty() {
                        return Route::NotFound;
                    }
                    let dialect = Dialect::Azure {
                        deployment: deployment.to_string(),
                    };
                    return match rest {
                        "chat/completions" => {
                            expect(Method::POST, Route::Api(Endpoint::ChatCompletions, dialect))
                        }
                        "embeddings" => {
                            expect(Method::POST, Route::Api(Endpoint::Embeddings, dialect))
                        }
                        _ => Route::NotFound,
                    };
                } else {
                    return Route::NotFound;
                };
                match rest {
                    "chat/completions" => {
                        expect(Method::POST, Route::Api(Endpoint::ChatCompletions, dialect))
                    }
                    "embeddings" => expect(Method::POST, Route::Api(Endpoint::Embeddings, dialect)),
                    "models" => expect(Method::GET, Route::Api(Endpoint::Models, dialect)),
                    _ => Route::NotFound,
                }
            }
        }
    }
}

/// Why a handler did not produce a normal answer.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A 4xx reply (auth, validation): rendered and counted as a client error.
    Client(OpenAiError),
    /// Drop the connection without a response.
    Abort(SimError),
}

impl From<OpenAiError> for Failure {
    fn from(e: OpenAiError) -> Self {
        Failure::Client(e)
    }
}

/// What a handler gets besides the body: the config snapshot for this request, shared state,
/// and the in-flight guard (moved into a stream body when the answer streams).
pub(crate) struct Ctx {
    pub shared: Arc<Shared>,
    pub cfg: Arc<SimConfig>,
    pub in_flight: InFlight,
    pub dialect: Dialect,
}

/// An injected failure reply to render in the route's own error shape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InjectedFailure {
    pub status: u16,
    pub retry_after_secs: Option<u64>,
}

impl Ctx {
    /// Decides and applies the pre-answer faults (reset, hang, fail) for this request.
    /// `Ok(Some(_))` means "answer with this injected failure".
    pub async fn pre_answer_fault(&self) -> Result<Option<InjectedFailure>, Failure> {
        let stats = &self.shared.stats;
        match self.shared.faults.decide(&self.cfg) {
            Fault::None => Ok(None),
            Fault::Reset => {
                bump(&stats.faults_reset);
                Err(Failure::Abort(SimError::Reset))
            }
            Fault::Hang => {
                bump(&stats.faults_hang);
                // Never answers. Hyper drops this future when the client disconnects; on
                // shutdown the connection is dropped at once instead of holding it up.
                let mut stop = self.shared.shutdown.subscribe();
                let _ = stop.wait_for(|s| *s).await;
                Err(Failure::Abort(SimError::ShuttingDown))
            }
            Fault::Fail => {
                bump(&stats.faults_fail);
                self.ttft().await;
                Ok(Some(InjectedFailure {
                    status: self.cfg.fail_status,
                    retry_after_secs: self.cfg.retry_after_secs,
                }))
            }
        }
    }

    /// Waits the configured time to first token.
    pub async fn ttft(&self) {
        if self.cfg.ttft_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.cfg.ttft_ms)).await;
        }
    }
}

/// The hyper service: one request in, one response (or a dropped connection) out.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<SimBody>, SimError> {
    let route = Route::parse(req.method(), req.uri().path());
    let mut resp = match route {
        Route::SimStats => {
            let body = serde_json::to_vec(&shared.stats.snapshot()).unwrap_or_default();
            json_response(StatusCode::OK, body)
        }
        Route::SimConfig => control_config(&shared, req).await?,
        Route::NotFound | Route::MethodNotAllowed => {
            bump(&shared.stats.requests);
            bump(&shared.stats.unknown_routes);
            bump(&shared.stats.client_errors);
            let (m, p) = (req.method().as_str(), req.uri().path());
            let e = if route == Route::NotFound {
                OpenAiError::not_found(m, p)
            } else {
                OpenAiError::method_not_allowed(m, p)
            };
            e.into_response()
        }
        Route::Api(endpoint, dialect) => {
            let stats = &shared.stats;
            bump(&stats.requests);
            bump(match endpoint {
                Endpoint::ChatCompletions => &stats.chat_completions,
                Endpoint::Embeddings => &stats.embeddings,
                Endpoint::Models => &stats.models,
            });
            let ctx = Ctx {
                in_flight: InFlight::new(shared.stats.clone()),
                cfg: shared.config.load_full(),
                shared: shared.clone(),
                dialect,
            };
            match api(ctx, endpoint, req).await {
                Ok(r) => r,
                Err(Failure::Client(e)) => {
                    bump(&shared.stats.client_errors);
                    e.into_response()
                }
                Err(Failure::Abort(e)) => return Err(e),
            }
        }
    };
    if let Ok(v) = HeaderValue::from_str(&format!("req_{:016x}", next_id())) {
        resp.headers_mut().insert("x-request-id", v);
    }
    Ok(resp)
}

async fn api(
    ctx: Ctx,
    endpoint: Endpoint,
    req: Request<Incoming>,
) -> Result<Response<SimBody>, Failure> {
    check_auth(&ctx, req.headers())?;
    if let Dialect::Azure { .. } = ctx.dialect {
        check_api_version(req.uri())?;
    }
    match endpoint {
        Endpoint::Models => Ok(openai::models()),
        Endpoint::ChatCompletions => {
            let body = read_body(req).await?;
            openai::chat(ctx, body).await
        }
        Endpoint::Embeddings => {
            let body = read_body(req).await?;
            openai::embeddings(ctx, body).await
        }
    }
}

fn check_auth(ctx: &Ctx, headers: &HeaderMap) -> Result<(), OpenAiError> {
    let Some(key) = ctx.cfg.api_key.as_deref() else {
        return Ok(());
    };
    let bearer = || {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
    };
    let api_key = || headers.get("api-key").and_then(|v| v.to_str().ok());
    // A plain comparison: this is a test double holding a throwaway key, not a secret store.
    let ok = match ctx.dialect {
        Dialect::OpenAi => bearer() == Some(key),
        // Classic Azure deployment paths take the key only in `api-key` (a key sent as a
        // Bearer token there would be treated as an Entra token and fail), so a gateway that
        // sends the wrong header is caught.
        Dialect::Azure { .. } => api_key() == Some(key),
        Dialect::AzureV1 => api_key() == Some(key) || bearer() == Some(key),
    };
    if ok {
        Ok(())
    } else {
        Err(OpenAiError::invalid_api_key())
    }
}

fn check_api_version(uri: &Uri) -> Result<(), OpenAiError> {
    let present = uri.query().is_some_and(|q| {
        q.split('&').any(|kv| {
            kv.strip_prefix("api-version=")
                .is_some_and(|v| !v.is_empty())
        })
    });
    if present {
        Ok(())
    } else {
        Err(OpenAiError::invalid(
            "Missing required query parameter 'api-version'.",
            Some("api-version"),
        )
        .with_code("missing_required_parameter"))
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Failure> {
    match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(Failure::Client(
            OpenAiError::invalid(
                format!("The request body exceeds {MAX_BODY_BYTES} bytes."),
                None,
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE),
        )),
        Err(e) => Err(Failure::Abort(SimError::Body(e))),
    }
}

/// `GET /_sim/config` returns the configuration; `POST` overlays a partial JSON object on it.
async fn control_config(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Response<SimBody>, SimError> {
    // Serialises concurrent updates so two scripts posting different fields both land.
    static UPDATE: Mutex<()> = Mutex::new(());
    if req.method() == Method::POST {
        let body = match read_body(req).await {
            Ok(b) => b,
            Err(Failure::Client(e)) => return Ok(e.into_response()),
            Err(Failure::Abort(e)) => return Err(e),
        };
        let patch: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return Ok(OpenAiError::invalid_json().into_response()),
        };
        let result = {
            let _guard = UPDATE.lock().unwrap_or_else(|p| p.into_inner());
            let merged = shared.config.load().merged(&patch);
            if let Ok(cfg) = &merged {
                shared.set_config(cfg.clone());
            }
            merged
        };
        if let Err(e) = result {
            let param = match &e {
                ConfigUpdateError::NotAnObject => None,
                ConfigUpdateError::Invalid(_) => Some("config"),
            };
            return Ok(OpenAiError::invalid(e.to_string(), param).into_response());
        }
    }
    let cfg = shared.config.load();
    let body = serde_json::to_vec(&**cfg).unwrap_or_default();
    Ok(json_response(StatusCode::OK, body))
}

/// A fresh pseudo-random id (for `x-request-id`, `chatcmpl-…`): a per-process random-ish
/// seed mixed with a counter, so ids are unique within a run and differ between runs.
pub(crate) fn next_id() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id())
    });
    mix64(seed ^ mix64(COUNTER.fetch_add(1, Ordering::Relaxed)))
}

/// Unix seconds now (for `created`).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let p = |m: Method, path: &str| Route::parse(&m, path);
        assert_eq!(
            p(Method::POST, "/v1/chat/completions"),
            Route::Api(Endpoint::ChatCompletions, Dialect::OpenAi)
        );
        assert_eq!(
            p(Method::GET, "/v1/chat/completions"),
            Route::MethodNotAllowed
        );
        assert_eq!(
            p(Method::GET, "/v1/models"),
            Route::Api(Endpoint::Models, Dialect::OpenAi)
        );
        assert_eq!(
            p(Method::POST, "/openai/deployments/gpt-4o/chat/completions"),
            Route::Api(
                Endpoint::ChatCompletions,
                Dialect::Azure {
                    deployment: "gpt-4o".into()
                }
            )
        );
        assert_eq!(
            p(Method::POST, "/openai/deployments/e/embeddings"),
            Route::Api(
                Endpoint::Embeddings,
                Dialect::Azure {
                    deployment: "e".into()
                }
            )
        );
        assert_eq!(
            p(Method::POST, "/openai/deployments//chat/completions"),
            Route::NotFound
        );
        assert_eq!(
            p(Method::POST, "/openai/v1/embeddings"),
            Route::Api(Endpoint::Embeddings, Dialect::AzureV1)
        );
        assert_eq!(p(Method::POST, "/v1/nope"), Route::NotFound);
        assert_eq!(p(Method::POST, "/"), Route::NotFound);
        assert_eq!(p(Method::POST, "/_sim/config"), Route::SimConfig);
        assert_eq!(p(Method::POST, "/_sim/stats"), Route::MethodNotAllowed);
    }

    #[test]
    fn api_version_required() {
        let u: Uri = "/x?api-version=2024-10-21".parse().unwrap();
        assert!(check_api_version(&u).is_ok());
        let u: Uri = "/x?foo=1&api-version=".parse().unwrap();
        assert!(check_api_version(&u).is_err());
        let u: Uri = "/x".parse().unwrap();
        assert!(check_api_version(&u).is_err());
    }
}
