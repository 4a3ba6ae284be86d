//! The one list shape of the admin API, with keyset pagination.
//!
//! `GET` on a collection takes `?limit=` (1–1000, default 100) and `?cursor=` (the previous
//! page's `next_cursor`) and answers `{"object": "list", "data": [...], "next_cursor": …}`;
//! `next_cursor` is `null` on the last page. Pages are keyset pages — each cursor names the
//! last item shown, and the next page starts after it in the collection's order — so items
//! created or deleted while a client pages never shift the rest.

use std::collections::HashMap;

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tollgate_types::{ApiError, ErrorCode};

pub(crate) const DEFAULT_LIMIT: usize = 100;
pub(crate) const MAX_LIMIT: usize = 1000;

/// One page request.
#[derive(Debug, Clone)]
pub(crate) struct PageQuery {
    pub(crate) limit: usize,
    /// The previous page's `next_cursor`, as sent.
    pub(crate) cursor: Option<String>,
}

impl PageQuery {
    pub(crate) fn from_query(q: &HashMap<String, String>) -> Result<PageQuery, ApiError> {
        let limit = match q.get("limit").filter(|l| !l.is_empty()) {
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!("'limit' must be an integer from 1 to {MAX_LIMIT}"),
                    )
                    .with_param("limit")
                })?,
            None => DEFAULT_LIMIT,
        };
        Ok(PageQuery {
            limit,
            cursor: q.get("cursor").filter(|c| !c.is_empty()).cloned(),
        })
    }

    /// The position the cursor names (decoded from its opaque form).
    pub(crate) fn after(&self) -> Result<Option<String>, ApiError> {
        self.cursor.as_deref().map(decode).transpose()
    }
}

/// The cursor for a position in a collection's order.
pub(crate) fn encode(position: &str) -> String {
    hex::encode(position.as_bytes())
}

fn decode(cursor: &str) -> Result<String, ApiError> {
    hex::decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("invalid page cursor '{cursor}'"),
            )
            .with_param("cursor")
        })
}

/// `?include_revoked=true` (or `1`): credential lists show revoked ones too.
pub(crate) fn include_revoked(q: &std::collections::HashMap<String, String>) -> bool {
    q.get("include_revoked")
        .is_some_and(|v| v == "true" || v == "1")
}

/// The position of a credential (key, admin token) in its list: creation time, zero-padded so
/// the text order is the time order, then the id.
pub(crate) fn by_creation(created_at_ms: i64, id: &str) -> String {
    format!("{created_at_ms:020}/{id}")
}

/// One page of an in-memory collection ordered by `position` (ascending; positions unique).
pub(crate) fn page<T>(
    mut items: Vec<T>,
    position: impl Fn(&T) -> String,
    q: &PageQuery,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let after = q.after()?;
    let mut keyed: Vec<(String, T)> = items.drain(..).map(|t| (position(&t), t)).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let mut rest: Vec<(String, T)> = keyed
        .into_iter()
        .filter(|(p, _)| after.as_ref().is_none_or(|a| p > a))
        .take(q.limit + 1)
        .collect();
    let next = if rest.len() > q.limit {
        rest.truncate(q.limit);
        rest.last().map(|(p, _)| encode(p))
    } else {
        None
    };
    Ok((rest.into_iter().map(|(_, t)| t).collect(), next))
}

/// The list answer's body (the dashboard renders the same value the API answers).
pub(crate) fn body(data: Vec<Value>, next_cursor: Option<String>) -> Value {
    json!({"object": "list", "data": data, "next_cursor": next_cursor})
}

/// The list answer.
pub(crate) fn respond(data: Vec<Value>, next_cursor: Option<String>) -> Response {
    Json(body(data, next_cursor)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(limit: usize, cursor: Option<String>) -> PageQuery {
        PageQuery { limit, cursor }
    }

    #[test]
    fn pages_cover_the_collection_once_in_order() {
        let items: Vec<u32> = (0..25).rev().collect();
        let pos = |n: &u32| format!("{n:05}");
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let (page, next) = page(items.clone(), pos, &q(10, cursor)).unwrap();
            assert!(page.len() <= 10);
            seen.extend(page);
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, (0..25).collect::<Vec<_>>());
    }

    #[test]
    fn a_page_survives_its_cursor_item_being_deleted() {
        let items: Vec<u32> = (0..6).collect();
        let pos = |n: &u32| format!("{n:05}");
        let (first, next) = page(items.clone(), pos, &q(3, None)).unwrap();
        assert_eq!(first, [0, 1, 2]);
        let without: Vec<u32> = items.into_iter().filter(|n| *n != 2).collect();
        let (second, next) = page(without, pos, &q(3, next)).unwrap();
        assert_eq!(second, [3, 4, 5]);
        assert_eq!(next, None);
    }

    #[test]
    fn bad_limits_and_cursors_are_refused() {
        let m = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        assert!(PageQuery::from_query(&m("limit", "0")).is_err());
        assert!(PageQuery::from_query(&m("limit", "1001")).is_err());
        assert!(PageQuery::from_query(&m("limit", "x")).is_err());
        assert_eq!(PageQuery::from_query(&m("limit", "5")).unwrap().limit, 5);
        let bad = PageQuery::from_query(&m("cursor", "zz")).unwrap();
        assert!(page(vec![1u32], |n| n.to_string(), &bad).is_err());
    }
}
