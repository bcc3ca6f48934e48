/**
 * LAppS protocol client for browsers (and any runtime with a standard `WebSocket`).
 *
 * Owns: a minimal CBOR codec (RFC 8949) and the client side of the LAppS protocol: requests on the
 * command channel (cid 0) matched to responses in order, client notifications, OON dispatch by
 * channel, reconnection with exponential back-off.
 * Never: guesses which request a response belongs to other than by order (the protocol answers
 * requests in order), or resends a call after a disconnect (the server may already have run it).
 *
 * No dependencies, no build step: `import { connect } from "./lapps.mjs"`.
 *
 * @example
 *   const client = connect("ws://127.0.0.1:5083/echo_lapps");
 *   client.on(1001, (message) => console.log("tick", message));
 *   const result = await client.call("echo", "hello", 42); // ["hello", 42]
 */

// ---------------------------------------------------------------------------------------------
// CBOR
// ---------------------------------------------------------------------------------------------

/**
 * A channel number as the handlers are keyed: a Number when it is exact as one, else the BigInt
 * (channels go up to 2^64-1; rounding one to a Number would reach another channel's handlers).
 */
function channelKey(c) {
  if (typeof c === "bigint" && c >= BigInt(Number.MIN_SAFE_INTEGER) && c <= BigInt(Number.MAX_SAFE_INTEGER)) {
    return Number(c);
  }
  return c;
}

/** Thrown by `decode` on malformed or unsupported input and by `encode` on unencodable values. */
export class CborError extends Error {}

const MAX_DEPTH = 256; // bounds recursion on hostile input (a stack overflow is not an error message)
const utf8Encoder = new TextEncoder();
// String.prototype.isWellFormed where there is one; else a scan of the code units (no regex
// lookbehind: a browser without it could not even parse this module).
const isWellFormed = String.prototype.isWellFormed
  ? (s) => s.isWellFormed()
  : (s) => {
      for (let i = 0; i < s.length; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0xd800 && c <= 0xdbff) {
          const next = s.charCodeAt(i + 1); // NaN past the end
          if (!(next >= 0xdc00 && next <= 0xdfff)) return false;
          i++;
        } else if (c >= 0xdc00 && c <= 0xdfff) {
          return false;
        }
      }
      return true;
    };
// ignoreBOM: a text string that starts with U+FEFF keeps it (the default would strip it).
const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * Encodes a value as CBOR. Integers (Number.isSafeInteger or BigInt) become CBOR integers, other
 * numbers float64; strings text; Uint8Array/ArrayBuffer (or any typed array) byte strings; arrays
 * arrays; Map and plain objects maps; true/false/null/undefined their simple values. Other objects
 * (a Date, a Set, a class instance) throw a CborError rather than go out as an empty map.
 * @param {*} value
 * @returns {Uint8Array}
 */
export function encode(value) {
  const out = { buf: new Uint8Array(64), len: 0 };
  encodeItem(out, value, 0);
  return out.buf.slice(0, out.len);
}

function reserve(out, n) {
  if (out.len + n <= out.buf.length) return;
  let size = out.buf.length * 2;
  while (size < out.len + n) size *= 2;
  const bigger = new Uint8Array(size);
  bigger.set(out.buf.subarray(0, out.len));
  out.buf = bigger;
}

function writeBytes(out, bytes) {
  reserve(out, bytes.length);
  out.buf.set(bytes, out.len);
  out.len += bytes.length;
}

/** Writes a major type with its argument in the shortest form (preferred serialisation). */
function writeHead(out, major, n) {
  reserve(out, 9);
  const view = new DataView(out.buf.buffer);
  const m = major << 5;
  if (typeof n === "bigint" && n <= 0xffffffffn) n = Number(n);
  if (typeof n === "bigint") {
    out.buf[out.len] = m | 27;
    view.setBigUint64(out.len + 1, n);
    out.len += 9;
  } else if (n < 24) {
    out.buf[out.len++] = m | n;
  } else if (n < 0x100) {
    out.buf[out.len++] = m | 24;
    out.buf[out.len++] = n;
  } else if (n < 0x10000) {
    out.buf[out.len] = m | 25;
    view.setUint16(out.len + 1, n);
    out.len += 3;
  } else if (n < 0x100000000) {
    out.buf[out.len] = m | 26;
    view.setUint32(out.len + 1, n);
    out.len += 5;
  } else {
    out.buf[out.len] = m | 27;
    view.setBigUint64(out.len + 1, BigInt(n));
    out.len += 9;
  }
}

