//! Behaviour of config loading as a user sees it: the documented example, path-naming errors,
//! interpolation, secrets, embedded defaults, unsupported parts of the contract.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may panic

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tollgate_config::{Config, ConfigError, LedgerUrl, Loaded};
use tollgate_pricing::{DeploymentRef, PriceSource, Resolution, UnknownModel};
use tollgate_types::{NanoUsd, ProviderKind};

const EXAMPLE: &str = r#"
server:
  listen: 127.0.0.1:4000
  master_key: ${TOLLGATE_MASTER_KEY}
storage:
  ledger: sqlite://tollgate.db
providers:
  sim:
    kind: openai
    base_url: http://127.0.0.1:9000/v1
    api_key: ${SIM_KEY}
models:
  gpt-4o-mini:
    deployments:
      - provider: sim
        model: gpt-4o-mini
"#;

const SIM_KEY: &str = "sk-sim-0123456789-secret";
const MASTER_KEY: &str = "tg-master-abcdefghijklmnop";

fn env() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("SIM_KEY".to_string(), SIM_KEY.to_string()),
        ("TOLLGATE_MASTER_KEY".to_string(), MASTER_KEY.to_string()),
    ])
}

fn load(yaml: &str) -> Result<Loaded, ConfigError> {
    Config::from_yaml_str(yaml, &env())
}

fn usd(s: &str) -> NanoUsd {
    NanoUsd::parse_usd(s).unwrap()
}

/// The example with `extra` YAML appended under the given top-level section text.
fn with(extra: &str) -> String {
    format!("{EXAMPLE}{extra}")
}

/// Loads `yaml`, expects failure, and returns the rendered issues.
fn errors(yaml: &str) -> Vec<String> {
    match load(yaml) {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => {
            let issues: Vec<String> = e.issues().iter().map(|i| i.to_string()).collect();
            assert!(!issues.is_empty(), "no issues in {e}");
            issues
        }
    }
}

#[track_caller]
fn assert_error(yaml: &str, expected: &str) {
    let errs = errors(yaml);
    assert!(
        errs.iter().any(|e| e.contains(expected)),
        "expected an issue containing {expected:?}, got {errs:#?}"
    );
}

#[test]
fn the_documented_example_loads() {
    let Loaded { config, warnings } = load(EXAMPLE).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");

    assert_eq!(
        config.server.listen,
        "127.0.0.1:4000".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        config.server.master_key.as_ref().unwrap().expose(),
        MASTER_KEY
    );
    assert_eq!(config.server.max_body_bytes, 8 * 1024 * 1024);
    assert_eq!(config.server.shutdown_grace_secs, 30);
    assert_eq!(config.server.request_timeout_secs, None);

    assert_eq!(
        config.storage.ledger,
        LedgerUrl::Sqlite {
            path: "tollgate.db".into()
        }
    );
    assert_eq!(
        config.storage.spill_path,
        Some(PathBuf::from("tollgate.db.spill"))
    );

    let sim = &config.providers["sim"];
    assert_eq!(sim.kind, ProviderKind::Openai);
    assert_eq!(sim.base_url, "http://127.0.0.1:9000/v1");
    assert_eq!(sim.api_key.as_ref().unwrap().expose(), SIM_KEY);
    assert_eq!(sim.timeouts.connect_ms, 5_000);
    assert_eq!(sim.timeouts.first_byte_ms, 60_000);
    assert_eq!(sim.timeouts.idle_ms, 60_000);
    assert_eq!(sim.timeouts.total_ms, 600_000);

    let m = &config.models["gpt-4o-mini"];
    assert_eq!(m.deployments.len(), 1);
    assert_eq!(m.deployments[0].provider, "sim");
    assert_eq!(m.deployments[0].model, "gpt-4o-mini");
    assert_eq!(m.deployments[0].weight, 1);
    assert_eq!(m.deployments[0].label(), "sim/gpt-4o-mini");

    assert_eq!(config.pricing.unknown_model, UnknownModel::Reject);
    // Built-in price by upstream model name.
    let table = config.price_table().unwrap();
    let r = table.resolve(
        "gpt-4o-mini",
        &DeploymentRef {
            provider: "sim",
            model: "gpt-4o-mini",
        },
    );
    assert!(matches!(
        r,
        Resolution::Priced { source: PriceSource::BuiltinUpstream { id: "gpt-4o-mini" }, ref version, .. }
            if &**version == "builtin-2026-07-24"
    ));
}

#[test]
fn all_fields_round_trip() {
    let yaml = r#"
server:
  listen: "[::1]:8080"
  max_body_bytes: 1024
  shutdown_grace_secs: 0
  request_timeout_secs: 120
storage:
  ledger: sqlite:///var/lib/tollgate/ledger.db
  spill_path: /var/lib/tollgate/spill
  counters: memory
providers:
  az:
    kind: azure
    base_url: https://acme.openai.azure.com/
    api_key: ${SIM_KEY}
    api_version: 2024-10-21
    headers:
      X-Team: finops
    timeouts: {connect_ms: 1000, first_byte_ms: 2000, idle_ms: 3000, total_ms: 4000}
models:
  chat:
    strategy: weighted
    max_output_tokens: 4096
    price: {input: 1, output: 2}
    deployments:
      - {provider: az, model: prod-gpt4o, weight: 3, price: {input: 2.5, cached_input: 1.25, output: 10}}
      - {provider: az, model: backup}
pricing:
  unknown_model: allow
"#;
    let Loaded { config, .. } = load(yaml).unwrap();
    assert_eq!(
        config.server.listen,
        "[::1]:8080".parse::<SocketAddr>().unwrap()
    );
    assert!(config.server.master_key.is_none());
    assert_eq!(config.server.max_body_bytes, 1024);
    assert_eq!(config.server.shutdown_grace_secs, 0);
    assert_eq!(config.server.request_timeout_secs, Some(120));
    assert_eq!(
        config.storage.ledger,
        LedgerUrl::Sqlite {
            path: "/var/lib/tollgate/ledger.db".into()
        }
    );
    assert_eq!(
        config.storage.spill_path,
        Some("/var/lib/tollgate/spill".into())
    );
    let az = &config.providers["az"];
    assert_eq!(az.kind, ProviderKind::Azure);
    assert_eq!(az.base_url, "https://acme.openai.azure.com");
    assert_eq!(az.api_version.as_deref(), Some("2024-10-21"));
    assert_eq!(az.headers["x-team"].expose(), "finops");
    assert_eq!(az.timeouts.total().as_millis(), 4000);
    let chat = &config.models["chat"];
    assert_eq!(chat.max_output_tokens, Some(4096));
    assert_eq!(chat.deployments[0].weight, 3);
    assert_eq!(chat.deployments[1].weight, 1);

    // Overrides reach the price table with the documented precedence and version.
    let table = config.price_table().unwrap();
    let dep = |model| DeploymentRef {
        provider: "az",
        model,
    };
    match table.resolve("chat", &dep("prod-gpt4o")) {
        Resolution::Priced {
            price,
            version,
            source,
        } => {
            assert_eq!(source, PriceSource::Deployment);
            assert_eq!(price.input, usd("2.5"));
            assert_eq!(&*version, "builtin-2026-07-24+config");
        }
        r => panic!("{r:?}"),
    }
    match table.resolve("chat", &dep("backup")) {
        Resolution::Priced { price, source, .. } => {
            assert_eq!(source, PriceSource::LogicalModel);
            assert_eq!(price.output, usd("2"));
        }
        r => panic!("{r:?}"),
    }
    assert_eq!(
        table.resolve("other", &dep("nothing")),
        Resolution::Unpriced { allowed: true }
    );
}

