-- mqr_handover: a standalone receiver of "handover.q" (tests/lua_mqr.rs) that loops until
-- `nil, "stopped"`, as mqr_receiver does, and posts "received <n>" to "handover.report" at
-- onShutdown. Each message costs it some work, so that a sender keeps its queue full. Needs
-- preload ["mqr"].
local app = { received = 0 }

app.run = function()
  while true do
    local msg, err = mqr:receive("handover.q", 0.2)
    if msg then
      app.received = app.received + 1
      local x = 0
      for i = 1, 20000 do
        x = x + i
      end
    elseif err == "stopped" then
      return
    end
  end
end

app.onShutdown = function()
  assert(mqr:post("handover.report", "received " .. app.received))
end

return app
