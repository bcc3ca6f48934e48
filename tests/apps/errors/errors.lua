-- errors: a RAW test app. Each text message is a Lua chunk, run as the app's own code; its
-- result (a string) is the reply. For what app code sees of the errors host functions raise.
-- Needs preload = ["nap", "mqr"].
local errors = {}

errors.onMessage = function(handler, _, message)
  local chunk, err = load(message, "=probe")
  local ok, result = pcall(chunk or error, err)
  ws:send(handler, 1, ok and tostring(result) or ("raised: " .. tostring(result)))
  return true
end

return errors
