//! A small typed reader over `serde_json::Value` that remembers where it is.
//!
//! serde's derive with `deny_unknown_fields` stops at the first problem and reports it without the
//! key path, so the schema is walked by hand instead: each accessor takes the key, its default and
//! its allowed range, and records a [`Problem`] (file + dotted path + expected/got) instead of
//! failing. A reader never panics on any JSON input.

use serde_json::{Map, Value};
use std::path::{Component, Path, PathBuf};

use super::error::{Problem, ProblemKind};

/// Collects the problems of one file.
#[derive(Debug)]
pub(crate) struct Reader {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl Reader {
    pub fn new(file: &str) -> Self {
        Self {
            file: file.to_string(),
            problems: Vec::new(),
        }
    }

    pub fn problem(&mut self, kind: ProblemKind, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            kind,
            file: self.file.clone(),
            path: path.to_string(),
            message: message.into(),
        });
    }

    pub fn type_error(&mut self, path: &str, expected: &str, got: &Value) {
        self.problem(
            ProblemKind::Type,
            path,
            format!("expected {expected}, got {}", describe(got)),
        );
    }

    /// `value` as an object whose keys must all be in `known` (reported with their path).
    pub fn object<'v>(&mut self, value: &'v Value, path: &str, known: &[&str]) -> Option<Obj<'v>> {
        let Some(map) = value.as_object() else {
            self.type_error(path, "an object", value);
            return None;
        };
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                self.problem(
                    ProblemKind::UnknownKey,
                    &join(path, key),
                    format!("unknown key (known: {})", known.join(", ")),
                );
            }
        }
        Some(Obj {
            map,
            path: path.to_string(),
        })
    }

    /// `value` as an object with free-form keys (a map from names to entries).
    pub fn map<'v>(&mut self, value: &'v Value, path: &str) -> Option<&'v Map<String, Value>> {
        let map = value.as_object();
        if map.is_none() {
            self.type_error(path, "an object", value);
        }
        map
    }
}

/// A JSON object being read, with its path.
#[derive(Debug, Clone)]
pub(crate) struct Obj<'v> {
    pub map: &'v Map<String, Value>,
    pub path: String,
}

impl<'v> Obj<'v> {
    pub fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The value of `key`, treating an explicit `null` like an absent key.
    pub fn get(&self, key: &str) -> Option<&'v Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn bool(&self, r: &mut Reader, key: &str, default: bool) -> bool {
        match self.get(key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                r.type_error(&self.path_of(key), "true or false", other);
                default
            }
        }
    }

    /// A whole number in `min..=max`.
    pub fn uint(&self, r: &mut Reader, key: &str, default: u64, min: u64, max: u64) -> u64 {
        match self.get(key) {
            None => default,
            Some(v) => match whole(v).filter(|n| (min..=max).contains(n)) {
                Some(n) => n,
                None => {
                    r.type_error(&self.path_of(key), &uint_expectation(min, max), v);
                    default
                }
            },
        }
    }

    pub fn usize(&self, r: &mut Reader, key: &str, default: usize, min: usize) -> usize {
        self.usize_in(r, key, default, min, usize::MAX)
    }

    /// A count or size in `min..=max`: for values that size an allocation or a thread count up
    /// front, where a typo must be an error rather than an abort at start-up.
    pub fn usize_in(
        &self,
        r: &mut Reader,
        key: &str,
        default: usize,
        min: usize,
        max: usize,
    ) -> usize {
        let n = self.uint(r, key, default as u64, min as u64, max as u64);
        usize::try_from(n).unwrap_or(default)
    }

    /// A finite number `>= min`.
    pub fn float(&self, r: &mut Reader, key: &str, default: f64, min: f64) -> f64 {
        match self.get(key) {
            None => default,
            Some(v) => match v.as_f64().filter(|n| n.is_finite() && *n >= min) {
                Some(n) => n,
                None => {
                    r.type_error(&self.path_of(key), &format!("a number >= {min}"), v);
                    default
                }
            },
        }
    }

    pub fn opt_string(&self, r: &mut Reader, key: &str) -> Option<String> {
        match self.get(key) {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                r.type_error(&self.path_of(key), "a string", other);
                None
            }
        }
    }

    pub fn string(&self, r: &mut Reader, key: &str, default: &str) -> String {
        self.opt_string(r, key)
            .unwrap_or_else(|| default.to_string())
    }

    /// A path; relative ones are resolved against `cwd`.
    pub fn path(&self, r: &mut Reader, key: &str, default: &Path, cwd: &Path) -> PathBuf {
        match self.opt_string(r, key) {
            Some(s) if s.is_empty() => {
                r.problem(
                    ProblemKind::Type,
                    &self.path_of(key),
                    "expected a path, got \"\"",
                );
                default.to_path_buf()
            }
            // Drop `.` components so logs show `/repo/lua/apps`, not `/repo/./lua/apps`.
            Some(s) => cwd.join(
                Path::new(&s)
                    .components()
                    .filter(|c| !matches!(c, Component::CurDir))
                    .collect::<PathBuf>(),
            ),
            None => default.to_path_buf(),
        }
    }

    /// An array of strings, or `None` when absent.
    pub fn opt_string_list(&self, r: &mut Reader, key: &str) -> Option<Vec<String>> {
        let path = self.path_of(key);
        let value = self.get(key)?;
        let Some(items) = value.as_array() else {
            r.type_error(&path, "an array of strings", value);
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(s) => out.push(s.to_string()),
                None => r.type_error(&format!("{path}[{i}]"), "a string", item),
            }
        }
        Some(out)
    }

    pub fn string_list(&self, r: &mut Reader, key: &str) -> Vec<String> {
        self.opt_string_list(r, key).unwrap_or_default()
    }

    /// A nested object with its own known keys; `None` when absent or mistyped.
    pub fn object(&self, r: &mut Reader, key: &str, known: &[&str]) -> Option<Obj<'v>> {
        let value = self.get(key)?;
        r.object(value, &self.path_of(key), known)
    }
}