#[test]
fn validation_errors_name_path_and_reason() {
    let cases: &[(&str, &str)] = &[
        (
            &EXAMPLE.replace("http://127.0.0.1:9000/v1", "not a url"),
            "providers.sim.base_url: not a valid URL: ",
        ),
        (
            &EXAMPLE.replace("- provider: sim", "- provider: simm"),
            "models.gpt-4o-mini.deployments[0].provider: unknown provider 'simm' (known: sim)",
        ),
        (
            &EXAMPLE.replace("http://127.0.0.1", "ftp://127.0.0.1"),
            "providers.sim.base_url: not a valid URL: scheme must be http or https",
        ),
        (
            &EXAMPLE.replace("http://127.0.0.1", "http://user:pw@127.0.0.1"),
            "providers.sim.base_url: must not contain credentials",
        ),
        (
            &EXAMPLE.replace("listen: 127.0.0.1:4000", "listen: nowhere"),
            "server.listen: 'nowhere' is not a socket address",
        ),
        (
            &EXAMPLE.replace("sqlite://tollgate.db", "mysql://db"),
            "storage.ledger: unsupported ledger URL",
        ),
        (
            &EXAMPLE.replace("sqlite://tollgate.db", "sqlite://"),
            "storage.ledger: sqlite:// needs a file path",
        ),
        (
            &EXAMPLE.replace("  sim:\n", "  bad.name:\n"),
            "providers.bad.name: invalid provider name",
        ),
        (
            &EXAMPLE.replace("kind: openai", "kind: openia"),
            "providers.sim.kind: unknown variant `openia`",
        ),
        (
            &EXAMPLE.replace("listen: 127.0.0.1:4000", "max_body_bytes: lots"),
            "server.max_body_bytes: invalid type",
        ),
        (
            &EXAMPLE.replace("listen: 127.0.0.1:4000", "max_body_bytes: 0"),
            "server.max_body_bytes: must be between 1 and",
        ),
        (
            &EXAMPLE.replace("listen: 127.0.0.1:4000", "shutdown_grace_secs: 100000"),
            "server.shutdown_grace_secs: must be at most 3600",
        ),
        (
            &EXAMPLE.replace("listen: 127.0.0.1:4000", "request_timeout_secs: 0"),
            "server.request_timeout_secs: must be > 0",
        ),
        (
            &EXAMPLE.replace(
                "listen: 127.0.0.1:4000",
                "limits: {header_read_timeout_secs: 0}",
            ),
            "server.limits.header_read_timeout_secs: must be between 1 and 3600, got 0",
        ),
        (
            &EXAMPLE.replace("listen: 127.0.0.1:4000", "limits: {max_in_flight: 0}"),
            "server.limits.max_in_flight: must be between 1 and 1000000, got 0",
        ),
        (
            &EXAMPLE.replace("listen: 127.0.0.1:4000", "limits: {idle_secs: 5}"),
            "server.limits.idle_secs: unknown field `idle_secs`",
        ),
        (
            &EXAMPLE.replace(
                "        model: gpt-4o-mini\n",
                "        model: gpt-4o-mini\n        weight: 0\n",
            ),
            "models.gpt-4o-mini.deployments[0].weight: must be > 0",
        ),
        (
            &with("    max_output_tokens: 0\n"),
            "models.gpt-4o-mini.max_output_tokens: must be > 0",
        ),
        (
            &with("      - provider: sim\n        model: gpt-4o-mini\n"),
            "models.gpt-4o-mini.deployments[1]: duplicate deployment 'sim/gpt-4o-mini'",
        ),
        (
            &with("  empty:\n    deployments: []\n"),
            "models.empty.deployments: at least one deployment is required",
        ),
        (
            &with("  bad name:\n    deployments: [{provider: sim, model: x}]\n"),
            "models.bad name: model name contains whitespace",
        ),
        (
            &with("  m2:\n    deployments: [{provider: sim, model: ''}]\n"),
            "models.m2.deployments[0].model: empty model name",
        ),
        (
            &with("    price: {input: 1, cached_input: 2, output: 3}\n"),
            "models.gpt-4o-mini.price.cached_input: ",
        ),
        (
            &with("    price: {input: 0.00000015, output: 0.6}\n"),
            "models.gpt-4o-mini.price.input: ",
        ),
        (
            &EXAMPLE.replace(
                "        model: gpt-4o-mini\n",
                "        model: gpt-4o-mini\n        price: {input: 1, output: 5000}\n",
            ),
            "models.gpt-4o-mini.deployments[0].price.output: ",
        ),
        (
            &with("    price: {input: 1, output: -2}\n"),
            "models.gpt-4o-mini.price.output: -2 is negative",
        ),
        (
            &with(
                "    price: {input: 1, output: 2}\npricing:\n  models:\n    gpt-4o-mini: {input: 1, output: 2}\n",
            ),
            "pricing.models.gpt-4o-mini: conflicts with models.gpt-4o-mini.price",
        ),
        (
            &with("pricing:\n  models:\n    nope: {input: 1, output: 2}\n"),
            "pricing.models.nope: no model 'nope' in models",
        ),
        (
            &with("pricing:\n  unknown_model: maybe\n"),
            "pricing.unknown_model: unknown variant `maybe`",
        ),
        (
            &with("    fallbacks: [gpt-4o]\n"),
            "models.gpt-4o-mini.fallbacks[0]: unknown model 'gpt-4o'",
        ),
        (
            &with("    fallbacks: [gpt-4o-mini]\n"),
            "models.gpt-4o-mini.fallbacks[0]: a model cannot fall back to itself",
        ),
        (
            &with("    context_window_fallback: huge\n"),
            "models.gpt-4o-mini.context_window_fallback: unknown model 'huge'",
        ),
        (
            &with("    retry: {max_attempts: 0}\n"),
            "models.gpt-4o-mini.retry.max_attempts: must be between 1 and 10, got 0",
        ),
        (
            &with("    retry: {backoff_ms: 500, max_backoff_ms: 100}\n"),
            "models.gpt-4o-mini.retry.max_backoff_ms: must be ≥ backoff_ms (500), got 100",
        ),
        (
            &with("    breaker: {error_rate: 1.5}\n"),
            "models.gpt-4o-mini.breaker.error_rate: must be in (0, 1], got 1.5",
        ),
        (
            &with("    breaker: {cooldown: 3}\n"),
            "models.gpt-4o-mini.breaker.cooldown: unknown field `cooldown`",
        ),
        (
            &with("    sticky: {ttl_secs: 0}\n"),
            "models.gpt-4o-mini.sticky.ttl_secs: must be between 1 and 86400, got 0",
        ),
        (
            &with("    strategy: fastest\n"),
            "models.gpt-4o-mini.strategy: unknown variant `fastest`",
        ),
        (
            &EXAMPLE.replace(
                "    api_key: ${SIM_KEY}\n",
                "    api_key: ${SIM_KEY}\n    api_version: 2024-10-21\n",
            ),
            "providers.sim.api_version: only used by kind 'azure'",
        ),
        (
            &EXAMPLE.replace(
                "    api_key: ${SIM_KEY}\n",
                "    api_key: ${SIM_KEY}\n    headers: {Host: x}\n",
            ),
            "providers.sim.headers.Host: set by the gateway itself",
        ),
        (
            &EXAMPLE.replace(
                "    api_key: ${SIM_KEY}\n",
                "    api_key: ${SIM_KEY}\n    headers: {Authorization: Bearer x}\n",
            ),
            "providers.sim.headers.Authorization: carries the credential",
        ),
        (
            &EXAMPLE.replace(
                "    api_key: ${SIM_KEY}\n",
                "    api_key: ${SIM_KEY}\n    headers: {X-A: \"a\\r\\nX-Evil: 1\"}\n",
            ),
            "providers.sim.headers.X-A: value contains control characters",
        ),
        (
            &EXAMPLE.replace(
                "    api_key: ${SIM_KEY}\n",
                "    api_key: ${SIM_KEY}\n    headers: {\"bad header\": x}\n",
            ),
            "providers.sim.headers.bad header: not a valid HTTP header name",
        ),
        (
            &EXAMPLE.replace(
                "    api_key: ${SIM_KEY}\n",
                "    api_key: ${SIM_KEY}\n    timeouts: {connect_ms: 0}\n",
            ),
            "providers.sim.timeouts.connect_ms: must be > 0",
        ),
        (
            &EXAMPLE.replace(
                "    api_key: ${SIM_KEY}\n",
                "    api_key: ${SIM_KEY}\n    timeouts: {idle_ms: 700000}\n",
            ),
            "providers.sim.timeouts.idle_ms: 700000 is above total_ms (600000)",
        ),
        (
            &EXAMPLE.replace("    api_key: ${SIM_KEY}\n", "    api_key: '  padded  '\n"),
            "providers.sim.api_key: has leading or trailing whitespace",
        ),
        (
            "providers:\n  oa:\n    kind: openai\n",
            "providers.oa.api_key: required for api.openai.com",
        ),
        (
            "providers:\n  az:\n    kind: azure\n",
            "providers.az.base_url: required for kind 'azure'",
        ),
        (
            "providers:\n  az:\n    kind: azure\n    base_url: https://x.openai.azure.com\n",
            "providers.az.api_version: required for kind 'azure'",
        ),
        (
            "providers:\n  az:\n    kind: azure\n    base_url: https://x.openai.azure.com\n",
            "providers.az.api_key: required for kind 'azure'",
        ),
        ("- just\n- a list\n", ".: expected a mapping of sections"),
        ("server: 3\n", "server: invalid type"),
    ];
    for (yaml, expected) in cases {
        assert_error(yaml, expected);
    }
}