function encodeInteger(out, n) {
  const big = typeof n === "bigint";
  if (n >= 0) {
    if (big && n > 0xffffffffffffffffn) throw new CborError("integer too large for CBOR");
    writeHead(out, 0, n);
  } else {
    const magnitude = big ? -1n - n : -1 - n;
    if (big && magnitude > 0xffffffffffffffffn) throw new CborError("integer too small for CBOR");
    writeHead(out, 1, magnitude);
  }
}

function encodeItem(out, v, depth) {
  if (depth > MAX_DEPTH) throw new CborError("value nested too deeply");
  switch (typeof v) {
    case "undefined":
      writeBytes(out, [0xf7]);
      return;
    case "boolean":
      writeBytes(out, [v ? 0xf5 : 0xf4]);
      return;
    case "bigint":
      encodeInteger(out, v);
      return;
    case "number":
      if (Number.isSafeInteger(v) && !Object.is(v, -0)) {
        encodeInteger(out, v);
      } else {
        reserve(out, 9);
        out.buf[out.len] = 0xfb;
        new DataView(out.buf.buffer).setFloat64(out.len + 1, v);
        out.len += 9;
      }
      return;
    case "string": {
      // TextEncoder would turn a lone surrogate into U+FFFD: the peer would get other text.
      if (!isWellFormed(v)) throw new CborError("string has a lone surrogate (not valid UTF-16)");
      const bytes = utf8Encoder.encode(v);
      writeHead(out, 3, bytes.length);
      writeBytes(out, bytes);
      return;
    }
    case "object":
      break;
    default:
      throw new CborError(`cannot encode a ${typeof v}`);
  }
  if (v === null) {
    writeBytes(out, [0xf6]);
  } else if (isBuffer(v) || ArrayBuffer.isView(v)) {
    const bytes = isBuffer(v) ? new Uint8Array(v) : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
    writeHead(out, 2, bytes.length);
    writeBytes(out, bytes);
  } else if (Array.isArray(v)) {
    writeHead(out, 4, v.length);
    for (const item of v) encodeItem(out, item, depth + 1);
  } else if (v instanceof Map) {
    writeHead(out, 5, v.size);
    for (const [key, item] of v) {
      encodeItem(out, key, depth + 1);
      encodeItem(out, item, depth + 1);
    }
  } else {
    // A plain object (of any realm); a Date, Set, RegExp or class instance has no map form
    // its fields would give (a Date has none: it would go out as {}).
    const proto = Object.getPrototypeOf(v);
    if (proto !== null && Object.getPrototypeOf(proto) !== null) {
      throw new CborError(`cannot encode a ${v.constructor?.name ?? "non-plain object"}`);
    }
    const keys = Object.keys(v);
    writeHead(out, 5, keys.length);
    for (const key of keys) {
      encodeItem(out, key, depth + 1);
      encodeItem(out, v[key], depth + 1);
    }
  }
}

/** An ArrayBuffer or SharedArrayBuffer, of this realm or another (a frame's, a worker's). */
function isBuffer(v) {
  const tag = Object.prototype.toString.call(v);
  return tag === "[object ArrayBuffer]" || tag === "[object SharedArrayBuffer]";
}

/**
 * A decoded map as a Map; CBOR keys that a Map cannot hold apart either (1 and 1.0, 0 and -0.0,
 * two NaNs: one JavaScript number each) would lose an entry, so they are an error instead.
 */
function mapOf(entries) {
  const m = new Map(entries);
  if (m.size !== entries.length) {
    throw new CborError("a map has keys JavaScript cannot tell apart (such as 1 and 1.0)");
  }
  return m;
}

/**
 * Decodes exactly one CBOR item. Maps become plain objects (keys converted to strings), integers
 * beyond 2^53 become BigInt, tags are skipped (their content is returned), indefinite lengths are
 * accepted.
 * @param {Uint8Array|ArrayBuffer} bytes
 * @returns {*}
 * @throws {CborError} on malformed input or trailing bytes
 */
export function decode(bytes) {
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const reader = { u8, view: new DataView(u8.buffer, u8.byteOffset, u8.byteLength), pos: 0 };
  const value = decodeItem(reader, 0);
  if (reader.pos !== u8.length) throw new CborError("trailing bytes after the CBOR item");
  return value;
}

