-- mqr_netpost: a network (RAW) test app that posts with a timeout, which must not wait in a
-- network service. Needs preload ["mqr"]. Any text message gets one reply:
--   "full=<r>,<err> qfull=<r>,<err> room=<r>,<err>"
-- where "full" is mqr:post("netpost.full", ..., 5) and "qfull" the same through a queue object
-- (the test fills that queue first), and "room" is mqr:post("netpost.room", ..., 5) on a queue
-- with room.
local t = {}

local function both(a, b)
  return tostring(a) .. "," .. tostring(b)
end

t.onMessage = function(handler, opcode, message)
  local r1, e1 = mqr:post("netpost.full", "late", 5)
  local r2, e2 = mqr:create("netpost.full"):post("late", 5)
  local r3, e3 = mqr:post("netpost.room", "here", 5)
  ws:send(handler, 1, string.format("full=%s qfull=%s room=%s", both(r1, e1), both(r2, e2), both(r3, e3)))
  return true
end

return t
