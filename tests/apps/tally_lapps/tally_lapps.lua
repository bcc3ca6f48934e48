-- tally_lapps: the LAppS twin of tally (tests/lua_sockets.rs). Needs preload = ["bcast"].
-- Every onMessage and onDisconnect is published as tally publishes them, on the bcast channel
-- "tally", for a watcher connected to tally:
--   "msg <h> <messages seen for h> <onDisconnect calls for h so far>"
--   "disc <h> <onDisconnect calls for h>"
-- Methods: "id" answers {"<h>"}; "close" returns false (the host closes with 1000); any other
-- is answered -32601. Notifications are counted and not answered.
local app = {}

local msgs, discs = {}, {}

local function hs(h)
  return string.format("%.0f", h)
end

app.onStart = function()
  bcast:create("tally")
end

app.onMessage = function(handler, msg_type, message)
  msgs[handler] = (msgs[handler] or 0) + 1
  bcast:send("tally", 1, string.format("msg %s %d %d", hs(handler), msgs[handler], discs[handler] or 0))
  if msg_type < 3 then
    return true
  end
  if message.method == "id" then
    ws:send_response(handler, { hs(handler) })
  elseif message.method == "close" then
    return false
  else
    ws:send_error(handler, -32601, "method not found")
  end
  return true
end

app.onDisconnect = function(handler)
  discs[handler] = (discs[handler] or 0) + 1
  bcast:send("tally", 1, string.format("disc %s %d", hs(handler), discs[handler]))
end

return app
