//! A small table-driven checker for JSON objects: which keys an object may have and what
//! type and range each must be. Errors carry JPush's codes and say which field is wrong.

use serde_json::{Map, Value};

/// A JPush error: its code and a message that says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushError {
    pub code: u32,
    pub message: String,
}

impl PushError {
    pub fn missing(message: impl Into<String>) -> Self {
        PushError {
            code: 1002,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        PushError {
            code: 1003,
            message: message.into(),
        }
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        PushError {
            code: 1005,
            message: message.into(),
        }
    }
    pub fn unknown_key(path: &str, key: &str) -> Self {
        PushError {
            code: 1009,
            message: format!("{path}.{key} is not a supported key"),
        }
    }
}

pub type Checked<T> = Result<T, PushError>;

/// What one field must be.
#[derive(Clone, Copy)]
pub enum Kind {
    Str,
    /// A string of at most this many bytes.
    StrMax(usize),
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// An integer within the range (a numeric string is accepted too).
    Int(i64, i64),
    /// true/false; 0/1 and "true"/"false" are accepted because SDKs send them.
    Bool,
    Object,
    /// An array of strings.
    Strings,
    /// An array of objects.
    Objects,
    /// A string or an object (iOS alert, iOS sound).
    StrOrObject,
    /// An iOS badge: an integer or "N", "+N", "-N" (N ≤ 99), "" or "auto".
    Badge,
    Any,
}

pub type Spec = &'static [(&'static str, Kind)];

/// Checks that `obj` has only keys of `spec`, each of the right kind.
pub fn check_object(path: &str, obj: &Map<String, Value>, spec: Spec) -> Checked<()> {
    for (key, value) in obj {
        let Some((_, kind)) = spec.iter().find(|(k, _)| k == key) else {
            return Err(PushError::unknown_key(path, key));
        };
        check_value(&format!("{path}.{key}"), value, *kind)?;
    }
    Ok(())
}

pub fn as_object<'a>(path: &str, v: &'a Value) -> Checked<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| PushError::invalid(format!("{path} must be a JSON object")))
}

/// An integer, or a string holding one.
pub fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A boolean as SDKs send it: true/false, 0/1, "true"/"false".
pub fn bool_of(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn check_value(path: &str, v: &Value, kind: Kind) -> Checked<()> {
    let ok = match kind {
        Kind::Any => true,
        Kind::Str => v.is_string(),
        Kind::StrMax(max) => match v.as_str() {
            Some(s) if s.len() > max => {
                return Err(PushError::invalid(format!(
                    "{path} is {} bytes, the limit is {max}",
                    s.len()
                )))
            }
            Some(_) => true,
            None => false,
        },
        Kind::OneOf(allowed) => match v.as_str() {
            Some(s) if allowed.contains(&s) => true,
            _ => {
                return Err(PushError::invalid(format!(
                    "{path} must be one of {}",
                    allowed.join(", ")
                )))
            }
        },
        Kind::Int(min, max) => match int_of(v) {
            Some(n) if (min..=max).contains(&n) => true,
            _ => {
                return Err(PushError::invalid(format!(
                    "{path} must be an integer from {min} to {max}"
                )))
            }
        },
        Kind::Bool => bool_of(v).is_some(),
        Kind::Object => v.is_object(),
        Kind::Strings => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        Kind::Objects => v.as_array().is_some_and(|a| a.iter().all(Value::is_object)),
        Kind::StrOrObject => v.is_string() || v.is_object(),
        Kind::Badge => is_badge(v),
    };
    if ok {
        Ok(())
    } else {
        Err(PushError::invalid(format!(
            "{path} must be {}",
            describe(kind)
        )))
    }
}

fn is_badge(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_i64().is_some_and(|n| (0..=99).contains(&n)),
        Value::String(s) if s.is_empty() || s == "auto" => true,
        Value::String(s) => {
            let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
            !digits.is_empty() && digits.len() <= 2 && digits.bytes().all(|b| b.is_ascii_digit())
        }
        _ => false,
    }
}

fn describe(kind: Kind) -> &'static str {
    match kind {
        Kind::Str | Kind::StrMax(_) | Kind::OneOf(_) => "a string",
        Kind::Int(..) => "an integer",
        Kind::Bool => "true or false",
        Kind::Object => "a JSON object",
        Kind::Strings => "an array of strings",
        Kind::Objects => "an array of objects",
        Kind::StrOrObject => "a string or an object",
        Kind::Badge => "a badge: 0..99, or \"N\", \"+N\", \"-N\"",
        Kind::Any => "any value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SPEC: Spec = &[
        ("a", Kind::Int(0, 9)),
        ("b", Kind::Badge),
        ("c", Kind::Bool),
    ];

    fn check(v: Value) -> Checked<()> {
        check_object("x", v.as_object().unwrap(), SPEC)
    }

    #[test]
    fn kinds_and_unknown_keys() {
        assert!(check(json!({"a": 3, "b": "+1", "c": 1})).is_ok());
        assert!(check(json!({"a": "3", "b": 5, "c": "false"})).is_ok());
        assert_eq!(check(json!({"a": 10})).unwrap_err().code, 1003);
        assert!(check(json!({"a": 10})).unwrap_err().message.contains("x.a"));
        assert_eq!(check(json!({"b": "+100"})).unwrap_err().code, 1003);
        assert_eq!(check(json!({"c": 2})).unwrap_err().code, 1003);
        let e = check(json!({"zzz": 1})).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (1009, "x.zzz is not a supported key")
        );
    }
}
