//! The embedded defaults used when `tollgate serve` runs without `--config` (PRODUCT.md §4,
//! CLI): listen `127.0.0.1:4000`, SQLite ledger `./tollgate.db`, providers from the
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

pub(crate) fn default_raw(env: &dyn EnvSource, warnings: &mut Vec<ConfigWarning>) -> RawConfig {
    let mut providers = BTreeMap::new();
    let mut models = BTreeMap::new();

    match non_empty(env, "OPENAI_API_KEY") {
        Some(key) => {
            providers.insert(
                "openai".to_string(),
                RawProvider {
                    kind: ProviderKind::Openai,
                    base_url: None,
                    api_key: Some(Secret::new(key)),
                    api_version: None,
                    headers: BTreeMap::new(),
                    timeouts: None,
                },
            );
            for name in DEFAULT_OPENAI_MODELS {
                models.insert(
                    (*name).to_string(),
                    RawModel {
                        deployments: vec![RawDeployment {
                            provider: "openai".to_string(),
                            model: (*name).to_string(),
                            weight: None,
                            price: None,
                        }],
                        price: None,
                        max_output_tokens: None,
                        strategy: None,
                        fallbacks: None,
                    },
                );
            }
        }
        None => warnings.push(ConfigWarning {
            path: "OPENAI_API_KEY".into(),
            message: "not set: no providers configured (set it, or pass --config FILE)".into(),
        }),
    }
    for (var, kind) in [
        ("ANTHROPIC_API_KEY", "anthropic"),
        ("GEMINI_API_KEY", "gemini"),
    ] {
        if non_empty(env, var).is_some() {
            warnings.push(ConfigWarning {
                path: var.into(),
                message: format!(
                    "set, but provider kind '{kind}' is not supported by this build yet; ignored"
                ),
            });
        }
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
    }
}
