//! What app code catches of the errors host functions raise: a string that names the call and
//! what was wrong, as Lua's own functions raise, never mlua's error userdata with its
//! traceback. Each case is a chunk the `errors` test app runs as its own code.
mod common;
use common::*;

fn errors_app() -> TestApp {
    let services = lapps_json(
        "./tests/apps",
        r#"{ "errors": { "instances": 1, "preload": ["nap", "mqr", "cws", "murmur"] } }"#,
    );
    start_app(&ws_json(1), &services)
}

/// Runs each chunk and compares its reply.
fn replies(cases: &[(&str, &str)]) {
    let app = errors_app();
    let mut ws = connect(app.addr, "/errors");
    for (chunk, want) in cases {
        assert_eq!(ask(&mut ws, chunk), *want, "{chunk}");
    }
}

#[test]
fn pcall_xpcall_and_resume_give_host_errors_as_strings() {
    replies(&[
        (
            r#"local ok, e = pcall(nap:new().sleep, nap:new(), "abc")
               return type(e) .. "|" .. e"#,
            "string|bad argument #1 to 'n:sleep' (number expected, got string)",
        ),
        (
            // What used to raise again inside the app's error handling.
            r#"local ok, e = pcall(function() return nap:new():usleep({}) end)
               return "failed: " .. e:gsub("^bad argument", "bad arg")"#,
            "failed: bad arg #1 to 'n:usleep' (number expected, got table)",
        ),
        (
            r#"return select(2, xpcall(function() nap:new():nsleep(true) end,
                                       function(e) return type(e) .. "|" .. e end))"#,
            "string|bad argument #1 to 'n:nsleep' (number expected, got boolean)",
        ),
        (
            r#"local co = coroutine.create(function() nap:new():sleep() end)
               local ok, e = coroutine.resume(co)
               return tostring(ok) .. "|" .. type(e) .. "|" .. e"#,
            "false|string|bad argument #1 to 'n:sleep' (number expected, got no value)",
        ),
        (
            r#"local q = mqr:create("errors_q")
               local ok, e = pcall(q.size)
               return type(e) .. "|" .. e"#,
            "string|q:size: call it with a colon, q:size(...)",
        ),
        (
            // An error raised through coroutine.wrap, then caught.
            r#"local ok, e = pcall(coroutine.wrap(function() nap:new():sleep("x") end))
               return type(e) .. "|" .. e"#,
            "string|bad argument #1 to 'n:sleep' (number expected, got string)",
        ),
    ]);
}

