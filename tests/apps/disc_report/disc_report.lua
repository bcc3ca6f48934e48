-- disc_report: a network (RAW) test app (tests/registry_shutdown.rs) that reports its
-- onDisconnect and onShutdown calls, in order, on the mqr queue "disc_report.events" as
-- "disc" and "stopped". Needs preload ["mqr"].
local app = {}

app.onMessage = function()
  return true
end

app.onDisconnect = function()
  mqr:post("disc_report.events", "disc")
end

app.onShutdown = function()
  mqr:post("disc_report.events", "stopped")
end

return app
