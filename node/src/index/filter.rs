//! In-memory secondary index over vector metadata, used to pre-filter QueryVectors.
//!
//! A shard keeps one [`FilterIndex`] next to its vector index. For every filterable metadata key
//! it maps each distinct value to the set of internal ids (u64) that carry it, so evaluating a
//! [`Filter`] is a handful of bitmap operations instead of a scan over every stored document.
//!
//! Semantics follow S3 Vectors metadata filtering:
//! * A list value matches when *any* of its elements matches ("array-any"), so every list element
//!   is indexed on its own.
//! * Comparisons are typed: the string `"5"` never equals the number `5`, and range operators only
//!   ever match numbers. Numbers compare as `f64` (`-0.0 == 0.0`, NaN matches nothing).
//! * Negations (`$ne`, `$nin`) only match documents in which the key is present.
//! * Keys declared non-filterable at index creation are not indexed at all and behave as absent.
//!
//! Metadata lists are lists of scalars; a nested list (which the coordinator rejects) is ignored.
//! [`matches`] is a direct evaluator of the same semantics over one document, kept as the
//! reference the index is tested against.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;

use quiver_proto::{Filter, FilterValue, MetaValue, Metadata};
use roaring::RoaringTreemap;

/// An `f64` with a total order, so numbers can key a `BTreeMap` and `$gt`-style filters become
/// range scans.
///
/// `-0.0` is normalised to `0.0` because the filter language compares numbers as `f64`, where the
/// two are equal; `f64::total_cmp` alone would keep them apart. NaN is never stored (see
/// [`FilterIndex::insert`]), so its position in the total order does not matter.
#[derive(Debug, Clone, Copy)]
struct NumKey(f64);

impl NumKey {
    fn new(value: f64) -> Self {
        // `-0.0 == 0.0`, so this maps both zeros to positive zero and leaves everything else.
        NumKey(if value == 0.0 { 0.0 } else { value })
    }
}

impl PartialEq for NumKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for NumKey {}

impl PartialOrd for NumKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for NumKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The postings of one filterable metadata key.
///
/// Invariant: no map holds an empty bitmap, and an id is in `present` exactly when some document
/// carrying the key is indexed under that id. Removal maintains both, so the memory of a shard
/// shrinks back when vectors are deleted.
#[derive(Debug, Default)]
struct KeyPostings {
    /// Ids whose document has this key, whatever the value (also for an empty list).
    present: RoaringTreemap,
    /// Ordered, so `$startsWith` is a range scan from the prefix.
    strings: BTreeMap<String, RoaringTreemap>,
    /// Ordered, so numeric comparisons are range scans.
    numbers: BTreeMap<NumKey, RoaringTreemap>,
    bools: BTreeMap<bool, RoaringTreemap>,
}

impl KeyPostings {
    fn is_empty(&self) -> bool {
        self.present.is_empty()
    }

    /// Ids that have this key with a value (or list element) equal to `value`, borrowed from the
    /// index; `None` when there are none.
    fn equal_to(&self, value: &FilterValue) -> Option<&RoaringTreemap> {
        match value {
            FilterValue::Str(s) => self.strings.get(s.as_str()),
            // A NaN operand finds nothing: NaN is never stored (see `add_scalar`).
            FilterValue::Num(n) => self.numbers.get(&NumKey::new(*n)),
            FilterValue::Bool(b) => self.bools.get(b),
        }
    }

    /// Ids that have this key with a value equal to any of `values`.
    fn equal_to_any(&self, values: &[FilterValue]) -> RoaringTreemap {
        union(values.iter().filter_map(|v| self.equal_to(v)))
    }

