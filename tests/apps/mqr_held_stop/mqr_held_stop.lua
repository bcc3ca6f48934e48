-- mqr_held_stop (tests/lua_mqr.rs): on "go" from "held_stop.go", receives from "held_stop"
-- while ballast leaves too little of its memory limit for the (big) message there, reports
-- the failure to "held_stop.report" and waits for the stop without receiving again.
local app = {}

app.init = function() end

app.run = function()
  mqr:receive("held_stop.go")
  local ballast = {}
  for i = 1, 5000 do
    ballast[i] = string.rep("b", 1024) .. i
  end
  local ok, err = pcall(mqr.receive, mqr, "held_stop", 1)
  mqr:post("held_stop.report", tostring(ok) .. " " ..
    (tostring(err):match("not enough memory") or tostring(err)))
  while true do
    local _, why = mqr:receive("held_stop.never", 0.2)
    if why == "stopped" then
      return
    end
  end
end

return app