#[test]
fn reports_every_problem_at_once() {
    let yaml = EXAMPLE
        .replace("listen: 127.0.0.1:4000", "listen: nowhere")
        .replace("http://127.0.0.1:9000/v1", "'::'")
        .replace("- provider: sim", "- provider: other");
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    let rendered = load(&yaml).unwrap_err().to_string();
    assert!(rendered.starts_with("3 problems in config:"), "{rendered}");
    // Unsupported sections do not hide the other problems.
    let errs = errors(&format!("{yaml}guardrails: {{}}\n"));
    assert_eq!(errs.len(), 4, "{errs:#?}");
}

#[test]
fn unknown_fields_are_errors_with_their_full_path() {
    assert_error(
        &EXAMPLE.replace(
            "        model: gpt-4o-mini\n",
            "        model: gpt-4o-mini\n        priority: 1\n",
        ),
        "models.gpt-4o-mini.deployments[0].priority: unknown field `priority`",
    );
    assert_error(
        &EXAMPLE.replace(
            "    api_key: ${SIM_KEY}\n",
            "    api_key: ${SIM_KEY}\n    timeouts: {conect_ms: 1}\n",
        ),
        "providers.sim.timeouts.conect_ms: unknown field `conect_ms`",
    );
    assert_error(
        &with("    price: {input: 1, output: 2, batch: 1}\n"),
        "models.gpt-4o-mini.price.batch: unknown field `batch`",
    );
    assert_error(&with("logging: {}\n"), "logging: unknown field `logging`");
    assert_error(
        &EXAMPLE.replace("  listen:", "  listn:"),
        "server.listn: unknown field `listn`",
    );
}