/// `path.key`, or `key` at the root.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `v` as a whole number >= 0: an integer, or a number written with a fraction of zero
/// (`6800.0` is the whole number its reader sees), exact up to 2^53.
pub fn whole(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(f))
            .map(|f| f as u64)
    })
}

fn uint_expectation(min: u64, max: u64) -> String {
    // Only a key with no ceiling of its own says no ceiling (a value past u32::MAX refused
    // with "a whole number >= 0" would puzzle its reader).
    if max == u64::MAX {
        format!("a whole number >= {min}")
    } else {
        format!("a whole number {min}-{max}")
    }
}

/// A short rendering of what was found: JSON text for scalars (long strings cut), a word for
/// containers.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
        Value::String(s) if s.chars().count() > 40 => {
            let cut: String = s.chars().take(40).collect();
            format!("{}...", Value::String(cut))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn describe_quotes_strings_and_names_containers() {
        assert_eq!(describe(&json!("abc")), "\"abc\"");
        assert_eq!(describe(&json!(-1.5)), "-1.5");
        assert_eq!(describe(&json!(null)), "null");
        assert_eq!(describe(&json!([1])), "an array");
        assert_eq!(describe(&json!({})), "an object");
        assert_eq!(
            describe(&json!("x".repeat(50))),
            format!("\"{}\"...", "x".repeat(40))
        );
    }

    #[test]
    fn uint_rejects_negative_fractional_and_out_of_range_numbers() {
        let v = json!({"a": -1, "b": 1.5, "c": 70000, "d": 80, "e": 6800.0, "f": 1e300});
        let mut r = Reader::new("t.json");
        let o = r.object(&v, "", &["a", "b", "c", "d", "e", "f"]).unwrap();
        assert_eq!(o.uint(&mut r, "a", 7, 0, 65535), 7);
        assert_eq!(o.uint(&mut r, "b", 7, 0, 65535), 7);
        assert_eq!(o.uint(&mut r, "c", 7, 0, 65535), 7);
        assert_eq!(o.uint(&mut r, "d", 7, 0, 65535), 80);
        // A whole number written with ".0" is one.
        assert_eq!(o.uint(&mut r, "e", 7, 0, 65535), 6800);
        assert_eq!(o.uint(&mut r, "f", 7, 0, u64::MAX), 7);
        let text: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            text,
            [
                "t.json: a: expected a whole number 0-65535, got -1",
                "t.json: b: expected a whole number 0-65535, got 1.5",
                "t.json: c: expected a whole number 0-65535, got 70000",
                "t.json: f: expected a whole number >= 0, got 1e+300",
            ]
        );
    }
}
