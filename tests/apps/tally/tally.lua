-- tally: a RAW test app that reports its own callbacks, for the socket tests. Needs
-- preload = ["bcast"]. Every onMessage and onDisconnect, of every instance and of every
-- service running this file (tally_guard is a link to it), is published on the bcast
-- channel "tally" as one text message:
--   "msg <h> <messages seen for h> <onDisconnect calls for h so far>"
--   "disc <h> <onDisconnect calls for h>"
-- so a watcher sees a duplicate onDisconnect (count 2) or a message after it (third field 1).
-- Text commands (anything else is echoed):
--   "id"            replies with this connection's handler
--   "watch"         subscribes this connection to "tally" (this one message is not reported)
--   "to <h> <text>" ws:send(<h>, 1, <text>); replies "sent" or "nil <err>"
--   "spam <n>"      sends "s1" .. "s<n>" to this connection from one callback, then "spammed"
--   "burst <n> <size>" sends <n> binary messages of <size> bytes from one callback, then "bursted"
--   "dump <path>"   at onShutdown, write "<h> <messages> <onDisconnect calls>" per handler seen
--                   to <path> (what happens at shutdown cannot be seen through a socket)
--   "error"         raises a Lua error;  "loop" runs forever;  "close" returns false;
--   "noreturn"      returns nothing
--   "wsclose <arg>" ws:close(this, <arg>): a number, "nan", "inf", "table", "nil" or any other
--                   text as a string; replies "nil <err>" when it fails
--   "closewhy <code> <reason>" ws:close(this, <code>, <reason>), where <reason> "long" is 124
--                   bytes, "max" 123 bytes of UTF-8, "bad" not UTF-8, "table" a table, else the
--                   text itself; replies "nil <err>" when it fails
--   "closeh <h>"    ws:close(<h>, 1000); replies "closing" or "nil <err>"
--   "tostr"         replies tostring(this handler)
--   "self <text>"   ws:send(tonumber(tostring(this handler)), 1, <text>); "nil <err>" when it fails
--   "forms"         the dot-call forms ws.send, bcast.create/subscribe/send (sending "dot send"
--                   and "dot bcast" here), then non-string messages and opcodes that are not
--                   whole numbers; replies their results
--   "closethen <h>" ws:close(this, 1000), then ws:send(this, 1, "after close") and ws:close(this)
--                   again; replies to <h> "send=<value> <err> close=<value> <err>"
local tally = {}

local msgs, discs = {}, {}
local dump_path

local function hs(h)
  return string.format("%.0f", h)
end

tally.onStart = function()
  bcast:create("tally")
end

tally.onMessage = function(handler, opcode, message)
  if opcode == 1 and message == "watch" then
    local ok, err = bcast:subscribe("tally", handler)
    ws:send(handler, 1, ok and "watching" or ("nil " .. err))
    return true
  end
  msgs[handler] = (msgs[handler] or 0) + 1
  bcast:send("tally", 1, string.format("msg %s %d %d", hs(handler), msgs[handler], discs[handler] or 0))
  if opcode ~= 1 then
    ws:send(handler, opcode, message)
    return true
  end
  local cmd, rest = message:match("^(%S*)%s*(.*)$")
  if cmd == "id" then
    ws:send(handler, 1, hs(handler))
  elseif cmd == "to" then
    local h, text = rest:match("^(%S+)%s(.*)$")
    local ok, err = ws:send(tonumber(h), 1, text)
    ws:send(handler, 1, ok and "sent" or ("nil " .. tostring(err)))
  elseif cmd == "spam" then
    for i = 1, tonumber(rest) do
      ws:send(handler, 1, "s" .. i)
    end
    ws:send(handler, 1, "spammed")
  elseif cmd == "burst" then
    local n, size = rest:match("^(%d+)%s+(%d+)$")
    local block = string.rep("b", tonumber(size))
    for _ = 1, tonumber(n) do
      ws:send(handler, 2, block)
    end
    ws:send(handler, 1, "bursted")
  elseif cmd == "dump" then
    dump_path = rest
    ws:send(handler, 1, "dumping")
  elseif cmd == "error" then
    error("tally: asked to fail")
  elseif cmd == "loop" then
    while true do end
  elseif cmd == "close" then
    return false
  elseif cmd == "noreturn" then
    return -- no value at all: the original stopped the instance for good
  elseif cmd == "tostr" then
    ws:send(handler, 1, tostring(handler))
  elseif cmd == "self" then
    local ok, err = ws:send(tonumber(tostring(handler)), 1, rest)
    if not ok then ws:send(handler, 1, "nil " .. tostring(err)) end
  elseif cmd == "forms" then
    local r = {}
    local function note(v, e) r[#r + 1] = tostring(v) .. (e and (" " .. e) or "") end
    note(ws.send(handler, 1, "dot send"))
    note(bcast.create("dots"))
    note(bcast.subscribe("dots", handler))
    note(bcast.send("dots", 1, "dot bcast"))
    note(bcast:send("dots", 1, {}))
    note(bcast:send("dots", 1.5, "x"))
    note(bcast:send("dots", "1", "x"))
    note(ws:send(handler, 1, true))
    note(ws.close(1000))
    ws:send(handler, 1, table.concat(r, ","))
  elseif cmd == "closethen" then
    ws:close(handler, 1000)
    local sent, serr = ws:send(handler, 1, "after close")
    local closed, cerr = ws:close(handler)
    ws:send(tonumber(rest), 1, string.format("send=%s %s close=%s %s",
      tostring(sent), tostring(serr), tostring(closed), tostring(cerr)))
  elseif cmd == "closeh" then
    local ok, err = ws:close(tonumber(rest), 1000)
    ws:send(handler, 1, ok and "closing" or ("nil " .. tostring(err)))
  elseif cmd == "wsclose" then
    local special = { nan = 0 / 0, inf = 1 / 0, table = {} }
    local arg = special[rest]
    if arg == nil and rest ~= "nil" then
      arg = tonumber(rest) or rest
    end
    local ok, err = ws:close(handler, arg)
    if not ok then
      ws:send(handler, 1, "nil " .. tostring(err))
    end
  elseif cmd == "closewhy" then
    local code, why = rest:match("^(%d+) (.*)$")
    local special = {
      long = string.rep("x", 124),
      max = string.rep("\195\169", 61) .. "x", -- 61 times "é" (2 bytes) and one byte
      bad = "\255",
      table = {},
    }
    local reason = special[why]
    if reason == nil then
      reason = why
    end
    local ok, err = ws:close(handler, tonumber(code), reason)
    if not ok then
      ws:send(handler, 1, "nil " .. tostring(err))
    end
  else
    ws:send(handler, opcode, message)
  end
  return true
end

tally.onDisconnect = function(handler)
  discs[handler] = (discs[handler] or 0) + 1
  bcast:send("tally", 1, string.format("disc %s %d", hs(handler), discs[handler]))
end

tally.onShutdown = function()
  if not dump_path then return end
  local f = assert(io.open(dump_path, "w"))
  for h, n in pairs(msgs) do
    f:write(string.format("%s %d %d\n", hs(h), n, discs[h] or 0))
  end
  f:close()
end

return tally