#[test]
fn unsupported_sections_are_refused() {
    for section in ["guardrails"] {
        // Even an empty section is refused: never silently ignored.
        for body in [format!("{section}:\n"), format!("{section}: {{x: 1}}\n")] {
            assert_error(
                &with(&body),
                &format!("{section}: section '{section}' is not supported by this build yet"),
            );
        }
    }
    assert_error(
        &EXAMPLE.replace(
            "sqlite://tollgate.db",
            "postgres://u:hunter2-password@db/tollgate",
        ),
        "storage.ledger: postgres ledgers are part of the contract but not supported by this build yet",
    );
    let errs =
        errors(&EXAMPLE.replace("sqlite://tollgate.db", "postgres://u:hunter2-password@db/x"));
    assert!(errs.iter().all(|e| !e.contains("hunter2")), "{errs:?}");
    assert_error(
        &EXAMPLE.replace(
            "  ledger: sqlite://tollgate.db\n",
            "  ledger: sqlite://tollgate.db\n  counters: redis://:pw-secret@r:6379\n",
        ),
        "storage.counters: redis counters are part of the contract but not supported by this build yet",
    );
}

#[test]
fn missing_env_var_names_path_and_variable() {
    let err = Config::from_yaml_str(EXAMPLE, &[("TOLLGATE_MASTER_KEY", MASTER_KEY)]).unwrap_err();
    assert_eq!(err.issues().len(), 1, "{err}");
    assert_eq!(
        err.to_string(),
        "providers.sim.api_key: environment variable 'SIM_KEY' is not set \
         (use ${SIM_KEY:-default} to give a default)"
    );
    // Inside a list too.
    let yaml = EXAMPLE.replace("model: gpt-4o-mini\n", "model: ${UPSTREAM}\n");
    assert_error(
        &yaml,
        "models.gpt-4o-mini.deployments[0].model: environment variable 'UPSTREAM' is not set",
    );
}

#[test]
fn interpolation_defaults_and_escapes() {
    let yaml = EXAMPLE
        .replace("${SIM_KEY}", "pa$$word-${SIM_KEY}")
        .replace(
            "http://127.0.0.1:9000/v1",
            "${SIM_URL:-http://127.0.0.1:9100/v1}",
        )
        .replace(
            "listen: 127.0.0.1:4000",
            "listen: ${LISTEN:-127.0.0.1:4001}",
        );
    let c = load(&yaml).unwrap().config;
    assert_eq!(
        c.providers["sim"].api_key.as_ref().unwrap().expose(),
        format!("pa$word-{SIM_KEY}")
    );
    assert_eq!(c.providers["sim"].base_url, "http://127.0.0.1:9100/v1");
    assert_eq!(c.server.listen.port(), 4001);

    // A literal `${…}` through `$$`.
    let yaml = EXAMPLE.replace("${SIM_KEY}", "$${SIM_KEY}");
    let c = load(&yaml).unwrap().config;
    assert_eq!(
        c.providers["sim"].api_key.as_ref().unwrap().expose(),
        "${SIM_KEY}"
    );

    // A closure works as an environment.
    let env = |name: &str| match name {
        "SIM_KEY" => Some("k-closure".to_string()),
        _ => None,
    };
    let c = Config::from_yaml_str(
        &EXAMPLE.replace("  master_key: ${TOLLGATE_MASTER_KEY}\n", ""),
        &env,
    )
    .unwrap()
    .config;
    assert_eq!(
        c.providers["sim"].api_key.as_ref().unwrap().expose(),
        "k-closure"
    );
    assert!(c.server.master_key.is_none());
}

#[test]
fn env_values_cannot_inject_yaml() {
    let evil = "x\nmodels: {}\nbudgets: {a: 1}";
    let env = [("SIM_KEY", evil), ("TOLLGATE_MASTER_KEY", MASTER_KEY)];
    let c = Config::from_yaml_str(EXAMPLE, &env).unwrap().config;
    assert_eq!(c.providers["sim"].api_key.as_ref().unwrap().expose(), evil);
    assert_eq!(c.models.len(), 1);
    // Keys are not interpolated either.
    let yaml = EXAMPLE.replace("  sim:\n", "  ${SIM_KEY}:\n");
    assert_error(&yaml, "providers.${SIM_KEY}: invalid provider name");
}

#[test]
fn secrets_never_appear_in_debug_masked_yaml_or_errors() {
    let yaml = EXAMPLE.replace(
        "    api_key: ${SIM_KEY}\n",
        "    api_key: ${SIM_KEY}\n    headers: {X-Proxy-Token: \"${SIM_KEY}-hdr\"}\n",
    );
    let loaded = load(&yaml).unwrap();
    let debug = format!("{loaded:?}");
    let masked = loaded.config.to_masked_yaml();
    for out in [&debug, &masked] {
        assert!(!out.contains(SIM_KEY), "{out}");
        assert!(!out.contains(MASTER_KEY), "{out}");
        assert!(!out.contains("sk-sim"), "{out}");
        assert!(!out.contains("tg-master"), "{out}");
        assert!(out.contains("********"), "{out}");
    }
    assert!(masked.contains("api_key: '********'"), "{masked}");
    assert!(masked.contains("master_key: '********'"), "{masked}");
    assert!(masked.contains("x-proxy-token: '********'"), "{masked}");

    // A secret landing in a typed field: serde would quote it in "invalid type" errors.
    let yaml = EXAMPLE.replace("listen: 127.0.0.1:4000", "max_body_bytes: ${SIM_KEY}");
    let err = load(&yaml).unwrap_err().to_string();
    assert!(err.contains("server.max_body_bytes"), "{err}");
    assert!(!err.contains(SIM_KEY), "{err}");
    let yaml = EXAMPLE.replace("listen: 127.0.0.1:4000", "listen: ${TOLLGATE_MASTER_KEY}");
    let err = load(&yaml).unwrap_err().to_string();
    assert!(err.contains("server.listen"), "{err}");
    assert!(!err.contains(MASTER_KEY), "{err}");
    // A non-string secret is refused without being echoed.
    let yaml = EXAMPLE.replace("${SIM_KEY}", "31415.92653");
    let err = load(&yaml).unwrap_err().to_string();
    assert!(err.contains("providers.sim.api_key"), "{err}");
    assert!(!err.contains("31415"), "{err}");
}

#[test]
fn masked_yaml_shows_resolved_defaults() {
    let masked = load(EXAMPLE).unwrap().config.to_masked_yaml();
    for needle in [
        "listen: 127.0.0.1:4000",
        "max_body_bytes: 8388608",
        "shutdown_grace_secs: 30",
        "ledger: sqlite://tollgate.db",
        "spill_path: tollgate.db.spill",
        "base_url: http://127.0.0.1:9000/v1",
        "connect_ms: 5000",
        "total_ms: 600000",
        "weight: 1",
        "unknown_model: reject",
    ] {
        assert!(masked.contains(needle), "missing {needle:?} in\n{masked}");
    }
}

