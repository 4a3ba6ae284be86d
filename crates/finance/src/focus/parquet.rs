//! The FOCUS file as Parquet, with explicit types: money and quantities as `DECIMAL(38, s)`
//! (fixed-length 16-byte two's complement, scale chosen per column so every value the export
//! writes fits exactly), periods as UTC `TIMESTAMP(MILLIS)`, counts as `INT64`, the rest as
//! UTF-8 strings; every column optional (FOCUS nulls). Rows are buffered into row groups of
//! [`ROW_GROUP`] rows, so memory stays bounded however long the export.
//!
//! Why the `parquet` crate without `arrow`: the low-level column writers are all an export
//! needs, and without arrow the dependency costs ~35 s of a clean release build on 2 cores
//! instead of several minutes (arrow, or polars, would bring dozens of crates).

use std::io::Write;
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::column::writer::ColumnWriter;
use parquet::data_type::{ByteArray, FixedLenByteArray};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use super::columns::Col;
use crate::decimal::Decimal;

/// Rows per row group.
const ROW_GROUP: usize = 65_536;

/// How a column is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Decimal(u8),
    Int64,
    Timestamp,
    Text,
}

fn kind(c: Col) -> Kind {
    use Col::*;
    match c {
        BilledCost
        | EffectiveCost
        | PricingCurrencyEffectiveCost
        | x_UpstreamCost
        | x_Margin
        | x_SavedCost => Kind::Decimal(9),
        // Upstream nano prices, or × (10000 + markup bp) at scale 13 for chargeback.
        ListUnitPrice
        | ContractedUnitPrice
        | PricingCurrencyListUnitPrice
        | PricingCurrencyContractedUnitPrice => Kind::Decimal(13),
        PricingQuantity => Kind::Decimal(6),
        // A unit price (≤ 13) × a quantity (6).
        ListCost | ContractedCost => Kind::Decimal(19),
        ConsumedQuantity => Kind::Decimal(0),
        x_RequestCount | x_FailedRequestCount | x_InputTokens | x_CachedInputTokens
        | x_CacheWriteTokens | x_OutputTokens | x_ReasoningTokens => Kind::Int64,
        BillingPeriodStart | BillingPeriodEnd | ChargePeriodStart | ChargePeriodEnd => {
            Kind::Timestamp
        }
        _ => Kind::Text,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ParquetError {
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("column {0}: cannot store '{1}' as {2}")]
    Value(&'static str, String, &'static str),
}

pub(crate) struct ParquetOut<W: Write + Send> {
    writer: SerializedFileWriter<W>,
    cols: Vec<Col>,
    rows: Vec<Vec<Option<String>>>,
}

impl<W: Write + Send> ParquetOut<W> {
    pub(crate) fn new(out: W, cols: Vec<Col>) -> Result<Self, ParquetError> {
        let fields: Vec<String> = cols
            .iter()
            .map(|&c| {
                let name = c.name();
                match kind(c) {
                    Kind::Decimal(s) => {
                        format!("optional fixed_len_byte_array(16) {name} (DECIMAL(38,{s}));")
                    }
                    Kind::Int64 => format!("optional int64 {name};"),
                    Kind::Timestamp => {
                        format!("optional int64 {name} (TIMESTAMP(MILLIS,true));")
                    }
                    Kind::Text => format!("optional binary {name} (STRING);"),
                }
            })
            .collect();
        let schema = parse_message_type(&format!("message focus {{ {} }}", fields.join(" ")))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by(format!("tollgate {}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(ParquetOut {
            writer: SerializedFileWriter::new(out, Arc::new(schema), Arc::new(props))?,
            cols,
            rows: Vec::with_capacity(ROW_GROUP),
        })
    }

    /// One row, cells in the order of the columns given to `new`.
    pub(crate) fn row(&mut self, cells: Vec<Option<String>>) -> Result<(), ParquetError> {
        self.rows.push(cells);
        if self.rows.len() == ROW_GROUP {
            self.flush()?;
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<W, ParquetError> {
        self.flush()?;
        Ok(self.writer.into_inner()?)
    }

    fn flush(&mut self) -> Result<(), ParquetError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let mut rg = self.writer.next_row_group()?;
        let mut i = 0;
        while let Some(mut col) = rg.next_column()? {
            let c = self.cols[i];
            let cells = self
                .rows
                .iter()
                .map(|r| r.get(i).and_then(Option::as_deref));
            let defs: Vec<i16> = cells.clone().map(|v| i16::from(v.is_some())).collect();
            let bad =
                |v: &str, what: &'static str| ParquetError::Value(c.name(), v.to_string(), what);
            match (kind(c), col.untyped()) {
                (Kind::Decimal(scale), ColumnWriter::FixedLenByteArrayColumnWriter(w)) => {
                    let mut values = Vec::new();
                    for v in cells.flatten() {
                        let units = Decimal::parse(v)
                            .and_then(|d| d.units_at(scale))
                            .ok_or_else(|| bad(v, "an exact decimal at this scale"))?;
                        values.push(FixedLenByteArray::from(units.to_be_bytes().to_vec()));
                    }
                    w.write_batch(&values, Some(&defs), None)?;
                }
                (Kind::Int64, ColumnWriter::Int64ColumnWriter(w)) => {
                    let mut values = Vec::new();
                    for v in cells.flatten() {
                        values.push(v.parse::<i64>().map_err(|_| bad(v, "an integer"))?);
                    }
                    w.write_batch(&values, Some(&defs), None)?;
                }
                (Kind::Timestamp, ColumnWriter::Int64ColumnWriter(w)) => {
                    let mut values = Vec::new();
                    for v in cells.flatten() {
                        let t = v
                            .parse::<jiff::Timestamp>()
                            .map_err(|_| bad(v, "an RFC 3339 time"))?;
                        values.push(t.as_millisecond());
                    }
                    w.write_batch(&values, Some(&defs), None)?;
                }
                (Kind::Text, ColumnWriter::ByteArrayColumnWriter(w)) => {
                    let values: Vec<ByteArray> = cells.flatten().map(ByteArray::from).collect();
                    w.write_batch(&values, Some(&defs), None)?;
                }
                _ => return Err(bad("", "its declared type (schema mismatch)")),
            }
            col.close()?;
            i += 1;
        }
        rg.close()?;
        self.rows.clear();
        Ok(())
    }
}
