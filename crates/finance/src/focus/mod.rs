//! FOCUS cost-and-usage export (1.2, and the 1.0 column set) from ledger rows.
//!
//! **Grain.** One FOCUS row per charge hour × billing account (the tenant) × sub-account (the
//! team, else the key) × provider × served model × requested model × feature × tags × price
//! (version and unit prices) × usage source × policy actions × token class. Token classes are
//! the SkuMeters `Input Tokens` (uncached input), `Cached Input Tokens`, `Cache Write Tokens`
//! and `Output Tokens` (reasoning is billed as output, and shown in `x_ReasoningTokens`).
//! Rows arrive in time order ([`Exporter::push`]) and each hour's groups are written when the
//! next hour starts, so memory holds one hour of groups whatever the length of the range.
//!
//! **Money.** `ListUnitPrice` is the row's recorded price per 1M tokens, `PricingQuantity` the
//! tokens ÷ 10^6, and `ListCost` (= `ContractedCost`) their exact product — no rounding, so
//! `ListCost = ListUnitPrice × PricingQuantity` holds digit for digit. `BilledCost`
//! (= `EffectiveCost`) is what the ledger charged: the group's summed nano-USD
//! `effective_cost`, split over its token classes in proportion to their list cost by largest
//! remainder at one nano-USD. So `Σ BilledCost` over any set of groups — the file, a tenant, a
//! model — equals the ledger's sum for it exactly; within a group, a class's `BilledCost`
//! differs from its `ListCost` by less than a nano-dollar per request (the ledger rounds each
//! request's cost once, half up).
//!
//! **Requests without a charge** (rejected, failed before any token, cache hits) are not
//! dropped: every group carries its request counts (`x_RequestCount`, `x_FailedRequestCount`,
//! on the group's first row only, so the columns sum to the ledger's request count), and a group
//! with no tokens at all is written as one zero-quantity `Input Tokens` row.
//!
//! **Issuer.** This is the operator's own view (billing account = tenant), so `ProviderName`
//! and `InvoiceIssuerName` are the operator and the model vendor is `PublisherName`. (A FOCUS
//! reader takes `InvoiceIssuerName ≠ ProviderName` as a marketplace charge, whose `BilledCost`
//! must be 0.)

mod columns;
mod parquet;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use jiff::Timestamp;
use tollgate_types::{LedgerRow, NanoUsd, Outcome, UnitPrices};

use crate::HOUR_MS;
use crate::decimal::Decimal;

pub use columns::header;
use columns::{Col, file_columns};
pub use parquet::ParquetError;

/// Which FOCUS release's column set to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1_0,
    V1_2,
}

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        match s {
            "1.0" => Some(Version::V1_0),
            "1.2" => Some(Version::V1_2),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_2 => "1.2",
        }
    }
}

/// Who sells the model behind a configured provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publisher {
    /// `PublisherName`: `OpenAI`, `Anthropic`, `Google`, `Amazon Web Services`, …
    pub name: String,
    /// `ServiceName`: `OpenAI API`, `Anthropic API`, `Amazon Bedrock`, …
    pub service: String,
}

/// Which amounts the file bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dataset {
    /// What the ledger charged (the upstream cost).
    Cost,
    /// What the operator bills each tenant: its price list, else cost plus its markup; the
    /// upstream cost in `x_UpstreamCost`.
    Chargeback,
}

impl Dataset {
    pub fn parse(s: &str) -> Option<Dataset> {
        match s {
            "cost" => Some(Dataset::Cost),
            "chargeback" => Some(Dataset::Chargeback),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Dataset::Cost => "cost",
            Dataset::Chargeback => "chargeback",
        }
    }
}

/// What the operator bills one tenant (`tenants.<name>` in config).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Terms {
    /// Added to the upstream cost, in basis points (1250 = 12.5 %).
    pub markup_bp: u32,
    /// Logical model → nano-USD per 1M tokens of input, cached input, cache write, output:
    /// billed instead of cost plus markup.
    pub price_list: BTreeMap<String, [i64; 4]>,
    /// For margin reports.
    pub revenue_per_month: Option<NanoUsd>,
}

