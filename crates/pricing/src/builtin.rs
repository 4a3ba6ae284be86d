//! The built-in price table: `data/builtin-2026-07-24.yaml`, embedded in the binary.
//!
//! The table is data, not code, so a price update is a reviewable diff of one file. It is
//! parsed once, at first use, and checked then (every price passes [`crate::validate_price`],
//! the version matches [`BUILTIN_VERSION`]). A defect is returned as
//! [`crate::PriceError::Builtin`] instead of panicking; the crate's tests
//! make sure that never happens in a release.
//!
//! Each version is immutable: ledger rows name the version that priced them, so a price change
//! means a new dated file and a new version string.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use tollgate_types::NanoUsd;

use crate::{ModelPrice, PriceError, names, validate_price};

/// Version of the embedded table; recorded on every ledger row priced from it.
pub const BUILTIN_VERSION: &str = "builtin-2026-07-24";

const BUILTIN_YAML: &str = include_str!("../data/builtin-2026-07-24.yaml");

static BUILTIN: LazyLock<Result<BuiltinTable, String>> =
    LazyLock::new(|| BuiltinTable::parse(BUILTIN_YAML));

/// The embedded table, parsed on first call.
pub fn builtin() -> Result<&'static BuiltinTable, PriceError> {
    BUILTIN.as_ref().map_err(|e| PriceError::Builtin(e.clone()))
}

/// The most output tokens `model` (an upstream model name, provider prefixes allowed) can
/// produce, per the built-in table. The binary hands this to provider adapters whose API
/// requires a cap on every request (Anthropic's `max_tokens`).
pub fn max_output_tokens(model: &str) -> Option<u64> {
    builtin().ok()?.lookup(model)?.limits.max_output_tokens
}

/// Who publishes a built-in price. Used to check provider prefixes on requested ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vendor {
    Openai,
    Anthropic,
    Google,
    Mistral,
    Deepseek,
}

impl Vendor {
    pub fn as_str(self) -> &'static str {
        match self {
            Vendor::Openai => "openai",
            Vendor::Anthropic => "anthropic",
            Vendor::Google => "google",
            Vendor::Mistral => "mistral",
            Vendor::Deepseek => "deepseek",
        }
    }
}

/// Context limits of a model, from the same source as its price. `None` = not known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelLimits {
    pub max_input_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
}

/// One model of the built-in table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinEntry {
    /// Canonical id (`gpt-4o-mini`, `claude-sonnet-4-5`, `gemini-2.5-pro`).
    pub id: String,
    pub vendor: Vendor,
    pub price: ModelPrice,
    pub limits: ModelLimits,
}

/// The parsed built-in table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinTable {
    version: String,
    as_of: String,
    entries: BTreeMap<String, BuiltinEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    version: String,
    as_of: String,
    models: BTreeMap<String, RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    vendor: Vendor,
    input: NanoUsd,
    #[serde(default)]
    cached_input: Option<NanoUsd>,
    #[serde(default)]
    cache_write: Option<NanoUsd>,
    output: NanoUsd,
    #[serde(default)]
    max_input_tokens: Option<u64>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
}

impl BuiltinTable {
    fn parse(yaml: &str) -> Result<BuiltinTable, String> {
        let raw: RawFile = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        if raw.version != BUILTIN_VERSION {
            return Err(format!(
                "file says version '{}', code expects '{BUILTIN_VERSION}'",
                raw.version
            ));
        }
        let mut entries = BTreeMap::new();
        for (id, e) in raw.models {
            let price = ModelPrice {
                input: e.input,
                cached_input: e.cached_input,
                cache_write: e.cache_write,
                output: e.output,
            };
            validate_price(&price).map_err(|err| format!("{id}: {err}"))?;
            // Entries are canonical ids: a provider-prefixed id could never be reached by the
            // lookup rules, which strip the prefix before looking. (Dated ids are allowed: they
            // list snapshots priced differently from their alias.)
            if names::strip_provider_prefixes(&id) != Some((id.as_str(), None)) {
                return Err(format!("{id}: not a canonical model id"));
            }
            if e.max_input_tokens == Some(0) || e.max_output_tokens == Some(0) {
                return Err(format!("{id}: a token limit of 0"));
            }
            let limits = ModelLimits {
                max_input_tokens: e.max_input_tokens,
                max_output_tokens: e.max_output_tokens,
            };
            let entry = BuiltinEntry {
                id: id.clone(),
                vendor: e.vendor,
                price,
                limits,
            };
            entries.insert(id, entry);
        }
        Ok(BuiltinTable {
            version: raw.version,
            as_of: raw.as_of,
            entries,
        })
    }

