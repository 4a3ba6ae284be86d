//! Who a request is billed to.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The label reported for spend that carries no tenant. Such spend is reported, never dropped.
pub const UNATTRIBUTED: &str = "(unattributed)";

/// The resolved attribution of one request: `{key, team, tenant, feature, user, tags}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribution {
    /// Id of the virtual key that authenticated the request (`None` before key resolution).
    pub key_id: Option<String>,
    /// Human name of the key, for reports.
    pub key_name: Option<String>,
    pub team: Option<String>,
    pub tenant: Option<String>,
    pub feature: Option<String>,
    pub user: Option<String>,
    pub tags: BTreeMap<String, String>,
}

impl Attribution {
    /// Tenant label used in reports: the tenant or [`UNATTRIBUTED`].
    pub fn tenant_label(&self) -> &str {
        self.tenant.as_deref().unwrap_or(UNATTRIBUTED)
    }
}
