//! Payload filters (SPEC §15): a JSON document over an event — its `event`
//! type and paths into its `data` — in the MongoDB style: `{"data.amount":
//! {"$gte": 100}, "$or": [{"event": "invoice.paid"}, {"data.vip": true}]}`.
//! A bare value means `$eq`; the keys of one object must all hold.
//!
//! Operators: `$eq $neq $in $nin $gt $gte $lt $lte $exists $regex` on a
//! field, `$and $or $not` over filters. A filter is checked whole when it is
//! set — every problem is a 40000 naming the path and the operator — and
//! bounded: at most [`MAX_FILTER_BYTES`], [`MAX_DEPTH`] levels and
//! [`MAX_CONDITIONS`] conditions; `$regex` uses the `regex` crate, whose
//! matching is linear in the input (no catastrophic backtracking), with
//! patterns of at most [`MAX_PATTERN_LEN`] characters and a bounded
//! compiled size.
//!
//! Comparisons: `$eq`/`$in` compare JSON values (numbers by value, so `1`
//! equals `1.0`); `$gt`… compare two numbers, or two strings by bytes, and
//! are false otherwise; `$neq`/`$nin` hold for a missing field, as
//! MongoDB's do; `$exists: true` holds for a present field, `null` included.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::FieldError;

/// Most bytes of a filter, as JSON.
pub const MAX_FILTER_BYTES: usize = 16 * 1024;
/// Most nesting of `$and`/`$or`/`$not` and operator objects.
pub const MAX_DEPTH: usize = 16;
/// Most field conditions in one filter.
pub const MAX_CONDITIONS: usize = 256;
/// Most characters of one `$regex` pattern.
pub const MAX_PATTERN_LEN: usize = 256;
/// The most memory one compiled pattern may take.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

const FIELD_OPERATORS: &str = "$eq $neq $in $nin $gt $gte $lt $lte $exists $regex";

/// A checked filter.
#[derive(Debug, Clone)]
pub struct Filter {
    root: Node,
}

#[derive(Debug, Clone)]
enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    Field { path: Path, test: Test },
}

#[derive(Debug, Clone)]
enum Path {
    Event,
    Data(Vec<String>),
}

#[derive(Debug, Clone)]
enum Test {
    Eq(Value),
    Neq(Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Compare(Ordering, bool, Value),
    Exists(bool),
    Regex(regex::Regex),
}

/// What parsing counts while it walks the document.
struct Budget {
    conditions: usize,
}

fn error(message: impl Into<String>) -> FieldError {
    FieldError::new("filter", message)
}

impl Filter {
    /// Checks `document` and makes it a filter; every problem names the
    /// path and operator at fault.
    pub fn parse(document: &Value) -> Result<Filter, FieldError> {
        let size = document.to_string().len();
        if size > MAX_FILTER_BYTES {
            return Err(error(format!(
                "is {size} bytes; at most {MAX_FILTER_BYTES} are allowed"
            )));
        }
        let Value::Object(fields) = document else {
            return Err(error(
                "must be an object such as {\"data.amount\": {\"$gte\": 100}}",
            ));
        };
        let mut budget = Budget { conditions: 0 };
        let root = all_of(fields, "", 1, &mut budget)?;
        Ok(Filter { root })
    }