#[test]
fn embedded_defaults_with_openai_key() {
    let env = [
        ("OPENAI_API_KEY", "sk-openai-xyz-123456"),
        ("TOLLGATE_MASTER_KEY", MASTER_KEY),
    ];
    let Loaded { config, warnings } = Config::load(None, &env).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        config.server.listen,
        "127.0.0.1:4000".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        config.server.master_key.as_ref().unwrap().expose(),
        MASTER_KEY
    );
    assert_eq!(
        config.storage.ledger,
        LedgerUrl::Sqlite {
            path: "./tollgate.db".into()
        }
    );
    assert_eq!(
        config.storage.spill_path,
        Some("./tollgate.db.spill".into())
    );
    let openai = &config.providers["openai"];
    assert_eq!(openai.kind, ProviderKind::Openai);
    assert_eq!(openai.base_url, "https://api.openai.com/v1");
    assert_eq!(
        openai.api_key.as_ref().unwrap().expose(),
        "sk-openai-xyz-123456"
    );
    let names: Vec<&str> = config.models.keys().map(String::as_str).collect();
    let mut expected = tollgate_config::DEFAULT_OPENAI_MODELS.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected);
    // Every default model is priced by the built-in table.
    let table = config.price_table().unwrap();
    for (name, m) in &config.models {
        let d = &m.deployments[0];
        let dep = DeploymentRef {
            provider: &d.provider,
            model: &d.model,
        };
        assert!(
            matches!(table.resolve(name, &dep), Resolution::Priced { .. }),
            "{name}"
        );
    }
    assert!(!config.to_masked_yaml().contains("sk-openai"));
}

#[test]
fn embedded_defaults_without_keys() {
    let Loaded { config, warnings } = Config::load(None, &[("OPENAI_API_KEY", "")]).unwrap();
    assert!(config.providers.is_empty());
    assert!(config.models.is_empty());
    assert!(config.server.master_key.is_none());
    let w: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert!(
        w.iter()
            .any(|w| w.starts_with("OPENAI_API_KEY: none of OPENAI_API_KEY")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.starts_with("models: no models configured")),
        "{w:?}"
    );
}

#[test]
fn embedded_defaults_add_anthropic_and_gemini_from_their_keys() {
    let env = [
        ("OPENAI_API_KEY", "sk-openai-xyz-123456"),
        ("ANTHROPIC_API_KEY", "sk-ant-secret-999999"),
        ("GEMINI_API_KEY", "AIza-secret-999999"),
    ];
    let Loaded { config, .. } = Config::load(None, &env).unwrap();
    assert_eq!(config.providers.len(), 3);
    assert_eq!(
        config.providers["anthropic"].base_url,
        "https://api.anthropic.com"
    );
    assert_eq!(
        config.providers["gemini"].base_url,
        "https://generativelanguage.googleapis.com"
    );
    assert_eq!(
        config.models["claude-sonnet-4-5"].deployments[0].provider,
        "anthropic"
    );
    assert_eq!(
        config.models["gemini-2.5-flash"].deployments[0].provider,
        "gemini"
    );
    let masked = config.to_masked_yaml();
    assert!(!masked.contains("secret-999999"));
}

#[test]
fn provider_kinds_validate_their_own_fields() {
    // Official endpoints need a key; the error says which variable to use.
    assert_error(
        "providers:\n  a:\n    kind: anthropic\n",
        "providers.a.api_key: required for api.anthropic.com (set it, e.g. api_key: ${ANTHROPIC_API_KEY})",
    );
    assert_error(
        "providers:\n  g:\n    kind: gemini\n",
        "providers.g.api_key: required for generativelanguage.googleapis.com (set it, e.g. api_key: ${GEMINI_API_KEY})",
    );
    // A local simulator needs none.
    let ok = Config::from_yaml_str(
        "providers:\n  a:\n    kind: anthropic\n    base_url: http://127.0.0.1:9/\n",
        &[("X", "y")],
    )
    .unwrap();
    assert_eq!(ok.config.providers["a"].base_url, "http://127.0.0.1:9");
    // Bedrock: region required, credentials required, access key id and secret go together.
    assert_error(
        "providers:\n  b:\n    kind: bedrock\n    api_key: k\n",
        "providers.b.region: required for kind 'bedrock' (e.g. us-east-1)",
    );
    assert_error(
        "providers:\n  b:\n    kind: bedrock\n    region: us-east-1\n",
        "providers.b.api_key: kind 'bedrock' needs aws_access_key_id + aws_secret_access_key, or a Bedrock api_key",
    );
    assert_error(
        "providers:\n  b:\n    kind: bedrock\n    region: us-east-1\n    aws_access_key_id: AKIDEXAMPLE\n",
        "providers.b.aws_secret_access_key: aws_access_key_id and aws_secret_access_key go together",
    );
    let b = Config::from_yaml_str(
        "providers:\n  b:\n    kind: bedrock\n    region: eu-west-1\n    aws_access_key_id: AKIDEXAMPLE\n    aws_secret_access_key: wJalrXUtnFEMI-secret\n",
        &[("X", "y")],
    )
    .unwrap();
    let p = &b.config.providers["b"];
    assert_eq!(
        p.base_url,
        "https://bedrock-runtime.eu-west-1.amazonaws.com"
    );
    assert!(!b.config.to_masked_yaml().contains("wJalrXUtnFEMI"));
    // Fields of one kind are refused on another.
    assert_error(
        "providers:\n  o:\n    kind: openai\n    base_url: http://127.0.0.1:9/v1\n    region: us-east-1\n",
        "providers.o.region: only used by kind 'bedrock'; remove it",
    );
}

#[test]
fn warns_about_unpriced_deployments_and_caps() {
    let yaml = with(
        "    max_output_tokens: 50000\n  mystery:\n    deployments: [{provider: sim, model: mystery-7b}]\n",
    );
    let Loaded { warnings, .. } = load(&yaml).unwrap();
    let w: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert!(
        w.iter().any(|w| w
            .starts_with("models.mystery.deployments[0]: no price for 'sim/mystery-7b'")
            && w.contains("model_not_priced")),
        "{w:?}"
    );
    assert!(
        w.iter().any(
            |w| w.starts_with("models.gpt-4o-mini.max_output_tokens: 50000 is above the 16384")
        ),
        "{w:?}"
    );
    // Priced through config: no warning.
    let yaml = with(
        "  mystery:\n    price: {input: 0.1, output: 0.2}\n    deployments: [{provider: sim, model: mystery-7b}]\n",
    );
    assert!(load(&yaml).unwrap().warnings.is_empty());
    // Through pricing.models too.
    let yaml = with(
        "  mystery:\n    deployments: [{provider: sim, model: mystery-7b}]\npricing:\n  models:\n    mystery: {input: 0.1, output: 0.2}\n",
    );
    let loaded = load(&yaml).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let o = loaded.config.pricing_overrides();
    assert_eq!(o.models["mystery"].input, usd("0.1"));
}

