// The example page: calls echo on every (re)connection and lists the time_broadcast OONs.
// Query parameters: `ws` (server URL), `channel` (the broadcast channel, time_broadcast's 1001).
import { connect } from "./lapps.mjs";

const query = new URLSearchParams(location.search);
// A page served over https may only open wss:// (a ws:// socket would be blocked as mixed content).
const scheme = location.protocol === "https:" ? "wss" : "ws";
const url = query.get("ws") ?? `${scheme}://${location.hostname || "127.0.0.1"}:5083/echo_lapps`;
// Digits only, read as a BigInt so that a channel past 2^53 stays exact (on() takes both).
const channelParam = query.get("channel") ?? "1001";
const channel = /^[0-9]+$/.test(channelParam) ? BigInt(channelParam) : null;
const KEEP = 100; // OONs kept on the page; older ones scroll away

const $ = (id) => document.getElementById(id);
// JSON.stringify rejects BigInt, which the decoder returns for integers beyond 2^53.
const show = (v) => JSON.stringify(v, (_, x) => (typeof x === "bigint" ? x.toString() : x));

function setStatus(text) {
  $("status").textContent = text;
  document.title = `LAppS example: ${text}`;
}

$("url").textContent = url;
$("channel").textContent = channelParam;

let client;
try {
  client = connect(url);
} catch (err) {
  // A URL the browser refuses at once (a bad port, ws:// from an https page): say so.
  setStatus(`cannot connect: ${err.message}`);
  throw err;
}

client.onopen = async () => {
  setStatus("open");
  try {
    // The server starts pushing OONs after the first exchange, so call right away.
    $("echo-result").textContent = show(await client.call("echo", "hello", 42, [1, 2]));
  } catch (err) {
    $("echo-result").textContent = `error ${err.code}: ${err.message}`;
  }
};

client.onclose = ({ code, reconnectIn }) => {
  setStatus(reconnectIn === null ? `closed (${code})` : `closed (${code}), retrying in ${reconnectIn} ms`);
};

try {
  if (channel === null) throw new RangeError(`channel=${channelParam} is not a number`);
  client.on(channel, (message) => {
    const list = $("oon-list");
    const item = document.createElement("li");
    item.textContent = show(message);
    list.append(item);
    while (list.children.length > KEEP) list.firstElementChild.remove();
  });
} catch (err) {
  $("channel").textContent = `${channelParam}: ${err.message}`;
}