/// The file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RFC 4180; nulls are empty unquoted cells.
    Csv,
    /// Typed columns (see the `parquet` module).
    Parquet,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "csv" => Some(Format::Csv),
            "parquet" => Some(Format::Parquet),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Parquet => "parquet",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub version: Version,
    pub dataset: Dataset,
    pub format: Format,
    /// Tenants' billing terms; a tenant without terms is billed at cost.
    pub tenants: BTreeMap<String, Terms>,
    /// Shared-cost rules (`allocations`): a row whose spend a rule takes is marked with the
    /// rule's name in `x_AllocationPool` (first matching rule, as in showback).
    pub allocations: Vec<crate::showback::Rule>,
    /// The range's showback pools (by rule name): who carries each and by what weights. A
    /// shared row's upstream cost is apportioned over them in `x_AllocatedCosts`, cumulatively,
    /// so each tenant's shares over the file sum to its showback share of the pool's ledger
    /// spend exactly. Empty: pools are marked, not apportioned.
    pub pools: Vec<crate::showback::Pool>,
    /// The operator: `ProviderName` and `InvoiceIssuerName`.
    pub issuer: String,
    /// ISO 4217; ledger amounts are USD.
    pub currency: String,
    /// Provider name from config → its publisher; unknown names publish as themselves.
    pub publishers: BTreeMap<String, Publisher>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("ledger rows out of time order: {0} after {1} (the export reads rows by start time)")]
    OutOfOrder(String, String),
    #[error("amount too large to export exactly in row {0}")]
    Overflow(String),
    #[error("write: {0}")]
    Csv(#[from] csv::Error),
    #[error("write: {0}")]
    Parquet(#[from] ParquetError),
    #[error("write: {0}")]
    Io(#[from] std::io::Error),
}

/// What an export covered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Ledger rows read.
    pub ledger_rows: u64,
    /// FOCUS rows written.
    pub focus_rows: u64,
    /// Σ BilledCost, nano-USD: the ledger's Σ effective_cost for the cost dataset, what the
    /// tenants are billed for chargeback.
    pub billed: NanoUsd,
    /// Σ of the ledger's effective_cost (the upstream cost), whatever the dataset.
    pub upstream: NanoUsd,
    /// The same per tenant (billing account).
    pub tenants: BTreeMap<String, TenantTotals>,
}

impl Summary {
    /// Adds the sums of an export of a disjoint range (whole hours apart, so no group spans
    /// both): the result is what one export of both ranges would sum.
    pub fn absorb(&mut self, other: &Summary) {
        let add = |a: NanoUsd, b: NanoUsd| NanoUsd(a.nanos().saturating_add(b.nanos()));
        self.ledger_rows += other.ledger_rows;
        self.focus_rows += other.focus_rows;
        self.billed = add(self.billed, other.billed);
        self.upstream = add(self.upstream, other.upstream);
        for (tenant, t) in &other.tenants {
            let mine = self.tenants.entry(tenant.clone()).or_default();
            mine.requests += t.requests;
            mine.upstream = add(mine.upstream, t.upstream);
            mine.billed = add(mine.billed, t.billed);
        }
    }
}

/// One tenant's sums in an export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantTotals {
    pub requests: u64,
    pub upstream: NanoUsd,
    pub billed: NanoUsd,
}

/// How reports label an absent dimension (allocation rules match these labels).
const NONE: &str = "(none)";

/// Everything a FOCUS row of a group is keyed by, besides the hour and the token class.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct GroupKey {
    tenant: String,
    team: Option<String>,
    sub_account: Option<(String, String)>,
    provider: Option<String>,
    served_model: Option<String>,
    requested_model: Option<String>,
    feature: Option<String>,
    tags: BTreeMap<String, String>,
    price_version: Option<String>,
    prices: Option<[i64; 4]>,
    usage_source: &'static str,
    policy_actions: String,
}

/// One output row's cells, indexed by [`Col`]; `None` is a FOCUS null.
type Cells = Vec<Option<String>>;

/// Sums over a group's ledger rows.
#[derive(Debug, Clone, Default)]
struct Group {
    requests: u64,
    failed: u64,
    /// Per class: input (uncached), cached input, cache write, output.
    tokens: [u64; 4],
    reasoning: u64,
    billed: i64,
    saved: i64,
}

