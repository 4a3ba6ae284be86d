//! Config loading: `tollgate_config::Config::from_yaml_str` — YAML parsing, merge keys,
//! `${VAR}` / `${VAR:-default}` / `$$` interpolation from an injected environment, raw
//! deserialisation and validation — and `Config::to_masked_yaml` on what loads.
//!
//! Invariants: no panic; a config that loads renders as YAML that parses again, and every
//! warning names a path; a config that fails names a path in every issue, and its error message
//! never carries a secret from the environment unless the YAML text itself holds it (an
//! interpolated value is scrubbed from error messages).

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use tollgate_config::{Config, ConfigError};

const SIM_KEY: &str = "sk-sim-Fz8Qw3Rt6Yp1Lk4M";
const MASTER_KEY: &str = "tg-master-Vb7Nc2Xz5Jh9Gd0S";

fn env() -> BTreeMap<String, String> {
    [
        ("SIM_KEY", SIM_KEY),
        ("TOLLGATE_MASTER_KEY", MASTER_KEY),
        ("SIM_URL", "http://127.0.0.1:9000/v1"),
        ("PORT", "4000"),
        ("EMPTY", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_yaml_str(text, &env()) {
        Ok(loaded) => {
            let yaml = loaded.config.to_masked_yaml();
            assert!(!yaml.starts_with("# cannot render"), "{yaml}");
            serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&yaml)
                .expect("the masked config is YAML");
            for w in &loaded.warnings {
                assert!(!w.path.is_empty(), "{w:?}");
            }
        }
        Err(e) => {
            if let ConfigError::Invalid(issues) = &e {
                assert!(!issues.is_empty());
                for i in issues {
                    assert!(!i.path.is_empty(), "{i:?}");
                }
            }
            let message = e.to_string();
            for secret in [SIM_KEY, MASTER_KEY] {
                if !text.contains(secret) {
                    assert!(
                        !message.contains(secret),
                        "secret in a config error: {message}"
                    );
                }
            }
        }
    }
});