    /// Whether the filter holds for an event of `event_type` with `data`.
    pub fn matches(&self, event_type: &str, data: &Value) -> bool {
        self.root.holds(event_type, data)
    }
}

/// Every key of an object: logical operators and field paths.
fn all_of(
    fields: &Map<String, Value>,
    at: &str,
    depth: usize,
    budget: &mut Budget,
) -> Result<Node, FieldError> {
    if depth > MAX_DEPTH {
        return Err(error(format!(
            "{}nests deeper than {MAX_DEPTH} levels",
            prefix(at)
        )));
    }
    let mut nodes = Vec::with_capacity(fields.len());
    for (key, value) in fields {
        let node = match key.as_str() {
            "$and" | "$or" => {
                let Value::Array(items) = value else {
                    return Err(error(format!(
                        "{}{key} needs a non-empty array of filters",
                        prefix(at)
                    )));
                };
                if items.is_empty() {
                    return Err(error(format!(
                        "{}{key} needs a non-empty array of filters",
                        prefix(at)
                    )));
                }
                let parts = items
                    .iter()
                    .map(|item| match item {
                        Value::Object(inner) => all_of(inner, at, depth + 1, budget),
                        _ => Err(error(format!(
                            "{}{key} holds something that is not a filter object",
                            prefix(at)
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if key == "$and" {
                    Node::All(parts)
                } else {
                    Node::Any(parts)
                }
            }
            "$not" => match value {
                Value::Object(inner) => Node::Not(Box::new(all_of(inner, at, depth + 1, budget)?)),
                _ => {
                    return Err(error(format!("{}$not needs a filter object", prefix(at))));
                }
            },
            operator if operator.starts_with('$') => {
                return Err(error(format!(
                    "{}{operator} is not an operator here (use $and, $or, $not, or a field: event, data.<path>)",
                    prefix(at)
                )));
            }
            field => {
                let path = parse_path(field)?;
                field_node(&path, field, value, depth, budget)?
            }
        };
        nodes.push(node);
    }
    Ok(Node::All(nodes))
}

fn prefix(at: &str) -> String {
    if at.is_empty() {
        String::new()
    } else {
        format!("{at}: ")
    }
}

fn parse_path(field: &str) -> Result<Path, FieldError> {
    if field == "event" {
        return Ok(Path::Event);
    }
    if field == "data" {
        return Ok(Path::Data(Vec::new()));
    }
    let Some(rest) = field.strip_prefix("data.") else {
        return Err(error(format!(
            "{field} is not a field of the event: use event, data or data.<path>"
        )));
    };
    let segments: Vec<String> = rest.split('.').map(str::to_owned).collect();
    if segments.iter().any(String::is_empty) {
        return Err(error(format!("{field} has an empty path segment")));
    }
    Ok(Path::Data(segments))
}

/// A field's conditions: a bare value (`$eq`), or an object of operators
/// that must all hold.
fn field_node(
    path: &Path,
    field: &str,
    value: &Value,
    depth: usize,
    budget: &mut Budget,
) -> Result<Node, FieldError> {
    let operators = match value {
        Value::Object(operators) if operators.keys().any(|key| key.starts_with('$')) => operators,
        bare => {
            count(budget)?;
            return Ok(Node::Field {
                path: path.clone(),
                test: Test::Eq(bare.clone()),
            });
        }
    };
    let mut tests = Vec::with_capacity(operators.len());
    for (operator, operand) in operators {
        count(budget)?;
        let test = field_test(field, operator, operand, depth, budget, path)?;
        tests.push(test);
    }
    Ok(Node::All(tests))
}

fn count(budget: &mut Budget) -> Result<(), FieldError> {
    budget.conditions += 1;
    if budget.conditions > MAX_CONDITIONS {
        return Err(error(format!("has more than {MAX_CONDITIONS} conditions")));
    }
    Ok(())
}

fn field_test(
    field: &str,
    operator: &str,
    operand: &Value,
    depth: usize,
    budget: &mut Budget,
    path: &Path,
) -> Result<Node, FieldError> {
    let fail = |what: &str| error(format!("{field}: {operator} {what}"));
    let test = match operator {
        "$eq" => Test::Eq(operand.clone()),
        "$neq" => Test::Neq(operand.clone()),
        "$in" | "$nin" => {
            let Value::Array(items) = operand else {
                return Err(fail("needs an array of values"));
            };
            if operator == "$in" {
                Test::In(items.clone())
            } else {
                Test::Nin(items.clone())
            }
        }
        "$gt" | "$gte" | "$lt" | "$lte" => {
            if !matches!(operand, Value::Number(_) | Value::String(_)) {
                return Err(fail("needs a number or a string"));
            }
            let (side, or_equal) = match operator {
                "$gt" => (Ordering::Greater, false),
                "$gte" => (Ordering::Greater, true),
                "$lt" => (Ordering::Less, false),
                _ => (Ordering::Less, true),
            };
            Test::Compare(side, or_equal, operand.clone())
        }
        "$exists" => match operand {
            Value::Bool(present) => Test::Exists(*present),
            _ => return Err(fail("needs true or false")),
        },
        "$regex" => {
            let Value::String(pattern) = operand else {
                return Err(fail("needs a pattern string"));
            };
            if pattern.chars().count() > MAX_PATTERN_LEN {
                return Err(fail(&format!(
                    "pattern is longer than {MAX_PATTERN_LEN} characters"
                )));
            }
            let compiled = regex::RegexBuilder::new(pattern)
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|problem| {
                    let first_line = problem.to_string();
                    let first_line = first_line.lines().last().unwrap_or_default().to_owned();
                    fail(&format!(
                        "pattern is not a valid regular expression ({first_line})"
                    ))
                })?;
            Test::Regex(compiled)
        }
        "$not" => {
            // `{"data.x": {"$not": {"$gt": 5}}}`: the field's own conditions, negated.
            let Value::Object(inner) = operand else {
                return Err(fail("needs an object of operators"));
            };
            if depth + 1 > MAX_DEPTH {
                return Err(error(format!(
                    "{field}: nests deeper than {MAX_DEPTH} levels"
                )));
            }
            let negated = field_node(
                path,
                field,
                &Value::Object(inner.clone()),
                depth + 1,
                budget,
            )?;
            return Ok(Node::Not(Box::new(negated)));
        }
        unknown => {
            return Err(error(format!(
                "{field}: {unknown} is not an operator (known: {FIELD_OPERATORS}, $not)"
            )));
        }
    };
    Ok(Node::Field {
        path: path.clone(),
        test,
    })
}

impl Node {
    fn holds(&self, event_type: &str, data: &Value) -> bool {
        match self {
            Node::All(nodes) => nodes.iter().all(|node| node.holds(event_type, data)),
            Node::Any(nodes) => nodes.iter().any(|node| node.holds(event_type, data)),
            Node::Not(node) => !node.holds(event_type, data),
            Node::Field { path, test } => {
                let event = Value::String(event_type.to_owned());
                let found = match path {
                    Path::Event => Some(&event),
                    Path::Data(segments) => lookup(data, segments),
                };
                test.holds(found)
            }
        }
    }
}

/// The value at `segments` in `data`: object keys, and array indices.
fn lookup<'a>(data: &'a Value, segments: &[String]) -> Option<&'a Value> {
    segments
        .iter()
        .try_fold(data, |current, segment| match current {
            Value::Object(fields) => fields.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
}

fn equal(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => left == right,
    }
}

fn order(left: &Value, right: &Value) -> Option<Ordering> {
    match (left, right) {
        (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::String(a), Value::String(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        _ => None,
    }
}

impl Test {
    fn holds(&self, found: Option<&Value>) -> bool {
        match (self, found) {
            (Test::Exists(present), found) => *present == found.is_some(),
            (Test::Neq(value), found) => !found.is_some_and(|found| equal(found, value)),
            (Test::Nin(values), found) => {
                !found.is_some_and(|found| values.iter().any(|value| equal(found, value)))
            }
            (Test::Eq(value), Some(found)) => equal(found, value),
            (Test::In(values), Some(found)) => values.iter().any(|value| equal(found, value)),
            (Test::Compare(side, or_equal, value), Some(found)) => {
                order(found, value).is_some_and(|ordering| {
                    ordering == *side || (*or_equal && ordering == Ordering::Equal)
                })
            }
            (Test::Regex(pattern), Some(Value::String(text))) => pattern.is_match(text),
            // A missing field, or a pattern over what is not a string.
            (_, None) | (Test::Regex(_), Some(_)) => false,
        }
    }
}

#[cfg(test)]
mod tests;
