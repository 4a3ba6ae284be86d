//! [`PriceTable`]: the built-in table plus operator overrides, and the precedence that picks
//! one price for a request.
//!
//! # Precedence
//! For a request to logical model `L` served by deployment `provider/model`:
//! 1. a **deployment override** for (`L`, `provider`, `model`) — config
//!    `models.L.deployments[i].price`;
//! 2. a **logical-model override** for `L` — config `models.L.price` or `pricing.models.L`;
//! 3. the **built-in** entry for the upstream `model` (name rules of [`crate::names`]);
//! 4. the **built-in** entry for the logical name `L`;
//! 5. otherwise [`Resolution::Unpriced`], `allowed` per `pricing.unknown_model`.
//!
//! Deployment overrides are keyed by the deployment's label (`provider/model`, the same label
//! the ledger records) under its logical model, not by position: reordering deployments in the
//! config cannot move a negotiated price onto another deployment.
//!
//! # Versions
//! A price from the built-in table carries the table's version (`builtin-2026-07-24`). A price
//! from config carries that version with `+config` appended (`builtin-2026-07-24+config`).
//! Only the rows actually priced by config are marked, so a ledger row's version always says
//! where its price came from.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{BuiltinTable, ModelLimits, ModelPrice, PriceError, builtin, validate_price};

/// What happens to a request whose model has no price (`pricing.unknown_model`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownModel {
    /// Fail closed: the request is refused with `model_not_priced` (docs/contracts.md §2
    /// invariant 6).
    #[default]
    Reject,
    /// Serve it, record cost 0 and flag the ledger row `unpriced`.
    Allow,
}

impl UnknownModel {
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownModel::Reject => "reject",
            UnknownModel::Allow => "allow",
        }
    }
}

/// The deployment a request is being sent to: provider name from config (`providers.<name>`)
/// and the upstream model name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeploymentRef<'a> {
    pub provider: &'a str,
    pub model: &'a str,
}

impl DeploymentRef<'_> {
    /// `provider/model`, the deployment label used in the ledger and in override keys.
    pub fn label(&self) -> String {
        format!("{}/{}", self.provider, self.model)
    }
}

/// A price set for one deployment of one logical model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentPriceOverride {
    pub logical_model: String,
    /// Provider name from config.
    pub provider: String,
    /// Upstream model name.
    pub model: String,
    pub price: ModelPrice,
}

/// Everything config can say about prices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceOverrides {
    pub unknown_model: UnknownModel,
    /// Logical model name → price.
    pub models: BTreeMap<String, ModelPrice>,
    /// Per-deployment prices; at most one per (logical model, provider, model).
    pub deployments: Vec<DeploymentPriceOverride>,
}

/// Which rule produced a price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceSource {
    /// `models.<logical>.deployments[i].price`.
    Deployment,
    /// `models.<logical>.price` or `pricing.models.<logical>`.
    LogicalModel,
    /// Built-in entry `id`, matched from the upstream model name.
    BuiltinUpstream { id: &'static str },
    /// Built-in entry `id`, matched from the logical model name.
    BuiltinLogical { id: &'static str },
}

impl PriceSource {
    /// Short name for logs: `deployment`, `model`, `builtin_upstream`, `builtin_logical`.
    pub fn as_str(self) -> &'static str {
        match self {
            PriceSource::Deployment => "deployment",
            PriceSource::LogicalModel => "model",
            PriceSource::BuiltinUpstream { .. } => "builtin_upstream",
            PriceSource::BuiltinLogical { .. } => "builtin_logical",
        }
    }
}

/// The answer to "what does this cost".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Priced {
        price: ModelPrice,
        /// Price-table version for the ledger row (see the module docs).
        version: Arc<str>,
        source: PriceSource,
    },
    /// No price anywhere. `allowed` is true when `pricing.unknown_model: allow`; the request
    /// is then served and its row flagged `unpriced`. When false it must be refused.
    Unpriced { allowed: bool },
}

/// Built-in prices plus config overrides. Cheap to share (`Arc<PriceTable>`); `resolve`
/// allocates nothing.
#[derive(Debug, Clone)]
pub struct PriceTable {
    builtin: &'static BuiltinTable,
    builtin_version: Arc<str>,
    config_version: Arc<str>,
    unknown_model: UnknownModel,
    models: HashMap<String, ModelPrice>,
    /// Logical model → its deployment overrides. A logical model has a handful of
    /// deployments, so a scan beats building a composite key per request.
    deployments: HashMap<String, Vec<(String, String, ModelPrice)>>,
}

