-- run_retry (tests/lua_mqr.rs): an mqr receiver whose run() fails twice before it works. Each
-- pass first posts "pass <n> <time.monotonic() in ms>" to "retry.passes"; pass 1 raises an
-- error, pass 2 runs into the instruction budget, pass 3 forwards every message of "retry.in"
-- to "retry.out" until stopping. The pass count lives in the state, which a restart keeps.
-- Needs preload ["mqr", "time"] and a small instruction budget.
local app = {}
local passes = 0

app.init = function()
  mqr:create("retry.in", 4)
end

app.run = function()
  passes = passes + 1
  mqr:post("retry.passes", string.format("pass %d %.3f", passes, time.monotonic()))
  if passes == 1 then
    error("the first pass fails")
  elseif passes == 2 then
    while true do
    end
  end
  while true do
    local msg, err = mqr:receive("retry.in", 0.2)
    if msg then
      assert(mqr:post("retry.out", msg, 5))
    elseif err == "stopped" then
      return
    end
  end
end

return app
