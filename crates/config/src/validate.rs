//! Raw config → [`Config`]: defaults filled in, every rule checked, every problem collected
//! with its path. Rules are documented on the fields of [`crate::model`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use tollgate_pricing::{
    DeploymentRef, ModelPrice, PriceTable, Resolution, UnknownModel, validate_price,
};
use tollgate_types::ProviderKind;

use crate::error::{ConfigWarning, Issues};
use crate::model::*;
use crate::raw::*;
use crate::{Config, Secret};

const MAX_BODY_BYTES_LIMIT: u64 = 1024 * 1024 * 1024;
const MAX_SHUTDOWN_GRACE_SECS: u64 = 3600;
const MAX_MODEL_NAME_LEN: usize = 256;
const SHORT_MASTER_KEY: usize = 16;

/// Headers the HTTP client owns; a static value would corrupt framing or routing.
const MANAGED_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding", "connection"];
/// Headers that carry the provider credential; set via `api_key` instead.
const CREDENTIAL_HEADERS: &[&str] = &["authorization", "api-key", "x-api-key"];

pub(crate) fn validate(
    raw: RawConfig,
    issues: &mut Issues,
    warnings: &mut Vec<ConfigWarning>,
) -> Option<Config> {
    let server = server(raw.server.unwrap_or_default(), issues, warnings);
    let storage = storage(raw.storage.unwrap_or_default(), issues);
    let raw_providers = raw.providers.unwrap_or_default();
    let provider_names: Vec<String> = raw_providers.keys().cloned().collect();
    let providers = providers(raw_providers, issues);
    let raw_pricing = raw.pricing.unwrap_or_default();
    let models = models(
        raw.models.unwrap_or_default(),
        &provider_names,
        &raw_pricing,
        issues,
    );
    let pricing = pricing(raw_pricing, &models, issues);
    let tenants = raw
        .tenants
        .unwrap_or_default()
        .into_iter()
        .map(|(name, t)| {
            if t.revenue_usd_per_month.is_some_and(|r| r.0 < 0) {
                issues.push(
                    format!("tenants.{name}.revenue_usd_per_month"),
                    "must not be negative",
                );
            }
            let markup_bp = match t.markup_pct.as_deref() {
                None => 0,
                Some(text) => match tollgate_types::money::parse_decimal_scaled(text, 2)
                    .ok()
                    .and_then(|bp| u32::try_from(bp).ok())
                    .filter(|bp| *bp <= 100_000)
                {
                    Some(bp) => bp,
                    None => {
                        issues.push(
                            format!("tenants.{name}.markup_pct"),
                            format!(
                                "must be a percentage from 0 to 1000 with at most two decimals, got '{text}'"
                            ),
                        );
                        0
                    }
                },
            };
            let price_list = t.price_list.unwrap_or_default();
            for (model, price) in &price_list {
                let path = format!("tenants.{name}.price_list.{model}");
                if !models.contains_key(model) {
                    issues.push(&path, "no such model under `models`");
                }
                check_price(&path, price, issues);
            }
            (
                name,
                TenantConfig {
                    revenue_usd_per_month: t.revenue_usd_per_month,
                    markup_bp,
                    price_list,
                },
            )
        })
        .collect();
    let allocations = allocations(raw.allocations.unwrap_or_default(), &tenants, issues);
    let anomalies = anomalies(raw.anomalies.unwrap_or_default(), issues);
    let budgets = raw.budgets.unwrap_or_default();
    let mut names = std::collections::BTreeSet::new();
    for (i, b) in budgets.iter().enumerate() {
        if let Err(e) = b.validate() {
            issues.push(format!("budgets[{i}].{}", e.field), e.reason);
        }
        if !names.insert(b.name.clone()) {
            issues.push(
                format!("budgets[{i}].name"),
                format!("duplicate budget name '{}'", b.name),
            );
        }
    }

    let policies = raw.policies.unwrap_or_default();
    let mut policy_names = std::collections::BTreeSet::new();
    for (i, p) in policies.iter().enumerate() {
        if let Err(e) = p.validate() {
            issues.push(format!("policies[{i}].{}", e.field), e.reason);
        }
        if !policy_names.insert(p.name.clone()) {
            issues.push(
                format!("policies[{i}].name"),
                format!("duplicate policy name '{}'", p.name),
            );
        }
        if let Some(b) = &p.budget
            && !names.contains(b)
        {
            warnings.push(ConfigWarning {
                path: format!("policies[{i}].budget"),
                message: format!(
                    "no budget named '{b}' in the config (one created through the admin API will do; until then its budget triggers never hold)"
                ),
            });
        }
    }

    let rate_limits = raw.rate_limits.unwrap_or_default();
    let mut rate_names = std::collections::BTreeSet::new();
    for (i, r) in rate_limits.iter().enumerate() {
        if let Err(e) = r.validate() {
            issues.push(format!("rate_limits[{i}].{}", e.field), e.reason);
        }
        if !rate_names.insert(r.name.clone()) {
            issues.push(
                format!("rate_limits[{i}].name"),
                format!("duplicate rate limit name '{}'", r.name),
            );
        }
    }
    let cache = cache(raw.cache.unwrap_or_default(), &models, issues);
    let telemetry = raw.telemetry.and_then(|t| telemetry(t, issues));

    if !issues.is_empty() {
        return None;
    }
    let config = Config {
        server,
        storage,
        providers,
        models,
        pricing,
        tenants,
        allocations,
        anomalies,
        budgets,
        policies,
        rate_limits,
        cache,
        telemetry,
    };
    price_warnings(&config, issues, warnings);
    if !issues.is_empty() {
        return None;
    }
    if config.models.is_empty() {
        warnings.push(ConfigWarning {
            path: "models".into(),
            message: "no models configured: every data-plane request will be refused".into(),
        });
    }
    Some(config)
}

