//! A small table-driven checker for JSON objects: which keys an object may have, what type
//! and range each must be, which are required. Errors carry JPush's codes and say which
//! field is wrong. The same tables are turned into JSON Schemas for `/openapi.json`
//! ([`object_schema`]), so what the parser accepts and what the document says cannot drift.

use serde_json::{json, Map, Value};

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
        // The push object itself is checked at the empty path; its keys are named "push.x"
        // here so the message still says where the key was.
        let path = if path.is_empty() { "push" } else { path };
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
    /// A string of at most this many bytes (UTF-8).
    StrMax(usize),
    /// A string of at most this many characters (Unicode scalar values: a CJK character, a
    /// punctuation mark and a Latin letter each count one, as JPush counts SMS text).
    CharsMax(usize),
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// An integer within the range (a numeric string is accepted too).
    Int(i64, i64),
    /// true/false; 0/1 and "true"/"false" are accepted because SDKs send them.
    Bool,
    /// Any JSON object (kept as given).
    Object,
    /// A JSON object of this table.
    Obj(&'static ObjSpec),
    /// An array of strings.
    Strings,
    /// An array of at most this many strings.
    StringsMax(usize),
    /// An array of objects.
    Objects,
    /// A string or any object.
    StrOrObject,
    /// A string or an object of this table (iOS alert).
    StrOrObj(&'static ObjSpec),
    /// An iOS badge: an integer or "N", "+N", "-N" (N ≤ 99), "" or "auto".
    Badge,
    /// The string "all" or an object of this table (audience).
    AllOr(&'static ObjSpec),
    /// The string "all" or a non-empty array of these names (platform).
    AllOrList(&'static [&'static str]),
    Any,
}

/// One key of an object.
#[derive(Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    /// What the field means, for the schema's `description`.
    pub doc: &'static str,
}

/// An optional field.
pub const fn opt(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
        doc: "",
    }
}

/// A required field: its absence is 1002 `<path> is required`.
pub const fn req(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: true,
        doc: "",
    }
}

impl Field {
    pub const fn doc(self, doc: &'static str) -> Field {
        Field { doc, ..self }
    }
}

/// What an object may hold.
pub struct ObjSpec {
    /// Its name under `components/schemas`.
    pub name: &'static str,
    pub doc: &'static str,
    pub fields: &'static [Field],
    /// At least one of these keys must be present (empty: no such rule).
    pub any_of: &'static [&'static str],
    /// Whether keys not in `fields` are kept as given instead of refused with 1009.
    pub open: bool,
}

