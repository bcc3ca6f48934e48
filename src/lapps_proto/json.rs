//! JSON text to a [`Value`] and back.
//!
//! Decoding runs serde_json's parser into our limit-checking visitor, so objects keep their
//! members in file order (without serde_json's `preserve_order` feature and its indexmap
//! dependency) and duplicate keys are kept as they come (lookups take the first).
//! Integers become `Int`/`UInt`, everything with a fraction or exponent `Float`.
//!
//! Encoding: non-finite floats are written as `null` (JSON has no NaN); map keys that are not
//! text are written in their string form when they are scalars (`1`, `true`, `null`) and are an
//! error when they are containers; byte strings are an error unless they are valid UTF-8 (in
//! `lossy` mode they are written with U+FFFD replacements instead, for `tostring`).
//!
//! This module must never panic on any input.

use super::de::Budget;
use super::value::{Limits, Value};

/// Parses one JSON text (surrounding whitespace allowed) within `limits`.
pub fn decode_with(text: &[u8], limits: &Limits) -> Result<Value, String> {
    if text.len() > limits.max_input {
        return Err(format!(
            "input of {} bytes exceeds the limit of {}",
            text.len(),
            limits.max_input
        ));
    }
    let budget = Budget::new(*limits);
    let mut de = serde_json::Deserializer::from_slice(text);
    let value = serde::de::DeserializeSeed::deserialize(budget.seed(), &mut de)
        .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value)
}

/// Parses one JSON text with the default [`Limits`].
pub fn decode(text: &[u8]) -> Result<Value, String> {
    decode_with(text, &Limits::default())
}

/// Output options.
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    /// Spaces per level; `None` writes compact JSON on one line.
    pub indent: Option<usize>,
    /// Write byte strings that are not UTF-8 with replacement characters instead of failing.
    pub lossy: bool,
    /// Stop with an error once the text passes this many bytes (the room a Lua state has
    /// left: indentation makes the text of a deep tree many times its size).
    pub max_output: Option<usize>,
}

/// Compact JSON.
pub fn encode(value: &Value) -> Result<String, String> {
    encode_with(value, Style::default())
}

/// JSON in the given style.
pub fn encode_with(value: &Value, style: Style) -> Result<String, String> {
    let mut w = Writer {
        out: String::new(),
        style,
    };
    w.value(value, 0)?;
    Ok(w.out)
}

struct Writer {
    out: String,
    style: Style,
}

impl Writer {
    /// Err once the text would pass `max_output` with `more` bytes added.
    fn room_for(&self, more: usize) -> Result<(), String> {
        match self.style.max_output {
            Some(max) if self.out.len().saturating_add(more) > max => Err(format!(
                "the JSON text would take more than the {max} bytes this state has room for"
            )),
            _ => Ok(()),
        }
    }

    fn value(&mut self, v: &Value, level: usize) -> Result<(), String> {
        self.room_for(0)?;
        match v {
            Value::Null => self.out.push_str("null"),
            Value::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => self.out.push_str(&i.to_string()),
            Value::UInt(u) => self.out.push_str(&u.to_string()),
            Value::Float(f) => self.float(*f),
            Value::Text(s) => self.string(s)?,
            Value::Bytes(b) => {
                let s = self.bytes_as_text(b)?;
                self.string(&s)?
            }
            Value::Array(a) => {
                if a.is_empty() {
                    self.out.push_str("[]");
                    return Ok(());
                }
                self.out.push('[');
                for (i, e) in a.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.newline(level + 1);
                    self.value(e, level + 1)?;
                }
                self.newline(level);
                self.out.push(']');
            }
            Value::Map(m) => {
                if m.is_empty() {
                    self.out.push_str("{}");
                    return Ok(());
                }
                self.out.push('{');
                for (i, (k, e)) in m.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.newline(level + 1);
                    self.key(k)?;
                    self.out.push(':');
                    if self.style.indent.is_some() {
                        self.out.push(' ');
                    }
                    self.value(e, level + 1)?;
                }
                self.newline(level);
                self.out.push('}');
            }
        }
        Ok(())
    }

    fn newline(&mut self, level: usize) {
        if let Some(n) = self.style.indent {
            self.out.push('\n');
            self.out
                .extend(std::iter::repeat_n(' ', n.saturating_mul(level)));
        }
    }

    fn key(&mut self, k: &Value) -> Result<(), String> {
        match k {
            Value::Text(s) => self.string(s)?,
            Value::Bytes(b) => {
                let s = self.bytes_as_text(b)?;
                self.string(&s)?
            }
            Value::Array(_) | Value::Map(_) => {
                return Err("an object key is an array or object, JSON keys are strings".into())
            }
            scalar => {
                // The key in its own JSON form, quoted: 1 -> "1", true -> "true".
                let mut inner = Writer {
                    out: String::new(),
                    style: Style::default(),
                };
                inner.value(scalar, 0)?;
                self.string(&inner.out)?
            }
        }
        Ok(())
    }

    fn bytes_as_text(&self, b: &[u8]) -> Result<String, String> {
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) if self.style.lossy => Ok(String::from_utf8_lossy(b).into_owned()),
            Err(_) => Err("a byte string that is not UTF-8 has no JSON form".into()),
        }
    }

    fn float(&mut self, f: f64) {
        if f.is_finite() {
            // serde_json (ryu) writes the shortest form that reads back to the same f64.
            match serde_json::to_string(&f) {
                Ok(s) => self.out.push_str(&s),
                Err(_) => self.out.push_str("null"),
            }
        } else {
            self.out.push_str("null");
        }
    }

    fn string(&mut self, s: &str) -> Result<(), String> {
        if self.style.max_output.is_some() {
            // Escapes take up to 6 bytes for 1 (`\u0001`): what the whole string will take.
            let escaped = s
                .bytes()
                .filter(|&b| b < 0x20 || b == b'"' || b == b'\\')
                .count();
            self.room_for(s.len() + 2 + 5 * escaped)?;
        }
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                '\u{8}' => self.out.push_str("\\b"),
                '\u{c}' => self.out.push_str("\\f"),
                c if (c as u32) < 0x20 => {
                    self.out.push_str(&format!("\\u{:04x}", c as u32));
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
        Ok(())
    }
}
