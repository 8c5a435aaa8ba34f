//! The metadata filter language of QueryVectors, as a typed tree.
//!
//! The coordinator parses and validates the JSON filter into this tree (operand types, non-empty
//! lists, filterable keys); nodes only evaluate it.

use serde::{Deserialize, Serialize};

/// A scalar operand of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FilterValue {
    Str(String),
    Num(f64),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Filter {
    /// Every child matches. An empty list matches everything.
    And(Vec<Filter>),
    /// At least one child matches.
    Or(Vec<Filter>),
    /// The value (or any element of a list value) equals the operand.
    Eq(String, FilterValue),
    /// The key is present and neither the value nor any list element equals the operand.
    Ne(String, FilterValue),
    /// Numeric comparisons: the value (or any list element) is a number in the range.
    Gt(String, f64),
    Gte(String, f64),
    Lt(String, f64),
    Lte(String, f64),
    /// The value (or any element) equals one of the operands.
    In(String, Vec<FilterValue>),
    /// The key is present and no value/element equals any operand.
    Nin(String, Vec<FilterValue>),
    /// Key presence (`true`) or absence (`false`).
    Exists(String, bool),
    /// The string value (or any string element) starts with the operand.
    StartsWith(String, String),
}

impl Filter {
    /// Number of constraints in the S3 Vectors sense: each evaluated value counts once, logical
    /// wrappers are free.
    pub fn constraint_count(&self) -> usize {
        match self {
            Filter::And(children) | Filter::Or(children) => {
                children.iter().map(Filter::constraint_count).sum()
            }
            Filter::In(_, values) | Filter::Nin(_, values) => values.len(),
            Filter::Eq(..)
            | Filter::Ne(..)
            | Filter::Gt(..)
            | Filter::Gte(..)
            | Filter::Lt(..)
            | Filter::Lte(..)
            | Filter::Exists(..)
            | Filter::StartsWith(..) => 1,
        }
    }
}
