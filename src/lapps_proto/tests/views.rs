//! Messages as views (`lazy`): what the app reads and changes matches a tree built from the
//! same bytes, and the in-place protocol check gives `check_inbound`'s verdicts.

use mlua::Lua;
use proptest::prelude::*;

use super::cbor::arb_value;
use super::hex;
use crate::lapps_proto::lazy::{Doc, Handle, Item};
use crate::lapps_proto::lua::from_lua;
use crate::lapps_proto::nljson::install;
use crate::lapps_proto::node::{Key, Node};
use crate::lapps_proto::protocol::{
    check_doc, check_inbound, parse_inbound, parse_inbound_in_place,
};
use crate::lapps_proto::{cbor, json_ud, Limits, Value};

fn doc(bytes: &[u8]) -> std::rc::Rc<Doc> {
    Doc::parse(bytes, &Limits::default()).unwrap()
}

/// A state with `m` set to a view of `bytes`.
fn with_view(bytes: &[u8]) -> Lua {
    let lua = Lua::new();
    install(&lua).unwrap();
    let m = json_ud::doc_to_lua(&lua, doc(bytes)).unwrap();
    lua.globals().set("m", m).unwrap();
    lua
}

fn run(lua: &Lua, code: &str) {
    if let Err(e) = lua.load(code).exec() {
        panic!("{e}");
    }
}

fn t(s: &str) -> Value {
    Value::text(s)
}

fn request(params: Vec<Value>) -> Value {
    Value::Map(vec![
        (t("lapps"), Value::Int(1)),
        (t("method"), t("echo")),
        (t("params"), Value::Array(params)),
    ])
}

