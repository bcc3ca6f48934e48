-- slow_handover: a standalone test app that takes 500 ms to stop. Once run() sees
-- must_stop() it posts "stopping" to the mqr queue "slow_handover.events", blocks 500 ms in
-- poll(2) through the ffi (which the stop does not cut short) and returns; onShutdown then
-- posts "stopped" there. Needs preload ["mqr"] and allow_ffi.
local ffi = require("ffi")
ffi.cdef[[
int poll(void *fds, unsigned long nfds, int timeout);
]]

local app = {}

app.run = function()
  while not must_stop() do
    mqr:receive("slow_handover.idle", 0.01)
  end
  assert(mqr:post("slow_handover.events", "stopping"))
  ffi.C.poll(nil, 0, 500)
end

app.onShutdown = function()
  assert(mqr:post("slow_handover.events", "stopped"))
end

return app