    /// Ids with a numeric value (or element) within the bounds. A NaN bound matches nothing, as
    /// every comparison with NaN is false.
    fn numbers_in(&self, low: Bound<f64>, high: Bound<f64>) -> RoaringTreemap {
        let is_nan =
            |b: &Bound<f64>| matches!(b, Bound::Included(x) | Bound::Excluded(x) if x.is_nan());
        if is_nan(&low) || is_nan(&high) {
            return RoaringTreemap::new();
        }
        // Callers pass one-sided ranges only, so `range` cannot panic on inverted bounds.
        union(
            self.numbers
                .range((low.map(NumKey::new), high.map(NumKey::new)))
                .map(|(_, ids)| ids),
        )
    }

    /// Ids with a string value (or element) starting with `prefix`: all such strings sort
    /// contiguously from `prefix` itself.
    fn strings_starting_with(&self, prefix: &str) -> RoaringTreemap {
        union(
            self.strings
                .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|(s, _)| s.starts_with(prefix))
                .map(|(_, ids)| ids),
        )
    }

    fn add_scalar(&mut self, id: u64, value: &MetaValue) {
        match value {
            MetaValue::Str(s) => {
                // Avoid allocating the key when the value is already indexed.
                match self.strings.get_mut(s.as_str()) {
                    Some(ids) => {
                        ids.insert(id);
                    }
                    None => {
                        self.strings
                            .insert(s.clone(), RoaringTreemap::from_iter([id]));
                    }
                }
            }
            // NaN equals nothing and lies in no range, so indexing it would only cost memory.
            MetaValue::Num(n) if n.is_nan() => {}
            MetaValue::Num(n) => {
                self.numbers.entry(NumKey::new(*n)).or_default().insert(id);
            }
            MetaValue::Bool(b) => {
                self.bools.entry(*b).or_default().insert(id);
            }
            MetaValue::List(_) => {}
        }
    }

    fn remove_scalar(&mut self, id: u64, value: &MetaValue) {
        match value {
            MetaValue::Str(s) => remove_posting(&mut self.strings, s.as_str(), id),
            // A NaN was never stored: nothing to remove.
            MetaValue::Num(n) => remove_posting(&mut self.numbers, &NumKey::new(*n), id),
            MetaValue::Bool(b) => remove_posting(&mut self.bools, b, id),
            MetaValue::List(_) => {}
        }
    }
}

/// Removes `id` from the posting list of `value`, dropping the list once it is empty.
fn remove_posting<K, Q>(map: &mut BTreeMap<K, RoaringTreemap>, value: &Q, id: u64)
where
    K: Ord + std::borrow::Borrow<Q>,
    Q: Ord + ?Sized,
{
    if let Some(ids) = map.get_mut(value) {
        ids.remove(id);
        if ids.is_empty() {
            map.remove(value);
        }
    }
}

fn union<'a>(sets: impl IntoIterator<Item = &'a RoaringTreemap>) -> RoaringTreemap {
    let mut all = RoaringTreemap::new();
    for ids in sets {
        all |= ids;
    }
    all
}

/// The scalars a value stands for in a comparison: itself, or the elements of a list.
fn scalars(value: &MetaValue) -> impl Iterator<Item = &MetaValue> {
    let (single, list) = match value {
        MetaValue::List(items) => (None, items.as_slice()),
        scalar => (Some(scalar), [].as_slice()),
    };
    single
        .into_iter()
        .chain(list.iter().filter(|v| !matches!(v, MetaValue::List(_))))
}

/// The entries of a document that filtering sees: filterable keys only, and for a (malformed)
/// document with a repeated key only the first occurrence, the same one [`Metadata::get`]
/// returns. Keeps [`FilterIndex`] and [`matches`] consistent.
fn filterable_entries<'a>(
    metadata: &'a Metadata,
    non_filterable: &'a HashSet<String>,
) -> impl Iterator<Item = (&'a str, &'a MetaValue)> {
    let mut seen = HashSet::new();
    metadata
        .0
        .iter()
        .filter(move |(key, _)| !non_filterable.contains(key) && seen.insert(key.as_str()))
        .map(|(key, value)| (key.as_str(), value))
}