#[test]
fn short_master_key_warns() {
    let env = [("SIM_KEY", SIM_KEY), ("TOLLGATE_MASTER_KEY", "short")];
    let Loaded { warnings, .. } = Config::from_yaml_str(EXAMPLE, &env).unwrap();
    assert!(
        warnings.iter().any(|w| w.path == "server.master_key"),
        "{warnings:?}"
    );
    // Empty counts as unset: the admin API is off.
    let env = [("SIM_KEY", SIM_KEY), ("TOLLGATE_MASTER_KEY", "")];
    let c = Config::from_yaml_str(EXAMPLE, &env).unwrap().config;
    assert!(c.server.master_key.is_none());
}

#[test]
fn yaml_syntax_duplicates_merges_and_empty_files() {
    assert!(matches!(
        load("server: [unclosed\n"),
        Err(ConfigError::Syntax(_))
    ));
    let dup = format!("{EXAMPLE}  gpt-4o-mini:\n    deployments: [{{provider: sim, model: x}}]\n");
    let err = load(&dup).unwrap_err();
    assert!(err.to_string().contains("duplicate"), "{err}");

    let merged = r#"
x-common: &common
  kind: openai
  api_key: ${SIM_KEY}
providers:
  a: {<<: *common, base_url: "http://127.0.0.1:9001/v1"}
  b: {<<: *common, base_url: "http://127.0.0.1:9002/v1"}
"#;
    // `x-common` is not a section: still an unknown-field error, named.
    assert_error(merged, "x-common: unknown field `x-common`");
    let merged = r#"
providers:
  a: &a {kind: openai, api_key: "${SIM_KEY}", base_url: "http://127.0.0.1:9001/v1"}
  b: {<<: *a, base_url: "http://127.0.0.1:9002/v1"}
"#;
    let c = load(merged).unwrap().config;
    assert_eq!(c.providers["b"].base_url, "http://127.0.0.1:9002/v1");
    assert_eq!(c.providers["b"].api_key.as_ref().unwrap().expose(), SIM_KEY);

    let Loaded { config, warnings } = load("").unwrap();
    assert!(config.models.is_empty());
    assert_eq!(config.server.listen.port(), 4000);
    assert!(warnings.iter().any(|w| w.path == "models"));
}

#[test]
fn ledger_url_forms() {
    let ledger = |url: &str| {
        load(&EXAMPLE.replace("sqlite://tollgate.db", url))
            .unwrap()
            .config
            .storage
    };
    // Quoted: a plain YAML scalar cannot end with ':'.
    let s = ledger("'sqlite::memory:'");
    assert_eq!(s.ledger, LedgerUrl::SqliteMemory);
    assert_eq!(s.spill_path, None);
    assert_eq!(
        ledger("'sqlite://:memory:'").ledger,
        LedgerUrl::SqliteMemory
    );
    assert_eq!(
        ledger("sqlite://./data/t.db").spill_path,
        Some(PathBuf::from("./data/t.db.spill"))
    );
    assert_eq!(
        ledger("sqlite://./data/t.db").ledger.to_string(),
        "sqlite://./data/t.db"
    );
}

#[test]
fn load_from_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.yaml");
    std::fs::write(&path, EXAMPLE).unwrap();
    let c = Config::load(Some(&path), &env()).unwrap().config;
    assert_eq!(c.providers.len(), 1);

    let missing = Config::load(Some(Path::new("/nonexistent/tollgate.yaml")), &env()).unwrap_err();
    assert!(matches!(missing, ConfigError::Read { .. }));
    assert!(
        missing.to_string().contains("/nonexistent/tollgate.yaml"),
        "{missing}"
    );
}

#[test]
fn rate_limits_section() {
    let yaml = with(
        "rate_limits:\n  - {name: per-key, per: key, rpm: 600, tpm: 200000}\n  - name: acme-users\n    per: user\n    match: {tenant: acme, model: gpt-4o-mini}\n    tpm: 5000\n  - {name: everyone, rpm: 10000}\n",
    );
    let config = load(&yaml).unwrap().config;
    assert_eq!(config.rate_limits.len(), 3);
    let r = &config.rate_limits[1];
    assert_eq!(r.per, Some(tollgate_policy::Per::User));
    assert_eq!(r.filter.tenant.as_deref(), Some("acme"));
    assert_eq!((r.rpm, r.tpm), (None, Some(5000)));
    assert_eq!(config.rate_limits[2].per, None);
    // Round trip through `config check`'s rendering.
    assert!(config.to_masked_yaml().contains("match:"));

    let bad = |rules: &str, expected: &str| {
        assert_error(&with(&format!("rate_limits:\n{rules}")), expected)
    };
    bad(
        "  - {name: a, rpm: 1}\n  - {name: b, rpm: 2}\n  - {name: c, rpm: 0}\n",
        "rate_limits[2].rpm: must be > 0",
    );
    bad(
        "  - {name: a, per: key}\n",
        "rate_limits[0].rpm: a rate limit needs rpm, tpm or max_concurrent",
    );
    bad(
        "  - {name: a, rpm: 1}\n  - {name: a, tpm: 1}\n",
        "rate_limits[1].name: duplicate rate limit name 'a'",
    );
    bad(
        "  - {name: a, per: team, rpm: 1}\n",
        "rate_limits[0].per: unknown variant `team`",
    );
    bad("  - {name: a, rpm: -1}\n", "rate_limits[0].rpm");
    bad(
        "  - {name: a, rpm: 1, match: {tenat: x}}\n",
        "rate_limits[0].match.tenat: unknown field `tenat`",
    );
    bad(
        "  - {name: a, tpm: 1, match: {user: ''}}\n",
        "rate_limits[0].match.user: must not be empty",
    );
    bad("  - {rpm: 1}\n", "rate_limits[0]: missing field `name`");
}

