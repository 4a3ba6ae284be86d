//! `${VAR}` interpolation over the parsed YAML tree.
//!
//! Interpolation runs on **string scalars after parsing**, never on the raw text: a value taken
//! from the environment stays one string, whatever it contains (`"a\nproviders: …"` cannot add
//! YAML structure). Mapping keys are never interpolated. The result of an interpolation is
//! always a string, so use it for string fields (URLs, keys, addresses, paths).
//!
//! Syntax inside a string:
//! - `${NAME}`: the variable's value; an error naming the path and the variable if unset.
//!   Set-but-empty counts as set.
//! - `${NAME:-default}`: the value if set and non-empty, else `default` (literal text up to the
//!   first `}`, not itself interpolated).
//! - `$$`: a literal `$`.
//! - Any other `$` is kept as is, so secrets containing `$` written literally mostly survive;
//!   write `$$` to be sure.
//!
//! `NAME` is `[A-Za-z_][A-Za-z0-9_]*`.

use serde_yaml_ng::Value;

use crate::EnvSource;
use crate::error::Issues;

/// One step in a config path.
#[derive(Debug, Clone)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// `a.b[0].c`, the same rendering as `serde_path_to_error`.
pub(crate) fn render_path(segs: &[Seg]) -> String {
    if segs.is_empty() {
        return ".".to_string();
    }
    let mut s = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => {
                s.push('[');
                s.push_str(&i.to_string());
                s.push(']');
            }
        }
    }
    s
}

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "~".to_string(),
        _ => "<complex key>".to_string(),
    }
}

/// Interpolates every string scalar in `value`, recording problems in `issues`. Returns the
/// values read from the environment, so error messages can be scrubbed of them.
pub(crate) fn interpolate_tree(
    value: &mut Value,
    env: &dyn EnvSource,
    issues: &mut Issues,
) -> Vec<String> {
    let mut used = Vec::new();
    let mut path = Vec::new();
    walk(value, env, &mut path, issues, &mut used);
    used
}

fn walk(
    value: &mut Value,
    env: &dyn EnvSource,
    path: &mut Vec<Seg>,
    issues: &mut Issues,
    used: &mut Vec<String>,
) {
    match value {
        Value::String(s) => match expand(s, env, used) {
            Ok(Some(new)) => *s = new,
            Ok(None) => {}
            Err(reason) => issues.push(render_path(path), reason),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(Seg::Index(i));
                walk(item, env, path, issues, used);
                path.pop();
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                path.push(Seg::Key(key_text(k)));
                walk(v, env, path, issues, used);
                path.pop();
            }
        }
        Value::Tagged(tagged) => walk(&mut tagged.value, env, path, issues, used),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Expands one string. `Ok(None)` when it has no `$` at all (nothing to do, no allocation).
pub(crate) fn expand(
    s: &str,
    env: &dyn EnvSource,
    used: &mut Vec<String>,
) -> Result<Option<String>, String> {
    if !s.contains('$') {
        return Ok(None);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err("unterminated '${' (write '$$' for a literal '$')".to_string());
            };
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if !valid_name(name) {
                return Err(format!(
                    "'${{{inner}}}': invalid environment variable name '{name}' \
                     (letters, digits and '_', not starting with a digit)"
                ));
            }
            let value = match (env.var(name), default) {
                (Some(v), Some(d)) if v.is_empty() => d.to_string(),
                (Some(v), _) => {
                    used.push(v.clone());
                    v
                }
                (None, Some(d)) => d.to_string(),
                (None, None) => {
                    return Err(format!(
                        "environment variable '{name}' is not set \
                         (use ${{{name}:-default}} to give a default)"
                    ));
                }
            };
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn env() -> [(&'static str, &'static str); 3] {
        [("KEY", "sk-123"), ("EMPTY", ""), ("WEIRD", "a\nb: [c]")]
    }

    fn x(s: &str) -> Result<String, String> {
        let mut used = Vec::new();
        expand(s, &env(), &mut used).map(|o| o.unwrap_or_else(|| s.to_string()))
    }

    #[test]
    fn expands() {
        assert_eq!(x("plain").unwrap(), "plain");
        assert_eq!(x("${KEY}").unwrap(), "sk-123");
        assert_eq!(x("Bearer ${KEY}!").unwrap(), "Bearer sk-123!");
        assert_eq!(x("${KEY}${KEY}").unwrap(), "sk-123sk-123");
        assert_eq!(x("${EMPTY}").unwrap(), "");
        assert_eq!(x("${EMPTY:-dflt}").unwrap(), "dflt");
        assert_eq!(x("${NOPE:-dflt}").unwrap(), "dflt");
        assert_eq!(x("${NOPE:-}").unwrap(), "");
        assert_eq!(x("${NOPE:-a:b/c}").unwrap(), "a:b/c");
        assert_eq!(x("${KEY:-dflt}").unwrap(), "sk-123");
        assert_eq!(x("${WEIRD}").unwrap(), "a\nb: [c]");
    }

    #[test]
    fn dollar_escapes() {
        assert_eq!(x("$$").unwrap(), "$");
        assert_eq!(x("$${KEY}").unwrap(), "${KEY}");
        assert_eq!(x("pa$$word").unwrap(), "pa$word");
        assert_eq!(x("$$$${KEY}").unwrap(), "$${KEY}");
        assert_eq!(x("$$${KEY}").unwrap(), "$sk-123");
        assert_eq!(x("cost $5").unwrap(), "cost $5");
        assert_eq!(x("trailing $").unwrap(), "trailing $");
    }

    #[test]
    fn errors() {
        let e = x("${NOPE}").unwrap_err();
        assert!(e.contains("'NOPE' is not set"), "{e}");
        assert!(x("${KEY").unwrap_err().contains("unterminated"));
        assert!(
            x("${1X}")
                .unwrap_err()
                .contains("invalid environment variable name")
        );
        assert!(x("${}").unwrap_err().contains("invalid"));
        assert!(x("${A B}").unwrap_err().contains("invalid"));
    }

    #[test]
    fn default_is_literal() {
        assert_eq!(x("${NOPE:-$${KEY}").unwrap(), "$${KEY");
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = x(&s);
        }

        #[test]
        fn escaping_round_trips(s in "[a-z${}:\\- ]*") {
            // Writing every `$` as `$$` yields the original text back, unexpanded.
            let escaped = s.replace('$', "$$");
            prop_assert_eq!(x(&escaped).unwrap(), s);
        }
    }
}
