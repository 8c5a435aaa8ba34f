//! Paging of the name listings (ListVectorBuckets, ListIndexes, ListVectors): signed list
//! tokens bound to their listing, and the cut of one page out of names in order.

use serde::{Deserialize, Serialize};

use super::model::ListIn;
use super::{validate, AppState};
use crate::error::ApiError;

/// What a list token continues: which listing (`scope`, e.g. the index ARN plus segment and
/// prefix) and the last name returned.
#[derive(Serialize, Deserialize)]
struct PageToken {
    scope: String,
    after: String,
}

impl AppState {
    pub(super) fn page_token(&self, scope: &str, after: &str) -> String {
        self.tokens.sign(&PageToken {
            scope: scope.to_owned(),
            after: after.to_owned(),
        })
    }

    /// The `after` name of a token, which must have been issued for `scope`.
    pub(super) fn page_after(
        &self,
        token: Option<&str>,
        scope: &str,
    ) -> Result<Option<String>, ApiError> {
        let Some(token) = token else { return Ok(None) };
        let token: PageToken = self.tokens.verify(token)?;
        if token.scope != scope {
            return Err(crate::tokens::invalid_token());
        }
        Ok(Some(token.after))
    }
}

/// One page of a ListVectorBuckets or ListIndexes request.
pub(super) struct Paging {
    limit: usize,
    after: Option<String>,
    prefix: Option<String>,
    /// The listing its tokens are bound to: the scope and the prefix.
    listing: String,
}

impl Paging {
    /// Checks the paging members of `input` (at most `max` names a page) and its token, which
    /// must continue the same listing `scope` with the same prefix.
    pub(super) fn new(
        app: &AppState,
        input: &ListIn,
        max: i64,
        scope: &str,
    ) -> Result<Paging, ApiError> {
        let limit = validate::max_results(input.max_results, max, max)?;
        validate::list_prefix(input.prefix.as_deref())?;
        let listing = format!("{scope}?{}", input.prefix.as_deref().unwrap_or_default());
        Ok(Paging {
            limit,
            after: app.page_after(input.next_token.as_deref(), &listing)?,
            prefix: input.prefix.clone(),
            listing,
        })
    }

    /// One page of `items` (named, in name order): after `after`, matching the prefix; and
    /// the token of the next page when more follow.
    pub(super) fn page<'a, T>(
        &self,
        app: &AppState,
        items: impl Iterator<Item = (&'a str, T)>,
    ) -> (Vec<T>, Option<String>) {
        let (page, last) = page(
            items,
            self.limit,
            self.after.as_deref(),
            self.prefix.as_deref(),
        );
        (page, last.map(|last| app.page_token(&self.listing, last)))
    }
}

/// Up to `limit` items whose names come after `after` and start with `prefix`, in order; and
/// the last name returned when more follow.
fn page<'a, T>(
    items: impl Iterator<Item = (&'a str, T)>,
    limit: usize,
    after: Option<&str>,
    prefix: Option<&str>,
) -> (Vec<T>, Option<&'a str>) {
    let mut out = Vec::new();
    let mut last = None;
    for (name, item) in items {
        if after.is_some_and(|after| name <= after) {
            continue;
        }
        if prefix.is_some_and(|p| !name.starts_with(p)) {
            continue;
        }
        if out.len() == limit {
            return (out, last);
        }
        out.push(item);
        last = Some(name);
    }
    (out, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(page: (Vec<&str>, Option<&str>)) -> (Vec<String>, Option<String>) {
        (
            page.0.into_iter().map(str::to_owned).collect(),
            page.1.map(str::to_owned),
        )
    }

    fn listed(
        limit: usize,
        after: Option<&str>,
        prefix: Option<&str>,
    ) -> (Vec<String>, Option<String>) {
        let items = ["a1", "a2", "b1", "b2", "b3"];
        names(page(items.iter().map(|n| (*n, *n)), limit, after, prefix))
    }

    #[test]
    fn pages_follow_name_order_and_end_without_a_last_name() {
        assert_eq!(
            listed(2, None, None),
            (vec!["a1".into(), "a2".into()], Some("a2".into()))
        );
        assert_eq!(
            listed(2, Some("a2"), None),
            (vec!["b1".into(), "b2".into()], Some("b2".into()))
        );
        assert_eq!(listed(2, Some("b2"), None), (vec!["b3".into()], None));
        // Exactly `limit` items left: no next page.
        assert_eq!(
            listed(3, Some("a2"), None),
            (vec!["b1".into(), "b2".into(), "b3".into()], None)
        );
        assert_eq!(listed(5, Some("zz"), None), (vec![], None));
    }

    #[test]
    fn the_prefix_filters_before_the_limit() {
        assert_eq!(
            listed(2, None, Some("b")),
            (vec!["b1".into(), "b2".into()], Some("b2".into()))
        );
        assert_eq!(listed(2, Some("b2"), Some("b")), (vec!["b3".into()], None));
        assert_eq!(listed(2, None, Some("c")), (vec![], None));
    }
}
