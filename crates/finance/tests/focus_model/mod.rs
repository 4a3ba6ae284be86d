//! A checker for the FOCUS 1.2 *Requirements Model* (`tests/focus/model-1.2.json`, the rule file
//! bundled with the FinOps Foundation's validator v2.0.1), run against one CSV file.
//!
//! CI cannot run the official validator (it is not on PyPI), so the tests evaluate the model
//! themselves. Use it from a test crate as `mod focus_model;` and call [`check_csv`].
//!
//! # What is checked
//!
//! Every one of the 621 model rules ends up in exactly one of [`Report::checked`] or
//! [`Report::skipped`] (with a reason).
//!
//! * **Keywords.** MUST, MUST NOT, SHOULD, SHOULD NOT and RECOMMENDED rules are enforced; every
//!   [`Failure`] carries its keyword and whether a MUST / MUST NOT is violated
//!   ([`Failure::mandatory`], [`Report::mandatory_failures`]). MAY rules only
//!   grant a permission and are skipped. The official validator enforces SHOULD rules too (the
//!   unit-format rule that rejects `1M Tokens` is `PricingUnit-C-003-O`, a SHOULD), so
//!   "passes the validator" means "no failure of any enforced keyword".
//! * **Applicability.** A rule applies only when *all* of its `ApplicabilityCriteria` are among
//!   the claimed criteria (the validator accepts *any* one of them, which makes e.g.
//!   `PricingCurrencyContractedUnitPrice` mandatory for everyone with a public price list). A rule
//!   also inherits the applicability of the composite rules that reference it (`CheckModelRule`).
//! * **Column families.** Column rules (`EntityType: Column`) of a column that is not in the file
//!   are skipped as "column absent". Whether the absence is itself a failure is decided by the
//!   dataset presence rules (`CostAndUsage-D-0NN`, `ColumnPresent`): only an applicable MUST (or
//!   RECOMMENDED) presence rule fails. A rule whose `Dependencies` name another column family's rule
//!   is skipped when that rule is not applicable (the validator's "upstream dependency skipped"),
//!   e.g. `BilledCost-C-005-C` (compares ProviderName with InvoiceIssuerName) when
//!   InvoiceIssuerName is absent.
//! * **Conditions are row filters.** A rule's `Condition`, and the `Condition` of every composite
//!   above it, select the rows the requirement applies to. **Every row in scope must satisfy the
//!   requirement**; the validator only asks that *some* row satisfies an enum rule.
//! * **Null semantics.** An unquoted empty cell and the unquoted literal `NULL` are null; a quoted
//!   `""` is an empty string. A column that is not in the file reads as null. The check functions
//!   use SQL-like three-valued logic: `CheckValue(col, v)` on a null cell is *unknown*;
//!   `CheckNotValue(col, v)` is "is distinct from" (null counts as "not v"), because conditions
//!   such as "ChargeClass is not Correction" are meant to include a null ChargeClass (the validator
//!   treats them as false, so it never checks `ListCost = ListUnitPrice × PricingQuantity` on
//!   ordinary rows). A requirement fails on *false* only; a condition selects *true* only.
//!   Nulls are judged by the nullability rules, not by value rules.
//! * **Check functions.** All 22 functions of `CheckFunctions` are implemented; an unknown or
//!   malformed function is a model error ([`Report::model_errors`]), never silently ignored.
//!   Notable definitions: `TypeDecimal` = parses as a number *and* (validator quirk) the column has
//!   a `.` or an exponent in some value; `FormatNumeric` = FOCUS NumericFormat (optional `-`,
//!   digits, optional fraction, optional `E`/`e` exponent whose sign is only `-`); `FormatDateTime`
//!   = `YYYY-MM-DD[T ]HH:MM:SS[.fff]` with `Z` or `+00:00` (what the validator accepts; date-only
//!   fails); `TypeDateTime` also accepts other offsets; `FormatUnit` = FOCUS UnitFormat (`Tokens`,
//!   `1000000 Tokens`, `GB-Hours`, `GB/Hour`, `Units/3 Months`; not `1M Tokens`, not `tokens`);
//!   `FormatKeyValue` = a JSON object with unique keys and scalar values; `CheckNationalCurrency`
//!   and `FormatCurrency` = an ISO 4217 circulating currency (FormatCurrency also accepts a
//!   virtual-currency string when `VIRTUAL_CURRENCY_SUPPORTED` is claimed); `FormatString` = not
//!   empty and not only whitespace (NullHandling-A-002-M, StringHandling-A-007-M); `TypeString`
//!   = any value. Arithmetic (`ColumnByColumnEqualsColumnValue`) is exact decimal arithmetic.
//! * **Decidable dynamic rules.** Dynamic rules have no machine-readable requirement. Those that
//!   one file can decide get a hand-written check ([`SUPPLEMENTS`]): custom columns need `x_`,
//!   custom columns after FOCUS columns, no empty strings, period end after period start, the
//!   PricingQuantity × unit price = cost products, and a few "valid decimal" rules.
//!
//! # What is skipped, and why
//!
//! * Rules whose applicability criteria are not claimed, and rules of absent columns.
//! * Dynamic rules that need knowledge outside the file (uniqueness within a provider, invoices,
//!   history across billing periods, what a charge "relates to"). Dynamic *attribute* rules
//!   (DateTimeFormat, NumericFormat, …) are skipped with a pointer to the check function that
//!   enforces their decidable part in the column rules.
//! * `InvoiceId-C-004-C` on its own: it is an unconditioned alternative inside the OR
//!   `InvoiceId-C-003-C` (null *or* not null); the validator evaluates it standalone and it fails
//!   on every file. It is still evaluated as an alternative inside `InvoiceId-C-003-C`.
//! * Composites none of whose rules is checked.
//!
//! # Where this deviates from the model as written
//!
//! [`MODEL_FIXES`] lists the rules whose Requirement or Condition is replaced before evaluation:
//! typos that make the tree unparsable, conditions or requirements that contradict their own
//! `MustSatisfy` text, and "MUST be a valid decimal value" rules that the model expresses as a
//! second not-null check. Everything else is evaluated as written.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::OnceLock;

use serde_json::Value;

use self::csv::Table;
use self::decimal::Dec;

/// The FOCUS 1.2 Requirements Model, as bundled with focus_validator v2.0.1.
const MODEL_JSON: &str = include_str!("../focus/model-1.2.json");

/// Applicability criteria that fit an AI gateway's own dataset (the official validator passes the
/// reference file with exactly these).
pub(crate) const GATEWAY_CRITERIA: &[&str] = &[
    "PUBLIC_PRICE_LIST_SUPPORTED",
    "UNIT_PRICING_SUPPORTED",
    "USAGE_MEASUREMENT_SUPPORTED",
    "TAGGING_SUPPORTED",
    "SUB_ACCOUNT_SUPPORTED",
    "NEGOTIATED_PRICING_SUPPORTED",
    "ACCOUNT_NAMING_SUPPORTED",
    "MULTIPLE_PRICING_CATEGORIES_SUPPORTED",
];

/// How many failing rows a [`Failure`] lists.
const MAX_LISTED_ROWS: usize = 10;

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

/// The outcome of [`check_csv`]: every model rule is either checked or skipped.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Ids of the rules that were evaluated (passed or failed), in model order.
    pub(crate) checked: Vec<String>,
    /// Rules that failed: rules with a requirement of their own first, then composites.
    pub(crate) failures: Vec<Failure>,
    /// `(rule id, reason)`; a reason reads `"<category>: <detail>"`.
    pub(crate) skipped: Vec<(String, String)>,
    /// Problems with the model or with this checker (unparsable rules, unknown criteria…).
    /// Always empty for a trustworthy run.
    pub(crate) model_errors: Vec<String>,
}

/// One failed rule.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) rule: String,
    /// MUST, MUST NOT, SHOULD, SHOULD NOT or RECOMMENDED.
    pub(crate) keyword: String,
    /// The rule's `MustSatisfy` text.
    pub(crate) requirement: String,
    /// 1-based data rows that violate the rule (the first [`MAX_LISTED_ROWS`]); empty for a
    /// dataset-level failure such as a missing column.
    pub(crate) rows: Vec<usize>,
    /// How many rows violate the rule in total.
    pub(crate) violations: usize,
    /// Offending values (or columns, or failing child rules of a composite).
    pub(crate) detail: String,
    /// True for a composite rule, which fails because one of its rules failed.
    pub(crate) composite: bool,
    /// True when a MUST or MUST NOT requirement is violated (for a composite: by one of its
    /// failing rules); false when only SHOULD, SHOULD NOT or RECOMMENDED ones are.
    pub(crate) mandatory: bool,
}

impl Report {
    /// The failure of `rule`, if it failed.
    pub(crate) fn failure(&self, rule: &str) -> Option<&Failure> {
        self.failures.iter().find(|f| f.rule == rule)
    }

    /// Ids of the failed rules that are not composites.
    pub(crate) fn failed_rules(&self) -> Vec<&str> {
        self.failures
            .iter()
            .filter(|f| !f.composite)
            .map(|f| f.rule.as_str())
            .collect()
    }

    /// Failures that violate a MUST or MUST NOT requirement.
    pub(crate) fn mandatory_failures(&self) -> Vec<&Failure> {
        self.failures.iter().filter(|f| f.mandatory).collect()
    }

    /// Why `rule` was skipped, if it was.
    pub(crate) fn skip_reason(&self, rule: &str) -> Option<&str> {
        self.skipped
            .iter()
            .find(|(id, _)| id == rule)
            .map(|(_, why)| why.as_str())
    }

    /// Skipped rules grouped by the category of their reason.
    pub(crate) fn skip_groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, why) in &self.skipped {
            let category = why.split(':').next().unwrap_or(why).to_owned();
            groups.entry(category).or_default().push(id.clone());
        }
        groups
    }

    /// A human-readable summary (counts, failures, skip categories).
    pub(crate) fn summary(&self) -> String {
        let mut out = format!(
            "{} rules checked, {} failed ({} own + {} composite), {} skipped, {} model errors\n",
            self.checked.len(),
            self.failures.len(),
            self.failures.iter().filter(|f| !f.composite).count(),
            self.failures.iter().filter(|f| f.composite).count(),
            self.skipped.len(),
            self.model_errors.len(),
        );
        for f in &self.failures {
            out.push_str(&format!(
                "  FAIL {} [{}, {}] {} rows={:?} ({} violations) {}\n",
                f.rule,
                f.keyword,
                if f.mandatory { "mandatory" } else { "advisory" },
                f.requirement,
                f.rows,
                f.violations,
                f.detail
            ));
        }
        for (category, ids) in self.skip_groups() {
            out.push_str(&format!("  skipped, {category}: {}\n", ids.len()));
        }
        for e in &self.model_errors {
            out.push_str(&format!("  MODEL ERROR {e}\n"));
        }
        out
    }
}

