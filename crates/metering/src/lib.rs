//! Stream metering: the stage between the provider adapter and the ledger.
//!
//! - [`meter`]: a wrapper around a canonical response chunk stream that relays each chunk as
//!   it arrives (through a [`Renderer`] for the client's wire format), captures provider usage,
//!   counts relayed output against the budget's output cap, and emits exactly one
//!   [`meter::Settlement`] when the stream ends, fails, is cut at the cap, or is dropped by a
//!   departing client;
//! - [`anthropic`]: the same for native Anthropic Messages streams passed through untranslated
//!   ([`anthropic::MeteredEvents`]), including the live cut at the output cap in Anthropic's
//!   own event shape.
//!
//! Token counting lives in its own crate, `tollgate-tokens`, so that budget admission and the
//! simulator can count tokens without depending on this crate (and the provider adapters it
//! pulls in).

pub mod anthropic;
pub mod meter;

pub use meter::{MeterOptions, MeteredStream, OpenAiRenderer, Renderer, Settlement};

#[cfg(test)]
mod test_support {
    use std::sync::{Arc, Mutex};

    use crate::Settlement;

    /// A settle callback that keeps every settlement, and the list it keeps them in.
    pub(crate) fn capture() -> (
        Arc<Mutex<Vec<Settlement>>>,
        impl FnOnce(Settlement) + Send + 'static,
    ) {
        let store = Arc::new(Mutex::new(Vec::new()));
        let s2 = store.clone();
        (store, move |s| s2.lock().unwrap().push(s))
    }
}
