//! The QueryVectors filter language: a JSON document parsed into the typed [`Filter`] tree that
//! the nodes evaluate, with the depth and size limits of the service.

use quiver_proto::{Filter, FilterValue};
use serde_json::Value;

use super::{MAX_FILTER_CONSTRAINTS, MAX_FILTER_DEPTH};
use crate::error::ApiError;

fn filter_error(message: impl std::fmt::Display) -> ApiError {
    ApiError::validation(format!("Invalid filter: {message}"))
}

/// Parses and checks a QueryVectors filter document.
pub fn filter(
    value: &Value,
    non_filterable: &[String],
    enhanced: bool,
) -> Result<Filter, ApiError> {
    let parsed = parse_filter(value, non_filterable, enhanced, 0)?;
    let constraints = parsed.constraint_count();
    if enhanced && constraints > MAX_FILTER_CONSTRAINTS {
        return Err(filter_error(format!(
            "the filter has {constraints} constraints; at most {MAX_FILTER_CONSTRAINTS} are allowed"
        )));
    }
    Ok(parsed)
}

fn parse_filter(
    value: &Value,
    non_filterable: &[String],
    enhanced: bool,
    depth: usize,
) -> Result<Filter, ApiError> {
    if depth > MAX_FILTER_DEPTH {
        return Err(filter_error(format!(
            "nesting deeper than {MAX_FILTER_DEPTH}"
        )));
    }
    let Value::Object(map) = value else {
        return Err(filter_error("a filter must be a JSON object"));
    };
    if map.is_empty() {
        return Err(filter_error("a filter object must not be empty"));
    }
    let mut parts = Vec::with_capacity(map.len());
    for (key, operand) in map {
        let part = match key.as_str() {
            "$and" | "$or" => {
                let Value::Array(items) = operand else {
                    return Err(filter_error(format!(
                        "{key} takes a non-empty array of filters"
                    )));
                };
                if items.is_empty() {
                    return Err(filter_error(format!(
                        "{key} takes a non-empty array of filters"
                    )));
                }
                let children = items
                    .iter()
                    .map(|item| parse_filter(item, non_filterable, enhanced, depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                if key == "$and" {
                    Filter::And(children)
                } else {
                    Filter::Or(children)
                }
            }
            op if op.starts_with('$') => {
                return Err(filter_error(format!("unsupported operator {op}")));
            }
            field => {
                if non_filterable.iter().any(|k| k == field) {
                    return Err(filter_error(format!(
                        "metadata key '{field}' is non-filterable and cannot be used in a filter"
                    )));
                }
                parse_condition(field, operand, enhanced)?
            }
        };
        parts.push(part);
    }
    Ok(if parts.len() == 1 {
        parts.remove(0)
    } else {
        Filter::And(parts)
    })
}

fn scalar_operand(field: &str, op: &str, value: &Value) -> Result<FilterValue, ApiError> {
    match value {
        Value::String(s) => Ok(FilterValue::Str(s.clone())),
        Value::Bool(b) => Ok(FilterValue::Bool(*b)),
        Value::Number(n) => n
            .as_f64()
            .map(FilterValue::Num)
            .ok_or_else(|| filter_error(format!("invalid number for {op} on '{field}'"))),
        _ => Err(filter_error(format!(
            "{op} on '{field}' takes a string, number or boolean"
        ))),
    }
}

fn number_operand(field: &str, op: &str, value: &Value) -> Result<f64, ApiError> {
    value
        .as_f64()
        .ok_or_else(|| filter_error(format!("{op} on '{field}' takes a number")))
}

fn list_operand(field: &str, op: &str, value: &Value) -> Result<Vec<FilterValue>, ApiError> {
    match value {
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| scalar_operand(field, op, item))
            .collect(),
        _ => Err(filter_error(format!(
            "{op} on '{field}' takes a non-empty array of strings, numbers or booleans"
        ))),
    }
}

fn parse_condition(field: &str, operand: &Value, enhanced: bool) -> Result<Filter, ApiError> {
    let Value::Object(ops) = operand else {
        return Ok(Filter::Eq(
            field.to_owned(),
            scalar_operand(field, "$eq", operand)?,
        ));
    };
    if ops.is_empty() {
        return Err(filter_error(format!("no operator given for '{field}'")));
    }
    let f = field.to_owned();
    let mut conditions = Vec::with_capacity(ops.len());
    for (op, value) in ops {
        let condition = match op.as_str() {
            "$eq" => Filter::Eq(f.clone(), scalar_operand(field, op, value)?),
            "$ne" => Filter::Ne(f.clone(), scalar_operand(field, op, value)?),
            "$gt" => Filter::Gt(f.clone(), number_operand(field, op, value)?),
            "$gte" => Filter::Gte(f.clone(), number_operand(field, op, value)?),
            "$lt" => Filter::Lt(f.clone(), number_operand(field, op, value)?),
            "$lte" => Filter::Lte(f.clone(), number_operand(field, op, value)?),
            "$in" => Filter::In(f.clone(), list_operand(field, op, value)?),
            "$nin" => Filter::Nin(f.clone(), list_operand(field, op, value)?),
            "$exists" => match value {
                Value::Bool(b) => Filter::Exists(f.clone(), *b),
                _ => {
                    return Err(filter_error(format!(
                        "$exists on '{field}' takes a boolean"
                    )))
                }
            },
            "$startsWith" => {
                if !enhanced {
                    return Err(filter_error(
                        "$startsWith is only supported with the ENHANCED query mode",
                    ));
                }
                match value {
                    Value::String(s) => Filter::StartsWith(f.clone(), s.clone()),
                    _ => {
                        return Err(filter_error(format!(
                            "$startsWith on '{field}' takes a string"
                        )))
                    }
                }
            }
            other => return Err(filter_error(format!("unsupported operator {other}"))),
        };
        conditions.push(condition);
    }
    Ok(if conditions.len() == 1 {
        conditions.remove(0)
    } else {
        Filter::And(conditions)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_parse_to_the_tree() {
        let f = filter(
            &json!({"genre": "drama", "year": {"$gte": 2000, "$lt": 2010}}),
            &[],
            true,
        )
        .expect("valid");
        assert_eq!(
            f,
            Filter::And(vec![
                Filter::Eq("genre".into(), FilterValue::Str("drama".into())),
                Filter::And(vec![
                    Filter::Gte("year".into(), 2000.0),
                    Filter::Lt("year".into(), 2010.0)
                ]),
            ])
        );
        assert_eq!(f.constraint_count(), 3);
        for bad in [
            json!([]),
            json!({}),
            json!({"$foo": 1}),
            json!({"a": {"$gt": "x"}}),
            json!({"a": {"$in": []}}),
            json!({"$and": []}),
            json!({"$or": {"a": 1}}),
            json!({"a": {"$exists": 1}}),
            json!({"a": [1, 2]}),
            json!({"a": null}),
            json!({"note": 1}),
        ] {
            assert!(filter(&bad, &["note".to_owned()], true).is_err(), "{bad}");
        }
        let many: Vec<Value> = (0..101).map(|i| json!({"k": i})).collect();
        assert!(filter(&json!({"$or": many}), &[], true).is_err());
        assert!(filter(&json!({"a": {"$startsWith": "x"}}), &[], false).is_err());
    }

    fn eq(key: &str, value: FilterValue) -> Filter {
        Filter::Eq(key.into(), value)
    }

    #[test]
    fn every_operator_parses_to_its_node() {
        let s = |v: &str| FilterValue::Str(v.into());
        let cases = [
            (json!({"a": "x"}), eq("a", s("x"))),
            (json!({"a": true}), eq("a", FilterValue::Bool(true))),
            (json!({"a": 2.5}), eq("a", FilterValue::Num(2.5))),
            (
                json!({"a": {"$eq": false}}),
                eq("a", FilterValue::Bool(false)),
            ),
            (json!({"a": {"$ne": "y"}}), Filter::Ne("a".into(), s("y"))),
            (
                json!({"a": {"$ne": 3}}),
                Filter::Ne("a".into(), FilterValue::Num(3.0)),
            ),
            (json!({"a": {"$gt": 1}}), Filter::Gt("a".into(), 1.0)),
            (json!({"a": {"$gte": 2}}), Filter::Gte("a".into(), 2.0)),
            (json!({"a": {"$lt": 3}}), Filter::Lt("a".into(), 3.0)),
            (json!({"a": {"$lte": -4.5}}), Filter::Lte("a".into(), -4.5)),
            (
                json!({"a": {"$in": ["x", 1, true]}}),
                Filter::In(
                    "a".into(),
                    vec![s("x"), FilterValue::Num(1.0), FilterValue::Bool(true)],
                ),
            ),
            (
                json!({"a": {"$nin": [false]}}),
                Filter::Nin("a".into(), vec![FilterValue::Bool(false)]),
            ),
            (
                json!({"a": {"$exists": true}}),
                Filter::Exists("a".into(), true),
            ),
            (
                json!({"a": {"$exists": false}}),
                Filter::Exists("a".into(), false),
            ),
            (
                json!({"a": {"$startsWith": "pre"}}),
                Filter::StartsWith("a".into(), "pre".into()),
            ),
            (
                json!({"$or": [{"a": 1}, {"b": "x"}]}),
                Filter::Or(vec![eq("a", FilterValue::Num(1.0)), eq("b", s("x"))]),
            ),
            (
                json!({"$and": [{"a": 1}, {"b": "x"}]}),
                Filter::And(vec![eq("a", FilterValue::Num(1.0)), eq("b", s("x"))]),
            ),
            (
                json!({"$and": [{"a": 1}]}),
                Filter::And(vec![eq("a", FilterValue::Num(1.0))]),
            ),
        ];
        for (document, expected) in cases {
            assert_eq!(
                filter(&document, &[], true).expect("valid"),
                expected,
                "{document}"
            );
        }
        for (bad, reason) in [
            (
                json!({"a": {"$startsWith": 1}}),
                "$startsWith on 'a' takes a string",
            ),
            (
                json!({"a": {"$ne": [1]}}),
                "$ne on 'a' takes a string, number or boolean",
            ),
            (
                json!({"a": {"$in": [[1]]}}),
                "$in on 'a' takes a string, number or boolean",
            ),
            (
                json!({"a": {"$nin": "x"}}),
                "$nin on 'a' takes a non-empty array",
            ),
            (json!({"a": {"$lte": true}}), "$lte on 'a' takes a number"),
            (json!({"a": {"$regex": "x"}}), "unsupported operator $regex"),
            (json!({"a": {}}), "no operator given for 'a'"),
            (json!({"$not": {"a": 1}}), "unsupported operator $not"),
        ] {
            let message = filter(&bad, &[], true).expect_err("invalid").to_string();
            assert!(message.contains(reason), "{bad}: {message}");
        }
    }

    /// `{"$and": [ ... ]}` wrapped `levels` times around one condition.
    fn nested(levels: usize) -> Value {
        (0..levels).fold(json!({"k": 1}), |inner, _| json!({"$and": [inner]}))
    }

    #[test]
    fn depth_and_constraint_limits_are_inclusive() {
        assert!(filter(&nested(MAX_FILTER_DEPTH), &[], true).is_ok());
        let message = filter(&nested(MAX_FILTER_DEPTH + 1), &[], true)
            .expect_err("too deep")
            .to_string();
        assert!(message.contains("nesting deeper than 32"), "{message}");
        let conditions = |n: usize| -> Value {
            json!({"$or": (0..n).map(|i| json!({"k": i})).collect::<Vec<_>>()})
        };
        assert!(filter(&conditions(MAX_FILTER_CONSTRAINTS), &[], true).is_ok());
        let message = filter(&conditions(MAX_FILTER_CONSTRAINTS + 1), &[], true)
            .expect_err("too many")
            .to_string();
        assert!(
            message.contains("the filter has 101 constraints"),
            "{message}"
        );
        // The constraint limit is the ENHANCED query mode's.
        assert!(filter(&conditions(MAX_FILTER_CONSTRAINTS + 1), &[], false).is_ok());
    }
}
