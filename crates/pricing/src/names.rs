//! How a requested model id is mapped onto a built-in table entry.
//!
//! Rules, tried in order and stopping at the first hit (see [`crate::BuiltinTable::lookup`]):
//! 1. the exact id;
//! 2. the id without known provider prefixes (`openai/`, `anthropic/`, `gemini/`, `models/`, …)
//!    — the prefix must agree with the entry's vendor, so `anthropic/gpt-4o` matches nothing;
//! 3. that id without a date suffix: `-2024-07-18`, `-20250929` or `@20250929`;
//! 4. that id without `-latest` (only reached when the id with `-latest` is not itself listed).
//!
//! There is deliberately **no** loose prefix matching: `gpt-4o-mini-foo` is not `gpt-4o-mini`
//! and not `gpt-4o`. A wrong price is worse than no price, since no price fails closed and tells
//! the operator to add one. Dated snapshots that are priced differently from their alias (for
//! example `gpt-4o-2024-05-13`) are listed as their own entries, which rule 1 finds first.

use crate::Vendor;

/// Provider prefixes stripped by rule 2, with the vendor each one implies.
const PREFIXES: &[(&str, Vendor)] = &[
    ("openai/", Vendor::Openai),
    ("azure/", Vendor::Openai),
    ("anthropic/", Vendor::Anthropic),
    ("gemini/", Vendor::Google),
    ("google/", Vendor::Google),
    ("vertex_ai/", Vendor::Google),
    ("models/", Vendor::Google),
    ("mistral/", Vendor::Mistral),
    ("mistralai/", Vendor::Mistral),
    ("deepseek/", Vendor::Deepseek),
];

/// Strips every leading known provider prefix (`gemini/models/x` → `x`).
///
/// Returns the rest and the vendor the prefixes imply (`None` when there was no prefix), or
/// `None` when the prefixes disagree (`openai/anthropic/x`), in which case nothing matches.
pub fn strip_provider_prefixes(name: &str) -> Option<(&str, Option<Vendor>)> {
    let mut rest = name;
    let mut vendor: Option<Vendor> = None;
    while let Some((prefix, v)) = PREFIXES.iter().find(|(p, _)| rest.starts_with(p)) {
        if vendor.is_some_and(|seen| seen != *v) {
            return None;
        }
        vendor = Some(*v);
        rest = &rest[prefix.len()..];
    }
    if rest.is_empty() {
        return None;
    }
    Some((rest, vendor))
}

/// `name` without a trailing snapshot date, if it has one: `-YYYY-MM-DD` (OpenAI),
/// `-YYYYMMDD` (Anthropic) or `@YYYYMMDD` (Vertex AI). Only plausible dates count
/// (year 2020–2099, month 01–12, day 01–31), so version-like suffixes are left alone.
pub fn strip_date_suffix(name: &str) -> Option<&str> {
    let b = name.as_bytes();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    let num = |s: &[u8]| s.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    let plausible = |y: &[u8], m: &[u8], d: &[u8]| {
        (2020..=2099).contains(&num(y)) && (1..=12).contains(&num(m)) && (1..=31).contains(&num(d))
    };
    // -YYYY-MM-DD
    if b.len() > 11 {
        let s = &b[b.len() - 11..];
        if s[0] == b'-'
            && s[5] == b'-'
            && s[8] == b'-'
            && digits(&s[1..5])
            && digits(&s[6..8])
            && digits(&s[9..11])
            && plausible(&s[1..5], &s[6..8], &s[9..11])
        {
            return Some(&name[..name.len() - 11]);
        }
    }
    // -YYYYMMDD / @YYYYMMDD
    if b.len() > 9 {
        let s = &b[b.len() - 9..];
        if (s[0] == b'-' || s[0] == b'@')
            && digits(&s[1..9])
            && plausible(&s[1..5], &s[5..7], &s[7..9])
        {
            return Some(&name[..name.len() - 9]);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(
            strip_provider_prefixes("openai/gpt-4o"),
            Some(("gpt-4o", Some(Vendor::Openai)))
        );
        assert_eq!(
            strip_provider_prefixes("gemini/models/gemini-2.5-pro"),
            Some(("gemini-2.5-pro", Some(Vendor::Google)))
        );
        assert_eq!(strip_provider_prefixes("gpt-4o"), Some(("gpt-4o", None)));
        assert_eq!(strip_provider_prefixes("openai/anthropic/claude"), None);
        assert_eq!(strip_provider_prefixes("openai/"), None);
        // Unknown prefixes are not stripped.
        assert_eq!(
            strip_provider_prefixes("acme/gpt-4o"),
            Some(("acme/gpt-4o", None))
        );
    }

    #[test]
    fn dates() {
        assert_eq!(
            strip_date_suffix("gpt-4o-mini-2024-07-18"),
            Some("gpt-4o-mini")
        );
        assert_eq!(
            strip_date_suffix("claude-sonnet-4-5-20250929"),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(
            strip_date_suffix("claude-sonnet-4-5@20250929"),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(strip_date_suffix("gpt-4o"), None);
        assert_eq!(strip_date_suffix("-2024-07-18"), None);
        assert_eq!(strip_date_suffix("model-2024-13-01"), None);
        assert_eq!(strip_date_suffix("model-12345678"), None);
        assert_eq!(strip_date_suffix("model-2024-07-1x"), None);
        assert_eq!(strip_date_suffix("gpt-4o-mini-foo"), None);
        // Multi-byte text before the suffix must not break slicing.
        assert_eq!(strip_date_suffix("modèle-20250101"), Some("modèle"));
        assert_eq!(strip_date_suffix("ééééé"), None);
    }
}