const METERS: [&str; 4] = [
    "Input Tokens",
    "Cached Input Tokens",
    "Cache Write Tokens",
    "Output Tokens",
];
const SKU_CLASS: [&str; 4] = ["input", "cached-input", "cache-write", "output"];

/// Where rows go.
enum Out<W: Write + Send> {
    Csv(Box<csv::Writer<W>>),
    Parquet(Box<parquet::ParquetOut<W>>),
    /// No file: only the [`Summary`] (margins), so no FOCUS cell is built.
    Totals(W),
}

/// A pool's apportionment so far: the upstream cost of its rows written, and what each
/// carrier has been given of it.
struct Running {
    carriers: Vec<String>,
    weights: Vec<i128>,
    total: i64,
    given: Vec<i64>,
}

impl Running {
    /// Adds a row's cost; its shares (JSON: carrier → USD, non-zero ones) sum to `cost`.
    fn add(&mut self, cost: i64) -> String {
        self.total = self.total.saturating_add(cost);
        let now = crate::showback::apportion(self.total, &self.weights);
        let mut shares = serde_json::Map::new();
        for ((carrier, had), now) in self.carriers.iter().zip(&mut self.given).zip(now) {
            if now != *had {
                let share = Decimal::from_nanos(now.saturating_sub(*had)).to_string();
                shares.insert(carrier.clone(), share.into());
            }
            *had = now;
        }
        serde_json::Value::Object(shares).to_string()
    }
}

/// Streams ledger rows (in start-time order) into a FOCUS file.
pub struct Exporter<W: Write + Send> {
    opts: Options,
    out: Out<W>,
    running: HashMap<String, Running>,
    hour: Option<i64>,
    groups: HashMap<GroupKey, Group>,
    summary: Summary,
    last_row: String,
}

impl<W: Write + Send> Exporter<W> {
    /// Starts the file (a CSV header at once), so even an empty range is a valid file.
    pub fn new(opts: Options, out: W) -> Result<Exporter<W>, ExportError> {
        let out = match opts.format {
            Format::Csv => {
                let mut w = csv::WriterBuilder::new()
                    .quote_style(csv::QuoteStyle::Necessary)
                    .from_writer(out);
                w.write_record(header(opts.version, opts.dataset))?;
                Out::Csv(Box::new(w))
            }
            Format::Parquet => Out::Parquet(Box::new(parquet::ParquetOut::new(
                out,
                file_columns(opts.version, opts.dataset).collect(),
            )?)),
        };
        let running = opts
            .pools
            .iter()
            .filter(|p| !p.weights.is_empty())
            .map(|p| {
                let (carriers, weights): (Vec<String>, Vec<i128>) =
                    p.weights.iter().cloned().unzip();
                let given = vec![0; carriers.len()];
                let r = Running {
                    carriers,
                    weights,
                    total: 0,
                    given,
                };
                (p.rule.clone(), r)
            })
            .collect();
        Ok(Exporter {
            opts,
            out,
            running,
            hour: None,
            groups: HashMap::new(),
            summary: Summary::default(),
            last_row: String::new(),
        })
    }

    /// An exporter that writes nothing and only sums: its [`Summary`] is the one a file of the
    /// same options would have (the same groups, the same rounding), at a fraction of the cost.
    pub fn totals(opts: Options, out: W) -> Exporter<W> {
        Exporter {
            opts,
            out: Out::Totals(out),
            running: HashMap::new(),
            hour: None,
            groups: HashMap::new(),
            summary: Summary::default(),
            last_row: String::new(),
        }
    }