/// Checks `csv_text` (a FOCUS 1.2 Cost and Usage export) against every rule of the model that
/// applies under the claimed applicability `criteria`.
pub(crate) fn check_csv(csv_text: &str, criteria: &[&str]) -> Report {
    let model = model();
    let mut report = Report {
        model_errors: model.errors.clone(),
        ..Report::default()
    };
    for c in criteria {
        if !model.criteria.contains(*c) {
            report
                .model_errors
                .push(format!("unknown applicability criterion {c}"));
        }
    }
    let table = match csv::parse_table(csv_text) {
        Ok(table) => table,
        Err(e) => {
            report.failures.push(Failure {
                rule: "CSV".to_owned(),
                keyword: "MUST".to_owned(),
                requirement: "The file MUST be RFC 4180 CSV with a header row.".to_owned(),
                rows: Vec::new(),
                violations: 0,
                detail: e,
                composite: false,
                mandatory: true,
            });
            return report;
        }
    };
    let mut engine = Engine::new(model, &table, criteria);
    for (idx, rule) in model.rules.iter().enumerate() {
        match engine.outcome(idx) {
            Outcome::Checked(result) => {
                report.checked.push(rule.id.clone());
                if result.failed() {
                    let failing = result.failing_rows();
                    report.failures.push(Failure {
                        rule: rule.id.clone(),
                        keyword: rule.keyword.as_str().to_owned(),
                        requirement: rule.must_satisfy.clone(),
                        violations: failing.len(),
                        rows: failing.into_iter().take(MAX_LISTED_ROWS).collect(),
                        detail: result.detail,
                        composite: rule.is_composite(),
                        mandatory: result.mandatory,
                    });
                }
            }
            Outcome::Skipped(reason) => report.skipped.push((rule.id.clone(), reason.text())),
            Outcome::Error(e) => {
                report.model_errors.push(format!("{}: {e}", rule.id));
                report
                    .skipped
                    .push((rule.id.clone(), format!("model error: {e}")));
            }
        }
    }
    // Own failures first, composites (which only echo them) last; model order otherwise.
    report.failures.sort_by_key(|f| f.composite);
    report
}

/// Problems found while loading the model (empty when every rule parsed).
pub(crate) fn model_errors() -> &'static [String] {
    &model().errors
}

/// Parses one check-function tree against the model's `CheckFunctions` declarations.
pub(crate) fn parse_check_function(tree: &Value) -> Result<(), String> {
    parse_check(tree, &model().functions).map(|_| ())
}

/// Rule ids whose Requirement or Condition does not parse *without* [`MODEL_FIXES`].
pub(crate) fn unparsable_without_fixes() -> Vec<String> {
    let Ok(raw) = serde_json::from_str::<Value>(MODEL_JSON) else {
        return vec!["<model JSON>".to_owned()];
    };
    let functions = parse_function_decls(&raw).unwrap_or_default();
    let mut ids = Vec::new();
    if let Some(rules) = raw.get("ModelRules").and_then(Value::as_object) {
        for (id, rule) in rules {
            let vc = &rule["ValidationCriteria"];
            let bad = ["Requirement", "Condition"].iter().any(|part| {
                let tree = &vc[*part];
                !is_empty_tree(tree) && parse_check(tree, &functions).is_err()
            });
            if bad {
                ids.push(id.clone());
            }
        }
    }
    ids
}

/// The check functions this checker implements (must equal the model's `CheckFunctions`).
pub(crate) const IMPLEMENTED_CHECK_FUNCTIONS: &[&str] = &[
    "OR",
    "AND",
    "ColumnPresent",
    "CheckDistinctCount",
    "FormatKeyValue",
    "CheckValue",
    "CheckNotValue",
    "CheckNotSameValue",
    "CheckSameValue",
    "CheckDecimalValue",
    "CheckGreaterOrEqualThanValue",
    "CheckModelRule",
    "CheckNationalCurrency",
    "TypeDecimal",
    "TypeString",
    "FormatDateTime",
    "FormatNumeric",
    "FormatString",
    "FormatUnit",
    "FormatCurrency",
    "ColumnByColumnEqualsColumnValue",
    "TypeDateTime",
];

/// The check functions the model declares, with their declared arguments.
pub(crate) fn declared_check_functions() -> Vec<(String, Vec<String>)> {
    model()
        .functions
        .iter()
        .map(|(name, decl)| (name.clone(), decl.args.clone()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Deviations from the model as written
// ---------------------------------------------------------------------------------------------

/// Which part of a rule's `ValidationCriteria` a [`ModelFix`] replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FixPart {
    Requirement,
    Condition,
}

/// A replacement for a defective Requirement or Condition in the model.
#[derive(Debug)]
pub(crate) struct ModelFix {
    pub(crate) rule: &'static str,
    pub(crate) part: FixPart,
    pub(crate) json: &'static str,
    pub(crate) why: &'static str,
}

/// Replacements applied to the model before evaluation, each with the defect it repairs.
pub(crate) const MODEL_FIXES: &[ModelFix] = &[
    ModelFix {
        rule: "ResourceType-C-005-C",
        part: FixPart::Condition,
        json: r#"{"CheckFunction":"CheckNotValue","ColumnName":"ResourceId","Value":null}"#,
        why: "typo: `CheckCondition` instead of `ColumnName` (unparsable)",
    },
    ModelFix {
        rule: "ResourceId-C-006-C",
        part: FixPart::Condition,
        json: r#"{"CheckFunction":"CheckNotValue","ColumnName":"ResourceId","Value":null}"#,
        why: "typo: `CheckCondition` instead of `ColumnName` (unparsable)",
    },
    ModelFix {
        rule: "CapacityReservationStatus-C-003-C",
        part: FixPart::Condition,
        json: r#"{"CheckFunction":"CheckValue","ColumnName":"CapacityReservationId","Value":null}"#,
        why: "`{\"AND\": …}` without a CheckFunction (unparsable)",
    },
    ModelFix {
        rule: "CapacityReservationStatus-C-004-C",
        part: FixPart::Condition,
        json: r#"{"CheckFunction":"AND","Items":[
            {"CheckFunction":"CheckNotValue","ColumnName":"CapacityReservationId","Value":null},
            {"CheckFunction":"CheckValue","ColumnName":"ChargeCategory","Value":"Usage"}]}"#,
        why: "`{\"AND\": […]}` without a CheckFunction (unparsable)",
    },
    ModelFix {
        rule: "ConsumedQuantity-C-006-C",
        part: FixPart::Condition,
        json: r#"{"CheckFunction":"CheckNotValue","ColumnName":"ChargeClass","Value":"Correction"}"#,
        why: "condition inverted: the text says 'when ChargeClass is not \"Correction\"', the model \
              tests ChargeClass = \"Correction\"",
    },
    ModelFix {
        rule: "CommitmentDiscountStatus-C-003-C",
        part: FixPart::Requirement,
        json: r#"{"CheckFunction":"CheckValue","ColumnName":"CommitmentDiscountStatus","Value":null}"#,
        why: "requirement inverted: the text says 'MUST be null', the model tests not null",
    },
    ModelFix {
        rule: "CommitmentDiscountStatus-C-004-C",
        part: FixPart::Condition,
        json: r#"{"CheckFunction":"AND","Items":[
            {"CheckFunction":"CheckNotValue","ColumnName":"CommitmentDiscountId","Value":null},
            {"CheckFunction":"CheckValue","ColumnName":"ChargeCategory","Value":"Usage"}]}"#,
        why: "condition inverted and incomplete: the text says 'when CommitmentDiscountId is not \
              null and ChargeCategory is \"Usage\"'",
    },
    ModelFix {
        rule: "CommitmentDiscountQuantity-C-010-C",
        part: FixPart::Condition,
        json: r#"{"CheckFunction":"CheckValue","ColumnName":"ChargeCategory","Value":"Purchase"}"#,
        why: "the text says 'When ChargeCategory is \"Purchase\"', the model tests ChargeCategory \
              for null",
    },
    ModelFix {
        rule: "Tags-C-003-C",
        part: FixPart::Condition,
        json: r#"{"CheckFunction":"CheckNotValue","ColumnName":"Tags","Value":null}"#,
        why: "condition inverted: the text says 'When Tags is not null'",
    },
    ModelFix {
        rule: "EffectiveCost-C-004-M",
        part: FixPart::Requirement,
        json: r#"{"CheckFunction":"CheckDecimalValue","ColumnName":"EffectiveCost"}"#,
        why: "the text says 'MUST be a valid decimal value', the model repeats the not-null check",
    },
    ModelFix {
        rule: "ContractedCost-C-004-M",
        part: FixPart::Requirement,
        json: r#"{"CheckFunction":"CheckDecimalValue","ColumnName":"ContractedCost"}"#,
        why: "the text says 'MUST be a valid decimal value', the model repeats the not-null check",
    },
    ModelFix {
        rule: "ListCost-C-004-M",
        part: FixPart::Requirement,
        json: r#"{"CheckFunction":"CheckDecimalValue","ColumnName":"ListCost"}"#,
        why: "the text says 'MUST be a valid decimal value', the model repeats the not-null check",
    },
    ModelFix {
        rule: "PricingQuantity-C-008-M",
        part: FixPart::Requirement,
        json: r#"{"CheckFunction":"CheckDecimalValue","ColumnName":"PricingQuantity"}"#,
        why: "the text says 'MUST be a valid decimal value', the model checks not null",
    },
    ModelFix {
        rule: "PricingCurrencyEffectiveCost-C-004-M",
        part: FixPart::Requirement,
        json: r#"{"CheckFunction":"CheckDecimalValue","ColumnName":"PricingCurrencyEffectiveCost"}"#,
        why: "the text says 'MUST be a valid decimal value', the model checks \
              PricingCurrencyListUnitPrice >= 0",
    },
];

/// Rules that are not evaluated on their own (only inside their composite), with the reason.
const STANDALONE_SKIPS: &[(&str, &str)] = &[(
    "InvoiceId-C-004-C",
    "validator bug: an unconditioned alternative inside the OR InvoiceId-C-003-C (InvoiceId null \
     or not null); the official validator evaluates it on its own and it fails on every file. It \
     is evaluated only as an alternative of InvoiceId-C-003-C",
)];

