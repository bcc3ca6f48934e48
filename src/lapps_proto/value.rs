//! The owned value tree every encoding converts to and from, and the limits applied while
//! building one from untrusted bytes.
//!
//! Invariant kept by every constructor in this module tree: an unsigned integer that fits an
//! `i64` is `Int`; `UInt` only holds values above `i64::MAX`. So one number has one form and
//! structural equality is meaningful.

/// One CBOR/JSON/Lua value. Maps keep their members in input order (a `Vec` of pairs), may have
/// keys of any type (CBOR allows it) and are not deduplicated: lookups take the first match.
#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    /// Only above `i64::MAX`.
    UInt(u64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
}

/// Structural identity: floats compare by their bits, so a NaN equals the same NaN and
/// `0.0 != -0.0`. That is what round-trip checks need.
impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::UInt(a), Value::UInt(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::Text(a), Value::Text(b)) => a == b,
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::Array(a), Value::Array(b)) => a == b,
            (Value::Map(a), Value::Map(b)) => a == b,
            _ => false,
        }
    }
}

impl Value {
    /// An unsigned integer in its canonical form (`Int` when it fits).
    pub fn from_u64(v: u64) -> Value {
        match i64::try_from(v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::UInt(v),
        }
    }

    /// Text value from a `&str`.
    pub fn text(s: &str) -> Value {
        Value::Text(s.to_owned())
    }

    /// The first member of a map whose key is the text `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(m) => m
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The value as an exact integer: `Int`, or a `Float` with an integral value in `i64` range
    /// (Lua and JavaScript clients may hand integers over as floats).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i),
            Value::Float(f) if f.fract() == 0.0 && f >= -(2f64.powi(63)) && f < 2f64.powi(63) => {
                Some(f as i64)
            }
            _ => None,
        }
    }

    /// The JSON type name, as `nljson.typename` reports it (`"binary"` for byte strings).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) | Value::UInt(_) | Value::Float(_) => "number",
            Value::Text(_) => "string",
            Value::Bytes(_) => "binary",
            Value::Array(_) => "array",
            Value::Map(_) => "object",
        }
    }
}

/// Bounds on what a decoder builds from untrusted input. Every decoder checks them *before*
/// allocating, so a small input cannot make us allocate much more than its own size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Nested arrays/maps (the top-level container is depth 1).
    pub max_depth: usize,
    /// Elements of one array, or members of one map.
    pub max_container_len: usize,
    /// Values in the whole tree (keys included): bounds memory to a multiple of this.
    pub max_total_items: usize,
    /// Input bytes.
    pub max_input: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_depth: 64,
            max_container_len: 1 << 20,
            max_total_items: 1 << 21,
            // The default `max_inbound_message_size` of a service (SPEC 1).
            max_input: 16 << 20,
        }
    }
}
