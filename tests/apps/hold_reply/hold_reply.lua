-- hold_reply: a network (RAW) test app for replies owed when the server stops. Needs preload
-- ["mqr"] and "instruction_budget": 0. "hold" replies "holding" (handed over at once), then
-- waits, busy, until a message comes on the mqr queue "hold_reply.release", and replies
-- "released". Anything else is echoed.
local app = {}

app.onMessage = function(handler, opcode, message)
  if message ~= "hold" then
    ws:send(handler, opcode, message)
    return true
  end
  ws:send(handler, 1, "holding")
  must_stop() -- hands "holding" over now
  while not mqr:poll("hold_reply.release") do
  end
  ws:send(handler, 1, "released")
  return true
end

return app
