// CBOR codec of lapps.mjs against the examples of RFC 8949 Appendix A, plus round trips and
// malformed input. Run: node --test clients/js/test/
import { test } from "node:test";
import assert from "node:assert/strict";
import { encode, decode, CborError } from "../lapps.mjs";

const hex = (s) => Uint8Array.from(s.match(/../g) ?? [], (b) => parseInt(b, 16));
const toHex = (u8) => Buffer.from(u8).toString("hex");

// [value, encoding] pairs from RFC 8949 Appendix A that encode and decode both ways.
const BOTH_WAYS = [
  [0, "00"],
  [1, "01"],
  [10, "0a"],
  [23, "17"],
  [24, "1818"],
  [25, "1819"],
  [100, "1864"],
  [1000, "1903e8"],
  [1000000, "1a000f4240"],
  [1000000000000, "1b000000e8d4a51000"],
  [18446744073709551615n, "1bffffffffffffffff"],
  [-18446744073709551616n, "3bffffffffffffffff"],
  [-1, "20"],
  [-10, "29"],
  [-100, "3863"],
  [-1000, "3903e7"],
  [1.1, "fb3ff199999999999a"],
  [1.0e300, "fb7e37e43c8800759c"],
  [-4.1, "fbc010666666666666"],
  [false, "f4"],
  [true, "f5"],
  [null, "f6"],
  [undefined, "f7"],
  [new Uint8Array([]), "40"],
  [new Uint8Array([1, 2, 3, 4]), "4401020304"],
  ["", "60"],
  ["a", "6161"],
  ["IETF", "6449455446"],
  ['"\\', "62225c"],
  ["\u00fc", "62c3bc"],
  ["\u6c34", "63e6b0b4"],
  ["\u{10151}", "64f0908591"],
  [[], "80"],
  [[1, 2, 3], "83010203"],
  [[1, [2, 3], [4, 5]], "8301820203820405"],
  [Array.from({ length: 25 }, (_, i) => i + 1), "98190102030405060708090a0b0c0d0e0f101112131415161718181819"],
  [{}, "a0"],
  [{ a: 1, b: [2, 3] }, "a26161016162820203"],
  [["a", { b: "c" }], "826161a161626163"],
  [{ a: "A", b: "B", c: "C", d: "D", e: "E" }, "a56161614161626142616361436164614461656145"],
];

test("RFC 8949 Appendix A: encode", () => {
  for (const [value, expected] of BOTH_WAYS) assert.equal(toHex(encode(value)), expected, `encode ${String(value)}`);
});

test("RFC 8949 Appendix A: decode", () => {
  for (const [expected, bytes] of BOTH_WAYS) assert.deepEqual(decode(hex(bytes)), expected, `decode ${bytes}`);
});

// Encodings we decode but never produce (floats of other widths, tags, indefinite lengths).
const DECODE_ONLY = [
  ["f90000", 0],
  ["f98000", -0],
  ["f93c00", 1],
  ["f93e00", 1.5],
  ["f97bff", 65504],
  ["f90001", 5.960464477539063e-8],
  ["f90400", 0.00006103515625],
  ["f9c400", -4],
  ["f97c00", Infinity],
  ["f9fc00", -Infinity],
  ["fa47c35000", 100000],
  ["fa7f7fffff", 3.4028234663852886e38],
  ["fa7f800000", Infinity],
  ["fb3ff0000000000000", 1],
  ["c074323031332d30332d32315432303a30343a30305a", "2013-03-21T20:04:00Z"], // tag 0 skipped
  ["c11a514b67b0", 1363896240], // tag 1 skipped
  ["c249010000000000000000", new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0, 0])], // bignum tag: content
  ["d82076687474703a2f2f7777772e6578616d706c652e636f6d", "http://www.example.com"],
  ["5f42010243030405ff", new Uint8Array([1, 2, 3, 4, 5])],
  ["7f657374726561646d696e67ff", "streaming"],
  ["9fff", []],
  ["9f018202039f0405ffff", [1, [2, 3], [4, 5]]],
  ["9f01820203820405ff", [1, [2, 3], [4, 5]]],
  ["83018202039f0405ff", [1, [2, 3], [4, 5]]],
  ["9f0102030405060708090a0b0c0d0e0f101112131415161718181819ff", Array.from({ length: 25 }, (_, i) => i + 1)],
  ["bf61610161629f0203ffff", { a: 1, b: [2, 3] }],
  ["826161bf61626163ff", ["a", { b: "c" }]],
  ["bf6346756ef563416d7421ff", { Fun: true, Amt: -2 }],
  ["1b0020000000000000", 9007199254740992n], // 2^53: beyond the safe range, so BigInt
  ["1b001fffffffffffff", 9007199254740991], // 2^53 - 1 is still a Number
  ["3b001fffffffffffff", -9007199254740992n],
  ["a201020304", { 1: 2, 3: 4 }], // integer keys become property names
];

