-- slow_report: a standalone test app whose onShutdown takes 300 ms (poll(2) through the ffi,
-- which the stop does not cut short), then posts "reported" to the mqr queue
-- "slow_report.done": only a shutdown that waits for it finds the post there when it returns.
-- Needs preload ["mqr"] and allow_ffi.
local ffi = require("ffi")
ffi.cdef[[
int poll(void *fds, unsigned long nfds, int timeout);
]]

local r = {}

r.run = function()
  -- Until the stop: a receive on a queue nobody posts to answers nil, "stopped" then.
  mqr:receive("slow_report.idle")
end

r.onShutdown = function()
  ffi.C.poll(nil, 0, 300)
  assert(mqr:post("slow_report.done", "reported"))
end

return r