/// Inverted index from metadata values to internal ids, for one shard.
///
/// The index does not know which ids are live: callers pass the live set as the `universe` of
/// [`FilterIndex::evaluate`] (needed anyway for `$exists: false`), and must [`remove`] a
/// document's old metadata before inserting a replacement under the same id.
///
/// [`remove`]: FilterIndex::remove
#[derive(Debug, Default)]
pub struct FilterIndex {
    non_filterable: HashSet<String>,
    keys: HashMap<String, KeyPostings>,
}

impl FilterIndex {
    /// An empty index. `non_filterable_keys` come from the index configuration; their values are
    /// stored with the vector but never indexed, which is what keeps large free-text metadata
    /// cheap.
    pub fn new(non_filterable_keys: impl IntoIterator<Item = String>) -> Self {
        FilterIndex {
            non_filterable: non_filterable_keys.into_iter().collect(),
            keys: HashMap::new(),
        }
    }

    /// Indexes the filterable keys of `metadata` under `id`.
    pub fn insert(&mut self, id: u64, metadata: &Metadata) {
        for (key, value) in filterable_entries(metadata, &self.non_filterable) {
            let postings = match self.keys.get_mut(key) {
                Some(postings) => postings,
                None => self.keys.entry(key.to_owned()).or_default(),
            };
            postings.present.insert(id);
            for scalar in scalars(value) {
                postings.add_scalar(id, scalar);
            }
        }
    }

    /// Un-indexes `id`. `metadata` must be the document that was inserted under `id`; postings
    /// that become empty are dropped so deleted values do not linger in memory.
    pub fn remove(&mut self, id: u64, metadata: &Metadata) {
        for (key, value) in filterable_entries(metadata, &self.non_filterable) {
            let Some(postings) = self.keys.get_mut(key) else {
                continue;
            };
            postings.present.remove(id);
            for scalar in scalars(value) {
                postings.remove_scalar(id, scalar);
            }
            if postings.is_empty() {
                self.keys.remove(key);
            }
        }
    }

    /// The ids in `universe` whose metadata matches `filter`.
    pub fn evaluate(&self, filter: &Filter, universe: &RoaringTreemap) -> RoaringTreemap {
        match filter {
            Filter::And(children) => {
                // Each child only needs to look at what survived the previous ones.
                let mut survivors = universe.clone();
                for child in children {
                    if survivors.is_empty() {
                        break;
                    }
                    survivors = self.evaluate(child, &survivors);
                }
                survivors
            }
            Filter::Or(children) => {
                let mut matched = RoaringTreemap::new();
                for child in children {
                    matched |= self.evaluate(child, universe);
                }
                matched
            }
            Filter::Eq(key, value) => match self.postings(key).and_then(|p| p.equal_to(value)) {
                Some(ids) => universe & ids,
                None => RoaringTreemap::new(),
            },
            Filter::Ne(key, value) => match self.postings(key) {
                Some(p) => {
                    let present = universe & &p.present;
                    match p.equal_to(value) {
                        Some(equal) => present - equal,
                        None => present,
                    }
                }
                None => RoaringTreemap::new(),
            },
            Filter::Gt(key, x) => {
                self.numeric(key, universe, Bound::Excluded(*x), Bound::Unbounded)
            }
            Filter::Gte(key, x) => {
                self.numeric(key, universe, Bound::Included(*x), Bound::Unbounded)
            }
            Filter::Lt(key, x) => {
                self.numeric(key, universe, Bound::Unbounded, Bound::Excluded(*x))
            }
            Filter::Lte(key, x) => {
                self.numeric(key, universe, Bound::Unbounded, Bound::Included(*x))
            }
            Filter::In(key, values) => match self.postings(key) {
                Some(p) => p.equal_to_any(values) & universe,
                None => RoaringTreemap::new(),
            },
            Filter::Nin(key, values) => match self.postings(key) {
                Some(p) => (universe & &p.present) - p.equal_to_any(values),
                None => RoaringTreemap::new(),
            },
            Filter::Exists(key, true) => match self.postings(key) {
                Some(p) => universe & &p.present,
                None => RoaringTreemap::new(),
            },
            Filter::Exists(key, false) => match self.postings(key) {
                Some(p) => universe - &p.present,
                None => universe.clone(),
            },
            Filter::StartsWith(key, prefix) => match self.postings(key) {
                Some(p) => p.strings_starting_with(prefix) & universe,
                None => RoaringTreemap::new(),
            },
        }
    }