impl PriceTable {
    /// Builds the table. Every override price must pass [`validate_price`]; the error names
    /// the logical model (`gpt-4o`) or the deployment (`gpt-4o/azure-eu/gpt-4o`) and the field.
    pub fn new(overrides: PriceOverrides) -> Result<PriceTable, PriceError> {
        let builtin = builtin()?;
        let builtin_version: Arc<str> = Arc::from(builtin.version());
        let config_version: Arc<str> = Arc::from(format!("{}+config", builtin.version()));

        let mut models = HashMap::with_capacity(overrides.models.len());
        for (name, price) in overrides.models {
            validate_price(&price).map_err(|e| PriceError::invalid(&name, e))?;
            models.insert(name, price);
        }

        let mut deployments: HashMap<String, Vec<(String, String, ModelPrice)>> = HashMap::new();
        for d in overrides.deployments {
            let key = format!("{}/{}/{}", d.logical_model, d.provider, d.model);
            validate_price(&d.price).map_err(|e| PriceError::invalid(&key, e))?;
            let list = deployments.entry(d.logical_model).or_default();
            if list
                .iter()
                .any(|(p, m, _)| *p == d.provider && *m == d.model)
            {
                return Err(PriceError::Duplicate(key));
            }
            list.push((d.provider, d.model, d.price));
        }

        Ok(PriceTable {
            builtin,
            builtin_version,
            config_version,
            unknown_model: overrides.unknown_model,
            models,
            deployments,
        })
    }

    /// The price for `logical_model` served by `deployment`, by the precedence in the module
    /// docs.
    pub fn resolve(&self, logical_model: &str, deployment: &DeploymentRef<'_>) -> Resolution {
        let from_config = |price: ModelPrice, source| Resolution::Priced {
            price,
            version: Arc::clone(&self.config_version),
            source,
        };
        if let Some((_, _, price)) = self.deployments.get(logical_model).and_then(|list| {
            list.iter()
                .find(|(p, m, _)| p == deployment.provider && m == deployment.model)
        }) {
            return from_config(*price, PriceSource::Deployment);
        }
        if let Some(price) = self.models.get(logical_model) {
            return from_config(*price, PriceSource::LogicalModel);
        }
        let from_builtin = |price: ModelPrice, source| Resolution::Priced {
            price,
            version: Arc::clone(&self.builtin_version),
            source,
        };
        if let Some(e) = self.builtin.lookup(deployment.model) {
            return from_builtin(e.price, PriceSource::BuiltinUpstream { id: e.id.as_str() });
        }
        if let Some(e) = self.builtin.lookup(logical_model) {
            return from_builtin(e.price, PriceSource::BuiltinLogical { id: e.id.as_str() });
        }
        Resolution::Unpriced {
            allowed: self.unknown_model == UnknownModel::Allow,
        }
    }

    /// Context limits for the deployment: the built-in entry of the upstream model, else of
    /// the logical model, else unknown. Independent of price overrides.
    pub fn limits(&self, logical_model: &str, deployment: &DeploymentRef<'_>) -> ModelLimits {
        self.builtin
            .lookup(deployment.model)
            .or_else(|| self.builtin.lookup(logical_model))
            .map(|e| e.limits)
            .unwrap_or_default()
    }

    pub fn unknown_model(&self) -> UnknownModel {
        self.unknown_model
    }

    /// `builtin-2026-07-24`.
    pub fn builtin_version(&self) -> &str {
        &self.builtin_version
    }

    /// `builtin-2026-07-24+config`, the version of prices taken from config.
    pub fn config_version(&self) -> &str {
        &self.config_version
    }

    /// The built-in table underneath.
    pub fn builtin(&self) -> &'static BuiltinTable {
        self.builtin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_types::NanoUsd;

    fn usd(s: &str) -> NanoUsd {
        NanoUsd::parse_usd(s).unwrap()
    }

    fn flat(input: &str, output: &str) -> ModelPrice {
        ModelPrice {
            input: usd(input),
            cached_input: None,
            cache_write: None,
            output: usd(output),
        }
    }

    fn dep<'a>(provider: &'a str, model: &'a str) -> DeploymentRef<'a> {
        DeploymentRef { provider, model }
    }

    fn overrides() -> PriceOverrides {
        PriceOverrides {
            unknown_model: UnknownModel::Reject,
            models: BTreeMap::from([("chat".to_string(), flat("1", "2"))]),
            deployments: vec![DeploymentPriceOverride {
                logical_model: "chat".into(),
                provider: "azure-eu".into(),
                model: "gpt-4o".into(),
                price: flat("2", "8"),
            }],
        }
    }