const BREAK = Symbol("break");

function need(r, n) {
  if (r.pos + n > r.u8.length) throw new CborError("unexpected end of CBOR input");
}

/** Reads an argument of `ai`: a Number, a BigInt beyond 2^53, or -1 for "indefinite". */
function readArgument(r, ai) {
  if (ai < 24) return ai;
  if (ai === 31) return -1;
  const size = { 24: 1, 25: 2, 26: 4, 27: 8 }[ai];
  if (size === undefined) throw new CborError(`reserved additional information ${ai}`);
  need(r, size);
  const at = r.pos;
  r.pos += size;
  if (size === 1) return r.view.getUint8(at);
  if (size === 2) return r.view.getUint16(at);
  if (size === 4) return r.view.getUint32(at);
  const n = r.view.getBigUint64(at);
  return n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
}

/** A length must fit in what is left of the input: refuse before allocating. */
function checkLength(r, n, minItemSize) {
  if (typeof n === "bigint" || n * minItemSize > r.u8.length - r.pos) {
    throw new CborError("declared length exceeds the input");
  }
}

function readChunks(r, major, depth) {
  const chunks = [];
  for (;;) {
    need(r, 1);
    const ib = r.u8[r.pos];
    if (ib === 0xff) {
      r.pos += 1;
      return chunks;
    }
    // RFC 8949 3.2.3: chunks are definite-length strings of the same major type.
    if (ib >> 5 !== major || (ib & 31) === 31) throw new CborError("bad chunk in an indefinite string");
    chunks.push(decodeItem(r, depth + 1));
  }
}