    pub fn push(&mut self, row: &LedgerRow) -> Result<(), ExportError> {
        let hour = row.started_at_ms.div_euclid(HOUR_MS);
        match self.hour {
            Some(h) if hour < h => {
                return Err(ExportError::OutOfOrder(
                    row.request_id.clone(),
                    self.last_row.clone(),
                ));
            }
            Some(h) if hour > h => {
                self.flush()?;
                self.hour = Some(hour);
            }
            Some(_) => {}
            None => self.hour = Some(hour),
        }
        self.last_row.clone_from(&row.request_id);
        let a = &row.attribution;
        let sub_account = match (&a.team, &a.key_id) {
            (Some(team), _) => Some((format!("{}/{team}", a.tenant_label()), team.clone())),
            (None, Some(key)) => Some((
                format!("{}/{key}", a.tenant_label()),
                a.key_name.clone().unwrap_or_else(|| key.clone()),
            )),
            (None, None) => None,
        };
        let key = GroupKey {
            tenant: a.tenant_label().to_string(),
            team: a.team.clone(),
            sub_account,
            provider: row.provider.clone(),
            served_model: row.served_model.clone(),
            requested_model: row.requested_model.clone(),
            feature: a.feature.clone(),
            tags: a.tags.clone(),
            price_version: row.price_version.clone(),
            prices: row.unit_prices.map(|p: UnitPrices| {
                [p.input, p.cached_input, p.cache_write, p.output].map(NanoUsd::nanos)
            }),
            usage_source: row.usage_source.as_str(),
            policy_actions: row.policy_actions.to_string(),
        };
        let g = self.groups.entry(key).or_default();
        let u = &row.usage;
        g.requests += 1;
        g.failed += u64::from(row.outcome != Outcome::Ok);
        for (t, n) in g.tokens.iter_mut().zip([
            u.uncached_input_tokens(),
            u.cached_input_tokens,
            u.cache_write_input_tokens,
            u.output_tokens,
        ]) {
            *t = t.saturating_add(n);
        }
        g.reasoning = g.reasoning.saturating_add(u.reasoning_tokens);
        g.billed = g
            .billed
            .checked_add(row.effective_cost.nanos())
            .ok_or_else(|| ExportError::Overflow(row.request_id.clone()))?;
        g.saved = g.saved.saturating_add(row.saved_cost.nanos());
        self.summary.ledger_rows += 1;
        Ok(())
    }

    /// Writes the last hour and flushes the output.
    pub fn finish(mut self) -> Result<(Summary, W), ExportError> {
        self.flush()?;
        let w = match self.out {
            Out::Csv(w) => w
                .into_inner()
                .map_err(|e| ExportError::Io(e.into_error()))?,
            Out::Parquet(p) => p.finish()?,
            Out::Totals(w) => w,
        };
        Ok((self.summary, w))
    }

    fn flush(&mut self) -> Result<(), ExportError> {
        let Some(hour) = self.hour else {
            return Ok(());
        };
        // Sorted once per hour, so files are deterministic whatever the hash order.
        let mut groups: Vec<(GroupKey, Group)> = self.groups.drain().collect();
        groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (key, g) in &groups {
            let (rows, charged) = match self.out {
                Out::Totals(_) => (Vec::new(), self.charged(key, g)?),
                _ => self.group_rows(hour, key, g)?,
            };
            let add = |a: NanoUsd, b: i64| NanoUsd(a.nanos().saturating_add(b));
            let t = self.summary.tenants.entry(key.tenant.clone()).or_default();
            t.requests += g.requests;
            t.upstream = add(t.upstream, g.billed);
            t.billed = add(t.billed, charged);
            self.summary.upstream = add(self.summary.upstream, g.billed);
            self.summary.billed = add(self.summary.billed, charged);
            for mut fields in rows {
                let cols = file_columns(self.opts.version, self.opts.dataset);
                match &mut self.out {
                    // `None` → an empty unquoted cell (FOCUS null); values are never empty.
                    Out::Csv(w) => {
                        w.write_record(cols.map(|c| fields[c as usize].as_deref().unwrap_or("")))?
                    }
                    Out::Parquet(p) => p.row(cols.map(|c| fields[c as usize].take()).collect())?,
                    Out::Totals(_) => {}
                }
                self.summary.focus_rows += 1;
            }
        }
        Ok(())
    }

    /// What one group is billed, as [`Exporter::group_rows`] totals it.
    fn charged(&self, key: &GroupKey, g: &Group) -> Result<i64, ExportError> {
        match self.opts.dataset {
            Dataset::Cost => Ok(g.billed),
            Dataset::Chargeback => charge(
                self.opts.tenants.get(&key.tenant),
                key,
                g,
                key.prices.unwrap_or([0; 4]),
            )
            .map(|(_, charged)| charged)
            .ok_or_else(|| ExportError::Overflow(format!("group of {}", key.tenant))),
        }
    }

