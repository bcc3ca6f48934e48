-- hold_reply: a network (RAW) test app for replies owed when the server stops. Needs preload
-- ["mqr"] and "instruction_budget": 0. "hold" replies "holding" (handed over at once), then
-- waits, busy, until a message comes on the mqr queue "hold_reply.release", and replies
-- "released". "bighold" sends a 300 KiB binary message first, without handing it over, then
-- does the same (the outbox must post it early: it passes EARLY_POST_BYTES). Anything else is
-- echoed, but "id", which replies with this connection's handler, and "note ...", which is
-- posted to the mqr queue "hold_reply.notes" (seen even when its connection is gone).
local app = {}

app.onMessage = function(handler, opcode, message)
  if message:sub(1, 5) == "note " then
    mqr:post("hold_reply.notes", message)
    return true
  elseif message == "id" then
    ws:send(handler, 1, string.format("%.0f", handler))
    return true
  elseif message == "bighold" then
    ws:send(handler, 2, string.rep("x", 300 * 1024))
  elseif message ~= "hold" then
    ws:send(handler, opcode, message)
    return true
  else
    ws:send(handler, 1, "holding")
    must_stop() -- hands "holding" over now
  end
  while not mqr:poll("hold_reply.release") do
  end
  ws:send(handler, 1, "released")
  return true
end

return app
