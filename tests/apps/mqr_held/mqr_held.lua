-- mqr_held (tests/lua_mqr.rs): on "go" from "held.go", receives from "held" while ballast
-- leaves too little of its memory limit for the first (big) message, then again after
-- freeing the ballast, then once more; reports what it got to "held.report".
local app = {}

app.init = function() end

app.run = function()
  mqr:receive("held.go")
  -- Many small strings: no transient buffer as big as the whole.
  local ballast = {}
  for i = 1, 5000 do
    ballast[i] = string.rep("b", 1024) .. i
  end
  local ok, err = pcall(mqr.receive, mqr, "held", 1)
  ballast = nil
  collectgarbage()
  collectgarbage()
  local first = mqr:receive("held", 1)
  local second = mqr:receive("held", 1)
  mqr:post("held.report", string.format("%s %s | %d %s | %s", tostring(ok),
    tostring(err):match("not enough memory") or tostring(err),
    first and #first or -1, first and first:sub(1, 5) or "nil", tostring(second)))
  while true do
    local _, why = mqr:receive("held.never", 0.2)
    if why == "stopped" then
      return
    end
  end
end

return app