// ---- telemetry ------------------------------------------------------------------------------

fn telemetry(raw: RawTelemetry, issues: &mut Issues) -> Option<TelemetryConfig> {
    if raw.enabled == Some(false) {
        return None;
    }
    let endpoint = match raw.endpoint.as_deref().map(str::trim) {
        None | Some("") => {
            issues.push(
                "telemetry.endpoint",
                "is required (the OTLP/HTTP base URL, e.g. http://127.0.0.1:4318); set \
                 enabled: false to keep the section but turn telemetry off",
            );
            String::new()
        }
        Some(e) if e.starts_with("http://") || e.starts_with("https://") => {
            e.trim_end_matches('/').to_string()
        }
        Some(e) => {
            issues.push(
                "telemetry.endpoint",
                format!("expected an http:// or https:// URL, got '{e}'"),
            );
            String::new()
        }
    };
    let sampling_ratio = raw.sampling_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sampling_ratio) {
        issues.push(
            "telemetry.sampling_ratio",
            format!("must be between 0 and 1, got {sampling_ratio}"),
        );
    }
    let metrics_interval_secs = raw.metrics_interval_secs.unwrap_or(60);
    if !(1..=3600).contains(&metrics_interval_secs) {
        issues.push(
            "telemetry.metrics_interval_secs",
            "must be between 1 and 3600",
        );
    }
    let queue = raw.queue.unwrap_or(8192);
    if !(1..=1_000_000).contains(&queue) {
        issues.push("telemetry.queue", "must be between 1 and 1000000");
    }
    for name in raw.headers.keys() {
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            issues.push(
                format!("telemetry.headers.{name}"),
                "is not a valid HTTP header name",
            );
        }
    }
    let service_name = raw.service_name.unwrap_or_else(|| "tollgate".into());
    if service_name.trim().is_empty() {
        issues.push("telemetry.service_name", "is empty");
    }
    Some(TelemetryConfig {
        endpoint,
        headers: raw.headers,
        sampling_ratio,
        service_name,
        metrics_interval_secs,
        queue: queue as usize,
        propagate_to_upstream: raw.propagate_to_upstream.unwrap_or(false),
    })
}

// ---- server ---------------------------------------------------------------------------------

