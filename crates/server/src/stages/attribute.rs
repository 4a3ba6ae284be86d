//! Stage 4, attribute: who the request is for — `{key, team, tenant, feature, user, tags}` from
//! the `x-tollgate-*` headers where the key allows them, the OpenAI body's `user` and
//! `metadata`, and the key's defaults (`tollgate_attribution::resolve`; precedence in
//! `docs/contracts.md` §1). A header the key may not set is `400` naming the header.

use axum::http::HeaderMap;
use serde_json::{Map, Value};
use tollgate_store::StoredKey;
use tollgate_types::{ApiError, LedgerRow};

pub(crate) fn attribute(
    row: &mut LedgerRow,
    key: &StoredKey,
    headers: &HeaderMap,
    body: &Map<String, Value>,
) -> Result<(), ApiError> {
    row.attribution = tollgate_attribution::resolve(key, headers, Some(body))?;
    Ok(())
}
