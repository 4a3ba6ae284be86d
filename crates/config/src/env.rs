//! Where `${VAR}` values come from.
//!
//! Loading takes an [`EnvSource`] instead of reading the process environment, so tests pass a
//! map or a closure and never call `std::env::set_var` (unsound with threads, and shared by
//! every test in the process).

use std::collections::{BTreeMap, HashMap};

/// A source of environment variables.
pub trait EnvSource {
    /// The variable's value, or `None` when it is not set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment. A variable whose value is not valid UTF-8 counts as unset.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<F: Fn(&str) -> Option<String>> EnvSource for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

impl EnvSource for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl EnvSource for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl EnvSource for [(&str, &str)] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_string())
    }
}

impl<const N: usize> EnvSource for [(&str, &str); N] {
    fn var(&self, name: &str) -> Option<String> {
        self.as_slice().var(name)
    }
}
