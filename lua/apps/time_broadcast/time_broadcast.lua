-- time_broadcast (standalone): once a second, broadcasts the current time on bcast channel 1000.
-- Needs preload = ["bcast", "nap", "time"]. Network services subscribe their clients to
-- channel 1000 (see chat's "/time" command) and every subscriber receives each tick once.
local time_broadcast = {}
time_broadcast.__index = time_broadcast

time_broadcast.channel = 1000

time_broadcast.init = function()
  bcast:create(time_broadcast.channel)
end

time_broadcast.run = function()
  local n = nap:new()
  while not must_stop() do
    bcast:send(time_broadcast.channel, 1, string.format('{"time":%d}', time.now()))
    n:sleep(1)
  end
end

time_broadcast.onShutdown = function()
  print("time_broadcast: stopped")
end

return time_broadcast