    /// Postings of `key`; `None` when no live document has it or it is non-filterable (then it
    /// is never inserted, so it is absent here too).
    fn postings(&self, key: &str) -> Option<&KeyPostings> {
        self.keys.get(key)
    }

    fn numeric(
        &self,
        key: &str,
        universe: &RoaringTreemap,
        low: Bound<f64>,
        high: Bound<f64>,
    ) -> RoaringTreemap {
        match self.postings(key) {
            Some(p) => p.numbers_in(low, high) & universe,
            None => RoaringTreemap::new(),
        }
    }
}

/// Whether one document matches `filter`, evaluated directly on the metadata.
///
/// This is the executable specification of the filter semantics, used to test [`FilterIndex`];
/// it is also handy for re-checking a handful of candidates without touching the index. Keys in
/// `non_filterable` behave as absent.
pub fn matches(filter: &Filter, metadata: &Metadata, non_filterable: &HashSet<String>) -> bool {
    let lookup = |key: &str| {
        if non_filterable.contains(key) {
            None
        } else {
            metadata.get(key)
        }
    };
    let any_scalar = |key: &str, predicate: &dyn Fn(&MetaValue) -> bool| {
        lookup(key).is_some_and(|value| scalars(value).any(predicate))
    };
    let number_where = |key: &str, predicate: &dyn Fn(f64) -> bool| {
        any_scalar(key, &|v| matches!(v, MetaValue::Num(n) if predicate(*n)))
    };
    match filter {
        Filter::And(children) => children
            .iter()
            .all(|c| matches(c, metadata, non_filterable)),
        Filter::Or(children) => children
            .iter()
            .any(|c| matches(c, metadata, non_filterable)),
        Filter::Eq(key, operand) => any_scalar(key, &|v| scalar_equals(v, operand)),
        Filter::Ne(key, operand) => {
            lookup(key).is_some() && !any_scalar(key, &|v| scalar_equals(v, operand))
        }
        Filter::Gt(key, x) => number_where(key, &|n| n > *x),
        Filter::Gte(key, x) => number_where(key, &|n| n >= *x),
        Filter::Lt(key, x) => number_where(key, &|n| n < *x),
        Filter::Lte(key, x) => number_where(key, &|n| n <= *x),
        Filter::In(key, operands) => {
            any_scalar(key, &|v| operands.iter().any(|o| scalar_equals(v, o)))
        }
        Filter::Nin(key, operands) => {
            lookup(key).is_some()
                && !any_scalar(key, &|v| operands.iter().any(|o| scalar_equals(v, o)))
        }
        Filter::Exists(key, wanted) => lookup(key).is_some() == *wanted,
        Filter::StartsWith(key, prefix) => any_scalar(
            key,
            &|v| matches!(v, MetaValue::Str(s) if s.starts_with(prefix.as_str())),
        ),
    }
}

