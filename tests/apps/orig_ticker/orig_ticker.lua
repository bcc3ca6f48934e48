-- orig_ticker: a standalone service in the original LAppS's forms, configured as the original's
-- time_broadcast was (`"preload": ["nap"]`, no "bcast"): it creates broadcast channel 1000 in
-- init() and sends an OON on it every 10 ms, sleeping with the original's nap:usleep and
-- nap:nsleep, the OON carrying the original's `status = 1`.
local t = {}

t.init = function()
  bcast:create(1000)
  t.nap = nap:new()
end

t.run = function()
  local oon = nljson.decode('{"cid": 5, "status": 1, "message": [""]}')
  local i = 0
  while not must_stop() do
    i = i + 1
    local slept = i % 2 == 0 and t.nap:usleep(10000) or t.nap:nsleep(10000000)
    if not slept then
      break -- nil, "stopping": the shutdown woke the nap
    end
    oon.message[1] = "tick " .. i
    bcast:send(1000, oon)
  end
end

return t
