//! `murmur`: the original's hash module. `murmur.hashstr(v)` gives 16 hex digits,
//! `murmur.hashnum(v)` a number. A string hashes as libstdc++'s `std::hash<std::string>` does
//! (MurmurHash2, 64-bit, seed 0xc70f6907), which is what the original called, so hashes stored
//! or compared across the two servers agree; a number hashes to its integer value, as
//! `std::hash<size_t>` does.

use mlua::{Lua, MultiValue, Value};

const SEED: u64 = 0xc70f_6907;
const MUL: u64 = (0xc6a4_a793 << 32) + 0x5bd1_e995;

fn shift_mix(v: u64) -> u64 {
    v ^ (v >> 47)
}

/// libstdc++'s `_Hash_bytes` for a 64-bit `size_t`.
pub(crate) fn hash_bytes(bytes: &[u8], seed: u64) -> u64 {
    let mut hash = seed ^ (bytes.len() as u64).wrapping_mul(MUL);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let data = shift_mix(u64::from_le_bytes(w).wrapping_mul(MUL)).wrapping_mul(MUL);
        hash ^= data;
        hash = hash.wrapping_mul(MUL);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        // The tail's bytes, last one most significant (load_bytes).
        let data = tail
            .iter()
            .rev()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        hash ^= data;
        hash = hash.wrapping_mul(MUL);
    }
    shift_mix(shift_mix(hash).wrapping_mul(MUL))
}

/// The 64-bit hash of a Lua string or number; None for other types.
fn digest(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => Some(hash_bytes(&s.as_bytes(), SEED)),
        // The number's integer value as a 64-bit word: truncated toward zero, a negative one
        // in two's complement, whether LuaJIT hands it over as an integer (-1) or not (-1.5).
        Value::Integer(i) => Some(*i as u64),
        Value::Number(n) if *n < 0.0 => Some(*n as i64 as u64),
        Value::Number(n) => Some(*n as u64),
        _ => None,
    }
}

pub(crate) fn install(lua: &Lua) -> mlua::Result<()> {
    let t = lua.create_table()?;
    // Called `murmur.f(v)` or `murmur:f(v)`: a table first with a value after it is the
    // module (no value hashed is a table).
    let arg = |f: &str, mut a: MultiValue| -> mlua::Result<u64> {
        if a.len() > 1 && matches!(a.front(), Some(Value::Table(_))) {
            a.pop_front();
        }
        let v = a.pop_front().unwrap_or(Value::Nil);
        digest(&v).ok_or_else(|| {
            mlua::Error::runtime(format!(
                "bad argument #1 to 'murmur.{f}' (number or string expected, got {})",
                crate::lapps_proto::lua::lua_type(&v)
            ))
        })
    };
    t.set(
        "hashstr",
        lua.create_function(move |_, a: MultiValue| {
            arg("hashstr", a).map(|h| format!("{h:016x}"))
        })?,
    )?;
    t.set(
        "hashnum",
        lua.create_function(move |_, a: MultiValue| arg("hashnum", a).map(|h| h as f64))?,
    )?;
    lua.globals().set("murmur", t)
}

#[cfg(test)]
mod tests {
    use super::{hash_bytes, SEED};

    /// `std::hash<std::string>` of libstdc++ (g++ 12, x86_64), printed with "%016zx".
    #[test]
    fn strings_hash_as_libstdcxx_std_hash_does() {
        for (s, want) in [
            ("", 0x553e_9390_1e46_2a6e_u64),
            ("a", 0x454d_dee4_88c1_ed6b),
            ("hello", 0x2655_3298_fdbe_39c8),
            ("LAppS", 0x99b0_efc9_e064_4d3c),
            ("0123456789abcdef", 0x934b_0d76_0642_ed86),
            ("a longer string of 29 bytes!!", 0xfece_3ab1_074d_d5c0),
        ] {
            assert_eq!(hash_bytes(s.as_bytes(), SEED), want, "{s:?}");
        }
    }

    #[test]
    fn the_lua_functions_take_strings_and_numbers() {
        let lua = mlua::Lua::new();
        super::install(&lua).unwrap();
        let (s, n, k, bad): (String, f64, f64, bool) = lua
            .load(
                r#"return murmur.hashstr("hello"), murmur.hashnum(42), murmur.hashnum("a"),
                          pcall(murmur.hashstr, {})"#,
            )
            .eval()
            .unwrap();
        assert_eq!(s, "26553298fdbe39c8");
        assert_eq!(n, 42.0);
        assert_eq!(k, 0x454d_dee4_88c1_ed6b_u64 as f64);
        assert!(!bad);
    }

    #[test]
    fn a_negative_number_hashes_as_its_integer_part_in_twos_complement() {
        let lua = mlua::Lua::new();
        super::install(&lua).unwrap();
        let same: bool = lua
            .load(
                "return murmur.hashstr(-1) == murmur.hashstr(-1.5) \
                 and murmur.hashstr(-1) == 'ffffffffffffffff' \
                 and murmur.hashstr(2.9) == murmur.hashstr(2)",
            )
            .eval()
            .unwrap();
        assert!(same);
    }
}
