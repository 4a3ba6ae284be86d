//! Command-line interface (docs/contracts.md §3 "CLI").

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tollgate_attribution::keys::{self, NewKey};
use tollgate_config::{Config, Loaded, ProcessEnv};
use tollgate_store::{Actor, Audit, Dim, KeyAudit, SpendQuery};

use crate::{assemble, demo, export, ledger_io, report};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "An AI gateway with economic governance in the request path"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// Commands whose output is for people keep the log at `warn` unless RUST_LOG says more.
    pub fn quiet_logs(&self) -> bool {
        !matches!(self.command, Command::Serve(_) | Command::MockProvider(_))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ConfigArg),
    /// Simulated providers, the gateway and multi-tenant traffic, then a spend report.
    /// No API keys, no network. With --serve, the gateway and dashboard keep running.
    Demo(DemoArgs),
    /// Run the simulated upstream provider.
    MockProvider(MockArgs),
    /// Manage virtual keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Spend report from the ledger.
    Spend(SpendArgs),
    /// Finance exports from the ledger.
    #[command(subcommand)]
    Export(ExportCommand),
    /// Ledger rows as JSON lines: back up, move or seed history.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Validate configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Args)]
struct ConfigArg {
    /// YAML config file; without it, the embedded defaults.
    #[arg(long, short = 'c', env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Args)]
pub struct DemoArgs {
    /// Requests to send in the traffic burst.
    #[arg(long, default_value_t = 120)]
    pub requests: usize,
    /// After the traffic and the reports, keep the gateway and the dashboard running (until
    /// Ctrl-C) and print the `/ui/` URL with a viewer token to sign in with.
    #[arg(long)]
    pub serve: bool,
    /// The gateway's address (default: a free loopback port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

#[derive(Args)]
struct MockArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    #[command(flatten)]
    sim: tollgate_sim::SimConfig,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it (shown once).
    Create(CreateKey),
    /// List keys (never the keys themselves).
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Include revoked keys.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a key by id; takes effect on the next request (a running gateway notices within
    /// a second).
    Revoke {
        id: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Rotate a key: print a new key for the same definition (shown once); the old key keeps
    /// working for the grace period, then expires.
    Rotate {
        id: String,
        /// How long the old key keeps working, in seconds (0: stops at once; at most 30 days).
        #[arg(long, default_value_t = 86_400)]
        grace_secs: u64,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Args)]
struct CreateKey {
    #[arg(long)]
    name: String,
    /// Default tenant of requests made with the key.
    #[arg(long)]
    tenant: Option<String>,
    #[arg(long)]
    team: Option<String>,
    /// Comma-separated logical models the key may use (default: all).
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Let callers set the tenant per request with `x-tollgate-tenant`.
    #[arg(long)]
    allow_tenant_header: bool,
    /// Comma-separated tenants the header may name (default: any).
    #[arg(long, value_delimiter = ',')]
    allowed_tenants: Vec<String>,
    /// Let callers pin a deployment per request with `x-tollgate-deployment`.
    #[arg(long)]
    allow_route_override: bool,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Args)]
struct SpendArgs {
    /// Comma-separated dimensions: key, team, tenant, feature, user, model, served_model,
    /// provider, deployment, endpoint, outcome, day.
    #[arg(long, default_value = "tenant,model")]
    by: String,
    /// Start (inclusive): RFC 3339, YYYY-MM-DD, or Unix ms.
    #[arg(long)]
    from: Option<String>,
    /// End (exclusive).
    #[arg(long)]
    to: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Rows started in [--from, --to), oldest first, one JSON object per line (the shape of
    /// `GET /admin/v1/requests` items).
    Export {
        /// Start (inclusive): YYYY-MM-DD (UTC midnight) or RFC 3339.
        #[arg(long)]
        from: String,
        /// End (exclusive).
        #[arg(long)]
        to: String,
        /// Output file (written to a temporary file, then renamed); default stdout.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Load a JSON-lines file of rows; idempotent on request_id. Every line is checked
    /// first: one bad line refuses the file unless --skip-invalid.
    Import {
        file: PathBuf,
        /// Import the valid lines and report the invalid ones.
        #[arg(long)]
        skip_invalid: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum ExportCommand {
    /// FOCUS cost-and-usage file: one row per charge hour, tenant, sub-account, provider,
    /// model, feature and token class, with exact decimal costs that sum to the ledger.
    Focus(FocusArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FocusVersion {
    #[value(name = "1.2")]
    V1_2,
    #[value(name = "1.0")]
    V1_0,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FocusDataset {
    /// What the ledger charged, per tenant.
    Cost,
    /// What the operator bills each tenant: `tenants.<name>.price_list`, else the upstream
    /// cost plus `tenants.<name>.markup_pct`; the upstream cost in x_UpstreamCost.
    Chargeback,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FocusFormat {
    Csv,
    Parquet,
}

#[derive(Args)]
struct FocusArgs {
    /// Start (inclusive): YYYY-MM-DD (UTC midnight) or RFC 3339.
    #[arg(long)]
    from: String,
    /// End (exclusive): YYYY-MM-DD (UTC midnight) or RFC 3339.
    #[arg(long)]
    to: String,
    /// FOCUS release whose columns to write.
    #[arg(long, value_enum, default_value = "1.2")]
    version: FocusVersion,
    #[arg(long, value_enum, default_value = "cost")]
    dataset: FocusDataset,
    #[arg(long, value_enum, default_value = "csv")]
    format: FocusFormat,
    /// Output file (written to a temporary file, then renamed); default stdout.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config and print what it resolves to, secrets masked.
    Check(ConfigArg),
}

fn load(config: &ConfigArg) -> Result<Loaded> {
    let loaded = Config::load(config.config.as_deref(), &ProcessEnv).map_err(|e| {
        let origin = match &config.config {
            Some(p) => format!("invalid config {}", p.display()),
            None => "invalid embedded defaults".to_string(),
        };
        anyhow::anyhow!("{origin}:\n{e}")
    })?;
    Ok(loaded)
}

pub async fn run(cli: Cli) -> Result<ExitCode> {
    tollgate_providers::http::install_crypto_provider();
    match cli.command {
        Command::Serve(c) => serve(c).await,
        Command::Demo(args) => demo::run(args).await,
        Command::MockProvider(m) => {
            let listener = tokio::net::TcpListener::bind(m.listen)
                .await
                .with_context(|| format!("binding {}", m.listen))?;
            eprintln!(
                "tollgate mock-provider listening on http://{}/v1",
                listener.local_addr()?
            );
            tollgate_sim::run(listener, m.sim, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(k) => keys_command(k),
        Command::Spend(s) => spend(s),
        Command::Export(ExportCommand::Focus(f)) => export_focus(f),
        Command::Ledger(l) => ledger_command(l),
        Command::Config(ConfigCommand::Check(c)) => {
            let loaded = load(&c)?;
            for w in &loaded.warnings {
                eprintln!("warning: {w}");
            }
            print!("{}", loaded.config.to_masked_yaml());
            eprintln!("config OK");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(c: ConfigArg) -> Result<ExitCode> {
    let loaded = load(&c)?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let cfg = loaded.config;
    if cfg.models.is_empty() {
        tracing::warn!(
            "no models configured: set OPENAI_API_KEY or pass --config (see README); \
             every request will get model_not_found"
        );
    }
    let parts = assemble::gateway_parts(&cfg)?;
    let listener = tokio::net::TcpListener::bind(cfg.server.listen)
        .await
        .with_context(|| format!("binding server.listen {}", cfg.server.listen))?;
    let gw = tollgate_server::Gateway::new(parts).context("loading virtual keys")?;
    tracing::info!(
        listen = %listener.local_addr()?,
        ledger = %cfg.storage.ledger,
        models = cfg.models.len(),
        admin = cfg.server.master_key.is_some(),
        "tollgate listening"
    );
    let summary = tollgate_server::serve(listener, gw, shutdown_signal()).await?;
    if summary.rows_spilled > 0 {
        tracing::warn!(
            rows = summary.rows_spilled,
            "some ledger rows were spilled to disk; they are replayed at the next start"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// How CLI key changes are audited: actor `cli`, the OS user from `$USER` when set.
fn cli_audit(at_ms: i64) -> KeyAudit {
    KeyAudit {
        audit: Audit {
            actor: Actor::Cli {
                user: std::env::var("USER").ok().filter(|u| !u.is_empty()),
            },
            address: None,
            at_ms,
        },
        view: tollgate_server::key_view,
    }
}

fn keys_command(k: KeysCommand) -> Result<ExitCode> {
    match k {
        KeysCommand::Create(c) => {
            let cfg = load(&c.config)?.config;
            let new = NewKey {
                name: c.name,
                tenant: c.tenant,
                team: c.team,
                models: c.models,
                allow_tenant_header: c.allow_tenant_header,
                allow_route_override: c.allow_route_override,
                allowed_tenants: c.allowed_tenants,
                expires_at_ms: None,
                metadata: None,
            };
            tollgate_server::validate_new_key_models(&|m| cfg.models.contains_key(m), &new)
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            let store = assemble::open_store(&cfg)?;
            let now = now_ms();
            let issued = keys::issue(new, now);
            store.insert_key(&issued.record, Some(&cli_audit(now)))?;
            println!("{}", issued.key);
            eprintln!(
                "created key {} ('{}'); the key above is shown only once",
                issued.record.id, issued.record.name
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::List { config, all } => {
            let cfg = load(&config)?.config;
            let store = assemble::open_store(&cfg)?;
            let keys = store.list_keys(all)?;
            let header = ["id", "name", "prefix", "tenant", "team", "models", "status"];
            let rows: Vec<Vec<String>> = keys
                .iter()
                .map(|k| {
                    vec![
                        k.id.clone(),
                        k.name.clone(),
                        k.key_prefix.clone(),
                        k.tenant.clone().unwrap_or_default(),
                        k.team.clone().unwrap_or_default(),
                        if k.models.is_empty() {
                            "*".into()
                        } else {
                            k.models.join(",")
                        },
                        if k.revoked_at_ms.is_some() {
                            "revoked".into()
                        } else {
                            "active".into()
                        },
                    ]
                })
                .collect();
            print!("{}", report::table(&header, &rows));
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke { id, config } => {
            let cfg = load(&config)?.config;
            let store = assemble::open_store(&cfg)?;
            let now = now_ms();
            if store.revoke_key(&id, now, Some(&cli_audit(now)))? {
                eprintln!("revoked {id}");
                Ok(ExitCode::SUCCESS)
            } else {
                bail!("no active key with id '{id}'")
            }
        }
        KeysCommand::Rotate {
            id,
            grace_secs,
            config,
        } => {
            let grace = tollgate_server::rotation_grace(Some(grace_secs))
                .map_err(|e| anyhow::anyhow!("--grace-secs: {}", e.message))?;
            let cfg = load(&config)?.config;
            let store = assemble::open_store(&cfg)?;
            let old = match store.get_key(&id) {
                Err(tollgate_store::StoreError::NotFound(_)) => bail!("no key with id '{id}'"),
                other => other?,
            };
            let now = now_ms();
            let next = keys::successor(&old, now);
            let grace_ms = i64::try_from(grace.saturating_mul(1000)).unwrap_or(i64::MAX);
            let old = store.rotate_key(
                &id,
                &next.record,
                now.saturating_add(grace_ms),
                now,
                Some(&cli_audit(now)),
            )?;
            println!("{}", next.key);
            let until = old
                .expires_at_ms
                .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
                .map_or_else(|| "now".to_string(), |t| t.to_string());
            eprintln!(
                "rotated {id} to {} ('{}'); the key above is shown only once; the old key \
                 works until {until}",
                next.record.id, next.record.name
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `--from`/`--to` as Unix milliseconds, `from` strictly before `to`.
fn time_range(from: &str, to: &str) -> Result<(i64, i64)> {
    let parse = |name: &str, v: &str| -> Result<i64> {
        tollgate_server::parse_time(name, v).map_err(|e| anyhow::anyhow!("{}", e.message))
    };
    let (from_ms, to_ms) = (parse("from", from)?, parse("to", to)?);
    if from_ms >= to_ms {
        bail!("--from must be before --to (got {from} and {to})");
    }
    Ok((from_ms, to_ms))
}

fn ledger_command(l: LedgerCommand) -> Result<ExitCode> {
    match l {
        LedgerCommand::Export {
            from,
            to,
            output,
            config,
        } => {
            let (from_ms, to_ms) = time_range(&from, &to)?;
            let cfg = load(&config)?.config;
            let store = assemble::open_store(&cfg)?;
            let n = ledger_io::export(&store, from_ms, to_ms, output.as_deref())?;
            eprintln!(
                "exported {n} ledger rows{}",
                output
                    .map(|p| format!(" to {}", p.display()))
                    .unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        LedgerCommand::Import {
            file,
            skip_invalid,
            config,
        } => {
            let cfg = load(&config)?.config;
            let store = assemble::open_store(&cfg)?;
            let r = ledger_io::import(&store, &file, skip_invalid)?;
            for (line, why) in &r.skipped {
                eprintln!("skipped line {line}: {why}");
            }
            eprintln!(
                "imported {} rows ({} new, {} already in the ledger){}",
                r.valid,
                r.inserted,
                r.valid - r.inserted,
                if r.skipped_total > 0 {
                    format!("; skipped {} invalid lines", r.skipped_total)
                } else {
                    String::new()
                }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn export_focus(f: FocusArgs) -> Result<ExitCode> {
    if f.dataset == FocusDataset::Chargeback {
        bail!(
            "--dataset chargeback: not available yet (it needs tenants' markup configuration); use --dataset cost"
        );
    }
    let (from_ms, to_ms) = time_range(&f.from, &f.to)?;
    let cfg = load(&f.config)?.config;
    let max_days = i64::from(cfg.server.max_report_days);
    if to_ms - from_ms > max_days * 86_400_000 {
        bail!(
            "--from to --to spans more than server.max_report_days ({max_days} days); export in pieces or raise it"
        );
    }
    let store = assemble::open_store(&cfg)?;
    let job = export::FocusJob {
        from_ms,
        to_ms,
        version: match f.version {
            FocusVersion::V1_2 => tollgate_finance::focus::Version::V1_2,
            FocusVersion::V1_0 => tollgate_finance::focus::Version::V1_0,
        },
        dataset: match f.dataset {
            FocusDataset::Cost => tollgate_finance::focus::Dataset::Cost,
            FocusDataset::Chargeback => tollgate_finance::focus::Dataset::Chargeback,
        },
        format: match f.format {
            FocusFormat::Csv => tollgate_finance::focus::Format::Csv,
            FocusFormat::Parquet => tollgate_finance::focus::Format::Parquet,
        },
        output: f.output.clone(),
    };
    let s = export::run(&cfg, &store, &job)?;
    let usd =
        |n: tollgate_types::NanoUsd| tollgate_finance::decimal::Decimal::from_nanos(n.nanos());
    eprintln!(
        "FOCUS {} {} export: {} ledger rows → {} rows, BilledCost total {} USD (upstream cost {} USD){}",
        job.version.as_str(),
        job.dataset.as_str(),
        s.ledger_rows,
        s.focus_rows,
        usd(s.billed),
        usd(s.upstream),
        f.output
            .as_ref()
            .map(|p| format!(", written to {}", p.display()))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

fn spend(s: SpendArgs) -> Result<ExitCode> {
    let cfg = load(&s.config)?.config;
    let group_by = Dim::parse_list(&s.by)?;
    let parse = |name: &str, v: &Option<String>| -> Result<Option<i64>> {
        v.as_deref()
            .map(|v| {
                tollgate_server::parse_time(name, v).map_err(|e| anyhow::anyhow!("{}", e.message))
            })
            .transpose()
    };
    let q = SpendQuery {
        group_by: group_by.clone(),
        from_ms: parse("from", &s.from)?,
        to_ms: parse("to", &s.to)?,
        filter: Default::default(),
    };
    let store = assemble::open_store(&cfg)?;
    let rows = store.spend(&q)?;
    print!("{}", report::spend(&group_by, &rows, s.format));
    Ok(ExitCode::SUCCESS)
}