    #[test]
    fn precedence() {
        let t = PriceTable::new(overrides()).unwrap();

        // 1. deployment override
        let r = t.resolve("chat", &dep("azure-eu", "gpt-4o"));
        assert_eq!(
            r,
            Resolution::Priced {
                price: flat("2", "8"),
                version: "builtin-2026-07-24+config".into(),
                source: PriceSource::Deployment
            }
        );
        // 2. logical override, for another deployment of the same logical model
        let Resolution::Priced { price, source, .. } = t.resolve("chat", &dep("openai", "gpt-4o"))
        else {
            panic!("priced")
        };
        assert_eq!((price, source), (flat("1", "2"), PriceSource::LogicalModel));
        // The deployment override is scoped to its logical model.
        let Resolution::Priced {
            source, version, ..
        } = t.resolve("other", &dep("azure-eu", "gpt-4o"))
        else {
            panic!("priced")
        };
        assert_eq!(source, PriceSource::BuiltinUpstream { id: "gpt-4o" });
        assert_eq!(&*version, "builtin-2026-07-24");
        // 3. builtin by upstream name beats builtin by logical name
        let Resolution::Priced { price, source, .. } =
            t.resolve("gpt-4o", &dep("openai", "gpt-4o-mini-2024-07-18"))
        else {
            panic!("priced")
        };
        assert_eq!(source, PriceSource::BuiltinUpstream { id: "gpt-4o-mini" });
        assert_eq!(price.input, usd("0.15"));
        // 4. builtin by logical name (Azure deployment names are arbitrary)
        let Resolution::Priced { source, .. } =
            t.resolve("gpt-4.1", &dep("azure", "my-deployment-7"))
        else {
            panic!("priced")
        };
        assert_eq!(source, PriceSource::BuiltinLogical { id: "gpt-4.1" });
        // 5. nothing
        assert_eq!(
            t.resolve("mystery", &dep("sim", "mystery-1")),
            Resolution::Unpriced { allowed: false }
        );
    }

    #[test]
    fn unknown_model_allow() {
        let t = PriceTable::new(PriceOverrides {
            unknown_model: UnknownModel::Allow,
            ..PriceOverrides::default()
        })
        .unwrap();
        assert_eq!(
            t.resolve("gpt-4o-mini-foo", &dep("sim", "gpt-4o-mini-foo")),
            Resolution::Unpriced { allowed: true }
        );
        assert_eq!(t.unknown_model(), UnknownModel::Allow);
    }

    #[test]
    fn rejects_invalid_overrides_naming_model_and_field() {
        let mut o = overrides();
        o.models.insert("cheap".into(), flat("0.0000001", "1"));
        let e = PriceTable::new(o).unwrap_err();
        assert!(
            matches!(&e, PriceError::Invalid { model, field: "input", .. } if model == "cheap")
        );
        assert!(e.to_string().contains("'cheap': input"), "{e}");

        let mut o = overrides();
        o.deployments[0].price.cached_input = Some(usd("3"));
        let e = PriceTable::new(o).unwrap_err();
        assert!(
            e.to_string()
                .contains("'chat/azure-eu/gpt-4o': cached_input"),
            "{e}"
        );
    }

    #[test]
    fn rejects_duplicate_deployment_overrides() {
        let mut o = overrides();
        o.deployments.push(o.deployments[0].clone());
        assert_eq!(
            PriceTable::new(o).unwrap_err(),
            PriceError::Duplicate("chat/azure-eu/gpt-4o".into())
        );
    }

    #[test]
    fn limits_follow_builtin_lookup() {
        let t = PriceTable::new(PriceOverrides::default()).unwrap();
        let l = t.limits("x", &dep("openai", "claude-opus-4-1-20250805"));
        assert_eq!(l.max_output_tokens, Some(32_000));
        let l = t.limits("gpt-5", &dep("azure", "deployment-a"));
        assert_eq!(l.max_output_tokens, Some(128_000));
        assert_eq!(t.limits("x", &dep("sim", "y")), ModelLimits::default());
    }

    #[test]
    fn model_price_serde_shape() {
        let p: ModelPrice =
            serde_json::from_str(r#"{"input": 0.15, "cached_input": "0.075", "output": 0.6}"#)
                .unwrap();
        assert_eq!(p.input, usd("0.15"));
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"input":"0.15","cached_input":"0.075","output":"0.6"}"#
        );
        assert!(serde_json::from_str::<ModelPrice>(r#"{"input":1,"output":1,"batch":1}"#).is_err());
        let u: UnknownModel = serde_json::from_str("\"allow\"").unwrap();
        assert_eq!(u, UnknownModel::Allow);
    }
}
