-- standalone_probe: broadcasts "tick <n>" on channel 7 every 10 ms until must_stop();
-- checks instance_id and the time functions on the way.
local sp = {}

sp.init = function()
  assert(type(instance_id) == "number")
  assert(time.now() > 1.6e12)
  assert(time.monotonic() >= 0)
  bcast:create(7)
end

sp.run = function()
  local n, i = nap:new(), 0
  while not must_stop() do
    i = i + 1
    bcast:send(7, 1, "tick " .. i)
    n:sleep(0.01)
  end
end

return sp