#[test]
fn a_view_reads_members_elements_and_lengths() {
    let bytes = cbor::encode(&request(vec![
        t("hi"),
        Value::Bytes(vec![0xff, 0]),
        Value::Int(-3),
        Value::Float(2.0),
        Value::Null,
        Value::Map(vec![
            (Value::Int(7), t("seven")),
            (t("k"), Value::Bool(true)),
        ]),
    ]));
    let lua = with_view(&bytes);
    run(
        &lua,
        r#"
        assert(m.lapps == 1 and m.method == "echo" and m.nothing == nil)
        assert(#m == 3 and #m.params == 6)
        local p = m.params
        assert(p[1] == "hi" and p[2] == "\255\0" and p[3] == -3 and p[4] == 2)
        assert(p[5] == nljson.null and p[7] == nil and p[0] == nil and p.x == nil)
        assert(p[6][7] == "seven" and p[6]["7"] == nil and p[6].k == true)
        assert(nljson.typename(p) == "array" and nljson.typename(p[6]) == "object")
        assert(m.params == m.params)
    "#,
    );
}

#[test]
fn changes_through_a_view_are_seen_by_every_view_of_the_message() {
    let bytes = cbor::encode(&request(vec![t("a"), Value::Array(vec![])]));
    let lua = with_view(&bytes);
    run(
        &lua,
        r#"
        local p = m.params
        local inner = p[2]
        p[1] = "changed"
        assert(m.params[1] == "changed")
        inner[1] = 5
        assert(m.params[2][1] == 5 and #p[2] == 1)
        m.extra = {1, 2}
        assert(m.extra[2] == 2 and #m == 4)
        assert(p == m.params and inner == m.params[2])
        assert(tostring(p) == '["changed",[5]]')
    "#,
    );
    let m: mlua::Value = lua.globals().get("m").unwrap();
    assert_eq!(
        from_lua(&lua, &m).unwrap(),
        Value::Map(vec![
            (t("lapps"), Value::Int(1)),
            (t("method"), t("echo")),
            (
                t("params"),
                Value::Array(vec![t("changed"), Value::Array(vec![Value::Int(5)])])
            ),
            (t("extra"), Value::Array(vec![Value::Int(1), Value::Int(2)])),
        ])
    );
}

#[test]
fn nljson_functions_work_on_views() {
    let bytes = cbor::encode(&request(vec![
        Value::Map(vec![(t("b"), Value::Int(2)), (t("a"), Value::Int(1))]),
        Value::Map(vec![]),
    ]));
    let lua = with_view(&bytes);
    run(
        &lua,
        r#"
        assert(nljson.find(m, "method") == "echo")
        local keys = {}
        nljson.foreach(m.params[1], function(k, v) keys[#keys + 1] = k .. "=" .. v end)
        assert(table.concat(keys, ",") == "b=2,a=1")
        assert(nljson.empty(m.params[2]) and not nljson.empty(m.params))
        assert(nljson.encode(m.params) == '[{"b":2,"a":1},{}]')
        assert(nljson.erase(m.params, 2) == true and #m.params == 1)
        assert(nljson.from_cbor(nljson.to_cbor(m)).params[1].b == 2)
    "#,
    );
}

#[test]
fn canonical_arrays_are_copied_and_others_re_encoded() {
    // 0x82 f9 3e00 5f 41 01 41 02 ff: [half 1.5, indefinite bytes] is not canonical.
    let odd =
        hex("a3 656c61707073 01 666d6574686f64 6465 63686f 66706172616d73 82 f93e00 5f410141 02ff");
    let d = doc(&odd);
    let params =
        match Handle::Raw(d.clone(), d.root()).get(crate::lapps_proto::node::Key::Str(b"params")) {
            Some(crate::lapps_proto::lazy::Item::RawContainer(doc, at)) => Handle::Raw(doc, at),
            _ => panic!("params is a container"),
        };
    assert!(params.canonical_array().is_none());
    let node = params.resolve().unwrap();
    assert_eq!(
        node.to_value(64).unwrap(),
        Value::Array(vec![Value::Float(1.5), Value::Bytes(vec![1, 2])])
    );

    let good = cbor::encode(&request(vec![Value::Bytes(vec![9; 16])]));
    let d = doc(&good);
    let params =
        match Handle::Raw(d.clone(), d.root()).get(crate::lapps_proto::node::Key::Str(b"params")) {
            Some(crate::lapps_proto::lazy::Item::RawContainer(doc, at)) => Handle::Raw(doc, at),
            _ => panic!("params is a container"),
        };
    let (n, items) = params.canonical_array().unwrap();
    assert_eq!(
        (n, items),
        (1, &cbor::encode(&Value::Bytes(vec![9; 16]))[..])
    );
}

/// The in-place check and the tree check agree on `bytes`: the same message type, or the
/// same error (code and text).
fn same_verdict(bytes: &[u8]) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        parse_inbound_in_place(bytes),
        parse_inbound(bytes).map(|m| m.msg_type())
    );
    if let Ok(value) = cbor::decode(bytes) {
        let ours = check_doc(&doc(bytes)).map(|i| i.msg_type);
        prop_assert_eq!(ours, check_inbound(value).map(|i| i.msg_type()));
    }
    Ok(())
}

fn arb_member() -> impl Strategy<Value = (Value, Value)> {
    let name = prop_oneof![
        Just(t("lapps")),
        Just(t("method")),
        Just(t("params")),
        Just(t("cid")),
        Just(Value::Bytes(b"method".to_vec())),
        Just(Value::Bytes(b"cid".to_vec())),
        Just(Value::Int(1)),
    ];
    let value = prop_oneof![
        Just(Value::Int(1)),
        Just(Value::Float(1.0)),
        Just(t("1")),
        Just(t("echo")),
        Just(t("_x")),
        Just(t("a.b")),
        Just(t("")),
        Just(Value::Int(0)),
        Just(Value::Int(-4)),
        Just(Value::UInt(u64::MAX)),
        Just(Value::Array(vec![])),
        Just(Value::Array(vec![Value::Null])),
        arb_value(),
    ];
    (name, value)
}

proptest! {
    #[test]
    fn in_place_check_agrees_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
        same_verdict(&bytes)?;
    }

    #[test]
    fn in_place_check_agrees_with_the_tree_check(
        members in prop::collection::vec(arb_member(), 0..6)
    ) {
        same_verdict(&cbor::encode(&Value::Map(members)))?;
    }

    #[test]
    fn in_place_check_agrees_on_damaged_requests(
        members in prop::collection::vec(arb_member(), 0..6),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = cbor::encode(&Value::Map(members));
        let i = at.index(bytes.len());
        bytes[i] = byte;
        same_verdict(&bytes)?;
    }

    #[test]
    fn member_lookups_on_a_view_agree_with_the_tree(
        members in prop::collection::vec(
            (prop_oneof![arb_member().prop_map(|(k, _)| k), Just(t("other"))], arb_value()),
            0..6,
        )
    ) {
        // A view reads members in place (with the names of the protocol found in one walk,
        // when every key is text); a tree built from the same bytes is the reference.
        let bytes = cbor::encode(&Value::Map(members));
        let tree = Node::from_value(cbor::decode(&bytes).unwrap());
        let view = Handle::Raw(doc(&bytes), 0);
        let keys = ["lapps", "method", "params", "cid", "other", "1", "nope"];
        for key in keys.map(|k| Key::Str(k.as_bytes())).into_iter().chain([Key::Num(1.0)]) {
            let found = view.get(key).map(|item| match item {
                Item::RawScalar(d, at) => d.scalar(at).unwrap(),
                Item::RawContainer(d, at) => Handle::Raw(d, at).resolve().unwrap().to_value(64).unwrap(),
                Item::Node(n) => n.to_value(64).unwrap(),
            });
            prop_assert_eq!(found, tree.get(key).map(|n| n.to_value(64).unwrap()), "{:?}", key);
        }
    }

    #[test]
    fn a_view_converts_to_what_the_decoder_gives(v in arb_value()) {
        let bytes = cbor::encode(&v);
        let lua = Lua::new();
        install(&lua).unwrap();
        let view = json_ud::doc_to_lua(&lua, doc(&bytes)).unwrap();
        if matches!(v, Value::Array(_) | Value::Map(_)) {
            prop_assert_eq!(from_lua(&lua, &view).unwrap(), v);
        }
    }
}

#[test]
fn tagged_and_indefinite_requests_are_checked_alike() {
    for h in [
        // tag 55799 on the map, indefinite map, tagged method text
        "d9d9f7 a3 656c61707073 01 666d6574686f64 c0 6465 63686f 66706172616d73 80",
        "bf 656c61707073 01 666d6574686f64 7f 62 6563 62 686f ff 66706172616d73 9f 01 ff ff",
        "a2 656c61707073 f93c00 666d6574686f64 6465 63686f",
        "a2 656c61707073 01 666d6574686f64 44 6563686f",
    ] {
        same_verdict(&hex(h)).unwrap();
    }
}

#[test]
fn reading_far_into_a_large_array_builds_the_tree_once_and_reads_the_same() {
    // Walking the bytes for v[i] costs i steps: a loop over a large array would be quadratic
    // (a DoS with a 1 MiB message), so past the first elements the tree answers.
    let n = 1000;
    let items: Vec<Value> = (0..n).map(Value::Int).collect();
    for bytes in [cbor::encode(&Value::Array(items.clone())), {
        // The same array with an indefinite length (0x9f ... 0xff).
        let definite = cbor::encode(&Value::Array(items.clone()));
        let mut b = vec![0x9f];
        b.extend_from_slice(&definite[3..]);
        b.push(0xff);
        b
    }] {
        let d = doc(&bytes);
        let v = Handle::Raw(d.clone(), d.root());
        assert_eq!(v.len(), n as usize);
        for i in 1..=n {
            let value = match v.get(Key::Num(i as f64)) {
                Some(Item::RawScalar(d, at)) => d.scalar(at),
                Some(Item::Node(Node::Scalar(ref value))) => Some(value.clone()),
                _ => None,
            };
            assert_eq!(value, Some(Value::Int(i - 1)), "element {i}");
        }
        assert!(d.is_built(), "{:02x?}", &bytes[..4]);
        // Asking past the end of a definite array answers nil without building anything.
        let short = doc(&cbor::encode(&Value::Array(items[..3].to_vec())));
        let v = Handle::Raw(short.clone(), short.root());
        assert!(v.get(Key::Num(100.0)).is_none());
        assert!(!short.is_built());
        let lua = with_view(&bytes);
        run(
            &lua,
            "local s = 0 for i = 1, #m do s = s + m[i] end assert(s == 999 * 1000 / 2, s)",
        );
    }
}

/// A message is charged to the thread's budget while its Doc lives, a small one too (its
/// bytes inline, the Doc itself on the heap): an app that keeps many small views meets its
/// memory limit instead of growing past it.
#[test]
fn a_small_message_kept_as_a_view_is_charged_while_it_lives() {
    use crate::lapps_proto::tree_budget::charged;
    let before = charged();
    let small = doc(&hex("a1 6161 01")); // {"a": 1}
    let one = charged() - before;
    assert!(one >= std::mem::size_of::<Doc>(), "charged {one}");
    let large = doc(&cbor::encode(&Value::Bytes(vec![7; 4096])));
    assert!(charged() - before >= one + 4096);
    drop((small, large));
    assert_eq!(charged(), before);
}

/// Lua's out-of-memory error, raised by the allocation of a view while our frame still owns
/// its handle, unwinds through that frame and drops the handle (json_ud's module doc: the
/// vendored LuaJIT unwinds externally). Were it a longjmp over the Rust frames, the handle
/// would leak, and with it the document it holds.
#[test]
fn a_view_whose_allocation_runs_out_of_memory_drops_its_handle() {
    use mlua::ffi;
    let lua = Lua::new();
    install(&lua).unwrap();
    let d = doc(&hex("a1 61 61 01"));
    // Array slots allocated before the limit: storing a view allocates nothing but the view.
    let keep = lua.create_table_with_capacity(100_000, 0).unwrap();
    lua.gc_collect().unwrap();
    lua.set_memory_limit(lua.used_memory() + 64 * 1024).unwrap();
    let mut made = 0;
    // SAFETY: `keep` is at index 1; each round pushes one value and stores it there (the
    // stack stays at one value), until Lua raises, which exec_raw catches.
    let r = unsafe {
        lua.exec_raw::<()>(&keep, |l| {
            while made < 100_000 {
                json_ud::push_handle(l, Handle::Raw(std::rc::Rc::clone(&d), d.root()));
                made += 1;
                ffi::lua_rawseti(l, 1, made);
            }
        })
    };
    let e = r.expect_err("the views ran out of memory");
    assert!(e.to_string().contains("memory"), "{e}");
    assert!(made > 100, "only {made} views fitted");
    lua.set_memory_limit(0).unwrap();
    drop(keep);
    lua.gc_collect().unwrap();
    lua.gc_collect().unwrap();
    assert_eq!(std::rc::Rc::strong_count(&d), 1, "a handle leaked");
}

/// A map whose tree the thread's budget can never hold is read from its bytes however many
/// lookups walk it (many lookups would otherwise switch to the tree): the refusal is not an
/// error of the lookup, which the view would raise as "not enough memory".
#[test]
fn a_map_too_large_for_its_tree_is_still_read_from_its_bytes() {
    let members: Vec<(Value, Value)> = (0..2000)
        .map(|i| (t(&format!("k{i}")), Value::Int(i)))
        .collect();
    let bytes = cbor::encode(&Value::Map(members));
    crate::lapps_proto::tree_budget::set_limit(bytes.len() * 4);
    let lua = with_view(&bytes);
    run(
        &lua,
        "for i = 1999, 0, -1 do assert(m['k' .. i] == i, i) end assert(m.nope == nil)",
    );
    crate::lapps_proto::tree_budget::set_limit(0);
}

/// A map whose tree did not fit only because the budget was full at the time (garbage not yet
/// collected) gets its tree once there is room, so that many lookups stay linear.
#[test]
fn a_map_whose_tree_did_not_fit_yet_gets_it_once_there_is_room() {
    use crate::lapps_proto::tree_budget;
    let members: Vec<(Value, Value)> = (0..2000)
        .map(|i| (t(&format!("k{i}")), Value::Int(i)))
        .collect();
    let bytes = cbor::encode(&Value::Map(members));
    let d = doc(&bytes);
    let view = Handle::Raw(d.clone(), d.root());
    let full = 10 << 20;
    tree_budget::set_limit(tree_budget::charged() + full);
    tree_budget::add(full);
    let look = |n: usize| {
        for _ in 0..n {
            let found = match view.get(Key::Str(b"k1999")) {
                Some(Item::RawScalar(d, at)) => d.scalar(at),
                Some(Item::Node(Node::Scalar(ref v))) => Some(v.clone()),
                _ => None,
            };
            assert_eq!(found, Some(Value::Int(1999)));
        }
    };
    look(20);
    assert!(!d.is_built(), "no room yet");
    tree_budget::release(full);
    look(20);
    assert!(d.is_built(), "built once there was room");
    tree_budget::set_limit(0);
}
