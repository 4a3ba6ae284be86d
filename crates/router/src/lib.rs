//! The router: logical model name → the deployment that serves this request.
//!
//! A logical model (the name clients send) maps to one or more deployments — a provider plus
//! the upstream model name — each with a weight. The strategy here is `weighted` (the default):
//! a deployment is drawn with probability proportional to its weight. Health-, latency- and
//! cost-aware strategies, fallbacks and circuit breakers build on [`LogicalModel::deployments`].
//!
//! The router is immutable once built; a config reload builds a new one.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::Rng;
use tollgate_providers::Provider;

/// One way to serve a logical model.
#[derive(Clone)]
pub struct Deployment {
    pub provider: Arc<dyn Provider>,
    /// Provider name from config.
    pub provider_name: String,
    /// Upstream model (Azure: deployment) name.
    pub model: String,
    /// `provider/model`, the deployment's label in the ledger and in price overrides.
    pub label: String,
    pub weight: u32,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("label", &self.label)
            .field("weight", &self.weight)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct LogicalModel {
    pub name: String,
    pub deployments: Vec<Deployment>,
    /// Output cap for requests that set none (`models.<name>.max_output_tokens`); budget
    /// admission reserves it and writes it into the request.
    pub max_output_tokens: Option<u32>,
    total_weight: u64,
}

impl LogicalModel {
    /// `None` when there are no deployments or every weight is zero.
    pub fn new(name: String, deployments: Vec<Deployment>) -> Option<LogicalModel> {
        let total_weight = deployments.iter().map(|d| u64::from(d.weight)).sum();
        if total_weight == 0 {
            return None;
        }
        Some(LogicalModel {
            name,
            deployments,
            max_output_tokens: None,
            total_weight,
        })
    }

    pub fn with_max_output_tokens(mut self, cap: Option<u32>) -> Self {
        self.max_output_tokens = cap;
        self
    }

    /// Draws a deployment by weight.
    pub fn pick(&self) -> &Deployment {
        self.pick_with(rand::rng().random_range(0..self.total_weight))
    }

    /// The deployment at point `r` of the cumulative weights (`r < total weight`).
    fn pick_with(&self, mut r: u64) -> &Deployment {
        for d in &self.deployments {
            let w = u64::from(d.weight);
            if r < w {
                return d;
            }
            r -= w;
        }
        // Unreachable for r < total_weight; the last deployment is a safe answer anyway.
        &self.deployments[self.deployments.len() - 1]
    }
}

/// All logical models, by name.
#[derive(Debug, Clone, Default)]
pub struct Router {
    models: BTreeMap<String, Arc<LogicalModel>>,
}

impl Router {
    pub fn new(models: impl IntoIterator<Item = LogicalModel>) -> Router {
        Router {
            models: models
                .into_iter()
                .map(|m| (m.name.clone(), Arc::new(m)))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<LogicalModel>> {
        self.models.get(name)
    }

    /// Logical model names in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_providers::ProviderSettings;
    use tollgate_types::ProviderKind;

    fn dep(weight: u32, label: &str) -> Deployment {
        let provider = tollgate_providers::build(ProviderSettings::new(
            "p",
            ProviderKind::Openai,
            "http://127.0.0.1:9/v1",
        ))
        .unwrap();
        Deployment {
            provider,
            provider_name: "p".into(),
            model: label.into(),
            label: label.into(),
            weight,
        }
    }

    #[test]
    fn weighted_pick_follows_cumulative_weights() {
        let m = LogicalModel::new("m".into(), vec![dep(1, "a"), dep(3, "b")]).unwrap();
        assert_eq!(m.pick_with(0).label, "a");
        assert_eq!(m.pick_with(1).label, "b");
        assert_eq!(m.pick_with(3).label, "b");
        assert!(LogicalModel::new("z".into(), vec![dep(0, "a")]).is_none());
        let r = Router::new([m]);
        assert!(r.get("m").is_some());
        assert_eq!(r.names().collect::<Vec<_>>(), vec!["m"]);
    }
}
