-- fanout (RAW, /fanout, bench only): one 1 KiB message to every subscriber, made either with
-- one bcast:send or with one ws:send per subscriber, so that loadgen --fanout can time both
-- against the same connections. Needs preload = ["bcast"] and ONE instance: the loop must be
-- one Lua state's work, and every subscriber must be in that state's table.
--
-- Commands (text frames):
--   "sub"            subscribe this connection to channel "fanout" and to the loop's table;
--                    answer "ok"
--   "size <S>"       build the payload once: S bytes, byte i = (i * 7 + 13) % 251; answer "ok S"
--                    (the default payload, built in onStart, is 1024 bytes)
--   "bcast <n>"      one bcast:send("fanout", 2, payload); answer "sent <n> <recipients>"
--   "loop <n>"       ws:send(h, 2, payload) for every subscriber h; answer "sent <n> <count>"
-- Anything else is answered "error: ..." and the connection stays open.
local fanout = {}
fanout.__index = fanout

local CHANNEL = "fanout"

-- Subscribers in an array (the loop walks it without hashing) plus each one's index in it,
-- so that a disconnect removes it in O(1) by moving the last one into its place.
local subs = {}
local index = {}

local payload

local function build(size)
  local bytes = {}
  for i = 0, size - 1 do
    bytes[#bytes + 1] = string.char((i * 7 + 13) % 251)
  end
  return table.concat(bytes)
end

fanout.onStart = function()
  bcast:create(CHANNEL)
  payload = build(1024)
end

local function trigger(handler, cmd, n)
  local count
  if cmd == "bcast" then
    local sent, err = bcast:send(CHANNEL, 2, payload)
    if not sent then
      return ws:send(handler, 1, "error: bcast: " .. err)
    end
    count = sent
  else
    count = 0
    for i = 1, #subs do
      if ws:send(subs[i], 2, payload) then
        count = count + 1
      end
    end
  end
  return ws:send(handler, 1, "sent " .. n .. " " .. count)
end

fanout.onMessage = function(handler, opcode, message)
  local cmd, arg = message:match("^(%a+) ?(%d*)$")
  if cmd == "sub" then
    if not index[handler] then
      local ok, err = bcast:subscribe(CHANNEL, handler)
      if not ok then
        ws:send(handler, 1, "error: subscribe: " .. err)
        return true
      end
      subs[#subs + 1] = handler
      index[handler] = #subs
    end
    ws:send(handler, 1, "ok")
  elseif cmd == "size" and arg ~= "" then
    payload = build(tonumber(arg))
    ws:send(handler, 1, "ok " .. #payload)
  elseif (cmd == "bcast" or cmd == "loop") and arg ~= "" then
    trigger(handler, cmd, arg)
  else
    ws:send(handler, 1, "error: unknown command")
  end
  return true
end

fanout.onDisconnect = function(handler)
  local i = index[handler]
  if i then
    local last = subs[#subs]
    subs[i] = last
    index[last] = i
    subs[#subs] = nil
    index[handler] = nil
  end
end

return fanout