/// A hand-written check for a Dynamic rule that one file can decide.
#[derive(Debug)]
pub(crate) struct Supplement {
    pub(crate) rule: &'static str,
    pub(crate) how: &'static str,
    check: SupplementCheck,
}

#[derive(Debug)]
enum SupplementCheck {
    /// A check-function tree; `condition: None` keeps the rule's own model condition.
    Tree {
        requirement: &'static str,
        condition: Option<&'static str>,
    },
    /// Every column FOCUS does not define starts with `x_`.
    CustomColumnsPrefixed,
    /// No column id is longer than 50 characters.
    ColumnIdLength,
    /// No FOCUS column comes after a custom column.
    FocusColumnsFirst,
    /// No FOCUS column holds an empty (quoted) string.
    NoEmptyStrings,
    /// `end` is later than `start` on every row where both are date-times.
    EndAfterStart {
        start: &'static str,
        end: &'static str,
    },
}

/// Dynamic rules decided here by a hand-written check.
pub(crate) const SUPPLEMENTS: &[Supplement] = &[
    Supplement {
        rule: "ColumnHandling-A-010-M",
        how: "every column not defined by FOCUS 1.2 starts with `x_`",
        check: SupplementCheck::CustomColumnsPrefixed,
    },
    Supplement {
        rule: "ColumnHandling-A-005-O",
        how: "no column id exceeds 50 characters",
        check: SupplementCheck::ColumnIdLength,
    },
    Supplement {
        rule: "ColumnHandling-A-012-O",
        how: "all FOCUS columns come before the first custom column",
        check: SupplementCheck::FocusColumnsFirst,
    },
    Supplement {
        rule: "ColumnHandling-A-013-O",
        how: "custom columns come after all FOCUS columns, not intermixed",
        check: SupplementCheck::FocusColumnsFirst,
    },
    Supplement {
        rule: "NullHandling-A-002-M",
        how: "no FOCUS column holds an empty string (placeholder values such as 0 or \
              'Not Applicable' cannot be told from real values and are not checked)",
        check: SupplementCheck::NoEmptyStrings,
    },
    Supplement {
        rule: "BillingPeriodEnd-C-004-M",
        how: "BillingPeriodEnd is later than BillingPeriodStart (an exclusive end after an \
              inclusive start)",
        check: SupplementCheck::EndAfterStart {
            start: "BillingPeriodStart",
            end: "BillingPeriodEnd",
        },
    },
    Supplement {
        rule: "ChargePeriodEnd-C-004-M",
        how: "ChargePeriodEnd is later than ChargePeriodStart (an exclusive end after an \
              inclusive start)",
        check: SupplementCheck::EndAfterStart {
            start: "ChargePeriodStart",
            end: "ChargePeriodEnd",
        },
    },
    Supplement {
        rule: "ConsumedQuantity-C-008-C",
        how: "CheckDecimalValue(ConsumedQuantity) under the model's condition",
        check: SupplementCheck::Tree {
            requirement: r#"{"CheckFunction":"CheckDecimalValue","ColumnName":"ConsumedQuantity"}"#,
            condition: None,
        },
    },
    Supplement {
        rule: "CommitmentDiscountQuantity-C-009-M",
        how: "CheckDecimalValue(CommitmentDiscountQuantity)",
        check: SupplementCheck::Tree {
            requirement: r#"{"CheckFunction":"CheckDecimalValue","ColumnName":"CommitmentDiscountQuantity"}"#,
            condition: None,
        },
    },
    Supplement {
        rule: "PricingQuantity-C-009-C",
        how: "ListUnitPrice × PricingQuantity = ListCost and ContractedUnitPrice × \
              PricingQuantity = ContractedCost, exactly, when ChargeClass is not Correction",
        check: SupplementCheck::Tree {
            requirement: r#"{"CheckFunction":"AND","Items":[
                {"CheckFunction":"ColumnByColumnEqualsColumnValue","ColumnAName":"ListUnitPrice",
                 "ColumnBName":"PricingQuantity","ResultColumnName":"ListCost"},
                {"CheckFunction":"ColumnByColumnEqualsColumnValue","ColumnAName":"ContractedUnitPrice",
                 "ColumnBName":"PricingQuantity","ResultColumnName":"ContractedCost"}]}"#,
            condition: Some(
                r#"{"CheckFunction":"CheckNotValue","ColumnName":"ChargeClass","Value":"Correction"}"#,
            ),
        },
    },
    Supplement {
        rule: "ContractedCost-C-009-C",
        how: "ContractedUnitPrice × PricingQuantity = ContractedCost, exactly, under the model's \
              condition",
        check: SupplementCheck::Tree {
            requirement: r#"{"CheckFunction":"ColumnByColumnEqualsColumnValue","ColumnAName":"ContractedUnitPrice",
                "ColumnBName":"PricingQuantity","ResultColumnName":"ContractedCost"}"#,
            condition: None,
        },
    },
    Supplement {
        rule: "PricingCurrencyContractedUnitPrice-C-004-C",
        how: "CheckValue(PricingCurrencyContractedUnitPrice, null) under the model's condition",
        check: SupplementCheck::Tree {
            requirement: r#"{"CheckFunction":"CheckValue","ColumnName":"PricingCurrencyContractedUnitPrice","Value":null}"#,
            condition: None,
        },
    },
    Supplement {
        rule: "PricingCurrencyContractedUnitPrice-C-005-C",
        how: "CheckNotValue(PricingCurrencyContractedUnitPrice, null) under the model's condition",
        check: SupplementCheck::Tree {
            requirement: r#"{"CheckFunction":"CheckNotValue","ColumnName":"PricingCurrencyContractedUnitPrice","Value":null}"#,
            condition: None,
        },
    },
    Supplement {
        rule: "PricingCurrencyContractedUnitPrice-C-008-C",
        how: "CheckGreaterOrEqualThanValue(PricingCurrencyContractedUnitPrice, 0) under the \
              model's condition",
        check: SupplementCheck::Tree {
            requirement: r#"{"CheckFunction":"CheckGreaterOrEqualThanValue","ColumnName":"PricingCurrencyContractedUnitPrice","Value":0}"#,
            condition: None,
        },
    },
];

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

/// A `CheckFunctions` entry.
#[derive(Debug, Clone, Default)]
struct FunctionDecl {
    args: Vec<String>,
    format_attributes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
    Must,
    MustNot,
    Should,
    ShouldNot,
    Recommended,
    May,
}

impl Keyword {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "MUST" => Self::Must,
            "MUST NOT" => Self::MustNot,
            "SHOULD" => Self::Should,
            "SHOULD NOT" => Self::ShouldNot,
            "RECOMMENDED" => Self::Recommended,
            "MAY" => Self::May,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Must => "MUST",
            Self::MustNot => "MUST NOT",
            Self::Should => "SHOULD",
            Self::ShouldNot => "SHOULD NOT",
            Self::Recommended => "RECOMMENDED",
            Self::May => "MAY",
        }
    }

    /// MAY only grants a permission; everything else is enforced.
    fn enforced(self) -> bool {
        self != Self::May
    }

    /// MUST and MUST NOT.
    fn mandatory(self) -> bool {
        matches!(self, Self::Must | Self::MustNot)
    }
}

/// A literal in `CheckValue` / `CheckNotValue`.
#[derive(Debug, Clone)]
enum Literal {
    Null,
    Text(String),
    Number(Dec),
}

/// A parsed check-function tree.
#[derive(Debug, Clone)]
enum Check {
    And(Vec<Check>),
    Or(Vec<Check>),
    ColumnPresent(String),
    DistinctCount {
        a: String,
        b: String,
        expected: usize,
    },
    FormatKeyValue(String),
    /// `CheckValue` (`negate: false`) and `CheckNotValue` (`negate: true`).
    Value {
        column: String,
        literal: Literal,
        negate: bool,
    },
    /// `CheckSameValue` (`negate: false`) and `CheckNotSameValue` (`negate: true`).
    SameValue {
        a: String,
        b: String,
        negate: bool,
    },
    DecimalValue(String),
    GreaterOrEqual {
        column: String,
        bound: Dec,
    },
    ModelRule(String),
    NationalCurrency(String),
    TypeDecimal(String),
    TypeString(String),
    TypeDateTime(String),
    FormatDateTime(String),
    FormatNumeric(String),
    FormatString(String),
    FormatUnit(String),
    FormatCurrency(String),
    /// `ColumnByColumnEqualsColumnValue`: `a × b = result`.
    Product {
        a: String,
        b: String,
        result: String,
    },
}

impl Check {
    /// Column names the tree reads, in order of appearance.
    fn columns(&self, out: &mut Vec<String>) {
        let names: Vec<&String> = match self {
            Self::And(items) | Self::Or(items) => {
                for item in items {
                    item.columns(out);
                }
                Vec::new()
            }
            Self::ModelRule(_) => Vec::new(),
            Self::DistinctCount { a, b, .. } | Self::SameValue { a, b, .. } => vec![a, b],
            Self::Product { a, b, result } => vec![a, b, result],
            Self::Value { column, .. } | Self::GreaterOrEqual { column, .. } => vec![column],
            Self::ColumnPresent(c)
            | Self::FormatKeyValue(c)
            | Self::DecimalValue(c)
            | Self::NationalCurrency(c)
            | Self::TypeDecimal(c)
            | Self::TypeString(c)
            | Self::TypeDateTime(c)
            | Self::FormatDateTime(c)
            | Self::FormatNumeric(c)
            | Self::FormatString(c)
            | Self::FormatUnit(c)
            | Self::FormatCurrency(c) => vec![c],
        };
        for name in names {
            if !out.contains(name) {
                out.push(name.clone());
            }
        }
    }
}

fn is_empty_tree(v: &Value) -> bool {
    v.is_null() || v.as_object().is_some_and(serde_json::Map::is_empty)
}