#[test]
fn budgets_and_tenants_sections() {
    let yaml = with(
        "budgets:\n  - {name: acme-monthly, scope: {tenant: acme}, limit_usd: \"50.00\", window: month, mode: hard}\n  - {name: org-day, scope: {}, limit_usd: 5, window: week, mode: soft, timezone: Europe/Berlin}\ntenants:\n  acme: {revenue_usd_per_month: \"1000\"}\n",
    );
    let Loaded { config, .. } = load(&yaml).unwrap();
    assert_eq!(config.budgets.len(), 2);
    assert_eq!(config.budgets[0].name, "acme-monthly");
    assert_eq!(
        config.budgets[0].limit_usd,
        tollgate_types::NanoUsd(50_000_000_000)
    );
    assert_eq!(
        config.tenants["acme"].revenue_usd_per_month,
        Some(tollgate_types::NanoUsd(1_000_000_000_000))
    );
    assert!(config.to_masked_yaml().contains("acme-monthly"));
    // Errors name the budget's index and field.
    assert_error(
        &with(
            "budgets:\n  - {name: b, scope: {tenat: x}, limit_usd: 1, window: day, mode: hard}\n",
        ),
        "budgets[0].scope",
    );
    assert_error(
        &with("budgets:\n  - {name: b, scope: {}, limit_usd: 1, window: fortnight, mode: hard}\n"),
        "budgets[0].window",
    );
    assert_error(
        &with(
            "budgets:\n  - {name: b, scope: {}, limit_usd: 1, window: day, mode: hard}\n  - {name: b, scope: {}, limit_usd: 2, window: day, mode: hard}\n",
        ),
        "budgets[1].name: duplicate budget name 'b'",
    );
}

#[test]
fn policies_section() {
    let yaml = with(
        "budgets:\n  - {name: acme-monthly, scope: {tenant: acme}, limit_usd: 50, window: month, mode: hard}\npolicies:\n  - name: acme-ladder\n    scope: {tenant: acme}\n    budget: acme-monthly\n    mode: enforce\n    hysteresis_pct: 5\n    steps:\n      - when: {utilization_pct: 70}\n        then: [{alert: {webhook: \"https://hooks.example/acme\"}}]\n      - when: {utilization_pct: 85}\n        then: [{downgrade: {gpt-4o: gpt-4o-mini}}]\n      - when: {utilization_pct: 100}\n        then: [block]\n",
    );
    let Loaded { config, .. } = load(&yaml).unwrap();
    assert_eq!(config.policies.len(), 1);
    assert_eq!(config.policies[0].steps.len(), 3);
    assert_error(
        &with(
            "policies:\n  - {name: p, scope: {}, mode: enforce, steps: [{when: {utilization_pct: 70}, then: [block]}]}\n",
        ),
        "policies[0]",
    );
}

#[test]
fn cache_section_resolves_rules_and_names_bad_paths() {
    let loaded = load(&with(
        "cache:\n  max_bytes: 1000000\n  default: {ttl_secs: 60, scope: global}\n  models:\n    gpt-4o-mini: {ttl_secs: 3600, cache_nondeterministic: true}\n",
    ))
    .unwrap();
    let c = &loaded.config.cache;
    assert_eq!(c.max_bytes, 1_000_000);
    let r = c.rule_for("gpt-4o-mini").unwrap();
    assert_eq!(r.ttl_secs, 3600);
    // Fields an override leaves out come from `default`.
    assert_eq!(r.scope, tollgate_config::CacheScope::Global);
    assert!(r.cache_nondeterministic);
    assert_eq!(
        r.max_bytes,
        tollgate_config::model::DEFAULT_CACHE_MODEL_MAX_BYTES
    );
    assert_eq!(c.rule_for("other").unwrap().ttl_secs, 60);

    // No `default`: only listed models cache; `enabled: false` turns one off.
    let loaded = load(&with(
        "cache:\n  models:\n    gpt-4o-mini: {enabled: false}\n",
    ))
    .unwrap();
    assert!(loaded.config.cache.rule_for("gpt-4o-mini").is_none());
    let loaded = load(&with("cache: {}\n")).unwrap();
    assert!(loaded.config.cache.rule_for("gpt-4o-mini").is_none());

    assert_error(
        &with("cache:\n  models:\n    gpt-5: {ttl_secs: 10}\n"),
        "cache.models.gpt-5: unknown model 'gpt-5' (not configured under models)",
    );
    assert_error(
        &with("cache:\n  default: {ttl_secs: 0}\n"),
        "cache.default.ttl_secs: must be between 1 and 2592000 (30 days)",
    );
    assert_error(
        &with("cache:\n  max_bytes: 0\n"),
        "cache.max_bytes: must be > 0",
    );
    assert_error(
        &with("cache:\n  models:\n    gpt-4o-mini: {max_bytes: 0}\n"),
        "cache.models.gpt-4o-mini.max_bytes: must be > 0",
    );
    assert_error(
        &with("cache:\n  default: {ttl: 5}\n"),
        "cache.default.ttl: unknown field `ttl`",
    );
    assert_error(
        &with("cache:\n  default: {scope: team}\n"),
        "cache.default.scope: unknown variant `team`",
    );
}

#[test]
fn tenant_billing_terms() {
    let model = load(EXAMPLE)
        .unwrap()
        .config
        .models
        .keys()
        .next()
        .unwrap()
        .clone();
    let yaml = with(&format!(
        "tenants:\n  acme: {{markup_pct: 12.5, price_list: {{{model}: {{input: 5, output: \"20\"}}}}}}\n  globex: {{}}\n"
    ));
    let config = load(&yaml).unwrap().config;
    assert_eq!(config.tenants["acme"].markup_bp, 1250);
    assert_eq!(config.tenants["acme"].price_list[&model].output, usd("20"));
    assert_eq!(config.tenants["globex"].markup_bp, 0);
    assert!(config.to_masked_yaml().contains("markup_bp: 1250"));
    for (terms, expected) in [
        (
            "{markup_pct: -1}",
            "tenants.acme.markup_pct: must be a percentage from 0 to 1000",
        ),
        ("{markup_pct: 1000.01}", "tenants.acme.markup_pct"),
        ("{markup_pct: 1.234}", "at most two decimals"),
        (
            "{price_list: {no-such-model: {input: 1, output: 1}}}",
            "tenants.acme.price_list.no-such-model: no such model under `models`",
        ),
        (
            &format!("{{price_list: {{{model}: {{input: -1, output: 1}}}}}}"),
            &format!("tenants.acme.price_list.{model}.input"),
        ),
        ("{markup: 5}", "unknown field `markup`"),
    ] {
        assert_error(&with(&format!("tenants:\n  acme: {terms}\n")), expected);
    }
}

