-- echo (RAW, /echo): sends every message back as it came, text as text, binary as binary.
local echo = {}
echo.__index = echo

echo.onStart = function()
  print("echo::onStart")
end

echo.onMessage = function(handler, opcode, message)
  local ok, err = ws:send(handler, opcode, message)
  if not ok then
    print("echo: send failed: " .. err)
  end
  return true
end

echo.onDisconnect = function(handler)
end

echo.onShutdown = function()
  print("echo::onShutdown")
end

return echo