fn server(raw: RawServer, issues: &mut Issues, warnings: &mut Vec<ConfigWarning>) -> ServerConfig {
    let default_listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4000);
    let listen = match raw.listen.as_deref() {
        None => default_listen,
        Some(s) => parse_listen(s).unwrap_or_else(|reason| {
            issues.push("server.listen", reason);
            default_listen
        }),
    };

    let master_key = raw.master_key.filter(|k| !k.is_empty());
    if let Some(k) = &master_key {
        if k.expose().trim() != k.expose() {
            issues.push(
                "server.master_key",
                "has leading or trailing whitespace (a pasted newline?)",
            );
        } else if k.expose().chars().count() < SHORT_MASTER_KEY {
            warnings.push(ConfigWarning {
                path: "server.master_key".into(),
                message: format!(
                    "shorter than {SHORT_MASTER_KEY} characters; use a long random value"
                ),
            });
        }
    }

    let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes == 0 || max_body_bytes > MAX_BODY_BYTES_LIMIT {
        issues.push(
            "server.max_body_bytes",
            format!("must be between 1 and {MAX_BODY_BYTES_LIMIT} (1 GiB), got {max_body_bytes}"),
        );
    }
    let shutdown_grace_secs = raw
        .shutdown_grace_secs
        .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECS);
    if shutdown_grace_secs > MAX_SHUTDOWN_GRACE_SECS {
        issues.push(
            "server.shutdown_grace_secs",
            format!("must be at most {MAX_SHUTDOWN_GRACE_SECS}, got {shutdown_grace_secs}"),
        );
    }
    if raw.request_timeout_secs == Some(0) {
        issues.push(
            "server.request_timeout_secs",
            "must be > 0 (omit it for no cap)",
        );
    }

    let metrics_auth = raw.metrics_auth.filter(|k| !k.is_empty());
    if let Some(k) = &metrics_auth
        && k.expose().trim() != k.expose()
    {
        issues.push(
            "server.metrics_auth",
            "has leading or trailing whitespace (a pasted newline?)",
        );
    }

    let organization = raw.organization.unwrap_or_else(|| "Tollgate".to_string());
    if organization.trim().is_empty() || organization.chars().count() > 200 {
        issues.push(
            "server.organization",
            "must be 1 to 200 characters, not blank",
        );
    }

    let max_report_days = raw.max_report_days.unwrap_or(400);
    if !(1..=3660).contains(&max_report_days) {
        issues.push(
            "server.max_report_days",
            format!("must be between 1 and 3660, got {max_report_days}"),
        );
    }

    ServerConfig {
        listen,
        master_key,
        max_body_bytes,
        shutdown_grace_secs,
        request_timeout_secs: raw.request_timeout_secs,
        retry_budget: crate::routing::retry_budget(raw.retry_budget, issues),
        organization,
        max_report_days,
        limits: limits(raw.limits.unwrap_or_default(), issues),
        metrics_auth,
    }
}

fn limits(raw: crate::raw::RawLimits, issues: &mut Issues) -> crate::LimitsConfig {
    let mut within = |name: &str, v: Option<u64>, default: u64, max: u64| -> u64 {
        let v = v.unwrap_or(default);
        if !(1..=max).contains(&v) {
            issues.push(
                format!("server.limits.{name}"),
                format!("must be between 1 and {max}, got {v}"),
            );
        }
        v
    };
    let header_read_timeout_secs = within(
        "header_read_timeout_secs",
        raw.header_read_timeout_secs,
        15,
        3600,
    );
    let body_read_timeout_secs = within(
        "body_read_timeout_secs",
        raw.body_read_timeout_secs,
        60,
        3600,
    );
    let idle_timeout_secs = within("idle_timeout_secs", raw.idle_timeout_secs, 60, 86_400);
    let max_connections = raw
        .max_connections
        .map(|v| within("max_connections", Some(v), v, 1_000_000));
    let max_in_flight = raw
        .max_in_flight
        .map(|v| within("max_in_flight", Some(v), v, 1_000_000));
    crate::LimitsConfig {
        header_read_timeout_secs,
        body_read_timeout_secs,
        idle_timeout_secs,
        max_connections,
        max_in_flight,
    }
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some(port) = s.strip_prefix("localhost:")
        && let Ok(port) = port.parse::<u16>()
    {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    Err(format!(
        "'{s}' is not a socket address (expected IP:PORT, e.g. 127.0.0.1:4000 or [::1]:4000)"
    ))
}

// ---- storage --------------------------------------------------------------------------------

fn storage(raw: RawStorage, issues: &mut Issues) -> StorageConfig {
    let ledger = match raw.ledger.as_deref() {
        None => LedgerUrl::Sqlite {
            path: PathBuf::from("./tollgate.db"),
        },
        Some(s) => parse_ledger(s).unwrap_or_else(|reason| {
            issues.push("storage.ledger", reason);
            LedgerUrl::SqliteMemory
        }),
    };
    let spill_path = match raw.spill_path {
        Some(p) if p.is_empty() => {
            issues.push("storage.spill_path", "is empty");
            None
        }
        Some(p) => Some(PathBuf::from(p)),
        None => match &ledger {
            LedgerUrl::Sqlite { path } => {
                let mut p = path.clone().into_os_string();
                p.push(".spill");
                Some(PathBuf::from(p))
            }
            LedgerUrl::SqliteMemory => None,
        },
    };
    let counters = match raw.counters.as_deref() {
        None | Some("memory") => Counters::Memory,
        Some(s) if s.starts_with("redis://") || s.starts_with("rediss://") => {
            // The URL may hold a password: never echo it.
            issues.push(
                "storage.counters",
                "redis counters are part of the contract but not supported by this build yet \
                 (use 'memory')",
            );
            Counters::Memory
        }
        Some(_) => {
            issues.push("storage.counters", "expected 'memory' or 'redis://…'");
            Counters::Memory
        }
    };
    StorageConfig {
        ledger,
        spill_path,
        counters,
        durability: raw.durability.unwrap_or_default(),
    }
}

fn parse_ledger(s: &str) -> Result<LedgerUrl, String> {
    if s == "sqlite::memory:" || s == "sqlite://:memory:" {
        return Ok(LedgerUrl::SqliteMemory);
    }
    if let Some(path) = s.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err("sqlite:// needs a file path, e.g. sqlite://./tollgate.db".into());
        }
        if path.contains('?') {
            return Err("query parameters on sqlite:// URLs are not supported".into());
        }
        return Ok(LedgerUrl::Sqlite {
            path: PathBuf::from(path),
        });
    }
    // Database URLs can carry passwords: describe, never echo.
    if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        return Err(
            "postgres ledgers are part of the contract but not supported by this build yet \
             (use sqlite://PATH)"
                .into(),
        );
    }
    Err("unsupported ledger URL: expected sqlite://PATH or sqlite::memory:".into())
}