/// Parses a check-function tree, validating names and arguments against `CheckFunctions`.
fn parse_check(v: &Value, functions: &BTreeMap<String, FunctionDecl>) -> Result<Check, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("check function must be an object: {v}"))?;
    let name = obj
        .get("CheckFunction")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing CheckFunction in {v}"))?;
    let decl = functions
        .get(name)
        .ok_or_else(|| format!("unknown check function {name:?} in {v}"))?;
    for key in obj.keys() {
        let declared = key == "CheckFunction" || decl.args.iter().any(|a| a == key);
        // TypeDateTime(ChargePeriodStart) carries a redundant ExpectedType "DateTime".
        let redundant = name == "TypeDateTime"
            && key == "ExpectedType"
            && obj.get(key).and_then(Value::as_str) == Some("DateTime");
        if !declared && !redundant {
            return Err(format!("{name}: unexpected argument {key:?} in {v}"));
        }
    }
    let arg = |a: &str| -> Result<&Value, String> {
        obj.get(a)
            .ok_or_else(|| format!("{name}: missing argument {a:?} in {v}"))
    };
    let text = |a: &str| -> Result<String, String> {
        arg(a)?
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{name}: argument {a:?} must be a string in {v}"))
    };
    let items = || -> Result<Vec<Check>, String> {
        let list = arg("Items")?
            .as_array()
            .ok_or_else(|| format!("{name}: Items must be an array in {v}"))?;
        if list.is_empty() {
            return Err(format!("{name}: Items is empty in {v}"));
        }
        list.iter()
            .map(|item| parse_check(item, functions))
            .collect()
    };
    let literal = |a: &str| -> Result<Literal, String> {
        match arg(a)? {
            Value::Null => Ok(Literal::Null),
            Value::String(s) => Ok(Literal::Text(s.clone())),
            Value::Number(n) => Dec::parse(&n.to_string())
                .map(Literal::Number)
                .ok_or_else(|| format!("{name}: number {n} out of range")),
            other => Err(format!("{name}: unsupported literal {other}")),
        }
    };
    Ok(match name {
        "AND" => Check::And(items()?),
        "OR" => Check::Or(items()?),
        "ColumnPresent" => Check::ColumnPresent(text("ColumnName")?),
        "CheckDistinctCount" => Check::DistinctCount {
            a: text("ColumnAName")?,
            b: text("ColumnBName")?,
            expected: arg("ExpectedCount")?
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| format!("{name}: ExpectedCount must be a count"))?,
        },
        "FormatKeyValue" => Check::FormatKeyValue(text("ColumnName")?),
        "CheckValue" => Check::Value {
            column: text("ColumnName")?,
            literal: literal("Value")?,
            negate: false,
        },
        "CheckNotValue" => Check::Value {
            column: text("ColumnName")?,
            literal: literal("Value")?,
            negate: true,
        },
        "CheckSameValue" => Check::SameValue {
            a: text("ColumnAName")?,
            b: text("ColumnBName")?,
            negate: false,
        },
        "CheckNotSameValue" => Check::SameValue {
            a: text("ColumnAName")?,
            b: text("ColumnBName")?,
            negate: true,
        },
        "CheckDecimalValue" => Check::DecimalValue(text("ColumnName")?),
        "CheckGreaterOrEqualThanValue" => match literal("Value")? {
            Literal::Number(bound) => Check::GreaterOrEqual {
                column: text("ColumnName")?,
                bound,
            },
            _ => return Err(format!("{name}: Value must be a number in {v}")),
        },
        "CheckModelRule" => Check::ModelRule(text("ModelRuleId")?),
        "CheckNationalCurrency" => Check::NationalCurrency(text("ColumnName")?),
        "TypeDecimal" => Check::TypeDecimal(text("ColumnName")?),
        "TypeString" => Check::TypeString(text("ColumnName")?),
        "TypeDateTime" => Check::TypeDateTime(text("ColumnName")?),
        "FormatDateTime" => Check::FormatDateTime(text("ColumnName")?),
        "FormatNumeric" => Check::FormatNumeric(text("ColumnName")?),
        "FormatString" => Check::FormatString(text("ColumnName")?),
        "FormatUnit" => Check::FormatUnit(text("ColumnName")?),
        "FormatCurrency" => Check::FormatCurrency(text("ColumnName")?),
        "ColumnByColumnEqualsColumnValue" => Check::Product {
            a: text("ColumnAName")?,
            b: text("ColumnBName")?,
            result: text("ResultColumnName")?,
        },
        other => {
            return Err(format!(
                "check function {other:?} is declared but not implemented"
            ));
        }
    })
}

fn parse_function_decls(raw: &Value) -> Result<BTreeMap<String, FunctionDecl>, String> {
    let obj = raw
        .get("CheckFunctions")
        .and_then(Value::as_object)
        .ok_or("model has no CheckFunctions object")?;
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(obj
        .iter()
        .map(|(name, decl)| {
            let decl = FunctionDecl {
                args: strings(&decl["Arguments"]),
                format_attributes: strings(&decl["FormatAttributes"]),
            };
            (name.clone(), decl)
        })
        .collect())
}

#[derive(Debug)]
struct Rule {
    id: String,
    function: String,
    reference: String,
    entity: String,
    criteria: Vec<String>,
    dynamic: bool,
    keyword: Keyword,
    must_satisfy: String,
    /// `None` for Dynamic rules (the model gives them no requirement).
    requirement: Option<Check>,
    condition: Option<Check>,
    dependencies: Vec<String>,
    /// Rules referenced through `CheckModelRule` (composites only).
    children: Vec<String>,
    /// A composite whose requirement is an OR of its children.
    or_composite: bool,
}

impl Rule {
    fn is_composite(&self) -> bool {
        self.function == "Composite"
    }
}

#[derive(Debug, Default)]
struct Model {
    rules: Vec<Rule>,
    index: HashMap<String, usize>,
    /// Rule id → composites that reference it.
    parents: HashMap<String, Vec<usize>>,
    functions: BTreeMap<String, FunctionDecl>,
    criteria: BTreeSet<String>,
    /// Every column FOCUS 1.2 defines.
    focus_columns: BTreeSet<String>,
    errors: Vec<String>,
}

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| Model::load(MODEL_JSON))
}

impl Model {
    /// Loads and validates the model; problems go to `errors` (this never panics).
    fn load(json: &str) -> Self {
        let mut m = Self::default();
        let mut raw: Value = match serde_json::from_str(json) {
            Ok(v) => v,
            Err(e) => {
                m.errors.push(format!("model JSON: {e}"));
                return m;
            }
        };
        match raw.pointer("/Details/FOCUSVersion").and_then(Value::as_str) {
            Some("1.2") => {}
            other => m
                .errors
                .push(format!("expected FOCUSVersion 1.2, found {other:?}")),
        }
        match raw
            .pointer("/ModelDatasets/CostAndUsage/ModelRules")
            .and_then(Value::as_array)
        {
            Some(roots) if roots.len() == 1 && roots[0] == "CostAndUsage-D-000-M" => {}
            other => m
                .errors
                .push(format!("unexpected CostAndUsage dataset roots {other:?}")),
        }
        m.functions = match parse_function_decls(&raw) {
            Ok(f) => f,
            Err(e) => {
                m.errors.push(e);
                return m;
            }
        };
        for name in m.functions.keys() {
            if !IMPLEMENTED_CHECK_FUNCTIONS.contains(&name.as_str()) {
                m.errors
                    .push(format!("check function {name} is not implemented"));
            }
        }
        if let Some(obj) = raw.get("ApplicabilityCriteria").and_then(Value::as_object) {
            m.criteria = obj.keys().cloned().collect();
        }
        // Apply the fixes to the raw JSON.
        for fix in MODEL_FIXES {
            let part = match fix.part {
                FixPart::Requirement => "Requirement",
                FixPart::Condition => "Condition",
            };
            let pointer = format!("/ModelRules/{}/ValidationCriteria/{part}", fix.rule);
            match (
                raw.pointer_mut(&pointer),
                serde_json::from_str::<Value>(fix.json),
            ) {
                (Some(slot), Ok(replacement)) => *slot = replacement,
                (None, _) => m.errors.push(format!("fix for unknown rule {}", fix.rule)),
                (_, Err(e)) => m.errors.push(format!("fix for {}: {e}", fix.rule)),
            }
        }
        let Some(rules) = raw.get("ModelRules").and_then(Value::as_object) else {
            m.errors.push("model has no ModelRules object".to_owned());
            return m;
        };
        for (id, r) in rules {
            match m.parse_rule(id, r) {
                Ok(rule) => {
                    if rule.entity == "Column" {
                        m.focus_columns.insert(rule.reference.clone());
                    }
                    m.index.insert(id.clone(), m.rules.len());
                    m.rules.push(rule);
                }
                Err(e) => m.errors.push(format!("{id}: {e}")),
            }
        }
        m.link();
        m.validate_supplements();
        m
    }

