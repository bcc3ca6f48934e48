//! One serde visitor that builds a [`Value`] from any self-describing deserializer (ciborium for
//! CBOR, serde_json for JSON), enforcing [`Limits`] while it builds.
//!
//! It owns the limit checks for decoders; it must never size an allocation from a length the
//! input declares (a hostile header can claim 2^64 elements): vectors grow as elements arrive.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};

use super::value::{Limits, Value};

/// Shared across one decode: the limits and the count of values built so far.
pub(crate) struct Budget {
    limits: Limits,
    items: Cell<usize>,
}

impl Budget {
    pub(crate) fn new(limits: Limits) -> Budget {
        Budget {
            limits,
            items: Cell::new(0),
        }
    }

    /// The top-level seed.
    pub(crate) fn seed(&self) -> Seed<'_> {
        Seed {
            budget: self,
            depth: 0,
        }
    }

    fn take_item<E: de::Error>(&self) -> Result<(), E> {
        let n = self.items.get() + 1;
        if n > self.limits.max_total_items {
            return Err(E::custom(format_args!(
                "more than {} values in total",
                self.limits.max_total_items
            )));
        }
        self.items.set(n);
        Ok(())
    }
}

/// Builds one value at nesting `depth` (number of enclosing containers).
#[derive(Clone, Copy)]
pub(crate) struct Seed<'a> {
    budget: &'a Budget,
    depth: usize,
}

impl Seed<'_> {
    fn enter<E: de::Error>(self) -> Result<Self, E> {
        let depth = self.depth + 1;
        if depth > self.budget.limits.max_depth {
            return Err(E::custom(format_args!(
                "nesting deeper than {}",
                self.budget.limits.max_depth
            )));
        }
        Ok(Seed {
            budget: self.budget,
            depth,
        })
    }

    fn check_len<E: de::Error>(self, len: usize) -> Result<(), E> {
        if len > self.budget.limits.max_container_len {
            return Err(E::custom(format_args!(
                "a container with more than {} elements",
                self.budget.limits.max_container_len
            )));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// A big integer (CBOR bignum tag or a negative below `i64::MIN`) that has no exact `Value`
/// form becomes the nearest float: Lua sees numbers as `f64` anyway.
pub(crate) fn from_i128(v: i128) -> Value {
    if let Ok(i) = i64::try_from(v) {
        Value::Int(i)
    } else if let Ok(u) = u64::try_from(v) {
        Value::UInt(u)
    } else {
        Value::Float(v as f64)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a CBOR or JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.budget.take_item()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.budget.take_item()?;
        Ok(Value::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.budget.take_item()?;
        Ok(Value::from_u64(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        self.budget.take_item()?;
        Ok(from_i128(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        self.budget.take_item()?;
        Ok(match u64::try_from(v) {
            Ok(u) => Value::from_u64(u),
            Err(_) => Value::Float(v as f64),
        })
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.budget.take_item()?;
        Ok(Value::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.budget.take_item()?;
        Ok(Value::Text(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.budget.take_item()?;
        Ok(Value::Text(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        self.budget.take_item()?;
        Ok(Value::Bytes(v.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Value, E> {
        self.budget.take_item()?;
        Ok(Value::Bytes(v))
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.budget.take_item()?;
        Ok(Value::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.budget.take_item()?;
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut acc: A) -> Result<Value, A::Error> {
        self.budget.take_item()?;
        let inner = self.enter()?;
        let mut out = Vec::new();
        while let Some(v) = acc.next_element_seed(inner)? {
            out.push(v);
            self.check_len(out.len())?;
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut acc: A) -> Result<Value, A::Error> {
        self.budget.take_item()?;
        let inner = self.enter()?;
        let mut out = Vec::new();
        while let Some(k) = acc.next_key_seed(inner)? {
            let v = acc.next_value_seed(inner)?;
            out.push((k, v));
            self.check_len(out.len())?;
        }
        Ok(Value::Map(out))
    }

    /// ciborium hands a CBOR tag over as an enum whose variant carries the tag number; the tag
    /// is dropped and the tagged item kept (a date stays its text or number, a bignum that did
    /// not fit 128 bits stays its byte string).
    fn visit_enum<A: EnumAccess<'de>>(self, acc: A) -> Result<Value, A::Error> {
        let (_, variant) = acc.variant::<de::IgnoredAny>()?;
        variant.newtype_variant_seed(self)
    }
}