    /// `builtin-YYYY-MM-DD`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Date of the price snapshot (`YYYY-MM-DD`).
    pub fn as_of(&self) -> &str {
        &self.as_of
    }

    /// All entries, sorted by id.
    pub fn entries(&self) -> impl Iterator<Item = &BuiltinEntry> {
        self.entries.values()
    }

    /// The entry for exactly this id, no name rules applied.
    pub fn get(&self, id: &str) -> Option<&BuiltinEntry> {
        self.entries.get(id)
    }

    /// The entry a requested model id maps to under the rules of [`crate::names`]: exact id,
    /// then without provider prefix, then without date suffix, then without `-latest`.
    pub fn lookup(&self, name: &str) -> Option<&BuiltinEntry> {
        if let Some(e) = self.entries.get(name) {
            return Some(e);
        }
        let (base, vendor) = names::strip_provider_prefixes(name)?;
        let get = |id: &str| {
            self.entries
                .get(id)
                .filter(|e| vendor.is_none_or(|v| v == e.vendor))
        };
        if base.len() != name.len()
            && let Some(e) = get(base)
        {
            return Some(e);
        }
        if let Some(e) = names::strip_date_suffix(base).and_then(get) {
            return Some(e);
        }
        base.strip_suffix("-latest").and_then(get)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> &'static BuiltinTable {
        builtin().expect("built-in table parses")
    }

    fn usd(s: &str) -> NanoUsd {
        NanoUsd::parse_usd(s).unwrap()
    }

    #[test]
    fn parses_with_expected_version() {
        let t = table();
        assert_eq!(t.version(), BUILTIN_VERSION);
        assert_eq!(t.as_of(), "2026-07-24");
    }

    #[test]
    fn every_entry_passes_validation() {
        for e in table().entries() {
            assert_eq!(validate_price(&e.price), Ok(()), "{}", e.id);
        }
    }

    #[test]
    fn covers_the_required_models() {
        let required = [
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4.1",
            "gpt-4.1-mini",
            "gpt-4.1-nano",
            "o3",
            "o4-mini",
            "gpt-5",
            "gpt-5-mini",
            "gpt-5-nano",
            "gpt-5.4",
            "gpt-5.5",
            "text-embedding-3-small",
            "text-embedding-3-large",
            "claude-haiku-4-5",
            "claude-sonnet-4-5",
            "claude-sonnet-4-6",
            "claude-opus-4-1",
            "claude-opus-4-7",
            "gemini-2.0-flash",
            "gemini-2.5-flash",
            "gemini-2.5-flash-lite",
            "gemini-2.5-pro",
            "gemini-3.1-pro-preview",
            "gemini-embedding-001",
            "mistral-large-latest",
            "mistral-medium-latest",
            "mistral-small-latest",
            "mistral-embed",
            "deepseek-chat",
            "deepseek-reasoner",
        ];
        for id in required {
            assert!(table().get(id).is_some(), "missing {id}");
        }
    }

    #[test]
    fn spot_check_prices_and_limits() {
        let m = table().get("gpt-4o-mini").unwrap();
        assert_eq!(m.vendor, Vendor::Openai);
        assert_eq!(m.price.input, usd("0.15"));
        assert_eq!(m.price.cached_input, Some(usd("0.075")));
        assert_eq!(m.price.cache_write, None);
        assert_eq!(m.price.output, usd("0.6"));
        assert_eq!(m.limits.max_input_tokens, Some(128_000));
        assert_eq!(m.limits.max_output_tokens, Some(16_384));

        let c = table().get("claude-opus-4-1").unwrap();
        assert_eq!(c.price.cache_write, Some(usd("18.75")));
        assert_eq!(c.price.output, usd("75"));

        let o = table().get("o4-mini").unwrap();
        assert_eq!(o.price.cached_input, Some(usd("0.275")));

        let e = table().get("text-embedding-3-small").unwrap();
        assert_eq!(e.price.output, NanoUsd::ZERO);
        assert_eq!(e.limits.max_output_tokens, None);

        let d = table().get("deepseek-chat").unwrap();
        assert_eq!(
            d.price.cache_write, None,
            "0 in LiteLLM, treated as unknown"
        );
    }