    fn parse_rule(&self, id: &str, r: &Value) -> Result<Rule, String> {
        let text = |key: &str| -> Result<String, String> {
            r.get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("missing {key}"))
        };
        let vc = r
            .get("ValidationCriteria")
            .ok_or("missing ValidationCriteria")?;
        let keyword_text = vc
            .get("Keyword")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let keyword = Keyword::parse(keyword_text)
            .ok_or_else(|| format!("unknown Keyword {keyword_text:?}"))?;
        let strings = |v: Option<&Value>| -> Result<Vec<String>, String> {
            v.and_then(Value::as_array)
                .ok_or("expected an array")?
                .iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| "expected a string".to_owned())
                })
                .collect()
        };
        let criteria = strings(r.get("ApplicabilityCriteria"))?;
        for c in &criteria {
            if !self.criteria.contains(c) {
                return Err(format!("unknown applicability criterion {c}"));
            }
        }
        let status = text("Status")?;
        if status != "Active" {
            return Err(format!("unsupported Status {status:?}"));
        }
        let dynamic = match text("Type")?.as_str() {
            "Static" => false,
            "Dynamic" => true,
            other => return Err(format!("unknown Type {other:?}")),
        };
        let tree = |key: &str| -> Result<Option<Check>, String> {
            let v = vc.get(key).ok_or_else(|| format!("missing {key}"))?;
            if is_empty_tree(v) {
                Ok(None)
            } else {
                parse_check(v, &self.functions)
                    .map(Some)
                    .map_err(|e| format!("{key}: {e}"))
            }
        };
        let requirement = tree("Requirement")?;
        let condition = tree("Condition")?;
        let function = text("Function")?;
        if dynamic != requirement.is_none() {
            return Err("a Dynamic rule has no requirement and a Static rule has one".to_owned());
        }
        // Composites are an AND/OR of CheckModelRule; no other rule may use CheckModelRule.
        let mut children = Vec::new();
        let mut or_composite = false;
        match (&requirement, function == "Composite") {
            (Some(Check::And(items) | Check::Or(items)), true) => {
                or_composite = matches!(requirement, Some(Check::Or(_)));
                for item in items {
                    match item {
                        Check::ModelRule(child) => children.push(child.clone()),
                        other => {
                            return Err(format!("composite item is not CheckModelRule: {other:?}"));
                        }
                    }
                }
            }
            (_, true) => return Err("a composite must be an AND/OR of CheckModelRule".to_owned()),
            (Some(req), false) if uses_model_rule(req) => {
                return Err("CheckModelRule outside a composite".to_owned());
            }
            _ => {}
        }
        if condition.as_ref().is_some_and(uses_model_rule) {
            return Err("CheckModelRule in a condition".to_owned());
        }
        Ok(Rule {
            id: id.to_owned(),
            function,
            reference: text("Reference")?,
            entity: text("EntityType")?,
            criteria,
            dynamic,
            keyword,
            must_satisfy: vc
                .get("MustSatisfy")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            requirement,
            condition,
            dependencies: strings(vc.get("Dependencies"))?,
            children,
            or_composite,
        })
    }

    /// Builds the parent map and checks that every reference resolves and that the
    /// composite graph has no cycle.
    fn link(&mut self) {
        for (idx, rule) in self.rules.iter().enumerate() {
            for child in &rule.children {
                if self.index.contains_key(child) {
                    self.parents.entry(child.clone()).or_default().push(idx);
                } else {
                    self.errors
                        .push(format!("{}: references unknown rule {child}", rule.id));
                }
            }
            for dep in &rule.dependencies {
                if !self.index.contains_key(dep) {
                    self.errors
                        .push(format!("{}: depends on unknown rule {dep}", rule.id));
                }
            }
        }
        // Cycle check: walk up from every rule; a path longer than the rule count is a cycle.
        for rule in &self.rules {
            let mut current = rule.id.as_str();
            let mut steps = 0;
            while let Some(parent) = self.parents.get(current).and_then(|p| p.first()) {
                current = &self.rules[*parent].id;
                steps += 1;
                if steps > self.rules.len() {
                    self.errors.push(format!("{}: composite cycle", rule.id));
                    self.parents.clear();
                    return;
                }
            }
        }
    }

    fn validate_supplements(&mut self) {
        for s in SUPPLEMENTS {
            match self.index.get(s.rule).map(|i| &self.rules[*i]) {
                Some(rule) if rule.dynamic => {}
                Some(_) => self
                    .errors
                    .push(format!("supplement for static rule {}", s.rule)),
                None => self
                    .errors
                    .push(format!("supplement for unknown rule {}", s.rule)),
            }
            if let SupplementCheck::Tree {
                requirement,
                condition,
            } = &s.check
            {
                for tree in std::iter::once(requirement).chain(condition) {
                    if let Err(e) = self.parse_json(tree) {
                        self.errors.push(format!("supplement {}: {e}", s.rule));
                    }
                }
            }
        }
    }

    fn parse_json(&self, json: &str) -> Result<Check, String> {
        let v: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        parse_check(&v, &self.functions)
    }

    fn rule(&self, id: &str) -> Option<(usize, &Rule)> {
        self.index.get(id).map(|&i| (i, &self.rules[i]))
    }
}

fn uses_model_rule(check: &Check) -> bool {
    match check {
        Check::ModelRule(_) => true,
        Check::And(items) | Check::Or(items) => items.iter().any(uses_model_rule),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

/// SQL-style three-valued logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tri {
    True,
    False,
    Unknown,
}

impl Tri {
    fn of(b: bool) -> Self {
        if b { Self::True } else { Self::False }
    }

    fn and(self, other: Self) -> Self {
        match (self, other) {
            (Self::False, _) | (_, Self::False) => Self::False,
            (Self::True, Self::True) => Self::True,
            _ => Self::Unknown,
        }
    }

    fn or(self, other: Self) -> Self {
        match (self, other) {
            (Self::True, _) | (_, Self::True) => Self::True,
            (Self::False, Self::False) => Self::False,
            _ => Self::Unknown,
        }
    }
}

/// Why a rule was not evaluated.
#[derive(Debug, Clone)]
struct Reason {
    category: &'static str,
    detail: String,
}

impl Reason {
    fn new(category: &'static str, detail: impl Into<String>) -> Self {
        Self {
            category,
            detail: detail.into(),
        }
    }

    fn text(&self) -> String {
        format!("{}: {}", self.category, self.detail)
    }
}

const NOT_APPLICABLE: &str = "not applicable";
const COLUMN_ABSENT: &str = "column absent";
const OPTIONAL: &str = "optional";
const DYNAMIC: &str = "dynamic";
const ATTRIBUTE: &str = "attribute";
const MODEL_BUG: &str = "model bug";
const NOTHING_CHECKED: &str = "composite";

/// The evaluation of one rule: per data row, `None` when the row is out of the rule's scope,
/// else whether the row satisfies it.
#[derive(Debug, Clone)]
struct RowResult {
    rows: Vec<Option<bool>>,
    dataset_ok: bool,
    detail: String,
    /// Whether a failure of this result violates a MUST / MUST NOT.
    mandatory: bool,
}

impl RowResult {
    fn failing_rows(&self) -> Vec<usize> {
        self.rows
            .iter()
            .enumerate()
            .filter(|(_, ok)| **ok == Some(false))
            .map(|(i, _)| i + 1)
            .collect()
    }

    fn failed(&self) -> bool {
        !self.dataset_ok || self.rows.contains(&Some(false))
    }
}

#[derive(Debug, Clone)]
enum Outcome {
    Checked(RowResult),
    Skipped(Reason),
    Error(String),
}

struct Engine<'a> {
    model: &'a Model,
    table: &'a Table,
    claimed: HashSet<String>,
    gates: HashMap<usize, Option<Reason>>,
    gating: HashSet<usize>,
    outcomes: HashMap<usize, Outcome>,
}

impl<'a> Engine<'a> {
    fn new(model: &'a Model, table: &'a Table, criteria: &[&str]) -> Self {
        Self {
            model,
            table,
            claimed: criteria.iter().map(|c| (*c).to_owned()).collect(),
            gates: HashMap::new(),
            gating: HashSet::new(),
            outcomes: HashMap::new(),
        }
    }

    fn n(&self) -> usize {
        self.table.rows.len()
    }

    /// `None` when the rule applies to this file; otherwise why not.
    fn gate(&mut self, idx: usize) -> Option<Reason> {
        if let Some(g) = self.gates.get(&idx) {
            return g.clone();
        }
        if !self.gating.insert(idx) {
            return None; // a dependency cycle: do not let it gate anything
        }
        let g = self.compute_gate(idx);
        self.gating.remove(&idx);
        self.gates.insert(idx, g.clone());
        g
    }

    fn compute_gate(&mut self, idx: usize) -> Option<Reason> {
        let model = self.model;
        let rule = &model.rules[idx];
        let missing: Vec<&str> = rule
            .criteria
            .iter()
            .filter(|c| !self.claimed.contains(*c))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Some(Reason::new(
                NOT_APPLICABLE,
                format!("needs {}", missing.join(" and ")),
            ));
        }
        // Applicable only if at least one referencing composite is.
        let parents = model
            .parents
            .get(&rule.id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut first_reason = None;
        for &p in parents {
            match self.gate(p) {
                None => {
                    first_reason = None;
                    break;
                }
                Some(r) => {
                    first_reason.get_or_insert(r);
                }
            }
        }
        if first_reason.is_some() {
            return first_reason;
        }
        if rule.entity == "Column" && self.table.column(&rule.reference).is_none() {
            return Some(Reason::new(
                COLUMN_ABSENT,
                format!("{} is not in the file", rule.reference),
            ));
        }
        // Dependencies on another column family's rules: that column must be applicable too.
        for dep in &rule.dependencies {
            let Some((dep_idx, dep_rule)) = model.rule(dep) else {
                continue;
            };
            if dep_rule.entity != "Column"
                || dep_rule.reference == rule.reference
                || rule.children.contains(dep)
            {
                continue;
            }
            if let Some(r) = self.gate(dep_idx) {
                return Some(Reason::new(r.category, format!("{} (via {dep})", r.detail)));
            }
        }
        None
    }

