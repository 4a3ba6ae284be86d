//! Config errors and warnings. Every problem names the config path it is about
//! (`providers.sim.base_url`, `models.gpt-4o.deployments[0].provider`) and why.

use std::fmt;
use std::path::PathBuf;

/// One problem found in a config: where (a dotted path, `[i]` for list items) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// `providers.sim.base_url`; `.` for the document root.
    pub path: String,
    pub reason: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Something worth telling the operator at startup that does not stop it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// Config path, or the environment variable name for embedded defaults.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file '{}': {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not YAML at all (the message carries line and column).
    #[error("config is not valid YAML: {0}")]
    Syntax(String),
    /// Parsed, but wrong: every problem found, one per line.
    #[error("{}", render_issues(.0))]
    Invalid(Vec<ConfigIssue>),
}

impl ConfigError {
    /// The individual problems (empty for read and syntax errors).
    pub fn issues(&self) -> &[ConfigIssue] {
        match self {
            ConfigError::Invalid(issues) => issues,
            _ => &[],
        }
    }
}

fn render_issues(issues: &[ConfigIssue]) -> String {
    match issues {
        [one] => one.to_string(),
        many => {
            let mut s = format!("{} problems in config:", many.len());
            for i in many {
                s.push_str("\n  ");
                s.push_str(&i.to_string());
            }
            s
        }
    }
}

/// Collects problems so one run reports all of them, not just the first.
#[derive(Debug, Default)]
pub(crate) struct Issues(pub(crate) Vec<ConfigIssue>);

impl Issues {
    pub(crate) fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(ConfigIssue {
            path: path.into(),
            reason: reason.into(),
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