// ---- providers ------------------------------------------------------------------------------

fn valid_provider_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn providers(
    raw: BTreeMap<String, RawProvider>,
    issues: &mut Issues,
) -> BTreeMap<String, ProviderConfig> {
    let mut out = BTreeMap::new();
    for (name, p) in raw {
        let path = format!("providers.{name}");
        if !valid_provider_name(&name) {
            issues.push(
                &path,
                "invalid provider name (letters, digits, '_' and '-' only)",
            );
            continue;
        }
        if let Some(cfg) = provider(&path, p, issues) {
            out.insert(name, cfg);
        }
    }
    out
}

fn provider(path: &str, p: RawProvider, issues: &mut Issues) -> Option<ProviderConfig> {
    let before = issues.0.len();

    let region = match (p.kind, p.region) {
        (ProviderKind::Bedrock, None) => {
            issues.push(
                format!("{path}.region"),
                "required for kind 'bedrock' (e.g. us-east-1)",
            );
            None
        }
        (ProviderKind::Bedrock, Some(r)) => {
            if r.is_empty()
                || !r
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                issues.push(
                    format!("{path}.region"),
                    "expected an AWS region such as us-east-1",
                );
            }
            Some(r)
        }
        (_, Some(_)) => {
            issues.push(
                format!("{path}.region"),
                "only used by kind 'bedrock'; remove it",
            );
            None
        }
        (_, None) => None,
    };
    let aws_key_id = p.aws_access_key_id.filter(|k| !k.is_empty());
    let aws_secret = p.aws_secret_access_key.filter(|k| !k.is_empty());
    let aws_token = p.aws_session_token.filter(|k| !k.is_empty());
    if p.kind != ProviderKind::Bedrock {
        for (field, set) in [
            ("aws_access_key_id", aws_key_id.is_some()),
            ("aws_secret_access_key", aws_secret.is_some()),
            ("aws_session_token", aws_token.is_some()),
        ] {
            if set {
                issues.push(
                    format!("{path}.{field}"),
                    "only used by kind 'bedrock'; remove it",
                );
            }
        }
    } else if aws_key_id.is_some() != aws_secret.is_some() {
        issues.push(
            format!("{path}.aws_secret_access_key"),
            "aws_access_key_id and aws_secret_access_key go together",
        );
    }

    let base_url = match (p.kind, p.base_url.as_deref()) {
        (ProviderKind::Azure, None) => {
            issues.push(
                format!("{path}.base_url"),
                "required for kind 'azure' (https://{resource}.openai.azure.com)",
            );
            String::new()
        }
        (ProviderKind::Openai, None) => OPENAI_BASE_URL.to_string(),
        (ProviderKind::Anthropic, None) => ANTHROPIC_BASE_URL.to_string(),
        (ProviderKind::Gemini, None) => GEMINI_BASE_URL.to_string(),
        (ProviderKind::Bedrock, None) => format!(
            "https://bedrock-runtime.{}.amazonaws.com",
            region.as_deref().unwrap_or("us-east-1")
        ),
        (_, Some(s)) => parse_base_url(s).unwrap_or_else(|reason| {
            issues.push(format!("{path}.base_url"), reason);
            String::new()
        }),
    };

    let api_key = p.api_key.filter(|k| !k.is_empty());
    if let Some(k) = &api_key
        && k.expose().trim() != k.expose()
    {
        issues.push(
            format!("{path}.api_key"),
            "has leading or trailing whitespace (a pasted newline?)",
        );
    }
    if api_key.is_none() {
        if p.kind == ProviderKind::Azure {
            issues.push(format!("{path}.api_key"), "required for kind 'azure'");
        } else if p.kind == ProviderKind::Bedrock {
            if aws_key_id.is_none() {
                issues.push(
                    format!("{path}.api_key"),
                    "kind 'bedrock' needs aws_access_key_id + aws_secret_access_key, or a Bedrock api_key",
                );
            }
        } else if let Some(host) = official_host(&base_url) {
            let var = match p.kind {
                ProviderKind::Anthropic => "ANTHROPIC_API_KEY",
                ProviderKind::Gemini => "GEMINI_API_KEY",
                _ => "OPENAI_API_KEY",
            };
            issues.push(
                format!("{path}.api_key"),
                format!("required for {host} (set it, e.g. api_key: ${{{var}}})"),
            );
        }
    }

    let api_version = match (p.kind, p.api_version) {
        (ProviderKind::Azure, None) => {
            issues.push(
                format!("{path}.api_version"),
                "required for kind 'azure' (e.g. 2024-10-21)",
            );
            None
        }
        (ProviderKind::Azure, Some(v)) => {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                issues.push(
                    format!("{path}.api_version"),
                    "expected an Azure api-version such as 2024-10-21 or 2025-04-01-preview",
                );
            }
            Some(v)
        }
        (_, Some(_)) => {
            issues.push(
                format!("{path}.api_version"),
                "only used by kind 'azure'; remove it",
            );
            None
        }
        (_, None) => None,
    };

    let mut headers = BTreeMap::new();
    for (name, value) in p.headers {
        let hpath = format!("{path}.headers.{name}");
        let lower = name.to_ascii_lowercase();
        if !valid_header_name(&name) {
            issues.push(&hpath, "not a valid HTTP header name");
            continue;
        }
        if MANAGED_HEADERS.contains(&lower.as_str()) {
            issues.push(&hpath, "set by the gateway itself; remove it");
            continue;
        }
        if api_key.is_some() && CREDENTIAL_HEADERS.contains(&lower.as_str()) {
            issues.push(
                &hpath,
                "carries the credential, which api_key already sets; use one or the other",
            );
            continue;
        }
        if !valid_header_value(&value) {
            // Never echo the value: header values are treated as secrets.
            issues.push(&hpath, "value contains control characters (CR, LF, NUL, …)");
            continue;
        }
        if headers.insert(lower, value).is_some() {
            issues.push(&hpath, "duplicate header (names are case-insensitive)");
        }
    }

    let t = p.timeouts.unwrap_or_default();
    let d = Timeouts::default();
    let timeouts = Timeouts {
        connect_ms: t.connect_ms.unwrap_or(d.connect_ms),
        first_byte_ms: t.first_byte_ms.unwrap_or(d.first_byte_ms),
        idle_ms: t.idle_ms.unwrap_or(d.idle_ms),
        total_ms: t.total_ms.unwrap_or(d.total_ms),
    };
    for (field, v) in [
        ("connect_ms", timeouts.connect_ms),
        ("first_byte_ms", timeouts.first_byte_ms),
        ("idle_ms", timeouts.idle_ms),
        ("total_ms", timeouts.total_ms),
    ] {
        let fpath = format!("{path}.timeouts.{field}");
        if v == 0 {
            issues.push(fpath, "must be > 0");
        } else if field != "total_ms" && v > timeouts.total_ms {
            issues.push(
                fpath,
                format!(
                    "{v} is above total_ms ({}), so it could never fire",
                    timeouts.total_ms
                ),
            );
        }
    }

    if issues.0.len() != before {
        return None;
    }
    Some(ProviderConfig {
        kind: p.kind,
        base_url,
        api_key,
        api_version,
        headers,
        timeouts,
        region,
        aws_access_key_id: aws_key_id,
        aws_secret_access_key: aws_secret,
        aws_session_token: aws_token,
    })
}

