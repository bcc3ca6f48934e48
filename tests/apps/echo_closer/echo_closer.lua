-- echo_closer: a RAW test app for tests/random_peers/. Echoes every message, except a
-- binary one of 8 bytes "close:" .. <code, 2 bytes big-endian>, for which it calls
-- ws:close(handler, code) instead: the server then starts the close handshake with that code
-- while the peer's frames keep coming.
local echo_closer = {}

echo_closer.onStart = function()
end

echo_closer.onMessage = function(handler, opcode, message)
  if opcode == 2 and #message == 8 and message:sub(1, 6) == "close:" then
    local hi, lo = message:byte(7, 8)
    local ok, err = ws:close(handler, hi * 256 + lo)
    if not ok then
      print("echo_closer: close failed: " .. err)
    end
    return true
  end
  ws:send(handler, opcode, message)
  return true
end

echo_closer.onDisconnect = function(handler)
end

echo_closer.onShutdown = function()
end

return echo_closer
