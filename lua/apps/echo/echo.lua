-- echo (RAW, /echo): sends every message back as it came, text as text, binary as binary.
local echo = {}
echo.__index = echo

echo.onStart = function()
  print("echo::onStart")
end

echo.onMessage = function(handler, opcode, message)
  local ok, err = ws:send(handler, opcode, message)
  -- "closed": the peer is gone (a reset, a close) and its onDisconnect follows; any peer can
  -- cause that at will, so it is not worth a log line (print is not rate-limited).
  if not ok and err ~= "closed" then
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
