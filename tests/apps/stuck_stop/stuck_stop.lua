-- stuck_stop: a network (RAW) test app whose onShutdown does not return for a minute. It posts
-- "began" to the mqr queue "stuck_stop.began", then blocks in poll(2) through the ffi: a nap
-- or an mqr:receive would be woken by the stop, and a Lua loop would be cut short by the
-- instruction budget (or, without one, spin a core). Needs preload ["mqr"] and allow_ffi.
-- Several services may run this file under different names.
local ffi = require("ffi")
ffi.cdef[[
int poll(void *fds, unsigned long nfds, int timeout);
]]

local stuck = {}

stuck.onMessage = function(handler, opcode, message)
  return true
end

stuck.onShutdown = function()
  mqr:post("stuck_stop.began", "began")
  ffi.C.poll(nil, 0, 60000)
end

return stuck