    /// The FOCUS rows of one group (cells indexed by [`Col`]) and the group's billed total.
    fn group_rows(
        &mut self,
        hour: i64,
        key: &GroupKey,
        g: &Group,
    ) -> Result<(Vec<Cells>, i64), ExportError> {
        let overflow = || ExportError::Overflow(format!("group of {}", key.tenant));
        let prices = key.prices.unwrap_or([0; 4]);
        // Exact list cost of each class, in 10^-15 USD.
        let list: Vec<i128> = (0..4)
            .map(|c| i128::from(g.tokens[c]) * i128::from(prices[c]))
            .collect();
        let mut classes: Vec<usize> = (0..4).filter(|&c| g.tokens[c] > 0).collect();
        if classes.is_empty() {
            classes.push(0);
        }
        let upstream = split(
            g.billed,
            &classes.iter().map(|&c| list[c]).collect::<Vec<_>>(),
        );
        let (units, charged) = match self.opts.dataset {
            Dataset::Cost => (prices.map(Decimal::from_nanos), g.billed),
            Dataset::Chargeback => {
                charge(self.opts.tenants.get(&key.tenant), key, g, prices).ok_or_else(overflow)?
            }
        };
        let billed = match self.opts.dataset {
            Dataset::Cost => upstream.clone(),
            Dataset::Chargeback => {
                // Weights: each class's exact amount at the billed unit prices (one scale).
                let scale = units.iter().map(|u| u.scale()).max().unwrap_or(0);
                let weights: Vec<i128> = classes
                    .iter()
                    .map(|&c| {
                        let u = units[c];
                        let up = 10i128.pow(u32::from(scale - u.scale()));
                        u.units()
                            .saturating_mul(up)
                            .saturating_mul(i128::from(g.tokens[c]))
                    })
                    .collect();
                split(charged, &weights)
            }
        };

        let start = hour * HOUR_MS;
        let (period_start, period_end) = month_bounds(start);
        let provider = key.provider.as_deref();
        let publisher = provider
            .and_then(|p| self.opts.publishers.get(p))
            .cloned()
            .unwrap_or_else(|| Publisher {
                name: provider.unwrap_or(&self.opts.issuer).to_string(),
                service: match provider {
                    Some(p) => format!("{p} API"),
                    None => format!("{} gateway", self.opts.issuer),
                },
            });
        let model = key.served_model.as_deref().unwrap_or("(none)");
        let vendor = provider.unwrap_or("(none)");
        let mut tags: BTreeMap<String, serde_json::Value> = key
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let gw = |k: &str| format!("tollgate/{k}");
        tags.insert(gw("tenant"), key.tenant.clone().into());
        if let Some(f) = &key.feature {
            tags.insert(gw("feature"), f.clone().into());
        }
        if let Some(p) = provider {
            tags.insert(gw("provider"), p.into());
        }
        let tags = serde_json::to_string(&tags).map_err(|_| overflow())?;
        let labels = crate::showback::Attribution {
            tenant: key.tenant.clone(),
            team: key.team.clone().unwrap_or_else(|| NONE.into()),
            feature: key.feature.clone().unwrap_or_else(|| NONE.into()),
            model: key.requested_model.clone().unwrap_or_else(|| NONE.into()),
            provider: key.provider.clone().unwrap_or_else(|| NONE.into()),
        };
        let pool = self
            .opts
            .allocations
            .iter()
            .find(|r| r.take.as_ref().is_some_and(|m| m.matches(&labels)))
            .map(|r| r.name.clone());
        let month = &period_start[..7];

        let mut out = Vec::with_capacity(classes.len());
        for (i, &c) in classes.iter().enumerate() {
            let unit = units[c];
            let qty = Decimal::new(i128::from(g.tokens[c]), 6);
            let list_cost = unit.checked_mul(qty).ok_or_else(overflow)?;
            let billed_c = Decimal::from_nanos(billed[i]);
            let sku = format!("{vendor}:{model}:{}", SKU_CLASS[c]);
            let version = key.price_version.as_deref().unwrap_or("unpriced");
            let mut f: Cells = vec![None; Col::COUNT];
            let mut set = |k: Col, v: String| {
                f[k as usize] = Some(v);
            };
            set(Col::BilledCost, billed_c.to_string());
            set(Col::EffectiveCost, billed_c.to_string());
            set(Col::ListCost, list_cost.to_string());
            set(Col::ContractedCost, list_cost.to_string());
            set(Col::ListUnitPrice, unit.to_string());
            set(Col::ContractedUnitPrice, unit.to_string());
            set(Col::BillingAccountId, key.tenant.clone());
            set(Col::BillingAccountName, key.tenant.clone());
            set(Col::BillingCurrency, self.opts.currency.clone());
            set(Col::BillingPeriodStart, period_start.clone());
            set(Col::BillingPeriodEnd, period_end.clone());
            set(Col::ChargePeriodStart, rfc3339(start));
            set(Col::ChargePeriodEnd, rfc3339(start + HOUR_MS));
            set(Col::ChargeCategory, "Usage".into());
            set(Col::ChargeFrequency, "Usage-Based".into());
            set(
                Col::ChargeDescription,
                format!(
                    "{} for {model} at {unit} {} per 1M tokens",
                    METERS[c], self.opts.currency
                ),
            );
            set(
                Col::ConsumedQuantity,
                Decimal::new(i128::from(g.tokens[c]), 0).to_string(),
            );
            set(Col::ConsumedUnit, "Tokens".into());
            set(Col::PricingQuantity, qty.to_string());
            set(Col::PricingUnit, "1000000 Tokens".into());
            set(Col::PricingCategory, "Standard".into());
            set(Col::InvoiceId, format!("{}-{month}", key.tenant));
            set(Col::InvoiceIssuerName, self.opts.issuer.clone());
            set(Col::ProviderName, self.opts.issuer.clone());
            set(Col::PublisherName, publisher.name.clone());
            set(Col::ServiceCategory, "AI and Machine Learning".into());
            set(Col::ServiceSubcategory, "Generative AI".into());
            set(Col::ServiceName, publisher.service.clone());
            set(Col::SkuId, sku.clone());
            set(
                Col::SkuPriceId,
                match self.opts.dataset {
                    Dataset::Cost => format!("{sku}:{version}"),
                    Dataset::Chargeback => format!("{sku}:{version}:{}:{unit}", key.tenant),
                },
            );
            set(Col::SkuMeter, METERS[c].into());
            set(
                Col::SkuPriceDetails,
                serde_json::json!({"x_TokenClass": METERS[c], "x_Model": model}).to_string(),
            );
            if let Some((id, name)) = &key.sub_account {
                set(Col::SubAccountId, id.clone());
                set(Col::SubAccountName, name.clone());
            }
            set(Col::Tags, tags.clone());
            set(Col::PricingCurrency, self.opts.currency.clone());
            set(Col::PricingCurrencyListUnitPrice, unit.to_string());
            set(Col::PricingCurrencyContractedUnitPrice, unit.to_string());
            set(Col::PricingCurrencyEffectiveCost, billed_c.to_string());
            // Counts ride on a group's first row, so each column sums to the ledger's.
            let first = i == 0;
            let count = |n: u64| if first { n } else { 0 }.to_string();
            set(Col::x_RequestCount, count(g.requests));
            set(Col::x_FailedRequestCount, count(g.failed));
            set(
                Col::x_SavedCost,
                Decimal::from_nanos(if first { g.saved } else { 0 }).to_string(),
            );
            for (k, class) in [
                (Col::x_InputTokens, 0),
                (Col::x_CachedInputTokens, 1),
                (Col::x_CacheWriteTokens, 2),
                (Col::x_OutputTokens, 3),
            ] {
                set(k, if class == c { g.tokens[c] } else { 0 }.to_string());
            }
            set(
                Col::x_ReasoningTokens,
                if c == 3 { g.reasoning } else { 0 }.to_string(),
            );
            if let Some(m) = &key.requested_model {
                set(Col::x_RequestedModel, m.clone());
            }
            if let Some(m) = &key.served_model {
                set(Col::x_ServedModel, m.clone());
            }
            if let Some(p) = provider {
                set(Col::x_Provider, p.to_string());
            }
            if let Some(f) = &key.feature {
                set(Col::x_Feature, f.clone());
            }
            set(Col::x_PriceTableVersion, version.to_string());
            if let Some(pool) = &pool {
                set(Col::x_AllocationPool, pool.clone());
                if let Some(r) = self.running.get_mut(pool) {
                    set(Col::x_AllocatedCosts, r.add(upstream[i]));
                }
            }
            set(Col::x_UsageSource, key.usage_source.to_string());
            if self.opts.dataset == Dataset::Chargeback {
                let up = Decimal::from_nanos(upstream[i]);
                set(Col::x_UpstreamCost, up.to_string());
                set(
                    Col::x_Margin,
                    Decimal::from_nanos(billed[i].saturating_sub(upstream[i])).to_string(),
                );
            }
            if !key.policy_actions.is_empty() {
                set(Col::x_PolicyActions, key.policy_actions.clone());
            }
            out.push(f);
        }
        Ok((out, charged))
    }
}

