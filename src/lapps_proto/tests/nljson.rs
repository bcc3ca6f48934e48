use mlua::Lua;

use crate::lapps_proto::lua::{from_lua, into_lua};
use crate::lapps_proto::nljson::install;
use crate::lapps_proto::protocol::parse_inbound;
use crate::lapps_proto::{cbor, Value};

fn state() -> Lua {
    let lua = Lua::new();
    install(&lua).unwrap();
    lua
}

/// Runs a chunk whose `assert`s are the test.
fn run(code: &str) {
    let lua = state();
    if let Err(e) = lua.load(code).exec() {
        panic!("{e}");
    }
}

#[test]
fn decode_index_and_encode_round_trip() {
    run(r#"
        local v = nljson.decode('{"b": [1, 2.5, "s", true, null], "a": {"x": {}}, "e": []}')
        assert(nljson.typename(v) == "object")
        assert(#v == 3)
        assert(v.b[1] == 1 and v.b[2] == 2.5 and v.b[3] == "s" and v.b[4] == true)
        assert(v.b[5] == nljson.null)
        assert(v.b[6] == nil and v.b[0] == nil and v.missing == nil)
        assert(v["a"].x ~= nil and nljson.typename(v.a.x) == "object")
        assert(nljson.typename(v.e) == "array")
        assert(tostring(v) == '{"b":[1,2.5,"s",true,null],"a":{"x":{}},"e":[]}', tostring(v))
        assert(nljson.encode(v) == tostring(v))
    "#);
}

#[test]
fn empty_object_and_array_stay_distinct() {
    run(r#"
        local v = nljson.decode('[{}, []]')
        assert(nljson.typename(v[1]) == "object" and nljson.typename(v[2]) == "array")
        assert(nljson.empty(v[1]) and nljson.empty(v[2]) and not nljson.empty(v))
        assert(nljson.encode(v) == '[{},[]]')
        local back = nljson.from_cbor(nljson.to_cbor(v))
        assert(nljson.encode(back) == '[{},[]]')
        -- plain tables: {} is an object unless made with nljson.array()
        assert(nljson.encode({}) == '{}')
        assert(nljson.encode(nljson.array()) == '[]')
        assert(nljson.encode({nljson.array(), nljson.object()}) == '[[],{}]')
        assert(nljson.typename({1, 2}) == "array" and nljson.typename({a = 1}) == "object")
    "#);
}

#[test]
fn nested_assignment_changes_the_tree() {
    run(r#"
        local v = nljson.decode('{"arr": [1, 2, 3], "o": {"deep": {"n": 1}}}')
        v.x = 1
        v.arr[2] = "s"
        v.arr[4] = {k = "t"}          -- append at n+1, a table converted
        v.o.deep.n = nil              -- removes the member
        v.o.deep.list = {10, 20}
        v.arr[4].k2 = false
        assert(nljson.encode(v) ==
            '{"arr":[1,"s",3,{"k":"t","k2":false}],"o":{"deep":{"list":[10,20]}},"x":1}',
            nljson.encode(v))
        -- a value taken out is shared with the tree
        local a = v.arr
        a[1] = 100
        assert(v.arr[1] == 100)
        assert(a == v.arr)
        -- assigning an nljson value copies it: no cycles
        v.self = v
        v.self.x = 2
        assert(v.x == 1 and v.self.x == 2)
        -- out of range and bad keys raise (they are operators)
        assert(not pcall(function() v.arr[7] = 1 end))
        assert(not pcall(function() v.arr.k = 1 end))
        assert(not pcall(function() v[true] = 1 end))
        assert(not pcall(function() v.f = print end))
        -- nil in an array stores null
        v.arr[1] = nil
        assert(v.arr[1] == nljson.null and #v.arr == 4)
    "#);
}

#[test]
fn null_handling() {
    run(r#"
        assert(nljson.decode('null') == nljson.null)
        assert(nljson.typename(nljson.null) == "null" and nljson.typename(nil) == "null")
        assert(nljson.encode({a = nljson.null}) == '{"a":null}')
        assert(nljson.encode(nljson.null) == 'null')
        local v = nljson.decode('{"a": null}')
        assert(v.a == nljson.null and nljson.find(v, "a") == nljson.null)
        assert(nljson.empty(nljson.null))
    "#);
}

#[test]
fn foreach_visits_in_order_and_can_stop() {
    run(r#"
        local v = nljson.decode('{"z": 1, "a": 2, "m": {"q": 3}}')
        local keys = {}
        assert(nljson.foreach(v, function(k, x) keys[#keys + 1] = k end) == true)
        assert(table.concat(keys, ",") == "z,a,m")
        local arr = nljson.decode('[10, 20, 30]')
        local sum, idx = 0, {}
        nljson.foreach(arr, function(i, x) idx[#idx + 1] = i; sum = sum + x end)
        assert(sum == 60 and table.concat(idx, ",") == "1,2,3")
        local seen = 0
        nljson.foreach(arr, function(i, x) seen = seen + 1; return false end)
        assert(seen == 1)
        -- the callback may change the container: it walks a snapshot
        nljson.foreach(arr, function(i, x) arr[#arr + 1] = x end)
        assert(#arr == 6)
        local ok, err = nljson.foreach(arr, function() error("boom") end)
        assert(ok == nil and err:find("boom"), err)
        local ok2, err2 = nljson.foreach({}, print)
        assert(ok2 == nil and err2:find("nljson.foreach"))
    "#);
}

#[test]
fn a_number_key_is_its_tostring_form() {
    run(r#"
        -- Keys as LuaJIT's tostring writes them (%.14g), not as a shortest round trip.
        local v = nljson.decode('{"1e+15": "big", "0.3": "sum", "-0": "neg", "1.1529215046068e+18": "huge"}')
        for _, k in ipairs({1e15, 0.1 + 0.2, -0.0, 2^60}) do
            assert(v[k] ~= nil and v[k] == v[tostring(k)], tostring(k))
            assert(nljson.find(v, k) == v[tostring(k)], tostring(k))
        end
        -- A table with number keys that is not an array becomes an object keyed the same way.
        local o = nljson.decode(nljson.encode({[2^60] = 1, [0.1 + 0.2] = 2, [5] = 3}))
        assert(o[tostring(2^60)] == 1 and o["0.3"] == 2 and o["5"] == 3, nljson.encode(o))
        v[1e15] = "changed"
        assert(v["1e+15"] == "changed")
    "#);
}

#[test]
fn find_with_numeric_keys_and_erase() {
    run(r#"
        local v = nljson.decode('{"1": "one", "2.5": "x", "k": [5, 6, 7]}')
        assert(nljson.find(v, 1) == "one" and v[1] == "one")
        assert(nljson.find(v, 2.5) == "x")
        assert(nljson.find(v, "k")[3] == 7 and nljson.find(v.k, 1) == 5)
        assert(nljson.find(v, "nope") == nil)
        v[3] = "three"
        assert(v["3"] == "three")
        assert(nljson.erase(v, 1) == true and v["1"] == nil)
        assert(nljson.erase(v, "nope") == false)
        assert(nljson.erase(v.k, 2) == true and nljson.encode(v.k) == '[5,7]')
        assert(nljson.erase(v.k, 9) == false)
        local r, e = nljson.find("str", "k")
        assert(r == nil and type(e) == "string")
    "#);
}

#[test]
fn bad_input_returns_nil_and_a_message() {
    run(r#"
        local function fails(f, ...)
            local v, e = f(...)
            assert(v == nil and type(e) == "string" and #e > 0, tostring(e))
            return e
        end
        fails(nljson.decode, '{"a": ')
        fails(nljson.decode, 42)
        fails(nljson.decode, '[1] 2')
        fails(nljson.decode_file, '/nonexistent/file.json')
        fails(nljson.from_cbor, '\255')
        fails(nljson.encode, {f = print})
        fails(nljson.encode, {[true] = 1})
        local t = {}; t.t = t
        fails(nljson.encode, t)
        fails(nljson.encode, '\255')      -- binary has no JSON form
        fails(nljson.encode_pretty, {}, -1)
        fails(nljson.encode_pretty, {}, "x")
        fails(nljson.encode_pretty, {}, true)
        fails(nljson.typename, print)
        fails(nljson.array, {a = 1})
        -- a number key and a string key that write the same would be one key given twice
        local e = fails(nljson.to_cbor, {[1] = "a", ["1"] = "b"})
        assert(e:find('two keys of a table both write as the key "1"', 1, true), e)
        fails(nljson.encode, {[1] = 1, [1 + 2^-52] = 2, x = 3})
        fails(nljson.encode, {[1.5] = 1, ["1.5"] = 2})
        fails(nljson.encode, {x = {[2] = 1, ["2"] = 2}})
        assert(nljson.encode({[1] = "a", ["2"] = "b"}) == '{"1":"a","2":"b"}')
        assert(nljson.erase(1, 1) == nil)
        -- binary survives CBOR and keeps its bytes
        local b = nljson.from_cbor(nljson.to_cbor({bin = '\255\0\1'}))
        assert(b.bin == '\255\0\1')
    "#);
}

#[test]
fn pretty_and_files() {
    let dir = std::env::temp_dir().join(format!("nljson-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("conf.json");
    std::fs::write(&path, br#"{"services": {"echo": {"instances": 2}}}"#).unwrap();
    let lua = state();
    lua.globals().set("path", path.to_str().unwrap()).unwrap();
    let r = lua
        .load(
            r#"
        local c = assert(nljson.decode_file(path))
        assert(c.services.echo.instances == 2)
        assert(nljson.encode_pretty(c.services) == '{\n  "echo": {\n    "instances": 2\n  }\n}')
        assert(nljson.encode_pretty(c.services, 0) == '{"echo":{"instances":2}}')
        assert(nljson.encode_pretty(c.services, 4):find('\n        "instances"'))
    "#,
        )
        .exec();
    std::fs::remove_dir_all(&dir).unwrap();
    r.unwrap();
}

#[test]
fn numbers_beyond_2_pow_53_become_floats() {
    let lua = state();
    let v: mlua::Value = lua.load("return {2^53, 2^53 + 2, -3, 0.5}").eval().unwrap();
    assert_eq!(
        from_lua(&lua, &v).unwrap(),
        Value::Array(vec![
            Value::Int(1 << 53),
            Value::Float(9007199254740994.0),
            Value::Int(-3),
            Value::Float(0.5),
        ])
    );
}

#[test]
fn a_decoded_request_reaches_lua_as_an_nljson_value() {
    let lua = state();
    let msg = parse_inbound(&cbor::encode(&Value::Map(vec![
        (Value::text("lapps"), Value::Int(1)),
        (Value::text("method"), Value::text("echo")),
        (
            Value::text("params"),
            Value::Array(vec![Value::text("hi"), Value::Map(vec![])]),
        ),
    ])))
    .unwrap();
    let message = into_lua(&lua, msg.into_message()).unwrap();
    let f: mlua::Function = lua
        .load(
            r#"
        return function(message)
            assert(message.method == "echo" and message.lapps == 1)
            assert(message.params[1] == "hi" and #message.params == 2)
            assert(nljson.typename(message.params[2]) == "object")
            message.params[1] = "changed"
            -- what an app hands back to ws:send
            return {cid = 0, status = 1, result = message.params}
        end
    "#,
        )
        .eval()
        .unwrap();
    let out: mlua::Value = f.call(message).unwrap();
    let out = from_lua(&lua, &out).unwrap();
    assert_eq!(
        crate::lapps_proto::protocol::validate_outbound(&out),
        Ok(crate::lapps_proto::protocol::encode_response_ok(&[
            Value::text("changed"),
            Value::Map(vec![])
        ]))
    );
}

#[test]
fn lua_tables_convert_by_shape() {
    let lua = state();
    let v: mlua::Value = lua
        .load(r#"return {b = 1, a = {1, 2}, [3] = "n", s = {[1] = "x", [3] = "y"}}"#)
        .eval()
        .unwrap();
    let t = Value::text;
    assert_eq!(
        from_lua(&lua, &v).unwrap(),
        Value::Map(vec![
            (t("3"), t("n")),
            (t("a"), Value::Array(vec![Value::Int(1), Value::Int(2)])),
            (t("b"), Value::Int(1)),
            (t("s"), Value::Map(vec![(t("1"), t("x")), (t("3"), t("y"))])),
        ])
    );
}

#[test]
fn a_tree_nested_far_beyond_the_stack_is_freed_without_overflowing_it() {
    // Assignment has no depth limit (a decoder has): freeing such a chain must not recurse
    // once per level, or the thread's stack overflows and the whole process aborts. Also
    // the chain cut off in the middle, and the one left for lua_close.
    run(r#"
        local function chain(n)
          local root = nljson.object()
          local c = root
          for _ = 1, n do c.x = {}; c = c.x end
          return root
        end
        local r = chain(200000)
        r = nil
        collectgarbage(); collectgarbage()
        local r2 = chain(200000)
        r2.x.x = nil
        collectgarbage(); collectgarbage()
        kept = chain(200000)
    "#);
}

#[test]
fn a_tree_that_doubles_with_each_assignment_is_stopped_at_the_decoders_limit() {
    // Trees live outside the Lua memory limit: each copy is bounded like a decoded document.
    run(r#"
        local a = nljson.decode("[0]")
        local stopped
        for i = 1, 40 do
          local ok, err = pcall(function() a[#a + 1] = a end)
          if not ok then stopped = i; assert(tostring(err):find("too large to copy: more than 2097152 values", 1, true), err) break end
        end
        assert(stopped and stopped <= 22, tostring(stopped))
    "#);
}

#[test]
fn a_table_that_repeats_one_table_is_copied_within_the_value_bound() {
    // 2^40 leaves from 41 tables: without a bound on the copy, hours and terabytes.
    run(r#"
        local t = {"x"}
        for i = 1, 40 do t = {t, t} end
        local s, err = nljson.encode(t)
        assert(s == nil and err:find("too large to copy: more than 2097152 values", 1, true), err)
        local v = nljson.decode("[[1, 2, 3]]")
        local many = {}
        for i = 1, 1000000 do many[i] = v end
        s, err = nljson.to_cbor(many)
        assert(s == nil and err:find("too large to copy", 1, true), err)
        -- Naming its kind copies nothing: any size, any values.
        assert(nljson.typename(t) == "array" and nljson.typename(many) == "array")
        assert(nljson.typename({[1] = 1, [3] = 3}) == "object")
        assert(nljson.typename({[0] = 1}) == "object" and nljson.typename({}) == "object")
        assert(nljson.typename({1, 2, x = 3}) == "object")
        assert(nljson.typename({print}) == "array")
    "#);
}

/// The item count decoding stops at under a memory limit refuses nothing the tree allowance
/// would take: an array just under what the limit holds at `KEPT_PER_ITEM` per item decodes,
/// from JSON and from CBOR, and one past the limit is "not enough memory" either way.
#[test]
fn decoding_under_a_memory_limit_stops_only_where_the_allowance_would() {
    use crate::lapps_proto::tree_budget::{self, KEPT_PER_ITEM};
    const LIMIT: usize = 1 << 20;
    tree_budget::set_limit(LIMIT);
    let lua = state();
    let fits = (LIMIT - 4096) / KEPT_PER_ITEM;
    let decode = |n: usize| -> (bool, String) {
        let json = format!("[{}0]", "0,".repeat(n - 1));
        let cbor = cbor::encode(&Value::Array(vec![Value::Int(0); n]));
        let f: mlua::Function = lua
            .load(
                r#"local json, cbor = ...
                   local a, e1 = nljson.decode(json)
                   local ok = a ~= nil
                   a = nil
                   collectgarbage()
                   local b, e2 = nljson.from_cbor(cbor)
                   ok = ok and b ~= nil
                   b = nil
                   collectgarbage()
                   return ok, tostring(e1) .. " | " .. tostring(e2)"#,
            )
            .into_function()
            .unwrap();
        f.call((
            lua.create_string(json).unwrap(),
            lua.create_string(cbor).unwrap(),
        ))
        .unwrap()
    };
    let (ok, why) = decode(fits);
    assert!(ok, "{fits} values: {why}");
    let (ok, why) = decode(2 * LIMIT / KEPT_PER_ITEM);
    assert!(!ok);
    assert_eq!(
        why,
        "nljson.decode: not enough memory | nljson.from_cbor: not enough memory"
    );
    tree_budget::set_limit(0);
}

/// A key foreach cannot copy into the state (a container key past the tree allowance) is a
/// `nil, err` answer, as for every nljson function, not a raise.
#[test]
fn foreach_answers_nil_err_for_a_key_the_state_has_no_room_for() {
    use crate::lapps_proto::tree_budget::{self, KEPT_PER_ITEM, PER_CONTAINER};
    let key = Value::Array(vec![Value::Int(0); 100]);
    let bytes = cbor::encode(&Value::Map(vec![(key, Value::Int(1))]));
    // Room for the tree (103 items, 2 containers) and half its key again, not a copy of it.
    tree_budget::set_limit(153 * KEPT_PER_ITEM + 2 * PER_CONTAINER);
    let lua = state();
    let f: mlua::Function = lua
        .load(
            r#"local v = assert(nljson.from_cbor(...))
               local ok, err = nljson.foreach(v, function() end)
               return ok, err"#,
        )
        .into_function()
        .unwrap();
    let got = f.call::<(Option<bool>, Option<String>)>(lua.create_string(&bytes).unwrap());
    tree_budget::set_limit(0);
    let (ok, err) = got.expect("an answer, not a raise");
    assert_eq!(ok, None);
    assert_eq!(err.as_deref(), Some("nljson.foreach: not enough memory"));
}

/// decode, from_cbor and decode_file refuse an input over the limit with nil and a message
/// that says so; one at the limit decodes.
#[test]
fn an_input_over_the_limit_is_refused_and_one_at_it_decodes() {
    let lua = Lua::new();
    let limits = crate::lapps_proto::Limits {
        max_input: 16,
        ..Default::default()
    };
    crate::lapps_proto::nljson::install_with(&lua, limits).unwrap();
    let dir = std::env::temp_dir().join(format!("nljson-limit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (at, over) = (dir.join("at.json"), dir.join("over.json"));
    std::fs::write(&at, br#"["0123456789ab"]"#).unwrap();
    std::fs::write(&over, br#"["0123456789abc"]"#).unwrap();
    lua.globals().set("at", at.to_str().unwrap()).unwrap();
    lua.globals().set("over", over.to_str().unwrap()).unwrap();
    let r = lua
        .load(
            r#"
        local function refused(e, says)
            assert(type(e) == "string" and e:find(says, 1, true), tostring(e))
        end
        assert(nljson.decode('["0123456789ab"]')[1] == "0123456789ab")
        local v, e = nljson.decode('["0123456789abc"]')
        assert(v == nil); refused(e, "input of 17 bytes exceeds the limit of 16")
        local cbor = nljson.to_cbor({"0123456789abcd"})       -- 16 bytes
        assert(#cbor == 16 and nljson.from_cbor(cbor)[1] == "0123456789abcd")
        v, e = nljson.from_cbor(cbor .. "\0")
        assert(v == nil); refused(e, "input of 17 bytes exceeds the limit of 16")
        assert(nljson.decode_file(at)[1] == "0123456789ab")
        v, e = nljson.decode_file(over)
        assert(v == nil); refused(e, "larger than the limit of 16 bytes")
    "#,
        )
        .exec();
    std::fs::remove_dir_all(&dir).unwrap();
    r.unwrap();
}

/// A value find cannot copy into the state (past its memory limit) is a `nil, err` answer, as
/// for every nljson function, not a raise.
#[test]
fn find_answers_nil_err_for_a_value_the_state_has_no_room_for() {
    let lua = state();
    let f: mlua::Function = lua
        .load(
            r#"local v = assert(nljson.decode('{"k": "' .. string.rep("x", 1048576) .. '"}'))
               collectgarbage()
               return function() return nljson.find(v, "k") end"#,
        )
        .eval()
        .unwrap();
    lua.set_memory_limit(lua.used_memory() + (64 << 10))
        .unwrap();
    let got = f.call::<(Option<String>, Option<String>)>(());
    lua.set_memory_limit(0).unwrap();
    let (v, err) = got.expect("an answer, not a raise");
    assert_eq!(v, None);
    let err = err.unwrap();
    assert!(
        err.starts_with("nljson.find: ") && err.contains("memory"),
        "{err}"
    );
}