    /// The composites above `idx` (root first), following the first applicable parent.
    fn ancestors(&mut self, idx: usize) -> Vec<usize> {
        let model = self.model;
        let parents = model
            .parents
            .get(&model.rules[idx].id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let Some(&first) = parents.first() else {
            return Vec::new();
        };
        let mut chosen = first;
        for &p in parents {
            if self.gate(p).is_none() {
                chosen = p;
                break;
            }
        }
        let mut chain = self.ancestors(chosen);
        chain.push(chosen);
        chain
    }

    fn outcome(&mut self, idx: usize) -> Outcome {
        if let Some(o) = self.outcomes.get(&idx) {
            return o.clone();
        }
        let o = self.compute_outcome(idx);
        self.outcomes.insert(idx, o.clone());
        o
    }

    fn compute_outcome(&mut self, idx: usize) -> Outcome {
        let model = self.model;
        let rule = &model.rules[idx];
        if let Some(reason) = self.gate(idx) {
            return Outcome::Skipped(reason);
        }
        if let Some((_, why)) = STANDALONE_SKIPS.iter().find(|(id, _)| *id == rule.id) {
            return Outcome::Skipped(Reason::new(MODEL_BUG, *why));
        }
        if !rule.keyword.enforced() {
            return Outcome::Skipped(Reason::new(
                OPTIONAL,
                "MAY grants a permission; there is nothing to enforce",
            ));
        }
        if rule.is_composite() {
            return self.composite(idx);
        }
        match self.evaluate(idx) {
            Ok(Some(result)) => Outcome::Checked(RowResult {
                mandatory: rule.keyword.mandatory(),
                ..result
            }),
            Ok(None) => Outcome::Skipped(self.dynamic_reason(idx)),
            Err(e) => Outcome::Error(e),
        }
    }

    /// Evaluates a non-composite rule regardless of keyword; `None` for an undecidable
    /// Dynamic rule.
    fn evaluate(&mut self, idx: usize) -> Result<Option<RowResult>, String> {
        let model = self.model;
        let rule = &model.rules[idx];
        if let Some(req) = &rule.requirement {
            return self.eval_rule(idx, req, rule.condition.as_ref()).map(Some);
        }
        let Some(supplement) = SUPPLEMENTS.iter().find(|s| s.rule == rule.id) else {
            return Ok(None);
        };
        let n = self.n();
        let table = self.table;
        let dataset = |problems: Vec<String>| RowResult {
            rows: vec![None; n],
            dataset_ok: problems.is_empty(),
            detail: problems.join("; "),
            mandatory: true,
        };
        let focus = |name: &str| model.focus_columns.contains(name);
        Ok(Some(match &supplement.check {
            SupplementCheck::Tree {
                requirement,
                condition,
            } => {
                let req = model.parse_json(requirement)?;
                let cond = match condition {
                    Some(c) => Some(model.parse_json(c)?),
                    None => rule.condition.clone(),
                };
                self.eval_rule(idx, &req, cond.as_ref())?
            }
            SupplementCheck::CustomColumnsPrefixed => dataset(
                table
                    .header
                    .iter()
                    .filter(|h| !focus(h) && !h.starts_with("x_"))
                    .map(|h| format!("column {h:?} is neither a FOCUS column nor prefixed x_"))
                    .collect(),
            ),
            SupplementCheck::ColumnIdLength => dataset(
                table
                    .header
                    .iter()
                    .filter(|h| h.chars().count() > 50)
                    .map(|h| format!("column id {h:?} is longer than 50 characters"))
                    .collect(),
            ),
            SupplementCheck::FocusColumnsFirst => {
                let first_custom = table.header.iter().position(|h| !focus(h));
                let late: Vec<String> = match first_custom {
                    Some(pos) => table.header[pos..]
                        .iter()
                        .filter(|h| focus(h))
                        .map(|h| {
                            format!(
                                "FOCUS column {h} comes after custom column {}",
                                table.header[pos]
                            )
                        })
                        .collect(),
                    None => Vec::new(),
                };
                dataset(late)
            }
            SupplementCheck::NoEmptyStrings => {
                let scope = self.scope(idx, None)?;
                let focus_cols: Vec<usize> = (0..table.header.len())
                    .filter(|&c| focus(&table.header[c]))
                    .collect();
                let verdict: Vec<Tri> = table
                    .rows
                    .iter()
                    .map(|row| {
                        Tri::of(
                            !focus_cols
                                .iter()
                                .any(|&c| row[c].quoted && row[c].text.is_empty()),
                        )
                    })
                    .collect();
                let mut result = rows_result(&scope, &verdict);
                result.detail = first_failures(&result, |r| {
                    let cols: Vec<&str> = focus_cols
                        .iter()
                        .filter(|&&c| table.rows[r][c].quoted && table.rows[r][c].text.is_empty())
                        .map(|&c| table.header[c].as_str())
                        .collect();
                    format!("empty string in {}", cols.join(", "))
                });
                result
            }
            SupplementCheck::EndAfterStart { start, end } => {
                let scope = self.scope(idx, None)?;
                let verdict: Vec<Tri> = (0..n)
                    .map(|r| {
                        let s = table.value(r, start).and_then(formats::parse_datetime);
                        let e = table.value(r, end).and_then(formats::parse_datetime);
                        match (s, e) {
                            (Some(s), Some(e)) => Tri::of(e.instant > s.instant),
                            _ => Tri::Unknown,
                        }
                    })
                    .collect();
                let mut result = rows_result(&scope, &verdict);
                result.detail = first_failures(&result, |r| {
                    format!(
                        "{start}={} {end}={}",
                        table.show(r, start),
                        table.show(r, end)
                    )
                });
                result
            }
        }))
    }

    /// The rows a rule applies to: its own condition and those of every composite above it.
    fn scope(&mut self, idx: usize, own: Option<&Check>) -> Result<Vec<bool>, String> {
        let model = self.model;
        let n = self.n();
        let everything = vec![true; n];
        let mut scope = vec![true; n];
        let mut conditions: Vec<&Check> = self
            .ancestors(idx)
            .into_iter()
            .filter_map(|a| model.rules[a].condition.as_ref())
            .collect();
        conditions.extend(own);
        for cond in conditions {
            for (s, t) in scope.iter_mut().zip(self.eval(cond, &everything)?) {
                *s &= t == Tri::True;
            }
        }
        Ok(scope)
    }

    fn eval_rule(
        &mut self,
        idx: usize,
        req: &Check,
        own: Option<&Check>,
    ) -> Result<RowResult, String> {
        if let Check::ColumnPresent(column) = req {
            let ok = self.table.column(column).is_some();
            return Ok(RowResult {
                rows: vec![None; self.n()],
                dataset_ok: ok,
                detail: if ok {
                    String::new()
                } else {
                    format!("column {column} is missing")
                },
                mandatory: true,
            });
        }
        let scope = self.scope(idx, own)?;
        let verdict = self.eval(req, &scope)?;
        let mut result = rows_result(&scope, &verdict);
        let mut columns = Vec::new();
        req.columns(&mut columns);
        if let Some(cond) = own {
            cond.columns(&mut columns);
        }
        let table = self.table;
        result.detail = first_failures(&result, |r| {
            columns
                .iter()
                .map(|c| format!("{c}={}", table.show(r, c)))
                .collect::<Vec<_>>()
                .join(" ")
        });
        Ok(result)
    }

    fn composite(&mut self, idx: usize) -> Outcome {
        let model = self.model;
        let rule = &model.rules[idx];
        let n = self.n();
        let mut results: Vec<(&str, RowResult)> = Vec::new();
        for child in &rule.children {
            let Some((cidx, child_rule)) = model.rule(child) else {
                return Outcome::Error(format!("unknown child {child}"));
            };
            if rule.or_composite {
                // Alternatives are evaluated as such, whatever their own keyword or skip status.
                if self.gate(cidx).is_some() {
                    continue;
                }
                let evaluated = if child_rule.is_composite() {
                    match self.outcome(cidx) {
                        Outcome::Checked(r) => Ok(Some(r)),
                        Outcome::Skipped(_) => Ok(None),
                        Outcome::Error(e) => Err(e),
                    }
                } else {
                    self.evaluate(cidx)
                };
                match evaluated {
                    Ok(Some(r)) => results.push((child.as_str(), r)),
                    Ok(None) => {
                        return Outcome::Skipped(Reason::new(
                            NOTHING_CHECKED,
                            format!("the alternative {child} cannot be decided"),
                        ));
                    }
                    Err(e) => return Outcome::Error(e),
                }
            } else {
                match self.outcome(cidx) {
                    Outcome::Checked(r) => results.push((child.as_str(), r)),
                    Outcome::Skipped(_) => {}
                    Outcome::Error(e) => return Outcome::Error(e),
                }
            }
        }
        if results.is_empty() {
            return Outcome::Skipped(Reason::new(NOTHING_CHECKED, "none of its rules is checked"));
        }
        let rows = (0..n)
            .map(|r| {
                let verdicts = results.iter().filter_map(|(_, res)| res.rows[r]);
                if rule.or_composite {
                    // Satisfied by an alternative that applies to the row and holds there.
                    verdicts.reduce(|a, b| a || b)
                } else {
                    verdicts.reduce(|a, b| a && b)
                }
            })
            .collect();
        let dataset_ok = if rule.or_composite {
            results.iter().any(|(_, r)| r.dataset_ok)
        } else {
            results.iter().all(|(_, r)| r.dataset_ok)
        };
        let failing: Vec<&(&str, RowResult)> = results.iter().filter(|(_, r)| r.failed()).collect();
        // An OR fails as a whole; an AND is as severe as its worst failing rule.
        let mandatory = if rule.or_composite {
            rule.keyword.mandatory()
        } else {
            failing.iter().any(|(_, r)| r.mandatory)
        };
        let ids: Vec<&str> = failing.iter().map(|(id, _)| *id).collect();
        Outcome::Checked(RowResult {
            rows,
            dataset_ok,
            detail: format!("failing: {}", ids.join(", ")),
            mandatory,
        })
    }

    fn dynamic_reason(&self, idx: usize) -> Reason {
        let model = self.model;
        let rule = &model.rules[idx];
        if rule.entity == "Attribute" {
            // The attribute's top composite, e.g. DateTimeFormat-A-000-M.
            let mut top = idx;
            while let Some(&p) = model
                .parents
                .get(&model.rules[top].id)
                .and_then(|p| p.first())
            {
                top = p;
            }
            let top_id = &model.rules[top].id;
            let enforcing: Vec<&str> = model
                .functions
                .iter()
                .filter(|(_, d)| d.format_attributes.contains(top_id))
                .map(|(name, _)| name.as_str())
                .collect();
            if !enforcing.is_empty() {
                return Reason::new(
                    ATTRIBUTE,
                    format!(
                        "not decidable on its own; {} (FormatAttributes {top_id}) enforces its \
                         decidable part wherever a column rule uses it",
                        enforcing.join(", ")
                    ),
                );
            }
        }
        Reason::new(
            DYNAMIC,
            "not decidable from one file (needs provider knowledge, invoices or history); the \
             model gives no machine-readable requirement",
        )
    }

    /// Evaluates a check-function tree on every row; `scope` marks the rows the rule applies to
    /// (needed by CheckDistinctCount, which groups the rows in scope).
    fn eval(&self, check: &Check, scope: &[bool]) -> Result<Vec<Tri>, String> {
        let t = self.table;
        let n = self.n();
        // Per-row verdict over one column's non-null values.
        let per_value = |column: &str, f: &dyn Fn(&str) -> bool| -> Vec<Tri> {
            (0..n)
                .map(|r| t.value(r, column).map_or(Tri::Unknown, |v| Tri::of(f(v))))
                .collect()
        };
        Ok(match check {
            Check::And(items) | Check::Or(items) => {
                let is_and = matches!(check, Check::And(_));
                let mut acc: Option<Vec<Tri>> = None;
                for item in items {
                    let v = self.eval(item, scope)?;
                    acc = Some(match acc {
                        None => v,
                        Some(a) => a
                            .into_iter()
                            .zip(v)
                            .map(|(x, y)| if is_and { x.and(y) } else { x.or(y) })
                            .collect(),
                    });
                }
                acc.unwrap_or_else(|| vec![Tri::Unknown; n])
            }
            Check::ColumnPresent(column) => vec![Tri::of(t.column(column).is_some()); n],
            Check::ModelRule(id) => {
                return Err(format!("CheckModelRule({id}) outside a composite"));
            }
            Check::DistinctCount { a, b, expected } => {
                let mut groups: HashMap<&str, HashSet<&str>> = HashMap::new();
                for r in (0..n).filter(|&r| scope[r]) {
                    if let Some(key) = t.value(r, a) {
                        let set = groups.entry(key).or_default();
                        set.extend(t.value(r, b));
                    }
                }
                (0..n)
                    .map(|r| match t.value(r, a) {
                        Some(key) if scope[r] => {
                            Tri::of(groups.get(key).map_or(0, HashSet::len) == *expected)
                        }
                        _ => Tri::Unknown,
                    })
                    .collect()
            }
            Check::FormatKeyValue(c) => per_value(c, &|v| formats::key_value_problem(v).is_none()),
            Check::Value {
                column,
                literal,
                negate,
            } => (0..n)
                .map(|r| {
                    let value = t.value(r, column);
                    match (literal, value) {
                        (Literal::Null, v) => Tri::of(v.is_none() != *negate),
                        // "X is not v" includes a null X; "X is v" is unknown for a null X.
                        (_, None) => {
                            if *negate {
                                Tri::True
                            } else {
                                Tri::Unknown
                            }
                        }
                        (Literal::Text(s), Some(v)) => Tri::of((v == s) != *negate),
                        (Literal::Number(d), Some(v)) => {
                            let equal = Dec::parse(v)
                                .is_some_and(|x| x.cmp_exact(d) == Some(Ordering::Equal));
                            Tri::of(equal != *negate)
                        }
                    }
                })
                .collect(),
            Check::SameValue { a, b, negate } => (0..n)
                .map(|r| match (t.value(r, a), t.value(r, b)) {
                    (Some(x), Some(y)) => Tri::of((x == y) != *negate),
                    _ => Tri::Unknown,
                })
                .collect(),
            Check::DecimalValue(c) => per_value(c, &|v| Dec::parse(v).is_some()),
            Check::GreaterOrEqual { column, bound } => per_value(column, &|v| {
                Dec::parse(v)
                    .and_then(|x| x.cmp_exact(bound))
                    .is_some_and(|o| o != Ordering::Less)
            }),
            Check::NationalCurrency(c) => per_value(c, &formats::is_national_currency),
            Check::FormatCurrency(c) => {
                let virtual_ok = self.claimed.contains("VIRTUAL_CURRENCY_SUPPORTED");
                per_value(c, &|v| {
                    formats::is_national_currency(v) || (virtual_ok && formats::is_focus_string(v))
                })
            }
            Check::TypeDecimal(c) => {
                // Validator quirk: an all-integer column is read as an integer column.
                let has_point = (0..n)
                    .filter_map(|r| t.value(r, c))
                    .any(|v| v.contains(['.', 'e', 'E']));
                per_value(c, &|v| has_point && Dec::parse(v).is_some())
            }
            Check::TypeString(c) => per_value(c, &|_| true),
            Check::TypeDateTime(c) => per_value(c, &|v| formats::parse_datetime(v).is_some()),
            Check::FormatDateTime(c) => per_value(c, &formats::is_focus_datetime),
            Check::FormatNumeric(c) => per_value(c, &formats::is_numeric_format),
            Check::FormatString(c) => per_value(c, &formats::is_focus_string),
            Check::FormatUnit(c) => per_value(c, &formats::is_unit),
            Check::Product { a, b, result } => (0..n)
                .map(
                    |r| match (t.value(r, a), t.value(r, b), t.value(r, result)) {
                        (Some(x), Some(y), Some(z)) => {
                            let product = Dec::parse(x)
                                .zip(Dec::parse(y))
                                .and_then(|(x, y)| x.mul(&y));
                            let expected = Dec::parse(z);
                            Tri::of(
                                product
                                    .zip(expected)
                                    .and_then(|(p, e)| p.cmp_exact(&e))
                                    .is_some_and(|o| o == Ordering::Equal),
                            )
                        }
                        _ => Tri::Unknown,
                    },
                )
                .collect(),
        })
    }
}

/// A requirement fails on a row in scope where it is false.
fn rows_result(scope: &[bool], verdict: &[Tri]) -> RowResult {
    RowResult {
        rows: scope
            .iter()
            .zip(verdict)
            .map(|(s, v)| s.then_some(*v != Tri::False))
            .collect(),
        dataset_ok: true,
        detail: String::new(),
        mandatory: true,
    }
}

/// Describes the first three failing rows with `describe(row index)`.
fn first_failures(result: &RowResult, describe: impl Fn(usize) -> String) -> String {
    result
        .failing_rows()
        .into_iter()
        .take(3)
        .map(|row| format!("row {row}: {}", describe(row - 1)))
        .collect::<Vec<_>>()
        .join("; ")
}

// ---------------------------------------------------------------------------------------------
// CSV (RFC 4180, recording which cells were quoted)
// ---------------------------------------------------------------------------------------------

pub(crate) mod csv {
    use std::collections::HashMap;

