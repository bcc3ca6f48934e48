-- echo_lapps (LAppS protocol, /echo_lapps). Needs preload = ["bcast"].
--
-- Methods (requests are CBOR maps {lapps = 1, method = ..., params = [...]}):
--   echo(...)        answers with its params (as nljson keeps them: docs/nljson.md, "Limits")
--   add(a, b)        answers {a + b}; -32602 (invalid params) unless both are numbers
--   fail()           raises a Lua error: the host answers -32603 (internal error)
--   anything else    -32601 (method not found)
-- Every client that makes a request is subscribed, before its first request is run, to the
-- time_broadcast OON stream (the host holds OONs until a client's first response, as the
-- protocol has them follow the first request/response exchange; a client that only sends
-- notifications is not subscribed, so nothing piles up for it): an OON
-- {cid = 1001, message = {<ms since the epoch>}} once a second.
local echo_lapps = {}
echo_lapps.__index = echo_lapps

-- The bcast channel time_broadcast publishes its OONs on (also the OON's cid).
echo_lapps.time_channel = 1001

local subscribed = {}

local methods = {}

methods.echo = function(handler, params)
  return ws:send_response(handler, params or nljson.array())
end

methods.add = function(handler, params)
  local a, b = params and params[1], params and params[2]
  if type(a) ~= "number" or type(b) ~= "number" then
    return ws:send_error(handler, -32602, "add expects two numbers")
  end
  return ws:send_response(handler, { a + b })
end

methods.fail = function()
  error("fail was called")
end

echo_lapps.onStart = function()
  -- A channel that cannot be made ("too many channels" in the process) fails the start,
  -- rather than leaving every client without its ticks and nothing said.
  local ok, err = bcast:create(echo_lapps.time_channel)
  if not ok then
    error("echo_lapps: bcast channel " .. echo_lapps.time_channel .. ": " .. err)
  end
end

-- msg_type: 1/2 client notification (no answer), 3/4 request (exactly one answer).
echo_lapps.onMessage = function(handler, msg_type, message)
  if msg_type == 1 or msg_type == 2 then
    return true
  end
  if not subscribed[handler] then
    -- nil, "closed" when the client has gone meanwhile: nothing to keep then.
    subscribed[handler] = bcast:subscribe(echo_lapps.time_channel, handler) or nil
  end
  local method = methods[message.method]
  if method == nil then
    ws:send_error(handler, -32601, "method not found: " .. tostring(message.method))
  else
    method(handler, message.params)
  end
  return true
end

echo_lapps.onDisconnect = function(handler)
  subscribed[handler] = nil
end

return echo_lapps
