-- slow_start: a network test app whose onStart takes a second (tests/registry_shutdown.rs, a
-- reload racing a shutdown). Needs preload ["mqr", "time"] and no instruction budget. It
-- creates the mqr queue "slow_start.started" first, so that the test knows the start began.
local app = {}

app.onStart = function()
  mqr:create("slow_start.started")
  local t = time.now()
  while time.now() - t < 1000 do end
end

app.onMessage = function(handler, opcode, message)
  ws:send(handler, opcode, message)
  return true
end

return app
