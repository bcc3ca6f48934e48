-- slow_stop: a standalone test app whose stop takes long. run() naps until must_stop(), then
-- prints "lingering" and keeps running for 10 s more, ignoring the stop flag (a busy wait on
-- the clock: a nap would be woken by the stop). Needs preload ["nap", "time"] and
-- "instruction_budget": 0 (the budget would abort the busy wait).
local slow = {}

slow.run = function()
  local n = nap:new()
  while not must_stop() do
    n:sleep(1)
  end
  print("lingering")
  local until_ms = time.monotonic() + 10000
  while time.monotonic() < until_ms do
  end
end

return slow