test("RFC 8949 Appendix A: decode-only forms", () => {
  for (const [bytes, expected] of DECODE_ONLY) assert.deepEqual(decode(hex(bytes)), expected, `decode ${bytes}`);
  assert.ok(Number.isNaN(decode(hex("f97e00"))));
  assert.ok(Number.isNaN(decode(hex("fa7fc00000"))));
  assert.ok(Number.isNaN(decode(hex("fb7ff8000000000000"))));
});

test("integers are encoded as integers, other numbers as float64", () => {
  assert.equal(toHex(encode(2 ** 53 - 1)), "1b001fffffffffffff");
  assert.equal(toHex(encode(-(2 ** 53 - 1))), "3b001ffffffffffffe");
  assert.equal(toHex(encode(2n ** 40n)), "1b0000010000000000");
  assert.equal(toHex(encode(5n)), "05"); // a small BigInt takes the shortest form
  assert.equal(toHex(encode(-0)), "fb8000000000000000");
  assert.equal(toHex(encode(0.5)), "fb3fe0000000000000");
  assert.equal(toHex(encode(2 ** 64)), "fb43f0000000000000"); // not a safe integer
  assert.throws(() => encode(2n ** 64n), CborError);
  assert.throws(() => encode(-(2n ** 64n) - 1n), CborError);
});

test("round trips of LAppS-shaped messages", () => {
  const values = [
    { lapps: 1, method: "echo", params: ["hello", 42, [1, 2], { k: null }, true, 1.25, -7, new Uint8Array([0, 255])] },
    { status: 1, cid: 0, result: [] },
    { status: 0, cid: 0, error: { code: -32601, message: "method not found", data: ["x"] } },
    { cid: 1000, message: [{ time: 1700000000000 }] },
    ["x".repeat(300), "\u{1F600}".repeat(70000)], // 16- and 32-bit lengths
    Array.from({ length: 70000 }, (_, i) => i - 35000),
  ];
  for (const v of values) assert.deepEqual(decode(encode(v)), v);
  const m = new Map([[1, "one"], ["two", 2]]);
  assert.deepEqual(decode(encode(m)), { 1: "one", two: 2 });
  assert.deepEqual(decode(encode(new Uint8Array([1, 2, 3]).buffer)), new Uint8Array([1, 2, 3]));
});

test("malformed input is a CborError, never a crash or a huge allocation", () => {
  const bad = [
    "", // empty
    "18", // missing argument byte
    "1c", // reserved additional information
    "1f", // indefinite integer
    "ff", // break outside an indefinite item
    "62c3", // text shorter than declared
    "62c328", // invalid UTF-8
    "5affffffff", // byte string claiming 4 GiB
    "9bffffffffffffffff", // array claiming 2^64 items
    "bf6161", // indefinite map cut short
    "5f6161ff", // text chunk inside a byte string
    "5f5f4100ffff", // nested indefinite chunk
    "a1", // map without its entry
    "0000", // trailing bytes
    "fc", // reserved simple encoding
    "c0", // tag without content
  ];
  for (const b of bad) assert.throws(() => decode(hex(b)), CborError, `decode ${b}`);
  assert.throws(() => decode(new Uint8Array(10000).fill(0x81)), CborError); // too deep
  assert.throws(() => encode(Symbol("s")), CborError);
  assert.throws(() => encode(() => 1), CborError);
});

test("a map with keys an object cannot hold apart decodes as a Map", () => {
  const m = decode(hex("a28001430102030a")); // {[]: 1, h'010203': 10}
  assert.ok(m instanceof Map);
  assert.deepEqual([...m.entries()], [[[], 1], [new Uint8Array([1, 2, 3]), 10]]);
  assert.deepEqual(decode(encode(m)), m);
});

