-- standalone_probe: broadcasts "tick <n>" on channel 7 every 10 ms until must_stop(); once 20
-- ticks have reached a subscriber, broadcasts "napping" and naps an hour, so that a shutdown
-- finishing at all shows the nap was woken. Checks instance_id and the time functions too.
local sp = {}

sp.init = function()
  assert(type(instance_id) == "number")
  assert(time.now() > 1.6e12)
  assert(time.monotonic() >= 0)
  bcast:create(7)
end

sp.run = function()
  local n, i, delivered = nap:new(), 0, 0
  while not must_stop() do
    i = i + 1
    if (bcast:send(7, 1, "tick " .. i) or 0) > 0 then
      delivered = delivered + 1
    end
    if delivered == 20 then
      bcast:send(7, 1, "napping")
      n:sleep(3600)
    else
      n:sleep(0.01)
    end
  end
end

return sp