fn parse_base_url(s: &str) -> Result<String, String> {
    // The URL is not echoed: it may have come from the environment with credentials in it.
    let u = url::Url::parse(s).map_err(|e| format!("not a valid URL: {e}"))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(format!(
            "not a valid URL: scheme must be http or https, not '{}'",
            u.scheme()
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("not a valid URL: no host".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("must not contain credentials; use api_key".into());
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err("must not have a query string or fragment".into());
    }
    Ok(u.as_str().trim_end_matches('/').to_string())
}

/// The host of an official provider endpoint, which always needs a key.
fn official_host(base_url: &str) -> Option<String> {
    let host = url::Url::parse(base_url).ok()?.host_str()?.to_string();
    matches!(
        host.as_str(),
        "api.openai.com" | "api.anthropic.com" | "generativelanguage.googleapis.com"
    )
    .then_some(host)
}

fn valid_header_name(name: &str) -> bool {
    // RFC 9110 token.
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn valid_header_value(value: &Secret) -> bool {
    value
        .expose()
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
}

// ---- models ---------------------------------------------------------------------------------

fn valid_model_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty model name");
    }
    if name.chars().count() > MAX_MODEL_NAME_LEN {
        return Err("model name longer than 256 characters");
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("model name contains whitespace or control characters");
    }
    Ok(())
}

fn anomalies(raw: crate::raw::RawAnomalies, issues: &mut Issues) -> crate::AnomalyConfig {
    let by = raw.by.unwrap_or_else(|| vec![vec!["tenant".to_string()]]);
    for (i, scope) in by.iter().enumerate() {
        if scope.is_empty() {
            issues.push(
                format!("anomalies.by[{i}]"),
                "must name at least one dimension",
            );
        }
        for d in scope {
            if !crate::model::ANOMALY_DIMENSIONS.contains(&d.as_str()) {
                issues.push(
                    format!("anomalies.by[{i}]"),
                    format!(
                        "unknown dimension '{d}'; valid: {}",
                        crate::model::ANOMALY_DIMENSIONS.join(", ")
                    ),
                );
            }
        }
    }
    let min_usd = raw
        .min_usd
        .unwrap_or(tollgate_types::NanoUsd(1_000_000_000));
    if min_usd.nanos() < 0 {
        issues.push("anomalies.min_usd", "must not be negative");
    }
    let threshold = raw.threshold.unwrap_or(4.0);
    if !(threshold.is_finite() && threshold > 0.0) {
        issues.push("anomalies.threshold", "must be a positive number");
    }
    let weeks = raw.weeks.unwrap_or(4);
    if !(1..=52).contains(&weeks) {
        issues.push(
            "anomalies.weeks",
            format!("must be between 1 and 52, got {weeks}"),
        );
    }
    let check_every_secs = raw.check_every_secs.unwrap_or(60);
    if !(1..=3600).contains(&check_every_secs) {
        issues.push(
            "anomalies.check_every_secs",
            format!("must be between 1 and 3600, got {check_every_secs}"),
        );
    }
    crate::AnomalyConfig {
        by,
        min_usd,
        threshold,
        weeks,
        check_every_secs,
    }
}

fn allocations(
    raw: Vec<crate::raw::RawAllocation>,
    tenants: &BTreeMap<String, TenantConfig>,
    issues: &mut Issues,
) -> Vec<crate::AllocationConfig> {
    let mut names = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, a) in raw.into_iter().enumerate() {
        let path = format!("allocations[{i}]");
        let name = a.name.unwrap_or_default();
        if name.trim().is_empty() {
            issues.push(format!("{path}.name"), "required, not blank");
        } else if !names.insert(name.clone()) {
            issues.push(format!("{path}.name"), format!("'{name}' is used twice"));
        }
        let take = a.take.filter(|m| *m != crate::AllocationMatch::default());
        if take.is_none() && a.amount_usd_per_month.is_none() {
            issues.push(
                &path,
                "needs a `match` (spend to share) or an `amount_usd_per_month`, or both",
            );
        }
        if a.amount_usd_per_month.is_some_and(|x| x.nanos() < 0) {
            issues.push(
                format!("{path}.amount_usd_per_month"),
                "must not be negative",
            );
        }
        let method = a.method.unwrap_or_default();
        let weights = a.weights.unwrap_or_default();
        match (method, weights.is_empty()) {
            (crate::AllocationMethod::Weights, true) => {
                issues.push(format!("{path}.weights"), "required with `method: weights`");
            }
            (crate::AllocationMethod::Weights, false) => {}
            (_, false) => issues.push(format!("{path}.weights"), "only with `method: weights`"),
            (_, true) => {}
        }
        for (tenant, w) in &weights {
            if *w == 0 {
                issues.push(
                    format!("{path}.weights.{tenant}"),
                    "must be a positive integer",
                );
            }
        }
        let listed = a.tenants.unwrap_or_default();
        for (field, tenant) in weights
            .keys()
            .map(|t| ("weights", t))
            .chain(listed.iter().map(|t| ("tenants", t)))
        {
            if !tenants.contains_key(tenant) {
                issues.push(
                    format!("{path}.{field}"),
                    format!("'{tenant}' is not a tenant under `tenants`"),
                );
            }
        }
        out.push(crate::AllocationConfig {
            name,
            take,
            amount_usd_per_month: a.amount_usd_per_month,
            method,
            weights,
            tenants: listed,
        });
    }
    out
}