#[test]
fn allocation_rules_are_checked() {
    let ok = with(
        "tenants:\n  acme: {}\n  globex: {}\nallocations:\n  - {name: shared, match: {feature: shared}}\n  - {name: commit, amount_usd_per_month: 500, method: weights, weights: {acme: 2, globex: 1}}\n",
    );
    let config = load(&ok).unwrap().config;
    assert_eq!(config.allocations.len(), 2);
    assert_eq!(
        config.allocations[0].method,
        tollgate_config::AllocationMethod::Proportional
    );
    assert_eq!(config.allocations[1].amount_usd_per_month, Some(usd("500")));
    for (rules, expected) in [
        ("- {match: {feature: x}}", "allocations[0].name: required"),
        (
            "- {name: a, match: {feature: x}}\n  - {name: a, match: {feature: y}}",
            "allocations[1].name: 'a' is used twice",
        ),
        ("- {name: a}", "allocations[0]: needs a `match`"),
        ("- {name: a, match: {}}", "allocations[0]: needs a `match`"),
        (
            "- {name: a, match: {feature: x}, method: weights}",
            "allocations[0].weights: required with `method: weights`",
        ),
        (
            "- {name: a, match: {feature: x}, weights: {acme: 1}}",
            "allocations[0].weights: only with `method: weights`",
        ),
        (
            "- {name: a, match: {feature: x}, method: weights, weights: {acme: 0}}",
            "allocations[0].weights.acme: must be a positive integer",
        ),
        (
            "- {name: a, match: {feature: x}, method: weights, weights: {initech: 1}}",
            "allocations[0].weights: 'initech' is not a tenant under `tenants`",
        ),
        (
            "- {name: a, match: {feature: x}, tenants: [initech]}",
            "allocations[0].tenants: 'initech' is not a tenant",
        ),
        ("- {name: a, match: {feture: x}}", "unknown field `feture`"),
        (
            "- {name: a, amount_usd_per_month: -5}",
            "allocations[0].amount_usd_per_month: must not be negative",
        ),
    ] {
        assert_error(
            &with(&format!(
                "tenants:\n  acme: {{}}\nallocations:\n  {rules}\n"
            )),
            expected,
        );
    }
}

#[test]
fn anomaly_settings_are_checked() {
    let c = load(EXAMPLE).unwrap().config;
    assert_eq!(c.anomalies.by, vec![vec!["tenant".to_string()]]);
    assert_eq!(c.anomalies.weeks, 4);
    let c = load(&with(
        "anomalies: {by: [[tenant, feature], [model]], min_usd: 5, threshold: 3.5, weeks: 8}\n",
    ))
    .unwrap()
    .config;
    assert_eq!(c.anomalies.by.len(), 2);
    assert_eq!(c.anomalies.min_usd, usd("5"));
    for (yaml, expected) in [
        (
            "anomalies: {by: [[tenat]]}",
            "anomalies.by[0]: unknown dimension 'tenat'",
        ),
        (
            "anomalies: {by: [[]]}",
            "anomalies.by[0]: must name at least one dimension",
        ),
        (
            "anomalies: {threshold: 0}",
            "anomalies.threshold: must be a positive number",
        ),
        (
            "anomalies: {weeks: 60}",
            "anomalies.weeks: must be between 1 and 52",
        ),
        (
            "anomalies: {min_usd: -1}",
            "anomalies.min_usd: must not be negative",
        ),
        ("anomalies: {window: 3}", "unknown field `window`"),
    ] {
        assert_error(&with(&format!("{yaml}\n")), expected);
    }
}

#[test]
fn telemetry_section_defaults_bad_values_and_masked_headers() {
    let on = load(&format!(
        "{EXAMPLE}telemetry:\n  endpoint: http://127.0.0.1:4318/\n  headers: {{authorization: \"Bearer ${{SIM_KEY}}\"}}\n"
    ))
    .unwrap();
    let t = on.config.telemetry.as_ref().unwrap();
    assert_eq!(t.endpoint, "http://127.0.0.1:4318");
    assert_eq!(t.sampling_ratio, 1.0);
    assert_eq!(t.metrics_interval_secs, 60);
    assert_eq!(t.service_name, "tollgate");
    assert!(!t.propagate_to_upstream);
    // The header value is a secret everywhere the config is shown.
    let dump = format!(
        "{:?} {}",
        on.config,
        serde_yaml_ng::to_string(&on.config).unwrap()
    );
    assert!(!dump.contains(SIM_KEY), "{dump}");
    // Off: absent, or enabled: false.
    assert!(load(EXAMPLE).unwrap().config.telemetry.is_none());
    assert!(
        load(&format!("{EXAMPLE}telemetry:\n  enabled: false\n"))
            .unwrap()
            .config
            .telemetry
            .is_none()
    );
    let e = errors(&format!(
        "{EXAMPLE}telemetry:\n  endpoint: collector:4318\n  sampling_ratio: 1.5\n  metrics_interval_secs: 0\n  headers: {{\"bad header\": x}}\n  bogus: 1\n"
    ));
    assert!(e.iter().any(|m| m.contains("telemetry")), "{e:?}");
    let e = errors(&format!(
        "{EXAMPLE}telemetry:\n  endpoint: collector:4318\n  sampling_ratio: 1.5\n  metrics_interval_secs: 0\n  headers: {{\"bad header\": x}}\n"
    ));
    for want in [
        "telemetry.endpoint",
        "telemetry.sampling_ratio",
        "telemetry.metrics_interval_secs",
        "telemetry.headers.bad header",
    ] {
        assert!(e.iter().any(|m| m.contains(want)), "{want} in {e:?}");
    }
    assert!(
        errors(&format!("{EXAMPLE}telemetry:\n  sampling_ratio: 0.5\n"))
            .iter()
            .any(|m| m.contains("telemetry.endpoint"))
    );
}

/// Found by the `config_load` fuzz target: an empty top-level key gave an issue with an empty
/// path. Every issue names where it is.
#[test]
fn an_empty_top_level_key_is_named() {
    for yaml in ["? \n>\n", "\"\": 1\n"] {
        let e = errors(yaml);
        assert!(e.iter().all(|m| !m.starts_with(':')), "{e:?}");
        assert!(e.iter().any(|m| m.starts_with("(top level)")), "{e:?}");
    }
}