test("map keys that write as the same property name decode as a Map, none lost", () => {
  const m = decode(hex("a201616161316162")); // {1: "a", "1": "b"}
  assert.ok(m instanceof Map);
  assert.deepEqual([...m.entries()], [[1, "a"], ["1", "b"]]);
  assert.ok(decode(hex("a2f66161646e756c6c6162")) instanceof Map); // {null: "a", "null": "b"}
  // Distinct integer keys stay a plain object, as before.
  assert.deepEqual(decode(hex("a2016161026162")), { 1: "a", 2: "b" });
});

test("map keys JavaScript cannot tell apart are refused, not one of them dropped", () => {
  for (const h of [
    "a20161 61f93c006162", // {1: "a", 1.0: "b"}
    "a20061 61f980006162", // {0: "a", -0.0: "b"}
    "a2616101616102", // {"a": 1, "a": 2}
  ]) {
    assert.throws(() => decode(hex(h.replace(/ /g, ""))), CborError, h);
  }
});

test("objects with no map form are refused, not sent as {}", () => {
  for (const v of [new Date(0), new Set([1]), /x/, new (class Point { constructor() { this.x = 1; } })()]) {
    assert.throws(() => encode(v), CborError, String(v));
    assert.throws(() => encode({ nested: [v] }), CborError);
  }
  // Plain objects, with or without a prototype, and buffers of every kind still go.
  assert.deepEqual(decode(encode(Object.assign(Object.create(null), { a: 1 }))), { a: 1 });
  assert.deepEqual(decode(encode(new SharedArrayBuffer(2))), new Uint8Array(2));
  assert.deepEqual(decode(encode(new Uint16Array([1]))), new Uint8Array([1, 0]));
});

test("a lone surrogate is refused, not replaced by U+FFFD", () => {
  for (const s of ["\uD800", "a\uDC00", "\uDC00\uD800", "x\uD83D"]) {
    assert.throws(() => encode(s), CborError, JSON.stringify(s));
  }
  assert.equal(decode(encode("\uD83D\uDE00")), "\uD83D\uDE00"); // a pair is fine
});

test("simple values: one-byte forms below 32 are malformed, unassigned ones refused", () => {
  for (const b of ["f800", "f814", "f81f", "f820", "f8ff", "e0", "f3"]) {
    assert.throws(() => decode(hex(b)), CborError, b);
  }
});

test("a text string keeps a leading U+FEFF", () => {
  for (const s of ["\uFEFFabc", "\uFEFF", "a\uFEFF"]) {
    assert.equal(decode(encode(s)), s);
  }
  // Each chunk of an indefinite-length string too: "\uFEFF" "\uFEFFb".
  const chunked = new Uint8Array([0x7f, 0x63, 0xef, 0xbb, 0xbf, 0x64, 0xef, 0xbb, 0xbf, 0x62, 0xff]);
  assert.equal(decode(chunked.buffer), "\uFEFF\uFEFFb");
});

test("a __proto__ key stays data", () => {
  const obj = decode(hex("a1695f5f70726f746f5f5fa161780a")); // {"__proto__": {"x": 10}}
  assert.equal(Object.getPrototypeOf(obj), Object.prototype);
  assert.equal(obj.x, undefined);
  assert.deepEqual(Object.keys(obj), ["__proto__"]);
});

test("lone surrogates are refused where String.prototype.isWellFormed is missing too", async () => {
  const saved = Object.getOwnPropertyDescriptor(String.prototype, "isWellFormed");
  delete String.prototype.isWellFormed;
  try {
    // A fresh instance of the module, which picks its check when it loads.
    const m = await import("../lapps.mjs?without-isWellFormed");
    for (const s of ["\uD800", "a\uDC00", "\uDC00\uD800", "x\uD83D"]) {
      assert.throws(() => m.encode(s), m.CborError, JSON.stringify(s));
    }
    assert.equal(m.decode(m.encode("a\uD83D\uDE00b")), "a\uD83D\uDE00b");
  } finally {
    if (saved) Object.defineProperty(String.prototype, "isWellFormed", saved);
  }
});
