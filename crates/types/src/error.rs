//! The stable error-code table and the client-facing error value.
//!
//! Clients match on `code`, never on message text, so codes are a public contract
//! (docs/contracts.md §5 Errors). Every error a client can see is an [`ApiError`] built from
//! one [`ErrorCode`]; the HTTP status and the OpenAI `type` come from the table, so they cannot
//! drift apart per call site. `docs/errors.md` lists the same table for users; a test keeps the
//! two in step.

use serde::Serialize;

/// Which side caused a failure. Recorded on every failed ledger row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorOrigin {
    /// The caller sent something we reject (bad key, bad body, unknown model, ...).
    Client,
    /// Tollgate itself decided (budget, price table, shutdown) or failed internally.
    Gateway,
    /// The provider failed, timed out or sent something unusable.
    Upstream,
}

impl ErrorOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorOrigin::Client => "client",
            ErrorOrigin::Gateway => "gateway",
            ErrorOrigin::Upstream => "upstream",
        }
    }
}

macro_rules! error_codes {
    ($( $variant:ident => ($code:literal, $status:literal, $type:literal, $origin:ident, $doc:literal) ),* $(,)?) => {
        /// Stable error codes: `code` string, HTTP status, OpenAI error `type`, origin.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( #[doc = $doc] $variant, )*
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )* ];

            /// The `code` field clients match on.
            pub fn as_str(self) -> &'static str {
                match self { $( ErrorCode::$variant => $code, )* }
            }

            pub fn status(self) -> u16 {
                match self { $( ErrorCode::$variant => $status, )* }
            }

            /// The OpenAI-style `type` field.
            pub fn error_type(self) -> &'static str {
                match self { $( ErrorCode::$variant => $type, )* }
            }

            pub fn origin(self) -> ErrorOrigin {
                match self { $( ErrorCode::$variant => ErrorOrigin::$origin, )* }
            }

            pub fn description(self) -> &'static str {
                match self { $( ErrorCode::$variant => $doc, )* }
            }

            pub fn parse(s: &str) -> Option<ErrorCode> {
                match s { $( $code => Some(ErrorCode::$variant), )* _ => None }
            }
        }
    };
}