#[test]
fn argument_errors_name_the_call_the_argument_and_the_lua_types() {
    replies(&[
        (
            r#"return select(2, pcall(mqr.create, mqr, {}))"#,
            "bad argument #1 to 'mqr:create' (queue name expected, got table)",
        ),
        (
            // The dot form given a table: only the mqr table itself is taken for the colon
            // form's `self` (any table was, and the error said "got no value").
            r#"return select(2, pcall(mqr.create, {}))"#,
            "bad argument #1 to 'mqr:create' (queue name expected, got table)",
        ),
        (
            r#"return select(2, pcall(mqr.post, mqr, "errors_q", {}))"#,
            "bad argument #2 to 'mqr:post' (string or nljson object or array expected, got table)",
        ),
        (
            r#"local q = mqr:create("errors_q")
               return select(2, pcall(q.post, q, true))"#,
            "bad argument #1 to 'q:post' (string or nljson object or array expected, got boolean)",
        ),
        (
            // A whole number is a number in Lua, never mlua's "integer".
            r#"return select(2, pcall(mqr.size, mqr, 7))"#,
            "bad argument #1 to 'mqr:size' (queue name expected, got number)",
        ),
        (
            r#"return select(2, pcall(ws.send_error, ws, 1, -1, {}))"#,
            "bad argument #3 to 'ws:send_error' (string expected, got table)",
        ),
        (
            r#"return select(2, pcall(ws.send_error, ws, 1, 2^63, "m"))"#,
            "ws:send_error: code must fit in 64 bits (-2^63 to 2^63 - 1), got 9.2233720368548e+18",
        ),
        (
            r#"return select(2, pcall(ws.send_error, ws, 1, 1.5, "m"))"#,
            "ws:send_error: code must be a whole number, got 1.5",
        ),
        (
            // Whole numbers past 2^53 (mlua's integers up to 2^63) are codes and channels
            // still: refused for the handler (never issued) only.
            r#"local a = {pcall(ws.send_error, ws, 1, 2^60, "m")}
               local b = {pcall(ws.send_oon, ws, 1, 2^60, {})}
               return table.concat({tostring(a[1]), tostring(a[3]), tostring(b[1]),
                                    tostring(b[3])}, " ")"#,
            "true closed true closed",
        ),
        (
            r#"return select(2, pcall(ws.send_oon, ws, 1, 0, {}))"#,
            "ws:send_oon: channel 0 is the command channel",
        ),
        (
            r#"return select(2, pcall(ws.send, ws, 1, nljson.array()))"#,
            "ws:send: a LAppS message is a table of named members (cid, ...), not an array",
        ),
        (
            r#"local v = setmetatable({}, {__tostring = function() return {} end})
               return select(2, pcall(print, v))"#,
            "'tostring' must return a string to 'print'",
        ),
        (
            r#"return select(2, pcall(ws.send_response, ws, 1, "x"))"#,
            "ws:send_response: result: an array expected, got string",
        ),
        (
            r#"return select(2, pcall(ws.send_oon, ws, 1, 5, {a = 1}))"#,
            "ws:send_oon: message: an array expected, got an object (a table with named keys)",
        ),
        (
            // A nil in a list makes it an object (keys not exactly 1..n): the error says where.
            r#"return select(2, pcall(ws.send_response, ws, 1, {1, nil, 3}))"#,
            "ws:send_response: result: an array expected, got a table without element 2 (an \
             array's keys are exactly 1..n: store nljson.null for a missing element)",
        ),
        (
            r#"return select(2, nljson.array({[2] = "b", [3] = "c"}))"#,
            "nljson.array: a table without element 1 is not an array (an array's keys are \
             exactly 1..n: store nljson.null for a missing element)",
        ),
        (
            r#"return select(2, pcall(murmur.hashstr, {1}))"#,
            "bad argument #1 to 'murmur.hashstr' (number or string expected, got table)",
        ),
        (
            r#"return tostring(murmur:hashstr("abc") == murmur.hashstr("abc"))
                   .. " " .. tostring(murmur:hashnum(7) == murmur.hashnum(7))"#,
            "true true",
        ),
        (
            // The sandbox's own replacements raise strings too.
            r#"local ok, e = pcall(os.setlocale, nil, {}) return type(e)"#,
            "string",
        ),
        (
            // Success is one value, as for Lua's own functions (a trial saw `true, nil`).
            r#"local q = mqr:create("one_value")
               return table.concat({select('#', mqr:size("one_value")),
                                    select('#', q:post("x")), select('#', mqr:poll("one_value")),
                                    select('#', q:post("x", "bad"))}, " ")"#,
            "1 1 1 2",
        ),
        (
            // typename takes any value: one it cannot name is not said to be a non-container.
            r#"return select(2, nljson.typename(nap:new()))"#,
            "nljson.typename: a userdata of another module has no JSON type",
        ),
        (
            r#"return select(2, nljson.decode(5))"#,
            "nljson.decode: expects a JSON string, got number",
        ),
        (
            // nljson's functions take the colon form too (they answered wrongly with it).
            r#"return nljson:typename(nljson:array()) .. " " .. nljson:encode({a = 1})
                   .. " " .. tostring(nljson:empty(nljson.decode("[1]")))"#,
            r#"array {"a":1} false"#,
        ),
    ]);
}

/// The strings are made at the host functions, so Lua's own pcall stays as it is: as deep,
/// with the positions of its errors, and yields across it.
#[test]
fn lua_s_own_pcall_is_left_as_it_is() {
    replies(&[
        (
            // As deep as LuaJIT's own pcall goes (a Lua wrapper of it went ~4,700 deep).
            r#"local function nest(k)
                 if k == 0 then return nap:new():sleep("x") end
                 local ok, e = pcall(nest, k - 1)
                 if ok then return e end
                 error(e, 0)
               end
               local ok, e = pcall(nest, 8000)
               return tostring(ok) .. "|" .. e"#,
            "false|bad argument #1 to 'n:sleep' (number expected, got string)",
        ),
        (
            r#"local function mid() error("x", 2) end
               local function outer() mid() end
               return select(2, pcall(outer))"#,
            "probe:2: x",
        ),
        (r#"return tostring(pcall)"#, "function: builtin#20"),
        (
            r#"local co = coroutine.wrap(function()
                 local ok, v = pcall(function() return coroutine.yield(1) + 1 end)
                 return v
               end)
               return co() .. "," .. co(41)"#,
            "1,42",
        ),
    ]);
}

#[test]
fn the_apps_own_error_values_pass_unchanged() {
    replies(&[
        (
            r#"local t = {code = 7}
               local ok, e = pcall(error, t)
               return tostring(rawequal(e, t))"#,
            "true",
        ),
        (
            r#"local ok, e = pcall(error, "plain", 0) return e"#,
            "plain",
        ),
        (
            r#"return select(2, xpcall(error, function(e) return e.code end, {code = 9}))"#,
            "9",
        ),
        (
            r#"local ok, e = coroutine.resume(coroutine.create(function() error({1}) end))
               return type(e)"#,
            "table",
        ),
        (
            // pcall and xpcall still return every value of a call that succeeds.
            r##"local n = select("#", pcall(function() return 1, nil, 3, nil end))
               local a, b, c, d = pcall(function() return 1, nil, 3 end)
               local e, f, g = xpcall(function(...) return ... end, print, "x", "y")
               return table.concat({n, tostring(a), tostring(b), tostring(c), tostring(d),
                                    tostring(e), f, g}, ",")"##,
            "5,true,1,nil,3,true,x,y",
        ),
    ]);
}