fn check_price(path: &str, price: &ModelPrice, issues: &mut Issues) {
    if let Err(e) = validate_price(price) {
        issues.push(format!("{path}.{}", e.field), e.reason);
    }
}

fn models(
    raw: BTreeMap<String, RawModel>,
    provider_names: &[String],
    raw_pricing: &RawPricing,
    issues: &mut Issues,
) -> BTreeMap<String, ModelConfig> {
    let mut out = BTreeMap::new();
    let model_names: Vec<String> = raw.keys().cloned().collect();
    for (name, m) in raw {
        let path = format!("models.{name}");
        if let Err(reason) = valid_model_name(&name) {
            issues.push(&path, reason);
            continue;
        }
        if m.deployments.is_empty() {
            issues.push(
                format!("{path}.deployments"),
                "at least one deployment is required",
            );
        }
        let fallbacks = m.fallbacks.unwrap_or_default();
        for (i, f) in fallbacks.iter().enumerate() {
            let fpath = format!("{path}.fallbacks[{i}]");
            if f == &name {
                issues.push(fpath, "a model cannot fall back to itself");
            } else if !model_names.contains(f) {
                issues.push(fpath, format!("unknown model '{f}'"));
            } else if fallbacks[..i].contains(f) {
                issues.push(fpath, format!("'{f}' is listed twice"));
            }
        }
        if let Some(f) = &m.context_window_fallback {
            let fpath = format!("{path}.context_window_fallback");
            if f == &name {
                issues.push(fpath, "a model cannot fall back to itself");
            } else if !model_names.contains(f) {
                issues.push(fpath, format!("unknown model '{f}'"));
            }
        }
        let retry = crate::routing::retry(m.retry, &format!("{path}.retry"), issues);
        let breaker = crate::routing::breaker(m.breaker, &format!("{path}.breaker"), issues);
        let sticky = crate::routing::sticky(m.sticky, &format!("{path}.sticky"), issues);
        if let Some(price) = &m.price {
            check_price(&format!("{path}.price"), price, issues);
            if raw_pricing.models.contains_key(&name) {
                issues.push(
                    format!("pricing.models.{name}"),
                    format!("conflicts with {path}.price; set the price in one place"),
                );
            }
        }
        if m.max_output_tokens == Some(0) {
            issues.push(format!("{path}.max_output_tokens"), "must be > 0");
        }

        let mut deployments: Vec<DeploymentConfig> = Vec::with_capacity(m.deployments.len());
        for (i, d) in m.deployments.into_iter().enumerate() {
            let dpath = format!("{path}.deployments[{i}]");
            if !provider_names.contains(&d.provider) {
                let known = if provider_names.is_empty() {
                    "no providers are configured".to_string()
                } else {
                    format!("known: {}", provider_names.join(", "))
                };
                issues.push(
                    format!("{dpath}.provider"),
                    format!("unknown provider '{}' ({known})", d.provider),
                );
            }
            if let Err(reason) = valid_model_name(&d.model) {
                issues.push(format!("{dpath}.model"), reason);
            }
            if d.weight == Some(0) {
                issues.push(format!("{dpath}.weight"), "must be > 0");
            }
            if let Some(price) = &d.price {
                check_price(&format!("{dpath}.price"), price, issues);
            }
            if let Some(j) = deployments
                .iter()
                .position(|o| o.provider == d.provider && o.model == d.model)
            {
                issues.push(
                    &dpath,
                    format!(
                        "duplicate deployment '{}/{}' (same as deployments[{j}]); raise its \
                         weight instead",
                        d.provider, d.model
                    ),
                );
            }
            deployments.push(DeploymentConfig {
                provider: d.provider,
                model: d.model,
                weight: d.weight.unwrap_or(1),
                price: d.price,
            });
        }

        out.insert(
            name,
            ModelConfig {
                deployments,
                price: m.price,
                max_output_tokens: m.max_output_tokens,
                strategy: m.strategy.unwrap_or_default(),
                fallbacks,
                context_window_fallback: m.context_window_fallback,
                retry,
                breaker,
                sticky,
            },
        );
    }
    out
}