/// Typed equality of a stored scalar and an operand; different types are never equal.
fn scalar_equals(value: &MetaValue, operand: &FilterValue) -> bool {
    match (value, operand) {
        (MetaValue::Str(a), FilterValue::Str(b)) => a == b,
        (MetaValue::Num(a), FilterValue::Num(b)) => a == b,
        (MetaValue::Bool(a), FilterValue::Bool(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(v: &str) -> MetaValue {
        MetaValue::Str(v.to_owned())
    }

    fn n(v: f64) -> MetaValue {
        MetaValue::Num(v)
    }

    fn doc(entries: &[(&str, MetaValue)]) -> Metadata {
        Metadata(
            entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    fn fs(v: &str) -> FilterValue {
        FilterValue::Str(v.to_owned())
    }

    fn key(k: &str) -> String {
        k.to_owned()
    }

    /// Checks the structural invariants: no empty bitmaps anywhere, no key without documents.
    fn assert_no_empty_postings(index: &FilterIndex) {
        for (key, p) in &index.keys {
            assert!(!p.present.is_empty(), "key {key} kept with no documents");
            assert!(
                p.strings.values().all(|ids| !ids.is_empty()),
                "{key}: empty string posting"
            );
            assert!(
                p.numbers.values().all(|ids| !ids.is_empty()),
                "{key}: empty number posting"
            );
            assert!(
                p.bools.values().all(|ids| !ids.is_empty()),
                "{key}: empty bool posting"
            );
        }
    }

    /// The example catalogue: genre/year/price scalars plus list-valued tags and ratings.
    fn catalogue() -> Vec<Metadata> {
        vec![
            // 0
            doc(&[
                ("genre", s("drama")),
                ("year", n(2019.0)),
                ("price", n(9.99)),
                ("tags", MetaValue::List(vec![s("classic"), s("award")])),
                ("notes", s("long free text")),
            ]),
            // 1
            doc(&[
                ("genre", s("documentary")),
                ("year", n(2021.0)),
                ("price", n(0.0)),
                ("tags", MetaValue::List(vec![s("nature")])),
                ("ratings", MetaValue::List(vec![n(4.0), n(5.0)])),
            ]),
            // 2
            doc(&[
                ("genre", s("comedy")),
                ("year", n(2021.0)),
                ("price", s("free")),
                (
                    "ratings",
                    MetaValue::List(vec![n(1.0), s("5"), MetaValue::Bool(true)]),
                ),
                ("streaming", MetaValue::Bool(true)),
            ]),
            // 3
            doc(&[
                ("genre", MetaValue::List(vec![s("drama"), s("comedy")])),
                ("year", n(2023.0)),
                ("price", n(-0.0)),
                ("tags", MetaValue::List(vec![])),
                ("streaming", MetaValue::Bool(false)),
            ]),
            // 4: no metadata at all
            doc(&[]),
        ]
    }

    fn ids(list: &[u64]) -> RoaringTreemap {
        list.iter().copied().collect()
    }

    #[test]
    fn number_keys_order_and_compare_as_the_filter_language_does() {
        assert_eq!(NumKey::new(-0.0), NumKey::new(0.0));
        assert_ne!(NumKey::new(1.0), NumKey::new(2.0));
        assert_eq!(
            NumKey::new(-1.5).partial_cmp(&NumKey::new(2.0)),
            Some(Ordering::Less)
        );
        assert!(NumKey::new(f64::INFINITY) > NumKey::new(f64::MAX));
    }

    #[test]
    fn example_table() {
        let docs = catalogue();
        let non_filterable = HashSet::from([key("notes")]);
        let mut index = FilterIndex::new(non_filterable.iter().cloned());
        for (id, metadata) in (0u64..).zip(&docs) {
            index.insert(id, metadata);
        }
        let universe = ids(&[0, 1, 2, 3, 4]);

        let cases: Vec<(Filter, &[u64])> = vec![
            (Filter::Eq(key("genre"), fs("drama")), &[0, 3]),
            (Filter::Eq(key("genre"), fs("comedy")), &[2, 3]),
            (Filter::Ne(key("genre"), fs("drama")), &[1, 2]),
            (Filter::Eq(key("year"), FilterValue::Num(2021.0)), &[1, 2]),
            // Typed: the string "5" is not the number 5 and vice versa.
            (Filter::Eq(key("ratings"), FilterValue::Num(5.0)), &[1]),
            (Filter::Eq(key("ratings"), fs("5")), &[2]),
            (Filter::Eq(key("ratings"), FilterValue::Bool(true)), &[2]),
            (Filter::Eq(key("streaming"), FilterValue::Bool(false)), &[3]),
            // -0.0 and 0.0 are the same number.
            (Filter::Eq(key("price"), FilterValue::Num(0.0)), &[1, 3]),
            (Filter::Eq(key("price"), FilterValue::Num(-0.0)), &[1, 3]),
            (Filter::Gt(key("price"), -0.0), &[0]),
            (Filter::Gte(key("price"), 0.0), &[0, 1, 3]),
            (Filter::Lt(key("price"), 10.0), &[0, 1, 3]),
            (Filter::Gt(key("year"), 2019.0), &[1, 2, 3]),
            (Filter::Gte(key("year"), 2019.0), &[0, 1, 2, 3]),
            (Filter::Lt(key("year"), 2021.0), &[0]),
            (Filter::Lte(key("year"), 2021.0), &[0, 1, 2]),
            // Range operators never match strings.
            (Filter::Lt(key("genre"), f64::INFINITY), &[]),
            (Filter::Gte(key("ratings"), 4.5), &[1]),
            (Filter::Gt(key("ratings"), f64::NAN), &[]),
            (
                Filter::In(key("genre"), vec![fs("comedy"), fs("documentary")]),
                &[1, 2, 3],
            ),
            (
                Filter::In(key("year"), vec![fs("2021"), FilterValue::Num(2023.0)]),
                &[3],
            ),
            (
                Filter::Nin(key("genre"), vec![fs("comedy"), fs("documentary")]),
                &[0],
            ),
            (Filter::Nin(key("tags"), vec![fs("classic")]), &[1, 3]),
            (Filter::Exists(key("tags"), true), &[0, 1, 3]),
            (Filter::Exists(key("tags"), false), &[2, 4]),
            (Filter::Exists(key("missing"), false), &[0, 1, 2, 3, 4]),
            (Filter::StartsWith(key("genre"), key("d")), &[0, 1, 3]),
            (Filter::StartsWith(key("genre"), key("dr")), &[0, 3]),
            (
                Filter::StartsWith(key("genre"), String::new()),
                &[0, 1, 2, 3],
            ),
            (Filter::StartsWith(key("tags"), key("na")), &[1]),
            (Filter::StartsWith(key("price"), key("fr")), &[2]),
            // Non-filterable keys behave as absent.
            (Filter::Exists(key("notes"), true), &[]),
            (Filter::Eq(key("notes"), fs("long free text")), &[]),
            (Filter::Exists(key("notes"), false), &[0, 1, 2, 3, 4]),
            (Filter::And(vec![]), &[0, 1, 2, 3, 4]),
            (Filter::Or(vec![]), &[]),
            (
                Filter::And(vec![
                    Filter::Eq(key("year"), FilterValue::Num(2021.0)),
                    Filter::Eq(key("genre"), fs("comedy")),
                ]),
                &[2],
            ),
            (
                Filter::Or(vec![
                    Filter::Eq(key("genre"), fs("documentary")),
                    Filter::Gte(key("year"), 2023.0),
                ]),
                &[1, 3],
            ),
            (
                Filter::And(vec![
                    Filter::Or(vec![
                        Filter::Eq(key("streaming"), FilterValue::Bool(true)),
                        Filter::Exists(key("streaming"), false),
                    ]),
                    Filter::Lte(key("year"), 2021.0),
                ]),
                &[0, 1, 2],
            ),
        ];
        for (filter, expected) in cases {
            let got = index.evaluate(&filter, &universe);
            assert_eq!(got, ids(expected), "{filter:?}");
            let oracle: Vec<u64> = (0u64..)
                .zip(&docs)
                .filter(|(_, m)| matches(&filter, m, &non_filterable))
                .map(|(id, _)| id)
                .collect();
            assert_eq!(oracle, expected, "oracle disagrees on {filter:?}");
        }

        // The universe restricts every answer, including negations.
        let part = ids(&[1, 2]);
        assert_eq!(
            index.evaluate(&Filter::Exists(key("tags"), false), &part),
            ids(&[2])
        );
        assert_eq!(
            index.evaluate(&Filter::Ne(key("genre"), fs("x")), &part),
            part
        );
        assert_eq!(index.evaluate(&Filter::And(vec![]), &part), part);

        for (id, metadata) in (0u64..).zip(&docs) {
            index.remove(id, metadata);
            assert_no_empty_postings(&index);
        }
        assert!(index.keys.is_empty());
        assert_eq!(
            index.evaluate(&Filter::Exists(key("genre"), false), &universe),
            universe
        );
    }

    #[test]
    fn removal_keeps_values_shared_with_other_documents() {
        let mut index = FilterIndex::new([]);
        let a = doc(&[("k", MetaValue::List(vec![s("x"), s("x"), n(1.0)]))]);
        let b = doc(&[("k", s("x"))]);
        index.insert(7, &a);
        index.insert(1 << 40, &b);
        index.remove(7, &a);
        assert_no_empty_postings(&index);
        let universe = ids(&[7, 1 << 40]);
        assert_eq!(
            index.evaluate(&Filter::Eq(key("k"), fs("x")), &universe),
            ids(&[1 << 40])
        );
        assert!(index
            .evaluate(&Filter::Gte(key("k"), 0.0), &universe)
            .is_empty());
        assert_eq!(index.keys.get("k").map(|p| p.numbers.len()), Some(0));
    }

    // -----------------------------------------------------------------------------------------
    // Property test: the index agrees with the direct evaluator on random data and filters.
    // -----------------------------------------------------------------------------------------

    /// Few keys and few distinct values, so filters hit often and values collide across
    /// documents. Key "n" is configured non-filterable.
    const KEYS: &[&str] = &["a", "b", "c", "n"];
    const STRINGS: &[&str] = &["", "x", "xy", "y", "5"];
    const NUMBERS: &[f64] = &[-1.5, -0.0, 0.0, 1.0, 5.0, f64::INFINITY, f64::NAN];

    fn keys() -> impl Strategy<Value = String> {
        prop::sample::select(KEYS).prop_map(str::to_owned)
    }

    fn scalar_values() -> impl Strategy<Value = MetaValue> {
        prop_oneof![
            prop::sample::select(STRINGS).prop_map(|v| MetaValue::Str(v.to_owned())),
            prop::sample::select(NUMBERS).prop_map(MetaValue::Num),
            any::<bool>().prop_map(MetaValue::Bool),
        ]
    }

    fn meta_values() -> impl Strategy<Value = MetaValue> {
        prop_oneof![
            3 => scalar_values(),
            1 => prop::collection::vec(scalar_values(), 0..4).prop_map(MetaValue::List),
        ]
    }

    /// Documents may repeat a key (malformed, but must still agree with `Metadata::get`).
    fn documents() -> impl Strategy<Value = Metadata> {
        prop::collection::vec((keys(), meta_values()), 0..4).prop_map(Metadata)
    }

    fn operands() -> impl Strategy<Value = FilterValue> {
        prop_oneof![
            prop::sample::select(STRINGS).prop_map(|v| FilterValue::Str(v.to_owned())),
            prop::sample::select(NUMBERS).prop_map(FilterValue::Num),
            any::<bool>().prop_map(FilterValue::Bool),
        ]
    }

    fn numbers() -> impl Strategy<Value = f64> {
        prop::sample::select(NUMBERS)
    }

    fn filters() -> impl Strategy<Value = Filter> {
        let leaf = prop_oneof![
            (keys(), operands()).prop_map(|(k, v)| Filter::Eq(k, v)),
            (keys(), operands()).prop_map(|(k, v)| Filter::Ne(k, v)),
            (keys(), numbers()).prop_map(|(k, v)| Filter::Gt(k, v)),
            (keys(), numbers()).prop_map(|(k, v)| Filter::Gte(k, v)),
            (keys(), numbers()).prop_map(|(k, v)| Filter::Lt(k, v)),
            (keys(), numbers()).prop_map(|(k, v)| Filter::Lte(k, v)),
            (keys(), prop::collection::vec(operands(), 0..3)).prop_map(|(k, v)| Filter::In(k, v)),
            (keys(), prop::collection::vec(operands(), 0..3)).prop_map(|(k, v)| Filter::Nin(k, v)),
            (keys(), any::<bool>()).prop_map(|(k, v)| Filter::Exists(k, v)),
            (keys(), prop::sample::select(STRINGS))
                .prop_map(|(k, v)| Filter::StartsWith(k, v.to_owned())),
        ];
        leaf.prop_recursive(3, 16, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Filter::And),
                prop::collection::vec(inner, 0..3).prop_map(Filter::Or),
            ]
        })
    }

    /// What happens to a document after the initial load.
    #[derive(Debug, Clone)]
    enum Change {
        Keep,
        Delete,
        Replace(Metadata),
    }

    fn changes() -> impl Strategy<Value = Change> {
        prop_oneof![
            2 => Just(Change::Keep),
            1 => Just(Change::Delete),
            1 => documents().prop_map(Change::Replace),
        ]
    }

    /// Spreads ids over the 64-bit space so the treemap's high-word partitioning is exercised.
    fn id_of(position: usize) -> u64 {
        let position = position as u64;
        (position % 3) << 33 | position
    }

    fn check_agrees(
        index: &FilterIndex,
        live: &[(u64, Metadata)],
        non_filterable: &HashSet<String>,
        filters: &[Filter],
        in_universe: &[bool],
    ) -> Result<(), TestCaseError> {
        let universe: RoaringTreemap = live
            .iter()
            .zip(in_universe.iter().cycle())
            .filter(|(_, inside)| **inside)
            .map(|((id, _), _)| *id)
            .collect();
        for filter in filters {
            let expected: RoaringTreemap = live
                .iter()
                .filter(|(id, m)| universe.contains(*id) && matches(filter, m, non_filterable))
                .map(|(id, _)| *id)
                .collect();
            prop_assert_eq!(index.evaluate(filter, &universe), expected, "{:?}", filter);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn index_agrees_with_direct_evaluation(
            docs in prop::collection::vec(documents(), 0..24),
            changes in prop::collection::vec(changes(), 24),
            filters in prop::collection::vec(filters(), 1..8),
            in_universe in prop::collection::vec(prop::bool::weighted(0.8), 1..24),
        ) {
            let non_filterable = HashSet::from([key("n")]);
            let mut index = FilterIndex::new(non_filterable.iter().cloned());
            let mut live: Vec<(u64, Metadata)> =
                docs.into_iter().enumerate().map(|(i, m)| (id_of(i), m)).collect();
            for (id, metadata) in &live {
                index.insert(*id, metadata);
            }
            check_agrees(&index, &live, &non_filterable, &filters, &in_universe)?;

            let mut after = Vec::new();
            for ((id, metadata), change) in live.drain(..).zip(changes.iter().cycle()) {
                match change {
                    Change::Keep => after.push((id, metadata)),
                    Change::Delete => index.remove(id, &metadata),
                    Change::Replace(new) => {
                        index.remove(id, &metadata);
                        index.insert(id, new);
                        after.push((id, new.clone()));
                    }
                }
            }
            assert_no_empty_postings(&index);
            check_agrees(&index, &after, &non_filterable, &filters, &in_universe)?;

            for (id, metadata) in &after {
                index.remove(*id, metadata);
            }
            prop_assert!(index.keys.is_empty(), "postings left after removing everything");
        }
    }
}