    /// One field; `quoted` tells a quoted `""` (empty string) from an empty field (null).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct Cell {
        pub(crate) text: String,
        pub(crate) quoted: bool,
    }

    impl Cell {
        pub(crate) fn plain(text: &str) -> Self {
            Self {
                text: text.to_owned(),
                quoted: false,
            }
        }

        pub(crate) fn quoted(text: &str) -> Self {
            Self {
                text: text.to_owned(),
                quoted: true,
            }
        }

        /// An unquoted empty field or the unquoted literal `NULL`.
        pub(crate) fn is_null(&self) -> bool {
            !self.quoted && (self.text.is_empty() || self.text == "NULL")
        }
    }

    /// A header row and data rows of equal width.
    #[derive(Debug)]
    pub(crate) struct Table {
        pub(crate) header: Vec<String>,
        pub(crate) rows: Vec<Vec<Cell>>,
        index: HashMap<String, usize>,
    }

    impl Table {
        pub(crate) fn column(&self, name: &str) -> Option<usize> {
            self.index.get(name).copied()
        }

        /// The non-null value of `column` in data row `row` (0-based); `None` for a null cell
        /// or a column that is not in the file.
        pub(crate) fn value(&self, row: usize, column: &str) -> Option<&str> {
            let cell = &self.rows[row][self.column(column)?];
            (!cell.is_null()).then_some(cell.text.as_str())
        }

        /// A cell for messages: `null`, or the value in quotes.
        pub(crate) fn show(&self, row: usize, column: &str) -> String {
            match self.value(row, column) {
                None => "null".to_owned(),
                Some(v) => format!("{v:?}"),
            }
        }
    }