    #[test]
    fn anthropic_cache_write_is_the_5_minute_price() {
        for e in table().entries().filter(|e| e.vendor == Vendor::Anthropic) {
            let write = e
                .price
                .cache_write
                .expect("anthropic entries list cache_write");
            // 1.25 × input, exactly.
            assert_eq!(write.nanos() * 4, e.price.input.nanos() * 5, "{}", e.id);
        }
    }

    #[test]
    fn lookup_rules() {
        let t = table();
        let id = |n: &str| t.lookup(n).map(|e| e.id.as_str());
        // exact
        assert_eq!(id("gpt-4o-mini"), Some("gpt-4o-mini"));
        assert_eq!(id("mistral-large-latest"), Some("mistral-large-latest"));
        // provider prefix
        assert_eq!(id("openai/gpt-4o-mini"), Some("gpt-4o-mini"));
        assert_eq!(id("gemini/gemini-2.5-pro"), Some("gemini-2.5-pro"));
        assert_eq!(id("models/gemini-2.5-flash"), Some("gemini-2.5-flash"));
        assert_eq!(id("anthropic/claude-sonnet-4-5"), Some("claude-sonnet-4-5"));
        assert_eq!(
            id("mistral/mistral-large-latest"),
            Some("mistral-large-latest")
        );
        assert_eq!(id("deepseek/deepseek-chat"), Some("deepseek-chat"));
        // prefix must agree with the vendor
        assert_eq!(id("anthropic/gpt-4o"), None);
        assert_eq!(id("openai/gemini-2.5-pro"), None);
        // dated snapshots
        assert_eq!(id("gpt-4o-mini-2024-07-18"), Some("gpt-4o-mini"));
        assert_eq!(id("gpt-4o-2024-08-06"), Some("gpt-4o"));
        assert_eq!(id("claude-sonnet-4-5-20250929"), Some("claude-sonnet-4-5"));
        assert_eq!(id("claude-sonnet-4-5@20250929"), Some("claude-sonnet-4-5"));
        assert_eq!(
            id("anthropic/claude-haiku-4-5-20251001"),
            Some("claude-haiku-4-5")
        );
        // a snapshot priced differently from its alias has its own entry and wins
        assert_eq!(id("gpt-4o-2024-05-13"), Some("gpt-4o-2024-05-13"));
        assert_eq!(t.lookup("gpt-4o-2024-05-13").unwrap().price.input, usd("5"));
        // -latest stripped only when the -latest id itself is not listed
        assert_eq!(id("claude-opus-4-7-latest"), Some("claude-opus-4-7"));
        assert_eq!(id("mistral-small-latest"), Some("mistral-small-latest"));
        // never loose prefixes
        assert_eq!(id("gpt-4o-mini-foo"), None);
        assert_eq!(id("gpt-4o-foo"), None);
        assert_eq!(id("gpt-4o-mini-2024-07-18-foo"), None);
        assert_eq!(id("gpt-4"), None);
        assert_eq!(id("gpt-5.4-mini"), None);
        assert_eq!(id("chatgpt-4o-latest"), None);
        assert_eq!(id("GPT-4O-MINI"), None);
        assert_eq!(id(""), None);
        assert_eq!(id("openai/"), None);
        assert_eq!(id("acme/gpt-4o"), None);
    }

    #[test]
    fn rejects_malformed_tables() {
        let bad_version = "version: builtin-1999-01-01\nas_of: '1999-01-01'\nmodels: {}\n";
        assert!(
            BuiltinTable::parse(bad_version)
                .unwrap_err()
                .contains("version")
        );
        let bad_price = format!(
            "version: {BUILTIN_VERSION}\nas_of: x\nmodels:\n  m: {{vendor: openai, input: 0.0000025, output: 1}}\n"
        );
        assert!(
            BuiltinTable::parse(&bad_price)
                .unwrap_err()
                .contains("m: input")
        );
        let prefixed = format!(
            "version: {BUILTIN_VERSION}\nas_of: x\nmodels:\n  openai/m: {{vendor: openai, input: 1, output: 1}}\n"
        );
        assert!(
            BuiltinTable::parse(&prefixed)
                .unwrap_err()
                .contains("canonical")
        );
        let unknown_field = format!(
            "version: {BUILTIN_VERSION}\nas_of: x\nmodels:\n  m: {{vendor: openai, input: 1, output: 1, batch: 1}}\n"
        );
        assert!(BuiltinTable::parse(&unknown_field).is_err());
    }
}
