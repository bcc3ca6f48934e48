-- stop_order_a / stop_order_b: standalone test apps that nap until must_stop() and post
-- "<their name> stopped" to the mqr queue "stop_order" at onShutdown, so a test reads the
-- order services stopped in. Need preload ["mqr", "nap"].
local app = {}

app.run = function()
  local n = nap:new()
  while not must_stop() do
    n:sleep(1)
  end
end

app.onShutdown = function()
  assert(mqr:post("stop_order", "stop_order_a stopped"))
end

return app