error_codes! {
    InvalidRequest => ("invalid_request", 400, "invalid_request_error", Client,
        "The request body or a parameter is invalid; `param` names the field."),
    InvalidJson => ("invalid_json", 400, "invalid_request_error", Client,
        "The request body is not valid JSON."),
    RequestTooLarge => ("request_too_large", 413, "invalid_request_error", Client,
        "The request body exceeds `server.max_body_bytes`."),
    InvalidApiKey => ("invalid_api_key", 401, "invalid_request_error", Client,
        "The key is missing, unknown, revoked or expired."),
    ModelNotAllowed => ("model_not_allowed", 403, "permission_error", Client,
        "The key may not use this model."),
    ModelNotFound => ("model_not_found", 404, "invalid_request_error", Client,
        "No logical model with this name is configured."),
    RouteOverrideNotAllowed => ("route_override_not_allowed", 403, "permission_error", Client,
        "The key may not pin a deployment with `x-tollgate-deployment` (create it with `allow_route_override`)."),
    PermissionDenied => ("permission_denied", 403, "permission_error", Client,
        "The admin caller's role does not allow this: a viewer reads everything and changes nothing."),
    NotFound => ("not_found", 404, "invalid_request_error", Client,
        "No such route or resource."),
    MethodNotAllowed => ("method_not_allowed", 405, "invalid_request_error", Client,
        "The route exists but not for this HTTP method."),
    Conflict => ("conflict", 409, "invalid_request_error", Client,
        "The resource already exists (e.g. an active key with the same name)."),
    ModelNotPriced => ("model_not_priced", 400, "invalid_request_error", Gateway,
        "The model has no price and `pricing.unknown_model` is `reject` (fail-closed)."),
    EndpointNotSupported => ("endpoint_not_supported", 400, "invalid_request_error", Gateway,
        "The model's deployment cannot serve this endpoint (e.g. embeddings on a chat-only provider)."),
    BudgetExceeded => ("budget_exceeded", 429, "insufficient_quota", Gateway,
        "A hard budget cannot cover even a minimal answer; `Retry-After` gives seconds to the window reset."),
    BudgetUnavailable => ("budget_unavailable", 503, "server_error", Gateway,
        "A hard budget could not be evaluated (its counter store is unavailable): fail-closed."),
    PolicyBlocked => ("policy_blocked", 429, "insufficient_quota", Gateway,
        "A spend policy's `block` step paused this traffic; the message names the policy, step and trigger."),
    RateLimitExceeded => ("rate_limit_exceeded", 429, "rate_limit_error", Gateway,
        "A request or token rate limit is exhausted; `Retry-After` says when to retry."),
    UpstreamRateLimited => ("upstream_rate_limited", 429, "rate_limit_error", Upstream,
        "The provider answered 429."),
    UpstreamBadRequest => ("upstream_bad_request", 400, "invalid_request_error", Upstream,
        "The provider rejected the request as invalid; its message is included."),
    ContextLengthExceeded => ("context_length_exceeded", 400, "invalid_request_error", Upstream,
        "The prompt (with the output cap) does not fit the model's context window on any deployment tried; the provider's message is included."),
    ContentFiltered => ("content_filter", 400, "invalid_request_error", Upstream,
        "The provider refused the request under its content policy; it is not retried or sent to another deployment."),
    UpstreamAuthFailed => ("upstream_auth_failed", 502, "upstream_error", Upstream,
        "The provider rejected Tollgate's credentials for it (a configuration problem, not the caller's key)."),
    UpstreamError => ("upstream_error", 502, "upstream_error", Upstream,
        "The provider failed (5xx), the connection broke mid-response, or the response could not be read."),
    UpstreamUnavailable => ("upstream_unavailable", 503, "upstream_error", Upstream,
        "The provider could not be reached (connection refused, DNS, TLS) or said it is overloaded (503, 529)."),
    UpstreamTimeout => ("upstream_timeout", 504, "upstream_error", Upstream,
        "The provider did not answer within the configured connect, first-byte, idle or total timeout, or answered 504."),
    NoHealthyDeployment => ("no_healthy_deployment", 503, "server_error", Gateway,
        "Every deployment of the model and of its fallbacks has an open circuit breaker (or the retry budget is spent); `Retry-After` says when one will be probed again."),
    ShuttingDown => ("shutting_down", 503, "server_error", Gateway,
        "The gateway is draining for shutdown."),
    Overloaded => ("overloaded", 503, "server_error", Gateway,
        "Load shedding: more requests are in flight than `server.limits.max_in_flight` allows, or (on a fresh connection) more connections are open than `server.limits.max_connections`; `Retry-After` says when to retry."),
    RequestTimeout => ("request_timeout", 408, "invalid_request_error", Client,
        "The request body did not arrive within `server.limits.body_read_timeout_secs`."),
    ClientClosedRequest => ("client_closed_request", 499, "invalid_request_error", Client,
        "Recorded, never sent: the client went away before the answer was complete (nginx's 499). The ledger row is `cancelled` and billed for what the provider produced."),
    GatewayInterrupted => ("gateway_interrupted", 500, "server_error", Gateway,
        "Recorded, never sent: the gateway process died (crash, `kill -9`, power loss) while the request was calling a provider. The row was written at dispatch as a provisional row and is recorded at the next start; it is billed at the worst case admission reserved (`usage_source` `unknown`), since the provider may have billed it."),
    InternalError => ("internal_error", 500, "server_error", Gateway,
        "A bug in Tollgate. The request id in the response headers identifies it in the logs."),
}

/// A client-facing error: one [`ErrorCode`] plus a message and the offending parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub param: Option<String>,
    /// Overrides the table status where the upstream's own status must be kept (e.g. a provider
    /// 422 relayed as 422). `None` means the table's status.
    pub status_override: Option<u16>,
    /// Seconds for a `Retry-After` header, when meaningful.
    pub retry_after_secs: Option<u64>,
    /// What went wrong inside the gateway, for the log only: never sent to the client (set by
    /// [`ApiError::internal`]).
    pub cause: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            param: None,
            status_override: None,
            retry_after_secs: None,
            cause: None,
        }
    }

    /// A bug or an environment failure inside the gateway: the client gets a generic
    /// `internal_error`; `cause` is kept for the log line written with the request id when the
    /// error is answered.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        let mut e = ApiError::new(
            ErrorCode::InternalError,
            "internal error; the request id in the response headers identifies it in the gateway log",
        );
        e.cause = Some(cause.to_string());
        e
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status_override = Some(status);
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn status(&self) -> u16 {
        self.status_override.unwrap_or(self.code.status())
    }

    /// The OpenAI error body: `{"error":{"message","type","param","code"}}`.
    pub fn openai_body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.code.error_type(),
                "param": self.param,
                "code": self.code.as_str(),
            }
        })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code.as_str(),
            self.status(),
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "duplicate code {}", c.as_str());
            assert_eq!(ErrorCode::parse(c.as_str()), Some(*c));
            assert!((400..600).contains(&c.status()));
        }
    }

    #[test]
    fn openai_shape() {
        let e = ApiError::new(ErrorCode::InvalidApiKey, "bad key");
        let b = e.openai_body();
        assert_eq!(b["error"]["code"], "invalid_api_key");
        assert_eq!(b["error"]["type"], "invalid_request_error");
        assert!(b["error"]["param"].is_null());
        assert_eq!(e.status(), 401);
    }
}
