-- oon_early: a LAppS-protocol test app (tests/lapps_order.rs) that pushes OONs to a connection
-- before its first response, which the server must hold until that response (SPEC section 4).
-- Needs preload = ["bcast"].
--   notification push(n)            ws:send_oon(handler, 5, {"early", n}) at once
--   notification join()             subscribes the connection to channel 9 and broadcasts
--                                   {"cast"} on it
--   notification flood(size, count) count OONs of size bytes each
--   request first()                 an OON {"before"}, then the response {"answer"}
--   request echo(...)               answers its params
local app = {}

local CHANNEL = 9

app.onStart = function()
  assert(bcast:create(CHANNEL))
end

local notes = {}

notes.push = function(handler, p)
  assert(ws:send_oon(handler, 5, { "early", p[1] }))
end

notes.join = function(handler)
  assert(bcast:subscribe(CHANNEL, handler))
  assert(bcast:send(CHANNEL, { cid = CHANNEL, message = { "cast" } }))
end

notes.flood = function(handler, p)
  local blob = string.rep("x", p[1])
  for _ = 1, p[2] do
    if not ws:send_oon(handler, 5, { blob }) then
      return
    end
  end
end

app.onMessage = function(handler, msg_type, message)
  if msg_type == 1 or msg_type == 2 then
    notes[message.method](handler, message.params)
  elseif message.method == "first" then
    assert(ws:send_oon(handler, 5, { "before" }))
    assert(ws:send_response(handler, { "answer" }))
  else
    assert(ws:send_response(handler, message.params))
  end
  return true
end

app.onDisconnect = function(handler)
  bcast:unsubscribe(CHANNEL, handler)
end

return app
