//! The column sets: FOCUS columns per version (every one present, unused ones as null
//! columns, as validators require), then Tollgate's `x_` columns after all of them.
//!
//! Columns are an enum so a row is a slice indexed by column (no per-cell name lookups: an
//! export writes millions of rows).

use super::{Dataset, Version};

macro_rules! columns {
    ($($c:ident),* $(,)?) => {
        /// Every column any version writes.
        #[allow(non_camel_case_types)] // `x_` columns keep their FOCUS spelling
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Col {
            $($c),*
        }

        impl Col {
            pub(crate) const COUNT: usize = [$(Col::$c),*].len();

            pub(crate) fn name(self) -> &'static str {
                match self {
                    $(Col::$c => stringify!($c)),*
                }
            }
        }
    };
}

columns!(
    BilledCost,
    BillingAccountId,
    BillingAccountName,
    BillingCurrency,
    BillingPeriodEnd,
    BillingPeriodStart,
    ChargeCategory,
    ChargeClass,
    ChargeDescription,
    ChargeFrequency,
    ChargePeriodEnd,
    ChargePeriodStart,
    CommitmentDiscountStatus,
    ConsumedQuantity,
    ConsumedUnit,
    ContractedCost,
    ContractedUnitPrice,
    EffectiveCost,
    InvoiceId,
    InvoiceIssuerName,
    ListCost,
    ListUnitPrice,
    PricingCategory,
    PricingCurrency,
    PricingCurrencyContractedUnitPrice,
    PricingCurrencyEffectiveCost,
    PricingCurrencyListUnitPrice,
    PricingQuantity,
    PricingUnit,
    ProviderName,
    PublisherName,
    ServiceCategory,
    ServiceName,
    ServiceSubcategory,
    SkuId,
    SkuMeter,
    SkuPriceDetails,
    SkuPriceId,
    SubAccountId,
    SubAccountName,
    Tags,
    AvailabilityZone,
    CommitmentDiscountCategory,
    CommitmentDiscountId,
    CommitmentDiscountName,
    CommitmentDiscountType,
    RegionId,
    RegionName,
    ResourceId,
    ResourceName,
    ResourceType,
    x_RequestCount,
    x_FailedRequestCount,
    x_InputTokens,
    x_CachedInputTokens,
    x_CacheWriteTokens,
    x_OutputTokens,
    x_ReasoningTokens,
    x_SavedCost,
    x_RequestedModel,
    x_ServedModel,
    x_Provider,
    x_Feature,
    x_PriceTableVersion,
    x_UsageSource,
    x_PolicyActions,
    x_AllocationPool,
    x_AllocatedCosts,
    x_UpstreamCost,
    x_Margin,
);

use Col::*;

/// FOCUS 1.2 columns written, in file order.
const V1_2: &[Col] = &[
    BilledCost,
    BillingAccountId,
    BillingAccountName,
    BillingCurrency,
    BillingPeriodEnd,
    BillingPeriodStart,
    ChargeCategory,
    ChargeClass,
    ChargeDescription,
    ChargeFrequency,
    ChargePeriodEnd,
    ChargePeriodStart,
    CommitmentDiscountStatus,
    ConsumedQuantity,
    ConsumedUnit,
    ContractedCost,
    ContractedUnitPrice,
    EffectiveCost,
    InvoiceId,
    InvoiceIssuerName,
    ListCost,
    ListUnitPrice,
    PricingCategory,
    PricingCurrency,
    PricingCurrencyContractedUnitPrice,
    PricingCurrencyEffectiveCost,
    PricingCurrencyListUnitPrice,
    PricingQuantity,
    PricingUnit,
    ProviderName,
    PublisherName,
    ServiceCategory,
    ServiceName,
    ServiceSubcategory,
    SkuId,
    SkuMeter,
    SkuPriceDetails,
    SkuPriceId,
    SubAccountId,
    SubAccountName,
    Tags,
];

/// FOCUS 1.0 columns: 1.0 has no InvoiceId, PricingCurrency*, ServiceSubcategory, SkuMeter or
/// SkuPriceDetails, and wants its Conditional columns present even when null.
const V1_0: &[Col] = &[
    AvailabilityZone,
    BilledCost,
    BillingAccountId,
    BillingAccountName,
    BillingCurrency,
    BillingPeriodEnd,
    BillingPeriodStart,
    ChargeCategory,
    ChargeClass,
    ChargeDescription,
    ChargeFrequency,
    ChargePeriodEnd,
    ChargePeriodStart,
    CommitmentDiscountCategory,
    CommitmentDiscountId,
    CommitmentDiscountName,
    CommitmentDiscountStatus,
    CommitmentDiscountType,
    ConsumedQuantity,
    ConsumedUnit,
    ContractedCost,
    ContractedUnitPrice,
    EffectiveCost,
    InvoiceIssuerName,
    ListCost,
    ListUnitPrice,
    PricingCategory,
    PricingQuantity,
    PricingUnit,
    ProviderName,
    PublisherName,
    RegionId,
    RegionName,
    ResourceId,
    ResourceName,
    ResourceType,
    ServiceCategory,
    ServiceName,
    SkuId,
    SkuPriceId,
    SubAccountId,
    SubAccountName,
    Tags,
];

/// Tollgate's columns, after the FOCUS ones. Counts and saved cost ride on each group's
/// first row (0 on the others); token columns hold the row's own class.
const X: &[Col] = &[
    x_RequestCount,
    x_FailedRequestCount,
    x_InputTokens,
    x_CachedInputTokens,
    x_CacheWriteTokens,
    x_OutputTokens,
    x_ReasoningTokens,
    x_SavedCost,
    x_RequestedModel,
    x_ServedModel,
    x_Provider,
    x_Feature,
    x_PriceTableVersion,
    x_UsageSource,
    x_PolicyActions,
    x_AllocationPool,
    x_AllocatedCosts,
];

/// The chargeback dataset's extra columns: the upstream cost of each row, and billed minus it.
const X_CHARGEBACK: &[Col] = &[x_UpstreamCost, x_Margin];

/// The FOCUS columns of `version`, in file order.
pub(crate) fn focus_columns(version: Version) -> &'static [Col] {
    match version {
        Version::V1_0 => V1_0,
        Version::V1_2 => V1_2,
    }
}

/// Every column of a file, in order: the FOCUS ones, then the `x_` ones.
pub(crate) fn file_columns(version: Version, dataset: Dataset) -> impl Iterator<Item = Col> {
    let extra: &[Col] = match dataset {
        Dataset::Cost => &[],
        Dataset::Chargeback => X_CHARGEBACK,
    };
    focus_columns(version).iter().chain(X).chain(extra).copied()
}

/// The header of a file.
pub fn header(version: Version, dataset: Dataset) -> Vec<&'static str> {
    file_columns(version, dataset).map(Col::name).collect()
}