/// A chargeback group's unit prices (USD per 1M tokens, per class) and its billed total in
/// nano-USD: the tenant's price list for the requested model, exactly, rounded once half up;
/// else the upstream unit prices and cost times `1 + markup`, the total rounded once half up.
/// `None` on overflow.
fn charge(
    terms: Option<&Terms>,
    key: &GroupKey,
    g: &Group,
    prices: [i64; 4],
) -> Option<([Decimal; 4], i64)> {
    let default = Terms::default();
    let terms = terms.unwrap_or(&default);
    if let Some(list) = key
        .requested_model
        .as_ref()
        .and_then(|m| terms.price_list.get(m))
    {
        let mut femto: i128 = 0;
        for (tokens, price) in g.tokens.iter().zip(list) {
            femto = femto.checked_add(i128::from(*tokens).checked_mul(i128::from(*price))?)?;
        }
        let total = i64::try_from((femto + 500_000).div_euclid(1_000_000)).ok()?;
        return Some((list.map(Decimal::from_nanos), total));
    }
    let factor = i128::from(10_000 + terms.markup_bp);
    let units = prices.map(|p| Decimal::new(i128::from(p) * factor, 13));
    let scaled = i128::from(g.billed).checked_mul(factor)?;
    let total = i64::try_from((scaled + 5_000).div_euclid(10_000)).ok()?;
    Some((units, total))
}

