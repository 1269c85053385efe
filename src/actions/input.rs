//! Reading flat action inputs with field-level messages ("parse, don't validate": an
//! action's typed input exists only once every field passed).

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use serde_json::{Map, Value};

/// Field name → what is wrong with it.
pub type FieldErrors = BTreeMap<String, String>;

/// A flat JSON object being read field by field; errors accumulate.
pub struct Fields<'a> {
    obj: &'a Map<String, Value>,
    read: Vec<&'static str>,
    errors: FieldErrors,
}

static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

impl<'a> Fields<'a> {
    /// Starts reading `input`, which must be a JSON object.
    pub fn new(input: &'a Value) -> Fields<'a> {
        let mut errors = FieldErrors::new();
        let obj = match input.as_object() {
            Some(o) => o,
            None => {
                errors.insert("body".into(), "must be a JSON object".into());
                &EMPTY
            }
        };
        Fields {
            obj,
            read: Vec::new(),
            errors,
        }
    }

    /// Records a problem with `name`.
    pub fn error(&mut self, name: &str, message: impl Into<String>) {
        self.errors
            .entry(name.to_string())
            .or_insert_with(|| message.into());
    }

    /// `true` when `name` is present and not null/empty.
    pub fn has(&self, name: &str) -> bool {
        match self.obj.get(name) {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.trim().is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            Some(_) => true,
        }
    }

    fn raw(&mut self, name: &'static str) -> Option<&'a Value> {
        self.read.push(name);
        match self.obj.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(v) => Some(v),
        }
    }

    /// An optional string of at most `max` characters (numbers are accepted as text).
    pub fn opt_str(&mut self, name: &'static str, max: usize) -> Option<String> {
        let v = self.raw(name)?;
        let s = match v {
            Value::String(s) => s.trim().to_string(),
            Value::Number(n) => n.to_string(),
            _ => {
                self.error(name, "must be a string");
                return None;
            }
        };
        if s.chars().count() > max {
            self.error(name, format!("must be at most {max} characters"));
            return None;
        }
        Some(s)
    }

    /// A required string.
    pub fn req_str(&mut self, name: &'static str, max: usize) -> String {
        let present = self.has(name);
        match self.opt_str(name, max) {
            Some(s) => s,
            None => {
                if !present {
                    self.error(name, "is required");
                }
                String::new()
            }
        }
    }

    /// A list given as an array of strings or one comma-separated string.
    pub fn list(&mut self, name: &'static str, max_items: usize) -> Vec<String> {
        let Some(v) = self.raw(name) else {
            return Vec::new();
        };
        let items: Vec<String> = match v {
            Value::String(s) => s
                .split([',', ';'])
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
            Value::Array(a) if a.iter().all(Value::is_string) => a
                .iter()
                .filter_map(Value::as_str)
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            _ => {
                self.error(
                    name,
                    "must be a comma-separated string or an array of strings",
                );
                return Vec::new();
            }
        };
        if items.len() > max_items {
            self.error(name, format!("must list at most {max_items} items"));
        }
        items
    }

    /// A list of e-mail addresses.
    pub fn emails(&mut self, name: &'static str, required: bool) -> Vec<String> {
        let present = self.has(name);
        let list = self.list(name, 100);
        if required && list.is_empty() && !self.errors.contains_key(name) {
            self.error(
                name,
                if present {
                    "must list at least one e-mail address"
                } else {
                    "is required"
                },
            );
        }
        if let Some(bad) = list.iter().find(|e| !looks_like_email(e)) {
            self.error(name, format!("`{bad}` is not an e-mail address"));
        }
        list
    }

    /// A boolean (`true`/`false`, also as strings).
    pub fn bool(&mut self, name: &'static str, default: bool) -> bool {
        match self.raw(name) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
            Some(_) => {
                self.error(name, "must be true or false");
                default
            }
        }
    }

    /// An integer within `min..=max`.
    pub fn int(&mut self, name: &'static str, default: i64, min: i64, max: i64) -> i64 {
        let n = match self.raw(name) {
            None => return default,
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            Some(_) => None,
        };
        match n {
            Some(n) if (min..=max).contains(&n) => n,
            _ => {
                self.error(name, format!("must be an integer from {min} to {max}"));
                default
            }
        }
    }

    /// One of `options` (or `default` when absent).
    pub fn one_of(
        &mut self,
        name: &'static str,
        options: &[&str],
        default: Option<&str>,
    ) -> String {
        match self.opt_str(name, 64) {
            Some(s) if options.contains(&s.as_str()) => s,
            Some(_) => {
                self.error(name, format!("must be one of: {}", options.join(", ")));
                String::new()
            }
            None => match default {
                Some(d) => d.to_string(),
                None => {
                    self.error(
                        name,
                        format!("is required (one of: {})", options.join(", ")),
                    );
                    String::new()
                }
            },
        }
    }

    /// An RFC 3339 date-time with offset, e.g. `2026-12-01T09:00:00+08:00`.
    pub fn datetime(
        &mut self,
        name: &'static str,
        required: bool,
    ) -> Option<DateTime<FixedOffset>> {
        let present = self.has(name);
        let s = self.opt_str(name, 64);
        match s {
            Some(s) => match DateTime::parse_from_rfc3339(&s) {
                Ok(t) => Some(t),
                Err(_) => {
                    self.error(
                        name,
                        "must be an ISO 8601 date-time with offset, e.g. 2026-12-01T09:00:00+08:00",
                    );
                    None
                }
            },
            None => {
                if required && !present {
                    self.error(name, "is required");
                }
                None
            }
        }
    }

    /// Ends reading: unknown fields are errors too (they are usually typos).
    pub fn finish(mut self) -> Result<(), FieldErrors> {
        let unknown: Vec<String> = self
            .obj
            .keys()
            .filter(|k| !self.read.contains(&k.as_str()))
            .cloned()
            .collect();
        for k in unknown {
            let mut known = self.read.clone();
            known.sort_unstable();
            known.dedup();
            self.error(
                &k,
                format!("unknown field; this action takes: {}", known.join(", ")),
            );
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }
}

/// A plausible address: one `@`, something on each side, a dot in the domain, no spaces.
pub fn looks_like_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && s.len() <= 254
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_problem_is_reported_by_field() {
        let input = json!({"to": "a@example.com, nope", "limit": "200", "extra": 1});
        let mut f = Fields::new(&input);
        f.emails("to", true);
        f.req_str("subject", 10);
        f.int("limit", 10, 1, 50);
        let errors = f.finish().expect_err("invalid");
        assert!(errors["to"].contains("nope"));
        assert_eq!(errors["subject"], "is required");
        assert!(errors["limit"].contains("1 to 50"));
        assert!(errors["extra"].contains("unknown field"));
    }

    #[test]
    fn a_non_object_is_one_error() {
        let input = json!([1]);
        let f = Fields::new(&input);
        assert!(f.finish().expect_err("invalid").contains_key("body"));
    }
}