function halfToNumber(h) {
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  const sign = h & 0x8000 ? -1 : 1;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

function decodeItem(r, depth, breakAllowed = false) {
  if (depth > MAX_DEPTH) throw new CborError("CBOR nested too deeply");
  need(r, 1);
  const ib = r.u8[r.pos++];
  const major = ib >> 5;
  const ai = ib & 31;
  if (major === 7) return decodeSimple(r, ai, breakAllowed);
  const n = readArgument(r, ai);
  if (n === -1 && major < 2) throw new CborError("indefinite length on an integer");
  if (n === -1 && major === 6) throw new CborError("indefinite length on a tag");
  switch (major) {
    case 0:
      return n;
    case 1: {
      if (typeof n === "bigint") return -1n - n;
      const neg = -1 - n;
      return Number.isSafeInteger(neg) ? neg : -1n - BigInt(n);
    }
    case 2: {
      if (n === -1) {
        const chunks = readChunks(r, 2, depth);
        const all = new Uint8Array(chunks.reduce((s, c) => s + c.length, 0));
        let at = 0;
        for (const c of chunks) {
          all.set(c, at);
          at += c.length;
        }
        return all;
      }
      checkLength(r, n, 1);
      r.pos += n;
      return r.u8.slice(r.pos - n, r.pos);
    }
    case 3: {
      if (n === -1) return readChunks(r, 3, depth).join("");
      checkLength(r, n, 1);
      r.pos += n;
      try {
        return utf8Decoder.decode(r.u8.subarray(r.pos - n, r.pos));
      } catch {
        throw new CborError("invalid UTF-8 in a text string");
      }
    }
    case 4: {
      const items = [];
      if (n !== -1) checkLength(r, n, 1);
      for (let i = 0; n === -1 || i < n; i++) {
        const item = decodeItem(r, depth + 1, n === -1);
        if (item === BREAK) break;
        items.push(item);
      }
      return items;
    }
    case 5: {
      if (n !== -1) checkLength(r, n, 2);
      const entries = [];
      let scalarKeys = true;
      for (let i = 0; n === -1 || i < n; i++) {
        const key = decodeItem(r, depth + 1, n === -1);
        if (key === BREAK) break;
        if (typeof key === "object" && key !== null) scalarKeys = false;
        entries.push([key, decodeItem(r, depth + 1)]);
      }
      // Keys a plain object cannot hold apart (byte strings, arrays, maps, or scalars that
      // write as the same property name: 1 and "1", null and "null"): a Map keeps them.
      if (!scalarKeys) return mapOf(entries);
      const names = entries.map(([key]) => String(key));
      if (new Set(names).size !== names.length) return mapOf(entries);
      const obj = {};
      for (const [i, [, value]] of entries.entries()) {
        // defineProperty: a "__proto__" key is data, not a prototype change.
        Object.defineProperty(obj, names[i], {
          value,
          enumerable: true,
          writable: true,
          configurable: true,
        });
      }
      return obj;
    }
    default: // 6: a tag; its number is not interpreted
      return decodeItem(r, depth + 1);
  }
}

function decodeSimple(r, ai, breakAllowed) {
  switch (ai) {
    case 20:
      return false;
    case 21:
      return true;
    case 22:
      return null;
    case 23:
      return undefined;
    case 24: {
      need(r, 1);
      const value = r.view.getUint8(r.pos);
      r.pos += 1;
      // RFC 8949 3.3: values below 32 in the one-byte form are not well-formed; the others are
      // unassigned, and nothing in LAppS uses one (the server refuses them too).
      if (value < 32) throw new CborError(`simple value ${value} in the one-byte form is not well-formed`);
      throw new CborError(`unassigned simple value ${value}`);
    }
    case 25:
      need(r, 2);
      r.pos += 2;
      return halfToNumber(r.view.getUint16(r.pos - 2));
    case 26:
      need(r, 4);
      r.pos += 4;
      return r.view.getFloat32(r.pos - 4);
    case 27:
      need(r, 8);
      r.pos += 8;
      return r.view.getFloat64(r.pos - 8);
    case 31:
      if (!breakAllowed) throw new CborError("unexpected break");
      return BREAK;
    default:
      if (ai < 20) throw new CborError(`unassigned simple value ${ai}`);
      throw new CborError(`reserved simple value encoding ${ai}`);
  }
}

// ---------------------------------------------------------------------------------------------
// LAppS protocol client
// ---------------------------------------------------------------------------------------------

/** A call answered with `status: 0`, or failed because the connection went away (code 0). */
export class LappsError extends Error {
  /**
   * @param {number} code JSON-RPC style error code (-32700..-32000), or 0 for a transport failure
   * @param {string} message
   * @param {*} [data]
   */
  constructor(code, message, data) {
    super(message);
    this.name = "LappsError";
    this.code = code;
    if (data !== undefined) this.data = data;
  }
}

/**
 * Opens a LAppS connection.
 * @param {string} url e.g. "ws://127.0.0.1:5083/echo_lapps"
 * @param {object} [options]
 * @param {boolean} [options.reconnect=true] reconnect after the connection closes
 * @param {number} [options.minDelay=250] first reconnection delay in ms
 * @param {number} [options.maxDelay=10000] cap of the exponentially growing delay in ms
 * @param {number} [options.stableAfter=5000] ms a connection must stay open before the back-off
 *   starts again from `minDelay`
 * @param {number} [options.callTimeout=0] ms a call waits for its answer (from `call`, time in
 *   the queue included) before it is rejected (code 0); 0: no limit
 * @param {typeof WebSocket} [options.WebSocket] WebSocket implementation (default: the global one;
 *   without either, `connect` throws a TypeError)
 * @returns {LappsClient}
 */
export function connect(url, options = {}) {
  return new LappsClient(url, options);
}

/**
 * Default of `stableAfter`: how long (ms) a connection must stay open before the reconnection
 * back-off starts again from `minDelay`. An open alone proves little, and neither does an answered
 * call: a server that accepts, answers and then closes (1008 slow consumer, 1003, a redeploy
 * loop, a proxy's idle cut) would otherwise get every client back after a `minDelay` each time,
 * forever.
 */
export const STABLE_AFTER = 5000;

/**
 * Close code the client sends when the server's messages stop making sense (a frame it cannot
 * decode, a response without a call): responses are matched by order, so after one it cannot
 * classify, every later answer could settle the wrong call. RFC 6455's 1002 is what this means,
 * but a browser may only send 1000 or 3000-4999.
 */
export const CLOSE_PROTOCOL_ERROR = 4002;

/** The options `connect` takes. */
const OPTIONS = ["reconnect", "minDelay", "maxDelay", "stableAfter", "callTimeout", "WebSocket"];

export class LappsClient {
  /** @param {string} url @param {object} [options] see `connect` */
  constructor(url, options = {}) {
    // A misspelt option would otherwise be its default without a word.
    for (const key of Object.keys(options)) {
      if (!OPTIONS.includes(key)) {
        throw new TypeError(`unknown option ${key} (the options are ${OPTIONS.join(", ")})`);
      }
    }
    const {
      reconnect = true,
      minDelay = 250,
      maxDelay = 10000,
      stableAfter = STABLE_AFTER,
      callTimeout = 0,
      WebSocket: WS = globalThis.WebSocket,
    } = options;
    this.url = url;
    // setTimeout takes ms up to 2^31-1 and reads anything else (NaN, "x", a negative) as 0:
    // a reconnection loop with such a delay would try hundreds of times a second.
    const ms = (name, value, min) => {
      if (!(typeof value === "number" && value >= min && value <= 2 ** 31 - 1)) {
        throw new RangeError(`${name} is a number of ms from ${min} to 2^31-1`);
      }
    };
    ms("minDelay", minDelay, 1);
    ms("maxDelay", maxDelay, minDelay);
    ms("stableAfter", stableAfter, 0);
    ms("callTimeout", callTimeout, 0);
    if (typeof reconnect !== "boolean") throw new TypeError("reconnect is true or false");
    this.options = { reconnect, minDelay, maxDelay, stableAfter, callTimeout };
    if (typeof WS !== "function") {
      // Node 20 has no global WebSocket unless run with --experimental-websocket.
      throw new TypeError(
        "no WebSocket in this runtime: pass connect(url, { WebSocket }) (for Node 20, the `ws` " +
          "package's, or run node with --experimental-websocket)",
      );
    }
    this.WS = WS;
    /**
     * @type {?function(LappsClient):void} called after each (re)connection; a throw (or an async
     * one's rejection) goes to `onerror`
     */
    this.onopen = null;
    /**
     * @type {?function({code:number, reason:string, reconnectIn:?number}):void} called after each
     * close, and after each failed reconnection attempt; a throw goes to `onerror`
     */
    this.onclose = null;
    /**
     * @type {?function(Error):void} undecodable or unexpected frames (the connection is then
     * closed with CLOSE_PROTOCOL_ERROR), errors thrown by `onopen`, `onclose` and OON handlers;
     * default: console.warn
     */
    this.onerror = (err) => console.warn("lapps:", err.message);
    this.pending = []; // calls awaiting a response, in the order their requests were sent
    this.outbox = []; // encoded frames waiting for the socket to open (with their calls, if any)
    this.handlers = new Map(); // channel -> Set of OON handlers
    this.attempt = 0; // reconnections since the last connection that proved to work
    this.stopped = false;
    this.stopReason = "client closed"; // what calls made once stopped are told
    this.timer = null; // the pending reconnection
    this.stableTimer = null; // resets the back-off once the open connection has lasted
    this.ws = null;
    this.open();
  }

  /** @returns {boolean} whether the socket is open now */
  get connected() {
    return this.ws !== null && this.ws.readyState === 1;
  }

  /**
   * Calls a method; resolves with the `result` array, rejects with a LappsError carrying
   * code/message/data. Calls made while (re)connecting are sent once the socket opens; calls
   * still unanswered when the connection closes are rejected (code 0).
   * @param {string} method
   * @param {...*} params omitted from the request when there are none
   * @returns {Promise<Array>}
   */
  call(method, ...params) {
    const request = { lapps: 1, method };
    if (params.length > 0) request.params = params;
    return new Promise((resolve, reject) => {
      const frame = encode(request); // a CborError rejects the call
      const call = { resolve, reject, method, timedOut: false };
      const ms = this.options.callTimeout;
      if (ms > 0) {
        // Settled now, but left in its place: its answer, should it come, is the next one in
        // order and is dropped (a queued call is not sent at all).
        const timer = setTimeout(() => {
          call.timedOut = true;
          reject(new LappsError(0, `${method}: no answer within ${ms} ms`));
        }, ms);
        call.resolve = (v) => {
          clearTimeout(timer);
          resolve(v);
        };
        call.reject = (e) => {
          clearTimeout(timer);
          reject(e);
        };
      }
      this.send(frame, call);
    });
  }

  /**
   * Sends a client notification on channel `cid` (≠ 0); the server does not answer it. While
   * (re)connecting it is queued, and lost if that attempt fails. Throws a LappsError (code 0)
   * once the client is closed for good.
   * @param {number} cid
   * @param {string} method
   * @param {...*} params
   */
  notify(cid, method, ...params) {
    const valid =
      (Number.isSafeInteger(cid) && cid > 0) ||
      (typeof cid === "bigint" && cid > 0n && cid < 2n ** 64n);
    if (!valid) throw new RangeError("a notification needs a cid from 1 to 2^64-1");
    if (this.stopped) throw new LappsError(0, `${method}: ${this.stopReason}`);
    const request = { lapps: 1, method, cid };
    if (params.length > 0) request.params = params;
    this.send(encode(request), null);
  }

  /**
   * Registers a handler for OONs (server pushes) on `channel`; `handler(message, channel)` gets
   * the OON's `message` array. Returns a function that removes the handler. Channels run from
   * 1 to 2^64-1; past 2^53 a channel must be given as a BigInt (a Number there is not exact,
   * and a handler on it could never be called): anything else throws a RangeError.
   * @param {number|bigint} channel
   * @param {function(Array, number):void} handler
   * @returns {function():void}
   */
  on(channel, handler) {
    const valid =
      (Number.isSafeInteger(channel) && channel > 0) ||
      (typeof channel === "bigint" && channel > 0n && channel < 2n ** 64n);
    if (!valid) {
      throw new RangeError("an OON channel is an integer from 1 to 2^64-1 (a BigInt past 2^53)");
    }
    if (typeof handler !== "function") throw new TypeError("an OON handler must be a function");
    channel = channelKey(channel);
    if (!this.handlers.has(channel)) this.handlers.set(channel, new Set());
    // One entry per registration: the same function registered twice is called twice, and
    // each unsubscribe removes its own registration.
    const entry = { handler };
    this.handlers.get(channel).add(entry);
    return () => {
      const set = this.handlers.get(channel);
      if (set?.delete(entry) && set.size === 0) this.handlers.delete(channel);
    };
  }

  /** Closes the connection for good: no reconnection, pending calls are rejected. */
  close() {
    this.stopped = true;
    this.stopReason = "client closed";
    clearTimeout(this.timer);
    this.clearStableTimer();
    // Before the socket's close, which may report its own end at once (a socket still
    // connecting, in some runtimes): the calls were given up by the app, not lost to it.
    this.failPending("client closed");
    if (this.ws) this.ws.close(1000);
  }

  // --- internals -------------------------------------------------------------------------

  /** A reconnection attempt: a WebSocket constructor that throws counts as a failed attempt. */
  reopen() {
    this.timer = null;
    try {
      this.open();
    } catch (err) {
      this.report(err);
      this.closed(this.ws, { code: 1006, reason: String(err?.message ?? err) });
    }
  }

  open() {
    this.ws = null;
    const ws = new this.WS(this.url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      // A socket given up on after an error (below) that opens all the same is closed.
      if (ws !== this.ws) {
        ws.close();
        return;
      }
      opened = true;
      // Not a reset of the back-off yet: only a connection that lasts is.
      this.clearStableTimer();
      if (this.options.reconnect && !this.stopped) {
        this.stableTimer = setTimeout(() => {
          this.stableTimer = null;
          this.attempt = 0;
        }, this.options.stableAfter);
      }
      const queued = this.outbox;
      this.outbox = [];
      for (const { frame, call } of queued) {
        if (!call?.timedOut) this.transmit(frame, call);
      }
      this.guarded(() => this.onopen?.(this));
    };
    ws.onmessage = (event) => {
      // After close(), a closing socket may still deliver (Node's `ws` does, browsers do not):
      // the calls it could answer were rejected already.
      if (ws === this.ws && !this.stopped) this.receive(event.data);
    };
    ws.onclose = (event) => this.closed(ws, event);
    // Browsers follow an error with a close event, which carries the useful information. Node's
    // built-in WebSocket does not after a connect that failed (a server not up yet): without
    // a close the client would never try again, so such an error ends the socket itself (once:
    // `closed` ignores a socket already given up on, and the close that may follow).
    ws.onerror = () => {
      if (opened || ws !== this.ws) return;
      this.closed(ws, { code: 1006, reason: "" });
      try {
        ws.close();
      } catch {
        // a socket that cannot be closed any more is closed already
      }
    };
  }

  send(frame, call) {
    if (this.stopped) {
      if (call) call.reject(new LappsError(0, `${call.method}: ${this.stopReason}`));
      return;
    }
    if (this.connected) this.transmit(frame, call);
    else this.outbox.push({ frame, call });
  }

  transmit(frame, call) {
    // Pushed before sending: the response cannot overtake its own entry in the FIFO.
    if (call) this.pending.push(call);
    this.ws.send(frame);
  }

  receive(data) {
    if (typeof data === "string") {
      this.abandon(new Error("unexpected text frame from the server"));
      return;
    }
    let msg;
    try {
      msg = decode(data);
    } catch (err) {
      this.abandon(err);
      return;
    }
    if (typeof msg !== "object" || msg === null || Array.isArray(msg) || msg instanceof Map) {
      this.abandon(new Error("server message is not a CBOR map with text keys"));
    } else if (msg.cid === 0) {
      this.response(msg);
    } else if (msg.cid !== undefined && Array.isArray(msg.message)) {
      const channel = channelKey(msg.cid);
      // A copy: a handler that (un)subscribes while this OON is dispatched changes the next
      // OON's handlers, not this one's (re-adding itself would otherwise loop for ever).
      for (const { handler } of [...(this.handlers.get(channel) ?? [])]) {
        this.guarded(() => handler(msg.message, channel));
      }
    } else {
      this.abandon(new Error("server message is neither a response nor an OON"));
    }
  }

  response(msg) {
    const call = this.pending.shift();
    if (!call) {
      this.abandon(new Error("response without a pending call"));
    } else if (call.timedOut) {
      // Its caller was told already (callTimeout): the late answer goes nowhere.
    } else if (msg.status === 1) {
      // Not a reset of the back-off: a server may answer, then close (see STABLE_AFTER).
      call.resolve(Array.isArray(msg.result) ? msg.result : []);
    } else {
      const e = msg.error ?? {};
      const text = typeof e.message === "string" ? e.message : "error without a message";
      call.reject(new LappsError(Number(e.code ?? -32603), text, e.data));
    }
  }

  /**
   * Runs an app's callback: a throw, or an async callback's rejection, goes to `onerror` (not
   * up into the client's loop, nor left as an unhandled rejection that ends a Node process).
   */
  guarded(fn) {
    try {
      const result = fn();
      if (typeof result?.then === "function") result.then(undefined, (err) => this.report(err));
    } catch (err) {
      this.report(err);
    }
  }

  /** `onerror`, which may itself throw without stopping the caller's loop. */
  report(err) {
    try {
      this.onerror?.(err);
    } catch (thrown) {
      console.warn("lapps: onerror threw:", thrown);
    }
  }

  /**
   * The server sent what the client cannot place: the order that matches responses to calls is
   * lost, so the connection is given up (pending calls rejected, reconnection as after a close).
   */
  abandon(err) {
    this.report(err);
    const ws = this.ws;
    const reason = "unreadable server message";
    this.closed(ws, { code: CLOSE_PROTOCOL_ERROR, reason });
    ws.close(CLOSE_PROTOCOL_ERROR, reason);
  }

  closed(ws, event) {
    if (ws !== this.ws) return; // a socket we already gave up on
    this.ws = null;
    this.clearStableTimer();
    this.failPending(`connection closed (${event.code})`);
    let reconnectIn = null;
    if (!this.stopped && this.options.reconnect) {
      // Exponential back-off with "equal jitter": half fixed, half random, so that many clients
      // dropped together (a server restart) do not all come back in the same instant.
      const { minDelay, maxDelay } = this.options;
      const base = Math.min(maxDelay, minDelay * 2 ** Math.min(this.attempt, 30));
      reconnectIn = Math.round(base / 2 + (Math.random() * base) / 2);
      this.attempt += 1;
      this.timer = setTimeout(() => this.reopen(), reconnectIn);
    } else {
      // Nothing will open another socket: later calls are rejected, not queued forever.
      if (!this.stopped) this.stopReason = `connection closed (${event.code}); reconnect is off`;
      this.stopped = true;
    }
    // A throwing onclose must not stop the caller (abandon() closes the socket after this).
    this.guarded(() => this.onclose?.({ code: event.code, reason: event.reason ?? "", reconnectIn }));
  }

  clearStableTimer() {
    clearTimeout(this.stableTimer);
    this.stableTimer = null;
  }

  failPending(why) {
    const calls = this.pending.concat(this.outbox.map((q) => q.call).filter(Boolean));
    this.pending = [];
    this.outbox = [];
    for (const call of calls) call.reject(new LappsError(0, `${call.method}: ${why}`));
  }
}
