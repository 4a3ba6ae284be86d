//! Tollgate's configuration: the YAML file of docs/contracts.md §6 (Config), or the embedded
//! defaults when there is none.
//!
//! Loading is two-phase. The text is parsed into a YAML tree; `${VAR}` references in its string
//! scalars are interpolated (module `interpolate`, never on raw text); the tree is
//! deserialized into raw structs that reject unknown fields (module `raw`, paths tracked
//! by `serde_path_to_error`); then module `validate` fills in defaults and checks
//! every rule, collecting all problems, each naming its path (`providers.sim.base_url: not a
//! valid URL: …`). The result is a [`Config`] ([`model`]) plus startup warnings.
//!
//! Pure: the only I/O is reading the file in [`Config::load`]. The environment is injected
//! ([`EnvSource`]). Credentials are [`Secret`]s and never print.
//!
//! ```
//! use tollgate_config::Config;
//! let env = [("SIM_KEY", "sk-test")];
//! let loaded = Config::from_yaml_str(
//!     "providers:\n  sim: {kind: openai, base_url: 'http://127.0.0.1:9000/v1', api_key: '${SIM_KEY}'}\n\
//!      models:\n  gpt-4o-mini: {deployments: [{provider: sim, model: gpt-4o-mini}]}\n",
//!     &env,
//! ).unwrap();
//! assert_eq!(loaded.config.providers["sim"].api_key.as_ref().unwrap().expose(), "sk-test");
//! ```

mod defaults;
mod env;
mod error;
mod interpolate;
pub mod model;
mod raw;
pub mod routing;
mod secret;
mod validate;

use std::path::Path;

use serde_yaml_ng::Value;
use tollgate_pricing::{DeploymentPriceOverride, PriceError, PriceOverrides, PriceTable};

pub use defaults::DEFAULT_OPENAI_MODELS;
pub use env::{EnvSource, ProcessEnv};
pub use error::{ConfigError, ConfigIssue, ConfigWarning};
pub use model::{
    AllocationConfig, AllocationMatch, AllocationMethod, AnomalyConfig, CacheConfig, CacheRule,
    CacheScope, Config, Counters, DeploymentConfig, Durability, LedgerUrl, LimitsConfig,
    ModelConfig, PricingConfig, ProviderConfig, ServerConfig, StorageConfig, Strategy,
    TelemetryConfig, Timeouts,
};
pub use routing::{BreakerConfig, RetryBudgetConfig, RetryConfig, StickyConfig};
pub use secret::{MASK, Secret};

use error::Issues;

/// A loaded config and what the operator should be told at startup.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Non-fatal findings (unpriced deployments, ignored `ANTHROPIC_API_KEY`, short master
    /// key, …). Log each at startup; `tollgate config check` prints them.
    pub warnings: Vec<ConfigWarning>,
}

/// Values shorter than this are not scrubbed from error messages (they would garble them and
/// are not meaningful secrets).
const MIN_SCRUB_LEN: usize = 6;

impl Config {
    /// Loads `path`, or the embedded defaults when `path` is `None`.
    pub fn load(path: Option<&Path>, env: &dyn EnvSource) -> Result<Loaded, ConfigError> {
        match path {
            None => Config::defaults(env),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                Config::from_yaml_str(&text, env)
            }
        }
    }

    /// The embedded defaults (see the `defaults` module): listen `127.0.0.1:4000`, ledger
    /// `sqlite://./tollgate.db`, provider `openai` with [`DEFAULT_OPENAI_MODELS`] when
    /// `OPENAI_API_KEY` is set, master key from `TOLLGATE_MASTER_KEY`.
    pub fn defaults(env: &dyn EnvSource) -> Result<Loaded, ConfigError> {
        let mut warnings = Vec::new();
        let raw = defaults::default_raw(env, &mut warnings);
        let mut issues = Issues::default();
        match validate::validate(raw, &mut issues, &mut warnings) {
            Some(config) => Ok(Loaded { config, warnings }),
            None => Err(ConfigError::Invalid(issues.0)),
        }
    }

    /// Parses, interpolates and validates a YAML config.
    pub fn from_yaml_str(text: &str, env: &dyn EnvSource) -> Result<Loaded, ConfigError> {
        let mut tree: Value =
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        // `<<: *anchor` merge keys, so shared provider settings can be written once.
        tree.apply_merge()
            .map_err(|e| ConfigError::Syntax(e.to_string()))?;
        if tree.is_null() {
            tree = Value::Mapping(Default::default());
        }
        let mut issues = Issues::default();
        let Value::Mapping(root) = &mut tree else {
            issues.push(
                ".",
                "expected a mapping of sections (server, storage, providers, …)",
            );
            return Err(ConfigError::Invalid(issues.0));
        };
        for section in raw::UNSUPPORTED_SECTIONS {
            if root.remove(*section).is_some() {
                issues.push(
                    *section,
                    format!("section '{section}' is not supported by this build yet"),
                );
            }
        }

        let before_interpolation = issues.0.len();
        let used = interpolate::interpolate_tree(&mut tree, env, &mut issues);
        let scrub = |mut issues: Vec<ConfigIssue>| {
            for issue in &mut issues {
                for v in used.iter().filter(|v| v.len() >= MIN_SCRUB_LEN) {
                    issue.reason = issue.reason.replace(v.as_str(), MASK);
                }
            }
            ConfigError::Invalid(issues)
        };
        if issues.0.len() > before_interpolation {
            // An uninterpolated `${…}` would only cause confusing follow-on errors.
            return Err(scrub(issues.0));
        }

        let raw: raw::RawConfig = match serde_path_to_error::deserialize(tree) {
            Ok(raw) => raw,
            Err(e) => {
                // An empty key at the top (`"": 1`) has an empty path: say where it is.
                let path = match e.path().to_string() {
                    p if p.is_empty() || p == "." => "(top level)".to_string(),
                    p => p,
                };
                issues.push(path, e.inner().to_string());
                return Err(scrub(issues.0));
            }
        };
        let mut warnings = Vec::new();
        match validate::validate(raw, &mut issues, &mut warnings) {
            Some(config) => Ok(Loaded { config, warnings }),
            None => Err(scrub(issues.0)),
        }
    }

    /// The resolved config (defaults filled in) as YAML, every secret shown as `********`.
    /// What `tollgate config check` prints.
    pub fn to_masked_yaml(&self) -> String {
        // Serializing plain data to a String cannot fail in practice; never panic regardless.
        serde_yaml_ng::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// Price overrides for [`PriceTable::new`]: `models.<m>.price` and `pricing.models.<m>` per
    /// logical model, `models.<m>.deployments[i].price` per deployment (keyed by logical model
    /// and `provider/model`), and `pricing.unknown_model`.
    pub fn pricing_overrides(&self) -> PriceOverrides {
        let mut models = self.pricing.models.clone();
        let mut deployments = Vec::new();
        for (name, m) in &self.models {
            if let Some(price) = m.price {
                models.insert(name.clone(), price);
            }
            for d in &m.deployments {
                if let Some(price) = d.price {
                    deployments.push(DeploymentPriceOverride {
                        logical_model: name.clone(),
                        provider: d.provider.clone(),
                        model: d.model.clone(),
                        price,
                    });
                }
            }
        }
        PriceOverrides {
            unknown_model: self.pricing.unknown_model,
            models,
            deployments,
        }
    }

    /// The price table for this config (built-in table + [`Config::pricing_overrides`]).
    /// Validation already built it once, so this fails only if the built-in table is broken.
    pub fn price_table(&self) -> Result<PriceTable, PriceError> {
        PriceTable::new(self.pricing_overrides())
    }
}
