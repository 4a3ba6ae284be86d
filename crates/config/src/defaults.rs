//! The embedded defaults used when `tollgate serve` runs without `--config` (docs/contracts.md
//! §3 CLI): listen `127.0.0.1:4000`, SQLite ledger `./tollgate.db`, providers from the
//! environment.
//!
//! The defaults are built as a raw config and go through the same validation as a file, so
//! they cannot drift from the rules. Environment values are put in as values, never spliced
//! into YAML text.

use std::collections::BTreeMap;

use tollgate_types::ProviderKind;

use crate::error::ConfigWarning;
use crate::raw::{RawConfig, RawDeployment, RawModel, RawProvider, RawServer, RawStorage};
use crate::{EnvSource, Secret};

/// Logical models exposed by the default `openai` provider, each served by the upstream
/// model of the same name.
pub const DEFAULT_OPENAI_MODELS: &[&str] = &[
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "o4-mini",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "text-embedding-3-small",
    "text-embedding-3-large",
];

fn non_empty(env: &dyn EnvSource, name: &str) -> Option<String> {
    env.var(name).filter(|v| !v.is_empty())
}

/// Logical models exposed by the default `anthropic` provider.
pub(crate) const DEFAULT_ANTHROPIC_MODELS: &[&str] = &[
    "claude-haiku-4-5",
    "claude-sonnet-4-5",
    "claude-sonnet-4-6",
    "claude-opus-4-1",
    "claude-opus-4-7",
];

/// Logical models exposed by the default `gemini` provider.
pub(crate) const DEFAULT_GEMINI_MODELS: &[&str] = &[
    "gemini-2.0-flash",
    "gemini-2.5-flash",
    "gemini-2.5-flash-lite",
    "gemini-2.5-pro",
];

pub(crate) fn default_raw(env: &dyn EnvSource, warnings: &mut Vec<ConfigWarning>) -> RawConfig {
    let mut providers = BTreeMap::new();
    let mut models = BTreeMap::new();

    let sources: [(&str, &str, ProviderKind, &[&str]); 3] = [
        (
            "OPENAI_API_KEY",
            "openai",
            ProviderKind::Openai,
            DEFAULT_OPENAI_MODELS,
        ),
        (
            "ANTHROPIC_API_KEY",
            "anthropic",
            ProviderKind::Anthropic,
            DEFAULT_ANTHROPIC_MODELS,
        ),
        (
            "GEMINI_API_KEY",
            "gemini",
            ProviderKind::Gemini,
            DEFAULT_GEMINI_MODELS,
        ),
    ];
    for (var, provider, kind, names) in sources {
        let Some(key) = non_empty(env, var) else {
            continue;
        };
        providers.insert(
            provider.to_string(),
            RawProvider {
                kind,
                base_url: None,
                api_key: Some(Secret::new(key)),
                api_version: None,
                headers: BTreeMap::new(),
                timeouts: None,
                region: None,
                aws_access_key_id: None,
                aws_secret_access_key: None,
                aws_session_token: None,
            },
        );
        for name in names {
            models.insert(
                (*name).to_string(),
                RawModel {
                    deployments: vec![RawDeployment {
                        provider: provider.to_string(),
                        model: (*name).to_string(),
                        weight: None,
                        price: None,
                    }],
                    price: None,
                    max_output_tokens: None,
                    strategy: None,
                    fallbacks: None,
                    context_window_fallback: None,
                    retry: None,
                    breaker: None,
                    sticky: None,
                },
            );
        }
    }
    if providers.is_empty() {
        warnings.push(ConfigWarning {
            path: "OPENAI_API_KEY".into(),
            message: "none of OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY is set: no \
                      providers configured (set one, or pass --config FILE)"
                .into(),
        });
    }

    RawConfig {
        server: Some(RawServer {
            master_key: non_empty(env, "TOLLGATE_MASTER_KEY").map(Secret::new),
            ..RawServer::default()
        }),
        storage: Some(RawStorage {
            ledger: Some("sqlite://./tollgate.db".to_string()),
            ..RawStorage::default()
        }),
        providers: Some(providers),
        models: Some(models),
        pricing: None,
        tenants: None,
        allocations: None,
        anomalies: None,
        budgets: None,
        policies: None,
        rate_limits: None,
        cache: None,
        telemetry: None,
    }
}
