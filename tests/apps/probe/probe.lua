-- probe: a RAW test app. Text commands (anything else is echoed):
--   "sub <ch>" / "unsub <ch>"  (<ch>: a number or a name) bcast (un)subscribe this connection; replies "ok" or "nil <err>"
--   "subhex <hex>"             bcast:subscribe to the channel named by these bytes; replies as sub
--   "bsend <ch> <text>"        bcast:send; replies "n=<recipients>"
--   "error"                    raises a Lua error
--   "loop"                     runs forever
--   "coloop"                   runs a coroutine past a budget slice, then forever
--   "jitloop"                  turns the JIT on if it can reach it, then runs forever
--   "xploop"                   runs forever in xpcall, whose message handler runs forever
--   "gcloop"                   makes a finalizer that runs forever, if it can
--   "typeloop"                 replaces the global type, then does what xploop does
--   "mustloop"                 runs forever, swallowing the budget error and calling must_stop()
--   "bomb"                     allocates without bound
--   "garbage <kib>"            builds <kib> KiB of strings, then raises a Lua error (no memory error)
--   "co"                       coroutine.wrap/resume round trips: replies "2 20 false 7 false 8 dead"
--   "big <kib>"                replies the length of a new string of <kib> KiB
--   "close"                    returns false
--   "stale <handler>"          ws:send to that handler; replies "<value> <err>"
--   "id"                       replies this connection's handler
--   "stats"                    replies "disc=<onDisconnect calls> dup=<repeated ones>
--                              late=<messages after onDisconnect> msgs=<messages seen>"
local probe = {}

local seen_disc, dup = {}, 0
local total_disc, late, msgs = 0, 0, 0

probe.onStart = function()
  bcast:create("c")
end

local function reply(h, s)
  ws:send(h, 1, s)
end

probe.onMessage = function(handler, opcode, message)
  msgs = msgs + 1
  if seen_disc[handler] then late = late + 1 end
  if opcode ~= 1 then
    ws:send(handler, opcode, message)
    return true
  end
  local cmd, rest = message:match("^(%S*)%s*(.*)$")
  if cmd == "sub" or cmd == "unsub" then
    local ok, err = bcast[cmd == "sub" and "subscribe" or "unsubscribe"](bcast, tonumber(rest) or rest, handler)
    reply(handler, ok and "ok" or ("nil " .. err))
  elseif cmd == "subhex" then
    local name = rest:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end)
    local ok, err = bcast:subscribe(name, handler)
    reply(handler, ok and "ok" or ("nil " .. err))
  elseif cmd == "bsend" then
    local ch, text = rest:match("^(%S+)%s(.*)$")
    local n, err = bcast:send(tonumber(ch) or ch, 1, text)
    reply(handler, n and ("n=" .. n) or ("nil " .. err))
  elseif cmd == "error" then
    error("boom")
  elseif cmd == "loop" then
    while true do end
  elseif cmd == "coloop" then
    coroutine.wrap(function() for _ = 1, 200000 do end end)()
    while true do end
  elseif cmd == "jitloop" then
    local ok, j = pcall(require, "jit")
    if ok and type(j) == "table" then j.on() end
    while true do end
  elseif cmd == "xploop" then
    xpcall(function() while true do end end, function() while true do end end)
  elseif cmd == "typeloop" then
    -- The global `type` replaced (as a missing `local` would), then the xploop.
    type = function() return "function?" end
    xpcall(function() while true do end end, function() while true do end end)
  elseif cmd == "gcloop" then
    local p = newproxy(true)
    getmetatable(p).__gc = function() while true do end end
    p = nil
    collectgarbage()
  elseif cmd == "mustloop" then
    while true do
      pcall(function() while true do end end)
      must_stop()
    end
  elseif cmd == "bomb" then
    local t = {}
    while true do t[#t + 1] = string.rep("x", 64) .. #t end
  elseif cmd == "garbage" then
    local t, n = {}, tonumber(rest)
    for i = 1, n do t[i] = string.rep("g", 1000) .. i end
    error("garbage left behind")
  elseif cmd == "co" then
    local gen = coroutine.wrap(function(a)
      local b = coroutine.yield(a + 1)
      return b * 2
    end)
    local x, y = gen(1), gen(10)
    local co = coroutine.create(function() error({ code = 7 }) end)
    local ok, e = coroutine.resume(co)
    local ok2, e2 = pcall(coroutine.wrap(function() error({ code = 8 }) end))
    reply(handler, string.format("%d %d %s %d %s %d %s", x, y, tostring(ok), e.code,
      tostring(ok2), e2.code, coroutine.status(co)))
  elseif cmd == "big" then
    reply(handler, tostring(#string.rep("y", tonumber(rest) * 1024)))
  elseif cmd == "close" then
    return false
  elseif cmd == "stale" then
    local v, err = ws:send(tonumber(rest), 1, "to a stale handler")
    reply(handler, tostring(v) .. " " .. tostring(err))
  elseif cmd == "id" then
    reply(handler, tostring(handler))
  elseif cmd == "stats" then
    reply(handler, string.format("disc=%d dup=%d late=%d msgs=%d", total_disc, dup, late, msgs))
  else
    ws:send(handler, opcode, message)
  end
  return true
end

probe.onDisconnect = function(handler)
  total_disc = total_disc + 1
  if seen_disc[handler] then dup = dup + 1 end
  seen_disc[handler] = true
end

return probe
