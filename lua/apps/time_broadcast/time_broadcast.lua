-- time_broadcast (standalone): once a second, broadcasts the current time
--   * on bcast channel 1000 as a JSON text frame, for RAW clients (chat's "/time" command);
--   * on bcast channel 1001 as a LAppS OON {cid = 1001, message = {<ms>}} (echo_lapps clients).
-- Needs preload = ["bcast", "nap", "time"]. Every subscriber receives each tick once (one
-- instance: each instance ticks). Ticks fall on whole seconds of the clock, so they do not
-- drift by the time each one takes.
local time_broadcast = {}
time_broadcast.__index = time_broadcast

time_broadcast.channel = 1000
time_broadcast.oon_channel = 1001

time_broadcast.init = function()
  bcast:create(time_broadcast.channel)
  bcast:create(time_broadcast.oon_channel)
end

time_broadcast.run = function()
  local n = nap:new()
  while not must_stop() do
    local now = time.now()
    bcast:send(time_broadcast.channel, 1, string.format('{"time":%d}', now))
    bcast:send(time_broadcast.oon_channel, { cid = time_broadcast.oon_channel, message = { now } })
    n:sleep((1000 - time.now() % 1000) / 1000)
  end
end

time_broadcast.onShutdown = function()
  print("time_broadcast: stopped")
end

return time_broadcast