// ---- cache ----------------------------------------------------------------------------------

const MAX_CACHE_TTL_SECS: u64 = 30 * 24 * 3600;

fn cache_rule(
    path: &str,
    raw: &RawCacheRule,
    base: Option<&CacheRule>,
    issues: &mut Issues,
) -> CacheRule {
    let ttl_secs = raw
        .ttl_secs
        .or(base.map(|b| b.ttl_secs))
        .unwrap_or(DEFAULT_CACHE_TTL_SECS);
    if raw.ttl_secs.is_some() && !(1..=MAX_CACHE_TTL_SECS).contains(&ttl_secs) {
        issues.push(
            format!("{path}.ttl_secs"),
            format!("must be between 1 and {MAX_CACHE_TTL_SECS} (30 days)"),
        );
    }
    let max_bytes = raw
        .max_bytes
        .or(base.map(|b| b.max_bytes))
        .unwrap_or(DEFAULT_CACHE_MODEL_MAX_BYTES);
    if raw.max_bytes == Some(0) {
        issues.push(format!("{path}.max_bytes"), "must be > 0");
    }
    CacheRule {
        enabled: raw.enabled.unwrap_or(true),
        ttl_secs,
        max_bytes,
        scope: raw.scope.or(base.map(|b| b.scope)).unwrap_or_default(),
        cache_nondeterministic: raw
            .cache_nondeterministic
            .or(base.map(|b| b.cache_nondeterministic))
            .unwrap_or(false),
    }
}