    /// Splits RFC 4180 text into records. Accepts CRLF and LF line ends, a missing final line
    /// end and a UTF-8 byte-order mark; rejects a bare CR, a quote inside an unquoted field,
    /// text after a closing quote and an unterminated quoted field.
    pub(crate) fn parse_records(text: &str) -> Result<Vec<Vec<Cell>>, String> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut records = Vec::new();
        if text.is_empty() {
            return Ok(records);
        }
        let mut record = Vec::new();
        let mut chars = text.chars().peekable();
        let mut line = 1usize;
        loop {
            let mut field = String::new();
            let quoted = chars.peek() == Some(&'"');
            if quoted {
                chars.next();
                loop {
                    match chars.next() {
                        None => return Err(format!("line {line}: unterminated quoted field")),
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            field.push(c);
                        }
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    match c {
                        ',' | '\n' | '\r' => break,
                        '"' => return Err(format!("line {line}: quote inside an unquoted field")),
                        _ => {
                            field.push(c);
                            chars.next();
                        }
                    }
                }
            }
            record.push(Cell {
                text: field,
                quoted,
            });
            match chars.next() {
                Some(',') => continue,
                Some('\r') if chars.peek() == Some(&'\n') => {
                    chars.next();
                }
                Some('\n') => {}
                None => {
                    records.push(record);
                    break;
                }
                Some('\r') => return Err(format!("line {line}: bare CR")),
                Some(c) => return Err(format!("line {line}: {c:?} after a closing quote")),
            }
            records.push(std::mem::take(&mut record));
            line += 1;
            if chars.peek().is_none() {
                break;
            }
        }
        Ok(records)
    }

    /// Parses a header row plus data rows; every row must have the header's width and the
    /// column names must be unique and non-empty.
    pub(crate) fn parse_table(text: &str) -> Result<Table, String> {
        let mut records = parse_records(text)?.into_iter();
        let header: Vec<String> = records
            .next()
            .ok_or("no header row")?
            .into_iter()
            .map(|c| c.text)
            .collect();
        let mut index = HashMap::new();
        for (i, name) in header.iter().enumerate() {
            if name.is_empty() {
                return Err(format!("header column {} has no name", i + 1));
            }
            if index.insert(name.clone(), i).is_some() {
                return Err(format!("duplicate column {name}"));
            }
        }
        let rows: Vec<Vec<Cell>> = records.collect();
        for (i, row) in rows.iter().enumerate() {
            if row.len() != header.len() {
                return Err(format!(
                    "data row {} has {} fields, the header has {}",
                    i + 1,
                    row.len(),
                    header.len()
                ));
            }
        }
        Ok(Table {
            header,
            rows,
            index,
        })
    }

    /// Writes records back (quoted cells quoted, quotes doubled; LF line ends).
    pub(crate) fn write_records(records: &[Vec<Cell>]) -> String {
        let mut out = String::new();
        for record in records {
            let fields: Vec<String> = record
                .iter()
                .map(|c| {
                    if c.quoted {
                        format!("\"{}\"", c.text.replace('"', "\"\""))
                    } else {
                        c.text.clone()
                    }
                })
                .collect();
            out.push_str(&fields.join(","));
            out.push('\n');
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Exact decimals
// ---------------------------------------------------------------------------------------------

pub(crate) mod decimal {
    use std::cmp::Ordering;

    /// `mantissa × 10^-scale`, normalised (no trailing zeros in the mantissa when scale > 0).
    /// Values that do not fit an `i128` mantissa (about 38 significant digits) are rejected.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) struct Dec {
        mantissa: i128,
        scale: u32,
    }

    impl Dec {
        /// Parses `[+-]digits[.digits][(e|E)[+-]digits]` (also `.5` and `5.`); the lenient
        /// reading of a number, as a CSV type sniffer does. FOCUS's stricter NumericFormat is
        /// [`super::formats::is_numeric_format`].
        pub(crate) fn parse(s: &str) -> Option<Self> {
            let (negative, rest) = match s.as_bytes().first()? {
                b'-' => (true, &s[1..]),
                b'+' => (false, &s[1..]),
                _ => (false, s),
            };
            let (number, exponent) = match rest.find(['e', 'E']) {
                Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                None => (rest, None),
            };
            let (int, frac) = number.split_once('.').unwrap_or((number, ""));
            if int.is_empty() && frac.is_empty() {
                return None;
            }
            let mut mantissa: i128 = 0;
            for b in int.bytes().chain(frac.bytes()) {
                if !b.is_ascii_digit() {
                    return None;
                }
                mantissa = mantissa
                    .checked_mul(10)?
                    .checked_add(i128::from(b - b'0'))?;
            }
            let mut scale = i64::try_from(frac.len()).ok()?;
            if let Some(exp) = exponent {
                let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if digits.is_empty()
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                    || digits.len() > 4
                {
                    return None;
                }
                let e: i64 = digits.parse().ok()?;
                scale -= if exp.starts_with('-') { -e } else { e };
            }
            if scale < 0 {
                mantissa =
                    mantissa.checked_mul(10i128.checked_pow(u32::try_from(-scale).ok()?)?)?;
                scale = 0;
            }
            if negative {
                mantissa = -mantissa;
            }
            Some(
                Self {
                    mantissa,
                    scale: u32::try_from(scale).ok()?,
                }
                .normalised(),
            )
        }

        fn normalised(mut self) -> Self {
            while self.scale > 0 && self.mantissa % 10 == 0 {
                self.mantissa /= 10;
                self.scale -= 1;
            }
            if self.mantissa == 0 {
                self.scale = 0;
            }
            self
        }

        /// The exact product, or `None` on overflow.
        pub(crate) fn mul(&self, other: &Self) -> Option<Self> {
            Some(
                Self {
                    mantissa: self.mantissa.checked_mul(other.mantissa)?,
                    scale: self.scale.checked_add(other.scale)?,
                }
                .normalised(),
            )
        }

        /// Exact comparison, or `None` on overflow.
        pub(crate) fn cmp_exact(&self, other: &Self) -> Option<Ordering> {
            let scale = self.scale.max(other.scale);
            let widen = |d: &Self| d.mantissa.checked_mul(10i128.checked_pow(scale - d.scale)?);
            Some(widen(self)?.cmp(&widen(other)?))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// FOCUS value formats
// ---------------------------------------------------------------------------------------------

pub(crate) mod formats {
    use std::collections::HashSet;

    use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
    use serde_json::Value;

    /// FOCUS NumericFormat: an optional `-`, digits, an optional `.digits` fraction and an
    /// optional exponent `E`/`e` whose sign, if any, is `-` (no `+`, no thousands separators,
    /// no currency symbols or units, no whitespace).
    pub(crate) fn is_numeric_format(s: &str) -> bool {
        let b = s.as_bytes();
        let mut i = usize::from(b.first() == Some(&b'-'));
        let digits = |i: &mut usize| {
            let start = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i > start
        };
        if !digits(&mut i) {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            if !digits(&mut i) {
                return false;
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if b.get(i) == Some(&b'-') {
                i += 1;
            }
            if !digits(&mut i) {
                return false;
            }
        }
        i == b.len()
    }

    /// A parsed date-time.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct DateTime {
        /// Nanoseconds since 1970-01-01T00:00:00Z.
        pub(crate) instant: i128,
        /// Ends with `Z` or `+00:00`.
        pub(crate) utc: bool,
    }

    /// `YYYY-MM-DD(T| )HH:MM:SS[.f{1,9}][Z|±HH:MM]` with a valid calendar date and time.
    pub(crate) fn parse_datetime(s: &str) -> Option<DateTime> {
        let b = s.as_bytes();
        let num = |from: usize, to: usize| -> Option<i64> {
            let part = b.get(from..to)?;
            part.iter()
                .all(u8::is_ascii_digit)
                .then(|| part.iter().fold(0, |acc, d| acc * 10 + i64::from(d - b'0')))
        };
        let sep = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
        if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"T ") && sep(13, b":") && sep(16, b":")) {
            return None;
        }
        let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
        let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }
        let mut i = 19;
        let mut nanos: i128 = 0;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            let len = i - start;
            if len == 0 || len > 9 {
                return None;
            }
            nanos = i128::from(num(start, i)?) * 10i128.pow(u32::try_from(9 - len).ok()?);
        }
        let (utc, offset_minutes) = match b.get(i) {
            None => (false, 0),
            Some(b'Z') => {
                i += 1;
                (true, 0)
            }
            Some(&sign @ (b'+' | b'-')) => {
                if !sep(i + 3, b":") {
                    return None;
                }
                let (h, m) = (num(i + 1, i + 3)?, num(i + 4, i + 6)?);
                if h > 23 || m > 59 {
                    return None;
                }
                i += 6;
                let offset = if sign == b'-' {
                    -(h * 60 + m)
                } else {
                    h * 60 + m
                };
                (sign == b'+' && offset == 0, offset)
            }
            Some(_) => return None,
        };
        if i != b.len() {
            return None;
        }
        let seconds =
            days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second
                - offset_minutes * 60;
        Some(DateTime {
            instant: i128::from(seconds) * 1_000_000_000 + nanos,
            utc,
        })
    }

    /// FormatDateTime: a date-time in UTC (`Z` or `+00:00`); a date alone fails.
    pub(crate) fn is_focus_datetime(s: &str) -> bool {
        parse_datetime(s).is_some_and(|d| d.utc)
    }

    fn days_in_month(year: i64, month: i64) -> i64 {
        match month {
            4 | 6 | 9 | 11 => 30,
            2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
            2 => 28,
            _ => 31,
        }
    }

    /// Days since 1970-01-01 (proleptic Gregorian).
    fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (month + 9) % 12;
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    const DATA_SIZE_UNITS: &[&str] = &[
        "b", "Kb", "Mb", "Gb", "Tb", "Pb", "Eb", "B", "KB", "MB", "GB", "TB", "PB", "EB", "Kib",
        "Mib", "Gib", "Tib", "Pib", "Eib", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB",
    ];
    const TIME_UNITS: &[&str] = &[
        "Year",
        "Years",
        "Month",
        "Months",
        "Day",
        "Days",
        "Hour",
        "Hours",
        "Minute",
        "Minutes",
        "Second",
        "Seconds",
        "Millisecond",
        "Milliseconds",
        "Microsecond",
        "Microseconds",
    ];
    const COUNT_UNITS: &[&str] = &[
        "Count",
        "Counts",
        "Unit",
        "Units",
        "Request",
        "Requests",
        "Token",
        "Tokens",
        "Connection",
        "Connections",
        "Certificate",
        "Certificates",
        "Domain",
        "Domains",
        "Core",
        "Cores",
    ];

    /// FOCUS UnitFormat: `[<quantity> ]<unit>[-<unit>][/[<quantity> ]<unit>]`, where a quantity
    /// is a positive whole number and a unit is one or more alphanumeric words starting with a
    /// letter. Listed units must keep their capitalisation (`tokens` fails) and data-size
    /// abbreviations have no plural (`GBs` fails). `1M Tokens` fails: `1M` is not a whole number.
    pub(crate) fn is_unit(s: &str) -> bool {
        let mut parts = s.split('/');
        let numerator = parts.next().unwrap_or_default();
        let denominator = parts.next();
        if parts.next().is_some() {
            return false;
        }
        let compound = |m: &str| m.split('-').count() <= 2 && m.split('-').all(is_base_unit);
        quantified(numerator, compound) && denominator.is_none_or(|d| quantified(d, is_base_unit))
    }

    fn quantified(s: &str, unit: impl Fn(&str) -> bool) -> bool {
        match s.split_once(' ') {
            Some((q, rest)) if is_quantity(q) => unit(rest),
            _ => unit(s),
        }
    }

    fn is_quantity(q: &str) -> bool {
        !q.is_empty() && !q.starts_with('0') && q.bytes().all(|b| b.is_ascii_digit())
    }

    fn is_base_unit(s: &str) -> bool {
        !s.is_empty() && s.split(' ').all(is_unit_word)
    }

    fn is_unit_word(w: &str) -> bool {
        if !w.starts_with(|c: char| c.is_ascii_alphabetic())
            || !w.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return false;
        }
        let mut listed = DATA_SIZE_UNITS.iter().chain(TIME_UNITS).chain(COUNT_UNITS);
        if listed.clone().any(|u| *u == w) {
            return true;
        }
        let miscapitalised = listed.any(|u| u.eq_ignore_ascii_case(w));
        let data_size_plural = w
            .strip_suffix('s')
            .is_some_and(|stem| DATA_SIZE_UNITS.contains(&stem));
        !miscapitalised && !data_size_plural
    }

    /// FormatString (StringHandling): not empty and not only whitespace.
    pub(crate) fn is_focus_string(s: &str) -> bool {
        !s.trim().is_empty()
    }

    /// ISO 4217 currencies in circulation (SIX list one, without funds, precious metals, SDR,
    /// bond-market units, test and no-currency codes), sorted.
    const NATIONAL_CURRENCIES: &[&str] = &[
        "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
        "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
        "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP",
        "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF",
        "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD",
        "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP",
        "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR",
        "MVR", "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB",
        "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD",
        "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SLL", "SOS", "SRD", "SSP", "STN", "SVC", "SYP",
        "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD",
        "UYU", "UZS", "VED", "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER",
        "ZAR", "ZMW", "ZWG", "ZWL",
    ];

    /// CheckNationalCurrency: an ISO 4217 code of a circulating currency.
    pub(crate) fn is_national_currency(s: &str) -> bool {
        NATIONAL_CURRENCIES.binary_search(&s).is_ok()
    }

    /// FormatKeyValue (KeyValueFormat-A-001..004): `None` when `s` is a JSON object with unique
    /// keys whose values are strings, numbers, booleans or null; otherwise the problem.
    pub(crate) fn key_value_problem(s: &str) -> Option<String> {
        match serde_json::from_str::<KeyValueObject>(s) {
            Ok(object) => object.problem,
            Err(e) => Some(format!("not a JSON object: {e}")),
        }
    }

    struct KeyValueObject {
        problem: Option<String>,
    }

    impl<'de> Deserialize<'de> for KeyValueObject {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_map(ObjectVisitor)
        }
    }

    struct ObjectVisitor;

    impl<'de> Visitor<'de> for ObjectVisitor {
        type Value = KeyValueObject;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyValueObject, A::Error> {
            let mut keys = HashSet::new();
            let mut problem = None;
            while let Some(key) = map.next_key::<String>()? {
                let value: Value = map.next_value()?;
                if problem.is_some() {
                    continue;
                }
                if value.is_object() || value.is_array() {
                    problem = Some(format!("the value of {key:?} is an object or an array"));
                } else if !keys.insert(key.clone()) {
                    problem = Some(format!("duplicate key {key:?}"));
                }
            }
            Ok(KeyValueObject { problem })
        }
    }
}