impl ObjSpec {
    pub const fn new(name: &'static str, fields: &'static [Field]) -> ObjSpec {
        ObjSpec {
            name,
            doc: "",
            fields,
            any_of: &[],
            open: false,
        }
    }
    pub const fn doc(self, doc: &'static str) -> ObjSpec {
        ObjSpec { doc, ..self }
    }
    pub const fn any_of(self, any_of: &'static [&'static str]) -> ObjSpec {
        ObjSpec { any_of, ..self }
    }
    pub const fn open(self) -> ObjSpec {
        ObjSpec { open: true, ..self }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Checks that `obj` has only keys of `spec` (unless it is open), each of the right kind
/// (nested tables included), and the keys it requires.
pub fn check_object(path: &str, obj: &Map<String, Value>, spec: &ObjSpec) -> Checked<()> {
    for (key, value) in obj {
        match spec.fields.iter().find(|f| f.name == key) {
            Some(field) => check_value(&join(path, key), value, field.kind)?,
            None if spec.open => {}
            None => return Err(PushError::unknown_key(path, key)),
        }
    }
    if let Some(field) = spec
        .fields
        .iter()
        .find(|f| f.required && !obj.contains_key(f.name))
    {
        return Err(PushError::missing(format!(
            "{} is required",
            join(path, field.name)
        )));
    }
    if !spec.any_of.is_empty() && !spec.any_of.iter().any(|k| obj.contains_key(*k)) {
        let what = if path.is_empty() { "a push" } else { path };
        return Err(PushError::missing(format!(
            "{what} needs {}",
            spec.any_of.join(" or ")
        )));
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
        Kind::CharsMax(max) => match v.as_str().map(|s| s.chars().count()) {
            Some(n) if n > max => {
                return Err(PushError::invalid(format!(
                    "{path} is {n} characters, the limit is {max}"
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
        Kind::Obj(spec) => return check_object(path, as_object(path, v)?, spec),
        Kind::Strings => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        Kind::StringsMax(max) => match v.as_array() {
            Some(a) if a.len() > max => {
                return Err(PushError::invalid(format!(
                    "{path} has {} entries, the limit is {max}",
                    a.len()
                )))
            }
            Some(a) => a.iter().all(Value::is_string),
            None => false,
        },
        Kind::Objects => v.as_array().is_some_and(|a| a.iter().all(Value::is_object)),
        Kind::StrOrObject => v.is_string() || v.is_object(),
        Kind::StrOrObj(spec) => match v {
            Value::String(_) => true,
            Value::Object(o) => return check_object(path, o, spec),
            _ => false,
        },
        Kind::Badge => is_badge(v),
        Kind::AllOr(spec) => match v {
            Value::String(s) if s == "all" => true,
            Value::Object(o) => return check_object(path, o, spec),
            _ => false,
        },
        Kind::AllOrList(names) => match v {
            Value::String(s) if s == "all" => true,
            Value::Array(items) if !items.is_empty() => {
                if let Some(bad) = items
                    .iter()
                    .find(|i| !i.as_str().is_some_and(|s| names.contains(&s)))
                {
                    return Err(PushError::invalid(format!(
                        "{path} {bad} is not one of {}",
                        names.join(", ")
                    )));
                }
                true
            }
            _ => false,
        },
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
        Kind::Str | Kind::StrMax(_) | Kind::CharsMax(_) | Kind::OneOf(_) => "a string",
        Kind::Int(..) => "an integer",
        Kind::Bool => "true or false",
        Kind::Object | Kind::Obj(_) => "a JSON object",
        Kind::Strings | Kind::StringsMax(_) => "an array of strings",
        Kind::Objects => "an array of objects",
        Kind::StrOrObject | Kind::StrOrObj(_) => "a string or an object",
        Kind::Badge => "a badge: 0..99, or \"N\", \"+N\", \"-N\"",
        Kind::AllOr(_) => "\"all\" or an object",
        Kind::AllOrList(_) => "\"all\" or a non-empty array",
        Kind::Any => "any value",
    }
}

/// The `$ref` to `spec`'s schema, which is added (with the tables it nests) to `components`
/// (the document's `components/schemas`) if it is not there yet.
pub fn object_schema(spec: &ObjSpec, components: &mut Map<String, Value>) -> Value {
    let reference = json!({ "$ref": format!("#/components/schemas/{}", spec.name) });
    if components.contains_key(spec.name) {
        return reference;
    }
    // Placeholder first, so a table that (indirectly) nests itself does not recurse forever.
    components.insert(spec.name.to_string(), Value::Null);
    let mut properties = Map::new();
    for f in spec.fields {
        let mut s = kind_schema(f.kind, components);
        let mut doc = f.doc.to_string();
        if let Some(note) = kind_note(f.kind) {
            doc = if doc.is_empty() {
                note
            } else {
                format!("{doc} ({note})")
            };
        }
        if !doc.is_empty() {
            s["description"] = json!(doc);
        }
        properties.insert(f.name.to_string(), s);
    }
    let mut schema = json!({"type": "object", "properties": properties});
    let required: Vec<&str> = spec
        .fields
        .iter()
        .filter(|f| f.required)
        .map(|f| f.name)
        .collect();
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    if !spec.any_of.is_empty() {
        let alternatives: Vec<Value> = spec
            .any_of
            .iter()
            .map(|k| json!({"required": [k]}))
            .collect();
        schema["anyOf"] = json!(alternatives);
    }
    if !spec.open {
        schema["additionalProperties"] = json!(false);
    }
    if !spec.doc.is_empty() {
        schema["description"] = json!(spec.doc);
    }
    components.insert(spec.name.to_string(), schema);
    reference
}

/// Numeric strings the parser reads as integers (`str::trim` then `i64::from_str`).
const INT_STRING: &str = r"^\s*[+-]?[0-9]+\s*$";

fn kind_schema(kind: Kind, components: &mut Map<String, Value>) -> Value {
    match kind {
        Kind::Str => json!({"type": "string"}),
        // JSON Schema counts characters; a byte limit of n implies at most n characters, so
        // maxLength is a true (if looser) bound and the note says bytes.
        Kind::StrMax(n) => json!({"type": "string", "maxLength": n}),
        Kind::CharsMax(n) => json!({"type": "string", "maxLength": n}),
        Kind::OneOf(v) => json!({"type": "string", "enum": v}),
        Kind::Int(min, max) => {
            let mut int = json!({"type": "integer"});
            if min != i64::MIN {
                int["minimum"] = json!(min);
            }
            if max != i64::MAX {
                int["maximum"] = json!(max);
            }
            json!({"anyOf": [int, {"type": "string", "pattern": INT_STRING}]})
        }
        Kind::Bool => json!({"anyOf": [{"type": "boolean"}, {"enum": [0, 1, "true", "false"]}]}),
        Kind::Object => json!({"type": "object"}),
        Kind::Obj(spec) => object_schema(spec, components),
        Kind::Strings => json!({"type": "array", "items": {"type": "string"}}),
        Kind::StringsMax(n) => {
            json!({"type": "array", "items": {"type": "string"}, "maxItems": n})
        }
        Kind::Objects => json!({"type": "array", "items": {"type": "object"}}),
        Kind::StrOrObject => json!({"type": ["string", "object"]}),
        Kind::StrOrObj(spec) => {
            json!({"anyOf": [{"type": "string"}, object_schema(spec, components)]})
        }
        Kind::Badge => json!({"anyOf": [
            {"type": "integer", "minimum": 0, "maximum": 99},
            {"type": "string", "pattern": "^(auto|[+-]?[0-9]{1,2})?$"}
        ]}),
        Kind::AllOr(spec) => json!({"anyOf": [{"const": "all"}, object_schema(spec, components)]}),
        Kind::AllOrList(names) => json!({"anyOf": [
            {"const": "all"},
            {"type": "array", "minItems": 1, "items": {"type": "string", "enum": names}}
        ]}),
        Kind::Any => json!({}),
    }
}

/// What the schema cannot say exactly, said in words.
fn kind_note(kind: Kind) -> Option<String> {
    match kind {
        Kind::StrMax(n) => Some(format!("at most {n} bytes of UTF-8")),
        Kind::CharsMax(n) => Some(format!(
            "at most {n} characters; a Chinese character, a punctuation mark and a letter each count one"
        )),
        Kind::Int(..) => Some("an integer, or a string holding one".into()),
        Kind::Bool => Some("true or false; 0, 1, \"true\" and \"false\" are accepted too".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: ObjSpec = ObjSpec::new(
        "X",
        &[
            opt("a", Kind::Int(0, 9)),
            opt("b", Kind::Badge),
            opt("c", Kind::Bool),
            opt("d", Kind::CharsMax(8)),
        ],
    );

    fn check(v: Value) -> Checked<()> {
        check_object("x", v.as_object().unwrap(), &SPEC)
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

    #[test]
    fn characters_are_counted_not_bytes() {
        // The seed's own example: "你好,JPush" is 8 characters (12 bytes of UTF-8).
        assert!(check(json!({"d": "你好,JPush"})).is_ok());
        let e = check(json!({"d": "你好,JPush!"})).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (1003, "x.d is 9 characters, the limit is 8")
        );
    }

    const NEEDS: ObjSpec = ObjSpec::new(
        "Y",
        &[
            req("r", Kind::Str),
            opt("p", Kind::Str),
            opt("q", Kind::Str),
        ],
    )
    .any_of(&["p", "q"]);

    #[test]
    fn required_keys_and_one_of_several() {
        let check = |v: Value| check_object("y", v.as_object().unwrap(), &NEEDS);
        assert!(check(json!({"r": "", "q": ""})).is_ok());
        let e = check(json!({"q": ""})).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (1002, "y.r is required"));
        let e = check(json!({"r": ""})).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (1002, "y needs p or q"));
        let mut components = Map::new();
        assert_eq!(
            object_schema(&NEEDS, &mut components),
            json!({"$ref": "#/components/schemas/Y"})
        );
        assert_eq!(components["Y"]["required"], json!(["r"]));
        assert_eq!(
            components["Y"]["anyOf"],
            json!([{"required": ["p"]}, {"required": ["q"]}])
        );
        assert_eq!(components["Y"]["additionalProperties"], json!(false));
    }
}
