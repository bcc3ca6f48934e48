-- mqr_too_big (tests/lua_mqr.rs): on "go" from "too_big.go", receives three times from
-- "too_big" (whose first two messages are larger than this service's memory_limit leaves room
-- for) and once with `poll`, and reports what each call returned to "too_big.report".
local app = {}

app.init = function() end

local function shown(m, err)
  if m then
    return #m .. " " .. m:sub(1, 6)
  end
  return "nil " .. tostring(err)
end

app.run = function()
  mqr:receive("too_big.go")
  local a = shown(mqr:receive("too_big", 1))
  local b = shown(mqr:receive("too_big", 1))
  local c = shown(mqr:receive("too_big", 1))
  local d = shown(mqr:poll("too_big"))
  mqr:post("too_big.report", a .. " | " .. b .. " | " .. c .. " | " .. d)
  while true do
    local _, why = mqr:receive("too_big.never", 0.2)
    if why == "stopped" then
      return
    end
  end
end

return app