/// Splits `total` nano-USD over parts in proportion to `weights`, by largest remainder: the
/// parts sum to `total` exactly, and each is within one nano-USD of its exact share. Weights
/// that are all zero put everything on the first part.
pub fn split(total: i64, weights: &[i128]) -> Vec<i64> {
    let sum: i128 = weights.iter().sum();
    if weights.is_empty() {
        return Vec::new();
    }
    if sum <= 0 {
        let mut v = vec![0; weights.len()];
        v[0] = total;
        return v;
    }
    // Weights are scaled down until `total × weight` cannot overflow; shares need not be
    // computed from exact weights, only sum exactly.
    let mut w: Vec<i128> = weights.to_vec();
    let mut s = sum;
    let limit = i128::MAX / (i128::from(total).abs() + 1);
    while s > limit {
        for x in &mut w {
            *x /= 2;
        }
        s = w.iter().sum();
        if s == 0 {
            let mut v = vec![0; weights.len()];
            v[0] = total;
            return v;
        }
    }
    let t = i128::from(total);
    let mut shares: Vec<i128> = w.iter().map(|x| (t * x).div_euclid(s)).collect();
    let mut rest = t - shares.iter().sum::<i128>();
    let mut order: Vec<usize> = (0..w.len()).collect();
    // Largest remainder first; ties to the earlier part, so the result is deterministic.
    order.sort_by_key(|&i| (std::cmp::Reverse((t * w[i]).rem_euclid(s)), i));
    for &i in order.iter().cycle() {
        if rest == 0 {
            break;
        }
        shares[i] += 1;
        rest -= 1;
    }
    shares
        .into_iter()
        .map(|x| i64::try_from(x).unwrap_or(i64::MAX))
        .collect()
}

fn rfc3339(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// The calendar month (UTC) holding `ms`, as FOCUS date-times: inclusive start, exclusive end.
fn month_bounds(ms: i64) -> (String, String) {
    let (start, end) = crate::utc_month(ms).unwrap_or((ms, ms));
    (rfc3339(start), rfc3339(end))
}

#[cfg(test)]
mod tests;
