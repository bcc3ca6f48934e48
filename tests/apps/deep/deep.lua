-- deep: recursion through C functions (tests/lua_stack.rs). Each command recurses until Lua
-- raises "stack overflow" (or, without room on the thread's own stack, the process dies).
--   "gsub"   string.gsub with a function replacement that calls gsub again
--   "sort"   table.sort with a comparator that sorts again
--   "tostring" a __tostring that calls tostring on itself
--   anything else: echoed
local app = {}

local function gsub()
  return (("x"):gsub("x", gsub))
end

local function sort()
  table.sort({ 2, 1 }, function(a, b)
    sort()
    return a < b
  end)
end

local looped = setmetatable({}, {})
getmetatable(looped).__tostring = function(self)
  return tostring(self)
end

app.onMessage = function(handler, opcode, message)
  if message == "gsub" then
    gsub()
  elseif message == "sort" then
    sort()
  elseif message == "tostring" then
    tostring(looped)
  end
  ws:send(handler, opcode, message)
  return true
end

return app
