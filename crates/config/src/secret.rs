//! [`Secret`]: a credential that never prints.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;

/// What every secret prints as, whatever it holds.
pub const MASK: &str = "********";

/// A credential (`api_key`, `master_key`, provider header values).
///
/// `Debug`, `Display` and `Serialize` all print [`MASK`] and reveal nothing, not even the length
/// or a prefix; [`Secret::expose`] is the one way to read it, so every use is greppable.
/// There is deliberately no `PartialEq`: compare a presented credential with
/// [`Secret::matches`], which takes constant time.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself. Only for building the upstream request or comparing credentials.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant-time comparison with a presented credential (timing reveals neither the
    /// matching prefix nor, for equal lengths, anything else).
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASK)
    }
}

/// Accepts a string, or an integer taken as its digits. Errors never quote the value: serde's
/// usual "invalid type: integer `1234`" would print it.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom(
                    "expected a string (value not shown: it may be a secret)",
                ))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom(
                    "expected a string (value not shown: it may be a secret)",
                ))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints() {
        let s = Secret::new("sk-live-abcdef");
        assert_eq!(format!("{s:?}"), MASK);
        assert_eq!(format!("{s}"), MASK);
        assert_eq!(serde_yaml_ng::to_string(&s).unwrap().trim(), "'********'");
        assert_eq!(s.expose(), "sk-live-abcdef");
        assert!(s.matches("sk-live-abcdef"));
        assert!(!s.matches("sk-live-abcde"));
        assert!(!s.matches(""));
    }

    #[test]
    fn deserialize_errors_hide_the_value() {
        let e = serde_yaml_ng::from_str::<Secret>("12.75").unwrap_err();
        assert!(!e.to_string().contains("12.75"), "{e}");
        let s: Secret = serde_yaml_ng::from_str("123456").unwrap();
        assert_eq!(s.expose(), "123456");
    }
}
