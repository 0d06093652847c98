//! Reading a JSON object field by field, each error naming the field by its full path
//! (`settings.ttl is invalid`). `null` is the same as absent: the PHP client sends nulls for
//! fields it was not given.

use super::reply::V2Error;
use serde_json::{Map, Value};

/// An object and where it sits in the request.
#[derive(Clone)]
pub struct At<'a> {
    pub obj: &'a Map<String, Value>,
    pub path: String,
}

impl<'a> At<'a> {
    pub fn root(obj: &'a Map<String, Value>) -> At<'a> {
        At {
            obj,
            path: String::new(),
        }
    }

    /// The full path of `key`.
    pub fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub fn invalid(&self, key: &str) -> V2Error {
        V2Error::invalid(&self.path_of(key))
    }

    /// The value of `key`, `None` when absent or null.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// A string of at most `max` characters.
    pub fn str(&self, key: &str, max: usize) -> Result<Option<&'a str>, V2Error> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s)),
            Some(_) => Err(self.invalid(key)),
        }
    }

    /// A non-empty string of at most `max` characters, required.
    pub fn req_str(&self, key: &str, max: usize) -> Result<&'a str, V2Error> {
        match self.str(key, max)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(self.invalid(key)),
        }
    }

    /// An integer in `min..=max`.
    pub fn int(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, V2Error> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .filter(|n| (min..=max).contains(n))
                .map(Some)
                .ok_or_else(|| self.invalid(key)),
        }
    }

    /// An integer in `min..=max`, given as a JSON number or a string of digits.
    pub fn int_or_text(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, V2Error> {
        match self.get(key) {
            Some(Value::String(s)) => s
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .map(Some)
                .ok_or_else(|| self.invalid(key)),
            _ => self.int(key, min, max),
        }
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, V2Error> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.invalid(key)),
        }
    }

    /// A nested object, with its path.
    pub fn obj(&self, key: &str) -> Result<Option<At<'a>>, V2Error> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(At {
                obj: o,
                path: self.path_of(key),
            })),
            Some(_) => Err(self.invalid(key)),
        }
    }

    /// An array of non-empty strings, each at most `max` characters, at most `limit` of them.
    pub fn strings(
        &self,
        key: &str,
        limit: usize,
        max: usize,
    ) -> Result<Option<Vec<String>>, V2Error> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) if items.len() <= limit => items
                .iter()
                .map(|v| match v {
                    Value::String(s) if !s.is_empty() && s.chars().count() <= max => Ok(s.clone()),
                    _ => Err(self.invalid(key)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(self.invalid(key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_name_the_full_path() {
        let v = json!({"a": {"b": "x", "n": 5, "s": "7", "z": null}, "l": ["p", ""]});
        let root = At::root(v.as_object().unwrap());
        let a = root.obj("a").unwrap().unwrap();
        assert_eq!(a.int("b", 0, 9).unwrap_err().msg, "a.b is invalid");
        assert_eq!(a.int("n", 0, 9).unwrap(), Some(5));
        assert_eq!(a.int("n", 6, 9).unwrap_err().msg, "a.n is invalid");
        assert_eq!(a.int_or_text("s", 0, 9).unwrap(), Some(7));
        assert_eq!(a.str("z", 9).unwrap(), None);
        assert_eq!(a.req_str("z", 9).unwrap_err().msg, "a.z is invalid");
        assert_eq!(a.str("b", 0).unwrap_err().msg, "a.b is invalid");
        assert_eq!(root.strings("l", 5, 5).unwrap_err().msg, "l is invalid");
        assert!(root.obj("l").is_err());
    }
}
