-- mqr_sd_receiver: waits for "go" on "sd.go" (or shutdown), then consumes "sd" until stopping
-- and drained; posts "progress" to "sd.progress" every 50 messages and "received <n>" to
-- "sd.report" at shutdown.
local r = { received = 0 }

r.init = function()
  mqr:create("sd", 32)
end

r.run = function()
  mqr:receive("sd.go")
  while true do
    local msg, err = mqr:receive("sd", 0.2)
    if msg then
      r.received = r.received + 1
      if r.received % 50 == 0 then
        mqr:post("sd.progress", "progress")
      end
    elseif err == "stopped" then
      return
    end
  end
end

r.onShutdown = function()
  assert(mqr:post("sd.report", "received " .. r.received))
end

return r