fn cache(
    raw: RawCache,
    models: &BTreeMap<String, ModelConfig>,
    issues: &mut Issues,
) -> CacheConfig {
    let max_bytes = raw.max_bytes.unwrap_or(DEFAULT_CACHE_MAX_BYTES);
    if max_bytes == 0 {
        issues.push("cache.max_bytes", "must be > 0");
    }
    let default = raw
        .default
        .as_ref()
        .map(|r| cache_rule("cache.default", r, None, issues));
    let mut out = BTreeMap::new();
    for (name, r) in &raw.models {
        let path = format!("cache.models.{name}");
        if !models.contains_key(name) {
            issues.push(
                &path,
                format!("unknown model '{name}' (not configured under models)"),
            );
            continue;
        }
        out.insert(name.clone(), cache_rule(&path, r, default.as_ref(), issues));
    }
    CacheConfig {
        max_bytes,
        default,
        models: out,
    }
}

// ---- pricing --------------------------------------------------------------------------------

fn pricing(
    raw: RawPricing,
    models: &BTreeMap<String, ModelConfig>,
    issues: &mut Issues,
) -> PricingConfig {
    for (name, price) in &raw.models {
        let path = format!("pricing.models.{name}");
        if !models.contains_key(name) {
            issues.push(
                &path,
                format!(
                    "no model '{name}' in models (pricing.models prices logical models; use \
                     models.<name>.deployments[i].price to price one deployment)"
                ),
            );
        }
        check_price(&path, price, issues);
    }
    PricingConfig {
        unknown_model: raw.unknown_model.unwrap_or_default(),
        models: raw.models,
    }
}

/// Builds the price table once (catching anything the per-field checks missed) and warns
/// about deployments no price covers, so the operator learns at startup rather than from
/// refused requests.
fn price_warnings(config: &Config, issues: &mut Issues, warnings: &mut Vec<ConfigWarning>) {
    let table = match PriceTable::new(config.pricing_overrides()) {
        Ok(t) => t,
        Err(e) => {
            issues.push("pricing", e.to_string());
            return;
        }
    };
    for (name, m) in &config.models {
        for (i, d) in m.deployments.iter().enumerate() {
            let dep = DeploymentRef {
                provider: &d.provider,
                model: &d.model,
            };
            if let Resolution::Unpriced { allowed } = table.resolve(name, &dep) {
                let consequence = if allowed {
                    "requests will be served unpriced (cost recorded as 0, row flagged)"
                } else {
                    "requests will be refused with model_not_priced"
                };
                warnings.push(ConfigWarning {
                    path: format!("models.{name}.deployments[{i}]"),
                    message: format!(
                        "no price for '{}' (not in config, not in the built-in table {}); {consequence}. \
                         Set models.{name}.price or this deployment's price",
                        d.label(),
                        table.builtin_version()
                    ),
                });
            }
            if let (Some(cap), Some(limit)) = (
                m.max_output_tokens,
                table.limits(name, &dep).max_output_tokens,
            ) && u64::from(cap) > limit
            {
                warnings.push(ConfigWarning {
                    path: format!("models.{name}.max_output_tokens"),
                    message: format!(
                        "{cap} is above the {limit}-token output limit of '{}' in the built-in table",
                        d.model
                    ),
                });
            }
        }
    }
    if config.pricing.unknown_model == UnknownModel::Allow {
        warnings.push(ConfigWarning {
            path: "pricing.unknown_model".into(),
            message: "allow: models without a price are served and recorded at cost 0 \
                      (budgets do not see their spend)"
                .into(),
        });
    }
}
