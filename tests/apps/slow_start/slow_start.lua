-- slow_start: a network test app whose onStart lasts until the test lets it end
-- (tests/registry_shutdown.rs, a reload racing a shutdown). Needs preload ["mqr", "time"] and
-- no instruction budget. It creates the mqr queue "slow_start.started" first, so that the test
-- knows the start began, then waits for a message on "slow_start.go" (the test creates it),
-- 30 seconds at most.
local app = {}

app.onStart = function()
  mqr:create("slow_start.started")
  local t = time.now()
  while not mqr:poll("slow_start.go") and time.now() - t < 30000 do end
end

app.onMessage = function(handler, opcode, message)
  ws:send(handler, opcode, message)
  return true
end

return app
