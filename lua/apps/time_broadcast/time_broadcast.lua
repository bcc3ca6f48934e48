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
  -- A channel that cannot be made ("too many channels" in the process) fails the start,
  -- rather than ticking into nothing for ever.
  for _, channel in ipairs({ time_broadcast.channel, time_broadcast.oon_channel }) do
    local ok, err = bcast:create(channel)
    if not ok then
      error("time_broadcast: bcast channel " .. channel .. ": " .. err)
    end
  end
end

time_broadcast.run = function()
  local n = nap:new()
  while not must_stop() do
    local now = time.now()
    -- Each send answers the recipients' count, or nil and why; the channels exist (init
    -- made them), so an error here is a bug worth a line, once a second at most.
    local raw, raw_err = bcast:send(time_broadcast.channel, 1, string.format('{"time":%d}', now))
    local oon, oon_err = bcast:send(time_broadcast.oon_channel,
      { cid = time_broadcast.oon_channel, message = { now } })
    if not raw or not oon then
      print("time_broadcast: send failed: " .. tostring(raw_err or oon_err))
    end
    n:sleep((1000 - time.now() % 1000) / 1000)
  end
end

time_broadcast.onShutdown = function()
  print("time_broadcast: stopped")
end

return time_broadcast
