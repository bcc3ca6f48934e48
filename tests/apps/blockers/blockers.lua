-- blockers: a network (RAW) test app that tries the host calls that wait. Needs preload
-- ["nap", "mqr", "cws"]. Any text message gets one reply listing what each call returned:
--   "nap=<r>,<err> receive=<r>,<err> ready=<message> cws=<r>,<err>"
-- where "ready" is an mqr:receive on a queue that holds a message (that one does not wait).
local blockers = {}

local function both(a, b)
  return tostring(a) .. "," .. tostring(b)
end

blockers.onMessage = function(handler, opcode, message)
  local nap_r, nap_e = nap:new():sleep(30)
  local rcv_r, rcv_e = mqr:receive("blockers.empty", 30)
  mqr:post("blockers.ready", "here")
  local ready = mqr:receive("blockers.ready", 30)
  local cws_r, cws_e = cws:new("ws://127.0.0.1:9/", {})
  ws:send(handler, 1, string.format("nap=%s receive=%s ready=%s cws=%s",
    both(nap_r, nap_e), both(rcv_r, rcv_e), tostring(ready), both(cws_r, cws_e)))
  return true
end

return blockers
